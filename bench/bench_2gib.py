"""The 2 GiB boundary run (issue 11): a job whose worker <-> server messages are
larger than one MPI count or one protobuf length can carry, for real, checked
against the same job on more servers (the invariant).

C classes (default 40,000,000) at D = 16, sample_rate 1, batch 2 (batch norm needs two),
fmnist network on synthetic data, STEPS optimizer steps, SGD with momentum and
weight decay; at the end each job writes its checkpoint. Layout A is 1 worker +
1 server: one pull reply and one push carry C x 16 x 4 bytes (2.56 GB at 40M,
above 2 GiB), so they must travel split into msg_chunk_bytes pieces. Layout B
is 1 worker + 2 servers (each message half the size). The two final checkpoints
must agree: /fc/weight and /fc/momentum within float-summation tolerance
(printed with the measured maximum difference), the backbone likewise, the
losses per step too. Memory: each rank's peak resident memory (/usr/bin/time,
ru_maxrss); step time and bytes per step from the trainer's --profile lines.

Runs one job at a time. Needs about 9 GB free at 40M (check `free -g` first;
other jobs share the machine) and 2 x 5.2 GB of disk for the checkpoints, which
are deleted at the end unless --keep.
usage: /usr/bin/python3 bench/bench_2gib.py BUILD_DIR [C] [--steps N] [--keep]"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

ARGS = sys.argv[1:]
KEEP = "--keep" in ARGS
if KEEP:
    ARGS.remove("--keep")
STEPS = 3
if "--steps" in ARGS:
    i = ARGS.index("--steps")
    STEPS = int(ARGS[i + 1])
    del ARGS[i:i + 2]
BUILD = ARGS[0]
C = int(ARGS[1]) if len(ARGS) > 1 else 40_000_000
D = 16
BIN = os.path.join(BUILD, "bin", "arcface-train")
MPI = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none"]
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OPENBLAS_NUM_THREADS="1")
WRAP = ["sh", "-c", 'exec /usr/bin/time -o "$PEAKS/peak.$OMPI_COMM_WORLD_RANK" -f "%M %e" "$@"', "sh"]
# Tolerance of the invariant: with one worker in both layouts the worker's
# numbers are the same and the servers update row by row, so equality is
# expected; the tolerance only leaves room for float-summation order.
TOL = 1e-5


def run(name, W, P, root):
    out = os.path.join(root, name)
    os.makedirs(out)
    cmd = MPI + ["-np", str(W + P)] + WRAP + [
        BIN, "--resume", "none", "--output", out, "--network", "fmnist", "--embedding_size", str(D),
        "--num_classes", str(C), "--ps", str(P), "--sample_rate", "1.0", "--batch_size", "2",
        "--max_steps", str(STEPS), "--frequent", "1", "--profile", "1", "--save_every", "0",
        "--loader_threads", "1", "--threads", "1", "--lr", "0.1", "--momentum", "0.9", "--weight_decay", "5e-4",
        "--rec", "synthetic:ids=1000,per_id=2,size=28,channels=1,seed=1"]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(ENV, PEAKS=out), timeout=3600)
    wall = time.time() - t0
    log = r.stdout + r.stderr
    with open(os.path.join(out, "run.log"), "w") as f:
        f.write(log)
    if r.returncode:
        sys.exit(f"{name} failed (exit {r.returncode}):\n{log[-3000:]}")
    peaks = []
    for rank in range(W + P):
        with open(os.path.join(out, f"peak.{rank}")) as f:
            kib, _ = f.read().split()[-2:]
            peaks.append(int(kib) * 1024)
    losses = [float(x) for x in re.findall(r"Training: .*? loss ([0-9.]+) ", log)]
    prof = re.findall(r"time per step \(s\):(.*?) \| bytes/step \(all workers\) pulled (\d+) pushed (\d+) headers (\d+)",
                      log)
    split = re.search(r"transport: messages of up to (\d+) bytes .* chunks of at most (\d+) bytes", log)
    ck = sorted(os.listdir(os.path.join(out, "checkpoints")))
    return dict(name=name, W=W, P=P, peaks=peaks, losses=losses, prof=prof[-1] if prof else None, wall=wall,
                split=split.groups() if split else None, out=out, log=log,
                ckpt=os.path.join(out, "checkpoints", [c for c in ck if c.endswith(".h5")][-1]))


def compare(a, b):
    worst = 0.0
    rows = []
    with h5py.File(a["ckpt"], "r") as fa, h5py.File(b["ckpt"], "r") as fb:
        names = []
        fa.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        for n in names:
            if n not in fb or fa[n].dtype.kind != "f":
                continue
            if n.startswith("fc/"):
                # Row blocks, so that a 2.56 GB tensor is never read whole.
                d, s = 0.0, 0.0
                for r0 in range(0, fa[n].shape[0], 1 << 22):
                    xa, xb = fa[n][r0:r0 + (1 << 22)], fb[n][r0:r0 + (1 << 22)]
                    d = max(d, float(np.max(np.abs(xa.astype(np.float64) - xb))))
                    s = max(s, float(np.max(np.abs(xb))))
            else:
                xa, xb = fa[n][()].astype(np.float64), fb[n][()].astype(np.float64)
                d, s = float(np.max(np.abs(xa - xb))) if xa.size else 0.0, float(np.max(np.abs(xb))) if xb.size else 0.0
            rel = d / max(s, 1e-30)
            worst = max(worst, rel)
            if n.startswith("fc/") or rel > TOL:
                rows.append(f"  {n} {fa[n].shape}: max |difference| {d:.3e} max |value| {s:.3e} (relative {rel:.2e})")
    return worst, rows


def report(r):
    ranks = ["worker"] * r["W"] + [f"server {p}" for p in range(r["P"])]
    print(f"\n{r['name']} ({r['W']} worker + {r['P']} server{'s' if r['P'] > 1 else ''}), wall {r['wall']:.0f} s "
          f"(start-up, {STEPS} steps, checkpoint)")
    if r["split"]:
        print(f"  transport: largest message {int(r['split'][0]):,} bytes, split into chunks of "
              f"{int(r['split'][1]):,}")
    print("  peak RSS: " + ", ".join(f"{n} {p / 2**30:.2f} GiB" for n, p in zip(ranks, r["peaks"])) +
          f"; all ranks {sum(r['peaks']) / 2**30:.2f} GiB")
    if r["prof"]:
        t, pulled, pushed, hdr = r["prof"]
        tot = sum(float(x) for x in re.findall(r"[0-9.]+", t))
        print(f"  per step: {tot:.2f} s ({t.strip()}); pulled {int(pulled) / 1e9:.2f} GB, pushed "
              f"{int(pushed) / 1e9:.2f} GB, headers {int(hdr):,} B")
    print(f"  losses: {' '.join(f'{x:.6f}' for x in r['losses'])}", flush=True)


def main():
    root = tempfile.mkdtemp(prefix="bench_2gib_", dir=os.environ.get("BENCH_DIR"))
    print(f"C = {C:,}, D = {D}: one whole-slice message is {C * D * 4 / 1e9:.2f} GB ({C * D * 4 / 2**30:.2f} GiB); "
          f"weights + momentum {2 * C * D * 4 / 1e9:.2f} GB", flush=True)
    res = []
    for name, W, P in (("1w1s", 1, 1), ("1w2s", 1, 2)):
        res.append(run(name, W, P, root))
        report(res[-1])
    la, lb = res[0]["losses"], res[1]["losses"]
    dl = max(abs(x - y) / abs(y) for x, y in zip(la, lb)) if la and len(la) == len(lb) else float("inf")
    worst, rows = compare(res[0], res[1])
    print(f"\ninvariant, 1w1s vs 1w2s: losses relative {dl:.2e}; checkpoint tensors worst relative {worst:.2e} "
          f"(tolerance {TOL:.0e})")
    print("\n".join(rows))
    ok = dl <= TOL and worst <= TOL and res[0]["split"] is not None
    print("ok" if ok else "FAIL")
    if not KEEP:
        shutil.rmtree(root)
    else:
        print(f"kept {root}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
