//! The state-of-the-world ADS state machine: per type, the subscription, the last response sent
//! and what Envoy made of it, with the nonce/ACK/NACK rules of the xDS protocol doc
//! (<https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol>).

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use prost::Message;
use tokio::time::Instant;
use tracing::debug;

use super::resources::{Names, view};
use super::server::{Protocol, Sent, StreamCtx};
use super::status::{SentResponse, Variant};
use super::tracking::Versions;
use super::wire::{SotwResponse, sotw_resources};
use meshpilot_snapshot::{PerType, Snapshot, XdsType};

/// One SotW stream: the state of every type the proxy has asked for.
#[derive(Debug, Default)]
pub(crate) struct SotwStream {
    types: PerType<SotwType>,
}

/// Protocol state of one type on a SotW stream.
#[derive(Debug, Default)]
struct SotwType {
    /// The resource names of the current subscription. Only EDS and RDS read them: CDS and LDS
    /// are wildcard subscriptions.
    names: Names,
    /// The last response sent, whether Envoy has answered it yet or not.
    sent: Option<Sent>,
}

/// What a request means, decided by its nonce ("ACK/NACK and resource type instance version" in
/// the xDS protocol doc).
#[derive(Debug, PartialEq, Eq)]
enum RequestKind {
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
    Nack(String),
}

impl SotwType {
    fn classify(&self, req: &DiscoveryRequest) -> RequestKind {
        if req.response_nonce.is_empty() {
            return RequestKind::Initial;
        }
        match &self.sent {
            Some(sent) if sent.nonce == req.response_nonce => match &req.error_detail {
                Some(err) => RequestKind::Nack(err.message.clone()),
                None => RequestKind::Ack,
            },
            Some(_) => RequestKind::Stale,
            // A nonce we never sent on this stream (a client carrying one over from an earlier
            // connection): answering is the only way it gets configuration.
            None => RequestKind::Initial,
        }
    }

    fn ack(&mut self, ctx: &StreamCtx, t: XdsType) {
        if let Some(sent) = &mut self.sent {
            sent.record_ack(ctx, t);
        }
    }

    /// Transition: Envoy rejected the last response. The state stays as it is, `sent` included,
    /// so the same content is not sent again: only a change of content (or of subscription)
    /// produces the next response, which avoids a NACK loop.
    fn nack(&mut self, ctx: &StreamCtx, t: XdsType, message: String) {
        if let Some(sent) = &mut self.sent {
            sent.record_nack(ctx, t, message);
        }
    }

    /// Transition: the request's names become the subscription. True when they changed.
    fn subscribe(
        &mut self,
        ctx: &StreamCtx,
        t: XdsType,
        names: Vec<String>,
        snap: Option<&Snapshot>,
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
        let (wildcard, subscribed) = (t.is_wildcard(), self.names.clone());
        ctx.reg.update(t, |s| {
            s.wildcard = wildcard;
            s.subscribed = subscribed;
        });
        true
    }

    /// Transition: answer with the stream's current view of the type. Unless `force`d, nothing
    /// is sent when that view has the version of the last response ("When to send an update":
    /// only when the resources have changed).
    fn respond(
        &mut self,
        ctx: &mut StreamCtx,
        t: XdsType,
        snap: &Snapshot,
        force: bool,
    ) -> Option<SotwResponse> {
        let started = Instant::now();
        let held = view(snap, t, t.is_wildcard(), &self.names);
        if !force && self.sent.as_ref().map(|s| s.version.as_str()) == Some(held.version.as_str()) {
            return None;
        }
        let nonce = ctx.nonces.next();
        let resp = SotwResponse {
            version_info: held.version.clone(),
            resources: sotw_resources(t, &held),
            count: held.items.len(),
            type_url: t.type_url().to_string(),
            nonce: nonce.clone(),
        };
        debug!(r#type = %t, version = %held.version, nonce = %nonce, resources = resp.count, "sending");
        let version = held.version.clone();
        ctx.reg.record_sent(
            t,
            SentResponse {
                version: &version,
                nonce: &nonce,
                versions: Versions::Sotw(&version),
                held,
                bytes: resp.encoded_len(),
                took: started.elapsed(),
            },
        );
        self.sent = Some(Sent::new(version, nonce, ctx, snap));
        Some(resp)
    }
}

impl SotwStream {
    fn handle_request(
        &mut self,
        ctx: &mut StreamCtx,
        req: DiscoveryRequest,
        snap: Option<&Snapshot>,
    ) -> Vec<SotwResponse> {
        let Some(t) = XdsType::from_type_url(&req.type_url) else {
            debug!(type_url = %req.type_url, "ignoring a request for a type this server does not serve");
            return Vec::new();
        };
        let st = self.types.or_default(t);
        let kind = st.classify(&req);
        match &kind {
            RequestKind::Stale => {
                debug!(r#type = %t, nonce = %req.response_nonce, "ignoring a request with a stale nonce");
                return Vec::new();
            }
            RequestKind::Initial => ctx.reg.update(t, |s| s.wildcard = t.is_wildcard()),
            RequestKind::Ack => st.ack(ctx, t),
            RequestKind::Nack(message) => st.nack(ctx, t, message.clone()),
        }
        // With the newest nonce, names that differ from the subscription are a new subscription,
        // not an ACK: answered when the content for the new names differs from the last sent.
        let changed = st.subscribe(ctx, t, req.resource_names, snap);
        let force = kind == RequestKind::Initial;
        if !(force || changed) {
            return Vec::new();
        }
        // Without a snapshot yet, the request is remembered and answered when it is published.
        let Some(snap) = snap else {
            return Vec::new();
        };
        st.respond(ctx, t, snap, force).into_iter().collect()
    }

    fn handle_snapshot(&mut self, ctx: &mut StreamCtx, snap: &Snapshot) -> Vec<SotwResponse> {
        // In push order: clusters before endpoints, both before listeners and routes.
        XdsType::ALL
            .into_iter()
            .filter_map(|t| self.types.get_mut(t)?.respond(ctx, t, snap, false))
            .collect()
    }
}

impl Protocol for SotwStream {
    type Request = DiscoveryRequest;
    type Response = SotwResponse;
    const VARIANT: Variant = Variant::Sotw;

    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn on_request(
        &mut self,
        ctx: &mut StreamCtx,
        req: DiscoveryRequest,
        snap: Option<&Snapshot>,
    ) -> Vec<SotwResponse> {
        self.handle_request(ctx, req, snap)
    }

    fn on_snapshot(&mut self, ctx: &mut StreamCtx, snap: &Snapshot) -> Vec<SotwResponse> {
        self.handle_snapshot(ctx, snap)
    }
}
