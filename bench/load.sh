#!/usr/bin/env bash
# bench/load.sh: hookgate's load benchmark, in one command.
#
#   bench/load.sh                      # defaults: DURATION=10 s per point
#   DURATION=5 BACKLOG=20000 bench/load.sh    # quicker
#
# Environment knobs (all optional):
#   DURATION   seconds measured per load point              (10)
#   WARMUP     seconds of warm-up load before each point      (2)
#   RATE       open-loop rate, requests/s                 (10000)
#   CONNS      load generator connections                    (64)
#   BACKLOG    jobs queued for the drain/backlog measurement (1000000:
#              ~1-2 min to fill and ~2 min to drain here, ~1.5 GB of disk
#              under /tmp; BACKLOG=50000 for a quick run)
#   SKIP_BUILD=1  do not run cargo build (use existing target/release)
#
# What it does, in one run (~8 min with the defaults, plus the build):
#   build release binaries (hookgate, examples bare_hyper + loadgen), install
#   nginx if missing, then for each target: start it, warm up, run loadgen at
#   max load (closed loop, CONNS keep-alive connections) and at a fixed RATE
#   (open loop, latency from the intended send time), record req/s, latency
#   percentiles and peak RSS (VmHWM), stop it:
#     a. bare_hyper                     the ceiling
#     b. hookgate queue mode (SQLite)   acks; forwards to a bare_hyper upstream
#     c. hookgate passthrough mode      in front of the bare_hyper upstream
#     d. nginx proxy_pass (keepalive)   in front of the same upstream
#   then the drain: BACKLOG jobs are queued while the upstream stalls, hookgate
#   is restarted on the same database with a healthy upstream, and the
#   delivery rate is timed until /admin/queues shows nothing pending; RSS is
#   taken with the backlog held and after the drain.
#   Results: bench/results.md (overwritten) and bench/results.json (raw).
#
# CPU placement: every server under test AND its upstream run on core 0
# (`taskset -c 0`), the load generator alone on core 1 (`taskset -c 1`). So
# "passthrough" and "nginx" are each measured as proxy + upstream sharing
# one core, and queue mode as receiver + forwarder + upstream on one core.
#
# Safety: every process started here is stopped on exit (trap EXIT), every
# load run is bounded by `timeout`, and all traffic goes to 127.0.0.1 (the
# load generator refuses non-loopback targets).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
RATE=${RATE:-10000}
CONNS=${CONNS:-64}
BACKLOG=${BACKLOG:-1000000}
SERVER_CPU=0
LOAD_CPU=1

REL="$ROOT/target/release"
HOOKGATE="$REL/hookgate"
BARE="$REL/examples/bare_hyper"
LOADGEN="$REL/examples/loadgen"

UP_PORT=18002      # the fast upstream (bare_hyper) of hookgate and nginx
STALL_PORT=18003   # the stalled upstream used to build a backlog
BARE_PORT=18001
QUEUE_PORT=18080; QUEUE_ADMIN=19080
PASS_PORT=18081
NGINX_PORT=18082
ROUTE=/hooks/sigsentry

export SIGSENTRY_SECRET="bench-secret-0123456789"
WORK=$(mktemp -d /tmp/hookgate-bench.XXXXXX)
RES="$WORK/results"
mkdir -p "$RES"

log() { printf '[load.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- process bookkeeping ----------------------------------------------------
PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
    done
    for _ in $(seq 50); do
        local alive=0
        for p in "${PIDS[@]:-}"; do
            [ -n "$p" ] && kill -0 "$p" 2>/dev/null && alive=1
        done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        log "work dir kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD...: runs CMD pinned to the server core, logs to $WORK/NAME.log;
# the pid is left in $STARTED.
start() {
    local name=$1; shift
    taskset -c "$SERVER_CPU" "$@" >"$WORK/$name.log" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
}

# stop PID: SIGTERM, up to 15 s, then SIGKILL.
stop() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

wait_port() {
    local port=$1
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    log "port $port did not open"; return 1
}

kb() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# run_load NAME URL MODE: MODE is "closed" or "open"; JSON to $RES/NAME.json.
run_load() {
    local name=$1 url=$2 mode=$3
    local rate=0 warm=$WARMUP
    [ "$mode" = open ] && rate=$RATE
    cat /proc/loadavg >"$RES/$name.loadavg"
    timeout $((DURATION + WARMUP + 60)) taskset -c "$LOAD_CPU" "$LOADGEN" \
        --url "$url" --connections "$CONNS" --duration "$DURATION" --warmup "$warm" \
        --rate "$rate" --label "$name" --id-prefix "$name-$RANDOM" \
        >"$RES/$name.json" 2>>"$WORK/loadgen.log"
    tail -n 1 "$WORK/loadgen.log" >&2
}

admin_queues() { curl -s --max-time 5 "http://127.0.0.1:$1/admin/queues" || echo '{}'; }

# --- build and tools ----------------------------------------------------------
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building release binaries (cargo build --release --examples --bin hookgate)"
    cargo build --release --examples --bin hookgate
fi
for b in "$HOOKGATE" "$BARE" "$LOADGEN"; do
    [ -x "$b" ] || { log "missing $b"; exit 1; }
done
if ! command -v nginx >/dev/null; then
    log "installing nginx"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y nginx-light >/dev/null 2>&1 \
        || { apt-get update >/dev/null && apt-get install -y nginx-light >/dev/null 2>&1; } \
        || apt-get install -y nginx >/dev/null
fi
NGINX=$(command -v nginx)

# --- a. bare_hyper: the ceiling ---------------------------------------------------
log "a. bare_hyper (ceiling) on core $SERVER_CPU"
start bare "$BARE" --listen "127.0.0.1:$BARE_PORT"; BARE_PID=$STARTED
wait_port $BARE_PORT
run_load bare_closed "http://127.0.0.1:$BARE_PORT$ROUTE" closed
run_load bare_open "http://127.0.0.1:$BARE_PORT$ROUTE" open
echo "{\"hwm_kb\": $(kb $BARE_PID VmHWM)}" >"$RES/bare_rss.json"
stop $BARE_PID

# The fast upstream of b, c, d (and the drain), on the server core too.
start upstream "$BARE" --listen "127.0.0.1:$UP_PORT"; UP_PID=$STARTED
wait_port $UP_PORT

# --- b. hookgate queue mode: a fresh database per point --------------------------
queue_hwm=0
for mode in closed open; do
    log "b. hookgate queue mode ($mode loop), fresh SQLite store"
    data="$WORK/queue-$mode"; mkdir -p "$data"
    HOOKGATE_STORE__PATH="$data/hookgate.db" start "queue_$mode" \
        "$HOOKGATE" run --config "$ROOT/bench/hookgate-queue.toml"
    QPID=$STARTED
    wait_port $QUEUE_PORT; wait_port $QUEUE_ADMIN
    run_load "queue_$mode" "http://127.0.0.1:$QUEUE_PORT$ROUTE" "$mode"
    admin_queues $QUEUE_ADMIN >"$RES/queue_${mode}_queues.json"
    h=$(kb $QPID VmHWM); [ "$h" -gt "$queue_hwm" ] && queue_hwm=$h
    echo "{\"hwm_kb\": $h, \"rss_kb\": $(kb $QPID VmRSS)}" >"$RES/queue_${mode}_rss.json"
    stop $QPID
done

# --- c. hookgate passthrough mode ----------------------------------------------------
log "c. hookgate passthrough mode"
start passthrough "$HOOKGATE" run --config "$ROOT/bench/hookgate-passthrough.toml"; PPID_=$STARTED
wait_port $PASS_PORT
run_load pass_closed "http://127.0.0.1:$PASS_PORT$ROUTE" closed
run_load pass_open "http://127.0.0.1:$PASS_PORT$ROUTE" open
echo "{\"hwm_kb\": $(kb $PPID_ VmHWM)}" >"$RES/pass_rss.json"
stop $PPID_

# --- d. nginx proxy_pass ---------------------------------------------------------------
log "d. nginx proxy_pass (keepalive upstream), 1 worker"
NGX="$WORK/nginx"; mkdir -p "$NGX"
start nginx "$NGINX" -p "$NGX/" -e "$NGX/error.log" -c "$ROOT/bench/nginx.conf" -g 'daemon off;'
NGINX_PID=$STARTED
wait_port $NGINX_PORT
run_load nginx_closed "http://127.0.0.1:$NGINX_PORT$ROUTE" closed
run_load nginx_open "http://127.0.0.1:$NGINX_PORT$ROUTE" open
worker=$(pgrep -P "$NGINX_PID" | head -n 1 || true)
echo "{\"hwm_kb\": $(kb "${worker:-0}" VmHWM), \"master_hwm_kb\": $(kb $NGINX_PID VmHWM)}" >"$RES/nginx_rss.json"
stop $NGINX_PID

# --- drain and backlog --------------------------------------------------------------------
log "drain: queueing $BACKLOG jobs behind a stalled upstream"
start stall "$BARE" --listen "127.0.0.1:$STALL_PORT" --delay-ms 3600000; STALL_PID=$STARTED
wait_port $STALL_PORT
data="$WORK/drain"; mkdir -p "$data"
HOOKGATE_STORE__PATH="$data/hookgate.db" start drain_fill \
    "$HOOKGATE" run --config "$ROOT/bench/hookgate-drain-fill.toml"
FPID=$STARTED
wait_port $QUEUE_PORT; wait_port $QUEUE_ADMIN
cat /proc/loadavg >"$RES/drain_fill.loadavg"
timeout "${FILL_TIMEOUT:-600}" taskset -c "$LOAD_CPU" "$LOADGEN" \
    --url "http://127.0.0.1:$QUEUE_PORT$ROUTE" --connections "$CONNS" \
    --requests "$BACKLOG" --duration 0 --label drain_fill --id-prefix "fill-$RANDOM" \
    >"$RES/drain_fill.json" 2>>"$WORK/loadgen.log" || log "fill run ended early (timeout?)"
tail -n 1 "$WORK/loadgen.log" >&2
admin_queues $QUEUE_ADMIN >"$RES/drain_before_queues.json"
sleep 1
echo "{\"rss_kb\": $(kb $FPID VmRSS), \"hwm_kb\": $(kb $FPID VmHWM), \"db_bytes\": $(du -sb "$data" | cut -f1)}" \
    >"$RES/backlog_rss.json"
log "backlog held: $(cat "$RES/drain_before_queues.json")"
stop $FPID
stop $STALL_PID

log "drain: restarting hookgate on the same database with the healthy upstream"
HOOKGATE_STORE__PATH="$data/hookgate.db" start drain \
    "$HOOKGATE" run --config "$ROOT/bench/hookgate-queue.toml"
DPID=$STARTED
cat /proc/loadavg >"$RES/drain.loadavg"
timeout "${DRAIN_TIMEOUT:-600}" taskset -c "$LOAD_CPU" "$LOADGEN" \
    --drain-watch "http://127.0.0.1:$QUEUE_ADMIN" --drain-timeout "${DRAIN_TIMEOUT:-600}" \
    >"$RES/drain.json" 2>>"$WORK/loadgen.log" || log "drain watch failed"
tail -n 1 "$WORK/loadgen.log" >&2
echo "{\"rss_kb\": $(kb $DPID VmRSS), \"hwm_kb\": $(kb $DPID VmHWM)}" >"$RES/drain_rss.json"
stop $DPID
stop $UP_PID

# --- report ---------------------------------------------------------------------------------
python3 "$ROOT/bench/report.py" "$RES" "$ROOT/bench" \
    "duration=$DURATION warmup=$WARMUP rate=$RATE conns=$CONNS backlog=$BACKLOG"
log "wrote bench/results.md and bench/results.json"
cat "$ROOT/bench/results.md"
