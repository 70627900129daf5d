#!/usr/bin/env bash
# bench/ab-passthrough.sh: passthrough builds side by side, in alternating
# rounds, with nginx and the bare hyper proxy, reporting throughput and the
# CPU time each server spends per request (user and system, from
# /proc/<pid>/stat). CPU time per request moves less with a noisy host than
# throughput does, and splits what the program does (user) from what the
# kernel does for it (system).
#
#   bash bench/ab-passthrough.sh [ROUNDS] [SECONDS] NAME=BINARY ...
#   bash bench/ab-passthrough.sh 3 5 old=/tmp/hookgate-old new=target/release/hookgate ng=nginx bp=bp
#
# BINARY is a hookgate binary (run with bench/hookgate-passthrough.toml),
# `h2c:` and a hookgate binary (bench/hookgate-passthrough-h2c.toml: HTTP/2
# without TLS to a `bare_hyper --h2c` upstream on 127.0.0.1:18006, also on
# core 0), `nginx` (bench/nginx.conf), `bp` (examples/bare_proxy) or `vp`
# (examples/bare_proxy --verify, the floor of a verifying proxy). Each server and
# the bare_hyper upstream are pinned to core 0, the load generator
# (64 connections, closed loop, 1 s warm-up then SECONDS measured) to core 1.
# Needs the release examples (cargo build --release --examples) and nginx.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REL=${TARGET_DIR:-$ROOT/target/release}
ROUNDS=${1:-3}; SECS=${2:-5}; shift 2 || true
[ $# -gt 0 ] || { echo "usage: $0 ROUNDS SECONDS NAME=BINARY..." >&2; exit 2; }
export SIGSENTRY_SECRET=bench-secret-0123456789
WORK=$(mktemp -d); mkdir -p "$WORK/nginx"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
command -v nginx >/dev/null || apt-get install -y nginx-light >/dev/null

# A server left over on one of the ports would answer in place of ours.
for p in 18002 18006 18081 18082 18083 18086; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        echo "port $p is in use (a server left over from an earlier run?): stop it first" >&2
        exit 1
    fi
done
taskset -c 0 "$REL/examples/bare_hyper" --listen 127.0.0.1:18002 >/dev/null 2>&1 &
taskset -c 0 "$REL/examples/bare_hyper" --listen 127.0.0.1:18006 --h2c >/dev/null 2>&1 &
sleep 0.3
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; }
cpu() { awk '{print $14, $15}' "/proc/$1/stat"; }

for r in $(seq "$ROUNDS"); do
    for named in "$@"; do
        name=${named%%=*}; bin=${named#*=}
        case $bin in
            nginx) taskset -c 0 nginx -p "$WORK/nginx/" -e "$WORK/nginx/error.log" \
                       -c "$ROOT/bench/nginx.conf" -g 'daemon off;' >/dev/null 2>&1 & port=18082 ;;
            bp) taskset -c 0 "$REL/examples/bare_proxy" --listen 127.0.0.1:18083 \
                    --upstream 127.0.0.1:18002 >/dev/null 2>&1 & port=18083 ;;
            vp) taskset -c 0 "$REL/examples/bare_proxy" --listen 127.0.0.1:18083 \
                    --upstream 127.0.0.1:18002 --verify >/dev/null 2>&1 & port=18083 ;;
            h2c:*) taskset -c 0 "${bin#h2c:}" run --config "$ROOT/bench/hookgate-passthrough-h2c.toml" \
                       >/dev/null 2>&1 & port=18086 ;;
            *) taskset -c 0 "$bin" run --config "$ROOT/bench/hookgate-passthrough.toml" >/dev/null 2>&1 &
               port=18081 ;;
        esac
        pid=$!
        wait_port $port
        # nginx serves from its worker process.
        worker=$pid
        if [ "$bin" = nginx ]; then worker=$(pgrep -P "$pid" | head -n 1); fi
        load() {
            taskset -c 1 "$REL/examples/loadgen" --url "http://127.0.0.1:$port/hooks/sigsentry" \
                --connections 64 --duration "$1" --warmup 0 2>/dev/null | tail -n 1
        }
        load 1 >/dev/null
        before=$(cpu "$worker")
        out=$(load "$SECS")
        after=$(cpu "$worker")
        python3 - "$r" "$name" "$before" "$after" "$(getconf CLK_TCK)" "$out" <<'PY'
import json, sys
r, name, before, after, hz, out = sys.argv[1:]
d = json.loads(out)
(u0, s0), (u1, s1) = (map(int, before.split()), map(int, after.split()))
n, us = d["answered"], 1e6 / int(hz)
print(f"{r} {name:<8} {d['ok_rps']:>8.0f} req/s  user {(u1 - u0) * us / n:5.2f} us"
      f"  system {(s1 - s0) * us / n:5.2f} us a request")
PY
        kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
        sleep 0.3
    done
done
