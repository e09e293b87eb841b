//! ADS from the local Envoy (plaintext gRPC on a Unix socket) to the control plane's secure port
//! (TLS), with the pod's token added to each stream — what Istio's agent's XDS proxy does, so a
//! stock Envoy never holds the token or needs the control plane's TLS settings. Streams are
//! forwarded at the HTTP/2 level, frames and trailers as they come, over one shared upstream
//! connection that is opened again when it closes.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::UnixListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::tls::Upstream;

type Body = Either<Incoming, Empty<Bytes>>;

/// Forwards streams to the secure port.
struct Forwarder {
    upstream: Upstream,
    token_file: PathBuf,
    connection: Mutex<Option<SendRequest<Incoming>>>,
}

impl Forwarder {
    /// The shared upstream connection, opened when there is none or it has closed.
    async fn sender(&self) -> Result<SendRequest<Incoming>, String> {
        let mut guard = self.connection.lock().await;
        if let Some(s) = guard.as_ref()
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        let tls = self
            .upstream
            .connect()
            .await
            .map_err(|e| format!("connect to the control plane: {e}"))?;
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|e| format!("HTTP/2 to the control plane: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "upstream connection ended");
            }
        });
        *guard = Some(sender.clone());
        Ok(sender)
    }

    async fn forward(&self, req: Request<Incoming>) -> Response<Body> {
        let token = match std::fs::read_to_string(&self.token_file) {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                warn!(path = %self.token_file.display(), "no token to send to the control plane");
                return grpc_error(16, "the agent has no token"); // UNAUTHENTICATED
            }
        };
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".to_string());
        parts.uri = match format!("https://{}{path}", self.upstream.server_name()).parse() {
            Ok(u) => u,
            Err(_) => return grpc_error(13, "bad request path"),
        };
        match format!("Bearer {token}").parse() {
            Ok(v) => {
                parts.headers.insert(http::header::AUTHORIZATION, v);
            }
            Err(_) => return grpc_error(16, "the token is not a valid header value"),
        }
        let mut sender = match self.sender().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot reach the control plane");
                return grpc_error(14, &e); // UNAVAILABLE
            }
        };
        match sender.send_request(Request::from_parts(parts, body)).await {
            Ok(resp) => resp.map(Either::Left),
            Err(e) => {
                warn!(error = %e, "stream to the control plane failed");
                grpc_error(14, &e.to_string())
            }
        }
    }
}

/// A gRPC error as a trailers-only response.
fn grpc_error(code: u8, message: &str) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Empty::new()));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", http::HeaderValue::from(u16::from(code)));
    if let Ok(v) = http::HeaderValue::from_str(&message.replace(['\r', '\n'], " ")) {
        h.insert("grpc-message", v);
    }
    resp
}

/// Serves the ADS proxy on `listener` until `shutdown`.
pub async fn serve(
    listener: UnixListener,
    upstream: Upstream,
    token_file: PathBuf,
    shutdown: CancellationToken,
) {
    let forwarder = Arc::new(Forwarder {
        upstream,
        token_file,
        connection: Mutex::new(None),
    });
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!(error = %e, "XDS socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let forwarder = forwarder.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let forwarder = forwarder.clone();
                async move { Ok::<_, Infallible>(forwarder.forward(req).await) }
            });
            if let Err(e) = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(error = %e, "Envoy's XDS connection ended");
            }
        });
    }
}
