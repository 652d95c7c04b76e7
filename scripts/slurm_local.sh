#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for trying and testing the `slurm` launcher preset.
#
#   scripts/slurm_local.sh start     # start munged, slurmctld and slurmd (nothing if already up)
#   eval "$(scripts/slurm_local.sh env)"   # point sbatch/squeue/scontrol at it (SLURM_CONF)
#   scripts/slurm_local.sh status    # sinfo of the partition
#   scripts/slurm_local.sh stop      # stop what `start` started (nothing if already down)
#
# Needs root and Debian's slurm-wlm and munge (apt-get install -y slurm-wlm munge). Everything it
# writes (slurm.conf, state, spool, logs, pid files) is under $TORCH_CLIP_SLURM_DIR
# (default /tmp/torch-clip-slurm); /etc/slurm is left alone. One CPU partition, `debug`.
# Accounting is off (accounting_storage/none; finished jobs go to jobcomp.log there), so
# `sacct` fails and submitit warns that it bypasses sacct: see docs/suite/clusters.md.
set -euo pipefail

DIR=${TORCH_CLIP_SLURM_DIR:-/tmp/torch-clip-slurm}
# defer,sched_interval=2: a job starts a second or two after sbatch returns, not at once, so
# submitit has made the job array's log folders by then (else slurmd cannot open the log and
# the task dies with signal 53, which submitit, without sacct, never learns)
# cred_expire=10: a requeued job may start again after 10 s (Slurm's default wait is 120 s)
# declared resources: at least the preset's 8 CPUs and 32 GB per job, two jobs at a time; the
# node oversubscribes the real machine on purpose (SlurmdParameters=config_overrides)
CPUS=${TORCH_CLIP_SLURM_CPUS:-16}
MEM_MB=${TORCH_CLIP_SLURM_MEM_MB:-65536}
NODE=$(hostname -s)
CONF=$DIR/slurm.conf

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

write_conf() {
    mkdir -p "$DIR"/{state,spool,log}
    cat >"$CONF" <<CONF
ClusterName=torchclip
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=defer,sched_interval=2
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
KillWait=30
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.log
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
}

start_munge() {
    if [[ -S /run/munge/munge.socket.2 ]] && munge -n </dev/null >/dev/null 2>&1; then
        return  # a munged is already serving (ours or the system's)
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    [[ -f /etc/munge/munge.key ]] || { /usr/sbin/mungekey --create && chown munge:munge /etc/munge/munge.key; }
    runuser -u munge -- /usr/sbin/munged 9>&-
    pgrep -u munge -n munged >"$DIR/munged.pid"
}

wait_idle() {
    for _ in $(seq 60); do
        if sinfo -h -o %t -p debug 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; then return 0; fi
        sleep 1
    done
    echo "slurm_local: the node did not come up; see $DIR/log/" >&2
    return 1
}

start() {
    [[ $(id -u) == 0 ]] || { echo "slurm_local: start needs root" >&2; exit 1; }
    command -v slurmctld >/dev/null || { echo "slurm_local: install slurm-wlm and munge first" >&2; exit 1; }
    export SLURM_CONF=$CONF
    if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid"; then
        wait_idle && return 0
    fi
    write_conf
    start_munge
    alive "$DIR/slurmctld.pid" || slurmctld -f "$CONF" 9>&-  # the daemons must not hold the lock
    alive "$DIR/slurmd.pid" || slurmd -f "$CONF" 9>&-
    wait_idle
    scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
}

stop() {
    for name in slurmd slurmctld munged; do
        local pid_file=$DIR/$name.pid
        if alive "$pid_file"; then
            kill "$(cat "$pid_file")"
            for _ in $(seq 30); do alive "$pid_file" || break; sleep 0.5; done
        fi
        rm -f "$pid_file"
    done
}

locked() {  # one start or stop at a time (test workers may start the cluster side by side)
    mkdir -p "$DIR"
    exec 9>"$DIR/.lock"
    flock 9
    "$@"
}

case ${1:-} in
start) locked start ;;
stop) locked stop ;;
status) SLURM_CONF=$CONF sinfo -p debug ;;
env) echo "export SLURM_CONF=$CONF" ;;
*) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
