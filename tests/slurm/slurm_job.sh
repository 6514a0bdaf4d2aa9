#!/usr/bin/env bash
# The Slurm test: starts a real single-node Slurm cluster (tests/slurm/cluster.sh),
# then submits jobs/train.sbatch with sbatch:
#   1. srun --mpi=pmix, 2 workers + 2 servers: after the first checkpoint the batch
#      script gets SIGUSR1 (scancel --signal=USR1 --batch, what --signal=B:USR1
#      does at the time limit); it forwards it, the ranks checkpoint and exit 3, the
#      script requeues the job, and the requeued job resumes automatically and
#      finishes. Its final checkpoint must be bit-identical to an uninterrupted
#      job's.
#   2. the uninterrupted job (same script, same layout, no signal).
#   3. mpirun inside the allocation instead of srun.
#   4. a plain `scancel JOBID`: the job is cancelled for good (CANCELLED, never
#      requeued; on the old script it checkpointed and requeued itself).
#   5. kill -9 of worker rank 1 under srun (ARCFACE_FAULT, first run only): the
#      step ends within KILL_BOUND s of the kill (measured; before the stop
#      watchdog it took KillWait = 30 s + 1), the job requeues itself (it was
#      submitted with --requeue), resumes from the last checkpoint and ends
#      bit-identical to an uninterrupted job of the same length.
# The daemons are stopped on exit.
# usage: slurm_job.sh ARCFACE_TRAIN WORKDIR
set -euo pipefail
for t in slurmctld slurmd sbatch munged; do
  command -v "$t" >/dev/null || { echo "SKIP: $t is not installed (slurm-wlm, munge)"; exit 77; }
done
/usr/bin/python3 -c 'import h5py, numpy' 2>/dev/null || { echo "SKIP: h5py/NumPy (the reference) missing"; exit 77; }
BIN=$1; WORK=$2
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$HERE/../.." && pwd)
rm -rf "$WORK"; mkdir -p "$WORK"
trap 'bash "$HERE/cluster.sh" stop "$WORK/cluster"' EXIT
eval "$(bash "$HERE/cluster.sh" start "$WORK/cluster")"

STEPS=200
EXTRA="--network fmnist --embedding_size 32 --num_classes 97 --batch_size 6 --loader_threads 1 --lr 0.05
 --rec synthetic:ids=97,per_id=4,size=28,channels=1,seed=9 --max_steps $STEPS --frequent 10 --save_every 20
 --keep_checkpoints 20"

submit() { # NAME LAUNCH
  ARCFACE_BIN=$BIN PS=2 THREADS=1 LAUNCH=$2 EXTRA="$EXTRA --output $WORK/$1" \
    sbatch --parsable --nodes=1 --ntasks-per-node=4 --cpus-per-task=1 --output="$WORK/$1.log" \
    "$ROOT/jobs/train.sbatch"
}
wait_done() { # JOBID -> waits for COMPLETED, fails on FAILED/CANCELLED/TIMEOUT
  for _ in $(seq 300); do
    state=$(scontrol show job "$1" | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
    case $state in
      COMPLETED) return 0 ;;
      FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY) echo "job $1 ended $state"; return 1 ;;
    esac
    sleep 1
  done
  echo "job $1 still $state after 300 s"; return 1
}

echo "== 1. preempted job (srun --mpi=pmix)"
job=$(submit preempted srun)
for _ in $(seq 120); do [ -f "$WORK/preempted/checkpoints/latest" ] && break; sleep 0.5; done
[ -f "$WORK/preempted/checkpoints/latest" ] || { echo "no checkpoint appeared"; cat "$WORK/preempted.log"; exit 1; }
scancel --signal=USR1 --batch "$job"
wait_done "$job" || { cat "$WORK/preempted.log"; exit 1; }
restarts=$(scontrol show job "$job" | grep -o 'Restarts=[0-9]*' | cut -d= -f2)
grep -h "train.sbatch:" "$WORK/preempted.log"
grep -h "^resume:" "$WORK/preempted.log"
grep -q "requeueing job" "$WORK/preempted.log" || { echo "FAIL: the job did not requeue itself"; exit 1; }
[ "$restarts" -ge 1 ] || { echo "FAIL: Restarts=$restarts"; exit 1; }
grep -q "^resume: $WORK/preempted/checkpoints/ckpt_" "$WORK/preempted.log" || { echo "FAIL: no automatic resume"; exit 1; }
grep -q "stopped by signal" "$WORK/preempted.log" || { echo "FAIL: ranks did not report the signal stop"; exit 1; }

echo "== 2. uninterrupted job"
job=$(submit plain srun)
wait_done "$job" || { cat "$WORK/plain.log"; exit 1; }
/usr/bin/python3 "$ROOT/tests/trainer/compare_runs.py" "$WORK/plain" "$WORK/preempted" --step $STEPS --identical

echo "== 3. mpirun inside the allocation"
EXTRA="${EXTRA/--max_steps $STEPS/--max_steps 20}"
job=$(submit mpirun mpirun)
wait_done "$job" || { cat "$WORK/mpirun.log"; exit 1; }
grep -h "train.sbatch: finished" "$WORK/mpirun.log"
/usr/bin/python3 "$ROOT/tests/trainer/compare_runs.py" "$WORK/plain" "$WORK/mpirun" --losses-only

echo "== 4. plain scancel cancels for good"
EXTRA="${EXTRA/--max_steps 20/--max_steps 100000}"
job=$(submit cancelled srun)
for _ in $(seq 120); do [ -f "$WORK/cancelled/checkpoints/latest" ] && break; sleep 0.5; done
scancel "$job"
for _ in $(seq 60); do
  state=$(scontrol show job "$job" | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
  [ "$state" = CANCELLED ] && break; sleep 1
done
sleep 5   # a requeue, had the script asked for one, would show by now
state=$(scontrol show job "$job" | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
restarts=$(scontrol show job "$job" | grep -o 'Restarts=[0-9]*' | cut -d= -f2)
grep -h "train.sbatch:" "$WORK/cancelled.log"
echo "state $state, restarts $restarts"
[ "$state" = CANCELLED ] && [ "$restarts" = 0 ] || { echo "FAIL: scancel did not cancel for good"; exit 1; }
if grep -q "; requeueing job" "$WORK/cancelled.log"; then echo "FAIL: the script requeued a cancelled job"; exit 1; fi

echo "== 5. kill -9 of a rank under srun: ends promptly, requeues, resumes"
KILL_BOUND=20
cat > "$WORK/faulty.sh" <<FAULTY
#!/bin/sh
# The first run only: worker rank 1 dies (SIGKILL) in the push of step 30.
[ "\${SLURM_RESTART_COUNT:-0}" = 0 ] && export ARCFACE_FAULT=1:push:30
exec "$BIN" "\$@"
FAULTY
chmod +x "$WORK/faulty.sh"
EXTRA="${EXTRA/--max_steps 100000/--max_steps 60}"
job=$(BIN=$WORK/faulty.sh; submit killed srun)
wait_done "$job" || { cat "$WORK/killed.log"; exit 1; }
grep -h "train.sbatch:\|ARCFACE_FAULT\|srun: error\|a peer rank is gone" "$WORK/killed.log"
t_kill=$(grep -o 'ARCFACE_FAULT: SIGKILL at push of step 30, unix time [0-9.]*' "$WORK/killed.log" | awk '{print $NF}')
t_end=$(grep -o 'the job step failed with status [0-9]* .*unix time [0-9.]*' "$WORK/killed.log" | head -1 | awk '{print $NF}')
[ -n "$t_kill" ] && [ -n "$t_end" ] || { echo "FAIL: no kill or no step failure in the log"; exit 1; }
dt=$(echo "$t_end - $t_kill" | bc)
echo "kill -9 of rank 1 under srun: the job step ended $dt s after the kill (bound $KILL_BOUND s; KillWait 30 s)"
[ "$(echo "$dt <= $KILL_BOUND" | bc)" = 1 ] || { echo "FAIL: the step took $dt s to end"; exit 1; }
restarts=$(scontrol show job "$job" | grep -o 'Restarts=[0-9]*' | cut -d= -f2)
[ "$restarts" -ge 1 ] || { echo "FAIL: not requeued (Restarts=$restarts)"; exit 1; }
grep -q "^resume: $WORK/killed/checkpoints/ckpt_" "$WORK/killed.log" || { echo "FAIL: no automatic resume"; exit 1; }
/usr/bin/python3 "$ROOT/tests/trainer/compare_runs.py" "$WORK/plain" "$WORK/killed" --step 60 --identical
