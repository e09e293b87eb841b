//! ServiceEntries and WorkloadEntries as a real Envoy 1.40 sidecar takes them from
//! `meshpilot serve`: every resolution's cluster is accepted (none rejected or left warming),
//! EDS carries the endpoints of `endpoints[].ports`, `targetPort` and a `workloadSelector`
//! (WorkloadEntries and Pods of its namespace), and a WorkloadEntry no longer selected leaves
//! EDS.
//! The manifests are `tests/testdata/service-entries/entries.yaml` (golden_07 compiles them).
//! Beside them, a Kubernetes Service of `type: ExternalName` carries traffic to its DNS name.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{Backend, Envoy, Meshpilot};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_entry_clusters_and_selected_endpoints_reach_envoy() {
    let _envoy_bin = support::require_envoy!();
    let entries = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/testdata/service-entries/entries.yaml"),
    )
    .expect("read the service-entries fixture");
    let dir = TempDir::new().expect("temp dir");
    support::write_manifests(dir.path(), &[("entries.yaml", &entries)]);
    let server = Meshpilot::start(&[dir.path()]).await;

    let ip = support::loopback_ip();
    let admin = support::admin_addr();
    let mut args = support::bootstrap_args(
        &support::node_id("sidecar", ip, "client", "default"),
        server.xds(),
        admin,
    );
    args.labels = vec![("app".to_string(), "client".to_string())];
    let envoy = Envoy::start(support::render_bootstrap(&args), admin).await;

    let selected = "outbound|80||selected.example.com";
    let want = [
        "outbound|80||none.example.com",
        "outbound|80||*.wild.example.com",
        "outbound|8443||*.wild.example.com",
        "outbound|80||static.example.com",
        "outbound|9000||static.example.com",
        "outbound|443||dns.example.com",
        "outbound|80||dnseps.example.com",
        "outbound|80||rr.example.com",
        selected,
    ];
    let dump = envoy
        .wait_for_dump("every entry's cluster, with endpoints", WAIT, |d| {
            let active = support::dump::cluster_names(d);
            want.iter().all(|c| active.iter().any(|a| a == c))
                && support::dump::warming_cluster_names(d).is_empty()
                && support::dump::endpoints(d, selected).len() == 3
        })
        .await;
    assert!(
        support::dump::error_states(&dump).is_empty(),
        "Envoy rejected configuration: {:?}",
        support::dump::error_states(&dump)
    );
    envoy.assert_all_acked().await;

    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    // A WorkloadEntry's own port for `http`, else the entry's targetPort, for WorkloadEntries
    // and Pods alike; `vm-other` (another namespace) is not selected.
    assert_eq!(
        sorted(support::dump::endpoints(&dump, selected)),
        ["127.0.9.1:9090", "127.0.9.2:8080", "127.0.9.3:8080"]
    );
    // An endpoint's own port for the port's name, else its targetPort, else the port itself.
    assert_eq!(
        sorted(support::dump::endpoints(
            &dump,
            "outbound|80||static.example.com"
        )),
        ["10.1.0.1:8080", "10.1.0.2:8888"]
    );
    assert_eq!(
        sorted(support::dump::endpoints(
            &dump,
            "outbound|9000||static.example.com"
        )),
        ["10.1.0.1:9000", "10.1.0.2:9000"]
    );

    // A selected WorkloadEntry relabelled out of the selector: its endpoint leaves EDS.
    let without_vm1 = entries.replace(
        "labels: {app: vm-app, version: v1}",
        "labels: {app: retired}",
    );
    support::write_manifests(dir.path(), &[("entries.yaml", &without_vm1)]);
    envoy
        .wait_for_dump("vm-1 out of EDS", WAIT, |d| {
            sorted(support::dump::endpoints(d, selected)) == ["127.0.9.2:8080", "127.0.9.3:8080"]
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_name_service_reaches_its_name_through_a_dns_cluster() {
    let _envoy_bin = support::require_envoy!();
    // `localhost` resolves to 127.0.0.1: the backend listens there, on a port of its own.
    let backend = support::admin_addr();
    let _backend = Backend::start(backend.ip(), backend.port(), "external-name");
    let port = backend.port();
    let manifests = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: ext, namespace: default}}\n\
         spec:\n  type: ExternalName\n  externalName: localhost\n  \
         ports: [{{name: http, port: {port}}}]\n"
    );
    let dir = TempDir::new().expect("temp dir");
    support::write_manifests(dir.path(), &[("ext.yaml", &manifests)]);
    let server = Meshpilot::start(&[dir.path()]).await;

    let ip = support::loopback_ip();
    let admin = support::admin_addr();
    let args = support::bootstrap_args(
        &support::node_id("sidecar", ip, "client", "default"),
        server.xds(),
        admin,
    );
    let envoy = Envoy::start(support::render_bootstrap(&args), admin).await;
    envoy.wait_for_listener(&format!("{ip}_{port}"), WAIT).await;
    let cluster = format!("outbound|{port}||ext.default.svc.cluster.local");
    let dump = envoy
        .wait_for_dump("the ExternalName cluster", WAIT, |d| {
            support::dump::cluster_names(d).contains(&cluster)
        })
        .await;
    assert!(
        support::dump::error_states(&dump).is_empty(),
        "Envoy rejected configuration: {:?}",
        support::dump::error_states(&dump)
    );

    // The short name and the FQDN, as for any Service of the proxy's namespace.
    let addr = SocketAddr::new(ip, port);
    for host in ["ext", "ext.default.svc.cluster.local"] {
        let d = support::distribution(addr, host, "/", &[], 10).await;
        support::assert_only(&d, "external-name");
    }
    envoy.assert_all_acked().await;
}
