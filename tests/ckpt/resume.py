"""Checkpoints and resume, with real processes killed for real.

  uninterrupted   (2 workers, 2 servers), 12 steps, a checkpoint every step
  kill worker     the same job checkpointing every 3 steps, `kill -9` of worker rank 1 after the step-6
                  checkpoint: the job fails; the rerun (resume auto) resumes from
                  the last complete checkpoint and ends bit-identical
  kill server     the same with server rank 3
  kill in ckpt    rank 0 dies while writing the step-9 checkpoint (file complete,
                  not yet renamed): `latest` still names step 6, which is intact
                  (h5py reads it), and the rerun resumes from it, bit-identical
  new layouts     from the step-6 checkpoint of (2,2), one step with (3,1) and with
                  (1,3) gives the uninterrupted step 7 within 1e-4 (L2, per group;
                  why one step: see tests/trainer/invariant.py), and the run to the
                  end completes
  refusals        another embedding_size / network / global batch (exit 2; every key: refuse.py), a missing
                  --resume file, a truncated checkpoint: clear error naming the
                  field or file, non-zero exit, never a fresh start
usage: resume.py ARCFACE_TRAIN MPIRUN_WORDS_SEPARATED_BY_BAR WORKDIR"""
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np

# rank_pid: finding a running job's rank by its pid, shared with the trainer fault tests
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "trainer"))
from rankutil import rank_pid  # noqa: E402

BIN, MPIRUN, WORK = sys.argv[1], sys.argv[2].split("|"), sys.argv[3]
G = 12
COMMON = ["--network", "fmnist", "--embedding_size", "32", "--num_classes", "97", "--max_steps", "12",
          "--frequent", "1", "--loader_threads", "1", "--threads", "1", "--lr", "0.05", "--save_every", "3",
          "--keep_checkpoints", "10", "--sample_rate", "0.5", "--rec", "synthetic:ids=97,per_id=4,size=28,channels=1,seed=9"]
failures, checks = 0, 0


def check(cond, msg):
    global failures, checks
    checks += 1
    failures += not cond
    print(("ok   " if cond else "FAIL ") + msg)


def cmd(out, W, P, extra=()):
    return MPIRUN + ["-np", str(W + P), BIN] + COMMON + ["--batch_size", str(G // W), "--ps", str(P),
                                                         "--output", out] + list(extra)


def run(out, W=2, P=2, extra=(), env=None, fresh=False):
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    r = subprocess.run(cmd(out, W, P, extra), capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, **(env or {})))
    return r.returncode, r.stdout + r.stderr


def ckpt(out, step):
    return os.path.join(out, "checkpoints", f"ckpt_{step:08d}.h5")


def latest(out):
    with open(os.path.join(out, "checkpoints", "latest")) as f:
        return f.read().strip()


def tensors(path):
    t = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: t.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return t


def identical(a, b):
    ta, tb = tensors(a), tensors(b)
    bad = [k for k in ta if k not in tb or not np.array_equal(ta[k], tb[k])]
    return not bad and set(ta) == set(tb), bad


def group_diff(a, b):
    ta, tb = tensors(a), tensors(b)
    worst = 0.0
    for prefix in ("backbone/", "fc/weight", "fc/momentum", "optimizer/"):
        keys = sorted(k for k in ta if k.startswith(prefix) and ta[k].dtype.kind == "f")
        x = np.concatenate([ta[k].ravel() for k in keys]).astype(float)
        y = np.concatenate([tb[k].ravel() for k in keys]).astype(float)
        worst = max(worst, float(np.linalg.norm(x - y) / np.linalg.norm(y)))
    return worst


def kill_after_checkpoint(out, rank, step):
    shutil.rmtree(out, ignore_errors=True)
    p = subprocess.Popen(cmd(out, 2, 2, ["--max_steps", "100000"]), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not os.path.exists(ckpt(out, step)):
        time.sleep(0.05)
    pid = rank_pid(out, rank)
    check(pid is not None, f"found the process of rank {rank}")
    if pid:
        os.kill(pid, signal.SIGKILL)
    log = p.communicate(timeout=300)[0]
    check(p.returncode != 0, f"kill -9 of rank {rank}: the job failed (exit {p.returncode})")
    return log


def main():
    ref = os.path.join(WORK, "ref")
    rc, log = run(ref, extra=["--save_every", "1", "--keep_checkpoints", "20"], fresh=True)
    check(rc == 0, f"uninterrupted run (exit {rc})")
    if rc:
        print(log[-3000:])
        return 1

    for rank, role in ((1, "worker"), (3, "server")):
        out = os.path.join(WORK, f"kill_{role}")
        kill_after_checkpoint(out, rank, 6)
        done = latest(out)
        rc, log = run(out)
        resumed = [l for l in log.splitlines() if l.startswith("resume:")]
        check(rc == 0 and resumed and "ckpt_" in resumed[0], f"after killing the {role}: rerun resumed ({resumed}) "
              f"from the last complete checkpoint {done} (exit {rc})")
        same, bad = identical(ckpt(out, 12), ckpt(ref, 12))
        check(same, f"after killing the {role}: final checkpoint bit-identical to the uninterrupted run {bad}")

    out = os.path.join(WORK, "kill_in_ckpt")
    rc, log = run(out, env={"ARCFACE_FAULT_KILL_IN_CHECKPOINT": "9"}, fresh=True)
    check(rc != 0, f"rank 0 killed inside the step-9 checkpoint: the job failed (exit {rc})")
    check(latest(out) == "ckpt_00000006.h5", f"latest still names the step-6 checkpoint ({latest(out)})")
    check(not os.path.exists(ckpt(out, 9)), "no ckpt_00000009.h5 was published "
          f"(temporary left behind: {os.path.exists(ckpt(out, 9) + '.tmp')})")
    same, bad = identical(ckpt(out, 6), ckpt(ref, 6))
    check(same, f"the step-6 checkpoint is intact (h5py reads it, equal to the reference) {bad}")
    rc, log = run(out)
    check(rc == 0 and "resume: " + ckpt(out, 6) in log, f"rerun resumed from step 6 (exit {rc})")
    same, bad = identical(ckpt(out, 12), ckpt(ref, 12))
    check(same, f"after the crash in a checkpoint: final bit-identical to the uninterrupted run {bad}")

    for W, P in ((3, 1), (1, 3)):
        out = os.path.join(WORK, f"layout_{W}_{P}")
        rc, log = run(out, W, P, ["--resume", ckpt(ref, 6), "--max_steps", "7"], fresh=True)
        e = group_diff(ckpt(out, 7), ckpt(ref, 7)) if rc == 0 else 1.0
        check(rc == 0 and e <= 1e-4, f"(2,2) step 6 -> ({W},{P}) step 7: state within {e:.2e} of the uninterrupted "
              f"step 7 (tolerance 1e-4)")
        rc, log = run(out, W, P)
        check(rc == 0 and os.path.exists(ckpt(out, 12)), f"({W},{P}) continued to step 12 (exit {rc}); final drift "
              f"{group_diff(ckpt(out, 12), ckpt(ref, 12)) if rc == 0 else float('nan'):.1e} (information)")

    base = ["--resume", ckpt(ref, 6), "--max_steps", "7"]
    for extra, needle in ((["--embedding_size", "64"], "embedding_size: checkpoint 32, this run 64"),
                          (["--network", "r18"], "network: checkpoint 'fmnist', this run 'r18'"),
                          (["--batch_size", "4"], "global batch (batch_size x workers): checkpoint 12, this run 8")):
        rc, log = run(os.path.join(WORK, "refuse"), 2, 2, base + extra, fresh=True)
        msg = [l for l in log.splitlines() if needle in l]
        check(rc == 2 and "refusing to resume" in log and msg, f"refused {' '.join(extra)} (exit {rc}): {msg[:1]}")
    rc, log = run(os.path.join(WORK, "refuse"), 2, 2, ["--resume", "/nonexistent/ckpt.h5"], fresh=True)
    check(rc != 0 and "/nonexistent/ckpt.h5" in log and not os.path.exists(os.path.join(WORK, "refuse", "checkpoints")),
          "a missing --resume file is an error, not a fresh start")
    bad = os.path.join(WORK, "truncated.h5")
    with open(ckpt(ref, 6), "rb") as f, open(bad, "wb") as g:
        g.write(f.read()[: os.path.getsize(ckpt(ref, 6)) // 2])
    rc, log = run(os.path.join(WORK, "refuse"), 2, 2, ["--resume", bad], fresh=True)
    msg = [l for l in log.splitlines() if "error" in l]
    check(rc != 0 and any("truncated.h5" in l for l in msg), f"a truncated checkpoint is refused: {msg[:1]}")

    print(f"{checks - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
