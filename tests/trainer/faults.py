"""Bounded failure: faults at every phase of a step end the whole job within a
stated bound, with a message from the rank that saw the fault first; signals to
any single rank stop the job the graceful way (checkpoint, exit 3).

A (2 workers + 2 servers) job; world ranks 0, 1 are workers, 2, 3 servers.
Faults are injected deterministically with ARCFACE_FAULT=RANK:PHASE:STEP[:ACTION]
(include/arcface/ctx.h):
  kill -9     worker 1 at pull / forward / push / commit / checkpoint of a step,
              server 3 at pull / push / commit / checkpoint: the job must end,
              non-zero, within BOUND s of the kill (the measured time is printed)
  error       worker 1 fails at push, server 3 at commit: the job ends within
              BOUND s, and the failing rank's own message is in the log
  refused     worker 1 sends a push the servers refuse, worker 0 a commit they
              refuse, both in the LAST step (nobody pulls again afterwards: on the
              old code the job waited forever): the job ends within BOUND s with
              the server's refusal, printed by the server or by the worker that
              read the server's error reply
  signals     SIGTERM to worker 1, SIGUSR1 to server 3, SIGTERM to server 2, and
              SIGTERM to jobs/launch.sh wrapping mpirun: exit 3 after a
              checkpoint newer than the one before the signal
  start-up    --output names a file, 3 ranks: rank 0 fails to create the folder;
              the job ends within BOUND s naming it (on the old code it hung)
  stuck peer  server 3 stopped (SIGSTOP, so mpirun does not see it die), then
              SIGUSR1 to worker 0: the others cannot checkpoint; the stop watchdog
              ends the job within ARCFACE_STOP_GRACE (3 s here) + BOUND
Information only (printed, not asserted): SIGTERM to plain mpirun (Open MPI kills
the ranks after 1 s and exits 1; it cannot forward SIGTERM).
usage: faults.py ARCFACE_TRAIN MPIRUN_WORDS_SEPARATED_BY_BAR WORKDIR"""
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
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BOUND = 10.0  # seconds from the fault to the end of the whole job
COMMON = ["--network", "fmnist", "--embedding_size", "32", "--num_classes", "97", "--frequent", "1",
          "--loader_threads", "1", "--threads", "1", "--lr", "0.05", "--sample_rate", "0.5", "--batch_size", "6",
          "--ps", "2", "--save_every", "2", "--resume", "none",
          "--rec", "synthetic:ids=97,per_id=4,size=28,channels=1,seed=9"]
failures, checks, table = 0, 0, []


def check(cond, msg):
    global failures, checks
    checks += 1
    failures += not cond
    print(("ok   " if cond else "FAIL ") + msg, flush=True)


def cmd(out, steps, env_fault=None):
    fwd = ["-x", "ARCFACE_FAULT"] if env_fault else []
    return MPIRUN + fwd + ["-np", "4", BIN] + COMMON + ["--max_steps", str(steps), "--output", out]


def start(name, steps, fault=None, env=None, wrap=()):
    out = os.path.join(WORK, name)
    shutil.rmtree(out, ignore_errors=True)
    e = dict(os.environ, **(env or {}))
    if fault:
        e["ARCFACE_FAULT"] = fault
    log = open(out + ".log", "w")
    p = subprocess.Popen(list(wrap) + cmd(out, steps, fault), stdout=log, stderr=subprocess.STDOUT, env=e,
                         start_new_session=True)
    return p, out


def finish(p, out, limit):
    """Waits up to `limit` s; a job still running then is killed (a hang) and None returned."""
    try:
        rc = p.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        rc = None
    with open(out + ".log") as f:
        return rc, f.read()


def fault_run(role, rank, phase, step, action="kill"):
    fault = f"{rank}:{phase}:{step}" + ("" if action == "kill" else f":{action}")
    p, out = start(f"{action}_{role}_{phase}", 6, fault)
    rc, log = finish(p, out, 120)
    t_end = time.time()
    # The injecting rank prints the time of the fault.
    m = re.search(r"ARCFACE_FAULT: \S+ at \w+ of step \d+, unix time ([0-9.]+)", log)
    dt = t_end - float(m.group(1)) if m else float("inf")
    return rc, log, dt


def wait_ckpt(out, p, limit=120):
    deadline = time.time() + limit
    while time.time() < deadline and latest_step(out) < 2 and p.poll() is None:
        time.sleep(0.05)
    return latest_step(out)


def signal_run(name, target, sig, env=None, wrap=()):
    """target: a world rank, 'launcher' (the process we started) or 'group' (its
    whole process group, as a terminal's Ctrl-C or `kill -- -PGID` signals it)."""
    p, out = start(name, 100000, env=env, wrap=wrap)
    before = wait_ckpt(out, p)
    pid = p.pid if target in ("launcher", "group") else rank_pid(out, target)
    if pid is None:
        check(False, f"{name}: found the process of rank {target}")
        os.killpg(p.pid, signal.SIGKILL)
        return None, "", float("nan"), before, -1
    t0 = time.time()
    if target == "group":
        os.killpg(pid, sig)
    else:
        os.kill(pid, sig)
    rc, log = finish(p, out, 120)
    return rc, log, time.time() - t0, before, latest_step(out)


def main():
    os.makedirs(WORK, exist_ok=True)
    print(f"bound: the whole job ends within {BOUND:.0f} s of the fault", flush=True)
    # kill -9 of each role at each phase (step 3; the checkpoint after step 4)
    for role, rank, phases in (("worker", 1, ("pull", "forward", "push", "commit", "checkpoint")),
                               ("server", 3, ("pull", "push", "commit", "checkpoint"))):
        for phase in phases:
            rc, log, dt = fault_run(role, rank, phase, 4 if phase == "checkpoint" else 3)
            ok = rc not in (None, 0) and dt <= BOUND and "exited on signal 9" in log
            check(ok, f"kill -9 of the {role} (rank {rank}) at {phase}: job ended with exit {rc} "
                      f"{dt:.2f} s after the kill (bound {BOUND:.0f} s)")
            table.append((f"kill -9 {role} at {phase}", rc, dt))
    # errors reported by a rank: its own message, then the job ends
    for role, rank, phase, needle in (("worker", 1, "push", "rank 1 (worker): error: optimizer step 3: rank 1: injected"),
                                      ("server", 3, "commit", "rank 3 (server): error: parameter server 1 (rank 3): "
                                                              "rank 3: injected")):
        rc, log, dt = fault_run(role, rank, phase, 3, "error")
        ok = rc not in (None, 0) and dt <= BOUND and needle in log
        check(ok, f"error in the {role} at {phase}: exit {rc} {dt:.2f} s after the fault, its message in the log: "
                  f"{needle in log}")
        table.append((f"error in {role} at {phase}", rc, dt))
    # refused push / commit in the last step (index 5 of 6)
    for what, rank, phase, action, needle in (
            ("push", 1, "push", "badpush", "push from rank 1 is for micro-step 1005"),
            ("commit", 0, "commit", "badcommit", "expected the commit of optimizer step 5 from rank 0, got commit of step 1005")):
        rc, log, dt = fault_run("worker", rank, phase, 5, action)
        lines = [l for l in log.splitlines() if needle in l]
        # The server's refusal, printed by the server or by the worker that read its
        # error reply first (whichever aborts the job first).
        ok = rc not in (None, 0) and dt <= BOUND and any("error" in l for l in lines)
        check(ok, f"a {what} refused by the servers in the last step: exit {rc} after {dt:.2f} s (None: hung, "
                  f"killed at 120 s); the refusal: {lines[:1]}")
        table.append((f"{what} refused in the last step", rc, dt))
    # signals to single ranks and to the launcher wrapper
    for name, target, sig, wrap in (("sigterm_worker1", 1, signal.SIGTERM, ()),
                                    ("sigusr1_server3", 3, signal.SIGUSR1, ()),
                                    ("sigterm_server2", 2, signal.SIGTERM, ()),
                                    ("sigterm_launch_sh", "launcher", signal.SIGTERM,
                                     ("bash", os.path.join(ROOT, "jobs", "launch.sh"))),
                                    # Ctrl-C at a terminal: SIGINT to launch.sh's whole process
                                    # group (mpirun would exit 1 if it got it too)
                                    ("sigint_launch_sh_group", "group", signal.SIGINT,
                                     ("bash", os.path.join(ROOT, "jobs", "launch.sh")))):
        rc, log, dt, before, after = signal_run(name, target, sig, wrap=wrap)
        # The job stops at the next step boundary with that step checkpointed: a new
        # checkpoint, or the one just written when the signal came right after it.
        m = re.search(r"stopped by signal \d+ after the checkpoint of step (\d+)", log)
        ok = rc == 3 and m is not None and int(m.group(1)) == after and after >= before
        whom = {"launcher": "jobs/launch.sh mpirun", "group": "the process group of jobs/launch.sh mpirun"}
        check(ok, f"{signal.Signals(sig).name} to {whom.get(target, f'rank {target}')}: "
                  f"exit {rc} after {dt:.2f} s, checkpoint step {before} -> {after}")
        table.append((f"{signal.Signals(sig).name} to {name.split('_', 1)[1]}", rc, dt))
    rc, log, dt, before, after = signal_run("sigterm_mpirun", "launcher", signal.SIGTERM)
    print(f"info SIGTERM to plain mpirun: exit {rc} after {dt:.2f} s, checkpoint step {before} -> {after} "
          f"(Open MPI cannot forward SIGTERM; use jobs/launch.sh)", flush=True)
    # rank 0 fails to prepare the output folder (a file is in the way): the other
    # ranks must not wait for it (on the old code they did, forever)
    afile = os.path.join(WORK, "output_is_a_file")
    with open(afile, "w") as f:
        f.write("not a folder\n")
    t0 = time.time()
    p = subprocess.Popen(MPIRUN + ["-np", "3", BIN] + COMMON[:COMMON.index("--ps")] + COMMON[COMMON.index("--ps") + 2:] +
                         ["--ps", "1", "--max_steps", "2", "--output", afile], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log = p.communicate(timeout=60)[0]
        rc = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        log, rc = p.communicate()[0], None
    dt = time.time() - t0
    named = [l for l in log.splitlines() if "error" in l and afile in l]
    ok = rc not in (None, 0) and dt <= BOUND and bool(named)
    check(ok, f"--output is a file, 3 ranks: exit {rc} after {dt:.2f} s (None: hung, killed at 60 s); {named[:1]}")
    table.append(("--output is a file (rank 0 fails at start-up)", rc, dt))
    # a stuck peer after a signal: the stop watchdog
    p, out = start("stuck_server", 100000, env={"ARCFACE_STOP_GRACE": "3"})
    wait_ckpt(out, p)
    spid, wpid = rank_pid(out, 3), rank_pid(out, 0)
    if spid and wpid:
        os.kill(spid, signal.SIGSTOP)
        t0 = time.time()
        os.kill(wpid, signal.SIGUSR1)
        rc, log = finish(p, out, 120)
        dt = time.time() - t0
        ok = rc not in (None, 0, 3) and dt <= 3 + BOUND and "a peer rank is gone or stuck" in log
        check(ok, f"server 3 stopped, SIGUSR1 to worker 0: exit {rc} after {dt:.2f} s (bound 3 + {BOUND:.0f} s), "
                  f"watchdog message: {'a peer rank is gone or stuck' in log}")
        table.append(("SIGUSR1 with server stuck (SIGSTOP)", rc, dt))
    else:
        check(False, "found the processes of ranks 0 and 3")
        os.killpg(p.pid, signal.SIGKILL)
    print("\n| fault | exit | job ended after (s) |\n|---|---|---|")
    for what, rc, dt in table:
        print(f"| {what} | {rc} | {dt:.2f} |")
    print(f"{checks - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
