#!/usr/bin/env bash
# Runs a launcher command line (mpirun ... arcface-train ...) so that SIGTERM or
# SIGINT to this script stops the job the graceful way: the ranks finish the
# step, write a checkpoint and exit 3, and so does this script.
#
#   jobs/launch.sh mpirun -np 4 build/bin/arcface-train my.conf --ps 2
#
# Why a wrapper: Open MPI 4.1's mpirun cannot forward SIGTERM (ess_base_forward_signals
# refuses it); on SIGTERM it sets its exit status to 1 (clean_abort in
# orte/mca/ess/hnp/ess_hnp_module.c), then sends the ranks SIGTERM and SIGKILL after
# odls_base_sigkill_timeout: it exits 1 even when the ranks checkpoint and exit 3. It
# does forward SIGUSR1 to every rank, so this script turns SIGTERM/SIGINT into SIGUSR1.
# A second SIGTERM/SIGINT passes through unchanged (stop now, no checkpoint).
# The launcher runs in a session of its own (setsid), so a signal to this script's
# whole process group (a terminal's Ctrl-C, `kill -- -PGID`, `timeout`) reaches
# only this script and takes the graceful path too; without it mpirun got the
# SIGINT as well and exited 1 after the ranks' checkpoint.
# Exit status: the launcher's (3 after a graceful stop).
set -u
[ $# -ge 1 ] || { echo "usage: jobs/launch.sh LAUNCHER [ARGS...]" >&2; exit 2; }
stops=0
on_stop() {
  stops=$((stops + 1))
  if [ "$stops" -eq 1 ]; then
    echo "launch.sh: $1: asking every rank to checkpoint and stop (again to stop at once)" >&2
    kill -USR1 "$pid" 2>/dev/null
  else
    kill "-$1" "$pid" 2>/dev/null
  fi
}
trap 'on_stop TERM' TERM
trap 'on_stop INT' INT
trap 'kill -USR1 "$pid" 2>/dev/null' USR1
# In a script (no job control) a background command stays in our process group,
# so setsid execs it without forking, and setpriv execs it in turn: $! is the
# launcher itself. Out of our process group, the launcher would outlive a
# `kill -9` of this script's group; the parent-death signal (SIGTERM) ends it
# then, the way mpirun ends a job on SIGTERM.
setsid setpriv --pdeathsig TERM "$@" &
pid=$!
while :; do
  wait "$pid"; rc=$?
  # A trapped signal interrupts `wait` (status > 128) while the launcher still runs.
  if [ "$rc" -gt 128 ] && kill -0 "$pid" 2>/dev/null; then continue; fi
  [ "$rc" -gt 128 ] && { wait "$pid"; rc=$?; }
  break
done
exit "$rc"
