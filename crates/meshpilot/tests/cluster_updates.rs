//! Edits that change a cluster Envoy already has — a DestinationRule's traffic policy or subsets,
//! a ServiceEntry and the DestinationRule for it — applied by a real Envoy at once, over SotW
//! and Delta. Envoy re-creates a changed EDS cluster and keeps it warming until that cluster's
//! endpoints arrive again; if they never do, it waits for its 15 s initial-fetch timeout with the
//! old cluster still serving. Each edit here must be in force, with no cluster left warming,
//! well before that.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Backend, Envoy, Meshpilot};
use tempfile::TempDir;

/// How long an edit may take to reach Envoy: the debounce (100 ms) and a push, with room for a
/// busy CI machine, and far below the 15 s an unsent endpoint set costs.
const APPLIED_WITHIN: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(10);

const WEB: &str = "outbound|8080||web.default.svc.cluster.local";
const EXT: &str = "outbound|7070||ext.example.internal";

fn base_manifests(v1: IpAddr, v2: IpAddr, ext: IpAddr) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 8080}}]
---
{}
---
{}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext, namespace: default}}
spec:
  hosts: [ext.example.internal]
  ports: [{{number: 7070, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: "{ext}"}}]
"#,
        support::pod_yaml(
            "web-v1",
            "default",
            &[("app", "web"), ("version", "v1")],
            v1,
            &[]
        ),
        support::pod_yaml(
            "web-v2",
            "default",
            &[("app", "web"), ("version", "v2")],
            v2,
            &[]
        ),
    )
}

/// The active (not warming) cluster named `name` in a config dump.
fn active_cluster<'a>(dump: &'a Value, name: &str) -> Option<&'a Value> {
    support::dump::section(dump, "ClustersConfigDump")?["dynamic_active_clusters"]
        .as_array()?
        .iter()
        .map(|c| &c["cluster"])
        .find(|c| c["name"] == name)
}

fn max_connections(cluster: &Value) -> Option<u64> {
    cluster["circuit_breakers"]["thresholds"][0]["max_connections"].as_u64()
}

/// Writes `files`, then waits until Envoy's active cluster `name` satisfies `applied` and no
/// cluster is warming; panics if that takes longer than [`APPLIED_WITHIN`].
async fn edit_and_wait(
    dir: &TempDir,
    envoy: &Envoy,
    files: &[(&str, &str)],
    what: &str,
    name: &str,
    applied: impl Fn(&Value) -> bool,
) {
    let written = Instant::now();
    support::write_manifests(dir.path(), files);
    let dump = envoy
        .wait_for_dump(what, WAIT, |d| {
            active_cluster(d, name).is_some_and(&applied)
                && support::dump::warming_cluster_names(d).is_empty()
        })
        .await;
    let took = written.elapsed();
    assert!(
        took <= APPLIED_WITHIN,
        "{what}: applied with no cluster warming only after {took:?} (at most {APPLIED_WITHIN:?})"
    );
    assert!(
        support::dump::error_states(&dump).is_empty(),
        "{what}: Envoy rejected configuration: {:?}",
        support::dump::error_states(&dump)
    );
}

async fn sidecar(server: &Meshpilot, delta: bool) -> (Envoy, IpAddr) {
    let ip = support::loopback_ip();
    let admin = support::admin_addr();
    let node = support::node_id("sidecar", ip, "client", "default");
    let mut args = support::bootstrap_args(&node, server.xds(), admin);
    args.labels = vec![("app".to_string(), "client".to_string())];
    args.delta = delta;
    let envoy = Envoy::start(support::render_bootstrap(&args), admin).await;
    (envoy, ip)
}

async fn edits_to_known_clusters_apply_at_once(delta: bool) {
    let _envoy_bin = support::require_envoy!();
    let (v1_ip, v2_ip, ext_ip) = (
        support::loopback_ip(),
        support::loopback_ip(),
        support::loopback_ip(),
    );
    let _v1 = Backend::start(v1_ip, 8080, "v1");
    let _v2 = Backend::start(v2_ip, 8080, "v2");
    let _ext = Backend::start(ext_ip, 7070, "ext");
    let dir = TempDir::new().expect("temp dir");
    let base = base_manifests(v1_ip, v2_ip, ext_ip);
    support::write_manifests(dir.path(), &[("base.yaml", &base)]);
    let server = Meshpilot::start(&[dir.path()]).await;
    let (envoy, ip) = sidecar(&server, delta).await;
    envoy.wait_for_listener(&format!("{ip}_8080"), WAIT).await;
    envoy.wait_for_listener(&format!("{ip}_7070"), WAIT).await;
    let web = SocketAddr::new(ip, 8080);
    let ext = SocketAddr::new(ip, 7070);
    let d = support::distribution(web, "web", "/", &[], 40).await;
    assert!(d.contains_key("v1") && d.contains_key("v2"), "{d:?}");
    support::assert_only(
        &support::distribution(ext, "ext.example.internal", "/", &[], 10).await,
        "ext",
    );

    // A traffic policy on a cluster Envoy holds: the cluster is re-created and must warm.
    let outlier = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: default}
spec:
  host: web
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 7, interval: 5s}
"#;
    edit_and_wait(
        &dir,
        &envoy,
        &[("dr-web.yaml", outlier)],
        "outlier detection on web",
        WEB,
        |c| c["outlier_detection"]["consecutive_5xx"] == 7,
    )
    .await;
    let d = support::distribution(web, "web", "/", &[], 40).await;
    assert!(d.contains_key("v1") && d.contains_key("v2"), "{d:?}");

    // The same rule changed again, now with subsets, and a route to one of them.
    let pool_and_subsets = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: default}
spec:
  host: web
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 77}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web]
  http:
  - route: [{destination: {host: web, subset: v1}}]
"#;
    edit_and_wait(
        &dir,
        &envoy,
        &[("dr-web.yaml", pool_and_subsets)],
        "connection pool and subsets on web",
        WEB,
        |c| max_connections(c) == Some(77),
    )
    .await;
    envoy
        .wait_for_cluster("outbound|8080|v1|web.default.svc.cluster.local", WAIT)
        .await;
    support::wait_until("web routed to subset v1 only", APPLIED_WITHIN, || async {
        let d = support::distribution(web, "web", "/", &[], 20).await;
        d.len() == 1 && d.contains_key("v1")
    })
    .await;

    // A ServiceEntry's endpoints edited, then a DestinationRule for its host.
    let ext2_ip = support::loopback_ip();
    let _ext2 = Backend::start(ext2_ip, 7070, "ext-2");
    let base2 = base.replace(
        &format!("endpoints: [{{address: \"{ext_ip}\"}}]"),
        &format!("endpoints: [{{address: \"{ext_ip}\"}}, {{address: \"{ext2_ip}\"}}]"),
    );
    assert_ne!(base, base2, "the ServiceEntry's endpoints are replaced");
    support::write_manifests(dir.path(), &[("base.yaml", &base2)]);
    support::wait_until("ext served by both endpoints", APPLIED_WITHIN, || async {
        let d = support::distribution(ext, "ext.example.internal", "/", &[], 40).await;
        d.contains_key("ext") && d.contains_key("ext-2")
    })
    .await;
    let ext_pool = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext, namespace: default}
spec:
  host: ext.example.internal
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 55}}
"#;
    edit_and_wait(
        &dir,
        &envoy,
        &[("dr-ext.yaml", ext_pool)],
        "connection pool on the ServiceEntry's host",
        EXT,
        |c| max_connections(c) == Some(55),
    )
    .await;
    let d = support::distribution(ext, "ext.example.internal", "/", &[], 40).await;
    assert!(d.contains_key("ext") && d.contains_key("ext-2"), "{d:?}");
    envoy.assert_all_acked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_to_known_clusters_apply_at_once_sotw() {
    edits_to_known_clusters_apply_at_once(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_to_known_clusters_apply_at_once_delta() {
    edits_to_known_clusters_apply_at_once(true).await;
}
