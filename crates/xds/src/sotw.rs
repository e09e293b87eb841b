//! The state-of-the-world ADS state machine: per type, the subscription, the last response sent
//! and what Envoy made of it, with the nonce/ACK/NACK rules of the xDS protocol doc
//! (<https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol>).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use prost::Message;
use tracing::debug;

use super::delta::DiffCache;
use super::events::{ProtocolEvent, ProtocolObserver, Versions};
use super::protocol::{LastResponse, Nonces, Protocol};
use super::registry::Variant;
use super::resources::{Names, content_for};
use super::wire::{SotwResponse, sotw_resources};
use meshpilot_snapshot::{PerType, Snapshot, XdsType};

/// One SotW stream: the state of every type the proxy has asked for.
#[derive(Debug)]
pub(crate) struct SotwStream {
    types: PerType<SotwType>,
    nonces: Nonces,
    connected_at: SystemTime,
}

/// Protocol state of one type on a SotW stream.
#[derive(Debug, Default)]
struct SotwType {
    /// The resource names of the current subscription. Only EDS and RDS read them: CDS and LDS
    /// are wildcard subscriptions.
    names: Names,
    /// The last response sent, whether Envoy has answered it yet or not.
    last_sent: Option<LastResponse>,
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
    fn classify<'r>(&self, req: &'r DiscoveryRequest) -> RequestKind<'r> {
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
        names: Vec<String>,
        snap: Option<&Snapshot>,
        events: &mut impl ProtocolObserver,
    ) -> bool {
        let names: BTreeSet<String> = if t.is_wildcard() {
            BTreeSet::new()
        } else {
            names.into_iter().collect()
        };
        if self.names.same_as(&names) {
            return false;
        }
        self.names = Names::new(names, snap.map(|s| s.set(t)));
        events.observe(ProtocolEvent::Subscribed {
            t,
            wildcard: t.is_wildcard(),
            names: &self.names,
        });
        true
    }

    /// Transition: answer with the stream's current content of the type. Unless `force`d,
    /// nothing is sent when that content has the version of the last response ("When to send an
    /// update": only when the resources have changed).
    fn respond(
        &mut self,
        t: XdsType,
        snap: &Snapshot,
        force: bool,
        stream: (&mut Nonces, SystemTime),
        events: &mut impl ProtocolObserver,
    ) -> Option<SotwResponse> {
        let started = Instant::now();
        let (nonces, connected_at) = stream;
        let content = content_for(snap, t, t.is_wildcard(), &self.names);
        let unchanged =
            self.last_sent.as_ref().map(|s| s.version.as_str()) == Some(&content.version);
        if !force && unchanged {
            return None;
        }
        let nonce = nonces.next();
        let resp = SotwResponse {
            version_info: content.version.clone(),
            resources: sotw_resources(t, &content),
            count: content.items.len(),
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

impl SotwStream {
    fn handle_request(
        &mut self,
        mut req: DiscoveryRequest,
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
        let names = std::mem::take(&mut req.resource_names);
        let changed = st.subscribe(t, names, snap, events);
        if !(force || changed) {
            return Vec::new();
        }
        // Without a snapshot yet, the request is remembered and answered when it is published.
        let Some(snap) = snap else {
            return Vec::new();
        };
        let stream = (&mut self.nonces, self.connected_at);
        let mut out: Vec<SotwResponse> = st
            .respond(t, snap, force, stream, events)
            .into_iter()
            .collect();
        if t == XdsType::Cluster && !out.is_empty() {
            out.extend(self.endpoints_again(snap, events));
        }
        out
    }

    /// After a cluster response, the endpoints of the stream's EDS subscription, sent again
    /// even when unchanged. Envoy re-creates every cluster whose definition changed and keeps
    /// it warming until it receives that cluster's endpoints; it asks for them with the names
    /// it already holds (which reads as an ACK), so without this response a changed cluster
    /// would wait for Envoy's initial-fetch timeout (15 s) before it serves.
    fn endpoints_again(
        &mut self,
        snap: &Snapshot,
        events: &mut impl ProtocolObserver,
    ) -> Option<SotwResponse> {
        let st = self.types.get_mut(XdsType::Endpoint)?;
        let stream = (&mut self.nonces, self.connected_at);
        st.respond(XdsType::Endpoint, snap, true, stream, events)
    }

    fn handle_snapshot(
        &mut self,
        snap: &Snapshot,
        events: &mut impl ProtocolObserver,
    ) -> Vec<SotwResponse> {
        // In push order: clusters before endpoints, both before listeners and routes. A cluster
        // response brings the endpoints after it, changed or not (see `endpoints_again`).
        let mut out = Vec::new();
        let mut clusters_sent = false;
        for t in XdsType::ALL {
            let Some(st) = self.types.get_mut(t) else {
                continue;
            };
            let force = t == XdsType::Endpoint && clusters_sent;
            let stream = (&mut self.nonces, self.connected_at);
            let resp = st.respond(t, snap, force, stream, events);
            clusters_sent |= t == XdsType::Cluster && resp.is_some();
            out.extend(resp);
        }
        out
    }
}

impl Protocol for SotwStream {
    type Request = DiscoveryRequest;
    type Response = SotwResponse;
    const VARIANT: Variant = Variant::Sotw;

    fn new(connected_at: SystemTime, _diffs: &Arc<DiffCache>) -> SotwStream {
        SotwStream {
            types: PerType::default(),
            nonces: Nonces::default(),
            connected_at,
        }
    }

    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn on_request(
        &mut self,
        req: DiscoveryRequest,
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
