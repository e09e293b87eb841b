//! The ADS server: State-of-the-World and Delta streams over one gRPC service, with nonces and
//! ACK/NACK per stream and type. It reads only published [`Snapshot`](meshpilot_snapshot::Snapshot)s
//! and the proxy identity from [`model`](meshpilot_model); it never computes configuration.
//!
//! ```text
//!  request ──► state machine (sotw / delta) ──► responses ──► transport (gRPC frames)
//!  snapshot ─┘          │
//!                       └─► protocol events ──► registry (sync status) · metrics
//! ```
//!
//! * [`protocol`] — the [`Protocol`] trait both state machines implement, nonces, and the
//!   ACK/NACK transitions of a type's last response.
//! * [`sotw`] / [`delta`] — the two protocol state machines: plain structs whose transitions
//!   (`on_request`, `on_snapshot`) return the responses to send and report [`ProtocolEvent`]s;
//!   no I/O, no registry, no metrics. [`delta`] also holds the server's cache of differences.
//! * [`events`] — the protocol events and the [`ProtocolObserver`] trait.
//! * [`server`] — the driver: a stream's life (node parsing, snapshot subscription, the send
//!   budget), applying each transition — responses to the transport, events to the observers.
//! * [`registry`] — [`Connections`], the registry of connected proxies and their sync state, an
//!   observer of each stream's events; [`tracking`] — per stream and type, every resource sent
//!   and whether the proxy took it.
//! * [`metrics`] — [`XdsMetrics`], the other observer.
//! * [`service`] — the gRPC service; [`wire`] — responses with pre-encoded, shared resources.
//! * [`resources`] — what a stream receives for a type (with empty stand-ins for missing names).
//!
//! [`Protocol`]: protocol::Protocol
//! [`ProtocolEvent`]: events::ProtocolEvent
//! [`ProtocolObserver`]: events::ProtocolObserver

mod delta;
mod events;
mod limits;
mod metrics;
mod protocol;
mod registry;
mod resources;
mod server;
mod service;
mod sotw;
pub mod sotw_request;
mod tracking;
pub mod wire;

#[cfg(test)]
mod machine_tests;
#[cfg(test)]
mod machine_tests_sotw;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_delta;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tracing::info;

use meshpilot_snapshot::SnapshotCache;
use meshpilot_transport::coalesce::{BufferPool, Coalesced};
use tokio_util::sync::CancellationToken as Shutdown;

pub use limits::{ListenError, ServeLimits, bind};
pub use metrics::XdsMetrics;
pub use registry::{
    ConnectionStatus, Connections, NackStatus, NackedResource, SyncStatus, TypeStatus, Variant,
    rfc3339,
};
pub use tracking::{ResourceStatus, SentResource};

/// Largest message accepted or sent: a full CDS or EDS response for a big mesh exceeds tonic's
/// 4 MiB default by far.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Response bytes handed to gRPC and not yet read by their proxies, across all streams: bounds
/// the server's memory when many proxies sync at once (see `server::SendBudget`).
pub const SEND_BUDGET_BYTES: usize = 96 * 1024 * 1024;

/// How one xDS port serves: plaintext or secure, and within which limits.
#[derive(Default)]
pub struct PortSettings {
    /// `Some` for the secure port.
    pub secure: Option<Secure>,
    pub limits: ServeLimits,
    /// Whether streams without a verified identity (the plaintext port) may receive TLS
    /// secrets. Off by default: anyone who can reach the port could claim a gateway's
    /// namespace and read its private keys. For loopback tests and trusted networks only.
    pub plaintext_secrets: bool,
}

/// What the secure port adds: TLS, and a token on every stream.
pub struct Secure {
    pub tls: Arc<rustls::ServerConfig>,
    pub auth: Arc<dyn StreamAuthenticator>,
}

/// A stream's caller, proven by the credentials on its request (a service-account token) or
/// by its connection's client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    pub namespace: String,
    pub service_account: String,
}

/// Checks the credentials an ADS stream opens with (its `authorization` header, and its
/// connection's TLS client certificate, DER, already verified against the mesh root by the
/// handshake); may ask another service (e.g. a Kubernetes TokenReview), hence a future.
pub trait StreamAuthenticator: Send + Sync {
    /// The caller's identity, or why it is not believed (said to the caller and logged).
    fn authenticate(
        &self,
        authorization: Option<String>,
        client_certificate: Option<Arc<[u8]>>,
    ) -> futures::future::BoxFuture<'static, Result<VerifiedIdentity, String>>;
}

/// A stream's credentials (the `authorization` header, the client certificate), checked
/// when the stream starts.
pub(crate) type PendingAuth = (
    Arc<dyn StreamAuthenticator>,
    Option<String>,
    Option<Arc<[u8]>>,
);

/// Why the xDS server stopped.
#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    /// The gRPC server failed (accepting connections or serving HTTP/2).
    #[error("xDS gRPC server on {addr} failed: {source}")]
    Serve {
        /// The listening address, when it could be read.
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Serves ADS (SotW and Delta) on `listener` until `shutdown` is cancelled; every stream ends
/// then, and the function returns once the connections have closed. Every stream's protocol
/// events go to `registry` (the sync-status registry) and `metrics`. `also` are further gRPC
/// services served on the same port (the certificate authority, as istiod serves it there).
/// With `port.secure`, connections are TLS and every stream must carry a token (the secure port);
/// otherwise plaintext HTTP/2.
pub async fn serve(
    listener: TcpListener,
    port: PortSettings,
    cache: Arc<SnapshotCache>,
    registry: Arc<Connections>,
    metrics: Arc<XdsMetrics>,
    also: Routes,
    shutdown: Shutdown,
) -> Result<(), XdsError> {
    let PortSettings {
        secure,
        limits,
        plaintext_secrets,
    } = port;
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".to_string());
    let (tls, auth) = match secure {
        Some(s) => (Some(s.tls), Some(s.auth)),
        None => (None, None),
    };
    let process_metrics = meshpilot_telemetry::metrics();
    let admission = limits::ConnectionLimit::new(limits.max_connections, process_metrics);
    let ads = server::Ads {
        auth,
        plaintext_secrets,
        cache,
        conns: registry,
        metrics,
        diffs: Arc::new(delta::DiffCache::default()),
        shutdown: shutdown.clone(),
        budget: server::SendBudget::new(SEND_BUDGET_BYTES),
        messages: Arc::new(limits::MessageLimit::new(process_metrics)),
        names: Arc::new(limits::NamesLimit::new(
            limits.max_resource_names,
            process_metrics,
        )),
    };
    let service = service::AdsService::new(ads, limits.max_message_bytes);
    let streams = limits.max_streams_per_connection;
    let routes = also.add_service(service);
    match tls {
        None => {
            // The listener's connections share one pool of gathering buffers.
            let buffers = BufferPool::new();
            let incoming = TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(Duration::from_secs(60)))
                // A connection past the limit is dropped here, which closes it.
                .filter_map(move |accepted| match accepted {
                    Ok(io) => admission.admit(Coalesced::new(io, buffers.clone())).map(Ok),
                    Err(e) => Some(Err(e)),
                });
            info!(%addr, "serving xDS");
            serve_on(incoming, routes, addr, streams, shutdown).await
        }
        Some(config) => {
            let incoming =
                meshpilot_transport::tls::incoming(listener, config).filter_map(move |accepted| {
                    match accepted {
                        Ok(io) => admission.admit(io).map(Ok),
                        Err(e) => Some(Err(e)),
                    }
                });
            info!(%addr, "serving xDS over TLS");
            serve_on(incoming, routes, addr, streams, shutdown).await
        }
    }
}

/// The gRPC server over one kind of connection.
async fn serve_on<I, IO, IE>(
    incoming: I,
    routes: Routes,
    addr: String,
    max_streams_per_connection: u32,
    shutdown: Shutdown,
) -> Result<(), XdsError>
where
    I: tokio_stream::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Server::builder()
        // Detects proxies that vanished without closing (node killed, network partition).
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(max_streams_per_connection.max(1)))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
        .map_err(|source| XdsError::Serve { addr, source })
}
