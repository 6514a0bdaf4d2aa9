#!/usr/bin/env bash
# Two hosts on one machine: network namespaces afh1 and afh2, joined to a bridge by
# veth pairs, 10.231.7.0/24. mpirun starts its daemons in them through an rsh
# agent that runs `ip netns exec`, and the ranks talk TCP only (btl tcp,self) over
# the test subnet. A (2 workers + 2 servers) job placed as h1:2,h2:2 must give the
# single-process losses and final state (tests/trainer/compare_runs.py).
# usage: two_hosts.sh ARCFACE_TRAIN WORKDIR
set -euo pipefail
command -v ip >/dev/null || { echo "SKIP: iproute2 is not installed"; exit 77; }
/usr/bin/python3 -c 'import h5py, numpy' 2>/dev/null || { echo "SKIP: h5py/NumPy (the reference) missing"; exit 77; }
BIN=$1; WORK=$2
PY=/usr/bin/python3
HERE=$(cd "$(dirname "$0")" && pwd)
NET=10.231.7
rm -rf "$WORK"; mkdir -p "$WORK"

cleanup() {
  ip netns del afh1 2>/dev/null || true
  ip netns del afh2 2>/dev/null || true
  ip link del afbr0 2>/dev/null || true
}
trap cleanup EXIT
cleanup
ip link add afbr0 type bridge
ip addr add $NET.254/24 dev afbr0
ip link set afbr0 up
for i in 1 2; do
  ip netns add afh$i
  ip link add afv$i type veth peer name afp$i
  ip link set afp$i netns afh$i
  ip link set afv$i master afbr0
  ip link set afv$i up
  ip netns exec afh$i ip addr add $NET.$i/24 dev afp$i
  ip netns exec afh$i ip link set afp$i up
  ip netns exec afh$i ip link set lo up
done

# The rsh agent: mpirun calls it as `agent HOST command...`.
cat > "$WORK/netns-rsh" <<AGENT
#!/bin/sh
host=\$1; shift
case \$host in
  $NET.1) ns=afh1 ;;
  $NET.2) ns=afh2 ;;
  *) echo "netns-rsh: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec \$ns sh -c "\$*"
AGENT
chmod +x "$WORK/netns-rsh"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
COMMON=(--network fmnist --embedding_size 32 --num_classes 97 --max_steps 4 --frequent 1 --loader_threads 1
        --threads 1 --lr 0.05 --resume none --sample_rate 0.5 --rec synthetic:ids=97,per_id=4,size=28,channels=1,seed=5)
"$BIN" "${COMMON[@]}" --batch_size 12 --save_every 1 --keep_checkpoints 10 --output "$WORK/ref" > "$WORK/ref.log" 2>&1
two_hosts() {
  local out=$1; shift
  mpirun --allow-run-as-root --oversubscribe --bind-to none \
    --mca plm_rsh_agent "$WORK/netns-rsh" --host $NET.1:2,$NET.2:2 -np 4 \
    --mca btl tcp,self --mca btl_tcp_if_include $NET.0/24 --mca oob_tcp_if_include $NET.0/24 \
    -x OPENBLAS_NUM_THREADS -x PATH -x LD_LIBRARY_PATH \
    "$BIN" "${COMMON[@]}" --batch_size 6 --ps 2 --output "$WORK/$out" "$@" > "$WORK/$out.log" 2>&1 || {
    cat "$WORK/$out.log"; exit 1; }
  grep -h "^server" "$WORK/$out.log" || true
}
two_hosts run4
two_hosts step3 --resume "$WORK/ref/checkpoints/ckpt_00000002.h5" --max_steps 3
echo "== 4 steps on two hosts vs one process (losses)"
$PY "$HERE/compare_runs.py" "$WORK/ref" "$WORK/run4" --losses-only
echo "== step 3 on two hosts from the reference's step 2 (state)"
$PY "$HERE/compare_runs.py" "$WORK/ref" "$WORK/step3" --step 3
