#!/usr/bin/env bash
# A bounded soak: one release `meshpilot serve` on a generated mesh, and round after round of
# simulated proxies connecting, following a stream of changes, and disconnecting, until MINUTES
# have passed. The server's RSS is read after every round (streams closed, config restored), so a
# leak shows as a rising column; the summary compares the first rounds with the last.
#
#   scripts/soak.sh [MINUTES]            (default 30)
#   PROXIES (default 300), CHANGES per round (default 200), RATE changes/s (default 40),
#   PROTOCOL sotw|delta (default: alternating), SERVER_BIN, LOAD_BIN, SOAK_OUT (default
#   bench-results/soak), SOAK_DIR (the generated mesh, default /tmp/meshpilot-soak)
#
# Each round uses one change kind, in turn: endpoint moves, VirtualService weight edits, added
# services, removed services; the load tool puts every file back at the end of its run, so
# the mesh the server holds is the same after every round. Needs `cargo build --release --bins`.
# Everything listens on 127.0.0.1 only; each round is bounded by the load tool's --timeout.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
minutes="${1:-30}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
load="${LOAD_BIN:-$target_dir/release/meshpilot-load}"
server_bin="${SERVER_BIN:-$target_dir/release/meshpilot}"
out="${SOAK_OUT:-$root/bench-results/soak}"
mesh="${SOAK_DIR:-/tmp/meshpilot-soak}"
proxies="${PROXIES:-300}"; changes="${CHANGES:-200}"; rate="${RATE:-40}"
for bin in "$load" "$server_bin"; do
  [ -x "$bin" ] || { echo "missing $bin: cargo build --release --bins" >&2; exit 2; }
done
mkdir -p "$out"
ulimit -n "$(ulimit -Hn)"
if [ ! -f "$mesh/.mesh.json" ]; then
  "$load" gen --dir "$mesh" --services 500 --endpoints 5 --virtual-services 100 \
    --destination-rules 100 >&2
fi

RUST_LOG=warn "$server_bin" serve --config-dir "$mesh" --xds-address 127.0.0.1:18100 \
  --debug-address 127.0.0.1:18101 2>"$out/server.log" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  curl -fs http://127.0.0.1:18101/ready >/dev/null 2>&1 && break
  sleep 0.1
done

rss() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
cpu_s() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$pid/stat"; }
kinds=(endpoint weight add-service remove-service)
csv="$out/soak.csv"
echo "round,elapsed_s,change,protocol,exit,server_rss_kib,server_cpu_s" > "$csv"
echo "0,0,-,-,0,$(rss),$(cpu_s)" >> "$csv"
start=$(date +%s); round=0
while [ $(( $(date +%s) - start )) -lt $(( minutes * 60 )) ]; do
  round=$((round + 1))
  kind="${kinds[$(( (round - 1) % 4 ))]}"
  proto="${PROTOCOL:-$([ $((round % 2)) -eq 0 ] && echo delta || echo sotw)}"
  set +e
  "$load" run --xds-address 127.0.0.1:18100 --debug-address 127.0.0.1:18101 \
    --server-pid "$pid" --mesh-dir "$mesh" --proxies "$proxies" --protocol "$proto" \
    --change "$kind" --changes "$changes" --rate "$rate" --timeout 120 --json \
    > "$out/round-$round.json" 2>"$out/round-$round.log"
  status=$?
  set -e
  kill -0 "$pid" 2>/dev/null || { echo "meshpilot exited during round $round" >&2; exit 1; }
  echo "$round,$(( $(date +%s) - start )),$kind,$proto,$status,$(rss),$(cpu_s)" >> "$csv"
done

python3 - "$csv" <<'EOF'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["round"] != "0"]
if len(rows) < 8:
    sys.exit(f"only {len(rows)} rounds: run longer for a comparison")
failed = [r["round"] for r in rows if r["exit"] != "0"]
first = max(int(r["server_rss_kib"]) for r in rows[:4])
last = max(int(r["server_rss_kib"]) for r in rows[-4:])
peak = max(int(r["server_rss_kib"]) for r in rows)
print(f"rounds {len(rows)} over {rows[-1]['elapsed_s']} s, failed rounds: {failed or 'none'}")
print(f"RSS after rounds 1-4 (max) {first/1024:.1f} MiB, after the last 4 (max) "
      f"{last/1024:.1f} MiB ({last/first:.2f}x), peak {peak/1024:.1f} MiB; "
      f"server CPU {rows[-1]['server_cpu_s']} s")
EOF
