#!/usr/bin/env bash
# A one-machine cluster for trying walking-noise's cluster path (seml -> MongoDB -> SLURM):
# a single-node SLURM (Debian's munge/slurmctld/slurmd) and a MongoDB-wire server on 127.0.0.1,
# plus seml's MongoDB config pointing at it.
#
#   bash scripts/cluster.sh start  [all|slurm|mongo]   install where missing, configure, start, wait
#   bash scripts/cluster.sh stop   [all|slurm|mongo]   stop (cancels queued/running SLURM jobs)
#   bash scripts/cluster.sh status [all|slurm|mongo]   report; exit 0 only if everything is up
#   bash scripts/cluster.sh restart [all|slurm|mongo]
#
# All three commands are idempotent. SLURM needs root (apt-get, /etc/slurm); the database part
# does not. The MongoDB-wire server is mongoeco (PyPI, needs Python >= 3.13) in its own venv:
# it is a stand-in for machines without MongoDB. Nothing in the project imports it; on a real
# cluster, point seml at your real MongoDB (`seml configure`) and do not use this script.
#
# Environment (all optional):
#   WN_CLUSTER_DIR        state, logs, configs, venv    (root: /var/lib/walking-noise-cluster,
#                                                        else ~/.local/state/walking-noise-cluster)
#   WN_MONGO_PORT         port of the server on 127.0.0.1                           (27017)
#   WN_MONGO_STORAGE      sqlite (data kept across stop/start) | memory (faster, lost on stop)
#   WN_MONGO_PYTHON       a Python >= 3.13 to build the server's venv with   (found via pyenv)
#   WN_CLUSTER_CPUS       CPUs the node announces; more than the machine has lets that many
#                         1-CPU jobs run at once (oversubscribed)      (max(10, real CPUs))
#   WN_CLUSTER_MEM_MB     the node's RealMemory in MB                (the machine's, slurmd -C)
#   WN_SEML_CONFIG_FORCE  1: overwrite a seml mongodb.config that points at another server
#                         (the old one is kept as mongodb.config.bak-<time>)
#   WN_CLUSTER_FORCE      1: replace an /etc/slurm/slurm.conf this script did not write
#                         (kept as slurm.conf.bak-<time>)
#   WN_CLUSTER_TIMEOUT    seconds to wait for the node / the server                 (60)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ "$(id -u)" = 0 ]; then
    CLUSTER_DIR=${WN_CLUSTER_DIR:-/var/lib/walking-noise-cluster}
else
    CLUSTER_DIR=${WN_CLUSTER_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/walking-noise-cluster}
fi
MONGO_HOST=127.0.0.1
MONGO_PORT=${WN_MONGO_PORT:-27017}
MONGO_STORAGE=${WN_MONGO_STORAGE:-sqlite}
MONGOECO_SPEC='mongoeco[wire]==4.11.0'
TIMEOUT=${WN_CLUSTER_TIMEOUT:-60}
SEML_CONFIG_DIR=${XDG_CONFIG_HOME:-$HOME/.config}/seml
SEML_CONFIG=$SEML_CONFIG_DIR/mongodb.config
MARKER='# written by walking-noise scripts/cluster.sh'

SLURM_DIR=$CLUSTER_DIR/slurm
SLURM_CONF=$SLURM_DIR/slurm.conf
ETC_SLURM_CONF=/etc/slurm/slurm.conf
CTLD_PID=$SLURM_DIR/run/slurmctld.pid
SLURMD_PID=$SLURM_DIR/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid
MUNGE_SOCKET=/run/munge/munge.socket.2
MONGO_DIR=$CLUSTER_DIR/mongo
MONGO_VENV=$MONGO_DIR/venv
MONGO_PID=$MONGO_DIR/server.pid
MONGO_LOG=$MONGO_DIR/server.log
MONGO_DB=$MONGO_DIR/data.sqlite

say() { printf '[cluster] %s\n' "$*"; }
warn() { printf '[cluster] WARNING: %s\n' "$*" >&2; }
die() {
    printf '\n[cluster] ERROR: %s\n\n' "$*" >&2
    exit 1
}
need_root() {
    [ "$(id -u)" = 0 ] || die "the SLURM part needs root ($1); run as root or with sudo, or use '$0 ${CMD:-start} mongo' for the database only"
}

# ---------------------------------------------------------------- processes (zombie-tolerant)
# PID 1 here is not a real init: a dead daemon stays a zombie for a second or two, and kill -0
# still succeeds on it. A process counts as alive only if it exists and is not a zombie.
alive() {
    local pid=$1 state
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
    state=$(sed -e 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}
# pid from a pidfile, if that process is alive and its command name matches
pid_of() {
    local file=$1 name=$2 pid comm
    [ -s "$file" ] || return 1
    pid=$(tr -dc '0-9' <"$file")
    alive "$pid" || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    case "$comm" in "$name"*) echo "$pid" ;; *) return 1 ;; esac
}
# stop_pid PID NAME: SIGTERM, wait up to 15 s, then SIGKILL
stop_pid() {
    local pid=$1 name=$2 _
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do
        alive "$pid" || { say "stopped $name (pid $pid)"; return 0; }
        sleep 0.1
    done
    warn "$name (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do alive "$pid" || return 0; sleep 0.1; done
    die "could not stop $name (pid $pid)"
}

# ---------------------------------------------------------------- SLURM
slurm_installed() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null &&
        command -v munged >/dev/null && command -v munge >/dev/null
}

install_slurm() {
    slurm_installed && return 0
    need_root "apt-get install munge slurm-client slurmctld slurmd"
    command -v apt-get >/dev/null || die "SLURM is not installed and there is no apt-get here; install munge, slurmctld, slurmd and the SLURM client tools by hand"
    say "installing munge slurm-client slurmctld slurmd (apt-get) ..."
    # Keep the packages' postinst scripts from starting daemons: this script starts them itself.
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# temporary, %s\nexit 101\n' "$MARKER" >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0 log=$CLUSTER_DIR/apt.log
    mkdir -p "$CLUSTER_DIR"
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                munge slurm-client slurmctld slurmd
    } >"$log" 2>&1 || rc=$?
    [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
    [ "$rc" = 0 ] || { tail -n 20 "$log" >&2; die "apt-get failed (exit $rc); full log: $log"; }
    slurm_installed || die "apt-get succeeded but slurmctld/slurmd/sbatch/munged are still missing (log: $log)"
}

write_slurm_conf() {
    mkdir -p "$SLURM_DIR"/{state,spool,log,run}
    local node cpus mem hw real_cpus real_mem tmp
    hw=$(slurmd -C 2>/dev/null | grep '^NodeName=' | head -n1) ||
        die "'slurmd -C' printed no node line"
    node=$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' <<<"$hw")
    real_cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
    real_mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
    if [ -z "$node" ] || [ -z "$real_cpus" ] || [ -z "$real_mem" ]; then
        die "cannot parse 'slurmd -C': $hw"
    fi
    cpus=${WN_CLUSTER_CPUS:-$((real_cpus > 10 ? real_cpus : 10))}
    mem=${WN_CLUSTER_MEM_MB:-$real_mem}
    tmp=$(mktemp "$SLURM_DIR/slurm.conf.XXXXXX")
    cat >"$tmp" <<EOF
$MARKER: a single-node cluster on this machine.
# Regenerated by 'cluster.sh start'; edit the script (or its WN_* variables), not this file.
# Hardware (slurmd -C): $hw
ClusterName=walkingnoise
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# No systemd and no cgroups here: track processes by parentage, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# Without batch_sched_delay=0 queued jobs start only every few seconds.
SchedulerParameters=batch_sched_delay=0
# Cores are the consumable resource; memory is NOT (CR_Core): a job's --mem (seml asks 8G) only
# has to fit under RealMemory, so several such jobs share the machine's RAM. The node announces
# $cpus CPUs (the machine has $real_cpus): up to $cpus 1-CPU jobs run at once, oversubscribed.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
InactiveLimit=0
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=60
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    if [ -f "$SLURM_CONF" ] && cmp -s "$tmp" "$SLURM_CONF"; then
        rm -f "$tmp"
        CONF_CHANGED=0
    else
        mv -f "$tmp" "$SLURM_CONF"
        chmod 644 "$SLURM_CONF"
        CONF_CHANGED=1
    fi
    NODE=$node
}

# /etc/slurm/slurm.conf -> our config: seml's jobs and users' shells have no SLURM_CONF.
link_etc_slurm_conf() {
    mkdir -p /etc/slurm
    if [ -L "$ETC_SLURM_CONF" ] && [ "$(readlink "$ETC_SLURM_CONF")" = "$SLURM_CONF" ]; then
        return 0
    fi
    if [ -e "$ETC_SLURM_CONF" ] || [ -L "$ETC_SLURM_CONF" ]; then
        local ours=0
        grep -qF "$MARKER" "$ETC_SLURM_CONF" 2>/dev/null && ours=1
        if [ "$ours" = 0 ] && [ "${WN_CLUSTER_FORCE:-0}" != 1 ]; then
            die "$ETC_SLURM_CONF exists and was not written by this script (a real cluster's
config?). Leaving it alone. Set WN_CLUSTER_FORCE=1 to replace it (it is kept as a .bak copy)."
        fi
        if [ "$ours" = 0 ]; then
            local bak
            bak=$ETC_SLURM_CONF.bak-$(date +%Y%m%d-%H%M%S)
            mv "$ETC_SLURM_CONF" "$bak"
            warn "moved the existing $ETC_SLURM_CONF to $bak (WN_CLUSTER_FORCE=1)"
        else
            rm -f "$ETC_SLURM_CONF"
        fi
    fi
    ln -s "$SLURM_CONF" "$ETC_SLURM_CONF"
}

munge_works() { munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }

start_munged() {
    if munge_works; then
        say "munged already running"
        return 0
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        say "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
        fi
    fi
    # munged insists on these owners/modes; the Debian package uses the 'munge' user.
    local owner=root
    id munge >/dev/null 2>&1 && owner=munge
    chown "$owner:" /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown "$owner:" /run/munge /var/lib/munge /var/log/munge
    chmod 755 /run/munge
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    local args=(--socket="$MUNGE_SOCKET" --pid-file="$MUNGE_PID" --force)
    # Run as the munge user like the Debian service does; root (forced) if there is none.
    if [ "$owner" = munge ] && command -v runuser >/dev/null; then
        runuser -u munge -- munged "${args[@]}" </dev/null >>"$SLURM_DIR/log/munged.out" 2>&1 9>&- ||
            die "munged failed to start: $(tail -n 5 "$SLURM_DIR/log/munged.out")"
    else
        munged "${args[@]}" </dev/null >>"$SLURM_DIR/log/munged.out" 2>&1 9>&- ||
            die "munged failed to start: $(tail -n 5 "$SLURM_DIR/log/munged.out")"
    fi
    local _
    for _ in $(seq 1 50); do munge_works && { say "munged started"; return 0; }; sleep 0.1; done
    die "munged started but munge/unmunge does not work (see /var/log/munge/munged.log)"
}

# Node state as sinfo reports it, e.g. idle, mixed, allocated, down*, drained, unknown*
node_state() { sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1; }

wait_node_ready() {
    local deadline=$((SECONDS + TIMEOUT)) state='' resumed=0
    while [ $SECONDS -lt $deadline ]; do
        state=$(node_state || true)
        case "$state" in
            idle | mixed | allocated | completing) say "node $NODE is $state"; return 0 ;;
            down* | drain* | fail*)
                if [ "$resumed" = 0 ]; then
                    scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
                    resumed=1
                fi
                ;;
        esac
        sleep 0.2
    done
    die "node $NODE did not become idle within ${TIMEOUT}s (last state: '${state:-no answer}').
$(sinfo -N -l 2>&1 | tail -n 3)
slurmctld log: $SLURM_DIR/log/slurmctld.log; slurmd log: $SLURM_DIR/log/slurmd.log"
}

start_slurm() {
    need_root "it installs packages and writes /etc/slurm"
    install_slurm
    write_slurm_conf
    link_etc_slurm_conf
    export SLURM_CONF
    local ctld slurmd_pid
    ctld=$(pid_of "$CTLD_PID" slurmctld || true)
    slurmd_pid=$(pid_of "$SLURMD_PID" slurmd || true)
    if [ "$CONF_CHANGED" = 1 ] && { [ -n "$ctld" ] || [ -n "$slurmd_pid" ]; }; then
        warn "the SLURM config changed while SLURM runs; restarting slurmctld and slurmd"
        stop_slurm_daemons
        ctld='' slurmd_pid=''
    fi
    start_munged
    if [ -n "$ctld" ]; then
        say "slurmctld already running (pid $ctld)"
    else
        slurmctld </dev/null >>"$SLURM_DIR/log/slurmctld.out" 2>&1 9>&- ||
            die "slurmctld failed to start; see $SLURM_DIR/log/slurmctld.log and slurmctld.out"
        say "slurmctld started"
    fi
    if [ -n "$slurmd_pid" ]; then
        say "slurmd already running (pid $slurmd_pid)"
    else
        slurmd </dev/null >>"$SLURM_DIR/log/slurmd.out" 2>&1 9>&- ||
            die "slurmd failed to start; see $SLURM_DIR/log/slurmd.log and slurmd.out"
        say "slurmd started"
    fi
    wait_node_ready
}

stop_slurm_daemons() {
    local pid
    if pid=$(pid_of "$SLURMD_PID" slurmd); then stop_pid "$pid" slurmd; fi
    if pid=$(pid_of "$CTLD_PID" slurmctld); then stop_pid "$pid" slurmctld; fi
}

# pids of all descendants of $1 (from /proc; no procps needed)
descendants() {
    local d pid ppid
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        ppid=$(sed -e 's/^.*) //' "$d/stat" 2>/dev/null | cut -d' ' -f2) || continue
        if [ "$ppid" = "$1" ]; then
            echo "$pid"
            descendants "$pid"
        fi
    done
}

# slurmstepd processes (and their job processes) left after slurmd is gone: jobs that ignored
# the cancel, or a cluster whose slurmctld had died.
kill_stray_stepds() {
    local d pid kids
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [ "$(cat "$d/comm" 2>/dev/null)" = slurmstepd ] || continue
        alive "$pid" || continue
        kids=$(descendants "$pid" || true)
        warn "killing leftover slurmstepd (pid $pid) and its job processes ${kids//$'\n'/ }"
        # shellcheck disable=SC2086
        kill -KILL "$pid" $kids 2>/dev/null || true
    done
}

stop_slurm() {
    [ -d "$SLURM_DIR" ] || { say "SLURM: nothing to stop (no $SLURM_DIR)"; return 0; }
    export SLURM_CONF
    if pid_of "$CTLD_PID" slurmctld >/dev/null; then
        local jobs
        jobs=$(squeue -h -o '%i' 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            say "cancelling $(wc -l <<<"$jobs") queued/running job(s)"
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            for _ in $(seq 1 100); do
                [ -z "$(squeue -h -t PD,R,CG,S -o '%i' 2>/dev/null)" ] && break
                sleep 0.2
            done
        fi
    fi
    stop_slurm_daemons
    kill_stray_stepds
    local pid
    if pid=$(pid_of "$MUNGE_PID" munged); then stop_pid "$pid" munged; fi
    say "SLURM stopped"
}

status_slurm() {
    local ok=0 pid
    export SLURM_CONF
    if pid=$(pid_of "$MUNGE_PID" munged); then say "munged: running (pid $pid)"
    elif munge_works 2>/dev/null; then say "munged: running (not started by this script)"
    else say "munged: not running"; ok=1; fi
    if pid=$(pid_of "$CTLD_PID" slurmctld); then say "slurmctld: running (pid $pid)"
    else say "slurmctld: not running"; ok=1; fi
    if pid=$(pid_of "$SLURMD_PID" slurmd); then say "slurmd: running (pid $pid)"
    else say "slurmd: not running"; ok=1; fi
    if [ "$ok" = 0 ]; then
        sinfo -N -o '%N %P %T %c %m' 2>&1 | sed 's/^/[cluster]   /'
        say "jobs in the queue: $(squeue -h 2>/dev/null | wc -l)"
        say "config: $SLURM_CONF (linked from $ETC_SLURM_CONF); logs: $SLURM_DIR/log/"
    fi
    return $ok
}

# ---------------------------------------------------------------- MongoDB-wire server
find_python313() {
    local cand root
    if [ -n "${WN_MONGO_PYTHON:-}" ]; then
        "$WN_MONGO_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 13))' 2>/dev/null ||
            die "WN_MONGO_PYTHON=$WN_MONGO_PYTHON is not a working Python >= 3.13"
        echo "$WN_MONGO_PYTHON"
        return 0
    fi
    {
        if command -v pyenv >/dev/null && root=$(pyenv root 2>/dev/null); then
            printf '%s\n' "$root"/versions/3.*/bin/python3 | sort -V -r
        fi
        # PATH names last: the python3.13 on PATH may be a pyenv shim that errors.
        for cand in python3.14 python3.13 python3; do command -v "$cand" || true; done
    } | while read -r cand; do
        if "$cand" -c 'import sys, venv; sys.exit(sys.version_info < (3, 13))' >/dev/null 2>&1; then
            echo "$cand"
            break
        fi
    done
}

mongo_python_ok() {
    [ -x "$MONGO_VENV/bin/python" ] && [ "$(cat "$MONGO_VENV/.installed" 2>/dev/null)" = "$MONGOECO_SPEC" ] &&
        "$MONGO_VENV/bin/python" -c 'import mongoeco.wire, pymongo' >/dev/null 2>&1
}

install_mongo() {
    mongo_python_ok && return 0
    local py
    py=$(find_python313)
    [ -n "$py" ] || die "no Python >= 3.13 found, and the MongoDB-wire server (mongoeco) needs one.
Looked in \$(pyenv root)/versions/3.*/bin/python3 and python3.14/python3.13/python3 on PATH.
Install one (e.g. 'pyenv install 3.13') or set WN_MONGO_PYTHON=/path/to/python3.13,
or skip this server and point seml at a real MongoDB ('seml configure')."
    say "creating the server's venv $MONGO_VENV with $py ($("$py" -V 2>&1))"
    mkdir -p "$MONGO_DIR"
    rm -rf "$MONGO_VENV"
    "$py" -m venv "$MONGO_VENV" || die "'$py -m venv $MONGO_VENV' failed"
    "$MONGO_VENV/bin/python" -m pip install -q "$MONGOECO_SPEC" pymongo >"$MONGO_DIR/pip.log" 2>&1 ||
        { tail -n 20 "$MONGO_DIR/pip.log" >&2; die "pip install $MONGOECO_SPEC failed (log: $MONGO_DIR/pip.log)"; }
    echo "$MONGOECO_SPEC" >"$MONGO_VENV/.installed"
    mongo_python_ok || die "$MONGOECO_SPEC installed but 'import mongoeco.wire' fails (log: $MONGO_DIR/pip.log)"
}

# ping HOST PORT [timeout_ms]: 0 if a MongoDB server answers there
mongo_ping() {
    local py=$MONGO_VENV/bin/python
    [ -x "$py" ] || return 1
    "$py" - "$1" "$2" "${3:-1000}" <<'EOF' >/dev/null 2>&1
import sys, pymongo
host, port, ms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
client = pymongo.MongoClient(host, port, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms)
client.admin.command("ping")
EOF
}

port_open() { (exec 3<>"/dev/tcp/$MONGO_HOST/$MONGO_PORT") 2>/dev/null; }

start_mongo() {
    case "$MONGO_STORAGE" in sqlite | memory) ;; *) die "WN_MONGO_STORAGE must be sqlite or memory, not '$MONGO_STORAGE'" ;; esac
    install_mongo
    local pid
    if pid=$(pid_of "$MONGO_PID" python); then
        if mongo_ping "$MONGO_HOST" "$MONGO_PORT" 3000; then
            say "MongoDB-wire server already running (pid $pid) on $MONGO_HOST:$MONGO_PORT"
            return 0
        fi
        die "the MongoDB-wire server (pid $pid) runs but does not answer ping on $MONGO_HOST:$MONGO_PORT
(another port from an earlier start? run '$0 stop mongo' first). Log: $MONGO_LOG"
    fi
    if port_open; then
        die "port $MONGO_PORT on $MONGO_HOST is already in use by a process this script did not start.
Stop it, or choose another port: WN_MONGO_PORT=27018 $0 start"
    fi
    local storage_args=(--memory)
    [ "$MONGO_STORAGE" = sqlite ] && storage_args=(--db-path "$MONGO_DB")
    mkdir -p "$MONGO_DIR"
    cp -f "$SCRIPT_DIR/mongo_wire_server.py" "$MONGO_DIR/mongo_wire_server.py"
    setsid "$MONGO_VENV/bin/python" "$MONGO_DIR/mongo_wire_server.py" --host "$MONGO_HOST" \
        --port "$MONGO_PORT" "${storage_args[@]}" </dev/null >>"$MONGO_LOG" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$MONGO_PID"
    local deadline=$((SECONDS + TIMEOUT))
    while [ $SECONDS -lt $deadline ]; do
        alive "$pid" || die "the MongoDB-wire server exited at start; last lines of $MONGO_LOG:
$(tail -n 15 "$MONGO_LOG")"
        if mongo_ping "$MONGO_HOST" "$MONGO_PORT" 500; then
            say "MongoDB-wire server (mongoeco, storage: $MONGO_STORAGE) answers ping on $MONGO_HOST:$MONGO_PORT (pid $pid)"
            return 0
        fi
        sleep 0.2
    done
    die "the MongoDB-wire server did not answer ping within ${TIMEOUT}s; log: $MONGO_LOG"
}

stop_mongo() {
    local pid
    if pid=$(pid_of "$MONGO_PID" python); then
        stop_pid "$pid" "MongoDB-wire server"
    else
        say "MongoDB-wire server: not running"
    fi
    rm -f "$MONGO_PID"
}

status_mongo() {
    local pid
    if pid=$(pid_of "$MONGO_PID" python); then
        if mongo_ping "$MONGO_HOST" "$MONGO_PORT" 3000; then
            say "MongoDB-wire server: running (pid $pid), answers ping on $MONGO_HOST:$MONGO_PORT; log $MONGO_LOG"
        else
            say "MongoDB-wire server: running (pid $pid) but NO answer on $MONGO_HOST:$MONGO_PORT"
            return 1
        fi
    else
        say "MongoDB-wire server: not running"
        return 1
    fi
    seml_config_status
}

# ---------------------------------------------------------------- seml's mongodb.config
config_value() { sed -n "s/^[[:space:]]*$1[[:space:]]*:[[:space:]]*['\"]\{0,1\}\([^'\"#[:space:]]*\).*/\1/p" "$SEML_CONFIG" | head -n1; }

# 0 = points at our server, 1 = points elsewhere, 2 = missing
seml_config_state() {
    [ -f "$SEML_CONFIG" ] || return 2
    local host port
    host=$(config_value host)
    port=$(config_value port)
    case "$host" in 127.0.0.1 | localhost | ::1) ;; *) return 1 ;; esac
    [ "$port" = "$MONGO_PORT" ] || return 1
    grep -q '^[[:space:]]*ssh_config' "$SEML_CONFIG" && return 1
    return 0
}

write_seml_config() {
    local state=0
    seml_config_state || state=$?
    if [ "$state" = 0 ]; then
        say "seml config $SEML_CONFIG already points at $MONGO_HOST:$MONGO_PORT (left as is)"
        return 0
    fi
    if [ "$state" = 1 ] && grep -qF "$MARKER" "$SEML_CONFIG"; then
        say "seml config $SEML_CONFIG was written by this script for $(config_value host):$(config_value port); updating it"
    elif [ "$state" = 1 ]; then
        if [ "${WN_SEML_CONFIG_FORCE:-0}" != 1 ]; then
            cat >&2 <<EOF

[cluster] !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
[cluster] NOT touching seml's MongoDB config $SEML_CONFIG:
[cluster] it points at host '$(config_value host)', port '$(config_value port)', not at this
[cluster] machine's server $MONGO_HOST:$MONGO_PORT. seml will keep using that other server.
[cluster] To use the local server instead, either
[cluster]   - give seml another config folder:  export XDG_CONFIG_HOME=/some/dir  (then start again), or
[cluster]   - overwrite it (old one kept as .bak): WN_SEML_CONFIG_FORCE=1 $0 start
[cluster] !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!

EOF
            return 3
        fi
        local bak
        bak=$SEML_CONFIG.bak-$(date +%Y%m%d-%H%M%S)
        cp -p "$SEML_CONFIG" "$bak"
        warn "overwriting $SEML_CONFIG (WN_SEML_CONFIG_FORCE=1); the old one is kept as $bak"
    fi
    mkdir -p "$SEML_CONFIG_DIR"
    local tmp
    tmp=$(mktemp "$SEML_CONFIG_DIR/.mongodb.config.XXXXXX")
    cat >"$tmp" <<EOF
$MARKER: the local MongoDB-wire server (no auth).
username: ''
password: ''
host: $MONGO_HOST
port: $MONGO_PORT
database: seml
EOF
    chmod 600 "$tmp"
    mv -f "$tmp" "$SEML_CONFIG"
    say "wrote seml config $SEML_CONFIG ($MONGO_HOST:$MONGO_PORT, database seml)"
}

seml_config_status() {
    local state=0
    seml_config_state || state=$?
    case $state in
        0) say "seml config: $SEML_CONFIG -> $MONGO_HOST:$MONGO_PORT" ;;
        1) warn "seml config $SEML_CONFIG points at $(config_value host):$(config_value port), not at this server" ;;
        2) warn "seml config $SEML_CONFIG does not exist" ;;
    esac
    return 0
}

# ---------------------------------------------------------------- main
usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-2}"
}

CMD=${1:-}
WHAT=${2:-all}
case "$WHAT" in all | slurm | mongo) ;; *) usage ;; esac
case "$CMD" in start | stop | status | restart) ;; -h | --help | help) usage 0 ;; *) usage ;; esac

mkdir -p "$CLUSTER_DIR" 2>/dev/null || die "cannot create $CLUSTER_DIR (set WN_CLUSTER_DIR to a writable folder)"
# One start/stop at a time (status needs no lock). The daemons started below get fd 9 closed,
# or they would hold the lock forever.
if [ "$CMD" != status ] && command -v flock >/dev/null; then
    exec 9>"$CLUSTER_DIR/.lock"
    flock -w 120 9 || die "another 'cluster.sh' holds $CLUSTER_DIR/.lock for 2 minutes"
fi

do_start() {
    local t0=$SECONDS rc=0
    [ "$WHAT" = mongo ] || start_slurm
    if [ "$WHAT" != slurm ]; then
        start_mongo
        write_seml_config || rc=$?
    fi
    if [ "$rc" = 0 ]; then
        say "up after $((SECONDS - t0)) s"
    else
        printf '[cluster] ERROR: the servers are up, but seml will not use them (its config points elsewhere, see above); exit %s\n' "$rc" >&2
    fi
    return $rc
}
do_stop() {
    [ "$WHAT" = slurm ] || stop_mongo
    if [ "$WHAT" != mongo ]; then
        if [ "$(id -u)" = 0 ]; then stop_slurm; else say "SLURM: not root, not stopping it"; fi
    fi
}
do_status() {
    local rc=0
    if [ "$WHAT" != mongo ]; then status_slurm || rc=1; fi
    if [ "$WHAT" != slurm ]; then status_mongo || rc=1; fi
    return $rc
}

case "$CMD" in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    restart) do_stop && do_start ;;
esac
