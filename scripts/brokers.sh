#!/usr/bin/env bash
# Local message brokers for aspyx_event's integration tests (no systemd needed).
#
# Usage: scripts/brokers.sh install|start|stop|status|
#                           restart-rabbitmq|kill-rabbitmq|restart-activemq|kill-activemq|
#                           rabbitmqctl ARGS...
# `status` exits 0 when both brokers run, 3 otherwise. Env: BROKERS_DIR,
# BROKERS_START_TIMEOUT (60 s per broker), BROKERS_STOP_TIMEOUT (30 s, then SIGKILL).
#
# Everything listens on 127.0.0.1 only:
#   RabbitMQ 3.10 (Debian `rabbitmq-server`), node rabbit@localhost
#     5672  AMQP 0-9-1 + AMQP 1.0 (plugin rabbitmq_amqp1_0)
#     61613 STOMP (plugin rabbitmq_stomp)
#     15672 management HTTP API (plugin rabbitmq_management), guest/guest
#     25672 Erlang distribution, 4369 epmd (started by us when none runs)
#   ActiveMQ Classic 5.17 (Debian `activemq`), broker "aspyx"
#     61614 STOMP, 61616 OpenWire; no JMX, no web console; every topic is a
#     virtual topic: consume `/topic/E` as group G from `/queue/Consumer.G.E`
#     (Debian's ActiveMQ has no AMQP transport).
# State (config, data, logs, pids) lives in ${BROKERS_DIR:-<repo>/.brokers}; it is
# kept across stop/start so persistent messages in durable queues survive restarts.
#
# Facts this relies on (measured on Debian 12, root, no systemd, 2 cores, gVisor):
# - the packages' postinst would start system services: a policy-rc.d exiting 101
#   stops that (Docker images usually have one already; we only remove ours);
#   an `apt-get update` failure (e.g. one unreachable third-party source) is only
#   logged: the install itself is checked. Install of both brokers here: ~25 s.
# - /usr/lib/rabbitmq/bin/rabbitmq-server is a sh wrapper that runs beam.smp as a
#   child; erl_child_setup and inet_gethost put themselves in their own sessions and
#   exit when beam dies. We run the wrapper with setsid (own process group), record the
#   group id, read beam's pid from RABBITMQ_PID_FILE, stop with SIGTERM to beam and
#   kill -9 the whole group for fault injection. A killed process stays a zombie until
#   PID 1 reaps it (1-2 s): zombies count as gone.
# - RabbitMQ start: ports after 7-11 s with an existing data dir (3.10 loads every
#   module to compute schema upgrades, ~4-5 s of it), 1 s more for await_startup;
#   graceful stop ~6.4 s (the management plugin waits 5 s on shutdown). Starting both
#   brokers in parallel makes RabbitMQ take ~18 s on 2 cores: start them in sequence.
#   ActiveMQ: ready ~1.5-2 s, stop <1 s.
# - `rabbitmqctl` only reaches the node with the same env (HOME holds the cookie):
#   use `scripts/brokers.sh rabbitmqctl ...`.
# - guest/guest is accepted from loopback only (RabbitMQ default), which is all we use.
# - ActiveMQ runs in the foreground as `java -jar activemq.jar start xbean:file:...`;
#   STOMP bodies up to 100 MB are accepted (maxDataLength default, frame size set to
#   100 MB below); RabbitMQ's limit is its max message size (128 MB default). A 1.1 MB
#   binary STOMP message passes both (scripts/smoke_brokers.py).
# - python-qpid-proton 0.40 has no wheel here: pip builds the sdist (~30 s, setuptools +
#   cffi, no cmake), which needs gcc, the Python headers (pyenv ships them), pkg-config,
#   and libssl-dev (TLS) / libsasl2-dev (SASL) at build time, so `install` provides them.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
BROKERS_DIR="${BROKERS_DIR:-$REPO/.brokers}"
START_TIMEOUT="${BROKERS_START_TIMEOUT:-60}"
STOP_TIMEOUT="${BROKERS_STOP_TIMEOUT:-30}"
PYTHON="${PYTHON:-python3}"

RMQ_DIR="$BROKERS_DIR/rabbitmq"
AMQ_DIR="$BROKERS_DIR/activemq"
RMQ_BIN=/usr/lib/rabbitmq/bin
AMQ_HOME=/usr/share/activemq

RMQ_PORTS=(5672 61613 15672 25672)
AMQ_PORTS=(61614 61616)

APT_PACKAGES=(rabbitmq-server activemq gcc libc6-dev pkg-config libssl-dev libsasl2-dev)

log() { printf '[brokers] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- install
pkg_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

python_headers_present() {
    "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' \
        >/dev/null 2>&1
}

missing_packages() {
    local p
    for p in "${APT_PACKAGES[@]}"; do
        pkg_installed "$p" || echo "$p"
    done
    python_headers_present || pkg_installed python3-dev || echo python3-dev
    command -v java >/dev/null 2>&1 || pkg_installed default-jre-headless || echo default-jre-headless
}

cmd_install() {
    local missing
    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    ((EUID == 0)) || die "installing ${missing[*]} needs root"
    log "installing: ${missing[*]}"
    local created_policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    # One unreachable third-party apt source makes `update` fail although the Debian
    # lists were refreshed: do not stop here, the install below is the check.
    apt-get update -qq </dev/null || log "apt-get update reported errors (continuing)"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
    if [[ -n "$created_policy" ]]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    trap - EXIT
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]} == 0)) || die "still missing after install: ${missing[*]}"
    log "install done"
}

# ---------------------------------------------------------------- helpers
now_us() { echo "${EPOCHREALTIME//[.,]/}"; }
since() { # start_us -> seconds with one decimal
    local d=$(($(now_us) - $1))
    printf '%d.%d' $((d / 1000000)) $((d / 100000 % 10))
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

read_pid() { # file -> pid on stdout, fails when absent/garbage
    local pid
    [[ -s "$1" ]] || return 1
    pid="$(tr -dc '0-9' <"$1")"
    [[ -n "$pid" ]] || return 1
    echo "$pid"
}

# A killed process stays a zombie until PID 1 reaps it (~1-2 s here): ignore zombies.
group_alive() { # pgid
    ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

cmdline_has() { # pid needle
    local cmdline
    cmdline="$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null)" || return 1
    [[ "$cmdline" == *"$2"* ]]
}

# Start a command in a new session (its own process group); the pid written to
# $1 is the group id, which is also the pid of the exec'ed command.
spawn_group() { # pidfile logfile cmd...
    local pidfile="$1" logfile="$2"
    shift 2
    # fd 9 (our lock) must not leak into the long-running broker.
    # shellcheck disable=SC2016 # expanded by the inner bash
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" \
        </dev/null >>"$logfile" 2>&1 9>&- &
    local _
    for _ in $(seq 50); do
        [[ -s "$pidfile" ]] && return 0
        sleep 0.1
    done
    die "could not start $*"
}

wait_group_gone() { # pgid timeout_seconds
    local deadline=$((SECONDS + $2))
    while group_alive "$1"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

kill_group() { # pgid name : SIGKILL the whole group, wait until gone
    kill -KILL -- "-$1" 2>/dev/null || true
    wait_group_gone "$1" 10 || die "$2: process group $1 survived SIGKILL"
}

check_ports_free() { # name ports...
    local name="$1" p
    shift
    for p in "$@"; do
        if port_open "$p"; then
            die "$name: port 127.0.0.1:$p is already used by another process"
        fi
    done
}

all_ports_open() {
    local p
    for p in "$@"; do port_open "$p" || return 1; done
}

# ---------------------------------------------------------------- RabbitMQ
rmq_env() {
    export HOME="$RMQ_DIR"
    export RABBITMQ_NODENAME=rabbit@localhost
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT=5672
    export RABBITMQ_DIST_PORT=25672
    export RABBITMQ_CONFIG_FILE="$RMQ_DIR/rabbitmq.conf"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$RMQ_DIR/advanced.config"
    export RABBITMQ_CONF_ENV_FILE="$RMQ_DIR/rabbitmq-env.conf"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ_DIR/enabled_plugins"
    export RABBITMQ_MNESIA_BASE="$RMQ_DIR/mnesia"
    export RABBITMQ_LOG_BASE="$RMQ_DIR/log"
    export RABBITMQ_PID_FILE="$RMQ_DIR/beam.pid"
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    export ERL_EPMD_ADDRESS=127.0.0.1
    export ERL_EPMD_PORT=4369
}

rmq_write_config() {
    mkdir -p "$RMQ_DIR/log" "$RMQ_DIR/mnesia"
    : >"$RMQ_DIR/rabbitmq-env.conf"
    # Same content as `rabbitmq-plugins enable --offline ...` writes.
    echo '[rabbitmq_amqp1_0,rabbitmq_management,rabbitmq_stomp].' >"$RMQ_DIR/enabled_plugins"
    cat >"$RMQ_DIR/rabbitmq.conf" <<'EOF'
# generated by scripts/brokers.sh: loopback only
listeners.tcp.default = 127.0.0.1:5672
stomp.listeners.tcp.1 = 127.0.0.1:61613
stomp.default_user = guest
stomp.default_pass = guest
amqp1_0.default_user = guest
management.tcp.ip = 127.0.0.1
management.tcp.port = 15672
loopback_users.guest = true
log.console = false
log.file.level = info
EOF
}

epmd_start() {
    # Reuse a running epmd (ours or not); otherwise start one bound to loopback.
    if port_open 4369; then return 0; fi
    local epmd f
    epmd="$(command -v epmd || true)"
    for f in /usr/lib/erlang/erts-*/bin/epmd; do [[ -n "$epmd" ]] || epmd="$f"; done
    [[ -x "$epmd" ]] || die "epmd not found (is erlang installed?)"
    spawn_group "$BROKERS_DIR/epmd.pid" "$RMQ_DIR/log/epmd.log" "$epmd" -address 127.0.0.1 -port 4369
    local _
    for _ in $(seq 50); do port_open 4369 && return 0; sleep 0.1; done
    die "epmd did not start"
}

epmd_stop() {
    local pid
    pid="$(read_pid "$BROKERS_DIR/epmd.pid")" || return 0
    if group_alive "$pid" && cmdline_has "$pid" epmd; then
        kill -TERM -- "-$pid" 2>/dev/null || true
        wait_group_gone "$pid" 5 || kill_group "$pid" epmd
    fi
    rm -f "$BROKERS_DIR/epmd.pid"
}

rmq_pgid() { # prints the group id when our RabbitMQ runs
    local pid
    pid="$(read_pid "$RMQ_DIR/server.pid")" || return 1
    group_alive "$pid" || return 1
    # leader is the rabbitmq-server sh wrapper; if it is gone, beam must be ours
    cmdline_has "$pid" rabbitmq || {
        local beam
        beam="$(read_pid "$RMQ_DIR/beam.pid")" && cmdline_has "$beam" "$RMQ_DIR" || return 1
    }
    echo "$pid"
}

rmq_running() { rmq_pgid >/dev/null; }

rmq_log_tail() {
    local f
    for f in "$RMQ_DIR/log/console.log" "$RMQ_DIR"/log/rabbit@localhost.log; do
        [[ -f "$f" ]] || continue
        log "---- tail of $f"
        tail -n 40 "$f" >&2
    done
}

RMQ_T0="" # set by launch_rabbitmq when it started a new broker

launch_rabbitmq() {
    RMQ_T0=""
    if rmq_running; then
        log "RabbitMQ already running (pgid $(rmq_pgid))"
        return 0
    fi
    check_ports_free RabbitMQ "${RMQ_PORTS[@]}"
    rm -f "$RMQ_DIR/server.pid" "$RMQ_DIR/beam.pid"
    rmq_write_config
    RMQ_T0="$(now_us)"
    (
        rmq_env
        epmd_start
        echo "==== $(date -Is) start" >>"$RMQ_DIR/log/console.log"
        spawn_group "$RMQ_DIR/server.pid" "$RMQ_DIR/log/console.log" "$RMQ_BIN/rabbitmq-server"
    )
}

rmq_start_failed() {
    rmq_log_tail
    kill_group "$1" RabbitMQ
    rm -f "$RMQ_DIR/server.pid" "$RMQ_DIR/beam.pid"
    die "$2"
}

wait_rabbitmq() {
    local pgid deadline=$((SECONDS + START_TIMEOUT))
    pgid="$(read_pid "$RMQ_DIR/server.pid")" || die "RabbitMQ: no pid file"
    while ! all_ports_open "${RMQ_PORTS[@]}"; do
        group_alive "$pgid" || { rmq_log_tail; die "RabbitMQ exited during startup"; }
        ((SECONDS < deadline)) ||
            rmq_start_failed "$pgid" "RabbitMQ not listening on ${RMQ_PORTS[*]} after ${START_TIMEOUT}s"
        sleep 0.2
    done
    [[ -n "$RMQ_T0" ]] || return 0 # was already running
    log "RabbitMQ ports open after $(since "$RMQ_T0")s, waiting for await_startup"
    local left=$((deadline - SECONDS))
    ((left > 1)) || left=2
    if ! (rmq_env && timeout "$((left + 5))" "$RMQ_BIN/rabbitmqctl" -q await_startup --timeout "$left") \
        >>"$RMQ_DIR/log/console.log" 2>&1; then
        rmq_start_failed "$pgid" "RabbitMQ did not report itself running within ${START_TIMEOUT}s"
    fi
    log "RabbitMQ ready in $(since "$RMQ_T0")s (pgid $pgid, beam $(read_pid "$RMQ_DIR/beam.pid" || echo '?'))"
}

start_rabbitmq() {
    launch_rabbitmq
    wait_rabbitmq
}

stop_rabbitmq() {
    local pgid beam
    if ! pgid="$(rmq_pgid)"; then
        rm -f "$RMQ_DIR/server.pid" "$RMQ_DIR/beam.pid"
        return 0
    fi
    # SIGTERM to beam = graceful shutdown (the sh wrapper then exits too).
    if beam="$(read_pid "$RMQ_DIR/beam.pid")" && cmdline_has "$beam" beam; then
        kill -TERM "$beam" 2>/dev/null || true
    else
        kill -TERM -- "-$pgid" 2>/dev/null || true
    fi
    if ! wait_group_gone "$pgid" "$STOP_TIMEOUT"; then
        log "RabbitMQ did not stop within ${STOP_TIMEOUT}s: SIGKILL"
        kill_group "$pgid" RabbitMQ
    fi
    rm -f "$RMQ_DIR/server.pid" "$RMQ_DIR/beam.pid"
    log "RabbitMQ stopped"
}

kill_rabbitmq() {
    local pgid
    pgid="$(rmq_pgid)" || { log "RabbitMQ is not running"; return 0; }
    kill_group "$pgid" RabbitMQ
    rm -f "$RMQ_DIR/server.pid" "$RMQ_DIR/beam.pid"
    log "RabbitMQ killed (SIGKILL)"
}

# ---------------------------------------------------------------- ActiveMQ
amq_write_config() {
    mkdir -p "$AMQ_DIR/conf" "$AMQ_DIR/data" "$AMQ_DIR/tmp" "$AMQ_DIR/log"
    # log4j 1.2 (Debian's ActiveMQ): log to a file in the state dir.
    cat >"$AMQ_DIR/conf/log4j.properties" <<EOF
log4j.rootLogger=INFO, logfile
log4j.logger.org.apache.activemq.spring=WARN
log4j.logger.org.springframework=WARN
log4j.logger.org.apache.xbean=WARN
log4j.appender.logfile=org.apache.log4j.RollingFileAppender
log4j.appender.logfile.file=$AMQ_DIR/log/activemq.log
log4j.appender.logfile.maxFileSize=10MB
log4j.appender.logfile.maxBackupIndex=2
log4j.appender.logfile.append=true
log4j.appender.logfile.layout=org.apache.log4j.PatternLayout
log4j.appender.logfile.layout.ConversionPattern=%d | %-5p | %m | %c | %t%n
EOF
    cat >"$AMQ_DIR/conf/activemq.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- generated by scripts/brokers.sh: loopback only, no JMX, no web console -->
<beans xmlns="http://www.springframework.org/schema/beans"
       xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
       xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans.xsd
                           http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="aspyx"
          dataDirectory="$AMQ_DIR/data" useJmx="false" persistent="true"
          schedulerSupport="false" useShutdownHook="true">
    <destinationInterceptors>
      <virtualDestinationInterceptor>
        <virtualDestinations>
          <!-- every topic is virtual: group G consumes topic E from queue Consumer.G.E -->
          <virtualTopic name="&gt;" prefix="Consumer.*." selectorAware="false"/>
        </virtualDestinations>
      </virtualDestinationInterceptor>
    </destinationInterceptors>
    <managementContext>
      <managementContext createConnector="false"/>
    </managementContext>
    <persistenceAdapter>
      <kahaDB directory="$AMQ_DIR/data/kahadb"/>
    </persistenceAdapter>
    <systemUsage>
      <systemUsage>
        <memoryUsage><memoryUsage percentOfJvmHeap="70"/></memoryUsage>
        <storeUsage><storeUsage limit="8 gb"/></storeUsage>
        <tempUsage><tempUsage limit="2 gb"/></tempUsage>
      </systemUsage>
    </systemUsage>
    <transportConnectors>
      <transportConnector name="openwire"
          uri="tcp://127.0.0.1:61616?maximumConnections=1000&amp;wireFormat.maxFrameSize=104857600"/>
      <!-- closeAsync=false: recommended for STOMP (short-lived connections) -->
      <transportConnector name="stomp"
          uri="stomp://127.0.0.1:61614?maximumConnections=1000&amp;wireFormat.maxFrameSize=104857600&amp;transport.closeAsync=false"/>
    </transportConnectors>
  </broker>
</beans>
EOF
}

amq_pid() {
    local pid
    pid="$(read_pid "$AMQ_DIR/activemq.pid")" || return 1
    group_alive "$pid" && cmdline_has "$pid" activemq.jar || return 1
    echo "$pid"
}

amq_running() { amq_pid >/dev/null; }

amq_log_tail() {
    local f
    for f in "$AMQ_DIR/log/console.log" "$AMQ_DIR/log/activemq.log"; do
        [[ -f "$f" ]] || continue
        log "---- tail of $f"
        tail -n 40 "$f" >&2
    done
}

AMQ_T0="" # set by launch_activemq when it started a new broker

launch_activemq() {
    AMQ_T0=""
    if amq_running; then
        log "ActiveMQ already running (pid $(amq_pid))"
        return 0
    fi
    check_ports_free ActiveMQ "${AMQ_PORTS[@]}"
    rm -f "$AMQ_DIR/activemq.pid"
    amq_write_config
    AMQ_T0="$(now_us)"
    echo "==== $(date -Is) start" >>"$AMQ_DIR/log/console.log"
    spawn_group "$AMQ_DIR/activemq.pid" "$AMQ_DIR/log/console.log" \
        java -Xms64M -Xmx512M -Djava.awt.headless=true \
        -Djava.io.tmpdir="$AMQ_DIR/tmp" \
        -Dactivemq.home="$AMQ_HOME" -Dactivemq.base="$AMQ_DIR" \
        -Dactivemq.conf="$AMQ_DIR/conf" -Dactivemq.data="$AMQ_DIR/data" \
        -Dlog4j.configuration="file:$AMQ_DIR/conf/log4j.properties" \
        -jar "$AMQ_HOME/bin/activemq.jar" start "xbean:file:$AMQ_DIR/conf/activemq.xml"
}

wait_activemq() {
    local pid deadline=$((SECONDS + START_TIMEOUT))
    pid="$(read_pid "$AMQ_DIR/activemq.pid")" || die "ActiveMQ: no pid file"
    while ! all_ports_open "${AMQ_PORTS[@]}"; do
        group_alive "$pid" || { amq_log_tail; die "ActiveMQ exited during startup"; }
        if ((SECONDS >= deadline)); then
            amq_log_tail
            kill_group "$pid" ActiveMQ
            rm -f "$AMQ_DIR/activemq.pid"
            die "ActiveMQ not listening on ${AMQ_PORTS[*]} after ${START_TIMEOUT}s"
        fi
        sleep 0.2
    done
    [[ -n "$AMQ_T0" ]] || return 0 # was already running
    log "ActiveMQ ready in $(since "$AMQ_T0")s (pid $pid)"
}

start_activemq() {
    launch_activemq
    wait_activemq
}

stop_activemq() {
    local pid
    if ! pid="$(amq_pid)"; then
        rm -f "$AMQ_DIR/activemq.pid"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true # shutdown hook stops the broker cleanly
    if ! wait_group_gone "$pid" "$STOP_TIMEOUT"; then
        log "ActiveMQ did not stop within ${STOP_TIMEOUT}s: SIGKILL"
        kill_group "$pid" ActiveMQ
    fi
    rm -f "$AMQ_DIR/activemq.pid"
    log "ActiveMQ stopped"
}

kill_activemq() {
    local pid
    pid="$(amq_pid)" || { log "ActiveMQ is not running"; return 0; }
    kill_group "$pid" ActiveMQ
    rm -f "$AMQ_DIR/activemq.pid"
    log "ActiveMQ killed (SIGKILL)"
}

# ---------------------------------------------------------------- commands
ensure_gitignore() {
    # Only relevant for the default state dir inside the repo.
    [[ "$BROKERS_DIR" == "$REPO/.brokers" ]] || return 0
    local gi="$REPO/.gitignore"
    if [[ ! -f "$gi" ]]; then
        echo '.brokers/' >"$gi"
    elif ! grep -qxE '/?\.brokers/?' "$gi"; then
        [[ -z "$(tail -c1 "$gi")" ]] || echo >>"$gi"
        echo '.brokers/' >>"$gi"
    fi
}

lock() {
    mkdir -p "$BROKERS_DIR"
    exec 9>"$BROKERS_DIR/.lock"
    flock -w 300 9 || die "another brokers.sh holds $BROKERS_DIR/.lock"
}

cmd_status() {
    local rc=0
    if rmq_running; then
        echo "rabbitmq: running (pgid $(rmq_pgid)) amqp/amqp1.0=127.0.0.1:5672 stomp=127.0.0.1:61613 management=http://127.0.0.1:15672"
    else
        echo "rabbitmq: stopped"
        rc=3
    fi
    if amq_running; then
        echo "activemq: running (pid $(amq_pid)) stomp=127.0.0.1:61614 openwire=127.0.0.1:61616"
    else
        echo "activemq: stopped"
        rc=3
    fi
    return "$rc"
}

main() {
    local cmd="${1:-}"
    (($# == 0)) || shift
    case "$cmd" in
    install) cmd_install ;;
    start)
        cmd_install
        ensure_gitignore
        lock
        # one after the other: started in parallel on 2 cores, both boot slower
        # (RabbitMQ took 18 s instead of 9 s)
        start_rabbitmq
        start_activemq
        ;;
    stop)
        lock
        stop_activemq
        stop_rabbitmq
        epmd_stop
        ;;
    status) cmd_status ;;
    restart-rabbitmq)
        cmd_install
        lock
        stop_rabbitmq
        start_rabbitmq
        ;;
    restart-activemq)
        cmd_install
        lock
        stop_activemq
        start_activemq
        ;;
    kill-rabbitmq)
        lock
        kill_rabbitmq
        ;;
    kill-activemq)
        lock
        kill_activemq
        ;;
    rabbitmqctl)
        rmq_env
        exec "$RMQ_BIN/rabbitmqctl" "$@"
        ;;
    *)
        echo "usage: $0 install|start|stop|status|restart-rabbitmq|kill-rabbitmq|restart-activemq|kill-activemq|rabbitmqctl ARGS..." >&2
        exit 2
        ;;
    esac
}

main "$@"
