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

# `--all-targets` builds lib, bin, tests, benches and examples once; doctests run separately
# (there are few) so both share the same build.
cargo test --workspace --all-targets "$@"
if [ "$#" -eq 0 ]; then
  cargo test --workspace --doc
fi
