#!/usr/bin/env bash
# A Slurm cluster on one Debian machine, for CI and for trying ila-fast's launcher: one node, or
# N real nodes, each in a network namespace of its own.
#
#   slurm/cluster.sh start [--nodes N]   install (apt, root) if needed, start munged, MariaDB, slurmdbd,
#                             slurmctld and one slurmd per node; wait until every node is idle. Idempotent.
#   slurm/cluster.sh stop     stop only what this script started (daemons by their pid files; with
#                             --nodes >= 2 also every process left in its namespaces, the namespaces
#                             and their links). Idempotent.
#   slurm/cluster.sh status   what runs, and whether the nodes answer.
#   slurm/cluster.sh netns-check        can this kernel / user make the namespaces? (exit 0, or 3 and why)
#   slurm/cluster.sh kill-node NAME     kill every process of node NAME (its slurmd, job steps, tasks):
#                                       the node "dies" as a machine would; Slurm is not told
#   slurm/cluster.sh restore-node NAME  start NAME's slurmd again and return the node to service
#   slurm/cluster.sh exec NAME CMD...   run CMD on node NAME (its namespaces: network, hostname, /etc)
#
# --nodes 1 (the default) is the single node of before: the daemons run in this machine's own
# namespaces, the node is named after `hostname -s`. --nodes N >= 2 builds, inside namespaces this
# script creates and deletes:
#   ilafast-ctl  network namespace of the controller: bridge br0 (SUBNET.1), slurmctld, slurmdbd,
#                MariaDB; hostname ilafast-ctl (a UTS namespace per daemon)
#   ilafast1..N  one network namespace per node: eth0 (SUBNET.(10+i)), the other end of its veth
#                pair on the controller's bridge; its own hostname; its own slurmd (-N ilafastI)
# IPv6 is off in them and they have no default route: traffic stays on these links and loopback.
# Each node declares 2 GPUs (gres with stand-in device files) so that `--gpus-per-node` requests
# schedule as on a GPU cluster; the tasks find no CUDA device here and train with gloo.
# /etc/netns/<namespace>/{hosts,slurm} (bind-mounted over /etc/hosts and /etc/slurm by
# `ip netns exec`) give every node and the controller the same name -> address table and a
# slurm.conf with NodeAddr per node. munged runs in this machine's namespace: its socket is a
# file, shared by all. Slurm's commands typed here (sinfo, sbatch, sacct) reach the controller
# through slurm/netns_gateway.py, which listens on 127.0.0.1:6817 and :6819 here and connects
# inside ilafast-ctl; no address is added to this machine's own namespace. Interactive srun / salloc
# from here cannot work (nodes cannot call back into this namespace): use sbatch, or
# `slurm/cluster.sh exec ilafast1 srun ...`.
#
# Everything it writes lives under $ILA_FAST_SLURM_STATE (default /var/tmp/ila-fast-slurm), plus
# /etc/slurm/slurm.conf and slurmdbd.conf, which it writes only when they are absent or its own
# (first line "# written by ila-fast slurm/cluster.sh"), and /etc/netns/ilafast-*. A Slurm that is
# already running and not started here is used as it is and never stopped.
#
# Settings that make requeue tests take seconds (see docs/scaling.md and environment.md):
# AuthInfo=cred_expire=10 (a requeued job may start again after 10 s, not 121 s),
# batch_sched_delay=0,sched_interval=5,bf_interval=5 (jobs start in < 1 s), KillWait=10,
# MinJobAge=3600 (scontrol still knows a finished job for an hour).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${ILA_FAST_SLURM_STATE:-/var/tmp/ila-fast-slurm}
CONF_DIR=/etc/slurm
MARK="# written by ila-fast slurm/cluster.sh"
DB_PORT=${ILA_FAST_SLURM_DB_PORT:-33061}
# More CPUs than the machine has (config_overrides), so that several small test jobs can run side
# by side on a 2-core CI machine; they only share the cores.
CPUS=${ILA_FAST_SLURM_CPUS:-$(( $(nproc) > 8 ? $(nproc) : 8 ))}
PACKAGES="slurm-wlm slurmctld slurmd slurm-client munge slurmdbd mariadb-server iproute2"
CLUSTER=ilafast
# multi-node: addresses exist only inside the namespaces below (a /24 of private space)
SUBNET=${ILA_FAST_SLURM_SUBNET:-10.213.77}
CTL=ilafast-ctl                 # the controller's namespace and hostname
NODE_PREFIX=ilafast             # nodes ilafast1..N (namespace = hostname = Slurm NodeName)
MAX_NODES=32
GPUS=2                          # declared per node (multi-node), see slurm_conf

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
        && command -v munged >/dev/null && command -v ip >/dev/null && return
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

node_names() { local i; for (( i = 1; i <= NODES; i++ )); do echo "$NODE_PREFIX$i"; done; }
node_addr() { echo "$SUBNET.$(( 10 + ${1#"$NODE_PREFIX"} ))"; }

# slurm_conf CTLD_ADDR DBD_HOST: slurm.conf for NODES nodes, on stdin of write_conf
slurm_conf() {
    local ctld_addr=$1 dbd_host=$2 mem name host nodes
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    mem=$(( mem * 9 / 10 ))
    if (( NODES == 1 )); then
        host=$(hostname -s)
        echo "SlurmctldHost=$host"
    else
        echo "SlurmctldHost=$CTL($ctld_addr)"
    fi
    cat <<CONF
ClusterName=$CLUSTER
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
SlurmdPidFile=$STATE/run/slurmd.%n.pid
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d.%n
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.%n.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$dbd_host
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
CONF
    if (( NODES == 1 )); then
        echo "NodeName=$host CPUs=$CPUS RealMemory=$mem State=UNKNOWN"
        nodes=$host
    else
        # 2 GPUs per node, declared only (gres.conf: stand-in device files): --gpus-per-node requests
        # schedule as on a GPU cluster; the tasks find no CUDA device here and train with gloo
        echo "GresTypes=gpu"
        for name in $(node_names); do
            echo "NodeName=$name NodeAddr=$(node_addr "$name") NodeHostname=$name CPUs=$CPUS RealMemory=$mem" \
                 "Gres=gpu:$GPUS State=UNKNOWN"
        done
        nodes="$NODE_PREFIX[1-$NODES]"
    fi
    echo "PartitionName=debug Nodes=$nodes Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO"
}

slurmdbd_conf() {
    cat <<CONF
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
CONF
}

write_configs() {
    mkdir -p "$CONF_DIR"
    # this machine's namespace: the controller through the gateway on loopback
    slurm_conf 127.0.0.1 localhost | write_conf "$CONF_DIR/slurm.conf" 0644
    slurmdbd_conf | write_conf "$CONF_DIR/slurmdbd.conf" 0600
    (( NODES == 1 )) && return
    # inside the namespaces: the controller on the bridge; the same files for every namespace.
    # Slurm counts a GPU per device file: copies of /dev/null stand in (nothing opens them)
    local ns i
    mkdir -p "$STATE/dev"
    for (( i = 0; i < GPUS; i++ )); do [[ -e $STATE/dev/gpu$i ]] || mknod "$STATE/dev/gpu$i" c 1 3; done
    for ns in "$CTL" $(node_names); do
        mkdir -p "/etc/netns/$ns/slurm"
        slurm_conf "$SUBNET.1" "$CTL" | write_conf "/etc/netns/$ns/slurm/slurm.conf" 0644
        slurmdbd_conf | write_conf "/etc/netns/$ns/slurm/slurmdbd.conf" 0600
        echo "Name=gpu File=$STATE/dev/gpu[0-$(( GPUS - 1 ))]" | write_conf "/etc/netns/$ns/slurm/gres.conf" 0644
        hosts_table > "/etc/netns/$ns/hosts"
    done
}

hosts_table() {  # the one name -> address table every namespace reads as /etc/hosts
    local name
    echo "$MARK"
    echo "127.0.0.1 localhost"
    echo "$SUBNET.1 $CTL"
    for name in $(node_names); do echo "$(node_addr "$name") $name"; done
}

started() { echo "$1" >> "$STATE/run/started"; }   # what this script started, one per line

# ---------------------------------------------------------------- namespaces (--nodes >= 2)

# in_ns NAMESPACE HOSTNAME COMMAND...: run COMMAND in that network namespace, a UTS namespace of its
# own named HOSTNAME, and a private mount namespace where /etc/netns/NAMESPACE/* cover /etc/* (what
# `ip netns exec` does, without its fresh /sys, which lacks the cgroup hierarchy slurmd opens)
in_ns() {
    local ns=$1 host=$2; shift 2
    nsenter --net="/run/netns/$ns" unshare --mount --uts sh -c \
        'for f in /etc/netns/"$0"/*; do mount --bind "$f" "/etc/${f##*/}" || exit 1; done
         hostname "$1" && shift && exec "$@"' "$ns" "$host" "$@"
}

netns_check() {  # can we make the namespaces? prints why not and returns 3
    local probe=ilafast-probe-$$ why=""
    if [[ $(id -u) != 0 ]]; then why="not root (network namespaces, veth links and slurmd need root)"
    elif ! command -v ip >/dev/null || ! command -v unshare >/dev/null || ! command -v nsenter >/dev/null; then
        why="no ip (iproute2), or no unshare / nsenter (util-linux)"
    elif ! why=$(ip netns add "$probe" 2>&1); then why="the kernel refused a network namespace: $why"
    elif ! why=$(ip -n "$probe" link add ilafp0 type veth peer name ilafp1 2>&1); then
        why="the kernel refused a veth pair inside a namespace: $why"
    elif ! why=$(nsenter --net="/run/netns/$probe" unshare --mount --uts sh -c \
            'hostname ilafast-probe' 2>&1); then
        why="the kernel refused a UTS (hostname) or mount namespace: $why"
    else why=""
    fi
    ip netns del "$probe" 2>/dev/null || true
    if [[ -n $why ]]; then echo "multi-node cluster impossible here: $why"; return 3; fi
    echo "network, veth and UTS namespaces work here"
}

make_namespaces() {
    local ns name i=0
    for ns in "$CTL" $(node_names); do
        if ip netns list | grep -qw "^$ns"; then
            die "network namespace $ns exists but was not made by this script (or a stop was cut short): " \
                "check \`ip netns pids $ns\`, then \`ip netns del $ns\`"
        fi
    done
    for ns in "$CTL" $(node_names); do
        ip netns add "$ns" && echo "netns $ns" >> "$STATE/run/started"
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
        ip -n "$ns" link set lo up
    done
    ip -n "$CTL" link add br0 type bridge
    ip -n "$CTL" addr add "$SUBNET.1/24" dev br0
    ip -n "$CTL" link set br0 up
    for name in $(node_names); do
        i=${name#"$NODE_PREFIX"}
        # created inside the controller's namespace, the peer moved straight into the node's: the pair
        # never exists in this machine's own namespace
        ip -n "$CTL" link add "veth$i" type veth peer name eth0 netns "$name"
        ip -n "$CTL" link set "veth$i" master br0 up
        ip -n "$name" addr add "$(node_addr "$name")/24" dev eth0
        ip -n "$name" link set eth0 up
    done
}

start_gateway() {
    alive "$STATE/run/gateway.pid" && return
    setsid python3 "$HERE/netns_gateway.py" "/run/netns/$CTL" "$STATE/run/gateway.pid" \
        "6817:$SUBNET.1:6817" "6819:127.0.0.1:6819" > "$STATE/log/gateway.log" 2>&1 < /dev/null &
    started gateway
    wait_for 10 "the loopback gateway to $CTL" test -s "$STATE/run/gateway.pid"
}

start_slurmd() {  # start_slurmd NODE
    local name=$1
    alive "$STATE/run/slurmd.$name.pid" && return
    mkdir -p "$STATE/spool/d.$name"
    in_ns "$name" "$name" slurmd -N "$name"
    grep -qx "slurmd.$name" "$STATE/run/started" 2>/dev/null || started "slurmd.$name"
}

# ---------------------------------------------------------------- daemons

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi  # a munged already answers
    [[ -f /etc/munge/munge.key ]] || mungekey -c -f
    mkdir -p /run/munge && chown munge:munge /run/munge && chmod 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    cp /run/munge/munged.pid "$STATE/run/munged.pid"
    started munged
    wait_for 10 munged sh -c 'munge -n | unmunge'
}

start_mariadb() {  # in the controller's namespace when there is one (CTL_RUN)
    local datadir=$STATE/mysql sock=$STATE/run/mysqld.sock
    if alive "$STATE/run/mariadbd.pid"; then return; fi
    if [[ ! -d $datadir/mysql ]]; then
        mkdir -p "$datadir" && chown mysql:mysql "$datadir"
        mariadb-install-db --user=mysql --datadir="$datadir" --auth-root-authentication-method=socket \
            > "$STATE/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed: $STATE/log/mariadb-install.log"
    fi
    chown mysql:mysql "$STATE/run"
    $CTL_RUN mariadbd --user=mysql --datadir="$datadir" --socket="$sock" --bind-address=127.0.0.1 --port="$DB_PORT" \
        --pid-file="$STATE/run/mariadbd.pid" --skip-log-bin > "$STATE/log/mariadb.log" 2>&1 &
    started mariadbd
    wait_for 30 MariaDB mariadb --socket="$sock" -e 'select 1'
    mariadb --socket="$sock" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

running_nodes() {  # the node count of the cluster this script runs, 0 when none
    [[ -s $STATE/run/started ]] && cat "$STATE/run/nodes" 2>/dev/null || echo 0
}

start() {
    NODES=1
    while (( $# )); do
        case $1 in
            --nodes) NODES=${2:-}; shift 2 || die "--nodes needs a number" ;;
            --nodes=*) NODES=${1#--nodes=}; shift ;;
            *) die "start: unknown option $1 (usage: $0 start [--nodes N])" ;;
        esac
    done
    [[ $NODES =~ ^[0-9]+$ ]] && (( NODES >= 1 && NODES <= MAX_NODES )) || die "--nodes $NODES: expected 1 to $MAX_NODES"
    install_packages
    local running
    running=$(running_nodes)
    if (( running && running != NODES )); then
        die "a $running-node cluster started by this script runs; \`$0 stop\` it first to start $NODES node(s)"
    fi
    # (pgrep only looks; sinfo would spend ~10 s retrying when no controller runs)
    if [[ ! -s $STATE/run/started ]] && pgrep -x slurmctld >/dev/null && sinfo -h >/dev/null 2>&1; then
        (( NODES == 1 )) || die "a Slurm cluster not started by this script runs here; it cannot become multi-node"
        log "a Slurm cluster not started by this script already answers; using it as it is"
        return
    fi
    local t0=$SECONDS
    mkdir -p "$STATE"/{run,log,spool/ctld}
    CTL_RUN=""
    if (( NODES > 1 )); then
        local why
        why=$(netns_check) || die "$why"
        CTL_RUN="in_ns $CTL $CTL"
    fi
    echo "$NODES" > "$STATE/run/nodes"
    write_configs
    if (( NODES > 1 )) && ! grep -qx "netns $CTL" "$STATE/run/started" 2>/dev/null; then
        make_namespaces
    fi
    start_munge
    (( NODES > 1 )) && start_gateway
    start_mariadb
    if ! alive "$STATE/run/slurmdbd.pid"; then
        $CTL_RUN slurmdbd && started slurmdbd
        wait_for 30 slurmdbd sacctmgr -n list cluster
    fi
    sacctmgr -n list cluster format=cluster | grep -qw "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
    if ! alive "$STATE/run/slurmctld.pid"; then
        $CTL_RUN slurmctld && started slurmctld
    fi
    local names
    if (( NODES == 1 )); then
        names=$(hostname -s)
        if ! alive "$STATE/run/slurmd.$names.pid"; then
            mkdir -p "$STATE/spool/d.$names"
            slurmd && started "slurmd.$names"
        fi
    else
        names=$(node_names | paste -sd,)
        for name in $(node_names); do start_slurmd "$name"; done
    fi
    # a node left DOWN or DRAINED by an earlier run (state is kept across restarts) is ours to resume
    wait_for 60 "nodes $names (idle)" sh -c "scontrol update nodename=$names state=resume >/dev/null 2>&1;
        [ \"\$(sinfo -h -N -n $names -o %T | grep -cx idle)\" = $NODES ]"
    log "cluster up in $(( SECONDS - t0 ))s: $NODES node(s) idle ($names), $CPUS CPUs each (state in $STATE)"
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
    local t0=$SECONDS ns pids
    if grep -qx slurmctld "$STATE/run/started"; then
        squeue -h -o %i 2>/dev/null | xargs -r scancel --quiet 2>/dev/null || true  # our cluster: its jobs
    fi
    # reverse start order, each tier at once; only what we started
    # shellcheck disable=SC2046
    stop_group $(grep -x 'slurmd\..*' "$STATE/run/started") slurmctld
    stop_group slurmdbd
    stop_group mariadbd gateway munged
    # what is left inside our namespaces (job steps of killed nodes, tasks) is ours too; then the
    # namespaces themselves, which take their veth pairs and the bridge with them
    for ns in $(sed -n 's/^netns //p' "$STATE/run/started" | tac); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [[ -n $pids ]] && { log "killing what is left in $ns: $(echo $pids)"; kill -KILL $pids 2>/dev/null || true; }
        ip netns del "$ns" 2>/dev/null || log "could not delete network namespace $ns"
        rm -rf "/etc/netns/$ns"
    done
    rmdir /etc/netns 2>/dev/null || true   # when nothing else keeps files there
    rm -f "$STATE/run/started" "$STATE/run/nodes"
    log "cluster stopped in $(( SECONDS - t0 ))s"
}

status() {
    local name
    for name in munged gateway mariadbd slurmdbd slurmctld $(sed -n 's/^\(slurmd\..*\)/\1/p' "$STATE/run/started" 2>/dev/null); do
        if alive "$STATE/run/$name.pid"; then echo "$name: running (pid $(cat "$STATE/run/$name.pid"))"
        else echo "$name: not running (from this script)"; fi
    done
    sed -n 's/^netns /network namespace: /p' "$STATE/run/started" 2>/dev/null || true
    sinfo -h -N -o '%N %T %c' 2>/dev/null || echo "sinfo: no answer"
}

is_our_node() {
    NODES=$(running_nodes)
    (( NODES > 1 )) || die "no multi-node cluster started by this script runs (start --nodes N first)"
    node_names | grep -qx "$1" || die "$1 is not a node of this cluster ($(node_names | paste -sd' '))"
}

kill_node() {
    local name=$1 pids
    is_our_node "$name"
    pids=$(ip netns pids "$name")
    [[ -n $pids ]] && kill -KILL $pids 2>/dev/null
    rm -f "$STATE/run/slurmd.$name.pid"
    log "node $name killed: $(echo $pids | wc -w) process(es) (slurmd, job steps, tasks)"
}

restore_node() {
    local name=$1
    is_our_node "$name"
    start_slurmd "$name"
    # DOWN / DRAIN -> back in service (refused, harmlessly, while the node is still registering or already up)
    wait_for 60 "node $name (back in service)" sh -c "scontrol update nodename=$name state=resume 2>/dev/null;
        sinfo -h -N -n $name -o %T | grep -Eqx 'idle|mixed|allocated'"
    log "node $name back in service"
}

case ${1:-} in
    start) shift; start "$@" ;;
    stop) stop ;;
    status) status ;;
    netns-check) netns_check ;;
    kill-node) kill_node "${2:?kill-node NAME}" ;;
    restore-node) restore_node "${2:?restore-node NAME}" ;;
    exec) name=${2:?exec NAME COMMAND...}; shift 2; is_our_node "$name"; in_ns "$name" "$name" "$@" ;;
    *) echo "usage: $0 start [--nodes N] | stop | status | netns-check | kill-node NAME | restore-node NAME" \
            "| exec NAME CMD..." >&2; exit 2 ;;
esac
