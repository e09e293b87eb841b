//! One simulated proxy: an ADS stream (SotW or Delta) that behaves as Envoy does — wildcard CDS,
//! EDS for the clusters received, then wildcard LDS and RDS for the route configurations the
//! listeners name — ACKing every response (or NACKing on request), and recording when it first
//! holds a complete configuration and when it ACKs a response satisfying each tracked change.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use smallvec::SmallVec;
use xxhash_rust::xxh3::xxh3_128;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;

use super::grpc::{self, Conn, Requests};
use super::tracker::{ProxyStats, Tracked, Tracker};
use super::wire::{self, DeltaResponse, Received, SotwResponse, Summary};
use super::{Decode, NackRule, Protocol};
use meshpilot_snapshot::XdsType;

/// Largest response a simulated proxy accepts (a full EDS response of a big mesh is tens of MB).
pub const MAX_DECODE_BYTES: usize = 512 * 1024 * 1024;

/// A resource name as a proxy's maps hold it: its 128-bit xxh3 hash. Every proxy holds the same
/// ~1,000 names per type; as `String` keys, each update of a change missed the cache twice
/// (the table, then the key's own allocation), 8 % of the tool's CPU under a steady stream of
/// endpoint changes. Two names of a mesh
/// sharing a 128-bit hash is not a practical concern.
type NameKey = u128;

fn key(name: &str) -> NameKey {
    xxh3_128(name.as_bytes())
}

/// The names of a mesh, shared by every simulated proxy: each proxy holds the same ~1,000 names
/// per type, and keeping one copy of each, not one per proxy, spares a thousand proxies an
/// allocation per name received (a fifth of the tool's CPU while a thousand proxies sync at once).
#[derive(Debug, Default)]
pub struct Names {
    map: dashmap::DashMap<NameKey, Name, foldhash::fast::RandomState>,
}

/// A name held by a proxy (shared through [`Names`]).
pub type Name = Arc<str>;

impl Names {
    /// The shared copy of `name`.
    fn get(&self, name: &str) -> Name {
        let k = key(name);
        if let Some(n) = self.map.get(&k) {
            return n.clone();
        }
        self.map.entry(k).or_insert_with(|| Arc::from(name)).clone()
    }
}

/// What a proxy has received and accepted of one xDS type: the resources it holds, its
/// version and nonce, and its response counts.
#[derive(Debug, Default)]
struct ReceivedResources {
    /// Name → the names it makes the proxy need (EDS names for clusters, RDS for listeners).
    items: foldhash::HashMap<NameKey, SmallVec<[Name; 1]>>,
    /// Last ACKed version (SotW `version_info`).
    version: String,
    /// Nonce of the last response.
    nonce: String,
    /// Names subscribed (EDS and RDS only).
    subscribed: BTreeSet<Name>,
    /// Responses received for the type.
    responses: u64,
    /// Responses applied (ACKed) for the type.
    accepted: u64,
}

impl ReceivedResources {
    fn needs(&self) -> BTreeSet<Name> {
        self.items.values().flatten().cloned().collect()
    }

    /// This (wildcard) type has been answered and `dep` holds every name its items need.
    fn answered_and_needs_held_in(&self, dep: &ReceivedResources) -> bool {
        self.accepted > 0
            && self
                .items
                .values()
                .flatten()
                .all(|n| dep.items.contains_key(&key(n)))
    }
}

/// The protocol-independent state of one proxy.
pub(super) struct State {
    pub index: usize,
    types: [ReceivedResources; 4],
    names: Arc<Names>,
    stats: Arc<ProxyStats>,
    tracker: Arc<Tracker>,
    /// Tracked changes seen and not yet satisfied.
    pending: Vec<Arc<Tracked>>,
    cursor: usize,
    nack: Option<NackRule>,
    /// Decode every resource into its Envoy type too (`--decode full`).
    full_decode: bool,
    complete: bool,
    /// CDS answered and every EDS name its clusters need held.
    endpoints_held: bool,
    /// LDS answered and every route configuration its listeners name held.
    routes_held: bool,
    started: Instant,
}

/// A response reduced to what [`State::apply`] needs.
pub(super) struct Incoming<'a> {
    pub t: XdsType,
    /// (name, body) of each resource, name empty when the protocol does not carry it (SotW).
    pub resources: Vec<(&'a str, &'a [u8])>,
    pub removed: &'a [String],
    /// The response replaces the whole set (SotW clusters and listeners); otherwise it adds
    /// and updates (SotW endpoints and routes), and removes (Delta).
    pub replace: bool,
}

impl<'a> Incoming<'a> {
    /// A SotW response. Clusters and listeners come as the complete set; endpoint and route
    /// responses may carry only what changed, and the proxy keeps the rest of what it
    /// subscribes to, as Envoy does (names it unsubscribes from are dropped in `resubscribe`).
    pub fn sotw(t: XdsType, resources: Vec<(&'a str, &'a [u8])>) -> Incoming<'a> {
        Incoming {
            t,
            resources,
            removed: &[],
            replace: t.is_wildcard(),
        }
    }
}

/// What the proxy does after a response.
pub(super) struct Outcome {
    pub nack: bool,
    /// Subscription changes for the type that depends on this one: (type, added, removed).
    pub resubscribe: Option<(XdsType, Vec<Name>, Vec<Name>)>,
}

impl State {
    pub fn new(
        index: usize,
        stats: Arc<ProxyStats>,
        tracker: Arc<Tracker>,
        names: Arc<Names>,
        nack: Option<NackRule>,
        decode: Decode,
        started: Instant,
    ) -> State {
        State {
            index,
            types: Default::default(),
            names,
            stats,
            tracker,
            pending: Vec::new(),
            cursor: 0,
            nack,
            full_decode: decode == Decode::Full,
            complete: false,
            endpoints_held: false,
            routes_held: false,
            started,
        }
    }

    fn received(&mut self, t: XdsType) -> &mut ReceivedResources {
        &mut self.types[t as usize]
    }

    /// Applies a response (unless it is to be NACKed) and says what to send.
    pub fn apply(&mut self, inc: &Incoming<'_>, bytes: usize) -> Outcome {
        self.stats.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.stats.responses.fetch_add(1, Ordering::Relaxed);
        // Changes registered before this response was received are checked against it.
        self.cursor = self.tracker.pending_since(self.cursor, &mut self.pending);
        let t = inc.t;
        let received = self.received(t);
        received.responses += 1;
        let count = received.responses;
        if let Some(rule) = self.nack
            && rule.t == t
            && count.is_multiple_of(rule.every)
        {
            self.stats.nacks.fetch_add(1, Ordering::Relaxed);
            return Outcome {
                nack: true,
                resubscribe: None,
            };
        }
        let mut decoded: Vec<(Summary, &[u8])> = Vec::with_capacity(inc.resources.len());
        for (name, body) in &inc.resources {
            if self.full_decode {
                let counter = match crate::decode::full(t, body) {
                    Ok(()) => &self.stats.fully_decoded,
                    Err(_) => &self.stats.decode_failures,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            match wire::summarize(t, body) {
                Some(mut s) => {
                    // Delta names the resource; it is normally the name decoded already.
                    if !name.is_empty() {
                        s.name = name;
                    }
                    decoded.push((s, body));
                }
                None => {
                    self.stats.bad_resources.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let checking = !self.pending.is_empty();
        let received = self.received(t);
        received.accepted += 1;
        if inc.replace {
            received.items.clear();
        }
        for name in inc.removed {
            received.items.remove(&key(name));
        }
        // Bodies are checked before the names move in; CDS membership (the only check on
        // clusters) after, on the names then held.
        if checking && t != XdsType::Cluster {
            self.check_tracked(t, &decoded);
        }
        let (received, names) = (&mut self.types[t as usize], &self.names);
        received.items.reserve(decoded.len());
        for (s, _) in decoded {
            let needs = s.needs.iter().map(|n| names.get(n)).collect();
            received.items.insert(key(s.name), needs);
        }
        if checking && t == XdsType::Cluster {
            self.check_tracked(t, &[]);
        }
        let resubscribe = match t {
            XdsType::Cluster => Some(self.resubscribe(XdsType::Cluster, XdsType::Endpoint)),
            XdsType::Listener => Some(self.resubscribe(XdsType::Listener, XdsType::Route)),
            _ => None,
        }
        .filter(|(_, add, remove)| !add.is_empty() || !remove.is_empty());
        // Adding or updating endpoints or route configurations cannot make a complete proxy
        // incomplete; skip the full check (O(clusters) lookups) on that hot path of a change.
        let only_added = !inc.replace && inc.removed.is_empty();
        if !(self.complete && only_added && matches!(t, XdsType::Endpoint | XdsType::Route)) {
            self.check_complete(t);
        }
        Outcome {
            nack: false,
            resubscribe,
        }
    }

    /// The names `from` now needs of `to`, as a change of `to`'s subscription.
    fn resubscribe(&mut self, from: XdsType, to: XdsType) -> (XdsType, Vec<Name>, Vec<Name>) {
        let want = self.received(from).needs();
        let dep = self.received(to);
        let add: Vec<Name> = want.difference(&dep.subscribed).cloned().collect();
        let remove: Vec<Name> = dep.subscribed.difference(&want).cloned().collect();
        for n in &remove {
            dep.items.remove(&key(n));
        }
        dep.subscribed = want;
        (to, add, remove)
    }

    pub fn subscribed(&self, t: XdsType) -> Vec<Name> {
        self.types[t as usize].subscribed.iter().cloned().collect()
    }

    /// Records the response's version and nonce (SotW ACKs carry them).
    pub fn record(&mut self, t: XdsType, version: &str, nonce: &str, acked: bool) {
        let h = self.received(t);
        if acked {
            h.version = version.to_string();
        }
        h.nonce = nonce.to_string();
    }

    pub fn version(&self, t: XdsType) -> &str {
        &self.types[t as usize].version
    }

    /// Complete: CDS and LDS answered, every EDS name a cluster needs held, every route
    /// configuration a listener names held. Only the half a response of type `t` can change is
    /// re-checked: a route configuration says nothing about clusters and endpoints (with 1,000
    /// clusters, re-checking them was most of the load tool's work per RDS response).
    fn check_complete(&mut self, t: XdsType) {
        let [cds, eds, lds, rds] = &self.types;
        if matches!(t, XdsType::Cluster | XdsType::Endpoint) {
            self.endpoints_held = cds.answered_and_needs_held_in(eds);
        }
        if matches!(t, XdsType::Listener | XdsType::Route) {
            self.routes_held = lds.answered_and_needs_held_in(rds);
        }
        let complete = self.endpoints_held && self.routes_held;
        if complete && !self.complete {
            self.stats
                .complete_ns
                .store(self.started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        self.complete = complete;
        self.stats.complete.store(complete, Ordering::Relaxed);
    }

    /// Marks every pending change of type `t` that this response (or, for CDS membership, the
    /// names now held) satisfies. Called before the ACK is sent; the ACK follows at once.
    fn check_tracked(&mut self, t: XdsType, decoded: &[(Summary, &[u8])]) {
        if self.pending.is_empty() {
            return;
        }
        let cds = &self.types[XdsType::Cluster as usize].items;
        let index = self.index;
        self.pending.retain(|tracked| {
            let expect = &tracked.expect;
            if wire::expect_type(expect) != t {
                return true;
            }
            let ok = match expect {
                crate::mesh::Expect::ClusterPresent { cluster } => cds.contains_key(&key(cluster)),
                crate::mesh::Expect::ClusterAbsent { cluster } => !cds.contains_key(&key(cluster)),
                _ => {
                    let name = wire::expect_resource(expect).unwrap_or_default();
                    decoded
                        .iter()
                        .any(|(s, body)| s.name == name && tracked.satisfied_by(body))
                }
            };
            if ok {
                tracked.satisfy(index);
            }
            !ok
        });
    }
}

/// Field numbers of the requests' resource names, added from the proxy's shared names (see
/// `Requests::send_with_names`): `DiscoveryRequest.resource_names`, and
/// `DeltaDiscoveryRequest.resource_names_subscribe` / `resource_names_unsubscribe`.
const SOTW_NAMES: u32 = 3;
const DELTA_SUBSCRIBE: u32 = 3;
const DELTA_UNSUBSCRIBE: u32 = 4;

/// Field numbers of the node in the first request: `DiscoveryRequest.node`,
/// `DeltaDiscoveryRequest.node`.
const SOTW_NODE: u32 = 2;
const DELTA_NODE: u32 = 1;

/// What differs from one simulated proxy's node to the next: its id, its metadata and its
/// locality (which the server reads for locality-aware load balancing).
pub(super) struct OwnNode<'a> {
    pub id: &'a str,
    pub metadata: &'a envoy_types::pb::google::protobuf::Struct,
    pub locality: Option<&'a envoy_types::pb::envoy::config::core::v3::Locality>,
}

/// The proxy's own part of its node (fields 1 to 4, before every Envoy-wide one).
fn own_node(own: &OwnNode<'_>) -> Node {
    Node {
        id: own.id.to_string(),
        cluster: "meshpilot-load".to_string(),
        metadata: Some(own.metadata.clone()),
        locality: own.locality.cloned(),
        ..Default::default()
    }
}

fn nack_status() -> RpcStatus {
    RpcStatus {
        code: 3,
        message: "meshpilot-load: rejected on request (--nack-type/--nack-every)".to_string(),
        details: Vec::new(),
    }
}

/// Drives one stream until it ends or the task is aborted. Returns the error that ended it.
///
/// The first request carries the whole node, as Envoy's does: the proxy's id, cluster,
/// metadata and locality, then `envoy` (the Envoy-wide fields, encoded once for all proxies: user agent,
/// build version, extensions, client features). Later requests carry no node, as Envoy's do
/// with `set_node_on_first_message_only` (meshpilot's and Istio's bootstraps set it).
pub(super) async fn run(
    conn: Conn,
    protocol: Protocol,
    node: OwnNode<'_>,
    envoy: &[u8],
    mut state: State,
) -> Result<(), String> {
    let own = own_node(&node);
    let cds = XdsType::Cluster.type_url().to_string();
    match protocol {
        Protocol::Sotw => {
            let first = DiscoveryRequest {
                type_url: cds,
                ..Default::default()
            };
            let first = grpc::first_request_frame(&first, SOTW_NODE, &own, envoy)?;
            drop(own);
            drive(conn, SOTW_PATH, "SotW", first, &mut state, sotw_response).await
        }
        Protocol::Delta => {
            let first = DeltaDiscoveryRequest {
                type_url: cds,
                ..Default::default()
            };
            let first = grpc::first_request_frame(&first, DELTA_NODE, &own, envoy)?;
            drop(own);
            drive(conn, DELTA_PATH, "Delta", first, &mut state, delta_response).await
        }
    }
}

/// What a proxy does with one response: apply it and send its requests.
type Handler<Resp> = fn(&mut State, &mut Requests, Received<Resp>) -> Result<(), String>;

/// Sends `first` (framed; it is released once sent, not held for the stream's life), then
/// hands every response to `handle` (which sends the proxy's requests) until the stream ends.
/// Returns the error that ended it.
async fn drive<Resp>(
    conn: Conn,
    path: &'static str,
    variant: &str,
    first: bytes::Bytes,
    state: &mut State,
    handle: Handler<Resp>,
) -> Result<(), String>
where
    Resp: Message + Default,
{
    // `conn` lives until the stream ends: the connection closes with its last handle.
    let (mut requests, mut responses) = grpc::open(&conn, path, first, MAX_DECODE_BYTES)
        .await
        .map_err(|e| format!("open {variant} stream: {e}"))?;
    state.stats.connected.store(true, Ordering::Relaxed);
    while let Some(resp) = responses
        .message::<Resp>()
        .await
        .map_err(|e| format!("{variant} stream: {e}"))?
    {
        handle(state, &mut requests, resp)?;
    }
    Err(format!("{variant} stream closed by the server"))
}

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

fn sotw_response(
    state: &mut State,
    tx: &mut Requests,
    resp: Received<SotwResponse>,
) -> Result<(), String> {
    let Received {
        bytes,
        message: resp,
    } = resp;
    let Some(t) = XdsType::from_type_url(&resp.type_url) else {
        return Ok(());
    };
    let resources: Vec<(&str, &[u8])> = resp
        .resources
        .iter()
        .map(|a| ("", a.value.as_ref()))
        .collect();
    let first_lds = t == XdsType::Cluster
        && state.types[XdsType::Listener as usize].responses == 0
        && state.types[XdsType::Cluster as usize].responses == 0;
    let out = state.apply(&Incoming::sotw(t, resources), bytes);
    // Envoy's order: the dependent subscription first, then the ACK of the response.
    if let Some((dep, _, _)) = &out.resubscribe {
        let req = DiscoveryRequest {
            version_info: state.version(*dep).to_string(),
            type_url: dep.type_url().to_string(),
            response_nonce: state.types[*dep as usize].nonce.clone(),
            ..Default::default()
        };
        tx.send_with_names(&req, &[(SOTW_NAMES, &state.subscribed(*dep)[..])])?;
    }
    state.record(t, &resp.version_info, &resp.nonce, !out.nack);
    let ack = DiscoveryRequest {
        version_info: state.version(t).to_string(),
        type_url: resp.type_url.clone(),
        response_nonce: resp.nonce.clone(),
        error_detail: out.nack.then(nack_status),
        ..Default::default()
    };
    let names = if t.is_wildcard() {
        Vec::new()
    } else {
        state.subscribed(t)
    };
    tx.send_with_names(&ack, &[(SOTW_NAMES, &names[..])])?;
    if first_lds {
        tx.send(&DiscoveryRequest {
            type_url: XdsType::Listener.type_url().to_string(),
            ..Default::default()
        })?;
    }
    Ok(())
}

fn delta_response(
    state: &mut State,
    tx: &mut Requests,
    resp: Received<DeltaResponse>,
) -> Result<(), String> {
    let Received {
        bytes,
        message: resp,
    } = resp;
    let Some(t) = XdsType::from_type_url(&resp.type_url) else {
        return Ok(());
    };
    let resources: Vec<(&str, &[u8])> = resp
        .resources
        .iter()
        .filter_map(|r| Some((r.name(), r.resource.as_ref()?.value.as_ref())))
        .collect();
    let first_lds = t == XdsType::Cluster
        && state.types[XdsType::Listener as usize].responses == 0
        && state.types[XdsType::Cluster as usize].responses == 0;
    let out = state.apply(
        &Incoming {
            t,
            resources,
            removed: &resp.removed_resources,
            replace: false,
        },
        bytes,
    );
    if let Some((dep, add, remove)) = out.resubscribe {
        let req = DeltaDiscoveryRequest {
            type_url: dep.type_url().to_string(),
            ..Default::default()
        };
        tx.send_with_names(
            &req,
            &[
                (DELTA_SUBSCRIBE, &add[..]),
                (DELTA_UNSUBSCRIBE, &remove[..]),
            ],
        )?;
    }
    let mut send = |req: DeltaDiscoveryRequest| tx.send(&req);
    state.record(t, &resp.system_version_info, &resp.nonce, !out.nack);
    send(DeltaDiscoveryRequest {
        type_url: resp.type_url.clone(),
        response_nonce: resp.nonce.clone(),
        error_detail: out.nack.then(nack_status),
        ..Default::default()
    })?;
    if first_lds {
        send(DeltaDiscoveryRequest {
            type_url: XdsType::Listener.type_url().to_string(),
            ..Default::default()
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::{
        Cluster, cluster::ClusterDiscoveryType, cluster::DiscoveryType, cluster::EdsClusterConfig,
    };
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;

    fn eds_cluster(name: &str) -> Vec<u8> {
        Cluster {
            name: name.into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig::default()),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn cla(name: &str) -> Vec<u8> {
        ClusterLoadAssignment {
            cluster_name: name.into(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn sotw_endpoint_responses_with_only_the_changes_keep_the_other_assignments() {
        let stats = Arc::new(ProxyStats::default());
        let mut state = State::new(
            0,
            stats.clone(),
            Arc::new(Tracker::new(1)),
            Arc::new(Names::default()),
            None,
            Decode::Names,
            Instant::now(),
        );
        let (a, b) = (eds_cluster("a"), eds_cluster("b"));
        let clusters = vec![("", a.as_slice()), ("", b.as_slice())];
        state.apply(&Incoming::sotw(XdsType::Cluster, clusters), 0);
        state.apply(&Incoming::sotw(XdsType::Listener, Vec::new()), 0);
        let (cla_a, cla_b) = (cla("a"), cla("b"));
        let both = vec![("", cla_a.as_slice()), ("", cla_b.as_slice())];
        state.apply(&Incoming::sotw(XdsType::Endpoint, both), 0);
        assert!(stats.complete.load(Ordering::Relaxed));

        // Only b's assignment changed: the proxy still holds a's, and is still complete.
        state.apply(
            &Incoming::sotw(XdsType::Endpoint, vec![("", cla_b.as_slice())]),
            0,
        );
        assert!(stats.complete.load(Ordering::Relaxed));

        // Clusters are the complete set: b gone, its assignment is no longer needed or held.
        state.apply(
            &Incoming::sotw(XdsType::Cluster, vec![("", a.as_slice())]),
            0,
        );
        assert_eq!(state.subscribed(XdsType::Endpoint).len(), 1);
        assert!(stats.complete.load(Ordering::Relaxed));
    }

    /// With `--decode full`, a resource the cheap reading accepts but that is not a Cluster
    /// (its discovery type, a number, sent as bytes) is counted as a decode failure; the
    /// well-formed one beside it is counted as decoded. Without it, neither is noticed.
    #[test]
    fn a_corrupted_resource_is_counted_by_the_full_decode() {
        let good = eds_cluster("a");
        let mut corrupted = eds_cluster("b");
        corrupted.extend_from_slice(&[0x12, 0x01, 0x00]);
        for (decode, failures, decoded) in [(Decode::Full, 1, 1), (Decode::Names, 0, 0)] {
            let stats = Arc::new(ProxyStats::default());
            let mut state = State::new(
                0,
                stats.clone(),
                Arc::new(Tracker::new(1)),
                Arc::new(Names::default()),
                None,
                decode,
                Instant::now(),
            );
            let clusters = vec![("", good.as_slice()), ("", corrupted.as_slice())];
            state.apply(&Incoming::sotw(XdsType::Cluster, clusters), 0);
            let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            assert_eq!(load(&stats.decode_failures), failures, "{decode:?}");
            assert_eq!(load(&stats.fully_decoded), decoded, "{decode:?}");
            assert_eq!(load(&stats.bad_resources), 0, "{decode:?}");
        }
    }
}
