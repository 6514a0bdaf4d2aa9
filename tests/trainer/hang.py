"""The progress deadline (comm_timeout, include/arcface/ctx.h): a rank that is
stopped, not dead, must not hold the job.

A (2 workers + 2 servers) job with comm_timeout = T runs until its step-2
checkpoint exists; then one rank gets SIGSTOP, which mpirun cannot see (the
process is alive). Cases: server rank 3, worker rank 1. The job must end,
non-zero, within the deadline the firing rank reports plus BOUND s, and the
message must name the stopped rank ("held up by rank N"). The measured time from
the SIGSTOP to the end of mpirun is printed. On the old code (no deadline) the
job waits forever; here it is killed at LIMIT s and the case fails
(AF_HANG_OLD=1 leaves the comm_timeout key out, to run the old binary).
Also: a start-up error seen by every rank (a missing rec, 3 ranks) is printed
once, by rank 0, with exit 2 (every rank printed it before).
usage: hang.py ARCFACE_TRAIN MPIRUN_WORDS_SEPARATED_BY_BAR WORKDIR"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # runpy does not add it
from rankutil import latest_step, rank_pid  # noqa: E402

BIN, MPIRUN, WORK = sys.argv[1], sys.argv[2].split("|"), sys.argv[3]
T = 6.0        # comm_timeout, s
BOUND = 6.0    # from the deadline to the end of the whole job (mpirun's clean-up ~2 s), s
LIMIT = float(os.environ.get("AF_HANG_LIMIT", "90"))   # a job still running this long after the SIGSTOP hangs
COMMON = ["--network", "fmnist", "--embedding_size", "32", "--num_classes", "97", "--frequent", "1",
          "--loader_threads", "1", "--threads", "1", "--lr", "0.05", "--sample_rate", "0.5", "--batch_size", "6",
          "--ps", "2", "--save_every", "2", "--resume", "none", "--max_steps", "100000",
          "--rec", "synthetic:ids=97,per_id=4,size=28,channels=1,seed=9"]
if os.environ.get("AF_HANG_OLD") != "1":
    COMMON += ["--comm_timeout", str(T)]
failures = 0


def check(cond, msg):
    global failures
    failures += not cond
    print(("ok   " if cond else "FAIL ") + msg, flush=True)


def stop_case(role, rank):
    out = os.path.join(WORK, f"stopped_{role}")
    shutil.rmtree(out, ignore_errors=True)
    log = open(out + ".log", "w")
    p = subprocess.Popen(MPIRUN + ["-np", "4", BIN] + COMMON + ["--output", out], stdout=log,
                         stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and latest_step(out) < 2 and p.poll() is None:
        time.sleep(0.05)
    pid = rank_pid(out, rank)
    if pid is None or p.poll() is not None:
        check(False, f"{role} rank {rank}: the job reached its step-2 checkpoint and the rank's process was found")
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        return
    os.kill(pid, signal.SIGSTOP)
    t0 = time.time()
    try:
        rc = p.wait(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        rc = None
    dt = time.time() - t0
    try:
        os.kill(pid, signal.SIGKILL)  # if the launcher left it behind
    except OSError:
        pass
    with open(out + ".log") as f:
        text = f.read()
    m = re.search(r"rank (\d+): error: waited ([0-9.]+) s for (.*?), more than the progress deadline of ([0-9.]+) s",
                  text)
    fired = m.group(0) if m else "(no deadline message)"
    reported = float(m.group(4)) if m else float("inf")
    names = bool(m) and f"held up by rank {rank})" in m.group(3)
    ok = rc not in (None, 0, 3) and dt <= reported + BOUND and names
    check(ok, f"SIGSTOP of the {role} (rank {rank}): job ended with exit {rc} {dt:.2f} s after the stop (the firing "
              f"rank's deadline {reported:.1f} s + bound {BOUND:.0f} s; comm_timeout {T:.0f} s; None: still running "
              f"at {LIMIT:.0f} s, killed); names rank {rank}: {names}; message: {fired}")
    print(f"| SIGSTOP {role} rank {rank} | {rc} | {dt:.2f} |", flush=True)


def startup_once():
    out = os.path.join(WORK, "startup_once")
    r = subprocess.run(MPIRUN + ["-np", "3", BIN] + COMMON + ["--ps", "1", "--rec", os.path.join(WORK, "missing.rec"),
                                                             "--output", out, "--max_steps", "1"],
                       capture_output=True, text=True, timeout=60)
    errs = [l for l in (r.stdout + r.stderr).splitlines() if "error:" in l]
    ok = r.returncode == 2 and len(errs) == 1 and "rank 0:" in errs[0] and "missing.rec" in errs[0]
    check(ok, f"a missing rec, 3 ranks: exit {r.returncode}, {len(errs)} error line(s) (want 1, from rank 0): {errs}")


def main():
    os.makedirs(WORK, exist_ok=True)
    stop_case("server", 3)
    stop_case("worker", 1)
    startup_once()
    print(f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
