#!/usr/bin/env bash
# Starts (or stops) a single-node Slurm cluster on this machine for the tests:
# munged, slurmctld and slurmd from Debian's slurm-wlm and munge, with every file
# under DIR and SLURM_CONF pointing at DIR/slurm.conf.
#   cluster.sh start DIR     prints `export SLURM_CONF=...` for the caller to eval
#   cluster.sh stop DIR
# AF_SLURM_PORT (default 16817) and the port after it are slurmctld's and
# slurmd's, so that two test clusters on one machine do not meet.
set -euo pipefail
cmd=$1; dir=$(mkdir -p "$2" && cd "$2" && pwd)
conf=$dir/slurm.conf
ctl_port=${AF_SLURM_PORT:-16817}

stop() {
  for p in slurmd slurmctld; do
    [ -f "$dir/$p.pid" ] && kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
  done
  sleep 1
  pkill -f "slurmd -f $conf" 2>/dev/null || true
  pkill -f "slurmctld -f $conf" 2>/dev/null || true
  [ -f "$dir/munged.pid" ] && kill "$(cat "$dir/munged.pid")" 2>/dev/null || true
  return 0
}

if [ "$cmd" = stop ]; then stop; exit 0; fi

stop
host=$(hostname)
mkdir -p "$dir/state" "$dir/spool" "$dir/munge" "$dir/tmp"
chmod 700 "$dir/munge"
cat > "$conf" <<CONF
ClusterName=arcfacetest
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ctl_port
SlurmdPort=$((ctl_port + 1))
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
JobRequeue=1
SchedulerType=sched/backfill
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
# PMIx's per-step folders go under TmpFS; a cluster of its own keeps them from
# meeting another test cluster's (same job ids) or a leftover in /tmp.
TmpFS=$dir/tmp
# Job ids of its own too: under srun, Open MPI names its shared-memory segments
# (/dev/shm/vader_segment.*) after the Slurm job and step, so job 1 of another
# cluster, or one left over by a killed run, would meet this cluster's job 1.
FirstJobId=$(( ($$ % 40000) * 100 + 1000 ))
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=30
NodeName=$host CPUs=8 RealMemory=4000 State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
# munged: its own socket and pid file, the machine's key.
munged --force --socket="$dir/munge/munge.socket" --pid-file="$dir/munged.pid" \
  --log-file="$dir/munged.log" --seed-file="$dir/munge/seed" 2>/dev/null || munged --force
# Point Slurm at that munge socket.
# cred_expire is also how long a requeued job stays ineligible (120 s by default);
# sched_interval bounds how late the scheduler then starts it.
echo "AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10" >> "$conf"
echo "SchedulerParameters=sched_interval=2,bf_interval=1" >> "$conf"
slurmctld -f "$conf" -i
slurmd -f "$conf"
export SLURM_CONF=$conf
for _ in $(seq 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "export SLURM_CONF=$conf"
    exit 0
  fi
  sleep 1
done
echo "cluster.sh: the node did not become idle; logs in $dir" >&2
sinfo >&2 || true
tail -20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
exit 1
