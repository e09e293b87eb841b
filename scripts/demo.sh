#!/usr/bin/env bash
# One-go demo of the mvc canary scenario: starts meshpilot on a temporary manifests directory,
# two backends (v1 on 127.0.1.1:8080, v2 on 127.0.1.2:8080) and an ingress-gateway Envoy on
# 127.0.0.10:80, prints the 80/20 split over 200 requests, then flips blue/green by rewriting the
# VirtualService file and prints the split again. Needs root for port 80 (as the gateway uses it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/install-envoy.sh" >/dev/null
envoy="$root/.envoy/bin/envoy"
cargo build --release --quiet
mp="$root/target/release/meshpilot"

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/manifests"
s="$root/manifests/examples/01-mvc-canary"
cp "$s/app.yaml" "$s/destination-rule.yaml" "$s/istio-gateway.yaml" "$work/manifests/"
awk '/^apiVersion: v1$/,0' "$root/manifests/examples/workloads.yaml" \
  | awk 'BEGIN{RS="---\n"; ORS="---\n"} /name: mvc-service-v[12]\n/' > "$work/manifests/pods.yaml"

backend() { # ip port name
  python3 - "$@" <<'PY' &
import sys, http.server, socketserver
ip, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200); self.send_header("content-length", str(len(name))); self.end_headers()
        self.wfile.write(name)
    def log_message(self, *a): pass
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer((ip, port), H).serve_forever()
PY
  pids+=($!)
}
backend 127.0.1.1 8080 "Hello i'm V1!"
backend 127.0.1.2 8080 "Hello i'm V2!"

"$mp" serve --config-dir "$work/manifests" --xds-address 127.0.0.1:15010 --debug-address 127.0.0.1:15014 \
  2> "$work/meshpilot.log" &
pids+=($!)
for _ in $(seq 50); do curl -sf http://127.0.0.1:15014/ready >/dev/null && break; sleep 0.1; done

"$mp" bootstrap --node-id 'router~127.0.0.10~ingress.istio-system~istio-system.svc.cluster.local' \
  --label istio=ingressgateway --interception none --xds-address 127.0.0.1:15010 \
  --admin-address 127.0.0.1:15000 > "$work/gw.yaml"
"$envoy" -c "$work/gw.yaml" --disable-hot-restart -l warning 2> "$work/envoy.log" &
pids+=($!)
for _ in $(seq 100); do curl -s http://127.0.0.10/service >/dev/null 2>&1 && break; sleep 0.1; done

split() {
  for _ in $(seq 200); do curl -s http://127.0.0.10/service; echo; done | sort | uniq -c
}
echo "== canary (VirtualService: 80% v1, 20% v2), 200 requests to /service:"
split
echo "== /other: HTTP $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.10/other)"
echo "== blue/green: rewriting the VirtualService to 100% v2"
{ awk 'BEGIN{RS="\n---\n"} NR==1' "$s/istio-gateway.yaml"; echo "---"; cat "$root/manifests/changes/istio-gateway-bluegreen.yaml"; } \
  > "$work/manifests/istio-gateway.yaml"
sleep 1
split
