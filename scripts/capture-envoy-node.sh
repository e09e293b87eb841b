#!/usr/bin/env bash
# Regenerates crates/load/src/envoy-1.40-node.json: what Envoy 1.40 says about itself in the
# Node of its first xDS request (user agent, build version, extension list, client features),
# which meshpilot-load sends in the first request of each simulated proxy's stream.
#
#   scripts/capture-envoy-node.sh [ENVOY_BIN]     (default: .envoy/bin/envoy, see install-envoy.sh)
#
# Starts the Envoy with a bootstrap that has only an admin listener on a loopback port of its
# choosing, reads the node from its admin `/server_info`, keeps the fields the load tool sends
# and stops it. Needs curl and jq.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
envoy="${1:-${ENVOY_BIN:-$root/.envoy/bin/envoy}}"
out="$root/crates/load/src/envoy-1.40-node.json"
[ -x "$envoy" ] || { echo "no Envoy at $envoy (scripts/install-envoy.sh installs it)" >&2; exit 2; }

work="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/bootstrap.yaml" <<'YAML'
node: {id: capture, cluster: capture}
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
YAML
"$envoy" -c "$work/bootstrap.yaml" --disable-hot-restart --log-level warn \
  --admin-address-path "$work/admin" >"$work/envoy.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do [ -s "$work/admin" ] && break; sleep 0.1; done
[ -s "$work/admin" ] || { cat "$work/envoy.log" >&2; echo "Envoy did not start" >&2; exit 1; }
info=""
for _ in $(seq 1 50); do
  info="$(curl -sf "http://$(cat "$work/admin")/server_info")" && break
  sleep 0.1
done
[ -n "$info" ] || { echo "no answer from Envoy's /server_info" >&2; exit 1; }

version="$(jq -r '.node.user_agent_build_version.version | "\(.major_number).\(.minor_number)"' <<<"$info")"
[ "$version" = "1.40" ] || { echo "$envoy is Envoy $version, not 1.40" >&2; exit 1; }
# Sorted (keys, and extensions by category and name): Envoy lists both in an order that varies
# from one start to the next, and a regenerated file should differ only where Envoy does.
jq -S --indent 1 '.node | {
    user_agent_name,
    user_agent_build_version,
    client_features,
    extensions: [.extensions[] | {name, category, type_urls}] | sort_by(.category, .name)
  }' <<<"$info" >"$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out: $(jq '.extensions | length' "$out") extensions" >&2
