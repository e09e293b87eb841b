//! The incremental (Delta) ADS state machine: per type, the subscription (wildcard and names),
//! the versions the client holds, and ACK/NACK by nonce, following "Incremental xDS" in the xDS
//! protocol doc (<https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol>).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as WireResource,
};
use prost::Message;
use tokio::time::Instant;
use tracing::debug;

use super::resources::{lookup, to_any};
use super::server::{Protocol, Sent, StreamCtx};
use super::status::{SentResponse, Variant};
use super::tracking::Versions;
use crate::snapshot::{Resource, Snapshot, XdsType};

/// The name that subscribes to (or, unsubscribed, leaves) the wildcard.
const WILDCARD: &str = "*";

/// One Delta stream: the state of every type the proxy has asked for.
#[derive(Debug, Default)]
pub(crate) struct DeltaStream {
    types: BTreeMap<XdsType, DeltaType>,
}

/// Protocol state of one type on a Delta stream.
#[derive(Debug, Default)]
struct DeltaType {
    /// The stream receives every resource of the type: the first CDS/LDS request had an empty
    /// subscribe list (legacy wildcard), or `*` was subscribed explicitly.
    wildcard: bool,
    /// Names subscribed explicitly.
    subscribed: BTreeSet<String>,
    /// Name → version the client holds: seeded from `initial_resource_versions`, then updated
    /// by every response we send. A NACKed response updates it too, so rejected versions are not
    /// sent again until they change.
    held: BTreeMap<String, String>,
    /// Names subscribed since the last response. A name that does not exist is owed a
    /// `removed_resources` entry ("Knowing when a requested resource does not exist").
    owed: BTreeSet<String>,
    /// The type's first request is answered even when there is nothing to send, so that the
    /// client's initialisation does not wait for `initial_fetch_timeout`.
    first_response_owed: bool,
    /// The last response sent.
    sent: Option<Sent>,
}

/// The difference between what the client holds and what it should hold.
#[derive(Debug, Default)]
struct Diff {
    changed: Vec<Arc<Resource>>,
    removed: Vec<String>,
}

impl DeltaType {
    /// What the stream should hold under `name`, if anything.
    fn wanted(&self, snap: &Snapshot, t: XdsType, name: &str) -> Option<Arc<Resource>> {
        if self.subscribed.contains(name) {
            // Explicit names get the empty stand-in when missing (EDS/RDS).
            lookup(snap, t, name)
        } else if self.wildcard {
            snap.get(t).items.get(name).cloned()
        } else {
            None
        }
    }

    fn diff(&self, snap: &Snapshot, t: XdsType) -> Diff {
        let mut diff = Diff::default();
        let from_wildcard = self
            .wildcard
            .then(|| snap.get(t).items.keys())
            .into_iter()
            .flatten();
        let candidates: BTreeSet<&String> = from_wildcard.chain(self.subscribed.iter()).collect();
        for name in candidates {
            if let Some(r) = self.wanted(snap, t, name)
                && self.held.get(name) != Some(&r.version)
            {
                diff.changed.push(r);
            }
        }
        let gone: BTreeSet<&String> = self
            .held
            .keys()
            .chain(self.owed.iter())
            .filter(|name| self.wanted(snap, t, name).is_none())
            .collect();
        diff.removed = gone.into_iter().cloned().collect();
        diff
    }

    /// Transition: the type's first request on this stream. Chooses the legacy wildcard and
    /// seeds what the client already holds from a previous connection.
    fn start(&mut self, ctx: &StreamCtx, t: XdsType, req: &DeltaDiscoveryRequest) {
        self.first_response_owed = true;
        self.wildcard = t.is_wildcard() && req.resource_names_subscribe.is_empty();
        let wildcard = self.wildcard;
        ctx.reg.update(t, |s| s.wildcard = wildcard);
        self.held = req
            .initial_resource_versions
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
    }

    /// Transition: apply the request's subscription changes. True when anything changed.
    fn subscribe(&mut self, ctx: &StreamCtx, t: XdsType, req: &DeltaDiscoveryRequest) -> bool {
        let mut changed = false;
        for name in &req.resource_names_subscribe {
            if name == WILDCARD {
                changed |= !self.wildcard;
                self.wildcard = true;
            } else if self.subscribed.insert(name.clone()) {
                self.owed.insert(name.clone());
                changed = true;
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == WILDCARD {
                changed |= self.wildcard;
                self.wildcard = false;
            } else if self.subscribed.remove(name) {
                self.owed.remove(name);
                changed = true;
            }
        }
        if changed {
            let (wildcard, subscribed) = (self.wildcard, self.subscribed.clone());
            ctx.reg.update(t, |s| {
                s.wildcard = wildcard;
                s.subscribed = subscribed;
            });
        }
        changed
    }

    fn ack(&mut self, ctx: &StreamCtx, t: XdsType) {
        if let Some(sent) = &mut self.sent {
            sent.record_ack(ctx, t);
        }
    }

    /// Transition: Envoy rejected the last response. `held` already records its versions, so
    /// they are not sent again; the next response carries only later changes.
    fn nack(&mut self, ctx: &StreamCtx, t: XdsType, message: String) {
        if let Some(sent) = &mut self.sent {
            sent.record_nack(ctx, t, message);
        }
    }

    /// Transition: send what the client lacks and remove what it should no longer hold; nothing
    /// when there is no difference (unless the first response is still owed).
    fn respond(
        &mut self,
        ctx: &mut StreamCtx,
        t: XdsType,
        snap: &Snapshot,
    ) -> Option<DeltaDiscoveryResponse> {
        let started = Instant::now();
        let diff = self.diff(snap, t);
        self.owed.clear();
        if diff.changed.is_empty() && diff.removed.is_empty() && !self.first_response_owed {
            return None;
        }
        self.first_response_owed = false;
        for r in &diff.changed {
            self.held.insert(r.name.clone(), r.version.clone());
        }
        for name in &diff.removed {
            self.held.remove(name);
        }
        let nonce = ctx.nonces.next();
        let resp = DeltaDiscoveryResponse {
            system_version_info: snap.version.clone(),
            resources: diff
                .changed
                .iter()
                .map(|r| WireResource {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    resource: Some(to_any(t, r)),
                    ..Default::default()
                })
                .collect(),
            type_url: t.type_url().to_string(),
            removed_resources: diff.removed.clone(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        debug!(
            r#type = %t,
            version = %snap.version,
            nonce = %nonce,
            changed = resp.resources.len(),
            removed = resp.removed_resources.len(),
            "sending",
        );
        ctx.reg.record_sent(
            t,
            SentResponse {
                version: &snap.version,
                nonce: &nonce,
                versions: Versions::Delta,
                resources: &diff.changed,
                removed: &resp.removed_resources,
                bytes: resp.encoded_len(),
                took: started.elapsed(),
            },
        );
        self.sent = Some(Sent::new(snap.version.clone(), nonce, ctx, snap));
        Some(resp)
    }
}

impl DeltaStream {
    fn handle_request(
        &mut self,
        ctx: &mut StreamCtx,
        req: DeltaDiscoveryRequest,
        snap: Option<&Snapshot>,
    ) -> Vec<DeltaDiscoveryResponse> {
        let Some(t) = XdsType::from_type_url(&req.type_url) else {
            debug!(type_url = %req.type_url, "ignoring a request for a type this server does not serve");
            return Vec::new();
        };
        let first = !self.types.contains_key(&t);
        let st = self.types.entry(t).or_default();
        if first {
            st.start(ctx, t, &req);
        }
        // ACK/NACK by nonce, as in SotW: only the newest nonce of the type counts.
        if !req.response_nonce.is_empty() {
            match &st.sent {
                Some(sent) if sent.nonce == req.response_nonce => match &req.error_detail {
                    Some(err) => st.nack(ctx, t, err.message.clone()),
                    None => st.ack(ctx, t),
                },
                _ => debug!(r#type = %t, nonce = %req.response_nonce, "stale nonce"),
            }
        }
        // Unlike SotW, a Delta request carries subscription *changes*, not the whole set: they
        // are applied even with a stale nonce, or they would be lost.
        let changed = st.subscribe(ctx, t, &req);
        if !(first || changed) {
            return Vec::new();
        }
        let Some(snap) = snap else {
            return Vec::new();
        };
        st.respond(ctx, t, snap).into_iter().collect()
    }

    fn handle_snapshot(
        &mut self,
        ctx: &mut StreamCtx,
        snap: &Snapshot,
    ) -> Vec<DeltaDiscoveryResponse> {
        // In push order: clusters before endpoints, both before listeners and routes.
        XdsType::ALL
            .into_iter()
            .filter_map(|t| self.types.get_mut(&t)?.respond(ctx, t, snap))
            .collect()
    }
}

impl Protocol for DeltaStream {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const VARIANT: Variant = Variant::Delta;

    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn on_request(
        &mut self,
        ctx: &mut StreamCtx,
        req: DeltaDiscoveryRequest,
        snap: Option<&Snapshot>,
    ) -> Vec<DeltaDiscoveryResponse> {
        self.handle_request(ctx, req, snap)
    }

    fn on_snapshot(&mut self, ctx: &mut StreamCtx, snap: &Snapshot) -> Vec<DeltaDiscoveryResponse> {
        self.handle_snapshot(ctx, snap)
    }
}
