//! The xDS server's defences against storms and greedy clients: a listen backlog deep enough
//! for thousands of proxies reconnecting at once (after a control-plane restart or a network
//! blip), a cap on open connections and a cap on the resource names one request may carry.
//! Each is a `serve` flag, and each refusal is counted (`meshpilot_xds_refused{limit}`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::Connected;
use tracing::warn;

use meshpilot_telemetry::Metrics;

/// The limits one xDS server applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Connections the kernel queues before they are accepted (`listen(2)`'s backlog; Linux
    /// caps it at `net.core.somaxconn`). With the common default of 128, a few thousand proxies
    /// reconnecting at once overflow it and see their connections reset.
    pub listen_backlog: u32,
    /// Open connections at most (on this server's port); one more is closed as soon as it
    /// is accepted (the proxy retries with back-off).
    pub max_connections: usize,
    /// Resource names one request may carry (SotW `resource_names`; Delta subscribe,
    /// unsubscribe and initial versions together); a request with more ends its stream.
    pub max_resource_names: usize,
    /// Bytes one request message may have; a larger one ends its stream with
    /// RESOURCE_EXHAUSTED. Envoy's requests are a few KB (its node dominates).
    pub max_message_bytes: usize,
    /// Concurrent streams one HTTP/2 connection may open (advertised as
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`; HTTP/2 refuses streams past it with REFUSED_STREAM
    /// before they reach meshpilot). Envoy and pilot-agent open one ADS stream per connection.
    pub max_streams_per_connection: u32,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            listen_backlog: 4096,
            max_connections: 20_000,
            max_resource_names: 100_000,
            max_message_bytes: crate::MAX_MESSAGE_BYTES,
            max_streams_per_connection: 100,
        }
    }
}

/// Why the xDS address could not be listened on.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Creating, binding or listening on the socket failed.
    #[error("listen on {addr} (backlog {backlog}): {source}")]
    Listen {
        addr: SocketAddr,
        backlog: u32,
        #[source]
        source: io::Error,
    },
}

/// Binds `addr` with a listen backlog of `backlog` (set before `listen`, which tokio's own
/// `bind` does with 1024). Address reuse is on, as with tokio's `bind`, so a restarted server
/// binds again at once despite its old connections in TIME_WAIT.
pub fn bind(addr: SocketAddr, backlog: u32) -> Result<TcpListener, ListenError> {
    let fail = |source| ListenError::Listen {
        addr,
        backlog,
        source,
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(fail)?;
    socket.set_reuse_address(true).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    let backlog_arg = i32::try_from(backlog).unwrap_or(i32::MAX);
    socket.listen(backlog_arg).map_err(fail)?;
    TcpListener::from_std(socket.into()).map_err(fail)
}

/// Admits connections up to the limit and counts them.
pub(crate) struct ConnectionLimit {
    slots: Arc<Semaphore>,
    max: usize,
    open: IntGauge,
    refused: IntCounter,
    /// Whether a refusal was logged (once: a storm would log thousands).
    warned: AtomicBool,
}

impl ConnectionLimit {
    pub(crate) fn new(max: usize, metrics: &Metrics) -> ConnectionLimit {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        ConnectionLimit {
            slots: Arc::new(Semaphore::new(max)),
            max,
            open: metrics.xds_connections.clone(),
            refused: metrics.refused("connections"),
            warned: AtomicBool::new(false),
        }
    }

    /// The accepted connection, counted while it is open; `None` (and the connection closed
    /// by dropping it) past the limit.
    pub(crate) fn admit<IO>(&self, io: IO) -> Option<Counted<IO>> {
        match self.slots.clone().try_acquire_owned() {
            Ok(slot) => {
                self.open.inc();
                Some(Counted {
                    io,
                    _slot: slot,
                    open: self.open.clone(),
                })
            }
            Err(_) => {
                self.refused.inc();
                if !self.warned.swap(true, Ordering::Relaxed) {
                    warn!(
                        max = self.max,
                        "xDS connection refused: the server holds --xds-max-connections \
                         already (counted in meshpilot_xds_refused; logged once)"
                    );
                }
                None
            }
        }
    }
}

/// One admitted connection (plaintext or TLS): holds its slot under the limit until it closes.
pub(crate) struct Counted<IO> {
    io: IO,
    _slot: OwnedSemaphorePermit,
    open: IntGauge,
}

impl<IO> Drop for Counted<IO> {
    fn drop(&mut self) {
        self.open.dec();
    }
}

// Plain delegation to the connection: nothing is added per read or write.
impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for Counted<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> IO::ConnectInfo {
        self.io.connect_info()
    }
}

/// The size cap of request messages (enforced while decoding, in `transport`), and its refusal
/// counter.
pub(crate) struct MessageLimit {
    refused: IntCounter,
}

impl MessageLimit {
    pub(crate) fn new(metrics: &Metrics) -> MessageLimit {
        MessageLimit {
            refused: metrics.refused("message_size"),
        }
    }

    /// For a stream whose request failed to arrive: the status to end it with when the request
    /// was past the size limit (counted, naming the flag); `None` for other failures.
    pub(crate) fn refusal(&self, failed: &tonic::Status) -> Option<tonic::Status> {
        if failed.code() != tonic::Code::ResourceExhausted {
            return None;
        }
        self.refused.inc();
        Some(tonic::Status::resource_exhausted(format!(
            "{} (--xds-max-message-bytes)",
            failed.message()
        )))
    }
}

/// The resource-name cap of requests, and its refusal counter.
pub(crate) struct NamesLimit {
    pub(crate) max: usize,
    refused: IntCounter,
}

impl NamesLimit {
    pub(crate) fn new(max: usize, metrics: &Metrics) -> NamesLimit {
        NamesLimit {
            max,
            refused: metrics.refused("resource_names"),
        }
    }

    /// `Err` with the status that ends the stream when a request names more than the limit.
    pub(crate) fn check(&self, names: usize) -> Result<(), tonic::Status> {
        if names <= self.max {
            return Ok(());
        }
        self.refused.inc();
        Err(tonic::Status::resource_exhausted(format!(
            "the request names {names} resources, more than the server's limit of {} \
             (--max-resource-names-per-request)",
            self.max
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_is_set_and_the_address_can_be_bound_again_at_once() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let listener = bind("127.0.0.1:0".parse().expect("addr"), 4096).expect("bind");
            let addr = listener.local_addr().expect("addr");
            let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (server_side, _) = listener.accept().await.expect("accept");
            // The server closes first, leaving its side in TIME_WAIT, as a killed server does.
            drop(server_side);
            drop(listener);
            drop(client);
            bind(addr, 4096).expect("bound again despite TIME_WAIT");
        });
    }

    #[test]
    fn a_request_past_the_name_limit_is_refused_naming_the_flag() {
        let m = meshpilot_telemetry::metrics();
        let limit = NamesLimit::new(3, m);
        let before = m.refused("resource_names").get();
        assert!(limit.check(3).is_ok());
        let status = limit.check(4).expect_err("past the limit");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status
                .message()
                .contains("--max-resource-names-per-request")
        );
        assert_eq!(m.refused("resource_names").get(), before + 1);
    }
}
