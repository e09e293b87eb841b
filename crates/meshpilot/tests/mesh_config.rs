//! The mesh configuration (`serve --mesh-config FILE`, MeshConfig YAML as istiod reads it), as
//! real Envoy sidecars see it: with `defaultServiceExportTo: ["."]` and
//! `defaultVirtualServiceExportTo: ["."]`, a Service or VirtualService that sets no `exportTo`
//! is seen only in its own namespace, while one exported to `*` is still seen everywhere; the
//! fields meshpilot does not read are warned about by name; a bad file stops the start with a
//! message naming the file and the field.

mod support;
use support::sidecar::{client_sidecar, status_and_backend};

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use support::{Backend, Envoy, Meshpilot};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(10);

const MESH_CONFIG: &str = "defaultServiceExportTo: [\".\"]\n\
                           defaultVirtualServiceExportTo: [\".\"]\n\
                           enableTracing: true\n";

fn service(ns: &str, name: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\n{annotations}\
         spec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n"
    )
}

const EVERYWHERE: &str = "  annotations: {networking.istio.io/exportTo: \"*\"}\n";

/// A VirtualService without `exportTo`: the mesh default applies.
const CATALOG_VS: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog, namespace: shop}
spec:
  hosts: [catalog]
  http:
  - route:
    - destination: {host: catalog-v2}
"#;

async fn cluster_names(envoy: &Envoy) -> Vec<String> {
    support::dump::cluster_names(&envoy.config_dump().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_export_defaults_hide_what_sets_no_export_to() {
    let _envoy_bin = support::require_envoy!();
    let names = ["catalog", "catalog-v2", "hidden"];
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
    files.push(service("shop", "catalog", EVERYWHERE));
    files.push(service("shop", "catalog-v2", EVERYWHERE));
    files.push(service("shop", "hidden", ""));
    files.push(CATALOG_VS.to_string());
    let dir = TempDir::new().expect("temp dir");
    support::write_manifests(dir.path(), &[("mesh.yaml", &files.join("---\n"))]);
    let mesh_dir = TempDir::new().expect("temp dir");
    let mesh_file = mesh_dir.path().join("mesh-config.yaml");
    std::fs::write(&mesh_file, MESH_CONFIG).expect("write the mesh config");
    let mesh_file = mesh_file.to_str().expect("utf-8 path");
    let server = Meshpilot::spawn(&[dir.path()], &["--mesh-config", mesh_file]);
    server.wait_ready(WAIT).await;
    let (in_shop, shop) = client_sidecar(server.xds(), "shop").await;
    let (elsewhere, other) = client_sidecar(server.xds(), "default").await;

    let catalog = "catalog.shop.svc.cluster.local";
    let hidden = "hidden.shop.svc.cluster.local";
    assert_eq!(
        status_and_backend(shop, catalog).await,
        (200, "catalog-v2".to_string()),
        "in shop the VirtualService, exported to `.` by the mesh default, applies"
    );
    assert_eq!(
        status_and_backend(other, catalog).await,
        (200, "catalog".to_string()),
        "elsewhere the VirtualService is not exported: the service's own route"
    );
    assert_eq!(
        status_and_backend(shop, hidden).await,
        (200, "hidden".to_string())
    );
    assert_eq!(
        status_and_backend(other, hidden).await.0,
        404,
        "a Service without exportTo is exported to its namespace only"
    );
    let hidden_cluster = format!("outbound|80||{hidden}");
    let catalog_cluster = format!("outbound|80||{catalog}");
    let shop_clusters = cluster_names(&in_shop).await;
    assert!(shop_clusters.contains(&hidden_cluster), "{shop_clusters:?}");
    let other_clusters = cluster_names(&elsewhere).await;
    assert!(
        !other_clusters.contains(&hidden_cluster),
        "no cluster for a service not exported here: {other_clusters:?}"
    );
    assert!(
        other_clusters.contains(&catalog_cluster),
        "a service exported to `*` is still there: {other_clusters:?}"
    );
    assert!(
        server
            .logs()
            .contains("meshConfig.enableTracing is not read by meshpilot: ignored"),
        "the unread field is warned about:\n{}",
        server.logs()
    );
}

#[test]
fn a_bad_mesh_config_stops_the_start_naming_the_file_and_the_field() {
    let dir = TempDir::new().expect("temp dir");
    let mesh_file = dir.path().join("mesh-config.yaml");
    std::fs::write(&mesh_file, "defaultServiceExportTo: [\"Shop\"]\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_meshpilot"))
        .args(["serve", "--config-dir"])
        .arg(dir.path())
        .arg("--mesh-config")
        .arg(&mesh_file)
        .args([
            "--xds-address",
            "127.0.0.1:0",
            "--debug-address",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run meshpilot");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused to start: {stderr}");
    assert!(
        stderr.contains(&format!(
            "mesh config {}: meshConfig.defaultServiceExportTo[0]: `Shop` is not",
            mesh_file.display()
        )),
        "{stderr}"
    );
}
