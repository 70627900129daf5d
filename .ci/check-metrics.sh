#!/usr/bin/env bash
# Lints a live /metrics scrape of a running hookgate with promtool
# (Debian package `prometheus`, installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${HOOKGATE_BIN:-target/debug/hookgate}"

if ! command -v promtool >/dev/null; then
  echo "installing promtool (Debian package prometheus)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >/dev/null
fi

work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cat > "$work/hookgate.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[store]
path = "$work/hookgate.db"
[log]
format = "json"
[[routes]]
path = "/hooks/sigsentry"
scheme = "sigsentry"
secrets = [{ value = "ci-secret" }]
[routes.upstream]
url = "http://127.0.0.1:9/unreachable"
TOML

"$BIN" run --config "$work/hookgate.toml" 2>"$work/log" &
pid=$!
for _ in $(seq 1 100); do
  grep -q '"hookgate listening"' "$work/log" 2>/dev/null && break
  sleep 0.1
done
read -r public admin < <(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    v = json.loads(line)
    if v["fields"].get("message") == "hookgate listening":
        print(v["fields"]["public"], v["fields"]["admin"]); break
' "$work/log")

body='{"analysisId":"anl_ci_1","severity":"high"}'
headers=()
while IFS= read -r h; do headers+=(-H "$h"); done < <(printf '%s' "$body" | "$BIN" sign --scheme sigsentry --secret ci-secret)
curl -fsS -o /dev/null "${headers[@]}" -H 'content-type: application/json' --data-binary "$body" "http://$public/hooks/sigsentry"
curl -sS -o /dev/null -H 'x-sigsentry-signature: sha256=00' --data-binary "$body" "http://$public/hooks/sigsentry" || true

curl -fsS "http://$admin/metrics" > "$work/metrics.txt"
grep -q 'hookgate_requests_total{outcome="accepted",route="/hooks/sigsentry"} 1' "$work/metrics.txt"
promtool check metrics < "$work/metrics.txt"
echo "promtool: $(grep -c '^# TYPE' "$work/metrics.txt") metric families OK"
