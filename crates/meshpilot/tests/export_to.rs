//! Istio's `exportTo`, as two real Envoy sidecars in different namespaces see it: a Service
//! exported to its own namespace (`networking.istio.io/exportTo: "."`) is reachable from there
//! and unknown (404) from elsewhere; a VirtualService exported to its own namespace reroutes
//! only the requests of that namespace's sidecar, the other gets the service's default route.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use support::{Backend, Conn, Envoy, Meshpilot};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(10);

fn service(ns: &str, name: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\n{annotations}\
         spec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n"
    )
}

const CATALOG_VS: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog, namespace: shop}
spec:
  hosts: [catalog]
  exportTo: ["."]
  http:
  - route:
    - destination: {host: catalog-v2}
"#;

async fn sidecar(server: &Meshpilot, ns: &str) -> (Envoy, SocketAddr) {
    let ip = support::loopback_ip();
    let admin = support::admin_addr();
    let mut args = support::bootstrap_args(
        &support::node_id("sidecar", ip, "client", ns),
        server.xds(),
        admin,
    );
    args.labels = vec![("app".to_string(), "client".to_string())];
    let envoy = Envoy::start(support::render_bootstrap(&args), admin).await;
    envoy.wait_for_listener(&format!("{ip}_80"), WAIT).await;
    (envoy, SocketAddr::new(ip, 80))
}

async fn status_and_backend(addr: SocketAddr, host: &str) -> (u16, String) {
    let mut conn = Conn::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let r = conn
        .request("GET", host, "/", &[])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let served_by = r.header("x-backend").unwrap_or_default().to_string();
    (r.status, served_by)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_to_hides_services_and_virtual_services_from_other_namespaces() {
    let _envoy_bin = support::require_envoy!();
    let names = ["catalog", "catalog-v2", "cart"];
    let ips: [IpAddr; 3] = std::array::from_fn(|_| support::loopback_ip());
    let _backends: Vec<Backend> = ips
        .iter()
        .zip(names)
        .map(|(ip, n)| Backend::start(*ip, 8080, n))
        .collect();
    let mut files: Vec<String> = ips
        .iter()
        .zip(names)
        .map(|(ip, n)| support::pod_yaml(&format!("{n}-1"), "shop", &[("app", n)], *ip, &[]))
        .collect();
    files.push(service("shop", "catalog", ""));
    files.push(service("shop", "catalog-v2", ""));
    files.push(service(
        "shop",
        "cart",
        "  annotations: {networking.istio.io/exportTo: \".\"}\n",
    ));
    files.push(CATALOG_VS.to_string());
    let dir = TempDir::new().expect("temp dir");
    support::write_manifests(dir.path(), &[("mesh.yaml", &files.join("---\n"))]);
    let server = Meshpilot::start(&[dir.path()]).await;
    let (_in_shop, shop) = sidecar(&server, "shop").await;
    let (_elsewhere, other) = sidecar(&server, "default").await;

    let catalog = "catalog.shop.svc.cluster.local";
    let cart = "cart.shop.svc.cluster.local";
    assert_eq!(
        status_and_backend(shop, catalog).await,
        (200, "catalog-v2".to_string()),
        "in shop the VirtualService exported to `.` applies"
    );
    assert_eq!(
        status_and_backend(other, catalog).await,
        (200, "catalog".to_string()),
        "elsewhere the VirtualService is not exported: the service's own route"
    );
    assert_eq!(
        status_and_backend(shop, cart).await,
        (200, "cart".to_string())
    );
    assert_eq!(
        status_and_backend(other, cart).await.0,
        404,
        "cart is exported to shop only"
    );
}
