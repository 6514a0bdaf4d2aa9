#!/usr/bin/env bash
# A two-node Slurm cluster on one machine, for tests that need more than one node
# (tests/slurm/two_nodes.sh, and the identity-scale runs that follow it).
#
# Each node is a slurmd in its own network namespace (its own address), UTS
# namespace (host name = its NodeName) and mount namespace (its own /tmp, /dev/shm,
# pid file and PMIx folder, and an /etc/hosts that names the cluster); slurmctld lives in a
# further namespace that holds the bridge joining the nodes, so all the cluster's
# traffic, Slurm's and MPI's, stays on addresses inside namespaces created here.
# One munged (its own socket under DIR) serves them all. Namespaces are entered
# with nsenter, not `ip netns exec`, which would remount /sys and hide the cgroup
# file system slurmd 22.05 insists on.
#
# As a library (source it):
#   cluster2_start DIR     starts munged, slurmctld and two slurmd; exports SLURM_CONF
#                          and CL2_* (CL2_SUBNET for Open MPI's *_tcp_if_include)
#   cl2 CMD ...            runs a Slurm client (sbatch, scontrol, ...) on the cluster's network
#   cl2_wait_job JOBID S   waits up to S seconds until the job ends; 0 only if COMPLETED
#   cl2_link_bytes NODE    bytes sent plus received so far on node NODE's link (1 or 2)
#   cluster2_stop DIR      cancels jobs, stops every process inside the namespaces by
#                          PID, deletes the namespaces (idempotent; use it in a trap)
# As a command: cluster2.sh start|stop DIR (start prints the exports to eval).
# Needs root (namespaces), Debian's slurm-wlm, munge and iproute2.

CL2_SUBNET=10.250.0.0/24
CL2_CTL_ADDR=10.250.0.1
CL2_NODES=(afnode1 afnode2)
CL2_ADDRS=(10.250.0.11 10.250.0.12)

# Namespace names carry a tag derived from DIR, so that two clusters (two build
# trees) never share a name and `stop` finds what `start` made without state.
cl2_names() { # DIR
  local tag
  tag=af$(printf '%s' "$1" | cksum | cut -c1-7)
  CL2_NS_BR=${tag}br
  CL2_NS_NODE=("${tag}n1" "${tag}n2")
}

cl2() { nsenter --net="/run/netns/$CL2_NS_BR" "$@"; }

cl2_link_bytes() { # NODE -> rx+tx bytes of the node's link, counted on the bridge side
  ip -n "$CL2_NS_BR" -s link show "veth$1" | awk '/RX:/ { getline; n += $1 } /TX:/ { getline; n += $1 } END { print n + 0 }'
}

cl2_wait_job() { # JOBID SECONDS
  local state=
  for _ in $(seq "$2"); do
    state=$(cl2 scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
    case $state in
      COMPLETED) return 0 ;;
      FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|PREEMPTED|BOOT_FAIL|DEADLINE)
        echo "job $1 ended $state"; return 1 ;;
    esac
    sleep 1
  done
  echo "job $1 still ${state:-unknown} after $2 s"; return 1
}

cl2_in_ns() { # NETNS HOSTNAME NODEDIR CMD... : a daemon in its own UTS and mount namespace
  local ns=$1 host=$2 nodedir=$3; shift 3
  # Called with &: exec, so that the background job is the daemon itself (its PID
  # is $!) and no copy of the caller's shell keeps the caller's stdout open.
  # unshare --mount makes the copied mounts private, so these binds stay in here.
  exec nsenter --net="/run/netns/$ns" unshare --uts --mount sh -c '
    set -e
    hostname "$1"
    mount --bind "$2/hosts" /etc/hosts
    mount --bind "$3/run" "$2/run"
    # Open MPI names its shared-memory files after host and job id, which another
    # test cluster (same node names, same job ids) would share: a private /dev/shm.
    mount -t tmpfs -o mode=1777 cl2shm /dev/shm
    case $2/ in /tmp/*) ;; *) mount --bind "$3/tmp" /tmp ;; esac  # else DIR would vanish
    shift 3
    exec "$@"' cl2 "$host" "$CL2_DIR" "$nodedir" "$@"
}

cluster2_start() { # DIR
  local dir i ns
  dir=$(mkdir -p "$1" && cd "$1" && pwd)
  cluster2_stop "$dir" 2>/dev/null
  cl2_names "$dir"
  CL2_DIR=$dir
  export SLURM_CONF=$dir/slurm.conf CL2_DIR CL2_SUBNET CL2_NS_BR
  if mountpoint -q /run/netns 2>/dev/null; then : > "$dir/.netns_was_mounted"; else rm -f "$dir/.netns_was_mounted"; fi
  mkdir -p "$dir/state" "$dir/spool" "$dir/munge" "$dir/run" "$dir/ctl/tmp" "$dir/ctl/run"; chmod 1777 "$dir/ctl/tmp"
  chmod 700 "$dir/munge"

  # The network: a bridge (with the controller's address) in its own namespace,
  # and one veth per node whose far end is the node's eth0.
  ip netns add "$CL2_NS_BR" || return 1
  ip -n "$CL2_NS_BR" link set lo up
  ip -n "$CL2_NS_BR" link add br0 type bridge
  ip -n "$CL2_NS_BR" addr add "$CL2_CTL_ADDR/24" dev br0
  ip -n "$CL2_NS_BR" link set br0 up
  {
    echo "127.0.0.1 localhost"
    echo "$CL2_CTL_ADDR afctl"
  } > "$dir/hosts"
  for i in 0 1; do
    ns=${CL2_NS_NODE[$i]}
    ip netns add "$ns" || return 1
    ip -n "$CL2_NS_BR" link add "veth$((i + 1))" type veth peer name eth0 netns "$ns" || return 1
    ip -n "$CL2_NS_BR" link set "veth$((i + 1))" master br0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "${CL2_ADDRS[$i]}/24" dev eth0
    ip -n "$ns" link set eth0 up
    mkdir -p "$dir/${CL2_NODES[$i]}/tmp" "$dir/${CL2_NODES[$i]}/run"
    chmod 1777 "$dir/${CL2_NODES[$i]}/tmp"
    echo "${CL2_ADDRS[$i]} ${CL2_NODES[$i]}" >> "$dir/hosts"
  done

  # Short delays so that tests do not wait: cred_expire is also how long a
  # requeued job stays ineligible (BeginTime = requeue + cred_expire + 1, 120 s by
  # default); sched_interval and bf_interval bound how late the scheduler notices.
  cat > "$SLURM_CONF" <<CONF
ClusterName=af2nodes
SlurmctldHost=afctl($CL2_CTL_ADDR)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
JobRequeue=1
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
TmpFS=$dir/run
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd-%n.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=30
NodeName=${CL2_NODES[0]} NodeAddr=${CL2_ADDRS[0]} CPUs=4 RealMemory=4000 State=UNKNOWN
NodeName=${CL2_NODES[1]} NodeAddr=${CL2_ADDRS[1]} CPUs=4 RealMemory=4000 State=UNKNOWN
PartitionName=test Nodes=${CL2_NODES[0]},${CL2_NODES[1]} Default=YES MaxTime=INFINITE State=UP
CONF
  # $dir/run is each node's own folder (bound in cl2_in_ns), so the PMIx client
  # folders of the two nodes never meet.
  echo "PMIxCliTmpDirBase=$dir/run/pmix" > "$dir/mpi.conf"

  munged --force --socket="$dir/munge/munge.socket" --pid-file="$dir/munged.pid" \
    --log-file="$dir/munged.log" --seed-file="$dir/munge/seed" || return 1
  cl2_in_ns "$CL2_NS_BR" afctl "$dir/ctl" slurmctld -D -i -f "$SLURM_CONF" > "$dir/slurmctld.out" 2>&1 &
  echo $! > "$dir/slurmctld.pid.outer"
  for i in 0 1; do
    mkdir -p "$dir/${CL2_NODES[$i]}/run/pmix"
    cl2_in_ns "${CL2_NS_NODE[$i]}" "${CL2_NODES[$i]}" "$dir/${CL2_NODES[$i]}" \
      slurmd -D -f "$SLURM_CONF" -N "${CL2_NODES[$i]}" > "$dir/slurmd-${CL2_NODES[$i]}.out" 2>&1 &
    echo $! > "$dir/slurmd-${CL2_NODES[$i]}.pid.outer"
  done
  for _ in $(seq 90); do
    if [ "$(cl2 sinfo -h -N -o %T 2>/dev/null | grep -cE '^(idle|mixed|allocated)')" = 2 ]; then return 0; fi
    sleep 1
  done
  echo "cluster2.sh: the two nodes did not become idle; logs in $dir" >&2
  cl2 sinfo -N >&2
  tail -n 20 "$dir"/slurmctld.log "$dir"/slurmd-*.log "$dir"/*.out >&2
  return 1
}

cluster2_stop() { # DIR
  local dir ns p pids
  dir=$(cd "$1" 2>/dev/null && pwd) || return 0
  cl2_names "$dir"
  if [ -e "/run/netns/$CL2_NS_BR" ] && [ -f "$dir/slurm.conf" ]; then
    SLURM_CONF=$dir/slurm.conf timeout 10 nsenter --net="/run/netns/$CL2_NS_BR" scancel --user=root 2>/dev/null || true
  fi
  # Every process inside these namespaces was started here: the daemons, their
  # slurmstepd and the job's ranks. TERM first, then KILL what is left.
  for sig in TERM KILL; do
    pids=
    for ns in "$CL2_NS_BR" "${CL2_NS_NODE[@]}"; do
      [ -e "/run/netns/$ns" ] && pids="$pids $(ip netns pids "$ns" 2>/dev/null)"
    done
    for p in $pids; do kill -s "$sig" "$p" 2>/dev/null || true; done
    [ -n "${pids// /}" ] && [ "$sig" = TERM ] && sleep 2
  done
  [ -f "$dir/munged.pid" ] && kill "$(cat "$dir/munged.pid")" 2>/dev/null
  rm -f "$dir/munged.pid"
  for ns in "${CL2_NS_NODE[@]}" "$CL2_NS_BR"; do
    [ -e "/run/netns/$ns" ] && ip netns del "$ns"
  done
  # `ip netns add` bind-mounts /run/netns onto itself the first time; undo that
  # only if it was not there before and no other namespace uses it.
  if [ ! -e "$dir/.netns_was_mounted" ] && [ -d /run/netns ] && [ -z "$(ls -A /run/netns)" ] \
    && mountpoint -q /run/netns; then
    umount /run/netns 2>/dev/null || true
  fi
  return 0
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -u
  case ${1:-} in
    start) cluster2_start "$2" >&2 || exit 1
           echo "export SLURM_CONF=$SLURM_CONF CL2_NS_BR=$CL2_NS_BR CL2_SUBNET=$CL2_SUBNET"
           echo "# run clients as: nsenter --net=/run/netns/$CL2_NS_BR sbatch ..." ;;
    stop) cluster2_stop "$2" ;;
    *) echo "usage: cluster2.sh start|stop DIR" >&2; exit 2 ;;
  esac
fi
