//! More of what runs inside a pod (see `pods.rs`): a client that counts which backend answers
//! many HTTP requests, and a client-first non-HTTP pair (a client that sends one binary line
//! and an app that answers it), for what protocol sniffing must carry as TCP.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use serde_json::Value;

use super::pods::{Pod, PodApp};

impl Pod {
    /// Sends `n` GETs with `Host: host` to `target` from inside the pod (a few keep-alive
    /// connections, see [`super::distribution`]) and counts the answers by backend name (or
    /// `HTTP <status>`).
    pub fn http_distribution(
        &self,
        target: SocketAddr,
        host: &str,
        path: &str,
        n: usize,
    ) -> Result<BTreeMap<String, usize>, String> {
        let out = self.run_client(
            "http-distribution",
            &[
                ("MESHPILOT_POD_TARGET", target.to_string()),
                ("MESHPILOT_POD_HOST", host.to_string()),
                ("MESHPILOT_POD_PATH", path.to_string()),
                ("MESHPILOT_POD_COUNT", n.to_string()),
            ],
        )?;
        serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))
    }

    /// An app on the pod IP that reads one line from each connection and answers
    /// `NAME PEER LINE` (the line as received, lossily as UTF-8), then closes it.
    pub fn start_line_echo_app(&self, port: u16, name: &str) -> PodApp {
        self.start_app("line-echo-app", self.ip(), port, name)
    }

    /// Connects to `target` from inside the pod, sends `line` (it should end with `\n`) and
    /// reads until the server closes.
    pub fn tcp_send_line(&self, target: SocketAddr, line: &str) -> Result<String, String> {
        let out = self.run_client(
            "tcp-send-line",
            &[
                ("MESHPILOT_POD_TARGET", target.to_string()),
                ("MESHPILOT_POD_DATA", line.to_string()),
            ],
        )?;
        serde_json::from_str::<String>(&out).map_err(|e| format!("{e}: {out}"))
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn env_addr(name: &str) -> SocketAddr {
    env(name)
        .parse()
        .unwrap_or_else(|e| panic!("{name}: not IP:PORT: {e}"))
}

/// Runs `role` if it is one of this module's; false otherwise. `mark_ready` tells the test an
/// app listens.
pub(super) fn run(role: &str, mark_ready: &dyn Fn()) -> bool {
    match role {
        "http-distribution" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("runtime: {e}"));
            let n: usize = env("MESHPILOT_POD_COUNT")
                .parse()
                .unwrap_or_else(|e| panic!("MESHPILOT_POD_COUNT: {e}"));
            let dist = rt.block_on(super::distribution(
                env_addr("MESHPILOT_POD_TARGET"),
                &env("MESHPILOT_POD_HOST"),
                &env("MESHPILOT_POD_PATH"),
                &[],
                n,
            ));
            println!("POD-RESULT {}", serde_json::json!(dist));
        }
        "line-echo-app" => {
            let addr = env_addr("MESHPILOT_POD_ADDR");
            let name = env("MESHPILOT_POD_NAME");
            let listener =
                TcpListener::bind(addr).unwrap_or_else(|e| panic!("echo app: bind {addr}: {e}"));
            mark_ready();
            for conn in listener.incoming().flatten() {
                let peer = conn.peer_addr().map(|p| p.to_string()).unwrap_or_default();
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut line = Vec::new();
                let mut reader = BufReader::new(&conn);
                if reader.read_until(b'\n', &mut line).is_ok() {
                    let reply = format!("{name} {peer} {}", String::from_utf8_lossy(&line));
                    let _ = (&conn).write_all(reply.as_bytes());
                }
            }
        }
        "tcp-send-line" => {
            let target = env_addr("MESHPILOT_POD_TARGET");
            let send = || -> std::io::Result<String> {
                let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(env("MESHPILOT_POD_DATA").as_bytes())?;
                let mut text = String::new();
                s.read_to_string(&mut text)?;
                Ok(text)
            };
            match send() {
                Ok(text) => println!("POD-RESULT {}", Value::from(text)),
                Err(e) => println!("POD-ERROR connect/send {target}: {e}"),
            }
        }
        _ => return false,
    }
    true
}
