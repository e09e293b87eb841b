//! VirtualService delegation as a user sees it: a real `meshpilot serve` and a real Envoy 1.40
//! ingress gateway serve a root VirtualService whose `/shop` route delegates to a VirtualService
//! of another namespace. The delegate's routes answer under the root's match, with the root
//! route's header operation; a delegate route outside `/shop` is left out (404), as istiod
//! leaves it out; and editing only the delegate changes what the root serves.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use support::{Backend, Conn, Meshpilot, Response};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(10);
const HOST: &str = "shop.example.com";

const ROOT: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: team}
spec:
  ports: [{port: 8080, name: http}]
  selector: {app: web}
---
apiVersion: v1
kind: Service
metadata: {name: canary, namespace: team}
spec:
  ports: [{port: 8080, name: http}]
  selector: {app: canary}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/gw]
  http:
  - name: shop
    match: [{uri: {prefix: /shop}}]
    headers: {request: {set: {x-root: shop}}}
    delegate: {name: shop, namespace: team}
"#;

/// The delegate: `/shop/new` to canary, `/elsewhere` (outside the root's `/shop`, so left out),
/// everything else under `/shop` to web.
const DELEGATE: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: team}
spec:
  http:
  - match: [{uri: {prefix: /shop/new}}]
    route: [{destination: {host: canary.team.svc.cluster.local}}]
  - match: [{uri: {prefix: /elsewhere}}]
    route: [{destination: {host: canary.team.svc.cluster.local}}]
  - route: [{destination: {host: web.team.svc.cluster.local}}]
"#;

async fn get(addr: SocketAddr, path: &str) -> Response {
    let mut conn = Conn::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    conn.request("GET", HOST, path, &[])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

fn outcome(r: &Response) -> String {
    if r.status == 200 {
        r.body.clone()
    } else {
        format!("HTTP {}", r.status)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_serves_its_delegates_routes_under_its_match() {
    let _envoy_bin = support::require_envoy!();
    let ips: [IpAddr; 2] = std::array::from_fn(|_| support::loopback_ip());
    let names = ["web", "canary"];
    let backends: Vec<Backend> = ips
        .iter()
        .zip(names)
        .map(|(ip, n)| Backend::start(*ip, 8080, n))
        .collect();
    let pods: Vec<String> = ips
        .iter()
        .zip(names)
        .map(|(ip, n)| support::pod_yaml(&format!("{n}-1"), "team", &[("app", n)], *ip, &[]))
        .collect();
    let dir = TempDir::new().expect("temp dir");
    support::write_manifests(
        dir.path(),
        &[
            ("root.yaml", ROOT),
            ("delegate.yaml", DELEGATE),
            ("pods.yaml", &pods.join("---\n")),
        ],
    );
    let server = Meshpilot::start(&[dir.path()]).await;

    let (envoy, addr) = support::ingress_gateway(&server, WAIT).await;

    support::wait_until("the delegate's routes", WAIT, || async {
        get(addr, "/shop/new/item").await.body == "canary"
    })
    .await;
    assert_eq!(outcome(&get(addr, "/shop/cart").await), "web");
    // The root's header operation applies to the delegate's routes.
    let seen = backends[0].recent().pop().expect("web saw the request");
    assert!(
        seen.headers
            .iter()
            .any(|(k, v)| k == "x-root" && v == "shop"),
        "{:?}",
        seen.headers
    );
    // Outside the root's match: the delegate's `/elsewhere` route is not served.
    assert_eq!(outcome(&get(addr, "/elsewhere").await), "HTTP 404");
    assert_eq!(outcome(&get(addr, "/").await), "HTTP 404");
    let diagnostics = server
        .debug_get("/debug/diagnosticz")
        .await
        .map(|r| r.body)
        .unwrap_or_default();
    assert!(
        diagnostics.contains("spec.http[0].delegate") && diagnostics.contains("route http[1]"),
        "the left-out delegate route is reported: {diagnostics}"
    );

    // Editing only the delegate re-routes the root: `/shop/new` now goes to web.
    support::write_manifests(
        dir.path(),
        &[(
            "delegate.yaml",
            &DELEGATE.replace(
                "canary.team.svc.cluster.local",
                "web.team.svc.cluster.local",
            ),
        )],
    );
    support::wait_until("the edited delegate served", WAIT, || async {
        get(addr, "/shop/new/item").await.body == "web"
    })
    .await;
    drop(envoy);
}
