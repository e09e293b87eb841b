//! Restarts and replicas as a user's proxies meet them, with real Envoys: a control plane
//! killed with SIGKILL and started again on the same address must never take config away (a
//! broken file at start-up holds everything back instead of serving an empty mesh), must send
//! nothing new when its inputs did not change, and two replicas on the same inputs must serve
//! the same resources with the same versions, so a proxy that moves between them gets no push.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Backend, Envoy, Meshpilot};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(10);
/// How long Envoy must keep serving while the restarted server holds back a broken directory.
const HELD_FOR: Duration = Duration::from_secs(5);

/// A Service `web` on 8080 and one Ready Pod per `(version, ip)`.
fn web(pods: &[(&str, IpAddr)]) -> String {
    let mut y = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
                 spec:\n  selector: {app: web}\n  ports: [{name: http, port: 8080}]\n"
        .to_string();
    for (version, ip) in pods {
        y.push_str("---\n");
        y.push_str(&support::pod_yaml(
            &format!("web-{version}"),
            "default",
            &[("app", "web"), ("version", version)],
            *ip,
            &[],
        ));
    }
    y
}

/// A sidecar Envoy (interception NONE: its listeners bind its own loopback IP) of node
/// `client` in `default`, connected to `xds`.
async fn sidecar(xds: SocketAddr, delta: bool) -> (Envoy, IpAddr, String) {
    let ip = support::loopback_ip();
    let admin = support::admin_addr();
    let id = support::node_id("sidecar", ip, "client", "default");
    let mut args = support::bootstrap_args(&id, xds, admin);
    args.labels = vec![("app".to_string(), "client".to_string())];
    args.delta = delta;
    let envoy = Envoy::start(support::render_bootstrap(&args), admin).await;
    (envoy, ip, id)
}

/// Waits until `server` lists `id` as connected (after a restart: Envoy reconnected to it).
async fn wait_connected(server: &Meshpilot, id: &str) {
    support::wait_until(&format!("{id} connected"), WAIT, || async {
        json(server, "/debug/syncz").await.is_ok_and(|all| {
            all.as_array()
                .into_iter()
                .flatten()
                .any(|p| p["node_id"] == id)
        })
    })
    .await;
}

/// Waits until the server lists `id` as SYNCED on all four types.
async fn wait_synced(server: &Meshpilot, id: &str) {
    server.wait_synced(id, 4, WAIT).await;
}

async fn json(server: &Meshpilot, path: &str) -> Result<Value, String> {
    server.debug_json(path).await
}

async fn ready_status(server: &Meshpilot) -> u16 {
    server.debug_get("/ready").await.map_or(0, |r| r.status)
}

/// What a server sent `id`: its config dump with the send times removed (they differ between
/// processes; everything else — each resource and its version — must not).
async fn sent_to(server: &Meshpilot, id: &str) -> Value {
    let mut dump = json(server, &format!("/debug/config_dump?proxyID={id}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    strip(&mut dump, "last_updated");
    dump
}

fn strip(v: &mut Value, key: &str) {
    match v {
        Value::Object(map) => {
            map.remove(key);
            map.values_mut().for_each(|v| strip(v, key));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| strip(v, key)),
        _ => {}
    }
}

/// Envoy's own account of configuration changes: listeners and clusters added, modified or
/// removed, and the version each type was last updated to (a hash of `version_info`).
async fn change_counters(envoy: &Envoy) -> Vec<(&'static str, Option<u64>)> {
    let mut out = Vec::new();
    for name in [
        "listener_manager.listener_added",
        "listener_manager.listener_modified",
        "listener_manager.listener_removed",
        "cluster_manager.cluster_added",
        "cluster_manager.cluster_modified",
        "cluster_manager.cluster_removed",
        "listener_manager.lds.version",
        "cluster_manager.cds.version",
    ] {
        out.push((name, envoy.stat(name).await));
    }
    out
}

fn write(dir: &Path, text: &str) {
    support::write_manifests(dir, &[("web.yaml", text)]);
}

/// Serve, kill -9, restart on the same address with the only file broken: the restarted server
/// is not ready and serves nothing, so the reconnected Envoy keeps its listener and routes
/// for as long as the file stays broken; once it is fixed, the new config arrives.
#[tokio::test]
async fn a_restart_with_a_broken_file_takes_nothing_from_envoy() {
    let _bin = support::require_envoy!();
    let (v1_ip, v2_ip) = (support::loopback_ip(), support::loopback_ip());
    let _v1 = Backend::start(v1_ip, 8080, "v1");
    let _v2 = Backend::start(v2_ip, 8080, "v2");
    let dir = TempDir::new().expect("temp dir");
    write(dir.path(), &web(&[("v1", v1_ip)]));
    let first = Meshpilot::start(&[dir.path()]).await;
    let (envoy, ip, id) = sidecar(first.xds(), false).await;
    let listener = format!("{ip}_8080");
    envoy.wait_for_listener(&listener, WAIT).await;
    let web_addr = SocketAddr::new(ip, 8080);
    support::assert_only(
        &support::distribution(web_addr, "web", "/", &[], 10).await,
        "v1",
    );

    first.kill();
    write(
        dir.path(),
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default\n",
    );
    let second = Meshpilot::spawn_at(first.xds(), first.debug(), &[dir.path()], &[], &[]);
    wait_connected(&second, &id).await;
    let since = Instant::now();
    while since.elapsed() < HELD_FOR {
        assert_eq!(
            ready_status(&second).await,
            503,
            "ready with a file that does not parse"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let dump = envoy.config_dump().await;
    assert!(
        support::dump::listener_names(&dump).contains(&listener),
        "Envoy lost its listener {listener} to a restart with a broken file: {:?}",
        support::dump::listener_names(&dump)
    );
    support::assert_only(
        &support::distribution(web_addr, "web", "/", &[], 10).await,
        "v1",
    );
    // The operator sees why, naming the file, in the debug endpoint and the log.
    let diagnostics = json(&second, "/debug/diagnosticz")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string();
    assert!(diagnostics.contains("web.yaml"), "{diagnostics}");
    assert!(
        second.logs().contains("--serve-partial-config"),
        "{}",
        second.logs()
    );

    // Fixed (with a second version): served, and Envoy converges to it.
    let fixed = Instant::now();
    write(dir.path(), &web(&[("v1", v1_ip), ("v2", v2_ip)]));
    second.wait_ready(WAIT).await;
    support::eventually("traffic reaches v2 after the fix", WAIT, || async {
        let d = support::distribution(web_addr, "web", "/", &[], 20).await;
        if d.contains_key("v1") && d.contains_key("v2") {
            Ok(())
        } else {
            Err(format!("{d:?}"))
        }
    })
    .await;
    eprintln!("fixed file to traffic on v2: {:?}", fixed.elapsed());
    envoy.assert_all_acked().await;
}

/// `--serve-partial-config` restores serving what did load: the restarted server is ready at
/// once and the broken file's objects are gone from Envoy (which is why it is not the default).
#[tokio::test]
async fn serve_partial_config_serves_what_loaded_at_once() {
    let _bin = support::require_envoy!();
    let dir = TempDir::new().expect("temp dir");
    write(dir.path(), "kind: [");
    support::write_manifests(
        dir.path(),
        &[(
            "other.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: other, namespace: default}\n\
             spec:\n  ports: [{name: http, port: 9090}]\n",
        )],
    );
    let server = Meshpilot::spawn(&[dir.path()], &["--serve-partial-config"]);
    server.wait_ready(WAIT).await;
    let (envoy, ip, _) = sidecar(server.xds(), false).await;
    envoy.wait_for_listener(&format!("{ip}_9090"), WAIT).await;
}

/// Serve, kill -9, restart with the same files: Envoy reconnects and takes no change — no
/// listener or cluster added, modified or removed, the same versions — and the new process
/// sent it exactly what the old one had.
#[tokio::test]
async fn a_restart_with_unchanged_inputs_sends_nothing_new() {
    for delta in [false, true] {
        let _bin = support::require_envoy!();
        let v1_ip = support::loopback_ip();
        let _v1 = Backend::start(v1_ip, 8080, "v1");
        let dir = TempDir::new().expect("temp dir");
        write(dir.path(), &web(&[("v1", v1_ip)]));
        let first = Meshpilot::start(&[dir.path()]).await;
        let (envoy, ip, id) = sidecar(first.xds(), delta).await;
        envoy.wait_for_listener(&format!("{ip}_8080"), WAIT).await;
        wait_synced(&first, &id).await;
        let before = change_counters(&envoy).await;
        let sent_before = sent_to(&first, &id).await;

        first.kill();
        let second = Meshpilot::spawn_at(first.xds(), first.debug(), &[dir.path()], &[], &[]);
        second.wait_ready(WAIT).await;
        wait_synced(&second, &id).await;
        assert_eq!(
            change_counters(&envoy).await,
            before,
            "delta={delta}: Envoy's configuration changed across a restart with the same inputs"
        );
        assert_eq!(
            sent_to(&second, &id).await,
            sent_before,
            "delta={delta}: the restarted server sent other resources or versions"
        );
        support::assert_only(
            &support::distribution(SocketAddr::new(ip, 8080), "web", "/", &[], 10).await,
            "v1",
        );
    }
}

/// Two replicas on the same directory serve the same proxy byte-identical resources with the
/// same versions: the same Envoy (same node) is connected to one, then to the other, and both
/// servers' accounts of what they sent, and Envoy's versions, agree.
#[tokio::test]
async fn two_replicas_serve_identical_resources_and_versions() {
    let _bin = support::require_envoy!();
    let dir = support::scenario_dir("03-bookinfo");
    let a = Meshpilot::start(&[dir.as_path()]).await;
    let b = Meshpilot::start(&[dir.as_path()]).await;
    for (kind, namespace, labels, delta) in [
        ("router", "istio-system", ("istio", "ingressgateway"), false),
        ("sidecar", "default", ("app", "productpage"), true),
    ] {
        let ip = support::loopback_ip();
        let id = support::node_id(kind, ip, "p", namespace);
        let mut seen = Vec::new();
        for server in [&a, &b] {
            let admin = support::admin_addr();
            let mut args = support::bootstrap_args(&id, server.xds(), admin);
            args.labels = vec![(labels.0.to_string(), labels.1.to_string())];
            args.delta = delta;
            let envoy = Envoy::start(support::render_bootstrap(&args), admin).await;
            wait_synced(server, &id).await;
            envoy.assert_all_acked().await;
            let mut theirs = envoy.config_dump().await;
            strip(&mut theirs, "last_updated");
            seen.push((sent_to(server, &id).await, versions(&theirs)));
            drop(envoy);
        }
        let sent = seen[0].0["configs"].as_array().map_or(0, Vec::len);
        assert!(sent >= 4, "{id}: nothing sent? {}", seen[0].0);
        assert_eq!(
            seen[0].0, seen[1].0,
            "{id}: the replicas sent different config"
        );
        assert_eq!(seen[0].1, seen[1].1, "{id}: Envoy holds different versions");
        assert!(!seen[0].1.is_empty());
    }
}

/// Every `version_info` in an Envoy config dump, by resource name and section.
fn versions(dump: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    collect_versions(dump, "", &mut out);
    out.sort();
    out
}

fn collect_versions(v: &Value, name: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            let here = map
                .get("cluster")
                .or_else(|| map.get("listener"))
                .or_else(|| map.get("route_config"))
                .and_then(|r| r["name"].as_str())
                .unwrap_or(name);
            if let Some(version) = map.get("version_info").and_then(Value::as_str) {
                out.push((here.to_string(), version.to_string()));
            }
            for (k, child) in map {
                if k != "version_info" {
                    collect_versions(child, here, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|c| collect_versions(c, name, out)),
        _ => {}
    }
}
