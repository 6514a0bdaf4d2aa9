#!/usr/bin/env bash
# The two-node Slurm tests: a real Slurm cluster of two nodes on this machine
# (tests/slurm/cluster2.sh: slurmctld and two slurmd, each node in its own network,
# UTS and mount namespace on one bridge), and jobs/train.sbatch submitted to it
# exactly as jobs/README.md ("Two nodes") tells a site to. One scenario per run:
#   preempt  1. `sbatch --nodes=2 jobs/train.sbatch CONF`, 2 workers + 2 servers
#               placed cyclically: every rank logs its host, and both roles must be
#               on both nodes; the bytes counted on a node's link show that the MPI
#               traffic crossed the bridge (TCP between the namespaces).
#            2. the same job preempted with `scancel --signal=USR1 --batch` after its
#               first checkpoint: it checkpoints, requeues itself, resumes on the two
#               nodes, and its final checkpoint must equal job 1's in every dataset
#               and attribute, bit for bit (h5py).
#   grow     a one-node job's checkpoint (2 workers + 1 server, 97 classes) resumed
#            on two nodes with more servers and classes (2 + 2, 131): it resumes,
#            reports the growth, places ranks on both nodes and trains on.
#   cancel   a plain `scancel JOBID` cancels for good (no requeue), and kill -9 of
#            one rank (a server on the second node) ends the job step promptly and
#            the job requeues and finishes.
# usage: two_nodes.sh ARCFACE_TRAIN WORKDIR preempt|grow|cancel
# exit 0: passed, 77: skipped (the reason is printed), else a failure.
set -euo pipefail
BIN=$1; WORK=$2; SCENARIO=$3
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$HERE/../.." && pwd)
PY=/usr/bin/python3
SKIP=77
# shellcheck source=tests/slurm/cluster2.sh
source "$HERE/cluster2.sh"
for tool in slurmctld slurmd munged nsenter unshare ip; do
  command -v "$tool" > /dev/null || { echo "SKIP: $tool is not installed"; exit $SKIP; }
done
"$PY" -c "import h5py" 2>/dev/null || { echo "SKIP: $PY has no h5py"; exit $SKIP; }
[ -d "$WORK/cluster" ] && cluster2_stop "$WORK/cluster"
rm -rf "$WORK"; mkdir -p "$WORK"
trap 'cluster2_stop "$WORK/cluster"' EXIT
t0=$(date +%s)
cluster2_start "$WORK/cluster"
echo "cluster up in $(( $(date +%s) - t0 )) s: $(cl2 sinfo -h -N -o '%N=%T' | tr '\n' ' ')"

conf() { # NAME CLASSES STEPS [OUTPUT] -> NAME.conf, a configuration file as a site writes one
  cat > "$WORK/$1.conf" <<CONF
network = "fmnist"
embedding_size = 32
num_classes = $2
rec = "synthetic:ids=$2,per_id=4,size=28,channels=1,seed=9"
batch_size = 6
lr = 0.05
seed = 2048
max_steps = $3
frequent = 10
save_every = 10
loader_threads = 1
output = "$WORK/${4:-$1}"
CONF
}
submit() { # NAME NODES PS [sbatch options]: jobs/README.md's command, with NAME.conf
  local name=$1 nodes=$2 ps=$3; shift 3
  ARCFACE_BIN=$BIN PS=$ps THREADS=1 \
    OMPI_MCA_btl_tcp_if_include=$CL2_SUBNET OMPI_MCA_oob_tcp_if_include=$CL2_SUBNET \
    cl2 sbatch --parsable --nodes="$nodes" --ntasks-per-node=2 --cpus-per-task=1 \
    --output="$WORK/$name.log" "$@" "$ROOT/jobs/train.sbatch" "$WORK/$name.conf"
}
fail() { echo "FAIL: $*"; for f in "$WORK"/*.log; do echo "--- $f"; tail -n 30 "$f"; done; exit 1; }
placement() { # LOG: every worker and every server on both nodes
  local log=$1 role node
  grep -E '^rank [0-9]+: (worker|server) [0-9]+ on host ' "$log" | sort -u
  for role in worker server; do
    for node in "${CL2_NODES[@]}"; do
      grep -qE "^rank [0-9]+: $role [0-9]+ on host $node\$" "$log" || fail "no $role rank on $node in $log"
    done
  done
}
ckpt() { printf '%s/checkpoints/ckpt_%08d.h5' "$WORK/$1" "$2"; }
wait_ckpt() { # NAME: until the run's first checkpoint exists
  for _ in $(seq 240); do [ -f "$WORK/$1/checkpoints/latest" ] && return 0; sleep 0.5; done
  fail "no checkpoint of $1 appeared in 120 s"
}

case $SCENARIO in
preempt)
  STEPS=40
  echo "== 1. uninterrupted and 2. preempted jobs, 2 nodes x (1 worker + 1 server), srun --mpi=pmix"
  conf plain 97 $STEPS; conf preempted 97 $STEPS
  # One job at a time: two jobs' ranks on one node at once have crashed Open MPI's
  # shared-memory set-up here (a segfault after "open(2) ... No such file").
  b1=$(cl2_link_bytes 1); b2=$(cl2_link_bytes 2)
  plain=$(submit plain 2 2)
  cl2_wait_job "$plain" 300 || fail "job $plain (uninterrupted)"
  b1=$(( $(cl2_link_bytes 1) - b1 )); b2=$(( $(cl2_link_bytes 2) - b2 ))
  echo "bytes through the nodes' links during job $plain: afnode1 $b1, afnode2 $b2 (at least 10000000 each expected)"
  [ "$b1" -gt 10000000 ] && [ "$b2" -gt 10000000 ] || fail "too few bytes crossed the links: the ranks did not talk over TCP"
  placement "$WORK/plain.log"
  pre=$(submit preempted 2 2)
  wait_ckpt preempted
  echo "preempting job $pre after $(cat "$WORK/preempted/checkpoints/latest")"
  cl2 scancel --signal=USR1 --batch "$pre"
  cl2_wait_job "$pre" 300 || fail "job $pre (preempted)"
  placement "$WORK/preempted.log"
  grep -h "^train.sbatch:" "$WORK/preempted.log"
  grep -q "requeueing job" "$WORK/preempted.log" || fail "the preempted job did not requeue itself"
  restarts=$(cl2 scontrol show job "$pre" | grep -o 'Restarts=[0-9]*' | cut -d= -f2)
  [ "$restarts" -ge 1 ] || fail "Restarts=$restarts"
  grep -q "^resume: $WORK/preempted/checkpoints/ckpt_" "$WORK/preempted.log" || fail "no automatic resume"
  grep "restart 1 " "$WORK/preempted.log" | grep -q "on afnode\[1-2\]" || fail "the requeued job is not on both nodes"
  "$PY" "$HERE/same_checkpoint.py" "$(ckpt plain $STEPS)" "$(ckpt preempted $STEPS)" ||
    fail "the resumed run differs from the uninterrupted one"
  ;;
grow)
  STEPS=20
  echo "== one node (2 workers + 1 server, 97 classes) resumed on two nodes (2 + 2, 131 classes)"
  conf grow1 97 $STEPS grow
  one=$(submit grow1 1 1 --ntasks-per-node=3)
  cl2_wait_job "$one" 300 || fail "job $one (one node)"
  conf grow2 131 $((STEPS + 10)) grow
  two=$(submit grow2 2 2)
  cl2_wait_job "$two" 300 || fail "job $two (grown onto two nodes)"
  placement "$WORK/grow2.log"
  grep -h "^resume: " "$WORK/grow2.log"
  grep -q "^resume: class growth from 97 to 131 classes" "$WORK/grow2.log" || fail "the log does not report the class growth"
  grep -q "^resume: $(ckpt grow $STEPS)" "$WORK/grow2.log" || fail "the grown job did not resume from $(ckpt grow $STEPS)"
  "$PY" "$HERE/same_checkpoint.py" --grown "$(ckpt grow $STEPS)" "$(ckpt grow $((STEPS + 10)))" ||
    fail "the grown checkpoint"
  ;;
cancel)
  echo "== a plain scancel"
  conf cancel 97 100000; conf killed 97 30
  job=$(submit cancel 2 2)
  wait_ckpt cancel
  # A restart before the scancel (a rank that died at start-up) is not the point here.
  r0=$(cl2 scontrol show job "$job" | grep -o 'Restarts=[0-9]*' | cut -d= -f2)
  cl2 scancel "$job"
  cl2_wait_job "$job" 120 && fail "job $job COMPLETED after scancel"
  sleep 3
  state=$(cl2 scontrol show job "$job" | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
  restarts=$(cl2 scontrol show job "$job" | grep -o 'Restarts=[0-9]*' | cut -d= -f2)
  grep -h "^train.sbatch:" "$WORK/cancel.log"
  echo "after scancel: JobState=$state Restarts=$restarts (before: $r0)"
  [ "$state" = CANCELLED ] && [ "$restarts" = "$r0" ] || fail "scancel did not cancel job $job for good"

  echo "== kill -9 of the server on afnode2"
  job=$(submit killed 2 2)
  wait_ckpt killed
  pid=
  for p in $(ip netns pids "${CL2_NS_NODE[1]}"); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = arcface-train ] || continue
    tr '\0' ' ' < "/proc/$p/environ" | grep -qw "SLURM_PROCID=3" && pid=$p
  done
  [ -n "$pid" ] || fail "no rank 3 (server 1) found on afnode2"
  kill -9 "$pid"; tk=$(date +%s%N)
  # The step has ended when no rank is left on either node.
  for _ in $(seq 600); do
    left=0
    for ns in "${CL2_NS_NODE[@]}"; do
      for p in $(ip netns pids "$ns"); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = arcface-train ] && left=$((left + 1))
      done
    done
    [ "$left" = 0 ] && break
    sleep 0.1
  done
  ms=$(( ($(date +%s%N) - tk) / 1000000 ))
  grep -h "^train.sbatch:" "$WORK/killed.log"
  echo "every rank gone $ms ms after kill -9 of rank 3 (bound 25000 ms: below KillWait, 30 s)"
  [ "$left" = 0 ] && [ "$ms" -lt 25000 ] || fail "$left ranks still ran $ms ms after kill -9 of one"
  cl2_wait_job "$job" 300 || fail "job $job did not requeue and finish"
  grep -q "^resume: $WORK/killed/checkpoints/ckpt_" "$WORK/killed.log" || fail "the requeued job did not resume"
  ;;
*) echo "two_nodes.sh: unknown scenario '$SCENARIO'"; exit 2 ;;
esac
echo "$SCENARIO: passed in $(( $(date +%s) - t0 )) s"
