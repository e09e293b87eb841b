//! More of what runs inside a pod (see `pods.rs`): a client that counts which backend answers
//! many HTTP requests; a client-first non-HTTP pair (a client that sends one binary line and an
//! app that answers it), for what protocol sniffing must carry as TCP; and a minimal gRPC pair
//! over cleartext HTTP/2 (the app speaks only HTTP/2 and answers with `grpc-status` in
//! trailers, which HTTP/1.1 would lose), for what a `grpc` port must carry.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
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

    /// A gRPC app on the pod IP (cleartext HTTP/2 only): answers every unary call with one
    /// message, `NAME PEER PATH REQUEST`, and `grpc-status: 0` in the trailers.
    pub fn start_grpc_app(&self, port: u16, name: &str) -> PodApp {
        self.start_app("grpc-app", self.ip(), port, name)
    }

    /// One unary gRPC call from inside the pod over cleartext HTTP/2 (prior knowledge) to
    /// `target` with `:authority` `host`: what came back.
    pub fn grpc_call(
        &self,
        target: SocketAddr,
        host: &str,
        path: &str,
        message: &str,
    ) -> Result<GrpcReply, String> {
        let out = self.run_client(
            "grpc-call",
            &[
                ("MESHPILOT_POD_TARGET", target.to_string()),
                ("MESHPILOT_POD_HOST", host.to_string()),
                ("MESHPILOT_POD_PATH", path.to_string()),
                ("MESHPILOT_POD_DATA", message.to_string()),
            ],
        )?;
        serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))
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

/// What a unary gRPC call got: the HTTP status, the `grpc-status` trailer (empty when
/// missing) and the reply message as text.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct GrpcReply {
    pub status: u16,
    pub grpc_status: String,
    pub message: String,
}

/// A gRPC length-prefixed message: uncompressed flag, big-endian length, bytes.
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    frame.extend_from_slice(message);
    Bytes::from(frame)
}

/// The message of a single gRPC frame (empty if `body` is not one).
fn grpc_message(body: &[u8]) -> &[u8] {
    body.get(5..).unwrap_or_default()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// Serves the gRPC app role until killed.
async fn grpc_app(addr: SocketAddr, name: String, mark_ready: &dyn Fn()) {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("grpc app: bind {addr}: {e}"));
    mark_ready();
    while let Ok((stream, peer)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let name = name.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let name = name.clone();
                async move {
                    let path = req.uri().path().to_string();
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let text = format!(
                        "{name} {peer} {path} {}",
                        String::from_utf8_lossy(grpc_message(&body))
                    );
                    let mut trailers = hyper::HeaderMap::new();
                    trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
                    let frames = vec![
                        Ok::<_, Infallible>(Frame::data(grpc_frame(text.as_bytes()))),
                        Ok(Frame::trailers(trailers)),
                    ];
                    let mut resp = Response::new(StreamBody::new(futures::stream::iter(frames)));
                    resp.headers_mut().insert(
                        "content-type",
                        hyper::header::HeaderValue::from_static("application/grpc"),
                    );
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// One unary call over cleartext HTTP/2 (prior knowledge).
async fn grpc_call(
    target: SocketAddr,
    host: &str,
    path: &str,
    message: &str,
) -> Result<GrpcReply, String> {
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(target),
    )
    .await
    .map_err(|_| format!("connect {target}: timed out"))?
    .map_err(|e| format!("connect {target}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP/2 handshake with {target}: {e}"))?;
    tokio::spawn(conn);
    let req = Request::post(format!("http://{host}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(grpc_frame(message.as_bytes())))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("call: {e}"))?;
        let status = resp.status().as_u16();
        let collected = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reply body: {e}"))?;
        let grpc_status = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = collected.to_bytes();
        Ok(GrpcReply {
            status,
            grpc_status,
            message: String::from_utf8_lossy(grpc_message(&body)).into_owned(),
        })
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| "call timed out".to_string())?
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
            let rt = runtime();
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
        "grpc-app" => {
            let addr = env_addr("MESHPILOT_POD_ADDR");
            runtime().block_on(grpc_app(addr, env("MESHPILOT_POD_NAME"), mark_ready));
        }
        "grpc-call" => {
            let got = runtime().block_on(grpc_call(
                env_addr("MESHPILOT_POD_TARGET"),
                &env("MESHPILOT_POD_HOST"),
                &env("MESHPILOT_POD_PATH"),
                &env("MESHPILOT_POD_DATA"),
            ));
            match got {
                Ok(r) => println!("POD-RESULT {}", serde_json::json!(r)),
                Err(e) => println!("POD-ERROR {e}"),
            }
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
