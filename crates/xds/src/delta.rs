//! The incremental (Delta) ADS state machine: per type, the subscription (wildcard and names),
//! the versions the client holds, and ACK/NACK by nonce, following "Incremental xDS" in the xDS
//! protocol doc (<https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol>). Also the
//! server's [`DiffCache`]: a push moves every Delta stream of a class between the same two
//! sets, so the difference is computed and encoded once for all of them (SotW endpoint and
//! route responses, which carry only that difference, use it too).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use imbl::ordmap::DiffItem;
use prost::Message;
use tracing::debug;

use super::events::{ProtocolEvent, ProtocolObserver, Versions};
use super::protocol::{LastResponse, Nonces, Protocol};
use super::registry::Variant;
use super::resources::{Names, content_for, names_of};
use super::wire::{DeltaResponse, delta_entry, sotw_resources_of};
use meshpilot_snapshot::{PerType, Resource, Snapshot, TypeSet, XdsType};

/// The name that subscribes to (or, unsubscribed, leaves) the wildcard.
const WILDCARD: &str = "*";

/// One Delta stream: the state of every type the proxy has asked for.
#[derive(Debug)]
pub(crate) struct DeltaStream {
    types: PerType<DeltaType>,
    nonces: Nonces,
    connected_at: SystemTime,
    /// The server's differences between shared sets, shared by all its streams.
    diffs: Arc<DiffCache>,
}

/// Protocol state of one type on a Delta stream.
#[derive(Debug, Default)]
struct DeltaType {
    /// The stream receives every resource of the type: the first CDS/LDS request had an empty
    /// subscribe list (legacy wildcard), or `*` was subscribed explicitly.
    wildcard: bool,
    /// Names subscribed explicitly (shared with the snapshot's set when they are exactly its
    /// names, as Envoy's EDS and RDS subscriptions are).
    subscribed: Names,
    /// What the client holds after our last response: the set it was brought to, usually the
    /// snapshot's own (shared, not copied). A NACKed response counts too, so rejected versions
    /// are not sent again until they change.
    client_holds: Option<Arc<TypeSet>>,
    /// Name → version the client reported holding when it reconnected
    /// (`initial_resource_versions`), until our first response reconciles them.
    reported_on_reconnect: BTreeMap<String, String>,
    /// Names subscribed since the last response. A name that does not exist is answered with a
    /// `removed_resources` entry ("Knowing when a requested resource does not exist").
    newly_subscribed: BTreeSet<String>,
    /// The type's first request is answered even when there is nothing to send, so that the
    /// client's initialisation does not wait for `initial_fetch_timeout`.
    first_response_due: bool,
    /// Names to send again even though the client holds their current version (EDS only: the
    /// endpoints of clusters just re-sent, which Envoy re-creates and keeps warming until their
    /// endpoints arrive; see [`DeltaStream::endpoints_again`]).
    send_again: BTreeSet<Arc<str>>,
    /// The last response sent.
    last_sent: Option<LastResponse>,
    /// A snapshot changed the type while its last response was unanswered: the difference
    /// goes out when Envoy answers (see [`DeltaStream::handle_snapshot`]).
    deferred: bool,
}

/// The difference between what the client holds and what it should hold. Shared by the Delta
/// streams and by the SotW streams' endpoint and route responses, which carry only `changed`.
#[derive(Debug, Default)]
pub(crate) struct Diff {
    pub(crate) changed: Vec<Arc<Resource>>,
    removed: Vec<String>,
    /// The `resources` field (and resource count) of each response carrying `changed`, split
    /// below 4 MiB; made by the first stream that sends this difference and shared by the others.
    wire: OnceLock<Vec<(usize, Bytes)>>,
    /// The same as a SotW `resources` field, made by the first SotW stream that sends it.
    sotw_wire: OnceLock<Bytes>,
}

impl Diff {
    /// `changed` as a SotW `resources` field, made once and shared.
    pub(crate) fn sotw_wire(&self, t: XdsType) -> Bytes {
        self.sotw_wire
            .get_or_init(|| sotw_resources_of(t, self.changed.iter().map(|r| &**r)))
            .clone()
    }

    fn wire(&self, t: XdsType) -> &[(usize, Bytes)] {
        self.wire.get_or_init(|| {
            split(t, &self.changed)
                .into_iter()
                .map(|chunk| (chunk.len(), DeltaResponse::resources_of(t, chunk)))
                .collect()
        })
    }
}

/// A recent difference between two shared sets, keyed by the sets' identity. The entry keeps
/// both `Arc`s, so neither address can be reused by another set while the entry exists.
type DiffEntry = (Arc<TypeSet>, Arc<TypeSet>, Arc<Diff>);

/// A few recent pairs are enough: a push moves every stream of a class from the same set to the
/// same set.
const DIFF_CACHE: usize = 32;

/// Recent differences between shared sets, owned by the server and shared by its Delta
/// streams (and by its SotW streams for endpoints and routes): a push moves every stream of a
/// class from one set to the next, and the difference (and its encoded bytes) is computed once
/// for all of them.
#[derive(Debug)]
pub(crate) struct DiffCache {
    /// Newest last. A plain mutex: held only to look up or insert, never across an await or
    /// the computation of a difference.
    recent: Mutex<Vec<DiffEntry>>,
    /// What a stream that holds nothing yet is keyed as: its first difference is the same for
    /// every stream of the class too.
    empty: Arc<TypeSet>,
}

impl Default for DiffCache {
    fn default() -> DiffCache {
        DiffCache {
            recent: Mutex::new(Vec::new()),
            empty: Arc::new(TypeSet::default()),
        }
    }
}

impl DiffCache {
    /// The difference from `holds` (or nothing) to `want`, made by `make` unless a recent one
    /// is known.
    pub(crate) fn get(
        &self,
        holds: Option<&Arc<TypeSet>>,
        want: &Arc<TypeSet>,
        make: impl FnOnce(&TypeSet) -> Diff,
    ) -> Arc<Diff> {
        let holds = holds.unwrap_or(&self.empty);
        let lookup = |recent: &Vec<DiffEntry>| {
            recent
                .iter()
                .find(|(h, w, _)| Arc::ptr_eq(h, holds) && Arc::ptr_eq(w, want))
                .map(|(_, _, d)| d.clone())
        };
        if let Some(d) = lookup(&self.recent.lock().unwrap_or_else(|p| p.into_inner())) {
            return d;
        }
        let diff = Arc::new(make(holds));
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() >= DIFF_CACHE {
            recent.remove(0);
        }
        recent.push((holds.clone(), want.clone(), diff.clone()));
        diff
    }
}

/// From a client holding `holds` to `want`, with nothing else to account for: walks only the
/// parts the two sets do not share (a patched set shares all but the changed resources' paths).
pub(crate) fn set_diff(holds: &TypeSet, want: &TypeSet) -> Diff {
    let mut diff = Diff::default();
    for item in holds.items.diff(&want.items) {
        match item {
            DiffItem::Add(_, r) => diff.changed.push(r.clone()),
            DiffItem::Update { old, new } if old.1.version != new.1.version => {
                diff.changed.push(new.1.clone());
            }
            DiffItem::Update { .. } => {}
            DiffItem::Remove(name, _) => diff.removed.push(name.to_string()),
        }
    }
    diff
}

impl DeltaType {
    fn diff(&self, want: &Arc<TypeSet>, diffs: &DiffCache) -> Arc<Diff> {
        if self.reported_on_reconnect.is_empty()
            && self.newly_subscribed.is_empty()
            && self.send_again.is_empty()
            && self
                .client_holds
                .as_ref()
                .is_some_and(|h| Arc::ptr_eq(h, want))
        {
            return Arc::new(Diff::default());
        }
        // The usual case — the stream holds one shared set and wants another — is the same for
        // every stream of the class: computed once and shared. Names subscribed since the last
        // response change nothing in it when they all exist (they are in `want`, hence sent):
        // a new proxy's EDS subscription to every cluster takes the shared path too.
        if self.reported_on_reconnect.is_empty()
            && self.send_again.is_empty()
            && self
                .newly_subscribed
                .iter()
                .all(|name| want.items.contains_key(name.as_str()))
        {
            return diffs.get(self.client_holds.as_ref(), want, |holds| {
                set_diff(holds, want)
            });
        }
        Arc::new(self.compute_diff(want))
    }

    fn compute_diff(&self, want: &Arc<TypeSet>) -> Diff {
        let mut diff = Diff::default();
        for (name, r) in &want.items {
            let same = !self.send_again.contains(name)
                && match self.client_holds.as_ref().and_then(|h| h.items.get(name)) {
                    Some(h) => Arc::ptr_eq(h, r) || h.version == r.version,
                    None => self
                        .reported_on_reconnect
                        .get(&**name)
                        .is_some_and(|v| *v == r.version),
                };
            if !same {
                diff.changed.push(r.clone());
            }
        }
        let held_names = self
            .client_holds
            .iter()
            .flat_map(|h| h.items.keys())
            .map(|k| &**k);
        let gone: BTreeSet<&str> = held_names
            .chain(self.reported_on_reconnect.keys().map(String::as_str))
            .chain(self.newly_subscribed.iter().map(String::as_str))
            .filter(|name| !want.items.contains_key(*name))
            .collect();
        diff.removed = gone.into_iter().map(str::to_string).collect();
        diff
    }

    /// Transition: the type's first request on this stream. Chooses the legacy wildcard and
    /// seeds what the client already holds from a previous connection.
    fn start(
        &mut self,
        t: XdsType,
        req: &DeltaDiscoveryRequest,
        events: &mut impl ProtocolObserver,
    ) {
        self.first_response_due = true;
        self.wildcard = t.is_wildcard() && req.resource_names_subscribe.is_empty();
        events.observe(ProtocolEvent::InitialRequest {
            t,
            wildcard: self.wildcard,
        });
        self.reported_on_reconnect = req
            .initial_resource_versions
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
    }

    /// Transition: apply the request's subscription changes. True when anything changed.
    fn subscribe(
        &mut self,
        t: XdsType,
        req: &DeltaDiscoveryRequest,
        snap: Option<&Snapshot>,
        events: &mut impl ProtocolObserver,
    ) -> bool {
        if req.resource_names_subscribe.is_empty() && req.resource_names_unsubscribe.is_empty() {
            return false;
        }
        if self.subscribe_to_all_of(t, req, snap, events) {
            return true;
        }
        let mut names = self.subscribed.to_set();
        let mut changed = false;
        // Only a name the current snapshot lacks can need a removal entry; one it has is sent
        // anyway. (Without a snapshot yet, every new name is remembered.)
        let current = snap.map(|s| s.set(t));
        for name in &req.resource_names_subscribe {
            if name == WILDCARD {
                changed |= !self.wildcard;
                self.wildcard = true;
            } else if names.insert(name.clone()) {
                if !current.is_some_and(|set| set.items.contains_key(name.as_str())) {
                    self.newly_subscribed.insert(name.clone());
                }
                changed = true;
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == WILDCARD {
                changed |= self.wildcard;
                self.wildcard = false;
            } else if names.remove(name) {
                self.newly_subscribed.remove(name);
                changed = true;
            }
        }
        if changed {
            self.subscribed = Names::new(names, snap.map(|s| s.set(t)));
            self.report_subscription(t, events);
        }
        changed
    }

    /// The usual first subscription — a new proxy naming exactly the snapshot's EDS (or RDS)
    /// names, in any order — held as the snapshot's shared set without building a set of its
    /// own (for 1,000 names that was most of a Delta stream's work on its first request).
    /// False, changing nothing, when the request is anything else.
    fn subscribe_to_all_of(
        &mut self,
        t: XdsType,
        req: &DeltaDiscoveryRequest,
        snap: Option<&Snapshot>,
        events: &mut impl ProtocolObserver,
    ) -> bool {
        let Some(set) = snap.map(|s| s.set(t)) else {
            return false;
        };
        if !self.subscribed.is_empty()
            || !self.newly_subscribed.is_empty()
            || !req.resource_names_unsubscribe.is_empty()
            || req.resource_names_subscribe.len() < set.items.len()
        {
            return false;
        }
        let mut names: Vec<&String> = req.resource_names_subscribe.iter().collect();
        names.sort_unstable();
        names.dedup();
        if !names_of(set, names.into_iter()) {
            return false;
        }
        self.subscribed = Names::AllOf(set.clone());
        self.report_subscription(t, events);
        true
    }

    fn report_subscription(&self, t: XdsType, events: &mut impl ProtocolObserver) {
        events.observe(ProtocolEvent::Subscribed {
            t,
            wildcard: self.wildcard,
            names: &self.subscribed,
        });
    }

    /// The last response is not yet ACKed or NACKed.
    fn awaiting_answer(&self) -> bool {
        self.last_sent.as_ref().is_some_and(|s| !s.answered)
    }

    /// Whether `snap` may hold something for this stream that it was not sent: a cheap check
    /// (by set identity), true when unsure.
    fn behind(&self, t: XdsType, snap: &Snapshot) -> bool {
        if self.first_response_due
            || !self.newly_subscribed.is_empty()
            || !self.reported_on_reconnect.is_empty()
            || !self.send_again.is_empty()
        {
            return true;
        }
        let want = content_for(snap, t, self.wildcard, &self.subscribed);
        !self
            .client_holds
            .as_ref()
            .is_some_and(|h| Arc::ptr_eq(h, &want))
    }

    /// Transition: send what the client lacks and remove what it should no longer hold; nothing
    /// when there is no difference (unless the first response is still due). A difference larger
    /// than [`SPLIT_BYTES`] goes out as several responses (removals in the last), so no message
    /// exceeds the 4 MiB that gRPC clients accept by default; the last nonce is the one Envoy's
    /// ACK must carry, earlier ones are answered as stale. Returns the responses and the
    /// difference they carry (empty when nothing was sent).
    fn respond(
        &mut self,
        t: XdsType,
        snap: &Snapshot,
        stream: (&mut Nonces, SystemTime, &DiffCache),
        events: &mut impl ProtocolObserver,
    ) -> (Vec<DeltaResponse>, Arc<Diff>) {
        let started = Instant::now();
        let (nonces, connected_at, diffs) = stream;
        let want = content_for(snap, t, self.wildcard, &self.subscribed);
        let diff = self.diff(&want, diffs);
        self.newly_subscribed.clear();
        self.reported_on_reconnect.clear();
        self.send_again.clear();
        self.client_holds = Some(want.clone());
        if diff.changed.is_empty() && diff.removed.is_empty() && !self.first_response_due {
            return (Vec::new(), diff);
        }
        self.first_response_due = false;
        let wire = diff.wire(t);
        let last = wire.len().saturating_sub(1);
        let mut out = Vec::with_capacity(wire.len());
        let mut removed = Some(diff.removed.clone());
        for (i, (count, resources)) in wire.iter().enumerate() {
            out.push(DeltaResponse {
                system_version_info: snap.version.clone(),
                resources: resources.clone(),
                shared: true,
                count: *count,
                type_url: t.type_url().to_string(),
                removed_resources: if i == last {
                    removed.take().unwrap_or_default()
                } else {
                    Vec::new()
                },
                nonce: nonces.next(),
            });
        }
        let Some(resp) = out.last() else {
            return (out, diff);
        };
        let nonce = resp.nonce.clone();
        debug!(
            r#type = %t,
            version = %snap.version,
            nonce = %nonce,
            changed = diff.changed.len(),
            removed = resp.removed_resources.len(),
            responses = out.len(),
            "sending",
        );
        let sent = self.last_sent.insert(LastResponse::new(
            snap.version.clone(),
            nonce,
            connected_at,
            snap,
        ));
        events.observe(ProtocolEvent::Sent {
            t,
            version: &sent.version,
            nonce: &sent.nonce,
            versions: Versions::Delta,
            holds: want,
            bytes: out.iter().map(|r| r.encoded_len()).sum(),
            took: started.elapsed(),
        });
        (out, diff)
    }
}

/// Largest `resources` field of one Delta response: below gRPC's common 4 MiB default limit,
/// leaving room for the rest of the message.
pub(crate) const SPLIT_BYTES: usize = 4 * 1024 * 1024 - 64 * 1024;

/// `changed` cut into runs whose encoded entries stay within [`SPLIT_BYTES`] (always at least one
/// run, possibly empty; a single larger resource gets a run of its own).
fn split(t: XdsType, changed: &[Arc<Resource>]) -> Vec<&[Arc<Resource>]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, r) in changed.iter().enumerate() {
        let len = delta_entry(t, r).len();
        if i > start && size + len > SPLIT_BYTES {
            out.push(&changed[start..i]);
            (start, size) = (i, 0);
        }
        size += len;
    }
    out.push(&changed[start..]);
    out
}

impl DeltaStream {
    fn handle_request(
        &mut self,
        req: DeltaDiscoveryRequest,
        snap: Option<&Snapshot>,
        events: &mut impl ProtocolObserver,
    ) -> Vec<DeltaResponse> {
        let Some(t) = XdsType::from_type_url(&req.type_url) else {
            debug!(type_url = %req.type_url, "ignoring a request for a type this server does not serve");
            return Vec::new();
        };
        let first = !self.types.contains(t);
        let st = self.types.or_default(t);
        if first {
            st.start(t, &req, events);
        }
        // ACK/NACK by nonce, as in SotW: only the newest nonce of the type counts.
        let mut answered = false;
        if !req.response_nonce.is_empty() {
            match &mut st.last_sent {
                Some(sent) if sent.nonce == req.response_nonce => {
                    answered = true;
                    match &req.error_detail {
                        Some(err) => sent.nack(t, &err.message, events),
                        None => sent.ack(t, events),
                    }
                }
                _ => {
                    events.observe(ProtocolEvent::StaleNonce {
                        t,
                        nonce: &req.response_nonce,
                    });
                }
            }
        }
        // Unlike SotW, a Delta request carries subscription *changes*, not the whole set: they
        // are applied even with a stale nonce, or they would be lost.
        let changed = st.subscribe(t, &req, snap, events);
        let Some(snap) = snap else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut endpoints_due = false;
        if first || changed {
            let stream = (&mut self.nonces, self.connected_at, &*self.diffs);
            let (sent, diff) = st.respond(t, snap, stream, events);
            out = sent;
            endpoints_due = t == XdsType::Cluster && self.endpoints_again(&diff);
        }
        if (answered && self.deferring()) || endpoints_due {
            out.extend(self.handle_snapshot(snap, events));
        }
        out
    }

    /// Sends each type what changed, in push order (clusters before endpoints, both before
    /// listeners and routes). A type whose last response Envoy has not yet answered waits for
    /// the answer, as do the types after it that changed too, so that a route never arrives
    /// before the cluster it names: a stream has at most one unanswered response per type, and
    /// each response carries everything that changed meanwhile. Under a stream of changes, a
    /// proxy is sent as much as it takes in, and no more.
    fn handle_snapshot(
        &mut self,
        snap: &Snapshot,
        events: &mut impl ProtocolObserver,
    ) -> Vec<DeltaResponse> {
        let mut out = Vec::new();
        let mut waiting = false;
        for t in XdsType::ALL {
            let Some(st) = self.types.get_mut(t) else {
                continue;
            };
            if (waiting || st.awaiting_answer()) && st.behind(t, snap) {
                st.deferred = true;
                waiting = true;
                continue;
            }
            st.deferred = false;
            let stream = (&mut self.nonces, self.connected_at, &*self.diffs);
            let (sent, diff) = st.respond(t, snap, stream, events);
            out.extend(sent);
            if t == XdsType::Cluster {
                self.endpoints_again(&diff);
            }
        }
        out
    }

    /// After clusters were sent, their endpoints are due again even where the client holds
    /// their current version: Envoy re-creates each cluster whose definition changed and keeps
    /// it warming until that cluster's endpoints arrive, and it does not ask for names it is
    /// already subscribed to — so without them a changed cluster would wait for Envoy's
    /// initial-fetch timeout (15 s) before it serves. True when some are due.
    fn endpoints_again(&mut self, clusters: &Diff) -> bool {
        let Some(eds) = self.types.get_mut(XdsType::Endpoint) else {
            return false;
        };
        // A cluster's endpoints go by its name; names the stream does not receive (a cluster
        // of another kind, or not subscribed) are not in what it wants and so change nothing.
        eds.send_again
            .extend(clusters.changed.iter().map(|c| c.name.clone()));
        !eds.send_again.is_empty()
    }
}

impl Protocol for DeltaStream {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaResponse;
    const VARIANT: Variant = Variant::Delta;

    fn new(connected_at: SystemTime, diffs: &Arc<DiffCache>) -> DeltaStream {
        DeltaStream {
            types: PerType::default(),
            nonces: Nonces::default(),
            connected_at,
            diffs: diffs.clone(),
        }
    }

    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn resource_names(req: &DeltaDiscoveryRequest) -> usize {
        req.resource_names_subscribe.len()
            + req.resource_names_unsubscribe.len()
            + req.initial_resource_versions.len()
    }

    fn type_url(req: &DeltaDiscoveryRequest) -> &str {
        &req.type_url
    }

    fn on_request(
        &mut self,
        req: DeltaDiscoveryRequest,
        snap: Option<&Snapshot>,
        events: &mut impl ProtocolObserver,
    ) -> Vec<DeltaResponse> {
        self.handle_request(req, snap, events)
    }

    fn on_snapshot(
        &mut self,
        snap: &Snapshot,
        events: &mut impl ProtocolObserver,
    ) -> Vec<DeltaResponse> {
        self.handle_snapshot(snap, events)
    }

    fn deferring(&self) -> bool {
        self.types.iter().any(|(_, st)| st.deferred)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(name: &str, body: &str) -> Arc<Resource> {
        Arc::new(Resource::new(
            name,
            Bytes::copy_from_slice(body.as_bytes()),
            Vec::new(),
        ))
    }

    #[test]
    fn the_difference_to_a_patched_set_is_what_the_patch_changed() {
        let held = Arc::new(TypeSet::from_shared(
            (0..500).map(|i| res(&format!("c{i:03}"), &format!("v{i}"))),
        ));
        // A new body, the same body in a new allocation, a new name, and a removal.
        let (changed, same, added) = (res("c007", "new"), res("c300", "v300"), res("d", "x"));
        let want = Arc::new(held.patched(["c123"], [&changed, &same, &added]));
        let stream = DeltaType {
            client_holds: Some(held.clone()),
            ..DeltaType::default()
        };
        let diff = stream.diff(&want, &DiffCache::default());
        let names: Vec<&str> = diff.changed.iter().map(|r| &*r.name).collect();
        assert_eq!(names, ["c007", "d"], "only what a proxy does not hold");
        assert_eq!(diff.removed, ["c123"]);

        // With names the client reported on reconnecting, every name is compared: same answer.
        let reconnected = DeltaType {
            client_holds: Some(held),
            reported_on_reconnect: BTreeMap::from([("c999".to_string(), "gone".to_string())]),
            ..DeltaType::default()
        };
        let diff = reconnected.compute_diff(&want);
        let names: Vec<&str> = diff.changed.iter().map(|r| &*r.name).collect();
        assert_eq!(names, ["c007", "d"]);
        assert_eq!(diff.removed, ["c123", "c999"]);
    }
}
