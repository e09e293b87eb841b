//! Gateway server hosts qualified by namespace, as a user sees them: a real `meshpilot serve`
//! and a real Envoy 1.40 ingress gateway whose server host is `team-a/shop.example.com`. The
//! VirtualService of `team-a` (naming the gateway by its deprecated FQDN) answers; the one of
//! `team-b` for the same host is not served there, and is warned about, as under istiod.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use support::{Backend, Conn, Meshpilot, Response};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(10);
const HOST: &str = "shop.example.com";

const MESH: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["team-a/shop.example.com"]
---
apiVersion: v1
kind: Service
metadata: {name: shop, namespace: team-a}
spec:
  ports: [{port: 8080, name: http}]
  selector: {app: shop}
---
apiVersion: v1
kind: Service
metadata: {name: shop, namespace: team-b}
spec:
  ports: [{port: 8080, name: http}]
  selector: {app: shop}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: team-a}
spec:
  hosts: [shop.example.com]
  gateways: [gw.istio-system.svc.cluster.local]
  http:
  - match: [{uri: {prefix: /a}}]
    route: [{destination: {host: shop}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: team-b}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /b}}]
    route: [{destination: {host: shop}}]
"#;

async fn get(addr: SocketAddr, path: &str) -> Response {
    let mut conn = Conn::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    conn.request("GET", HOST, path, &[])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespaced_server_host_serves_only_that_namespaces_virtual_service() {
    let _envoy_bin = support::require_envoy!();
    let ips: [IpAddr; 2] = std::array::from_fn(|_| support::loopback_ip());
    let teams = ["team-a", "team-b"];
    let _backends: Vec<Backend> = ips
        .iter()
        .zip(teams)
        .map(|(ip, t)| Backend::start(*ip, 8080, t))
        .collect();
    let pods: Vec<String> = ips
        .iter()
        .zip(teams)
        .map(|(ip, t)| support::pod_yaml("shop-1", t, &[("app", "shop")], *ip, &[]))
        .collect();
    let dir = TempDir::new().expect("temp dir");
    support::write_manifests(
        dir.path(),
        &[("mesh.yaml", MESH), ("pods.yaml", &pods.join("---\n"))],
    );
    let server = Meshpilot::start(&[dir.path()]).await;
    let (envoy, addr) = support::ingress_gateway(&server, WAIT).await;

    support::wait_until("team-a's route", WAIT, || async {
        get(addr, "/a").await.body == "team-a"
    })
    .await;
    // team-b's VirtualService names the gateway, but the server host admits team-a only.
    let b = get(addr, "/b").await;
    assert_eq!(b.status, 404, "{}", b.body);
    let diagnostics = server
        .debug_get("/debug/diagnosticz")
        .await
        .map(|r| r.body)
        .unwrap_or_default();
    assert!(
        diagnostics.contains("team-b") && diagnostics.contains("not from namespace team-b"),
        "team-b's VirtualService is warned about: {diagnostics}"
    );
    drop(envoy);
}
