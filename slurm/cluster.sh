#!/usr/bin/env bash
# A single-node Slurm cluster on one Debian machine, for CI and for trying ila-fast's launcher.
#
#   slurm/cluster.sh start    install (apt, root) if needed, start munged, MariaDB, slurmdbd,
#                             slurmctld, slurmd; wait until the node is idle. Idempotent.
#   slurm/cluster.sh stop     stop only the daemons this script started (its pid files). Idempotent.
#   slurm/cluster.sh status   what runs, and whether the node answers.
#
# Everything it writes lives under $ILA_FAST_SLURM_STATE (default /var/tmp/ila-fast-slurm), plus
# /etc/slurm/slurm.conf and slurmdbd.conf, which it writes only when they are absent or its own
# (first line "# written by ila-fast slurm/cluster.sh"). A Slurm that is already running and not
# started here is used as it is and never stopped.
#
# Settings that make requeue tests take seconds (see docs/scaling.md and environment.md):
# AuthInfo=cred_expire=10 (a requeued job may start again after 10 s, not 121 s),
# batch_sched_delay=0,sched_interval=5,bf_interval=5 (jobs start in < 1 s), KillWait=10,
# MinJobAge=3600 (scontrol still knows a finished job for an hour).
set -euo pipefail

STATE=${ILA_FAST_SLURM_STATE:-/var/tmp/ila-fast-slurm}
CONF_DIR=/etc/slurm
MARK="# written by ila-fast slurm/cluster.sh"
DB_PORT=${ILA_FAST_SLURM_DB_PORT:-33061}
# More CPUs than the machine has (config_overrides), so that several small test jobs can run side
# by side on a 2-core CI machine; they only share the cores.
CPUS=${ILA_FAST_SLURM_CPUS:-$(( $(nproc) > 8 ? $(nproc) : 8 ))}
PACKAGES="slurm-wlm slurmctld slurmd slurm-client munge slurmdbd mariadb-server"
HOST=$(hostname -s)
CLUSTER=ilafast

log() { echo "cluster.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds
wait_for() {
    local limit=$1 what=$2; shift 2
    local deadline=$(( SECONDS + limit ))
    until "$@" >/dev/null 2>&1; do
        (( SECONDS < deadline )) || die "$what did not come up within ${limit}s (logs: $STATE/log/)"
        sleep 0.2
    done
}

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null \
        && command -v munged >/dev/null && return
    [[ $(id -u) == 0 ]] || die "Slurm is not installed; as root run: apt-get install -y $PACKAGES"
    command -v apt-get >/dev/null || die "Slurm is not installed and this is not a Debian machine (no apt-get)"
    log "installing $PACKAGES"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $PACKAGES >/dev/null
}

write_conf() {  # write_conf PATH MODE: stdin -> PATH unless a foreign file is there
    local path=$1 mode=$2
    if [[ -f $path ]] && [[ $(head -n1 "$path") != "$MARK" ]]; then
        die "$path exists and was not written by this script; move it away or use that Slurm as it is"
    fi
    { echo "$MARK"; cat; } > "$path.tmp"
    chmod "$mode" "$path.tmp"
    mv "$path.tmp" "$path"
}

write_configs() {
    local mem
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    mem=$(( mem * 9 / 10 ))
    mkdir -p "$CONF_DIR"
    write_conf "$CONF_DIR/slurm.conf" 0644 <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
SchedulerParameters=batch_sched_delay=0,sched_interval=5,bf_interval=5
KillWait=10
MinJobAge=3600
InactiveLimit=0
Waittime=0
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
NodeName=$HOST CPUs=$CPUS RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    write_conf "$CONF_DIR/slurmdbd.conf" 0600 <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
}

started() { echo "$1" >> "$STATE/run/started"; }   # names of the daemons this script started

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi  # a munged already answers
    [[ -f /etc/munge/munge.key ]] || mungekey -c -f
    mkdir -p /run/munge && chown munge:munge /run/munge && chmod 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    cp /run/munge/munged.pid "$STATE/run/munged.pid"
    started munged
    wait_for 10 munged sh -c 'munge -n | unmunge'
}

start_mariadb() {
    local datadir=$STATE/mysql sock=$STATE/run/mysqld.sock
    if alive "$STATE/run/mariadbd.pid"; then return; fi
    if [[ ! -d $datadir/mysql ]]; then
        mkdir -p "$datadir" && chown mysql:mysql "$datadir"
        mariadb-install-db --user=mysql --datadir="$datadir" --auth-root-authentication-method=socket \
            > "$STATE/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed: $STATE/log/mariadb-install.log"
    fi
    chown mysql:mysql "$STATE/run"
    mariadbd --user=mysql --datadir="$datadir" --socket="$sock" --bind-address=127.0.0.1 --port="$DB_PORT" \
        --pid-file="$STATE/run/mariadbd.pid" --skip-log-bin > "$STATE/log/mariadb.log" 2>&1 &
    started mariadbd
    wait_for 30 MariaDB mariadb --socket="$sock" -e 'select 1'
    mariadb --socket="$sock" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

start() {
    install_packages
    # (pgrep only looks; sinfo would spend ~10 s retrying when no controller runs)
    if [[ ! -s $STATE/run/started ]] && pgrep -x slurmctld >/dev/null && sinfo -h >/dev/null 2>&1; then
        log "a Slurm cluster not started by this script already answers; using it as it is"
        return
    fi
    local t0=$SECONDS
    mkdir -p "$STATE"/{run,log,spool/ctld,spool/d}
    write_configs
    start_munge
    start_mariadb
    if ! alive "$STATE/run/slurmdbd.pid"; then
        slurmdbd && started slurmdbd
        wait_for 30 slurmdbd sacctmgr -n list cluster
    fi
    sacctmgr -n list cluster format=cluster | grep -qw "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
    if ! alive "$STATE/run/slurmctld.pid"; then
        slurmctld && started slurmctld
    fi
    if ! alive "$STATE/run/slurmd.pid"; then
        slurmd && started slurmd
    fi
    wait_for 60 "node $HOST (idle)" sh -c "sinfo -h -n $HOST -o %T | grep -qx idle"
    log "cluster up in $(( SECONDS - t0 ))s: node $HOST idle, $CPUS CPUs (state in $STATE)"
}

stop_group() {  # stop_group NAME...: TERM those we started together, wait up to 30 s, then KILL
    local name pids=()
    for name in "$@"; do
        grep -qx "$name" "$STATE/run/started" && [[ -f $STATE/run/$name.pid ]] || continue
        pids+=("$(cat "$STATE/run/$name.pid")")
        kill -TERM "${pids[-1]}" 2>/dev/null || true
        rm -f "$STATE/run/$name.pid"
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then log "pid $pid ignored TERM; killing"; kill -KILL "$pid"; fi
    done
}

stop() {
    [[ -s $STATE/run/started ]] || { log "nothing started by this script is running"; return; }
    local t0=$SECONDS
    if grep -qx slurmctld "$STATE/run/started"; then
        squeue -h -o %i 2>/dev/null | xargs -r scancel --quiet 2>/dev/null || true  # our cluster: its jobs
    fi
    # reverse start order, each tier at once; only what we started
    stop_group slurmd slurmctld
    stop_group slurmdbd
    stop_group mariadbd munged
    rm -f "$STATE/run/started"
    log "cluster stopped in $(( SECONDS - t0 ))s"
}

status() {
    for name in munged mariadbd slurmdbd slurmctld slurmd; do
        if alive "$STATE/run/$name.pid"; then echo "$name: running (pid $(cat "$STATE/run/$name.pid"))"
        else echo "$name: not running (from this script)"; fi
    done
    sinfo -h -o '%N %T %c' 2>/dev/null || echo "sinfo: no answer"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
