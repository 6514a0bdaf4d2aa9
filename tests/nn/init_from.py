"""`init_from = model.pt` starts a training run from pretrained backbone
weights: a module with insightface's key names (arcface_ref.py) is saved
with torch.save, a 1-worker + 1-server run (under mpirun) takes one step at
lr = 0, and every trainable tensor of the checkpoint's /backbone equals the
.pt's bit for bit (batch-norm statistics move in a training step, so they
are not compared). Then an unreadable init_from and a .pt of another
architecture must stop the run with an error naming the key, within the
timeout.

usage: init_from.py BIN_DIR MPIRUN_WORDS_SEPARATED_BY_BAR WORKDIR     (exit 77: torch/h5py missing)
"""
import os
import shutil
import subprocess
import sys

try:
    import h5py
    import numpy as np
    import torch
except ImportError as e:
    print("SKIP: %s" % e)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arcface_ref  # noqa: E402

BIN, MPIRUN, WORK = sys.argv[1], sys.argv[2].split("|"), sys.argv[3]
D = 48
fails = 0


def check(ok, msg):
    global fails
    fails += not ok
    print(("ok   " if ok else "FAIL ") + msg)


def train(out, init_from):
    cmd = MPIRUN + ["-np", "2", os.path.join(BIN, "arcface-train"), "--network", "fmnist", "--embedding_size", str(D),
                    "--batch_size", "8", "--ps", "1", "--max_steps", "1", "--lr", "0", "--loader_threads", "1",
                    "--threads", "1", "--output", out, "--resume", "none", "--init_from", init_from]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240)


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    torch.manual_seed(5)
    model = arcface_ref.build("fmnist", D)
    pt = os.path.join(WORK, "init.pt")
    torch.save(model.state_dict(), pt)
    out = os.path.join(WORK, "run")
    r = train(out, pt)
    check(r.returncode == 0, "training from init_from = %s (exit %d)" % (pt, r.returncode))
    if r.returncode:
        print(r.stdout[-3000:], r.stderr[-3000:])
        sys.exit(1)
    with open(os.path.join(out, "checkpoints", "latest")) as f:
        ckpt = os.path.join(out, "checkpoints", f.read().strip())
    trainable = [k for k, p in model.named_parameters() if p.requires_grad]
    with h5py.File(ckpt, "r") as f:
        diff = {k: float(np.abs(np.array(f["backbone"][k]) - model.state_dict()[k].numpy()).max()) for k in trainable}
    worst = max(diff, key=diff.get)
    check(diff[worst] == 0.0, "after one step at lr 0, all %d trainable tensors equal the .pt's (largest difference "
          "%g, %s)" % (len(diff), diff[worst], worst))
    # refusals: both must end the job (exit != 0) and name the key
    for what, path in (("a missing file", os.path.join(WORK, "nope.pt")), ("an r18 state_dict", None)):
        if path is None:
            path = os.path.join(WORK, "r18.pt")
            torch.save(arcface_ref.build("r18", D).state_dict(), path)
        try:
            r = train(os.path.join(WORK, "bad"), path)
            text = r.stdout + r.stderr
            said = [s for s in text.splitlines() if "configuration key 'init_from'" in s]
            check(r.returncode != 0 and said, "init_from = %s refused (exit %d): %s" % (what, r.returncode, said[:1]))
        except subprocess.TimeoutExpired:
            check(False, "init_from = %s: the job hung" % what)
    if fails:
        print("FAIL: %d checks" % fails)
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
