#!/usr/bin/env bash
# Runs the whole test suite against a real Envoy 1.40 (installed into .envoy/ if missing),
# with one shared build. Extra arguments go to `cargo test` (e.g. a test-name filter).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [ -z "${ENVOY_BIN:-}" ]; then
  "$root/scripts/install-envoy.sh" >&2
  export ENVOY_BIN="$root/.envoy/bin/envoy"
fi
if [ ! -x "$ENVOY_BIN" ]; then
  echo "ENVOY_BIN=$ENVOY_BIN is not an executable" >&2
  exit 1
fi
echo "using $ENVOY_BIN: $("$ENVOY_BIN" --version | grep -o "version: .*")" >&2

# `--all-targets` builds lib, bin, tests and benches once and runs every test binary (the crate
# has no doctests). The output is kept to print one closing total for the whole suite.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --all-targets "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '^test result: .* ([0-9]+) failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
echo "suite: $passed passed, $failed failed"
exit "$status"
