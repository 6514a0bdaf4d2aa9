"""PyTorch .pt weights in, ONNX out, against PyTorch, python3-onnx and OpenCV.

For each architecture, a module with insightface's names (arcface_ref.py),
PyTorch's own initialisation and randomised batch-norm parameters and
statistics is saved with torch.save(state_dict) - the zip format - and:
  1. arcface-embed --model X.pt gives PyTorch's eval-mode embeddings;
  2. arcface-ckpt import X.pt --network A X.h5, then
     arcface-ckpt export --format onnx X.h5 X.onnx: onnx.checker accepts the
     model, its input is "data" (N, C, H, W) with a symbolic N, and OpenCV's
     dnn module (a real ONNX runtime; onnx 1.12 has no reference evaluator)
     gives arcface-embed's embeddings and PyTorch's;
  3. arcface-eval --model X.pt --network A prints what it prints for X.h5.
Architectures: fmnist, r18, mbf, r50, mbf_large and r200 (one image) at their
input size go through 1 and 2 (fmnist also 3); r34 and r100 through 1 at
16x16 (import and ONNX build the 112x112 model, and r50 covers their blocks).
The ONNX export of a training checkpoint (CKPT, not only an exported model)
is checked the same way. Then bad .pt files must be refused with exit 1
and a message naming the file and the key or member at fault: not a zip,
the pre-1.6 format, no data.pkl, an unknown key, a missing key, a wrong
shape, a float64 tensor, a truncated storage, a truncated archive, a
pickle calling os.system (which must not run), a whole pickled module; and
a DistributedDataParallel state_dict ("module." keys) is read.

Relative error: max|ours - ref| / max|ref|.
usage: torch_pt.py BIN_DIR WORKDIR [--tol 1e-4]     (exit 77: a reference is missing)
"""
import argparse
import os
import shutil
import subprocess
import sys
import time
import zipfile

try:
    import h5py
    import numpy as np
    import torch
    import onnx
    import cv2
except ImportError as e:  # the references are not all here: a skip, not a pass
    print("SKIP: %s" % e)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arcface_ref  # noqa: E402
from synth_ckpt import write_checkpoint, write_verbin  # noqa: E402


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def randomise(model):
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
        for name, p in model.named_parameters():
            if p.dim() == 1 and name.endswith("weight"):
                p.normal_(0.9, 0.1)
            elif p.dim() == 1 and name.endswith("bias"):
                p.normal_(0, 0.1)
    return model.eval()


class T:
    def __init__(self, bindir, workdir, tol):
        self.bin, self.dir, self.tol, self.fails = bindir, workdir, tol, 0

    def p(self, name):
        return os.path.join(self.dir, name)

    def run(self, *args):
        return subprocess.run([os.path.join(self.bin, args[0])] + list(args[1:]), capture_output=True, text=True)

    def check(self, ok, msg):
        self.fails += not ok
        print("%s %s" % ("ok  " if ok else "FAIL", msg))
        return ok

    def embed(self, arch, model, images, out, d=None):
        extra = ["--embedding", str(d)] if d else []  # an .h5 model needs it, a .pt states it
        r = self.run("arcface-embed", "--arch", arch, "--model", model, "--input", images, "--output", out,
                     "--batch", "2", "--threads", "2", *extra)
        if r.returncode:
            self.check(False, "arcface-embed %s: %s" % (model, r.stderr.strip()))
            return None
        with h5py.File(out, "r") as f:
            return np.array(f["embeddings"])

    def onnx_check(self, arch, path, x, ours, ref, c, hw):
        m = onnx.load(path)
        onnx.checker.check_model(m)
        inp = m.graph.input[0]
        dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
        self.check(inp.name == "data" and dims[1:] == [c, hw, hw] and isinstance(dims[0], str),
                   "%s: ONNX checker passes; input '%s' %s, opset %d" % (
                       arch, inp.name, dims, m.opset_import[0].version))
        net = cv2.dnn.readNetFromONNX(path)
        net.setInput(x)
        got = net.forward()
        e1, e2 = rel(got, ours), rel(got, ref)
        self.check(e1 <= self.tol and e2 <= self.tol,
                   "%s: OpenCV dnn on the ONNX model vs arcface-embed %.3g, vs PyTorch %.3g (tolerance %.0e)" % (
                       arch, e1, e2, self.tol))

    def roundtrip(self, arch, hw, c, d, with_onnx, with_eval, n=3):
        t0 = time.time()
        torch.manual_seed(1)
        model = randomise(arcface_ref.build(arch, d, in_c=c, in_hw=hw))
        pt = self.p("%s.pt" % arch)
        torch.save(model.state_dict(), pt)
        x = torch.randn(n, c, hw, hw)
        images = self.p("%s_images.h5" % arch)
        with h5py.File(images, "w") as f:
            f["images"] = x.numpy()
        with torch.no_grad():
            ref = model(x).numpy()
        ours = self.embed(arch, pt, images, self.p("%s_emb_pt.h5" % arch))
        if ours is None:
            return model
        e = rel(ours, ref)
        self.check(e <= self.tol, "%s %dx%dx%d -> %d: arcface-embed on the .pt vs PyTorch: %.3g (tolerance %.0e)" % (
            arch, c, hw, hw, d, e, self.tol))
        if hw != (28 if arch == "fmnist" else 112):
            self.tidy(arch, t0, pt)
            return model  # arcface-ckpt import builds the model for insightface's 112x112 input
        h5 = self.p("%s_imported.h5" % arch)
        r = self.run("arcface-ckpt", "import", pt, "--network", arch, h5)
        if not self.check(r.returncode == 0, "%s: arcface-ckpt import %s" % (arch, (r.stdout + r.stderr).strip())):
            return model
        via = self.embed(arch, h5, images, self.p("%s_emb_h5.h5" % arch), d)
        self.check(via is not None and np.array_equal(via, ours), "%s: the imported .h5 gives the .pt's embeddings "
                   "bit for bit" % arch)
        if with_onnx:
            onx = self.p("%s.onnx" % arch)
            r = self.run("arcface-ckpt", "export", "--format", "onnx", h5, onx)
            if self.check(r.returncode == 0, "%s: arcface-ckpt export --format onnx: %s" % (arch, r.stdout.strip()
                                                                                          or r.stderr.strip())):
                self.onnx_check(arch, onx, x.numpy(), ours, ref, c, hw)
        if with_eval:
            self.eval_same(arch, pt, h5)
        self.tidy(arch, t0, pt, h5, self.p("%s.onnx" % arch))
        return model

    def tidy(self, arch, t0, *paths):
        """Removes the large files of one architecture (r100, r200: 200-480 MB each) and prints its time."""
        for f in paths:
            if os.path.exists(f) and os.path.getsize(f) > 100e6:
                os.remove(f)
        print("     %s: %.1f s" % (arch, time.time() - t0))

    def eval_same(self, arch, pt, h5):
        vb = self.p("tiny.bin")
        if not os.path.exists(vb):
            write_verbin(vb, pairs=20, seed=3, hw=28)
        outs = []
        for model, extra in ((pt, ["--network", arch]), (h5, [])):
            r = self.run("arcface-eval", "--model", model, *extra, "--target", vb, "--batch", "8")
            lines = [s for s in r.stdout.splitlines() if "pairs" in s]
            outs.append((r.returncode, lines))
        self.check(outs[0][0] == 0 and outs[0] == outs[1] and outs[0][1],
                   "%s: arcface-eval --model X.pt --network %s prints what X.h5 gives: %s" % (
                       arch, arch, outs[0][1][:1]))
        r = self.run("arcface-eval", "--model", pt, "--target", vb)
        self.check(r.returncode != 0 and "--network" in r.stderr,
                   "%s: arcface-eval of a .pt without --network refused: %s" % (arch, r.stderr.strip()))

    def ckpt_onnx(self, model):
        """ONNX export straight from a training checkpoint (fc and optimizer state alongside)."""
        ck = self.p("fmnist_ckpt.h5")
        write_checkpoint(ck, "fmnist", model.state_dict(), 128, n_classes=10)
        onx = self.p("fmnist_ckpt.onnx")
        r = self.run("arcface-ckpt", "export", "--format", "onnx", ck, onx)
        if not self.check(r.returncode == 0, "checkpoint -> ONNX: %s" % (r.stdout + r.stderr).strip()):
            return
        x = torch.randn(4, 1, 28, 28)
        with torch.no_grad():
            ref = model(x).numpy()
        images = self.p("ck_images.h5")
        with h5py.File(images, "w") as f:
            f["images"] = x.numpy()
        ours = self.embed("fmnist", ck, images, self.p("ck_emb.h5"), 128)
        if ours is not None:
            self.onnx_check("fmnist (checkpoint)", onx, x.numpy(), ours, ref, 1, 28)

    def refusals(self, model):
        sd = model.state_dict()
        keys = list(sd.keys())
        images = self.p("fmnist_images.h5")
        good = self.p("fmnist.pt")

        def refused(what, path, *frags):
            out = self.p("bad_emb.h5")
            r = self.run("arcface-embed", "--arch", "fmnist", "--model", path, "--input", images, "--output", out)
            msg = r.stderr.strip()
            ok = r.returncode == 1 and path in msg and all(f in msg for f in frags) and not os.path.exists(out)
            self.check(ok, "refused %-28s %s" % (what + ":", msg))

        def save(name, d, **kw):
            path = self.p(name)
            torch.save(d, path, **kw)
            return path

        p = self.p("text.pt")
        with open(p, "w") as f:
            f.write("not a model\n")
        refused("not a zip", p, "not a zip archive")
        refused("pre-1.6 format", save("legacy.pt", sd, _use_new_zipfile_serialization=False), "not a zip archive")
        p = self.p("nopkl.pt")
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("archive/data/0", b"\0" * 16)
        refused("no data.pkl", p, "data.pkl")
        refused("unknown key", save("extra.pt", dict(sd, **{"head.weight": torch.zeros(3)})), "'head.weight'")
        refused("missing key", save("missing.pt", {k: v for k, v in sd.items() if k != keys[2]}), "'%s'" % keys[2])
        refused("wrong shape", save("shape.pt", dict(sd, **{keys[0]: torch.zeros(5, 1, 3, 3)})), "'%s'" % keys[0],
                "shape")
        refused("float64 tensor", save("double.pt", dict(sd, **{keys[1]: sd[keys[1]].double()})), "'%s'" % keys[1],
                "float64")
        # a storage cut short, the archive otherwise intact
        p = self.p("truncstorage.pt")
        with zipfile.ZipFile(good) as zi, zipfile.ZipFile(p, "w") as zo:
            pre = [n for n in zi.namelist() if n.endswith("data.pkl")][0][:-len("data.pkl")]
            for n in zi.namelist():
                data = zi.read(n)
                zo.writestr(n, data[:-4] if n == pre + "data/0" else data)
        refused("truncated storage", p, "'%s'" % keys[0], "storage")
        p = self.p("trunczip.pt")
        with open(good, "rb") as f:
            blob = f.read()
        with open(p, "wb") as f:
            f.write(blob[:len(blob) // 2])
        refused("truncated archive", p, "zip")
        # a pickle that would run a shell command
        flag = self.p("pwned")
        evil = (b"\x80\x02cos\nsystem\nX" + len("touch " + flag).to_bytes(4, "little") + ("touch " + flag).encode()
                + b"\x85R.")
        p = self.p("evil.pt")
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("archive/data.pkl", evil)
        refused("os.system in the pickle", p, "refusing global 'os.system'")
        self.check(not os.path.exists(flag), "the os.system pickle ran nothing")
        refused("a whole pickled module", save("module.pt", model), "refusing global", "state_dict")
        # DistributedDataParallel's names are read
        ddp = self.p("ddp.pt")
        torch.save({"module." + k: v for k, v in sd.items()}, ddp)
        a = self.embed("fmnist", ddp, images, self.p("ddp_emb.h5"))
        b = self.embed("fmnist", good, images, self.p("good_emb.h5"))
        self.check(a is not None and b is not None and np.array_equal(a, b),
                   "a DistributedDataParallel state_dict ('module.' keys) gives the same embeddings")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bindir")
    ap.add_argument("workdir")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--archs", default="fmnist,r18,r34,mbf,r50,r100,mbf_large,r200")
    a = ap.parse_args()
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    torch.set_num_threads(2)
    t = T(a.bindir, a.workdir, a.tol)
    # (architecture, input size, channels, embedding, ONNX, arcface-eval[, images])
    cases = {"fmnist": (28, 1, 128, True, True), "r18": (112, 3, 512, True, False), "mbf": (112, 3, 512, True, False),
             "r50": (112, 3, 512, True, False), "mbf_large": (112, 3, 512, True, False),
             # r34 and r100 are r50's blocks in other counts: a 16x16 input keeps their forward cheap (the
             # weights are the same at any size but fc's); .pt embeddings only, since arcface-ckpt import and
             # the ONNX export build insightface's 112x112 input
             "r34": (16, 3, 512, False, False), "r100": (16, 3, 512, False, False),
             # r200 (120M parameters, 480 MB as a .pt) at 112x112 through import and ONNX, one image
             "r200": (112, 3, 512, True, False, 1)}
    models = {}
    for arch in a.archs.split(","):
        models[arch] = t.roundtrip(arch, *cases[arch])
    if "fmnist" in models:
        t.ckpt_onnx(models["fmnist"])
        t.refusals(models["fmnist"])
    if t.fails:
        print("FAIL: %d checks" % t.fails)
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
