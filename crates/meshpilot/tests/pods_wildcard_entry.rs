//! A ServiceEntry with a wildcard host and resolution NONE, in pods with istio-init's rules and
//! a real Envoy as uid 1337, under REGISTRY_ONLY: HTTP to a name the entry covers (the client
//! resolved it to the address it dials) goes out through the entry's ORIGINAL_DST cluster
//! `outbound|80||*.example.com`, while a name it does not cover is still blocked (502).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::eventually_status;
use support::pods::{pod_helper, require_pods};
use support::{Meshpilot, require_envoy};

pod_helper!();

const WAIT: Duration = Duration::from_secs(15);

const MESH: &str = r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: any-example, namespace: default}
spec:
  hosts: ["*.example.com"]
  location: MESH_EXTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: NONE
"#;

/// Requests Envoy counted on `cluster` (read from the whole list: the name's `|` and `*` would
/// need escaping in the admin's regex filter).
async fn requests_through(envoy: &support::Envoy, cluster: &str) -> u64 {
    let r = envoy
        .admin_get("/stats?format=json&filter=upstream_rq_total")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("stats JSON");
    let name = format!("cluster.{cluster}.upstream_rq_total");
    v["stats"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == name.as_str())
        .and_then(|s| s["value"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_entry_carries_http_to_the_names_it_covers_under_registry_only() {
    let _envoy_bin = require_envoy!();
    let net = require_pods!();
    let (a, ext) = (net.pod("a"), net.pod("ext"));
    a.capture();

    let dir = tempfile::TempDir::new().expect("temp dir");
    let pods = support::pod_yaml("a", "default", &[("app", "a")], a.ip(), &[]);
    support::write_manifests(dir.path(), &[("mesh.yaml", MESH), ("pods.yaml", &pods)]);
    let server = Meshpilot::spawn_at(
        net.host_addr(),
        support::admin_addr(),
        &[dir.path()],
        &[],
        &[],
    );
    server.wait_ready(WAIT).await;

    let _web_ext = ext.start_http_app(80, "external-web");
    let envoy_a = a.start_sidecar(server.xds(), &[("app", "a")], false).await;

    // The client resolved `a.example.com` to `ext`'s address and dials it.
    let ext_web = SocketAddr::new(ext.ip(), 80);
    let covered = || a.http_get(ext_web, "a.example.com", "/wild");
    let r = eventually_status("a → a.example.com", 200, WAIT, covered).await;
    assert_eq!(r.header("x-backend"), Some("external-web"), "{r:?}");
    assert!(
        requests_through(&envoy_a, "outbound|80||*.example.com").await >= 1,
        "carried by the entry's cluster"
    );
    assert_eq!(
        envoy_a
            .counter("cluster.PassthroughCluster.upstream_rq_total")
            .await,
        0
    );

    // A name the entry does not cover meets REGISTRY_ONLY's 502.
    let r = a
        .http_get(ext_web, "example.org", "/other")
        .unwrap_or_else(|e| panic!("a → example.org: {e}"));
    assert_eq!(r.status, 502, "{r:?}");

    envoy_a.assert_all_acked().await;
}
