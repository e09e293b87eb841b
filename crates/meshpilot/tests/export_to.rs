//! Istio's `exportTo`, as two real Envoy sidecars in different namespaces see it: a Service
//! exported to its own namespace (`networking.istio.io/exportTo: "."`) is reachable from there
//! and unknown (404) from elsewhere; a VirtualService exported to its own namespace reroutes
//! only the requests of that namespace's sidecar, the other gets the service's default route.

mod support;
use support::sidecar::{client_sidecar, status_and_backend};

use std::net::IpAddr;

use support::{Backend, Meshpilot};
use tempfile::TempDir;

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
    let (_in_shop, shop) = client_sidecar(server.xds(), "shop").await;
    let (_elsewhere, other) = client_sidecar(server.xds(), "default").await;

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
