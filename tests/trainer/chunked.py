"""Chunked transport (core/transport.c): the same multi-rank job (2 workers +
2 servers, fmnist net, 10000 classes, sample_rate 1, three optimizer steps of
which the second accumulates nothing special) run with the default chunk limit
(every message inline) and with msg_chunk_bytes = 4099, where every pull, pull
reply and push travels split: a header Envelope plus raw chunks, the last of
odd length and cut mid-float. The final checkpoints must be equal bit for bit
(every dataset, read with h5py) and so must the per-step losses; a transport
that drops, reorders or shifts a chunk changes the centres and fails. The
tiny run must also say it split (the worker's "transport:" line) and the
default one must not, so the test cannot pass by never taking the split path.
usage: chunked.py ARCFACE_TRAIN MPIRUN_WORDS_SEPARATED_BY_BAR WORKDIR"""
import csv
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np

TINY = 4099
COMMON = ["--network", "fmnist", "--embedding_size", "16", "--num_classes", "10000", "--max_steps", "3",
          "--frequent", "1", "--loader_threads", "1", "--threads", "1", "--lr", "0.05", "--resume", "none",
          "--sample_rate", "1.0", "--batch_size", "4", "--ps", "2",
          "--rec", "synthetic:ids=97,per_id=4,size=28,channels=1,seed=3"]


def run(binary, mpirun, out, extra):
    shutil.rmtree(out, ignore_errors=True)
    cmd = mpirun + ["-np", "4", binary] + COMMON + extra + ["--output", out]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    if r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-3000:])
        raise SystemExit(f"run failed ({out}): exit {r.returncode}")
    with open(os.path.join(out, "metrics.csv")) as f:
        losses = [row["step_loss"] or row["loss"] for row in csv.DictReader(f)]
    with open(os.path.join(out, "checkpoints", "latest")) as f:
        path = os.path.join(out, "checkpoints", f.read().strip())
    t = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: t.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) and n != "config" else None)
    return r.stdout + r.stderr, losses, t


def main():
    binary, mpirun, work = sys.argv[1], sys.argv[2].split("|"), sys.argv[3]
    log_a, la, ta = run(binary, mpirun, os.path.join(work, "default"), [])
    log_b, lb, tb = run(binary, mpirun, os.path.join(work, "tiny"), ["--msg_chunk_bytes", str(TINY)])
    fails = 0
    split_a, split_b = "transport:" in log_a, "transport:" in log_b
    print(f"default run split its messages: {split_a} (must be False); msg_chunk_bytes {TINY}: {split_b} (must be True)")
    fails += split_a or not split_b
    bad = sorted(k for k in ta if k not in tb or ta[k].dtype != tb[k].dtype or ta[k].shape != tb[k].shape
                 or ta[k].tobytes() != tb[k].tobytes())
    fc = ta.get("fc/weight")
    diff = float(np.max(np.abs(fc.astype(np.float64) - tb["fc/weight"]))) if fc is not None and "fc/weight" in tb else -1
    print(f"checkpoint: {len(ta)} datasets, {len(bad)} differ bit for bit {bad[:5]} (tolerance: none); "
          f"fc/weight {fc.shape if fc is not None else None}, max |difference| {diff:.3g}")
    fails += bool(bad) or set(ta) != set(tb) or fc is None
    print(f"losses: default {la}, chunked {lb} (must be equal as written)")
    fails += la != lb or not la
    print(f"{3 - fails} passed, {fails} failed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
