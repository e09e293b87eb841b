//! The state-of-the-world ADS state machine: per type, the subscription, the last response sent
//! and what Envoy made of it, with the nonce/ACK/NACK rules of the xDS protocol doc
//! (<https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol>).
//!
//! Cluster and listener responses carry the complete set, as the protocol requires of them.
//! Endpoint and route responses carry only what the proxy does not hold yet: the doc's "Grouping
//! resources into responses" lets EDS and RDS responses name a subset, and Envoy keeps a
//! subscribed resource that a later response leaves out. Each response's `version_info` is still
//! the content hash of the complete set the proxy holds after it, which the registry records.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::sotw_request::SotwRequest;
use envoy_types::pb::envoy::config::core::v3::Node;
use prost::Message;
use tracing::debug;

use super::delta::{Diff, DiffCache, set_diff};
use super::events::{ProtocolEvent, ProtocolObserver, Versions};
use super::protocol::{LastResponse, Nonces, Protocol};
use super::registry::Variant;
use super::resources::{Names, content_for};
use super::wire::{SotwResponse, sotw_resources, sotw_resources_of};
use meshpilot_snapshot::{PerType, Resource, Snapshot, TypeSet, XdsType};

/// One SotW stream: the state of every type the proxy has asked for.
#[derive(Debug)]
pub(crate) struct SotwStream {
    types: PerType<SotwType>,
    nonces: Nonces,
    connected_at: SystemTime,
    /// The server's differences between shared sets: a push moves every stream of a class from
    /// the same endpoints (or routes) to the same new ones, so what changed is found and encoded
    /// once for all of them.
    diffs: Arc<DiffCache>,
}

/// Protocol state of one type on a SotW stream.
#[derive(Debug, Default)]
struct SotwType {
    /// The resource names of the current subscription. Only EDS and RDS read them: CDS and LDS
    /// are wildcard subscriptions.
    names: Names,
    /// The last response sent, whether Envoy has answered it yet or not.
    last_sent: Option<LastResponse>,
    /// What the proxy holds of the type after the last response: the complete content it was
    /// brought to (usually the snapshot's own set, shared). EDS and RDS responses send only what
    /// differs from it; for clusters, it tells which clusters a response changed.
    holds: Option<Arc<TypeSet>>,
    /// The digest of the names of the last request that left `names` as they are: a request
    /// with the same digest repeats the subscription and is not read name by name.
    names_digest: Option<u64>,
}

/// Which resources a response carries (EDS and RDS; CDS and LDS always carry the complete set).
#[derive(Debug, Clone, Copy)]
enum Answer<'d> {
    /// Only those the proxy does not hold in their current version; nothing at all when the
    /// content has not changed since the last response ("When to send an update").
    Changes,
    /// Every subscribed resource, changed or not: a first request, or Envoy asking again after
    /// reconnecting.
    Everything,
    /// The changes, plus the endpoints of the clusters that the last cluster response changed,
    /// held or not (see [`SotwStream::endpoints_again`]).
    ChangesAndEndpointsOf(&'d Diff),
}

/// What a request means, decided by its nonce ("ACK/NACK and resource type instance version" in
/// the xDS protocol doc).
#[derive(Debug, PartialEq, Eq)]
enum RequestKind<'r> {
    /// No nonce: the first request for the type on this stream, or Envoy re-requesting after a
    /// reconnect (possibly with `version_info` set from the previous server). Always answered.
    Initial,
    /// The nonce of a response that is no longer the newest for this type: Envoy had not seen
    /// our newer response when it sent this. The doc says to ignore it; Envoy sends a request
    /// with the newest nonce (and its full subscription) once it has processed that response.
    Stale,
    /// The newest nonce without `error_detail`: Envoy applied the response.
    Ack,
    /// The newest nonce with `error_detail`: Envoy rejected the response and keeps its previous
    /// configuration; the message is Envoy's.
    Nack(&'r str),
}

impl SotwType {
    fn classify<'r>(&self, req: &'r SotwRequest) -> RequestKind<'r> {
        if req.response_nonce.is_empty() {
            return RequestKind::Initial;
        }
        match &self.last_sent {
            Some(sent) if sent.nonce == req.response_nonce => match &req.error_detail {
                Some(err) => RequestKind::Nack(&err.message),
                None => RequestKind::Ack,
            },
            Some(_) => RequestKind::Stale,
            // A nonce we never sent on this stream (a client carrying one over from an earlier
            // connection): answering is the only way it gets configuration.
            None => RequestKind::Initial,
        }
    }

    /// Transition: the request's names become the subscription. True when they changed.
    fn subscribe(
        &mut self,
        t: XdsType,
        req: &SotwRequest,
        snap: Option<&Snapshot>,
        events: &mut impl ProtocolObserver,
    ) -> bool {
        // An ACK repeats the subscription (every EDS name of the stream's clusters): the same
        // names in the same order are the same digest, and nothing more is read.
        let digest = req.names_digest();
        if self.names_digest == Some(digest) {
            return false;
        }
        let mut sorted: Vec<std::borrow::Cow<'_, str>> = if t.is_wildcard() {
            Vec::new()
        } else {
            req.resource_names().collect()
        };
        sorted.sort_unstable();
        sorted.dedup();
        self.names_digest = Some(digest);
        if self.names.len() == sorted.len() && self.names.iter().eq(sorted.iter().map(|n| &**n)) {
            return false;
        }
        let names: BTreeSet<String> = sorted.into_iter().map(|n| n.into_owned()).collect();
        self.names = Names::new(names, snap.map(|s| s.set(t)));
        events.observe(ProtocolEvent::Subscribed {
            t,
            wildcard: t.is_wildcard(),
            names: &self.names,
        });
        true
    }

    /// Transition: answer with the stream's current content of the type (see [`Answer`] for
    /// which resources go out). Returns nothing when there is nothing to send.
    fn respond(
        &mut self,
        t: XdsType,
        snap: &Snapshot,
        answer: Answer<'_>,
        stream: (&mut Nonces, SystemTime, &DiffCache),
        events: &mut impl ProtocolObserver,
    ) -> Option<SotwResponse> {
        // No names for an EDS or RDS subscription is Envoy unsubscribing from the type (it has
        // no EDS clusters, or no RDS listeners, left): nothing is sent, and Envoy would not
        // acknowledge a response for a type it no longer watches.
        if !t.is_wildcard() && self.names.is_empty() {
            return None;
        }
        let started = Instant::now();
        let (nonces, connected_at, diffs) = stream;
        let content = content_for(snap, t, t.is_wildcard(), &self.names);
        let unchanged =
            self.last_sent.as_ref().map(|s| s.version.as_str()) == Some(&content.version);
        if unchanged && matches!(answer, Answer::Changes) {
            return None;
        }
        let (resources, count) = match (answer, &self.holds) {
            (Answer::Changes | Answer::ChangesAndEndpointsOf(_), Some(held))
                if !t.is_wildcard() =>
            {
                let shared = Arc::ptr_eq(&content, snap.set(t));
                changed_resources(t, held, (&content, shared), answer, diffs)
            }
            _ => (sotw_resources(t, &content), content.items.len()),
        };
        if unchanged && count == 0 {
            return None;
        }
        let nonce = nonces.next();
        let resp = SotwResponse {
            version_info: content.version.clone(),
            resources,
            count,
            type_url: t.type_url().to_string(),
            nonce: nonce.clone(),
        };
        debug!(r#type = %t, version = %content.version, nonce = %nonce, resources = resp.count, "sending");
        let sent = self.last_sent.insert(LastResponse::new(
            content.version.clone(),
            nonce,
            connected_at,
            snap,
        ));
        self.holds = Some(content.clone());
        events.observe(ProtocolEvent::Sent {
            t,
            version: &sent.version,
            nonce: &sent.nonce,
            versions: Versions::Sotw(&sent.version),
            holds: content,
            bytes: resp.encoded_len(),
            took: started.elapsed(),
        });
        Some(resp)
    }
}

/// The `resources` field (and count) of an endpoint or route response to a proxy that holds
/// `held` and is to hold `content`: what differs, plus, for `ChangesAndEndpointsOf`, the
/// assignments of the changed clusters (built for this stream: that happens only when clusters
/// change). When `content` is the snapshot's own set (`shared`, the usual case), the difference
/// and its bytes are those of every stream making the same move, from the server's cache; a
/// stream with a subscription of its own computes its difference alone, without filling the
/// cache with sets no other stream holds.
///
/// A subscribed name the snapshot lacks is in `content` as an empty stand-in (see
/// [`content_for`]), so it goes out like any change: Envoy clears what it held of it. Names no
/// longer subscribed need nothing: Envoy drops them itself when it unsubscribes.
fn changed_resources(
    t: XdsType,
    held: &Arc<TypeSet>,
    (content, shared): (&Arc<TypeSet>, bool),
    answer: Answer<'_>,
    diffs: &DiffCache,
) -> (bytes::Bytes, usize) {
    let diff = if Arc::ptr_eq(held, content) {
        None
    } else if shared {
        Some(diffs.get(Some(held), content, |h| set_diff(h, content)))
    } else {
        Some(Arc::new(set_diff(held, content)))
    };
    let again: &[Arc<Resource>] = match answer {
        Answer::ChangesAndEndpointsOf(clusters) => &clusters.changed,
        Answer::Changes | Answer::Everything => &[],
    };
    let mut again = again
        .iter()
        .filter_map(|c| content.items.get(&c.name))
        .peekable();
    if again.peek().is_none() {
        return match diff {
            Some(d) => (d.sotw_wire(t), d.changed.len()),
            None => (bytes::Bytes::new(), 0),
        };
    }
    let mut out: BTreeMap<&str, &Resource> = again.map(|r| (&*r.name, &**r)).collect();
    for r in diff.iter().flat_map(|d| d.changed.iter()) {
        out.insert(&r.name, r);
    }
    let count = out.len();
    (sotw_resources_of(t, out.into_values()), count)
}

impl SotwStream {
    fn handle_request(
        &mut self,
        req: SotwRequest,
        snap: Option<&Snapshot>,
        events: &mut impl ProtocolObserver,
    ) -> Vec<SotwResponse> {
        let Some(t) = XdsType::from_type_url(&req.type_url) else {
            debug!(type_url = %req.type_url, "ignoring a request for a type this server does not serve");
            return Vec::new();
        };
        let st = self.types.or_default(t);
        let kind = st.classify(&req);
        let force = kind == RequestKind::Initial;
        match kind {
            RequestKind::Stale => {
                events.observe(ProtocolEvent::StaleNonce {
                    t,
                    nonce: &req.response_nonce,
                });
                return Vec::new();
            }
            RequestKind::Initial => events.observe(ProtocolEvent::InitialRequest {
                t,
                wildcard: t.is_wildcard(),
            }),
            RequestKind::Ack => {
                if let Some(sent) = &mut st.last_sent {
                    sent.ack(t, events);
                }
            }
            RequestKind::Nack(message) => {
                if let Some(sent) = &mut st.last_sent {
                    sent.nack(t, message, events);
                }
            }
        }
        // With the newest nonce, names that differ from the subscription are a new subscription,
        // not an ACK: answered when the content for the new names differs from the last sent.
        let changed = st.subscribe(t, &req, snap, events);
        if !(force || changed) {
            return Vec::new();
        }
        // Without a snapshot yet, the request is remembered and answered when it is published.
        let Some(snap) = snap else {
            return Vec::new();
        };
        // A first request (or a reconnect) gets everything it subscribes to; a new
        // subscription gets what it does not hold yet, every newly named resource included.
        let answer = if force {
            Answer::Everything
        } else {
            Answer::Changes
        };
        let clusters_held = st.holds.clone();
        let stream = (&mut self.nonces, self.connected_at, &*self.diffs);
        let mut out: Vec<SotwResponse> = st
            .respond(t, snap, answer, stream, events)
            .into_iter()
            .collect();
        if t == XdsType::Cluster && !out.is_empty() {
            out.extend(self.endpoints_again(true, clusters_held.as_ref(), snap, events));
        }
        out
    }

    /// After a cluster response to a proxy that held `clusters_held`, the endpoint response:
    /// what changed, plus the assignments of the clusters that response changed, even when the
    /// proxy holds them. Envoy re-creates every cluster whose definition changed and keeps it
    /// warming until it receives that cluster's endpoints; it asks for them with the names it
    /// already holds (which reads as an ACK), so without this response a changed cluster would
    /// wait for Envoy's initial-fetch timeout (15 s) before it serves. The other clusters keep
    /// their endpoints and get none again.
    ///
    /// `clusters_sent`: whether a cluster response just went out; without one, only what
    /// changed is sent.
    fn endpoints_again(
        &mut self,
        clusters_sent: bool,
        clusters_held: Option<&Arc<TypeSet>>,
        snap: &Snapshot,
        events: &mut impl ProtocolObserver,
    ) -> Option<SotwResponse> {
        if !self.types.contains(XdsType::Endpoint) {
            return None;
        }
        let clusters = self
            .types
            .get(XdsType::Cluster)
            .and_then(|c| c.holds.as_ref())
            .filter(|_| clusters_sent);
        let changed = match (clusters, clusters_held) {
            (None, _) => None,
            (Some(now), Some(held)) if Arc::ptr_eq(held, now) => None,
            (Some(now), held) => Some(self.diffs.get(held, now, |h| set_diff(h, now))),
        };
        let st = self.types.get_mut(XdsType::Endpoint)?;
        let stream = (&mut self.nonces, self.connected_at, &*self.diffs);
        let answer = match &changed {
            Some(clusters) if !clusters.changed.is_empty() => {
                Answer::ChangesAndEndpointsOf(clusters)
            }
            _ => Answer::Changes,
        };
        st.respond(XdsType::Endpoint, snap, answer, stream, events)
    }

    fn handle_snapshot(
        &mut self,
        snap: &Snapshot,
        events: &mut impl ProtocolObserver,
    ) -> Vec<SotwResponse> {
        // In push order: clusters before endpoints, both before listeners and routes. A cluster
        // response brings the endpoints of the clusters it changed (see `endpoints_again`).
        let mut out = Vec::new();
        let with_clusters = self.types.contains(XdsType::Cluster);
        for t in XdsType::ALL {
            if t == XdsType::Endpoint && with_clusters {
                // Answered with the clusters, below, whether they changed or not.
                continue;
            }
            let Some(st) = self.types.get_mut(t) else {
                continue;
            };
            let clusters_held = if t == XdsType::Cluster {
                st.holds.clone()
            } else {
                None
            };
            let stream = (&mut self.nonces, self.connected_at, &*self.diffs);
            let resp = st.respond(t, snap, Answer::Changes, stream, events);
            if t == XdsType::Cluster {
                // Without a cluster response no cluster changed: the endpoint changes alone.
                let sent = resp.is_some();
                out.extend(resp);
                out.extend(self.endpoints_again(sent, clusters_held.as_ref(), snap, events));
                continue;
            }
            out.extend(resp);
        }
        out
    }
}

impl Protocol for SotwStream {
    type Request = SotwRequest;
    type Response = SotwResponse;
    const VARIANT: Variant = Variant::Sotw;

    fn new(connected_at: SystemTime, diffs: &Arc<DiffCache>) -> SotwStream {
        SotwStream {
            types: PerType::default(),
            nonces: Nonces::default(),
            connected_at,
            diffs: diffs.clone(),
        }
    }

    fn node(req: &SotwRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn resource_names(req: &SotwRequest) -> usize {
        req.name_count()
    }

    fn type_url(req: &SotwRequest) -> &str {
        &req.type_url
    }

    fn on_request(
        &mut self,
        req: SotwRequest,
        snap: Option<&Snapshot>,
        events: &mut impl ProtocolObserver,
    ) -> Vec<SotwResponse> {
        self.handle_request(req, snap, events)
    }

    fn on_snapshot(
        &mut self,
        snap: &Snapshot,
        events: &mut impl ProtocolObserver,
    ) -> Vec<SotwResponse> {
        self.handle_snapshot(snap, events)
    }
}
