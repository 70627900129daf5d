#!/usr/bin/env bash
# bench/load.sh: hookgate's load benchmark, in one command.
#
#   bench/load.sh                      # defaults: DURATION=10 s per point
#   DURATION=5 BACKLOG=20000 OUT=/tmp/bench-out bench/load.sh    # quicker
#
# Environment knobs (all optional):
#   DURATION   seconds measured per load point              (10)
#   WARMUP     seconds of warm-up load before each point      (2)
#   RATE       open-loop rate, requests/s                 (10000)
#   CONNS      load generator connections                    (64)
#   BACKLOG    jobs queued for the drain/backlog measurement (1000000:
#              ~1-2 min to fill and ~2 min to drain here, ~1.5 GB of disk
#              under /tmp; BACKLOG=50000 for a quick run)
#   OUT        directory results.md and results.json are written to (bench,
#              i.e. the committed bench/results.*; relative to the repo root).
#              Point it elsewhere for trial runs: OUT=/tmp/bench-out
#   TARGET_DIR cargo target directory the release binaries are built in and
#              taken from (target; $CARGO_TARGET_DIR if set). Its release/
#              subdirectory is accepted too: TARGET_DIR=/work/tb/release
#   SKIP_BUILD=1   do not run cargo build (use the existing binaries)
#   STRACE_SECS    seconds the store threads are traced for the sync-call
#                  count (3); SKIP_STRACE=1 skips that pass
#   KEEP_WORK=1    keep the temp work dir (logs, stores, raw results)
#   OUTAGE_SECS    length of the outage point (60; half refused, half 503)
#   OUTAGE_RATE    open-loop rate during the outage, requests/s (1000)
#   ONLY=outage    run the outage point alone (the other figures are n/a)
#   ONLY=passthrough  run a (bare hyper), d (passthrough), e (nginx),
#                  e2 (bare hyper proxy), e3 (verifying proxy), d2
#                  (passthrough over HTTP/2) and r (the rounds) only
#   ROUNDS         alternating closed-loop rounds of d, e and e3 after the
#                  single points (5; 0 skips them), ROUND_SECS s each (4)
#   ONLY=sender    run s (sender mode, with its upstream) and, for its
#                  ratios, the closed-loop points of b (reference) and c
#                  (queue mode) only
#   SENDER_CHANNELS  webhook channels the sender point fans out to (5)
#
# What it does, in one run (~9 min with the defaults, plus the build):
#   build release binaries (hookgate, examples bare_hyper, durable_append,
#   loadgen), install nginx and strace if missing, then for each target:
#   start it, warm up, run loadgen at max load (closed loop, CONNS keep-alive
#   connections) and at a fixed RATE (open loop, latency from the intended
#   send time), record req/s, latency percentiles and peak RSS (VmHWM), stop
#   it:
#     a. bare_hyper                     the ceiling (no disk)
#     b. durable_append                 the durable-ack reference: verify,
#                                       dedup, append + group-commit fdatasync
#     b2. durable_append --forward      the same, also forwarding each acked
#                                       body to the upstream (closed loop):
#                                       the ceiling of c with forwarding live
#     c. hookgate queue mode            acks; forwards to a bare_hyper upstream
#     d. hookgate passthrough mode      in front of the bare_hyper upstream
#     e. nginx proxy_pass (keepalive)   in front of the same upstream
#     e2. bare_proxy                    hyper's server + client, nothing else
#     e3. bare_proxy --verify           e2 + reading each body whole and
#                                       checking its HMAC: the floor of a
#                                       verifying proxy on hyper
#     d2. hookgate passthrough, HTTP/2  d with upstream.protocol = "http2"
#                                       to bare_hyper --h2c (h2c)
#     r. d, e and e3 in alternating     ROUNDS closed-loop rounds of each in
#        rounds                         turn: the median of the rounds'
#                                       ratios, less at the mercy of one stall
#     s. hookgate sender mode           analyses accepted with a 5-channel
#                                       fan-out (closed loop only): seed 000
#                                       analyses POSTed to /v1/analyses with
#                                       a bearer API key; each 202 wrote the
#                                       analysis and its 5 deliveries (one
#                                       per `webhook` channel, all to the
#                                       same upstream) in one transaction
#   then
#     f. the store's sync calls: strace on hookgate's store threads for
#        STRACE_SECS during a closed-loop queue-mode load;
#     g. the backlog and the drain: BACKLOG jobs are queued while the upstream
#        stalls, hookgate is restarted on the same store with a healthy
#        upstream, and the delivery rate is timed until /admin/queues shows
#        nothing pending; RSS is taken with the backlog held and after the
#        drain;
#     h. an outage: hookgate queue mode under OUTAGE_RATE webhooks/s while
#        its upstream refuses connections (first half of OUTAGE_SECS), then
#        answers 503 (second half), then recovers: upstream attempts during
#        the outage, bytes written per acked webhook during it (against the
#        same rate with a healthy upstream just before), events lost (acked,
#        not delivered) and dead-lettered, and the time to drain (which
#        includes waiting for the next probe, <= probe_max_interval).
#   Disk I/O per webhook: for the reference and hookgate (closed loop, fill,
#   drain) /proc/<pid>/io is read before and after the measured window, and
#   /proc/<pid>/task/<tid>/io of the store threads (name prefix
#   `hookgate-store`; `durable-writer` for the reference) too.
#   Results: $OUT/results.md (overwritten) and $OUT/results.json (raw and
#   derived figures).
#
# The bench relies on hookgate only through `hookgate run --config` and the
# JSON of `GET /admin/queues`: the configs leave the store at its defaults
# and every hookgate runs in its own fresh working directory (the drain
# restarts in the fill's), so the store can change underneath.
#
# CPU placement: every server under test AND its upstream run on core 0
# (`taskset -c 0`), the load generator alone on core 1 (`taskset -c 1`). So
# "passthrough" and "nginx" are each measured as proxy + upstream sharing
# one core, and queue mode as receiver + store + forwarder + upstream on one
# core; the reference has its writer thread on that core too.
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
STRACE_SECS=${STRACE_SECS:-3}
OUT=${OUT:-bench}
OUTAGE_SECS=${OUTAGE_SECS:-60}
OUTAGE_RATE=${OUTAGE_RATE:-1000}
ONLY=${ONLY:-all}
ROUNDS=${ROUNDS:-5}
ROUND_SECS=${ROUND_SECS:-4}
# want POINT: whether this run includes that group of points.
want() { [ "$ONLY" = all ] || [ "$ONLY" = "$1" ]; }
# The loops of b and c: ONLY=sender runs their closed loops only (the
# sender point's ratios).
BC_MODES="closed open"
if [ "$ONLY" = sender ]; then BC_MODES=closed; fi
SERVER_CPU=0
LOAD_CPU=1

TARGET_DIR=${TARGET_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}}
if [ "$(basename "$TARGET_DIR")" = release ]; then
    TARGET_DIR=$(dirname "$TARGET_DIR")
fi
REL="$TARGET_DIR/release"
HOOKGATE="$REL/hookgate"
BARE="$REL/examples/bare_hyper"
BPROXY="$REL/examples/bare_proxy"
REF="$REL/examples/durable_append"
LOADGEN="$REL/examples/loadgen"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

UP_PORT=18002      # the fast upstream (bare_hyper) of hookgate and nginx
STALL_PORT=18003   # the stalled upstream used to build a backlog
OUTAGE_PORT=18005  # the upstream of the outage point
BARE_PORT=18001
REF_PORT=18004
QUEUE_PORT=18080; QUEUE_ADMIN=19080
PASS_PORT=18081; PASS_ADMIN=19081  # bench/hookgate-passthrough.toml
PASS_H2C_PORT=18086                # bench/hookgate-passthrough-h2c.toml
H2C_UP_PORT=18006                  # its upstream, bare_hyper --h2c
NGINX_PORT=18082
BPROXY_PORT=18083
SENDER_ADMIN=19083  # the sender's /v1/ API (bench/hookgate-sender.toml)
SENDER_CHANNELS=${SENDER_CHANNELS:-5}
# The bench API key of bench/hookgate-sender.toml (loopback only).
SENDER_AUTH="Authorization: Bearer ss_secret_bench_0123456789abcdef"
ROUTE=/hooks/sigsentry
STORE_THREADS=hookgate-store   # name prefix of hookgate's store threads
REF_THREADS=durable-writer     # the reference's writer thread

# The bench configs are complete: no HOOKGATE_* override from the caller.
for v in "${!HOOKGATE_@}"; do unset "$v"; done
export SIGSENTRY_SECRET="bench-secret-0123456789"
WORK=$(mktemp -d /tmp/hookgate-bench.XXXXXX)
RES="$WORK/results"
mkdir -p "$RES"

log() { printf '[load.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Every port must be free: a server left over from an earlier run (or a
# trial by hand) would answer in place of the one started here, with
# another build or unpinned, and the run would measure it without a word.
for p in $UP_PORT $STALL_PORT $OUTAGE_PORT $BARE_PORT $REF_PORT $QUEUE_PORT $QUEUE_ADMIN \
    $PASS_PORT $PASS_ADMIN $PASS_H2C_PORT $H2C_UP_PORT $NGINX_PORT $BPROXY_PORT $SENDER_ADMIN; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        log "port $p is in use (a server left over from an earlier run?): stop it, then run again"
        exit 1
    fi
done

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

# start NAME CMD...: runs CMD pinned to the server core, in the working
# directory $WORK/NAME (created), logging to $WORK/NAME.log; the pid is left
# in $STARTED. DIR=path overrides the working directory.
start() {
    local name=$1; shift
    local dir=${DIR:-$WORK/$name}
    mkdir -p "$dir"
    (cd "$dir" && exec taskset -c "$SERVER_CPU" "$@") >"$WORK/$name.log" 2>&1 &
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

admin_queues() { curl -s --max-time 5 "http://127.0.0.1:$1/admin/queues" || echo '{}'; }

# --- disk I/O accounting -------------------------------------------------------
# io_json FILE...: the sum of /proc io files as one JSON object (zeros when
# no file is given; %.0f because the byte counts overflow awk's %d).
io_json() {
    awk -F': *' '{ s[$1] += $2 }
        END {
            n = split("rchar wchar syscr syscw read_bytes write_bytes cancelled_write_bytes", k, " ")
            printf "{"
            for (i = 1; i <= n; i++) printf "%s\"%s\": %.0f", (i > 1 ? ", " : ""), k[i], s[k[i]]
            printf "}"
        }' /dev/null "$@" 2>/dev/null
}

# thread_ids PID PREFIX: the ids of PID's threads whose name starts with PREFIX.
thread_ids() {
    local t comm
    for t in /proc/"$1"/task/*; do
        comm=$(cat "$t/comm" 2>/dev/null) || continue
        if [[ $comm == "$2"* ]]; then echo "${t##*/}"; fi
    done
}

# io_snap PID PREFIX: /proc/PID/io, and the sum over the threads named
# PREFIX*, as JSON. A thread that exits inside a window drops out of the
# thread sum (the process counters keep its share).
io_snap() {
    local pid=$1 prefix=$2 files=() tid
    for tid in $(thread_ids "$pid" "$prefix"); do files+=("/proc/$pid/task/$tid/io"); done
    printf '{"t": %s, "process": %s, "threads": %s, "thread_prefix": "%s", "thread_count": %d}\n' \
        "$(date +%s.%N)" "$(io_json "/proc/$pid/io")" "$(io_json "${files[@]}")" \
        "$prefix" "${#files[@]}"
}

# mark NAME PHASE PID PREFIX [ADMIN_PORT [METRICS_PORT]]: the I/O counters
# (and the queues) at one edge of a measured window, into
# $RES/NAME_{io,queues}_PHASE.json, and the commit-duration histogram
# (cumulative since start) of METRICS_PORT (default: ADMIN_PORT; `-` for
# ADMIN_PORT: no queues, as for the reference) into $RES/NAME_metrics_PHASE.txt.
mark() {
    local name=$1 phase=$2 pid=$3 prefix=$4 admin=${5:-}
    local metrics=${6:-$admin}
    io_snap "$pid" "$prefix" >"$RES/${name}_io_$phase.json"
    if [ -n "$admin" ] && [ "$admin" != - ]; then
        admin_queues "$admin" >"$RES/${name}_queues_$phase.json"
    fi
    if [ -n "$metrics" ] && [ "$metrics" != - ]; then
        curl -s --max-time 5 "http://127.0.0.1:$metrics/metrics" >"$RES/${name}_metrics_$phase.txt" || true
    fi
}

# --- load ----------------------------------------------------------------------------
# Extra loadgen arguments of every run while set (the sender point's
# --analysis and API key header); empty for the webhook points.
LG_EXTRA=()
# loadgen_run LABEL URL RATE DURATION: one loadgen run, its JSON on stdout.
loadgen_run() {
    local label=$1 url=$2 rate=$3 duration=$4
    timeout $((duration + 60)) taskset -c "$LOAD_CPU" "$LOADGEN" \
        --url "$url" --connections "$CONNS" --duration "$duration" --warmup 0 \
        --rate "$rate" --label "$label" --id-prefix "$label-$RANDOM" \
        ${LG_EXTRA[@]+"${LG_EXTRA[@]}"} \
        2>>"$WORK/loadgen.log"
    tail -n 1 "$WORK/loadgen.log" >&2
}

# run_load NAME URL MODE [PID PREFIX [ADMIN_PORT [METRICS_PORT]]]: MODE is
# "closed" or "open"; JSON to $RES/NAME.json. The warm-up is a separate
# loadgen run, so that with a PID the I/O counters (see mark) frame the
# measured run alone.
run_load() {
    local name=$1 url=$2 mode=$3 pid=${4:-} prefix=${5:-} admin=${6:-} metrics=${7:-}
    local rate=0
    [ "$mode" = open ] && rate=$RATE
    cat /proc/loadavg >"$RES/$name.loadavg"
    if [ "$WARMUP" != 0 ]; then
        loadgen_run "$name-warmup" "$url" "$rate" "$WARMUP" >/dev/null
    fi
    if [ -n "$pid" ]; then mark "$name" before "$pid" "$prefix" "$admin" "$metrics"; fi
    loadgen_run "$name" "$url" "$rate" "$DURATION" >"$RES/$name.json"
    if [ -n "$pid" ]; then mark "$name" after "$pid" "$prefix" "$admin" "$metrics"; fi
}

# --- build and tools ----------------------------------------------------------
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building release binaries (cargo build --release --examples --bin hookgate) in $TARGET_DIR"
    CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --examples --bin hookgate
fi
for b in "$HOOKGATE" "$BARE" "$BPROXY" "$REF" "$LOADGEN"; do
    [ -x "$b" ] || { log "missing $b"; exit 1; }
done
export DEBIAN_FRONTEND=noninteractive
if ! command -v nginx >/dev/null; then
    log "installing nginx"
    apt-get install -y nginx-light >/dev/null 2>&1 \
        || { apt-get update >/dev/null && apt-get install -y nginx-light >/dev/null 2>&1; } \
        || apt-get install -y nginx >/dev/null
fi
NGINX=$(command -v nginx)
if [ "${SKIP_STRACE:-0}" != 1 ] && ! command -v strace >/dev/null; then
    log "installing strace"
    { apt-get update >/dev/null && apt-get install -y strace >/dev/null; } \
        || log "cannot install strace: the sync-call pass is skipped"
fi

if want passthrough; then
# --- a. bare_hyper: the ceiling ---------------------------------------------------
log "a. bare_hyper (ceiling) on core $SERVER_CPU"
start bare "$BARE" --listen "127.0.0.1:$BARE_PORT"; BARE_PID=$STARTED
wait_port $BARE_PORT
run_load bare_closed "http://127.0.0.1:$BARE_PORT$ROUTE" closed
run_load bare_open "http://127.0.0.1:$BARE_PORT$ROUTE" open
echo "{\"hwm_kb\": $(kb $BARE_PID VmHWM)}" >"$RES/bare_rss.json"
stop $BARE_PID
fi

if [ "$ONLY" = all ] || [ "$ONLY" = sender ]; then
# --- b. durable_append: the durable-ack reference, a fresh file per point ------
for mode in $BC_MODES; do
    log "b. durable_append reference ($mode loop), fresh file"
    start "ref_$mode" "$REF" --listen "127.0.0.1:$REF_PORT" --file append.log
    RPID=$STARTED
    wait_port $REF_PORT
    # Its commit histogram (GET /metrics on its own port): the commit p99
    # of the least durable ack, beside hookgate's.
    run_load "ref_$mode" "http://127.0.0.1:$REF_PORT$ROUTE" "$mode" $RPID $REF_THREADS - $REF_PORT
    echo "{\"hwm_kb\": $(kb $RPID VmHWM), \"rss_kb\": $(kb $RPID VmRSS)}" >"$RES/ref_${mode}_rss.json"
    stop $RPID
done

fi

if want passthrough || want sender; then
# The fast upstream of c, d, e, f, s (and the drain), on the server core too.
start upstream "$BARE" --listen "127.0.0.1:$UP_PORT"; UP_PID=$STARTED
wait_port $UP_PORT
fi

if [ "$ONLY" = all ]; then
# --- b2. the reference forwarding what it acks: queue mode's ceiling -----------------
# The same reference, plus one POST of each acknowledged body to the upstream
# (keep-alive pool, 64 at a time, no retry, no record): the least an ack-then-
# forward server does, with the upstream on the same core as queue mode's.
log "b2. durable_append reference forwarding to the upstream (closed, then open loop), fresh file"
start ref_fwd "$REF" --listen "127.0.0.1:$REF_PORT" --file append.log \
    --forward "http://127.0.0.1:$UP_PORT$ROUTE"
RPID=$STARTED
wait_port $REF_PORT
run_load ref_fwd_closed "http://127.0.0.1:$REF_PORT$ROUTE" closed $RPID $REF_THREADS
sleep 1
curl -fsS "http://127.0.0.1:$REF_PORT/stats" >"$RES/ref_fwd_stats.json" 2>/dev/null \
    || echo '{}' >"$RES/ref_fwd_stats.json"
# Its ack latency at the fixed rate: the floor of queue mode's ack p99 when
# acking and forwarding share the core.
run_load ref_fwd_open "http://127.0.0.1:$REF_PORT$ROUTE" open $RPID $REF_THREADS
stop $RPID
fi

if [ "$ONLY" = all ] || [ "$ONLY" = sender ]; then
# --- c. hookgate queue mode: a fresh store per point ---------------------------------
for mode in $BC_MODES; do
    log "c. hookgate queue mode ($mode loop), fresh store"
    start "queue_$mode" "$HOOKGATE" run --config "$ROOT/bench/hookgate-queue.toml"
    QPID=$STARTED
    wait_port $QUEUE_PORT; wait_port $QUEUE_ADMIN
    run_load "queue_$mode" "http://127.0.0.1:$QUEUE_PORT$ROUTE" "$mode" \
        $QPID $STORE_THREADS $QUEUE_ADMIN
    echo "{\"hwm_kb\": $(kb $QPID VmHWM), \"rss_kb\": $(kb $QPID VmRSS)}" >"$RES/queue_${mode}_rss.json"
    stop $QPID
done
fi

if want sender; then
# --- s. hookgate sender mode: analyses accepted with a 5-channel fan-out --------------
# Pinned like c (hookgate and the upstream on the server core): a fresh
# store, SENDER_CHANNELS `webhook` channels (threshold low) created through
# the API, all pointing at the same bare_hyper upstream as c, then a
# closed-loop load of seed 000 analyses (severity high, unique analysisId)
# on POST /v1/analyses. Every 202 wrote the analysis and one delivery per
# channel in one durable transaction; hookgate delivers them meanwhile
# (4 attempts at once per channel, the shipped default).
log "s. hookgate sender mode: analyses with a $SENDER_CHANNELS-channel fan-out (closed loop), fresh store"
start sender "$HOOKGATE" run --config "$ROOT/bench/hookgate-sender.toml"; SND_PID=$STARTED
wait_port $SENDER_ADMIN
created=0
for n in $(seq "$SENDER_CHANNELS"); do
    code=$(curl -s -o "$WORK/sender_channel_$n.json" -w '%{http_code}' --max-time 5 \
        -H "$SENDER_AUTH" -H 'Content-Type: application/json' \
        -d "{\"type\":\"webhook\",\"name\":\"bench-$n\",\"severityThreshold\":\"low\",\"credentials\":{\"url\":\"http://127.0.0.1:$UP_PORT/webhooks/sigsentry\"}}" \
        "http://127.0.0.1:$SENDER_ADMIN/v1/config/notifications") || code=000
    if [ "$code" = 201 ]; then
        created=$((created + 1))
    else
        log "s. channel $n: HTTP $code $(cat "$WORK/sender_channel_$n.json" 2>/dev/null)"
    fi
done
echo "{\"channels_requested\": $SENDER_CHANNELS, \"channels_created\": $created}" >"$RES/sender_setup.json"
if [ "$created" = "$SENDER_CHANNELS" ]; then
    LG_EXTRA=(--analysis --header "$SENDER_AUTH")
    run_load sender_closed "http://127.0.0.1:$SENDER_ADMIN/v1/analyses" closed \
        $SND_PID $STORE_THREADS $SENDER_ADMIN
    LG_EXTRA=()
    echo "{\"hwm_kb\": $(kb $SND_PID VmHWM), \"rss_kb\": $(kb $SND_PID VmRSS)}" >"$RES/sender_closed_rss.json"
else
    log "s. only $created of $SENDER_CHANNELS channels created: sender point skipped"
fi
stop $SND_PID
if [ "$ONLY" = sender ]; then stop $UP_PID; fi
fi

if want passthrough; then
# The servers of d, e and e3, started under NAME (points d, e, e3 and r).
start_pass() { start "$1" "$HOOKGATE" run --config "$ROOT/bench/hookgate-passthrough.toml"; }
start_nginx() {
    start "$1" "$NGINX" -p "$WORK/nginx/" -e "$WORK/nginx/error.log" \
        -c "$ROOT/bench/nginx.conf" -g 'daemon off;'
}
start_vproxy() {
    start "$1" "$BPROXY" --listen "127.0.0.1:$BPROXY_PORT" --upstream "127.0.0.1:$UP_PORT" --verify
}

# --- d. hookgate passthrough mode ----------------------------------------------------
log "d. hookgate passthrough mode"
start_pass passthrough; PPID_=$STARTED
wait_port $PASS_PORT
run_load pass_closed "http://127.0.0.1:$PASS_PORT$ROUTE" closed
run_load pass_open "http://127.0.0.1:$PASS_PORT$ROUTE" open
echo "{\"hwm_kb\": $(kb $PPID_ VmHWM)}" >"$RES/pass_rss.json"
stop $PPID_

# --- e. nginx proxy_pass ---------------------------------------------------------------
log "e. nginx proxy_pass (keepalive upstream), 1 worker"
start_nginx nginx
NGINX_PID=$STARTED
wait_port $NGINX_PORT
run_load nginx_closed "http://127.0.0.1:$NGINX_PORT$ROUTE" closed
run_load nginx_open "http://127.0.0.1:$NGINX_PORT$ROUTE" open
worker=$(pgrep -P "$NGINX_PID" | head -n 1 || true)
echo "{\"hwm_kb\": $(kb "${worker:-0}" VmHWM), \"master_hwm_kb\": $(kb $NGINX_PID VmHWM)}" >"$RES/nginx_rss.json"
stop $NGINX_PID

# --- e2. the floor of a hyper proxy ----------------------------------------------------
# hyper's server and client and nothing else (examples/bare_proxy.rs): how
# much of the distance between d and e is hyper's own.
log "e2. bare hyper proxy (hyper server + client, nothing else)"
start bproxy "$BPROXY" --listen "127.0.0.1:$BPROXY_PORT" --upstream "127.0.0.1:$UP_PORT"
BPROXY_PID=$STARTED
wait_port $BPROXY_PORT
run_load bproxy_closed "http://127.0.0.1:$BPROXY_PORT$ROUTE" closed
run_load bproxy_open "http://127.0.0.1:$BPROXY_PORT$ROUTE" open
echo "{\"hwm_kb\": $(kb $BPROXY_PID VmHWM)}" >"$RES/bproxy_rss.json"
stop $BPROXY_PID

# --- e3. the floor of a verifying proxy on hyper --------------------------------------
# e2 plus the one piece of work a verifying proxy cannot skip: each body read
# whole and its SigSentry HMAC checked before it is forwarded. What lies
# between e3 and d is hookgate's own (routing, header rewriting, timeouts,
# pool, metrics).
log "e3. verifying hyper proxy (e2 + HMAC over each body)"
start_vproxy vproxy
VPROXY_PID=$STARTED
wait_port $BPROXY_PORT
run_load vproxy_closed "http://127.0.0.1:$BPROXY_PORT$ROUTE" closed
run_load vproxy_open "http://127.0.0.1:$BPROXY_PORT$ROUTE" open
echo "{\"hwm_kb\": $(kb $VPROXY_PID VmHWM)}" >"$RES/vproxy_rss.json"
stop $VPROXY_PID

# --- d2. passthrough over HTTP/2 (h2c) to the upstream ----------------------------------
# The same route with `upstream.protocol = "http2"`, to bare_hyper speaking
# h2c (also on core 0): every request a stream on one connection.
log "d2. hookgate passthrough, HTTP/2 (h2c) to a bare_hyper --h2c upstream"
start up_h2c "$BARE" --listen "127.0.0.1:$H2C_UP_PORT" --h2c; H2C_UP_PID=$STARTED
wait_port $H2C_UP_PORT
start passh2 "$HOOKGATE" run --config "$ROOT/bench/hookgate-passthrough-h2c.toml"; PH2_PID=$STARTED
wait_port $PASS_H2C_PORT
run_load passh2_closed "http://127.0.0.1:$PASS_H2C_PORT$ROUTE" closed
run_load passh2_open "http://127.0.0.1:$PASS_H2C_PORT$ROUTE" open
echo "{\"hwm_kb\": $(kb $PH2_PID VmHWM)}" >"$RES/passh2_rss.json"
stop $PH2_PID
stop $H2C_UP_PID

# --- r. d, e and e3 again, in alternating rounds ----------------------------------------------
# d and e above are one closed-loop point each, half a minute apart: on a
# shared host their ratio says as much about which of them the host's
# stalls fell on as about the servers (nginx alone ran 28-44k req/s in
# runs minutes apart on 2026-12-02). Here the three run ROUNDS times in
# turn, ROUND_SECS each after a 1 s warm-up, each round starting with the
# next of them; report.py gives each round's ratios and their median.
if [ "$ROUNDS" -gt 0 ]; then
log "r. passthrough, nginx and the verifying hyper proxy in $ROUNDS alternating rounds of ${ROUND_SECS}s"
ROUND_ORDER=(pass nginx vproxy)
for r in $(seq "$ROUNDS"); do
    for i in 0 1 2; do
        who=${ROUND_ORDER[$(( (r - 1 + i) % 3 ))]}
        "start_$who" "round${r}_$who"
        case $who in
            pass) port=$PASS_PORT ;;
            nginx) port=$NGINX_PORT ;;
            vproxy) port=$BPROXY_PORT ;;
        esac
        RPID=$STARTED
        wait_port $port
        loadgen_run "round${r}_$who-warmup" "http://127.0.0.1:$port$ROUTE" 0 1 >/dev/null
        loadgen_run "round${r}_$who" "http://127.0.0.1:$port$ROUTE" 0 "$ROUND_SECS" \
            >"$RES/round${r}_$who.json"
        stop $RPID
    done
done
fi
[ "$ONLY" = passthrough ] && stop $UP_PID
fi

if [ "$ONLY" = all ]; then
# --- f. the store's write and sync calls under strace ------------------------------------
# strace attaches to the store threads only (-p per thread; no -f, which
# would attach every thread of the process, socket writes included). It
# stops those threads at every syscall, so they run slower and batch more
# than untraced: the calls per webhook are the figure, not the rate.
if [ "${SKIP_STRACE:-0}" != 1 ] && command -v strace >/dev/null; then
    log "f. hookgate queue mode, closed loop: strace on the store threads for ${STRACE_SECS}s"
    start queue_strace "$HOOKGATE" run --config "$ROOT/bench/hookgate-queue.toml"
    SPID=$STARTED
    wait_port $QUEUE_PORT; wait_port $QUEUE_ADMIN
    (exec timeout $((STRACE_SECS + WARMUP + 60)) taskset -c "$LOAD_CPU" "$LOADGEN" \
        --url "http://127.0.0.1:$QUEUE_PORT$ROUTE" --connections "$CONNS" \
        --duration $((STRACE_SECS + WARMUP + 2)) --label strace_load --id-prefix "strace-$RANDOM") \
        >"$RES/strace_load.json" 2>>"$WORK/loadgen.log" &
    LG_PID=$!
    PIDS+=("$LG_PID")
    sleep $((WARMUP + 1))
    tids=$(thread_ids $SPID $STORE_THREADS)
    if [ -n "$tids" ]; then
        echo "$tids" | tr '\n' ' ' >"$RES/strace.tids"
        mark strace before $SPID $STORE_THREADS $QUEUE_ADMIN
        # SIGINT makes strace detach and write its -c summary.
        # shellcheck disable=SC2046 # one -p per thread id
        timeout -s INT "$STRACE_SECS" strace -c -o "$RES/strace.txt" \
            -e trace=fsync,fdatasync,sync_file_range,write,pwrite64,writev,pwritev,pwritev2 \
            $(printf -- '-p %s ' $tids) 2>>"$WORK/strace.log" || true
        mark strace after $SPID $STORE_THREADS $QUEUE_ADMIN
    else
        log "no thread named $STORE_THREADS* in hookgate: strace pass skipped"
    fi
    wait "$LG_PID" || log "strace-pass load ended early"
    tail -n 1 "$WORK/loadgen.log" >&2
    stop $SPID
fi

# --- g. backlog and drain --------------------------------------------------------------------
log "g. drain: queueing $BACKLOG jobs behind a stalled upstream"
start stall "$BARE" --listen "127.0.0.1:$STALL_PORT" --delay-ms 3600000; STALL_PID=$STARTED
wait_port $STALL_PORT
DATA="$WORK/drain"   # the fill's store, then the drain's
DIR=$DATA start drain_fill "$HOOKGATE" run --config "$ROOT/bench/hookgate-drain-fill.toml"
FPID=$STARTED
wait_port $QUEUE_PORT; wait_port $QUEUE_ADMIN
cat /proc/loadavg >"$RES/drain_fill.loadavg"
mark drain_fill before $FPID $STORE_THREADS
timeout "${FILL_TIMEOUT:-600}" taskset -c "$LOAD_CPU" "$LOADGEN" \
    --url "http://127.0.0.1:$QUEUE_PORT$ROUTE" --connections "$CONNS" \
    --requests "$BACKLOG" --duration 0 --label drain_fill --id-prefix "fill-$RANDOM" \
    >"$RES/drain_fill.json" 2>>"$WORK/loadgen.log" || log "fill run ended early (timeout?)"
tail -n 1 "$WORK/loadgen.log" >&2
admin_queues $QUEUE_ADMIN >"$RES/drain_before_queues.json"
curl -s --max-time 5 "http://127.0.0.1:$QUEUE_ADMIN/metrics" >"$RES/drain_fill_metrics_after.txt" || true
# One idle second before the "after" edge: the store's deferred writes
# (checkpoints) of the fill land in the window.
sleep 1
mark drain_fill after $FPID $STORE_THREADS
echo "{\"rss_kb\": $(kb $FPID VmRSS), \"hwm_kb\": $(kb $FPID VmHWM), \"db_bytes\": $(du -sb "$DATA" | cut -f1)}" \
    >"$RES/backlog_rss.json"
log "backlog held: $(cat "$RES/drain_before_queues.json")"
stop $FPID
stop $STALL_PID

log "g. drain: restarting hookgate on the same store with the healthy upstream"
DIR=$DATA start drain "$HOOKGATE" run --config "$ROOT/bench/hookgate-queue.toml"
DPID=$STARTED
# The window starts with the process (its counters start at zero): it
# includes hookgate opening and recovering the backlog store.
mark drain before $DPID $STORE_THREADS
cat /proc/loadavg >"$RES/drain.loadavg"
timeout "${DRAIN_TIMEOUT:-600}" taskset -c "$LOAD_CPU" "$LOADGEN" \
    --drain-watch "http://127.0.0.1:$QUEUE_ADMIN" --drain-timeout "${DRAIN_TIMEOUT:-600}" \
    >"$RES/drain.json" 2>>"$WORK/loadgen.log" || log "drain watch failed"
tail -n 1 "$WORK/loadgen.log" >&2
sleep 1
mark drain after $DPID $STORE_THREADS $QUEUE_ADMIN
echo "{\"rss_kb\": $(kb $DPID VmRSS), \"hwm_kb\": $(kb $DPID VmHWM)}" >"$RES/drain_rss.json"
stop $DPID
stop $UP_PID

fi

# --- h. an outage ------------------------------------------------------------------------------
if [ "$ONLY" = all ] || [ "$ONLY" = outage ]; then
    half=$((OUTAGE_SECS / 2))
    log "h. outage: $OUTAGE_RATE webhooks/s for ${OUTAGE_SECS}s, upstream refusing then 503, then healthy"
    start outage "$HOOKGATE" run --config "$ROOT/bench/hookgate-outage.toml"; OPID=$STARTED
    wait_port $QUEUE_PORT; wait_port $QUEUE_ADMIN
    # The same rate with a healthy upstream first: the bytes per webhook
    # to compare the outage's with.
    start outage_healthy "$BARE" --listen "127.0.0.1:$OUTAGE_PORT"; H_PID=$STARTED
    wait_port $OUTAGE_PORT
    mark outage_healthy before $OPID $STORE_THREADS $QUEUE_ADMIN
    timeout $((half + 60)) taskset -c "$LOAD_CPU" "$LOADGEN" \
        --url "http://127.0.0.1:$QUEUE_PORT$ROUTE" --connections "$CONNS" \
        --duration "$half" --warmup 0 --rate "$OUTAGE_RATE" --label outage_healthy \
        --id-prefix "healthy-$RANDOM" >"$RES/outage_healthy.json" 2>>"$WORK/loadgen.log" \
        || log "healthy load ended early"
    sleep 1
    mark outage_healthy after $OPID $STORE_THREADS $QUEUE_ADMIN
    stop $H_PID
    mark outage before $OPID $STORE_THREADS $QUEUE_ADMIN
    (exec timeout $((OUTAGE_SECS + 60)) taskset -c "$LOAD_CPU" "$LOADGEN" \
        --url "http://127.0.0.1:$QUEUE_PORT$ROUTE" --connections "$CONNS" \
        --duration "$OUTAGE_SECS" --warmup 0 --rate "$OUTAGE_RATE" --label outage \
        --id-prefix "outage-$RANDOM") >"$RES/outage.json" 2>>"$WORK/loadgen.log" &
    LG_PID=$!
    PIDS+=("$LG_PID")
    sleep "$half"
    start outage_503 "$BARE" --listen "127.0.0.1:$OUTAGE_PORT" --status 503; F_PID=$STARTED
    wait "$LG_PID" || log "outage load ended early"
    tail -n 1 "$WORK/loadgen.log" >&2
    sleep 1
    mark outage after $OPID $STORE_THREADS $QUEUE_ADMIN
    stop $F_PID
    start outage_up "$BARE" --listen "127.0.0.1:$OUTAGE_PORT"; R_PID=$STARTED
    wait_port $OUTAGE_PORT
    timeout 600 taskset -c "$LOAD_CPU" "$LOADGEN" \
        --drain-watch "http://127.0.0.1:$QUEUE_ADMIN" --drain-timeout 600 \
        >"$RES/outage_drain.json" 2>>"$WORK/loadgen.log" || log "outage drain watch failed"
    tail -n 1 "$WORK/loadgen.log" >&2
    mark outage drained $OPID $STORE_THREADS $QUEUE_ADMIN
    echo "{\"hwm_kb\": $(kb $OPID VmHWM), \"rss_kb\": $(kb $OPID VmRSS)}" >"$RES/outage_rss.json"
    stop $OPID
    stop $R_PID
fi

# --- report ---------------------------------------------------------------------------------
python3 "$ROOT/bench/report.py" "$RES" "$OUT" \
    "duration=$DURATION warmup=$WARMUP rate=$RATE conns=$CONNS backlog=$BACKLOG strace_secs=$STRACE_SECS outage_secs=$OUTAGE_SECS outage_rate=$OUTAGE_RATE only=$ONLY"
log "wrote $OUT/results.md and $OUT/results.json"
cat "$OUT/results.md"
