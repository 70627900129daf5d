#!/usr/bin/env bash
# bench/callgrind-passthrough.sh: instructions per passthrough request, for
# hookgate and for nginx's proxy_pass, counted by valgrind's callgrind.
# Instruction counts do not depend on what else the machine is doing, so
# they compare builds on a shared, noisy machine where timings cannot.
#
#   bash bench/callgrind-passthrough.sh [HOOKGATE_BINARY]   (N=4000 requests)
#
# Each server runs under callgrind twice, serving 0 and then N requests
# (8 keep-alive connections, ~1 KiB signed SigSentry bodies) to the same
# bare_hyper upstream (not traced); the per-request figure is the
# difference divided by N. Valgrind hides SHA-NI from the program, so the
# SHA-256 of the HMAC runs in software here (~68k instructions a request,
# shown apart); on the hardware it costs ~1 µs.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REL=${TARGET_DIR:-$ROOT/target/release}
HG=${1:-$REL/hookgate}
N=${N:-4000}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
command -v valgrind >/dev/null || apt-get install -y valgrind >/dev/null
command -v nginx >/dev/null || apt-get install -y nginx-light >/dev/null
export SIGSENTRY_SECRET=bench-secret

"$REL/examples/bare_hyper" --listen 127.0.0.1:18002 >"$WORK/bare.log" 2>&1 &
sleep 0.3

# count LABEL PORT REQUESTS CMD...: prints the program's total instructions
# and, for hookgate, those spent in SHA-256's compression function.
count() {
    local label=$1 port=$2 n=$3; shift 3
    (cd "$WORK" && exec valgrind --tool=callgrind --callgrind-out-file="$WORK/$label.$n.cg" "$@") \
        >"$WORK/$label.$n.log" 2>&1 &
    local pid=$!
    for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    if [ "$n" -gt 0 ]; then
        "$REL/examples/loadgen" --url "http://127.0.0.1:$port/hooks/sigsentry" --connections 8 \
            --requests "$n" --warmup 0 --duration 600 --timeout 60 >"$WORK/$label.$n.load" 2>&1
    fi
    sleep 0.5
    kill -TERM "$pid"; wait "$pid" || true
    local total sha
    total=$(grep -h '^summary:' "$WORK/$label.$n.cg"* | awk '{s+=$2} END {print s}')
    sha=$(callgrind_annotate --threshold=100 "$WORK/$label.$n.cg"* 2>/dev/null \
        | { grep 'sha256::soft::compress\|sha256::x86::compress\|sha256::compress256' || true; } \
        | head -n 1 | awk '{gsub(",","",$1); print $1}')
    echo "${total:-0} ${sha:-0}"
}

read -r hg0 _ < <(count hookgate 18081 0 "$HG" run --config "$ROOT/bench/hookgate-passthrough.toml")
read -r hgn hgsha < <(count hookgate 18081 "$N" "$HG" run --config "$ROOT/bench/hookgate-passthrough.toml")
NGINX=(nginx -p "$WORK/" -e "$WORK/error.log" -c "$ROOT/bench/nginx.conf" -g 'daemon off; master_process off;')
read -r ng0 _ < <(count nginx 18082 0 "${NGINX[@]}")
read -r ngn _ < <(count nginx 18082 "$N" "${NGINX[@]}")

per() { echo $(( ($2 - $1) / N )); }
hg=$(per "$hg0" "$hgn"); sha=$(( hgsha / N )); ng=$(per "$ng0" "$ngn")
echo "instructions per request (N=$N):"
echo "  hookgate passthrough: $hg (SHA-256 in software under valgrind: $sha; without it: $((hg - sha)))"
echo "  nginx proxy_pass:     $ng"
