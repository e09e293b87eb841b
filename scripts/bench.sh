#!/usr/bin/env bash
# Runs one benchmark workload of BENCHMARKS.md against a release `meshpilot serve` (or the
# nebucloud-xds peer) started as a separate process, RUNS times, one JSON report per run.
#
#   scripts/bench.sh WORKLOAD PROTOCOL [RUNS] [meshpilot|peer]
#   WORKLOAD: W1 W2 W3 W4 W5 W7 W8 IDLE100 IDLE1000     PROTOCOL: sotw | delta
#   SERVE_ARGS: extra `meshpilot serve` flags, e.g. SERVE_ARGS="--debounce-ms 10"
#   SERVER_BIN: another meshpilot binary to measure (e.g. an older commit's build)
#   LOAD_BIN: another meshpilot-load binary (default: this build's)
#   INTERCEPTION: the proxies' interception mode, `redirect` (the default) or `none` (each proxy
#     announces INTERCEPTION_MODE NONE and its own IP, so its listeners bind that address)
#   DECODE: `full` to decode every resource into its Envoy type (failures fail the run); the
#     default reads only the names the xDS chain needs
#   N: another proxy count for the workload (e.g. N=10000 with W5 or W4)
#   SERVER_CPUS: run meshpilot on these CPUs only (`taskset -c`), e.g. SERVER_CPUS=0 for a
#     server with one core: a slower machine's sync, for memory peaks
#
# Needs `cargo build --release --bins` (and for the peer, `cargo build --release` in
# crates/load/peer). Meshes are generated once under $BENCH_DIR (default /tmp/meshpilot-bench);
# reports go to $BENCH_OUT (default bench-results/). Everything listens on 127.0.0.1 only, and
# every run is bounded by the load tool's --timeout.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
w="${1:?workload}"; proto="${2:?sotw|delta}"; runs="${3:-5}"; target="${4:-meshpilot}"
bench_dir="${BENCH_DIR:-/tmp/meshpilot-bench}"
out="${BENCH_OUT:-$root/bench-results}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
load="${LOAD_BIN:-$target_dir/release/meshpilot-load}"
server_bin="${SERVER_BIN:-$target_dir/release/meshpilot}"
peer_bin="$root/crates/load/peer/target/release/meshpilot-peer"
mkdir -p "$bench_dir" "$out"
for bin in "$load" "$([ "$target" = peer ] && echo "$peer_bin" || echo "$server_bin")"; do
  if [ ! -x "$bin" ]; then
    echo "missing $bin: build it first (cargo build --release --bins; for the peer," \
      "(cd crates/load/peer && cargo build --release))" >&2
    exit 2
  fi
done
ulimit -n "$(ulimit -Hn)"

mesh() { # name services endpoints extra-gen-args...
  local name="$1" s="$2" e="$3"; shift 3
  if [ ! -f "$bench_dir/$name/.mesh.json" ]; then
    "$load" gen --dir "$bench_dir/$name" --services "$s" --endpoints "$e" "$@" >&2
  fi
  echo "$bench_dir/$name"
}

case "$w" in
  W1) dir=$(mesh w1 100 10); n=100; args=(--noop) ;;
  W2) dir=$(mesh w2 1000 2 --virtual-services 1000 --destination-rules 1000 --endpoint-kind pods)
      n=2000; args=(--change weight --changes 1) ;;
  W3) dir=$(mesh w3 10000 10); n=100; args=() ;;
  W4) dir=$(mesh w4 1000 10); n=1000
      args=(--noop --change endpoint --changes "${W4_CHANGES:-6000}" --rate "${W4_RATE:-100}") ;;
  W5) dir=$(mesh w4 1000 10); n=1000; args=() ;;
  W7) dir=$(mesh w4 1000 10); n=5000; args=(--connect-over-ms 10000) ;;
  # W7's size with per-client sets: 3 namespaces with rules of their own, endpoints (Pods: a
  # locality needs one) over 3 zones with outlier detection, a Sidecar per namespace; proxies
  # over the 10 namespaces and 3 zones. meshpilot only: the peer serves every proxy one set.
  W8) [ "$target" = peer ] && { echo "W8 measures meshpilot only" >&2; exit 2; }
      dir=$(mesh w8 1000 10 --endpoint-kind pods --namespace-rules 3 --localities 3 --sidecars)
      n=5000; args=(--connect-over-ms 10000 --namespaces 10 --localities 3) ;;
  IDLE100) dir=$(mesh w4 1000 10); n=100; args=(--hold 5) ;;
  IDLE1000) dir=$(mesh w4 1000 10); n=1000; args=(--hold 5) ;;
  *) echo "unknown workload $w" >&2; exit 2 ;;
esac
n="${N:-$n}" # N=10000 scales a workload's proxy count

for run in $(seq 1 "$runs"); do
  log="$out/$w-$proto-$target-$run.server.log"
  if [ "$target" = peer ]; then
    "$peer_bin" --mesh-dir "$dir" --proxies "$n" --address 127.0.0.1:18000 2>"$log" &
    pid=$!
    # No readiness endpoint: the peer logs one line once its cache is filled, then serves.
    for _ in $(seq 1 600); do grep -q '^peer:' "$log" 2>/dev/null && break; sleep 0.1; done
    sleep 0.5
    dbg=()
    kept=(); for a in "${args[@]}"; do [ "$a" = --noop ] || kept+=("$a"); done
    args=("${kept[@]}")
  else
    RUST_LOG=info ${SERVER_CPUS:+taskset -c "$SERVER_CPUS"} "$server_bin" serve --config-dir "$dir" --xds-address 127.0.0.1:18000 \
      --debug-address 127.0.0.1:18001 ${SERVE_ARGS:-} 2>"$log" &
    pid=$!
    dbg=(--debug-address 127.0.0.1:18001)
  fi
  set +e
  "$load" run --xds-address 127.0.0.1:18000 "${dbg[@]}" --server-pid "$pid" \
    --mesh-dir "$dir" --proxies "$n" --protocol "$proto" --timeout "${TIMEOUT:-60}" \
    ${INTERCEPTION:+--interception "$INTERCEPTION"} ${DECODE:+--decode "$DECODE"} \
    "${args[@]}" --json > "$out/$w-$proto-$target-$run.json"
  status=$?
  set -e
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  echo "$w $proto $target run $run: exit $status -> $out/$w-$proto-$target-$run.json" >&2
  sleep 1
done
