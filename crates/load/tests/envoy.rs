//! The load tool against a real Envoy 1.40: a simulated proxy and an Envoy with an equivalent
//! node (same namespace, labels and interception, so the same proxy class) connected to the
//! same meshpilot end up ACKing the same version of every type, over SotW and Delta — what the
//! tool measures is what an Envoy would receive.
//!
//! Needs Envoy (`$ENVOY_BIN`, else `.envoy/bin/envoy` of the repository, else `envoy` on
//! `PATH`); without one the test is skipped, except with `CI=true`, where it fails.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{KillOnDrop, load_tool, start, wait_synced};
use meshpilot::config::{BootstrapArgs, InterceptionArg};
use meshpilot_load::mesh::MeshSpec;
use serde_json::Value;

/// The Envoy binary, as the black-box tests find it; `None` (skip) when there is none and
/// `CI` is not `true`.
fn envoy_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ENVOY_BIN").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.envoy/bin/envoy");
    if local.is_file() {
        return Some(local);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("envoy"))
            .find(|p| p.is_file())
    });
    if on_path.is_none() && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but no Envoy found: run scripts/install-envoy.sh or set ENVOY_BIN");
    }
    on_path
}

/// A free port on 127.0.0.1 for the Envoy's admin listener.
fn admin_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    l.local_addr().expect("address")
}

/// Starts Envoy on meshpilot's own bootstrap for `node_id`, with the node metadata of the load
/// tool's proxies (namespace `ns-0`, labels `app=load`, `load-class=c0`, REDIRECT).
fn start_envoy(
    bin: &PathBuf,
    dir: &std::path::Path,
    node_id: &str,
    xds: SocketAddr,
    delta: bool,
) -> KillOnDrop {
    let args = BootstrapArgs {
        node_id: node_id.to_string(),
        labels: vec![
            ("app".into(), "load".into()),
            ("load-class".into(), "c0".into()),
        ],
        namespace: Some("ns-0".into()),
        interception: InterceptionArg::Redirect,
        locality: None,
        xds_address: xds.to_string(),
        admin_address: admin_addr(),
        delta,
        xds_root_cert: None,
        xds_server_name: "istiod.istio-system.svc".to_string(),
        xds_token_file: None,
        via_agent: false,
        agent_xds_socket: "./etc/istio/proxy/XDS".into(),
        agent_sds_socket: "./var/run/secrets/workload-spiffe-uds/socket".into(),
    };
    let bootstrap = meshpilot::bootstrap::render(&args).expect("bootstrap");
    let config = dir.join("bootstrap.json");
    std::fs::write(&config, bootstrap.to_string()).expect("write bootstrap");
    let log = std::fs::File::create(dir.join("envoy.log")).expect("log file");
    let child = Command::new(bin)
        .arg("-c")
        .arg(&config)
        .args([
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "-l",
            "warning",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .expect("start envoy");
    KillOnDrop(child)
}

/// (class, [version ACKed per type]) of a `/debug/syncz` entry.
fn acked(entry: &Value) -> (String, Vec<(String, String)>) {
    let types = entry["types"].as_object().cloned().unwrap_or_default();
    let versions = types
        .iter()
        .map(|(t, s)| (t.clone(), s["version_acked"].to_string()))
        .collect();
    (entry["class"].to_string(), versions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_proxy_acks_the_same_versions_as_a_real_envoy() {
    let Some(bin) = envoy_bin() else {
        eprintln!("SKIP: envoy not installed (run scripts/install-envoy.sh)");
        return;
    };
    let mut spec = MeshSpec::plain(10, 2, 1);
    spec.virtual_services = 4;
    spec.destination_rules = 4;
    let (_mesh_dir, server) = start(spec).await;
    for delta in [false, true] {
        let protocol = if delta { "delta" } else { "sotw" };
        let envoy_id = "sidecar~127.0.0.1~envoy-0.ns-0~ns-0.svc.cluster.local";
        // Envoy's bootstrap and log go beside the served directory, not into it: a JSON file
        // there that is not a manifest is an input error, which holds a start-up.
        let envoy_dir = tempfile::tempdir().expect("tempdir");
        let envoy = start_envoy(&bin, envoy_dir.path(), envoy_id, server.xds_addr, delta);
        let tool = load_tool(&server, &["--proxies", "1", "--protocol", protocol], 30);
        let entries = wait_synced(server.debug_addr, 2).await;
        let (ours, theirs): (Vec<&Value>, Vec<&Value>) =
            entries.iter().partition(|e| e["node_id"] != envoy_id);
        let (ours, theirs) = (acked(ours[0]), acked(theirs[0]));
        drop((tool, envoy));
        assert_eq!(ours.0, theirs.0, "{protocol}: the same proxy class");
        assert_eq!(ours.1.len(), 4, "{protocol}: all four types: {ours:?}");
        assert_eq!(
            ours.1, theirs.1,
            "{protocol}: the same version ACKed for each type"
        );
        assert!(
            ours.1.iter().all(|(_, v)| v != "null"),
            "{protocol}: {ours:?}"
        );
        // Both gone before the next protocol's pair connects.
        common::wait_gone(server.debug_addr).await;
    }
    server.stop().await;
}
