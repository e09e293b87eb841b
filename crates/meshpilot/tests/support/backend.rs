//! A tiny HTTP/1.1 backend: answers every request `200` with its name as the body, and echoes
//! what it saw in headers (`x-backend`: name, `x-host`: the Host header, `x-path`: the path,
//! `x-peer`: the address the connection came from, `x-seen-headers`: every request header as
//! `name=value` pairs joined by `; `). A request may ask for another status
//! (`x-reply-status: 503`) or a slow answer (`x-reply-delay-ms: 500`), for retry and timeout
//! tests.
//!
//! It runs on its own thread and tokio runtime, so it works under any test runtime flavour (and
//! from plain `#[test]`s), and stops when dropped. Keep-alive, TCP_NODELAY, and each reply is
//! written with one `write_all` — a backend that writes headers and body separately without
//! TCP_NODELAY costs ~40 ms per request through Envoy (Nagle + delayed ACK).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// How many recent requests a backend remembers (see [`Backend::recent`]).
const RECENT: usize = 64;
/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// A request as the backend saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub host: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
}

#[derive(Default)]
struct Shared {
    requests: AtomicUsize,
    // A std Mutex: locked briefly to push/copy, never across `.await`.
    recent: Mutex<VecDeque<SeenRequest>>,
}

/// A running backend; stops on drop.
pub struct Backend {
    name: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    /// Binds `ip:port` (port 0: any free port) and starts serving. Panics if the bind fails.
    pub fn start(ip: IpAddr, port: u16, name: &str) -> Backend {
        let listener = std::net::TcpListener::bind((ip, port))
            .unwrap_or_else(|e| panic!("backend {name}: bind {ip}:{port}: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("backend {name}: local_addr: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("backend {name}: set_nonblocking: {e}"));
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = oneshot::channel();
        let thread = {
            let shared = shared.clone();
            let name = name.to_string();
            std::thread::Builder::new()
                .name(format!("backend-{name}"))
                .spawn(move || serve(listener, name, shared, stopped))
                .unwrap_or_else(|e| panic!("backend thread: {e}"))
        };
        Backend {
            name: name.to_string(),
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn ip(&self) -> IpAddr {
        self.addr.ip()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests answered since start (or the last [`Backend::reset_requests`]).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    pub fn reset_requests(&self) {
        self.shared.requests.store(0, Ordering::SeqCst);
    }

    /// The most recent requests (up to 64), oldest first.
    pub fn recent(&self) -> Vec<SeenRequest> {
        let recent = self.shared.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().cloned().collect()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    listener: std::net::TcpListener,
    name: String,
    shared: Arc<Shared>,
    stopped: oneshot::Receiver<()>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("backend {name}: runtime: {e}"),
    };
    rt.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => panic!("backend {name}: listener: {e}"),
        };
        let name: Arc<str> = name.into();
        let accept = async {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(connection(stream, peer, name.clone(), shared.clone()));
            }
        };
        tokio::select! {
            _ = accept => {}
            _ = stopped => {}
        }
    });
    // Dropping the runtime cancels every connection task.
    drop(rt);
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, name: Arc<str>, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        // Read until a full request head is buffered.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD {
                return;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let Some((req, body_len, close)) = parse_head(&buf[..head_end]) else {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            return;
        };
        // Skip the body (tests send none, but be correct about Content-Length).
        while buf.len() < head_end + body_len {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + body_len);

        let asked = |name: &str| {
            req.headers
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.parse::<u64>().ok())
        };
        let status = asked("x-reply-status").unwrap_or(200);
        let delay = asked("x-reply-delay-ms").unwrap_or(0);
        let seen: Vec<String> = req
            .headers
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut reply = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
             x-backend: {}\r\nx-host: {}\r\nx-path: {}\r\nx-peer: {}\r\n\
             x-seen-headers: {}\r\n{}\r\n",
            if status == 200 { "OK" } else { "Asked" },
            name.len(),
            name,
            req.host,
            req.path,
            peer,
            seen.join("; "),
            if close { "connection: close\r\n" } else { "" },
        )
        .into_bytes();
        reply.extend_from_slice(name.as_bytes());
        shared.requests.fetch_add(1, Ordering::SeqCst);
        {
            let mut recent = shared.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(req);
        }
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        // One write per reply (see the module docs).
        if stream.write_all(&reply).await.is_err() || close {
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a request head: the request, its Content-Length, and whether to close afterwards.
/// Chunked request bodies are not supported (the connection is closed after the reply).
fn parse_head(head: &[u8]) -> Option<(SeenRequest, usize, bool)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let version = first.next()?;
    let mut headers = Vec::new();
    let mut host = String::new();
    let mut body_len = 0;
    let mut close = version == "HTTP/1.0";
    for line in lines.filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once(':')?;
        let k = k.trim().to_ascii_lowercase();
        let v = v.trim().to_string();
        match k.as_str() {
            "host" => host = v.clone(),
            "content-length" => body_len = v.parse().ok()?,
            "transfer-encoding" => close = true,
            "connection" if v.eq_ignore_ascii_case("close") => close = true,
            _ => {}
        }
        headers.push((k, v));
    }
    Some((
        SeenRequest {
            method,
            path,
            host,
            headers,
        },
        body_len,
        close,
    ))
}
