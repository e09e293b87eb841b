//! Shared by the load tool's black-box tests: a served mesh, the debug server's JSON, the
//! `meshpilot-load` binary as a child process, and waits on `/debug/syncz`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshpilot::app::Server;
use meshpilot::config::ServeConfig;
use meshpilot_load::mesh::{Mesh, MeshSpec};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Writes a mesh into a fresh directory and serves it.
pub async fn start(spec: MeshSpec) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    Mesh::new(spec, dir.path()).write().expect("write mesh");
    let server = Server::start(ServeConfig::for_dirs(vec![dir.path().to_path_buf()]))
        .await
        .expect("start server");
    (dir, server)
}

/// GET `path` from the debug server as JSON (`Null` when it does not answer 200 with JSON).
pub async fn get_json(debug: SocketAddr, path: &str) -> Value {
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
pub fn load_tool(server: &Server, args: &[&str], hold_s: u64) -> KillOnDrop {
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
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `/debug/syncz` entries once `n` proxies are connected and every type they asked for is
/// SYNCED (panics after 20 s with what was seen).
pub async fn wait_synced(debug: SocketAddr, n: usize) -> Vec<Value> {
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

/// Waits until no proxy is connected.
pub async fn wait_gone(debug: SocketAddr) {
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
