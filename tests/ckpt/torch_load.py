"""A checkpoint opened by others: a short 2-worker + 1-server run on Fashion-MNIST,
then
  * h5py reads the file: every dataset, the root attributes, /fc/weight of
    shape (num_classes, embedding_size) and /fc/momentum alike;
  * PyTorch loads /backbone into the reference module (tests/nn/arcface_ref.py)
    with load_state_dict(strict=True), and its eval-mode embeddings of a batch
    equal arcface-embed's on the checkpoint and on `arcface-ckpt export`'s file
    within 1e-4 relative;
  * arcface-ckpt info prints the step, layout and configuration.
usage: torch_load.py BIN_DIR MPIRUN_WORDS_SEPARATED_BY_BAR WORKDIR"""
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "nn"))
import arcface_ref  # noqa: E402

BIN, MPIRUN, WORK = sys.argv[1], sys.argv[2].split("|"), sys.argv[3]
D, C = 48, 10
failures = checks = 0


def check(cond, msg):
    global failures, checks
    checks += 1
    failures += not cond
    print(("ok   " if cond else "FAIL ") + msg)


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    out = os.path.join(WORK, "run")
    r = subprocess.run(MPIRUN + ["-np", "3", os.path.join(BIN, "arcface-train"), "--network", "fmnist",
                                 "--embedding_size", str(D), "--batch_size", "16", "--ps", "1", "--max_steps", "6",
                                 "--loader_threads", "1", "--threads", "1", "--output", out, "--resume", "none"],
                       capture_output=True, text=True, timeout=300)
    check(r.returncode == 0, f"training run (exit {r.returncode})")
    if r.returncode:
        print(r.stdout[-2000:], r.stderr[-2000:])
        return 1
    with open(os.path.join(out, "checkpoints", "latest")) as f:
        ckpt = os.path.join(out, "checkpoints", f.read().strip())

    with h5py.File(ckpt, "r") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        attrs = {k: f.attrs[k] for k in f.attrs}
        check(all(k in attrs for k in ("format_version", "step", "epoch", "num_classes", "embedding_size", "network")),
              f"root attributes {sorted(attrs)}")
        check(f["fc/weight"].shape == (C, D) and f["fc/momentum"].shape == (C, D),
              f"/fc/weight {f['fc/weight'].shape} and /fc/momentum {f['fc/momentum'].shape} are (num_classes, D)")
        check(int(attrs["step"]) == 6 and attrs["network"] in (b"fmnist", "fmnist"), f"step {attrs['step']}")
        check(all(np.isfinite(f[n][()]).all() for n in names if f[n].dtype.kind == "f"),
              f"h5py read all {len(names)} datasets, all finite")
        model = arcface_ref.build("fmnist", num_features=D)
        try:
            arcface_ref.load_state(model, f["backbone"])
            check(True, f"load_state_dict(strict=True) of /backbone ({len(f['backbone'])} keys)")
        except RuntimeError as e:
            check(False, f"load_state_dict(strict=True) failed: {e}")
            return 1
    model.eval()

    x = np.random.default_rng(4).uniform(-1, 1, (12, 1, 28, 28)).astype(np.float32)
    xin, eout = os.path.join(WORK, "x.h5"), os.path.join(WORK, "e.h5")
    with h5py.File(xin, "w") as f:
        f["images"] = x
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy().astype(np.float64)
    exported = os.path.join(WORK, "backbone.h5")
    r = subprocess.run([os.path.join(BIN, "arcface-ckpt"), "export", ckpt, exported], capture_output=True, text=True)
    check(r.returncode == 0, f"arcface-ckpt export: {r.stdout.strip() or r.stderr.strip()}")
    for model_file in (ckpt, exported):
        r = subprocess.run([os.path.join(BIN, "arcface-embed"), "--arch", "fmnist", "--embedding", str(D), "--model",
                            model_file, "--input", xin, "--output", eout], capture_output=True, text=True)
        if r.returncode:
            check(False, f"arcface-embed on {model_file}: {r.stderr.strip()}")
            continue
        with h5py.File(eout, "r") as f:
            got = f["embeddings"][()].astype(np.float64)
        e = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
        check(e <= 1e-4, f"arcface-embed on {os.path.basename(model_file)} vs PyTorch: relative difference {e:.2e} "
              f"(tolerance 1e-4)")
    r = subprocess.run([os.path.join(BIN, "arcface-ckpt"), "info", ckpt], capture_output=True, text=True)
    check(r.returncode == 0 and "step: 6" in r.stdout and "layout: 2 workers, 1 parameter servers" in r.stdout
          and "margin_list = (1, 0.5, 0)" in r.stdout, "arcface-ckpt info shows step, layout and configuration")
    print(f"{checks - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
