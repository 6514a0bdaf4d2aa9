"""Memory per identity (issue 11): the peak resident memory of every rank of a
2-worker + 2-server job at sample_rate 1, D = 16, for C classes against the same
job with 1,000 classes (the fixed per-rank amount), so
    bytes per class = (sum of peaks at C - sum of peaks at 1,000) / (C - 1,000)
against 128 bytes of weights + momentum (16 x 4 x 2). Peaks are each rank's
maximum RSS as /usr/bin/time reports it (ru_maxrss).
usage: /usr/bin/python3 bench/bench_identity.py BUILD_DIR [--key value ...] [C ...]   (default C = 1,000,000)
       (--key value: arcface-train options, e.g. --msg_chunk_bytes 2147479552 or --sample_rate 0.1)"""
import os
import subprocess
import sys
import tempfile

BUILD = sys.argv[1]
ARGS = sys.argv[2:]
EXTRA = []
while any(a.startswith("--") for a in ARGS):  # --key value: passed on (later keys win over the defaults)
    i = next(i for i, a in enumerate(ARGS) if a.startswith("--"))
    EXTRA += ARGS[i:i + 2]
    del ARGS[i:i + 2]
CS = [int(c) for c in ARGS] or [1_000_000]
BIN = os.path.join(BUILD, "bin", "arcface-train")
MPI = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none"]
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OPENBLAS_NUM_THREADS="1")
W, P, D = 2, 2, 16
# One file per rank: ranks' stderr lines interleave.
WRAP = ["sh", "-c", 'exec /usr/bin/time -o "$PEAKS/peak.$OMPI_COMM_WORLD_RANK" -f "%M" "$@"', "sh"]


def peaks(C):
    out = tempfile.mkdtemp(prefix="bench_identity_")
    cmd = MPI + ["-np", str(W + P)] + WRAP + [
        BIN, "--resume", "none", "--output", out, "--network", "fmnist", "--embedding_size", str(D),
        "--num_classes", str(C), "--ps", str(P), "--sample_rate", "1.0", "--fc_update", "sparse",
        "--batch_size", "4", "--max_steps", "3",
        "--frequent", "1", "--save_every", "0", "--loader_threads", "1", "--threads", "1",
        "--rec", "synthetic:ids=1000,per_id=2,size=28,channels=1,seed=1"] + EXTRA
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(ENV, PEAKS=out), timeout=1800)
    if r.returncode:
        sys.exit(f"C = {C} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    got = {}
    for rank in range(W + P):
        with open(os.path.join(out, f"peak.{rank}")) as f:
            got[rank] = int(f.read().split()[-1]) * 1024
    return got


def main():
    base = peaks(1000)
    print(f"\n### Memory per identity: {W} workers + {P} servers, D = {D}, batch 4 per worker "
          f"{' '.join(EXTRA)}\n")
    print("| classes C | worker peaks | server peaks | all ranks | bytes per class above C = 1,000 | x weights + momentum (128 B) |")
    print("|---|---|---|---|---|---|")
    for C in CS:
        p = peaks(C)
        tot, tb = sum(p.values()), sum(base.values())
        per = (tot - tb) / (C - 1000)
        mib = lambda v: f"{v / 2**20:.0f}"
        print(f"| {C:,} | {' + '.join(mib(p[r]) for r in range(W))} MiB | "
              f"{' + '.join(mib(p[r]) for r in range(W, W + P))} MiB | {tot / 2**20:.0f} MiB | {per:.0f} | "
              f"{per / 128:.2f}x |")
    print(f"\n(C = 1,000: {' + '.join(f'{base[r] / 2**20:.0f}' for r in range(W + P))} MiB)")


if __name__ == "__main__":
    main()
