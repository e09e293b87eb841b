//! The driver of ADS streams: per stream, a stream of responses that reads the node from the
//! first request, subscribes to the proxy's class snapshot, and runs a protocol state machine
//! ([`Protocol`], implemented by SotW and Delta) on requests and snapshot changes. It applies
//! each transition: the responses go to the transport (within the [`SendBudget`]), the protocol
//! events to the stream's observers (the sync-status registry and the metrics). It runs on the
//! task that writes the stream's frames, as that task asks for the next response.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::WatchStream;
use tonic::Status;
use tracing::{Span, debug, info, warn};

use super::delta::DiffCache;
use super::events::{ProtocolEvent, ProtocolObserver};
use super::limits::{MessageLimit, NamesLimit};
use super::metrics::{StreamMetrics, XdsMetrics};
use super::protocol::Protocol;
use super::registry::{Connections, Registration};
use super::wire::Framed;
use meshpilot_model::proxy::MetadataValue;
use meshpilot_model::{Labels, Proxy};
use meshpilot_snapshot::{SnapshotCache, XdsType};
use tokio_util::sync::CancellationToken as Shutdown;

/// A stream's observers: the sync-status registry and the metrics see every protocol event.
struct StreamObservers {
    registration: Registration,
    metrics: StreamMetrics,
}

impl ProtocolObserver for StreamObservers {
    fn observe(&mut self, event: ProtocolEvent<'_>) {
        self.metrics.observe(&event);
        self.registration.observe(event);
    }
}

/// The `AggregatedDiscoveryService` implementation.
pub(crate) struct Ads {
    /// On the secure port: every stream's caller must be authenticated, and may only speak for
    /// proxies of its own namespace.
    pub auth: Option<Arc<dyn crate::StreamAuthenticator>>,
    /// Whether an unauthenticated stream may receive TLS secrets (see `PortSettings`).
    pub plaintext_secrets: bool,
    pub cache: Arc<SnapshotCache>,
    pub conns: Arc<Connections>,
    pub metrics: Arc<XdsMetrics>,
    /// Delta differences between shared sets, computed once for all the server's streams.
    pub diffs: Arc<DiffCache>,
    pub shutdown: Shutdown,
    pub budget: Arc<SendBudget>,
    /// The cap on resource names per request.
    pub names: Arc<NamesLimit>,
    /// The cap on request size (its refusals).
    pub messages: Arc<MessageLimit>,
}

/// Unshared response bytes in flight across all streams, in KiB units.
///
/// A SotW response's resources are the set's shared bytes and cost nothing per stream (unless
/// the response is small enough to be copied into one buffer: `wire::COALESCE_UP_TO`); a Delta
/// response's are concatenated for its stream, and when a thousand proxies connect at once a
/// thousand such copies would sit in memory together. A stream takes permits for the unshared
/// size of its response before handing it to the HTTP/2 layer and gives them back when the proxy
/// sends its next request (it has read the response) or after [`PERMIT_TIMEOUT`]. A stream holds at most one response's permits and releases them
/// before asking for more, so no stream waits while holding: streams cannot deadlock each other.
#[derive(Debug)]
pub(crate) struct SendBudget {
    semaphore: Arc<Semaphore>,
    units: u32,
}

/// How long a response's permits can be held waiting for the proxy's next request.
const PERMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Responses with fewer unshared bytes than this take no permits, and arm no timer for them:
/// a stream's last response is all the budget ever counts of it, so leaving these out adds at
/// most 1 KiB per stream (5 MiB at 5,000 proxies). An endpoint update is about 450 bytes, and
/// a thousand proxies under a stream of them would otherwise take and give back a permit, and
/// set and clear a timer, with every response.
const BUDGET_FROM: usize = 1024;

impl SendBudget {
    pub(crate) fn new(bytes: usize) -> Arc<SendBudget> {
        let units = u32::try_from(bytes / 1024).unwrap_or(u32::MAX).max(1);
        Arc::new(SendBudget {
            semaphore: Arc::new(Semaphore::new(units as usize)),
            units,
        })
    }

    /// Waits for the permits of `bytes` unshared bytes; `None` when it takes none.
    async fn acquire(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        if bytes < BUDGET_FROM {
            return None;
        }
        let want = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.units);
        self.semaphore.clone().acquire_many_owned(want).await.ok()
    }
}

/// A stream's permits for its last response, and when they lapse.
#[derive(Default)]
struct SendPermits(Option<(OwnedSemaphorePermit, tokio::time::Instant)>);

impl SendPermits {
    fn release(&mut self) {
        self.0 = None;
    }

    async fn expired(&self) {
        match &self.0 {
            Some((_, deadline)) => tokio::time::sleep_until(*deadline).await,
            None => std::future::pending().await,
        }
    }
}

impl Ads {
    /// The responses of one stream. The stream's work — reading requests, following the class
    /// snapshot, the protocol state machine — runs when the HTTP/2 layer polls for the next
    /// response, on the task that already sends the stream's frames: no task or channel of its
    /// own, so a push wakes one task per proxy instead of two and a response is not handed
    /// between them.
    pub(crate) fn stream<P: Protocol>(
        &self,
        inbound: impl Stream<Item = Result<P::Request, Status>> + Unpin + Send + 'static,
        peer: Option<SocketAddr>,
        credentials: Option<crate::PendingAuth>,
    ) -> impl Stream<Item = Result<P::Response, Status>> + Send + 'static {
        let server = StreamServer {
            credentials,
            plaintext_secrets: self.plaintext_secrets,
            cache: self.cache.clone(),
            conns: self.conns.clone(),
            metrics: self.metrics.clone(),
            diffs: self.diffs.clone(),
            budget: self.budget.clone(),
            names: self.names.clone(),
            messages: self.messages.clone(),
        };
        run_stream::<P>(inbound, peer, server, self.shutdown.clone())
    }
}

/// What a stream uses of its server.
struct StreamServer {
    /// On the secure port: the credentials to check before anything else.
    credentials: Option<crate::PendingAuth>,
    plaintext_secrets: bool,
    cache: Arc<SnapshotCache>,
    conns: Arc<Connections>,
    metrics: Arc<XdsMetrics>,
    diffs: Arc<DiffCache>,
    budget: Arc<SendBudget>,
    names: Arc<NamesLimit>,
    messages: Arc<MessageLimit>,
}

/// Logs a stream's end however it ends: by the proxy, by an error, by shutdown, or by the
/// HTTP/2 layer dropping the stream (a reset or a closed connection).
struct Disconnected(u64);

impl Drop for Disconnected {
    fn drop(&mut self) {
        info!(conn = self.0, "proxy disconnected");
    }
}

/// The life of one stream: node → subscription → requests and snapshot changes until the proxy
/// disconnects or the server shuts down. Each response is handed on only when the consumer asks
/// for the next one (it has passed the last one to HTTP/2), within the [`SendBudget`].
fn run_stream<P: Protocol>(
    mut inbound: impl Stream<Item = Result<P::Request, Status>> + Unpin + Send + 'static,
    peer: Option<SocketAddr>,
    server: StreamServer,
    shutdown: Shutdown,
) -> impl Stream<Item = Result<P::Response, Status>> + Send + 'static {
    let StreamServer {
        credentials,
        plaintext_secrets,
        cache,
        conns,
        metrics,
        diffs,
        budget,
        names,
        messages,
    } = server;
    async_stream::stream! {
        let mut permits = SendPermits::default();
        // One wait for shutdown for the stream's life, not a new one (registered and removed
        // again under the token's lock) each time round the loop.
        let cancelled = shutdown.cancelled_owned();
        tokio::pin!(cancelled);
        let identity = match credentials {
            Some((auth, header, certificate)) => match auth.authenticate(header, certificate).await {
                Ok(id) => Some(id),
                Err(why) => {
                    warn!(error = %why, "refusing unauthenticated ADS stream");
                    yield Err(Status::unauthenticated(format!("authentication failure: {why}")));
                    return;
                }
            },
            None => None,
        };
        let first = tokio::select! {
            _ = &mut cancelled => return,
            first = inbound.next() => first,
        };
        let first = match first {
            Some(Ok(req)) => req,
            Some(Err(status)) => {
                if let Some(refusal) = messages.refusal(&status) {
                    warn!(error = refusal.message(), "refusing ADS request");
                    yield Err(refusal);
                } else {
                    debug!(%status, "stream failed before its first request");
                }
                return;
            }
            None => return,
        };
        if let Err(status) = names.check(P::resource_names(&first)) {
            warn!(error = status.message(), "refusing ADS request");
            yield Err(status);
            return;
        }
        let proxy = match parse_node(P::node(&first)).and_then(|p| claim_allowed(p, identity.as_ref())) {
            Ok(proxy) => proxy,
            Err(status) => {
                warn!(error = status.message(), "refusing ADS stream");
                // The status ends the stream; if the proxy is already gone there is no one to tell.
                yield Err(status);
                return;
            }
        };
        Span::current().record("node", proxy.node_id.as_str());
        // A verified caller speaks only for its own namespace (`claim_allowed`), and a class's
        // secrets are those of its namespace: such a stream may have them. Others only when
        // the operator allowed it for the plaintext port.
        let mut secrets = if identity.is_some() || plaintext_secrets {
            SecretAccess::Allowed
        } else {
            SecretAccess::Refused { told: false }
        };
        let reg = conns.register(
            proxy.node_id.clone(),
            proxy.kind,
            proxy.class_key(),
            peer,
            P::VARIANT,
        );
        info!(conn = reg.id(), class = %proxy.class_key(), "proxy connected");
        let _disconnected = Disconnected(reg.id());
        let mut state = P::new(reg.connected_since(), &diffs);
        let mut observers = StreamObservers {
            registration: reg,
            metrics: metrics.stream(proxy.kind),
        };
        // The stream holds only the latest snapshot, never a queue of them: `snapshots` reads the
        // current one, `changes` yields each new one. Its wait stays registered while a request
        // is handled, rather than being set up and torn down around every request.
        let mut snapshots = cache.subscribe(&proxy);

        let current = snapshots.borrow_and_update().clone();
        let mut changes = WatchStream::from_changes(snapshots.clone());
        let mut out = if secrets.refuses(P::type_url(&first), &proxy.node_id) {
            Vec::new()
        } else {
            state.on_request(first, current.as_deref(), &mut observers)
        };
        let mut watching = true;
        loop {
            // Sends `out` in order, each within the budget.
            for resp in out {
                // Never wait while holding: give back the last response's permits first.
                permits.release();
                let permit = tokio::select! {
                    _ = &mut cancelled => return,
                    p = budget.acquire(resp.unshared_len()) => p,
                };
                if let Some(p) = permit {
                    permits.0 = Some((p, tokio::time::Instant::now() + PERMIT_TIMEOUT));
                }
                yield Ok(resp);
            }
            out = tokio::select! {
                _ = &mut cancelled => return,
                _ = permits.expired() => {
                    permits.release();
                    Vec::new()
                }
                msg = inbound.next() => match msg {
                    Some(Ok(req)) => {
                        // The proxy has read what we sent: its bytes no longer count.
                        permits.release();
                        if let Err(status) = names.check(P::resource_names(&req)) {
                            warn!(error = status.message(), "refusing ADS request");
                            yield Err(status);
                            return;
                        }
                        if secrets.refuses(P::type_url(&req), &proxy.node_id) {
                            Vec::new()
                        } else {
                            // Not `borrow_and_update`: a pending change must still reach
                            // `on_snapshot` for the types this request is not about.
                            let current = snapshots.borrow().clone();
                            state.on_request(req, current.as_deref(), &mut observers)
                        }
                    }
                    Some(Err(status)) => {
                        if let Some(refusal) = messages.refusal(&status) {
                            warn!(error = refusal.message(), "refusing ADS request");
                            yield Err(refusal);
                        } else {
                            debug!(%status, "proxy stream ended with an error");
                        }
                        return;
                    }
                    None => return,
                },
                // While a change waits for Envoy's answer, newer snapshots are not looked at:
                // the answer sends the newest, and each publish meanwhile would only wake the
                // stream to find that it must wait.
                changed = changes.next(), if watching && !state.deferring() => match changed {
                    Some(Some(snap)) => state.on_snapshot(&snap, &mut observers),
                    Some(None) => Vec::new(),
                    None => {
                        // The class slot is gone (the cache was dropped): keep serving
                        // requests from what was sent so far.
                        watching = false;
                        Vec::new()
                    }
                }
            };
        }
    }
}

/// Whether a stream may receive TLS secrets (SDS on the ADS stream).
enum SecretAccess {
    Allowed,
    /// Its SDS requests go unanswered (the listeners naming them stay warming, as for a
    /// missing secret); `told` once the refusal was logged for this stream.
    Refused {
        told: bool,
    },
}

impl SecretAccess {
    /// True when a request of `type_url` is to be left unanswered.
    fn refuses(&mut self, type_url: &str, node: &str) -> bool {
        let SecretAccess::Refused { told } = self else {
            return false;
        };
        if type_url != XdsType::Secret.type_url() {
            return false;
        }
        if !*told {
            *told = true;
            warn!(
                node,
                "not sending TLS secrets to an unauthenticated stream: connect over the secure \
                 port with a token (or start with --plaintext-secrets on a trusted network)"
            );
        }
        true
    }
}

/// `proxy` when its caller may speak for it: an authenticated caller only for proxies of its
/// own namespace (as istiod checks a token against the node's namespace).
fn claim_allowed(
    proxy: Proxy,
    identity: Option<&crate::VerifiedIdentity>,
) -> Result<Proxy, Status> {
    match identity {
        Some(id) if id.namespace != proxy.namespace => Err(Status::permission_denied(format!(
            "node {} claims namespace {:?} but its token is for service account {}/{}",
            proxy.node_id, proxy.namespace, id.namespace, id.service_account
        ))),
        _ => Ok(proxy),
    }
}

/// The proxy identity of a stream's first request, or a status telling the operator what to fix.
pub(crate) fn parse_node(node: Option<&Node>) -> Result<Proxy, Status> {
    let Some(node) = node.filter(|n| !n.id.is_empty()) else {
        return Err(Status::invalid_argument(
            "the first request of the ADS stream carries no node id; set node.id in the Envoy \
             bootstrap (TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local)",
        ));
    };
    let metadata = metadata_from_struct(node.metadata.as_ref());
    let proxy = Proxy::parse(&node.id, &metadata)
        .map_err(|e| Status::invalid_argument(format!("bad Envoy node identity: {e}")))?;
    // istiod reads the proxy's locality from the node (the bootstrap's `node.locality`).
    Ok(match &node.locality {
        Some(l) => proxy.with_locality(&l.region, &l.zone, &l.sub_zone),
        None => proxy,
    })
}

/// Converts `node.metadata` into the subset the model reads: strings, and structs whose fields
/// are all strings (such as `LABELS`); anything else is `Other`.
pub(crate) fn metadata_from_struct(s: Option<&Struct>) -> BTreeMap<String, MetadataValue> {
    let Some(s) = s else {
        return BTreeMap::new();
    };
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), metadata_value(v)))
        .collect()
}

fn metadata_value(v: &Value) -> MetadataValue {
    match &v.kind {
        Some(Kind::StringValue(s)) => MetadataValue::String(s.clone()),
        Some(Kind::StructValue(st)) => {
            let mut map = Labels::new();
            for (k, v) in &st.fields {
                match &v.kind {
                    Some(Kind::StringValue(s)) => {
                        map.insert(k.clone(), s.clone());
                    }
                    _ => return MetadataValue::Other,
                }
            }
            MetadataValue::Map(map)
        }
        _ => MetadataValue::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(s.to_string())),
        }
    }

    #[test]
    fn metadata_keeps_strings_and_string_maps() {
        let labels = Struct {
            fields: [("app".to_string(), string("reviews"))].into(),
        };
        let mixed = Struct {
            fields: [
                ("a".to_string(), string("x")),
                (
                    "n".to_string(),
                    Value {
                        kind: Some(Kind::NumberValue(1.0)),
                    },
                ),
            ]
            .into(),
        };
        let meta = Struct {
            fields: [
                ("NAMESPACE".to_string(), string("bookinfo")),
                (
                    "LABELS".to_string(),
                    Value {
                        kind: Some(Kind::StructValue(labels)),
                    },
                ),
                (
                    "MIXED".to_string(),
                    Value {
                        kind: Some(Kind::StructValue(mixed)),
                    },
                ),
                (
                    "FLAG".to_string(),
                    Value {
                        kind: Some(Kind::BoolValue(true)),
                    },
                ),
            ]
            .into(),
        };
        let m = metadata_from_struct(Some(&meta));
        assert_eq!(m["NAMESPACE"], MetadataValue::String("bookinfo".into()));
        assert_eq!(
            m["LABELS"],
            MetadataValue::Map([("app".to_string(), "reviews".to_string())].into())
        );
        assert_eq!(m["MIXED"], MetadataValue::Other);
        assert_eq!(m["FLAG"], MetadataValue::Other);
    }

    /// The node's `locality` becomes the proxy's (and its class key's); a node without one
    /// has none.
    #[test]
    fn node_locality_is_the_proxys() {
        let id = "sidecar~10.0.0.1~a.default~default.svc.cluster.local";
        let node = Node {
            id: id.to_string(),
            locality: Some(envoy_types::pb::envoy::config::core::v3::Locality {
                region: "region-a".into(),
                zone: "zone-1".into(),
                sub_zone: String::new(),
            }),
            ..Node::default()
        };
        let proxy = parse_node(Some(&node)).expect("valid node");
        assert_eq!(proxy.locality, "region-a/zone-1");
        assert_eq!(proxy.class_key().locality, "region-a/zone-1");
        let plain = Node {
            id: id.to_string(),
            ..Node::default()
        };
        assert_eq!(parse_node(Some(&plain)).expect("valid").locality, "");
    }

    #[tokio::test]
    async fn small_responses_pass_an_exhausted_budget_and_large_ones_wait() {
        let budget = SendBudget::new(4 * 1024);
        let wait = Duration::from_millis(50);
        let large = tokio::time::timeout(wait, budget.acquire(4 * 1024))
            .await
            .expect("an empty budget grants at once")
            .expect("a large response takes permits");
        // The budget is used up: a small response still goes, without permits ...
        let small = tokio::time::timeout(wait, budget.acquire(BUDGET_FROM - 1))
            .await
            .expect("a small response never waits");
        assert!(small.is_none());
        // ... and a large one waits until the permits come back.
        assert!(
            tokio::time::timeout(wait, budget.acquire(BUDGET_FROM))
                .await
                .is_err()
        );
        drop(large);
        let again = tokio::time::timeout(wait, budget.acquire(BUDGET_FROM))
            .await
            .expect("granted once the permits are back");
        assert!(again.is_some());
    }

    #[test]
    fn missing_or_bad_node_is_invalid_argument() {
        let err = parse_node(None).expect_err("no node");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let node = Node {
            id: "gateway~1.2.3.4~a.b~b.svc.cluster.local".into(),
            ..Default::default()
        };
        let err = parse_node(Some(&node)).expect_err("bad type");
        assert!(
            err.message().contains("gateway~1.2.3.4"),
            "{}",
            err.message()
        );
    }
}
