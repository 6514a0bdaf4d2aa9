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
During an evaluation (val_targets, a .bin that takes several seconds, longer
than the deadline of those cases, comm_timeout = TE): worker 0 stopped as soon
as the evaluation at step 3 begins must end the job within the deadline of its
last sign of life plus BOUND, named with the evaluation ("worker 0's evaluation
at step 3 (held up by rank 0)"); worker 1 stopped then must be named by the
next step's waits, after the evaluation, which runs to its end without any rank
firing although it outlasts the deadline (asserted: its printed duration is
longer than the deadline reported). The old code exempted every wait during an
evaluation: both hang.
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
from rankutil import latest_step, rank_pid, write_val_bin  # noqa: E402

BIN, MPIRUN, WORK = sys.argv[1], sys.argv[2].split("|"), sys.argv[3]
T = 6.0        # comm_timeout, s
TE = 4.0       # comm_timeout of the evaluation cases, s
EVAL_PAIRS = 12000  # 4000 took 3.7 s on a quiet 2-core EPYC (8-13 s under load): 3x that stays well above TE
BOUND = 6.0    # from the deadline to the end of the whole job (mpirun's clean-up ~2 s), s
LIMIT = float(os.environ.get("AF_HANG_LIMIT", "90"))   # a job still running this long after the SIGSTOP hangs
COMMON = ["--network", "fmnist", "--embedding_size", "32", "--num_classes", "97", "--frequent", "1",
          "--loader_threads", "1", "--threads", "1", "--lr", "0.05", "--sample_rate", "0.5", "--batch_size", "6",
          "--ps", "2", "--save_every", "2", "--resume", "none", "--max_steps", "100000",
          "--rec", "synthetic:ids=97,per_id=4,size=28,channels=1,seed=9"]
OLD = os.environ.get("AF_HANG_OLD") == "1"   # a binary without the comm_timeout key
failures = 0


def check(cond, msg):
    global failures
    failures += not cond
    print(("ok   " if cond else "FAIL ") + msg, flush=True)


def stop_case(role, rank, timeout=T, extra=(), at_step=2, phase=None, during_eval=False, hosts=None):
    """phase: what the deadline message must name besides the rank (None: any).
    during_eval: the stop comes once worker 0 has begun evaluating at at_step.
    hosts: the host each rank poses as (ARCFACE_TEST_HOST); then the rank stops
    itself at the forward pass of optimizer step at_step + 2 (ARCFACE_FAULT
    ...:stop), with every other rank in an indirect wait."""
    out = os.path.join(WORK, f"stopped_{role}".replace(" ", "_"))
    shutil.rmtree(out, ignore_errors=True)
    log = open(out + ".log", "w")
    args = COMMON + list(extra) + ["--output", out] + ([] if OLD else ["--comm_timeout", str(timeout)])
    cmd, env = MPIRUN + ["-np", "4", BIN] + args, dict(os.environ)
    if hosts:
        cmd = MPIRUN + [w for r, h in enumerate(hosts) for w in [":"] * (r > 0) + ["-np", "1", "env",
                                                                                 f"ARCFACE_TEST_HOST={h}", BIN] + args]
        env["ARCFACE_FAULT"] = f"{rank}:forward:{at_step + 2}:stop"
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    deadline = time.time() + 120
    # The checkpoint's `latest` is written just before worker 0 evaluates.
    while time.time() < deadline and latest_step(out) < at_step and p.poll() is None:
        time.sleep(0.02)
    # Into the evaluation, which runs for seconds (a binary older than the line
    # saying it began: 3 s at most after the checkpoint), then 1.5 s more: the
    # waiting ranks have had a sign of life (one a second here), and worker 1
    # has left the checkpoint's last collective and waits for worker 0.
    began, t_ck = f"Eval: step {at_step}: evaluating", time.time()
    while during_eval and time.time() < t_ck + 3 and p.poll() is None:
        with open(out + ".log") as f:
            if began in f.read():
                break
        time.sleep(0.02)
    if during_eval:
        time.sleep(1.5)
    pid = rank_pid(out, rank)
    if pid is None or p.poll() is not None:
        log.close()
        check(False, f"{role} rank {rank}: the job reached its step-{at_step} checkpoint and the rank's process was "
                     f"found (exit {p.poll()}); its log:\n" + open(out + ".log").read()[-3000:])
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        p.wait()
        return
    if not hosts:
        os.kill(pid, signal.SIGSTOP)
    t0 = time.time()
    try:
        rc = p.wait(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        rc = None
    t1 = time.time()
    try:
        os.kill(pid, signal.SIGKILL)  # if the launcher left it behind
    except OSError:
        pass
    with open(out + ".log") as f:
        text = f.read()
    if hosts:  # the time the rank stopped itself
        f = re.search(r"ARCFACE_FAULT: stop at forward of step \d+, unix time ([0-9.]+)", text)
        t0 = float(f.group(1)) if f else t1
    dt = t1 - t0
    m = re.search(r"rank (\d+): error: waited ([0-9.]+) s for (.*?), more than the progress deadline of ([0-9.]+) s",
                  text)
    fired = m.group(0) if m else "(no deadline message)"
    reported = float(m.group(4)) if m else float("inf")
    names = bool(m) and f"held up by rank {rank})" in m.group(3) and (phase is None or bool(re.search(phase, m.group(3))))
    # A stop during an evaluation that worker 0 goes on with (a worker 1 stopped)
    # is seen only after it: its remaining time adds to the bound.
    ev = re.search(r"^Eval: step \d+ .*\(([0-9.]+) s\)$", text, re.M)
    after = float(ev.group(1)) if ev and during_eval and rank != 0 else 0.0
    ok = rc not in (None, 0, 3) and dt <= reported + BOUND + after and names
    check(ok, f"SIGSTOP of the {role} (rank {rank}): job ended with exit {rc} {dt:.2f} s after the stop (the firing "
              f"rank's deadline {reported:.1f} s + bound {BOUND:.0f} s" + (f" + the evaluation's {after:.1f} s" if after
                                                                            else "") +
              f"; comm_timeout {timeout:.0f} s; None: still running at {LIMIT:.0f} s, killed); names rank {rank}"
              + (f" and /{phase}/" if phase else "") + f": {names}; message: {fired}")
    if hosts:
        # Every rank that fired named the stopped one: those that could not see
        # it (on the other host, in an indirect wait) left the word to one that
        # could, and were ended before they would have spoken. (The stopped rank,
        # woken by the launcher's SIGCONT, may say that it made no progress.)
        fired = re.findall(r"rank (\d+): error: waited [0-9.]+ s for (.*?), more than the progress deadline", text)
        others = [(r, w) for r, w in fired if int(r) != rank]
        check(bool(others) and all(f"held up by rank {rank})" in w for _, w in others),
              f"ranks on hosts {hosts}: every deadline message of the others names rank {rank}: " +
              "; ".join(f"rank {r}: {w}" for r, w in fired))
    if after:
        # No rank fired during the evaluation, though it outlasted the deadline
        # its waiting ranks hold it to (no slack: max(comm_timeout, 3 x step)).
        d = re.search(r"\(comm_timeout ([0-9.]+) s, 3 x the longest step so far ([0-9.]+) s", text)
        live = max(float(d.group(1)), float(d.group(2))) if d else float("inf")
        check(after > live and names,
              f"the evaluation at step {at_step} ran {after:.1f} s, longer than the deadline {live:.1f} s of the "
              f"ranks waiting for it, and no rank took it for a stuck worker 0")
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
    only = os.environ.get("AF_HANG_ONLY")  # a substring of the cases' names, to run only those
    if only:
        global stop_case
        run_case = stop_case
        stop_case = lambda role, *a: run_case(role, *a) if only in role else None  # noqa: E731
    stop_case("server", 3)
    stop_case("worker", 1)
    val = os.path.join(WORK, "val.bin")
    write_val_bin(val, EVAL_PAIRS)
    ev = ["--val_targets", val, "--verbose", "3"]
    # Stopped after the evaluation's first message or just before it: either label names it.
    stop_case("worker in its evaluation", 0, TE, ev, 3, r"worker 0.*evaluat.* step 3 \(", True)
    stop_case("worker during an evaluation", 1, TE, ev, 3, None, True)
    # Two hosts: ranks 0 and 2 on one, 1 and 3 on the other. The stopped worker 1
    # holds worker 0 in a collective and both servers (missing both pushes): only
    # server rank 3 can see it stopped.
    stop_case("worker seen from its host only", 1, TE, (), 2, None, False, ["hostA", "hostB", "hostA", "hostB"])
    startup_once()
    print(f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
