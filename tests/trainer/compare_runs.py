"""Compares two training runs: the per-step losses of their metrics.csv (steps the
other run logged) within 1e-4 relative and, unless --losses-only, the checkpoint
of step N (--step N; default: each run's latest) as groups (backbone, fc weight,
fc optimizer state, backbone optimizer state) within 1e-4 relative in L2.
--identical: instead, every dataset of the two step-N checkpoints must be equal
bit for bit (a resumed run against an uninterrupted one on the same layout).
usage: compare_runs.py REF_OUTPUT OTHER_OUTPUT [--losses-only | --step N [--identical]]"""
import csv
import os
import sys

import h5py
import numpy as np


def load(out, step):
    with open(os.path.join(out, "metrics.csv")) as f:
        # step_loss: the loss of that very step. (`loss` is the mean since the
        # previous row, whose window a resume shortens.)
        losses = {int(r["step"]): float(r.get("step_loss") or r["loss"]) for r in csv.DictReader(f)}
    if step:
        path = os.path.join(out, "checkpoints", f"ckpt_{step:08d}.h5")
    else:
        with open(os.path.join(out, "checkpoints", "latest")) as f:
            path = os.path.join(out, "checkpoints", f.read().strip())
    t = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: t.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) and o.dtype.kind == "f" else None)
    return losses, t


def main():
    losses_only = "--losses-only" in sys.argv
    step = int(sys.argv[sys.argv.index("--step") + 1]) if "--step" in sys.argv else 0
    (la, ta), (lb, tb) = load(sys.argv[1], step), load(sys.argv[2], step)
    common = [s for s in lb if s in la]
    el = max(abs(la[s] - lb[s]) / abs(la[s]) for s in common) if common else 1.0
    if "--identical" in sys.argv:
        bad = sorted(k for k in ta if k not in tb or not np.array_equal(ta[k], tb[k]))
        ok = not bad and set(ta) == set(tb) and el == 0.0
        print(f"step {step}: {len(ta)} datasets, {len(bad)} differ {bad[:5]}; losses at {len(common)} common steps "
              f"differ by {el:.2e} (must be identical)")
        print(f"{int(ok)} passed, {int(not ok)} failed")
        return 0 if ok else 1
    if losses_only:
        ok = el <= 1e-4
        print(f"losses at steps {common}: relative difference {el:.2e} (tolerance 1e-4)")
        print(f"{int(ok)} passed, {int(not ok)} failed")
        return 0 if ok else 1
    groups = {"backbone": "backbone/", "fc weight": "fc/weight", "fc state": "fc/mom", "optimizer": "optimizer/"}
    es = 0.0
    for g, prefix in groups.items():
        keys = sorted(k for k in ta if k.startswith(prefix))
        a = np.concatenate([ta[k].ravel() for k in keys]).astype(float)
        b = np.concatenate([tb[k].ravel() for k in keys]).astype(float)
        e = float(np.linalg.norm(a - b) / np.linalg.norm(a))
        es = max(es, e)
        print(f"{g:10s} L2 relative difference {e:.2e}")
    ok = el <= 1e-4 and es <= 1e-4 and set(ta) == set(tb)
    print(f"losses at steps {common}: relative difference {el:.2e}; state {es:.2e} (tolerance 1e-4 for both)")
    print(f"{int(ok)} passed, {int(not ok)} failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
