#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the launcher's end-to-end test (issue 12).
#
#   scripts/slurm-local.sh install          apt-get install slurm-wlm and munge when missing (needs root)
#   scripts/slurm-local.sh start STATE_DIR  write STATE_DIR/slurm.conf for this host, start munged, slurmctld,
#                                           slurmd; wait until the node is idle; print SLURM_CONF=<path>
#   scripts/slurm-local.sh stop STATE_DIR   cancel its jobs, then stop the daemons this script started (pid files)
#
# Exit status 0 on success; otherwise non-zero with one line on stderr saying why (the test then skips with it).
# The cluster: one node named after `hostname`, CPUs and memory as `slurmd -C` reports them, one partition
# "debug", no accounting, no cgroups (proctrack/linuxproc), munge authentication, daemons running as root.
set -euo pipefail

die() { echo "slurm-local: $*" >&2; exit 1; }

install() {
    command -v sbatch >/dev/null && command -v munged >/dev/null && return 0
    [ "$(id -u)" = 0 ] || die "slurm-wlm/munge missing and not root: cannot apt-get install them"
    command -v apt-get >/dev/null || die "slurm-wlm/munge missing and no apt-get on this machine"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null || die "apt-get install failed"
}

start() {
    local state=${1:?state dir}
    for tool in sbatch squeue slurmctld slurmd munged; do
        command -v "$tool" >/dev/null || die "$tool not found (run: $0 install)"
    done
    [ "$(id -u)" = 0 ] || die "the single-node cluster runs its daemons as root; not root"
    mkdir -p "$state"/{ctld,spool,log,munge}
    state=$(cd "$state" && pwd)
    local host cpus mem
    host=$(hostname -s)
    cpus=$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -1)
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1)
    [ -n "$cpus" ] && [ -n "$mem" ] || die "slurmd -C did not report CPUs and RealMemory"
    cat >"$state/slurm.conf" <<EOF
ClusterName=cxrgen-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$state/munge/munge.socket.2
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=3600
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    [ -r /etc/munge/munge.key ] || die "no /etc/munge/munge.key (install munge, or run: mungekey)"
    munged --socket="$state/munge/munge.socket.2" --pid-file="$state/munge/munged.pid" \
        --log-file="$state/log/munged.log" --seed-file="$state/munge/munged.seed" --force \
        || die "munged did not start (see $state/log/munged.log)"
    export SLURM_CONF=$state/slurm.conf
    slurmctld -f "$SLURM_CONF" || die "slurmctld did not start (see $state/log/slurmctld.log)"
    slurmd -f "$SLURM_CONF" || die "slurmd did not start (see $state/log/slurmd.log)"
    for _ in $(seq 60); do
        if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
            echo "SLURM_CONF=$SLURM_CONF"
            return 0
        fi
        sleep 1
    done
    die "the node did not become idle in 60 s: $(sinfo -h -o '%T %E' 2>&1 | head -1)"
}

stop() {
    local state=${1:?state dir}
    # Jobs still queued or running are cancelled first: once the daemons are gone their job steps (slurmstepd,
    # srun) would be left behind, orphaned, for ever.
    if [ -s "$state/slurmctld.pid" ] && [ -f "$state/slurm.conf" ]; then
        SLURM_CONF="$state/slurm.conf" scancel --user="$(id -un)" 2>/dev/null || true
        for _ in $(seq 1 30); do
            [ -z "$(SLURM_CONF="$state/slurm.conf" squeue -h 2>/dev/null)" ] && break
            sleep 1
        done
    fi
    for pidfile in "$state/slurmd.pid" "$state/slurmctld.pid" "$state/munge/munged.pid"; do
        if [ -s "$pidfile" ]; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
        fi
    done
}

case "${1:-}" in
    install) install ;;
    start) start "${2:-}" ;;
    stop) stop "${2:-}" ;;
    *) die "usage: $0 install | start STATE_DIR | stop STATE_DIR" ;;
esac
