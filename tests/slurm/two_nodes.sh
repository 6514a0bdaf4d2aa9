#!/usr/bin/env bash
# The two-node Slurm test: a real Slurm cluster of two nodes on this machine
# (tests/slurm/cluster2.sh: slurmctld and two slurmd, each node in its own network,
# UTS and mount namespace on one bridge), and jobs/train.sbatch submitted to it
# exactly as jobs/README.md ("Two nodes") tells a site to:
#   1. `sbatch --nodes=2 jobs/train.sbatch CONF`, 2 workers + 2 servers placed
#      cyclically: every rank logs its host, and both roles must be on both nodes;
#      bytes counted on each node's link show the MPI traffic crossed the bridge.
#   2. the same job preempted with `scancel --signal=USR1 --batch` after its first
#      checkpoint: it checkpoints, requeues itself, resumes on the two nodes, and its
#      final checkpoint must equal job 1's in every dataset and attribute (h5py).
#   3. a one-node job's checkpoint resumed on two nodes with more servers and more
#      classes (class growth on resume); reported as a skip while the trainer
#      refuses growth.
# Jobs 1 and 2 run at the same time (the cluster has room for both).
# usage: two_nodes.sh ARCFACE_TRAIN WORKDIR
# exit 0: all passed, 77: a scenario could not run here (named), else a failure.
set -euo pipefail
BIN=$1; WORK=$2
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

STEPS=60
conf() { # NAME CLASSES -> a configuration file, as a site would write one
  cat > "$WORK/$1.conf" <<CONF
network = "fmnist"
embedding_size = 32
num_classes = $2
rec = "synthetic:ids=$2,per_id=4,size=28,channels=1,seed=9"
batch_size = 6
lr = 0.05
seed = 2048
max_steps = $STEPS
frequent = 10
save_every = 10
loader_threads = 1
output = "$WORK/$1"
CONF
  echo "$WORK/$1.conf"
}
submit() { # NAME CLASSES NODES PS [sbatch options]: jobs/README.md's command
  local name=$1 classes=$2 nodes=$3 ps=$4; shift 4
  ARCFACE_BIN=$BIN PS=$ps THREADS=1 \
    OMPI_MCA_btl_tcp_if_include=$CL2_SUBNET OMPI_MCA_oob_tcp_if_include=$CL2_SUBNET \
    cl2 sbatch --parsable --nodes="$nodes" --ntasks-per-node=2 --cpus-per-task=1 \
    --output="$WORK/$name.log" "$@" "$ROOT/jobs/train.sbatch" "$(conf "$name" "$classes")"
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

echo "== 1. uninterrupted and 2. preempted jobs, 2 nodes x (1 worker + 1 server), srun --mpi=pmix"
b1=$(cl2_link_bytes 1); b2=$(cl2_link_bytes 2)
plain=$(submit plain 97 2 2)
pre=$(submit preempted 97 2 2)
for _ in $(seq 240); do [ -f "$WORK/preempted/checkpoints/latest" ] && break; sleep 0.5; done
[ -f "$WORK/preempted/checkpoints/latest" ] || fail "no checkpoint appeared in 120 s"
echo "preempting job $pre after $(cat "$WORK/preempted/checkpoints/latest")"
cl2 scancel --signal=USR1 --batch "$pre"
cl2_wait_job "$plain" 300 || fail "job $plain (uninterrupted)"
cl2_wait_job "$pre" 300 || fail "job $pre (preempted)"
echo "bytes on the nodes' links during both jobs: afnode1 $(( $(cl2_link_bytes 1) - b1 )), afnode2 $(( $(cl2_link_bytes 2) - b2 ))"
[ $(( $(cl2_link_bytes 1) - b1 )) -gt 1000000 ] || fail "less than 1 MB crossed afnode1's link: the ranks did not talk over TCP"
placement "$WORK/plain.log"
placement "$WORK/preempted.log"
grep -h "^train.sbatch:" "$WORK/preempted.log"
grep -q "requeueing job" "$WORK/preempted.log" || fail "the preempted job did not requeue itself"
restarts=$(cl2 scontrol show job "$pre" | grep -o 'Restarts=[0-9]*' | cut -d= -f2)
[ "$restarts" -ge 1 ] || fail "Restarts=$restarts"
grep -q "^resume: $WORK/preempted/checkpoints/ckpt_" "$WORK/preempted.log" || fail "no automatic resume"
grep -q "on afnode\[1-2\]" <(grep "restart 1" "$WORK/preempted.log") || fail "the requeued job is not on both nodes"
"$PY" "$HERE/same_checkpoint.py" "$WORK/plain/checkpoints/ckpt_$(printf %08d $STEPS).h5" \
  "$WORK/preempted/checkpoints/ckpt_$(printf %08d $STEPS).h5" || fail "the resumed run differs from the uninterrupted one"

echo "== 3. one node (2 workers + 1 server, 97 classes) resumed on two nodes (2 + 2, 131 classes)"
one=$(submit grow 97 1 1 --ntasks-per-node=3)
cl2_wait_job "$one" 300 || fail "job $one (one node)"
sed -i "s/^max_steps = .*/max_steps = $((STEPS + 20))/" "$WORK/grow.conf"
two=$(ARCFACE_BIN=$BIN PS=2 THREADS=1 OMPI_MCA_btl_tcp_if_include=$CL2_SUBNET OMPI_MCA_oob_tcp_if_include=$CL2_SUBNET \
  EXTRA="--num_classes 131 --rec synthetic:ids=131,per_id=4,size=28,channels=1,seed=9" \
  cl2 sbatch --parsable --nodes=2 --ntasks-per-node=2 --cpus-per-task=1 --output="$WORK/grow2.log" \
  "$ROOT/jobs/train.sbatch" "$WORK/grow.conf")
if ! cl2_wait_job "$two" 300; then
  if grep -q "num_classes" "$WORK/grow2.log" && ! grep -q "^resume: " "$WORK/grow2.log"; then
    grep -h "error" "$WORK/grow2.log" | head -3
    echo "SKIP: scenario 3 (class growth on resume): this trainer refuses a larger num_classes"
    echo "scenarios 1 and 2 passed in $(( $(date +%s) - t0 )) s"
    exit $SKIP
  fi
  fail "job $two (grown onto two nodes)"
fi
placement "$WORK/grow2.log"
grep -q "^resume: $WORK/grow/checkpoints/ckpt_$(printf %08d $STEPS).h5" "$WORK/grow2.log" || fail "the grown job did not resume"
"$PY" "$HERE/same_checkpoint.py" --grown "$WORK/grow/checkpoints/ckpt_$(printf %08d $STEPS).h5" \
  "$WORK/grow/checkpoints/ckpt_$(printf %08d $((STEPS + 20))).h5" || fail "the grown checkpoint"
echo "all passed in $(( $(date +%s) - t0 )) s"
