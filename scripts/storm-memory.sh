#!/usr/bin/env bash
# Memory after connection storms: one release `meshpilot serve` on a 100-service mesh; one proxy
# syncs and leaves (the baseline: its class is compiled), then STORMS times PROXIES simulated
# SotW proxies connect at once, sync and leave. The server's RSS is printed after each, 12 s and
# 30 s later. Bounded: each storm by the load tool's --timeout.
#
#   scripts/storm-memory.sh            PROXIES (default 5000), STORMS (default 3),
#                                      SERVER_BIN, LOAD_BIN, STORM_DIR (/tmp/meshpilot-storm)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
load="${LOAD_BIN:-$target_dir/release/meshpilot-load}"
server_bin="${SERVER_BIN:-$target_dir/release/meshpilot}"
mesh="${STORM_DIR:-/tmp/meshpilot-storm}"
proxies="${PROXIES:-5000}"; storms="${STORMS:-3}"
for bin in "$load" "$server_bin"; do
  [ -x "$bin" ] || { echo "missing $bin: cargo build --release --bins" >&2; exit 2; }
done
ulimit -n "$(ulimit -Hn)"
[ -f "$mesh/.mesh.json" ] || "$load" gen --dir "$mesh" --services 100 --endpoints 10 >/dev/null
RUST_LOG=warn "$server_bin" serve --config-dir "$mesh" --xds-address 127.0.0.1:18200 \
  --debug-address 127.0.0.1:18201 2>/dev/null &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT
rss() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
for _ in $(seq 1 300); do
  curl -fs http://127.0.0.1:18201/ready >/dev/null 2>&1 && break
  sleep 0.1
done
run() { # proxies
  "$load" run --xds-address 127.0.0.1:18200 --debug-address 127.0.0.1:18201 --server-pid "$pid" \
    --mesh-dir "$mesh" --proxies "$1" --protocol sotw --timeout 180 --json
}
echo "idle, before any proxy: $(rss) KiB"
run 1 >/dev/null
sleep 12
base=$(rss)
echo "baseline, one proxy synced and left (+12 s): $base KiB"
for i in $(seq 1 "$storms"); do
  report=$(run "$proxies")
  failed=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["failed_streams"], r["open_retries"], r["server_memory"]["synced"][1])' "$report")
  read -r failed_streams retries synced <<<"$failed"
  sleep 12; at12=$(rss); sleep 18; at30=$(rss)
  echo "storm $i: $proxies proxies, failed streams $failed_streams, retried opens $retries," \
    "RSS synced $synced KiB; +12 s $at12 KiB; +30 s $at30 KiB" \
    "($(python3 -c "print(f'{$at30/$base:.2f}')")x baseline)"
done
