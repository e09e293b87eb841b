//! What the simulated proxies tell the server about themselves, seen from the server's side:
//! `meshpilot-load run --interception none` makes each proxy a sidecar without interception,
//! whose listeners bind its own address.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshpilot::app::Server;
use meshpilot::config::ServeConfig;
use meshpilot_load::mesh::{Mesh, MeshSpec};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Writes a mesh into a fresh directory and serves it.
async fn start(spec: MeshSpec) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    Mesh::new(spec, dir.path()).write().expect("write mesh");
    let server = Server::start(ServeConfig::for_dirs(vec![dir.path().to_path_buf()]))
        .await
        .expect("start server");
    (dir, server)
}

/// GET `path` from the debug server as JSON (`Null` when it does not answer 200 with JSON).
async fn get_json(debug: SocketAddr, path: &str) -> Value {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(debug).await.ok()?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {debug}\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        if head.split_whitespace().nth(1) != Some("200") {
            return None;
        }
        serde_json::from_str(body).ok()
    };
    fetch.await.unwrap_or(Value::Null)
}

/// The load tool's binary, run against the server, kept open `hold_s` seconds after its sync.
fn load_tool(server: &Server, args: &[&str], hold_s: u64) -> KillOnDrop {
    let child = Command::new(env!("CARGO_BIN_EXE_meshpilot-load"))
        .args(["run", "--xds-address", &server.xds_addr.to_string()])
        .args(["--debug-address", &server.debug_addr.to_string()])
        .args(["--timeout", "20", "--hold", &hold_s.to_string()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start meshpilot-load");
    KillOnDrop(child)
}

/// Ends the load tool when the test ends, whatever the outcome.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `/debug/syncz` entries once `n` proxies are connected and every type they asked for is
/// SYNCED (panics after 20 s with what was seen).
async fn wait_synced(debug: SocketAddr, n: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let all = get_json(debug, "/debug/syncz").await;
        let entries = all.as_array().cloned().unwrap_or_default();
        let synced = |p: &Value| {
            let types = p["types"].as_object().cloned().unwrap_or_default();
            types.len() == 4 && types.values().all(|t| t["status"] == "SYNCED")
        };
        if entries.len() == n && entries.iter().all(synced) {
            return entries;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{n} proxies SYNCED on every type; saw {all}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every `socket_address.address` in a JSON document.
fn socket_addresses(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(a) = m.get("socket_address").and_then(|s| s["address"].as_str()) {
                out.insert(a.to_string());
            }
            m.values().for_each(|v| socket_addresses(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| socket_addresses(v, out)),
        _ => {}
    }
}

/// The addresses the listeners sent to `node_id` bind.
async fn listener_addresses(debug: SocketAddr, node_id: &str) -> BTreeSet<String> {
    let dump = get_json(
        debug,
        &format!("/debug/config_dump?proxyID={node_id}&types=lds"),
    )
    .await;
    let mut out = BTreeSet::new();
    socket_addresses(&dump, &mut out);
    out
}

/// Three proxies with `--interception none`: each announces its own IP, gets a class of its
/// own, and is served listeners bound to that IP only — three distinct listener addresses.
/// (With the default, redirect, they share one class and bind 0.0.0.0.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_mode_proxies_are_served_listeners_on_their_own_addresses() {
    let (_dir, server) = start(MeshSpec::plain(5, 2, 1)).await;
    let debug = server.debug_addr;

    let tool = load_tool(&server, &["--proxies", "3", "--interception", "none"], 30);
    let entries = wait_synced(debug, 3).await;
    let mut per_proxy = Vec::new();
    for p in &entries {
        let id = p["node_id"].as_str().expect("node id");
        per_proxy.push((id.to_string(), listener_addresses(debug, id).await));
    }
    drop(tool);
    let mut all = BTreeSet::new();
    for (id, addresses) in &per_proxy {
        let ip = id.split('~').nth(1).expect("IP in the node id");
        assert!(ip.starts_with("10."), "{id}");
        assert_eq!(
            addresses.iter().collect::<Vec<_>>(),
            [ip],
            "{id}'s listeners bind its own IP only: {per_proxy:?}"
        );
        all.extend(addresses.iter().cloned());
    }
    assert_eq!(
        all.len(),
        3,
        "three distinct listener addresses: {per_proxy:?}"
    );
    let classes: BTreeSet<String> = entries.iter().map(|p| p["class"].to_string()).collect();
    assert_eq!(classes.len(), 3, "a class per proxy: {entries:?}");

    // The default, for contrast: the same three proxies share one class and its listeners.
    wait_gone(debug).await;
    let tool = load_tool(&server, &["--proxies", "3"], 30);
    let entries = wait_synced(debug, 3).await;
    let mut all = BTreeSet::new();
    for p in &entries {
        let id = p["node_id"].as_str().expect("node id");
        all.extend(listener_addresses(debug, id).await);
    }
    drop(tool);
    assert_eq!(
        all.into_iter().collect::<Vec<_>>(),
        ["0.0.0.0"],
        "redirect-mode listeners"
    );
    server.stop().await;
}

/// Waits until no proxy is connected.
async fn wait_gone(debug: SocketAddr) {
    let started = Instant::now();
    while get_json(debug, "/debug/syncz")
        .await
        .as_array()
        .is_none_or(|a| !a.is_empty())
    {
        assert!(started.elapsed() < Duration::from_secs(10), "proxies gone");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
