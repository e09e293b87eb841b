//! An HTTP/1.1 client for tests: single requests, keep-alive connections, and request
//! *distributions* (which backend answered how often) for weighted-routing assertions.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Longest a single request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Keep-alive connections used by [`distribution`].
pub const DISTRIBUTION_CONNECTIONS: usize = 4;

/// A response, with header names lower-cased (the last value wins for repeated headers).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    addr: SocketAddr,
    sender: SendRequest<Empty<Bytes>>,
    /// How long one request may take ([`REQUEST_TIMEOUT`] unless [`Conn::patient`]).
    timeout: Duration,
}

impl Conn {
    /// Connects (TCP_NODELAY) and performs the HTTP/1.1 handshake.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(addr))
            .await
            .with_context(|| format!("connect {addr}: timed out"))?
            .with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP/1.1 handshake with {addr}"))?;
        // The connection task ends when `sender` is dropped or the peer closes.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            addr,
            sender,
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// Sends `GET path` with `Host: host` and extra headers; reads the whole response.
    pub async fn get(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Response> {
        self.request("GET", host, path, headers).await
    }

    /// Sends `METHOD path` with `Host: host` and extra headers; reads the whole response.
    pub async fn request(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Response> {
        let addr = self.addr;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .with_context(|| format!("build request {method} {host}{path}"))?;
        let fut = async {
            self.sender.ready().await?;
            let resp = self.sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>(Response {
                status,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r.with_context(|| format!("{method} http://{host}{path} via {addr}")),
            Err(_) => {
                bail!("{method} http://{host}{path} via {addr}: timed out after {timeout:?}")
            }
        }
    }

    /// Lets each request take up to `timeout` (answers that are slow by nature, e.g. a debug
    /// dump of 20,000 objects from a debug build on a busy machine).
    pub fn patient(mut self, timeout: Duration) -> Conn {
        self.timeout = timeout;
        self
    }

    /// False once the peer closed the connection (a new one is needed).
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }
}

/// One request on a fresh connection; errors are returned (for polling).
pub async fn try_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Response> {
    Conn::connect(addr).await?.get(host, path, headers).await
}

/// One request on a fresh connection: `(status, body)`. Panics on a transport error.
pub async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    match try_get(addr, host, path, headers).await {
        Ok(r) => (r.status, r.body),
        Err(e) => panic!("{e:#}"),
    }
}

/// The key [`distribution`] counts a response under: the body for a 200, else `HTTP <status>`.
pub fn outcome(r: &Response) -> String {
    if r.status == 200 {
        r.body.clone()
    } else {
        format!("HTTP {}", r.status)
    }
}

/// Sends `n` requests over [`DISTRIBUTION_CONNECTIONS`] concurrent keep-alive connections and
/// counts the answers by [`outcome`]: a 200's body (the backend's name), or `"HTTP 404"` etc.
/// A connection the proxy closes is reopened (up to 3 times in a row); a request that still
/// fails panics.
pub async fn distribution(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> BTreeMap<String, usize> {
    let conns = DISTRIBUTION_CONNECTIONS.min(n.max(1));
    let workers = (0..conns).map(|i| {
        // Spread the remainder over the first connections.
        let count = n / conns + usize::from(i < n % conns);
        async move {
            let mut seen = BTreeMap::<String, usize>::new();
            let mut conn: Option<Conn> = None;
            for _ in 0..count {
                let mut failures = 0;
                let resp = loop {
                    let attempt = async {
                        if !conn.as_ref().is_some_and(Conn::is_open) {
                            conn = Some(Conn::connect(addr).await?);
                        }
                        match conn.as_mut() {
                            Some(c) => c.get(host, path, headers).await,
                            None => bail!("no connection"),
                        }
                    };
                    match attempt.await {
                        Ok(r) => break r,
                        Err(e) => {
                            conn = None;
                            failures += 1;
                            if failures >= 3 {
                                panic!("{e:#}");
                            }
                        }
                    }
                };
                *seen.entry(outcome(&resp)).or_default() += 1;
            }
            seen
        }
    });
    let mut total = BTreeMap::new();
    for part in futures::future::join_all(workers).await {
        for (k, v) in part {
            *total.entry(k).or_default() += v;
        }
    }
    total
}

/// Asserts that `name` got `expected_pct` percent of all responses in `dist`, within five
/// binomial standard deviations for the number of responses counted. Envoy picks a weighted
/// cluster per request at random, so a fixed band fails by chance: ±5 points at 50 % of 1,000
/// requests is 3.2 σ, a false failure in about 1 of 600 checks, which CI met. Five σ is ±7.9
/// points there (±6.3 at 80/20), a false failure in about 1 of 1.7 million, and still far
/// inside what a wrong weight, a swapped pair or an ignored split would show.
pub fn assert_share(dist: &BTreeMap<String, usize>, name: &str, expected_pct: f64) {
    let total: usize = dist.values().sum();
    assert!(total > 0, "empty distribution");
    let got = *dist.get(name).unwrap_or(&0) as f64 * 100.0 / total as f64;
    let p = expected_pct / 100.0;
    let tolerance_pts = 5.0 * (p * (1.0 - p) / total as f64).sqrt() * 100.0;
    assert!(
        (got - expected_pct).abs() <= tolerance_pts,
        "{name:?}: {got:.1}% of {total} responses, expected {expected_pct}% ± {tolerance_pts:.1} \
         points (5 σ); distribution: {dist:?}"
    );
}

/// Asserts that every response in `dist` was `name`.
pub fn assert_only(dist: &BTreeMap<String, usize>, name: &str) {
    assert!(
        dist.keys().all(|k| k == name) && !dist.is_empty(),
        "expected every response to be {name:?}; distribution: {dist:?}"
    );
}
