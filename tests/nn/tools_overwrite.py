"""The tools never write over their input (issue 10: `arcface-ckpt export
C.h5 C.h5` replaced a training checkpoint by a backbone-only file, and
`arcface-embed --input X.h5 --output X.h5` overwrote its images, both with
exit 0). Each way of naming the input again as the output - the same
name, another spelling, a symbolic link, a hard link - must exit 2 with a
message, and leave the input byte for byte as it was; the same commands
with a fresh output must still work (so the refusal is not a blanket one).

usage: tools_overwrite.py BIN_DIR WORKDIR        (exit 77: h5py is missing)
"""
import hashlib
import os
import shutil
import subprocess
import sys

try:
    import h5py
    import numpy as np
except ImportError as e:
    print("SKIP: %s" % e)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from synth_ckpt import write_checkpoint  # noqa: E402

# the fmnist backbone's state_dict shapes (nn/arch.c, build_fmnist), embedding 128
FMNIST = {}
for i, (cin, w) in enumerate(zip((1, 32, 64, 64), (32, 64, 64, 128))):
    FMNIST["conv%d.weight" % (i + 1)] = (w, cin, 3, 3)
    for s in ("weight", "bias", "running_mean", "running_var"):
        FMNIST["bn%d.%s" % (i + 1, s)] = (w,)
    FMNIST["bn%d.num_batches_tracked" % (i + 1)] = ()
    FMNIST["prelu%d.weight" % (i + 1)] = (w,)
for s in ("weight", "bias", "running_mean", "running_var"):
    FMNIST["bn5." + s] = (128,)
FMNIST["bn5.num_batches_tracked"] = ()
FMNIST["fc.weight"] = (128, 128 * 49)
FMNIST["fc.bias"] = (128,)
for s in ("weight", "bias", "running_mean", "running_var"):
    FMNIST["features." + s] = (128,)
FMNIST["features.num_batches_tracked"] = ()


class Arr:
    """What write_checkpoint needs of a tensor."""

    def __init__(self, a):
        self.a = a

    def detach(self):
        return self

    def numpy(self):
        return self.a


def state_dict():
    rng = np.random.default_rng(0)
    sd = {}
    for k, shape in FMNIST.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = Arr(np.int64(3))
        elif k.endswith("running_var"):
            sd[k] = Arr(rng.uniform(0.5, 1.5, shape).astype(np.float32))
        else:
            sd[k] = Arr((0.1 * rng.standard_normal(shape)).astype(np.float32))
    return sd


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    bindir, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    p = lambda n: os.path.join(work, n)  # noqa: E731
    ckpt, images = p("C.h5"), p("X.h5")
    write_checkpoint(ckpt, "fmnist", state_dict(), 128)
    with h5py.File(images, "w") as f:
        f["images"] = np.random.default_rng(1).standard_normal((3, 1, 28, 28)).astype(np.float32)
    shutil.copyfile(ckpt, p("C.pristine"))
    shutil.copyfile(images, p("X.pristine"))
    os.symlink("C.h5", p("C_link.h5"))
    os.link(images, p("X_hard.h5"))
    fails = 0

    def tool(name, *args):
        return subprocess.run([os.path.join(bindir, name)] + list(args), capture_output=True, text=True)

    def refused(what, victim, name, *args):
        nonlocal fails
        # each case starts from intact files (copied in place: the links stay links), so one failure does not
        # cascade into the next
        shutil.copyfile(p("C.pristine"), ckpt)
        shutil.copyfile(p("X.pristine"), images)
        before = digest(victim)
        r = tool(name, *args)
        ok = r.returncode == 2 and "same file" in r.stderr and digest(victim) == before
        fails += not ok
        print("%s %-52s exit %d, %s; %s" % ("ok  " if ok else "FAIL", what + ":", r.returncode,
                                             "input unchanged" if digest(victim) == before else "INPUT CHANGED",
                                             r.stderr.strip()))

    def works(what, name, *args):
        nonlocal fails
        shutil.copyfile(p("C.pristine"), ckpt)
        shutil.copyfile(p("X.pristine"), images)
        r = tool(name, *args)
        fails += r.returncode != 0
        print("%s %-52s exit %d %s" % ("ok  " if r.returncode == 0 else "FAIL", what + ":", r.returncode,
                                       r.stderr.strip()))

    embed = ["--arch", "fmnist", "--embedding", "128"]
    refused("arcface-ckpt export C.h5 C.h5", ckpt, "arcface-ckpt", "export", ckpt, ckpt)
    refused("arcface-ckpt export C.h5 ./DIR/../DIR/C.h5", ckpt, "arcface-ckpt", "export", ckpt,
            os.path.join(work, "..", os.path.basename(work), "C.h5"))
    refused("arcface-ckpt export C.h5 C_link.h5 (symlink)", ckpt, "arcface-ckpt", "export", ckpt, p("C_link.h5"))
    refused("arcface-ckpt export --format onnx C.h5 C.h5", ckpt, "arcface-ckpt", "export", "--format", "onnx",
            ckpt, ckpt)
    refused("arcface-ckpt import C.h5 --network fmnist C.h5", ckpt, "arcface-ckpt", "import", ckpt, "--network",
            "fmnist", ckpt)
    refused("arcface-embed --input X.h5 --output X.h5", images, "arcface-embed", *embed, "--model", ckpt,
            "--input", images, "--output", images)
    refused("arcface-embed --input X.h5 --output X_hard.h5 (hard link)", images, "arcface-embed", *embed,
            "--model", ckpt, "--input", images, "--output", p("X_hard.h5"))
    refused("arcface-embed --model C.h5 --output C.h5", ckpt, "arcface-embed", *embed, "--model", ckpt,
            "--input", images, "--output", ckpt)
    refused("arcface-eval --model C.h5 --embeddings C.h5", ckpt, "arcface-eval", "--model", ckpt, "--target",
            images, "--embeddings", ckpt)
    # the same commands with fresh outputs
    works("arcface-ckpt export C.h5 OUT.h5", "arcface-ckpt", "export", ckpt, p("OUT.h5"))
    works("arcface-ckpt export --format onnx C.h5 OUT.onnx", "arcface-ckpt", "export", "--format", "onnx", ckpt,
          p("OUT.onnx"))
    works("arcface-embed --input X.h5 --output E.h5", "arcface-embed", *embed, "--model", ckpt, "--input", images,
          "--output", p("E.h5"))
    try:  # after the last command, an export from it
        with h5py.File(ckpt, "r") as f:
            intact = "fc" in f and "backbone" in f
    except OSError:
        intact = False
    fails += not intact
    print("%s the checkpoint still holds /fc and /backbone" % ("ok  " if intact else "FAIL"))
    if fails:
        print("FAIL: %d checks" % fails)
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
