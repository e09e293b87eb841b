//! A VirtualService whose host is a wildcard, as a real Envoy sidecar serves it: as under
//! istiod it routes every service its host covers (by their usual names), a VirtualService
//! naming a service exactly still routes that one, and services it does not cover keep their
//! own route.

mod support;
use support::sidecar::status_and_backend;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use support::{Backend, Envoy, Meshpilot};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(10);

fn service(ns: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
         spec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n"
    )
}

/// Every service of `shop` to `v2`; `cart` (named exactly, though newer) to itself.
const VIRTUAL_SERVICES: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: all-shop, namespace: shop, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  hosts: ["*.shop.svc.cluster.local"]
  http:
  - route:
    - destination: {host: v2}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cart, namespace: shop, creationTimestamp: "2024-02-01T00:00:00Z"}
spec:
  hosts: [cart]
  http:
  - route:
    - destination: {host: cart}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_virtual_service_routes_the_services_it_covers() {
    let _envoy_bin = support::require_envoy!();
    let pods = [
        ("shop", "catalog"),
        ("shop", "cart"),
        ("shop", "v2"),
        ("other", "far"),
    ];
    let ips: [IpAddr; 4] = std::array::from_fn(|_| support::loopback_ip());
    let _backends: Vec<Backend> = ips
        .iter()
        .zip(pods)
        .map(|(ip, (_, n))| Backend::start(*ip, 8080, n))
        .collect();
    let mut files: Vec<String> = ips
        .iter()
        .zip(pods)
        .map(|(ip, (ns, n))| support::pod_yaml(&format!("{n}-1"), ns, &[("app", n)], *ip, &[]))
        .collect();
    files.extend(pods.iter().map(|(ns, n)| service(ns, n)));
    files.push(VIRTUAL_SERVICES.to_string());
    let dir = TempDir::new().expect("temp dir");
    support::write_manifests(dir.path(), &[("mesh.yaml", &files.join("---\n"))]);
    let server = Meshpilot::start(&[dir.path()]).await;

    let ip = support::loopback_ip();
    let admin = support::admin_addr();
    let mut args = support::bootstrap_args(
        &support::node_id("sidecar", ip, "client", "shop"),
        server.xds(),
        admin,
    );
    args.labels = vec![("app".to_string(), "client".to_string())];
    let envoy = Envoy::start(support::render_bootstrap(&args), admin).await;
    envoy.wait_for_listener(&format!("{ip}_80"), WAIT).await;
    let sidecar = SocketAddr::new(ip, 80);

    for host in ["catalog.shop.svc.cluster.local", "catalog.shop", "catalog"] {
        assert_eq!(
            status_and_backend(sidecar, host).await,
            (200, "v2".to_string()),
            "{host}: covered by *.shop.svc.cluster.local"
        );
    }
    assert_eq!(
        status_and_backend(sidecar, "cart.shop.svc.cluster.local").await,
        (200, "cart".to_string()),
        "the exact host routes cart"
    );
    assert_eq!(
        status_and_backend(sidecar, "far.other.svc.cluster.local").await,
        (200, "far".to_string()),
        "not covered: its own route"
    );
}
