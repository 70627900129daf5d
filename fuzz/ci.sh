#!/usr/bin/env bash
# Short, bounded fuzzing for CI (see fuzz/README.md): builds every target
# once, then runs each for FUZZ_SECONDS (default 15) over its committed seed
# corpus. New inputs go to fuzz/target/ci-corpus (the committed corpus is
# not changed); a crash fails the step and leaves its input in
# fuzz/artifacts/<target>/ (reproduce: see fuzz/README.md).
#
# Stable toolchain, no nightly: with `--sanitizer none` cargo-fuzz passes
# only stable rustc flags (SanitizerCoverage through -Cpasses/-Cllvm-args).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${FUZZ_SECONDS:-15}"
TARGETS=(signature_presets signature_custom event_id stored_request request_path)
CARGO_FUZZ_VERSION=0.13.2
# An unoptimised build (--dev): it compiles in half the time of -O (4.8 vs
# 9.5 min measured on the CI machine), which is what a 15 s smoke run per
# target needs; the long runs of fuzz/README.md use -O.
BUILD=(--dev -a --sanitizer none)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi
# libfuzzer-sys compiles libFuzzer (C++) with the system C++ compiler.
if ! command -v c++ >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++) >/dev/null
fi

# fuzz/ is its own workspace with its own Cargo.lock. When a dependency of
# hookgate changed without the lock being refreshed, refresh it for this run
# (minimally: only the missing entries) and say so, rather than fail.
if ! cargo fetch --locked --manifest-path fuzz/Cargo.toml >/dev/null 2>&1; then
  echo "warning: fuzz/Cargo.lock is out of date (a dependency of hookgate changed?);" \
    "refreshing it for this run. Commit the result of: cargo fetch --manifest-path fuzz/Cargo.toml"
  cargo fetch --manifest-path fuzz/Cargo.toml
fi

cargo fmt --manifest-path fuzz/Cargo.toml -- --check

start=$(date +%s)
cargo fuzz build "${BUILD[@]}"
echo "fuzz build: $(($(date +%s) - start)) s"

for t in "${TARGETS[@]}"; do
  work="fuzz/target/ci-corpus/$t"
  mkdir -p "$work"
  echo "-- $t (${SECS} s)"
  # -timeout: an input slower than 10 s is a hang, reported as a crash.
  if ! cargo fuzz run "${BUILD[@]}" "$t" "$work" "fuzz/corpus/$t" -- \
    -max_total_time="$SECS" -timeout=10 -print_final_stats=1 >"fuzz/target/ci-$t.log" 2>&1; then
    tail -n 60 "fuzz/target/ci-$t.log"
    echo "fuzz target $t failed; its input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|Done)' "fuzz/target/ci-$t.log" || true
done
echo "fuzz: $(($(date +%s) - start)) s in all"
