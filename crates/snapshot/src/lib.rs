//! Versioned, encoded resource sets per proxy class, and the cache that publishes them.
//!
//! A [`Snapshot`] holds, per xDS type, every resource already encoded (`Bytes`, shared by every
//! stream of the class) with a content-hash version. [`SnapshotCache`] keeps one `watch` slot per
//! [`ClassKey`]: streams hold a receiver and always see the newest snapshot (a slow proxy skips
//! intermediate versions, never queues them). A publish whose content equals the current one
//! reaches no stream.

pub mod encode;
pub mod json;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use meshpilot_model::{ClassKey, ConfigKey, Proxy};

/// The xDS resource types we serve, in the order Envoy must receive them (clusters before
/// their endpoints, both before listeners and their routes; the TLS secrets a gateway's
/// listeners name last, as Envoy asks for them only once it holds those listeners).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum XdsType {
    Cluster,
    Endpoint,
    Listener,
    Route,
    /// SDS: `kubernetes://NAME` certificates and `kubernetes://NAME-cacert` CAs, for gateways.
    Secret,
}

impl XdsType {
    /// Every type, in push order.
    pub const ALL: [XdsType; 5] = [
        XdsType::Cluster,
        XdsType::Endpoint,
        XdsType::Listener,
        XdsType::Route,
        XdsType::Secret,
    ];

    pub fn type_url(self) -> &'static str {
        match self {
            XdsType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            XdsType::Endpoint => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            XdsType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            XdsType::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            XdsType::Secret => {
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            }
        }
    }

    pub fn from_type_url(url: &str) -> Option<XdsType> {
        XdsType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Short name as istioctl prints it: `cds`, `eds`, `lds`, `rds`.
    pub fn short(self) -> &'static str {
        match self {
            XdsType::Cluster => "cds",
            XdsType::Endpoint => "eds",
            XdsType::Listener => "lds",
            XdsType::Route => "rds",
            XdsType::Secret => "sds",
        }
    }

    /// CDS and LDS are wildcard subscriptions; EDS, RDS and SDS are by name.
    pub fn is_wildcard(self) -> bool {
        matches!(self, XdsType::Cluster | XdsType::Listener)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One optional value per xDS type, in push order: a map keyed by [`XdsType`] held in five
/// slots. Per stream, a `BTreeMap<XdsType, T>` allocates a B-tree leaf with room for eleven
/// entries on first insert (for the stream status, about 2.7 KB per stream); this holds five.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerType<T>([Option<T>; 5]);

impl<T> Default for PerType<T> {
    fn default() -> PerType<T> {
        PerType([None, None, None, None, None])
    }
}

impl<T> PerType<T> {
    pub fn get(&self, t: XdsType) -> Option<&T> {
        self.0[t.index()].as_ref()
    }

    pub fn get_mut(&mut self, t: XdsType) -> Option<&mut T> {
        self.0[t.index()].as_mut()
    }

    pub fn contains(&self, t: XdsType) -> bool {
        self.0[t.index()].is_some()
    }

    /// The value of `t`, a default one inserted first if there is none.
    pub fn or_default(&mut self, t: XdsType) -> &mut T
    where
        T: Default,
    {
        self.0[t.index()].get_or_insert_with(T::default)
    }

    /// The types that have a value, with it, in push order.
    pub fn iter(&self) -> impl Iterator<Item = (XdsType, &T)> {
        XdsType::ALL
            .into_iter()
            .zip(&self.0)
            .filter_map(|(t, v)| Some((t, v.as_ref()?)))
    }
}

impl<T> FromIterator<(XdsType, T)> for PerType<T> {
    fn from_iter<I: IntoIterator<Item = (XdsType, T)>>(items: I) -> PerType<T> {
        let mut all = PerType::default();
        for (t, v) in items {
            all.0[t.index()] = Some(v);
        }
        all
    }
}

/// Like a map's index, for tests: panics when `t` has no value.
#[cfg(any(test, feature = "testing"))]
impl<T> std::ops::Index<XdsType> for PerType<T> {
    type Output = T;
    fn index(&self, t: XdsType) -> &T {
        match self.get(t) {
            Some(v) => v,
            None => panic!("no {t} entry"),
        }
    }
}

/// Serialized as the map it stands for: `{"Cluster": …, "Endpoint": …}`.
impl<T: Serialize> Serialize for PerType<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl fmt::Display for XdsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
}

/// A stable content hash, printed as 16 hex digits.
pub fn content_hash(parts: &[&[u8]]) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex16(h.digest())
}

/// `v` as 16 lowercase hex digits in a `String` (a set's or a snapshot's version): the text of
/// [`Version::of`].
pub fn hex16(v: u64) -> String {
    Version::of(v).as_str().to_string()
}

/// A resource's version: the hash of its body as 16 lowercase hex digits, held inline (a
/// compile makes one for every resource; as a `String` each was an allocation of its own).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version([u8; 16]);

impl Version {
    /// `v` as 16 lowercase hex digits.
    pub fn of(v: u64) -> Version {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 16];
        for (i, d) in out.iter_mut().enumerate() {
            *d = DIGITS[((v >> ((15 - i) * 4)) & 0xf) as usize];
        }
        Version(out)
    }

    /// The hash of `body`.
    pub fn of_body(body: &[u8]) -> Version {
        Version::of(xxhash_rust::xxh3::xxh3_64(body))
    }

    pub fn as_str(&self) -> &str {
        // Always ASCII hex digits.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::ops::Deref for Version {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl PartialEq<str> for Version {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<String> for Version {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Version> for String {
    fn eq(&self, other: &Version) -> bool {
        self == other.as_str()
    }
}

/// A slot for bytes derived from the content it sits beside (the wire form of a resource or a
/// set), filled on first use by whoever sends it and shared by every stream after that. It takes
/// no part in equality, hashing or serialization: it is a cache of the content.
#[derive(Default, Clone)]
pub struct WireSlot(OnceLock<Bytes>);

impl WireSlot {
    /// The cached bytes, made by `make` on first use.
    pub fn get_or_init(&self, make: impl FnOnce() -> Bytes) -> &Bytes {
        self.0.get_or_init(make)
    }
}

impl PartialEq for WireSlot {
    fn eq(&self, _: &WireSlot) -> bool {
        true
    }
}

impl Eq for WireSlot {}

impl fmt::Debug for WireSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "WireSlot(filled)"
        } else {
            "WireSlot"
        })
    }
}

/// One encoded resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resource {
    /// Shared with its set's key (and, for a cluster's assignment, with the cluster).
    pub name: Arc<str>,
    /// Content hash of `body`.
    pub version: Version,
    /// The protobuf encoding of the resource message itself (not wrapped in `Any`).
    #[serde(skip)]
    pub body: Bytes,
    /// The input objects that produced it (for NACK diagnosis and config dumps); shared by the
    /// resources of one service.
    pub sources: Arc<[ConfigKey]>,
    /// Its entry in a SotW response's `resources` field, once a stream has sent it.
    #[serde(skip)]
    pub sotw_wire: WireSlot,
    /// Its entry in a Delta response's `resources` field, once a stream has sent it.
    #[serde(skip)]
    pub delta_wire: WireSlot,
}

impl Resource {
    pub fn new(name: impl Into<Arc<str>>, body: Bytes, sources: Vec<ConfigKey>) -> Resource {
        Resource::with_sources(name, body, sources.into())
    }

    /// [`Resource::new`] with sources shared with other resources.
    pub fn with_sources(
        name: impl Into<Arc<str>>,
        body: Bytes,
        sources: Arc<[ConfigKey]>,
    ) -> Resource {
        let version = Version::of_body(&body);
        Resource {
            name: name.into(),
            version,
            body,
            sources,
            sotw_wire: WireSlot::default(),
            delta_wire: WireSlot::default(),
        }
    }
}

/// A type's resources by name: a persistent map, so a set patched from another shares every
/// untouched part of it (a clone is O(1), a patch O(changes × log n)).
pub type Items = imbl::OrdMap<Arc<str>, Arc<Resource>>;

/// All resources of one type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TypeSet {
    /// Content hash over every (name, version) pair.
    pub version: String,
    /// Hash over the names alone: two sets with equal `names_hash` hold the same names, so a
    /// stream subscribed to "exactly the names of set A" can be served set B without comparing
    /// name by name.
    #[serde(skip)]
    pub names_hash: u64,
    /// The sum `version` is written from: each pair's hash, added up (wrapping), so a patch
    /// takes out and puts in the pairs it changes instead of hashing every pair again.
    #[serde(skip)]
    content: u64,
    pub items: Items,
    /// The whole set as a SotW response's `resources` field, once a stream has sent it.
    #[serde(skip)]
    pub sotw_wire: WireSlot,
}

/// One (name, version) pair's share of [`TypeSet::version`].
fn pair_hash(name: &str, version: &str) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&(name.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
    h.update(version.as_bytes());
    h.digest()
}

/// One name's share of [`TypeSet::names_hash`].
fn name_hash(name: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes())
}

impl TypeSet {
    /// A set of resources (a later duplicate name replaces an earlier one).
    pub fn new(resources: Vec<Resource>) -> TypeSet {
        TypeSet::from_shared(resources.into_iter().map(Arc::new))
    }

    /// A set of already shared resources: their bytes are not copied.
    pub fn from_shared(resources: impl IntoIterator<Item = Arc<Resource>>) -> TypeSet {
        TypeSet::from_items(resources.into_iter().map(|r| (r.name.clone(), r)).collect())
    }

    /// A set of resources by name (each key is its resource's name).
    pub fn from_items(items: Items) -> TypeSet {
        let (mut content, mut names) = (0u64, 0u64);
        for (name, r) in &items {
            content = content.wrapping_add(pair_hash(name, &r.version));
            names = names.wrapping_add(name_hash(name));
        }
        TypeSet::with_sums(items, content, names)
    }

    /// This set without the resources named in `removed`, then with `added` put in (replacing
    /// any of the same name): the same set as [`TypeSet::from_items`] would build from the
    /// result, in time proportional to the changes. Its untouched parts are shared with `self`.
    pub fn patched<'a>(
        &self,
        removed: impl IntoIterator<Item = &'a str>,
        added: impl IntoIterator<Item = &'a Arc<Resource>>,
    ) -> TypeSet {
        let mut items = self.items.clone();
        let (mut content, mut names) = (self.content, self.names_hash);
        let mut gone: Vec<Arc<Resource>> = Vec::new();
        for name in removed {
            gone.extend(items.remove(name));
        }
        for r in added {
            gone.extend(items.insert(r.name.clone(), r.clone()));
            content = content.wrapping_add(pair_hash(&r.name, &r.version));
            names = names.wrapping_add(name_hash(&r.name));
        }
        for old in &gone {
            content = content.wrapping_sub(pair_hash(&old.name, &old.version));
            names = names.wrapping_sub(name_hash(&old.name));
        }
        TypeSet::with_sums(items, content, names)
    }

    /// A set of `items` whose pairs' and names' hashes add up to `content` and `names`.
    fn with_sums(items: Items, content: u64, names: u64) -> TypeSet {
        TypeSet {
            version: hex16(content),
            names_hash: names,
            content,
            items,
            sotw_wire: WireSlot::default(),
        }
    }
}

/// Why a snapshot was not published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// A resource refers to another (a cluster to its endpoints, a listener to its route
    /// configuration) that the snapshot does not contain.
    #[error("{from_type} resource {from:?} refers to {to_type} {to:?}, which is missing")]
    Dangling {
        from_type: XdsType,
        from: String,
        to_type: XdsType,
        to: String,
    },
}

/// A reference from one resource to another, checked before publishing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub from_type: XdsType,
    pub from: String,
    pub to_type: XdsType,
    pub to: String,
}

/// The complete configuration of one proxy class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Content hash over the type versions (the secrets' only when there are some, so that a
    /// proxy class without them keeps the version it had before secrets were served).
    pub version: String,
    pub class: ClassKey,
    #[serde(skip)]
    pub created: SystemTime,
    /// When the change it carries was first seen (the push engine sets it; `created` by
    /// default): the start of `pilot_proxy_convergence_time`.
    #[serde(skip)]
    pub changed: SystemTime,
    /// Shared between classes where they are equal (clusters and endpoints usually are).
    types: [Arc<TypeSet>; 5],
}

impl Snapshot {
    /// Builds a snapshot, checking that every reference resolves (go-control-plane's
    /// `Consistent`): every EDS cluster has its ClusterLoadAssignment, every RDS listener its
    /// RouteConfiguration.
    pub fn new(
        class: ClassKey,
        resources: [Vec<Resource>; 4],
        references: &[Reference],
    ) -> Result<Snapshot, SnapshotError> {
        Snapshot::from_sets(
            class,
            resources.map(|r| Arc::new(TypeSet::new(r))),
            references,
        )
    }

    /// Builds a snapshot from per-type sets that may be shared with other snapshots, checking
    /// `references` (only those given: a shared set's own references are checked once, by
    /// [`check_references`], where it is built).
    pub fn from_sets(
        class: ClassKey,
        types: [Arc<TypeSet>; 4],
        references: &[Reference],
    ) -> Result<Snapshot, SnapshotError> {
        let [clusters, endpoints, listeners, routes] = types;
        let types = [
            clusters,
            endpoints,
            listeners,
            routes,
            Arc::new(TypeSet::default()),
        ];
        let lookup = |t: XdsType| &types[t.index()];
        check_references(lookup, references)?;
        let created = SystemTime::now();
        let mut snapshot = Snapshot {
            version: String::new(),
            class,
            created,
            changed: created,
            types,
        };
        snapshot.version = snapshot.content_version();
        Ok(snapshot)
    }

    /// This snapshot with `secrets` as its SDS resources. Nothing refers to a secret in a way
    /// the snapshot checks: Envoy asks for the names its listeners carry, and a missing one
    /// keeps only that listener warming (the gateway's namespace may simply lack it).
    pub fn with_secrets(mut self, secrets: Arc<TypeSet>) -> Snapshot {
        self.types[XdsType::Secret.index()] = secrets;
        self.version = self.content_version();
        self
    }

    fn content_version(&self) -> String {
        let v = |t: XdsType| self.types[t.index()].version.as_bytes();
        let parts = XdsType::ALL.map(v);
        let with_secrets = !self.types[XdsType::Secret.index()].items.is_empty();
        content_hash(&parts[..if with_secrets { 5 } else { 4 }])
    }

    pub fn get(&self, t: XdsType) -> &TypeSet {
        &self.types[t.index()]
    }

    /// The shared set of a type (to hand out without copying).
    pub fn set(&self, t: XdsType) -> &Arc<TypeSet> {
        &self.types[t.index()]
    }
}

/// Checks that every reference resolves in the sets `get` returns.
pub fn check_references<'a, 'r>(
    get: impl Fn(XdsType) -> &'a Arc<TypeSet>,
    references: impl IntoIterator<Item = &'r Reference>,
) -> Result<(), SnapshotError> {
    for r in references {
        if !get(r.to_type).items.contains_key(r.to.as_str()) {
            return Err(SnapshotError::Dangling {
                from_type: r.from_type,
                from: r.from.clone(),
                to_type: r.to_type,
                to: r.to.clone(),
            });
        }
    }
    Ok(())
}

/// One slot per proxy class. `None` until the class's first snapshot is built.
type Slot = watch::Sender<Option<Arc<Snapshot>>>;

/// The published snapshots, one `watch` slot per proxy class.
///
/// A stream for a proxy of a class nobody has built yet asks the push engine (over the channel
/// returned by [`SnapshotCache::new`]) to build it, so `xds` never depends on `push`.
pub struct SnapshotCache {
    slots: DashMap<ClassKey, Slot>,
    build_requests: mpsc::UnboundedSender<Proxy>,
}

impl SnapshotCache {
    /// A cache and the receiving end of its build requests (for the push engine).
    pub fn new() -> (Arc<SnapshotCache>, mpsc::UnboundedReceiver<Proxy>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Arc::new(SnapshotCache {
                slots: DashMap::new(),
                build_requests: tx,
            }),
            rx,
        )
    }

    /// Subscribes to the snapshot of `proxy`'s class; asks for a build when the class is new.
    pub fn subscribe(&self, proxy: &Proxy) -> watch::Receiver<Option<Arc<Snapshot>>> {
        let key = proxy.class_key();
        // The shard lock is held only for this map operation, never across an await.
        if let Some(slot) = self.slots.get(&key) {
            return slot.subscribe();
        }
        let entry = self.slots.entry(key).or_insert_with(|| {
            // A closed channel means the push engine is gone (shutdown): nothing to ask.
            let _ = self.build_requests.send(proxy.clone());
            watch::channel(None).0
        });
        entry.subscribe()
    }

    /// Publishes a snapshot for a class. Returns true when it differs from the current one (and so
    /// wakes the class's streams); an identical version reaches nobody.
    pub fn publish(&self, snapshot: Arc<Snapshot>) -> bool {
        let slot = self
            .slots
            .entry(snapshot.class.clone())
            .or_insert_with(|| watch::channel(None).0);
        slot.send_if_modified(|cur| {
            if cur.as_ref().map(|c| c.version.as_str()) == Some(snapshot.version.as_str()) {
                return false;
            }
            *cur = Some(snapshot.clone());
            true
        })
    }

    /// The current snapshot of a class.
    pub fn get(&self, key: &ClassKey) -> Option<Arc<Snapshot>> {
        self.slots.get(key).and_then(|s| s.borrow().clone())
    }

    /// Every class with a slot.
    pub fn classes(&self) -> Vec<ClassKey> {
        self.slots.iter().map(|e| e.key().clone()).collect()
    }

    /// Drops classes no stream listens to any more; returns the dropped keys.
    pub fn remove_unused(&self) -> Vec<ClassKey> {
        let unused: Vec<ClassKey> = self
            .slots
            .iter()
            .filter(|e| e.value().receiver_count() == 0)
            .map(|e| e.key().clone())
            .collect();
        for k in &unused {
            self.slots.remove_if(k, |_, s| s.receiver_count() == 0);
        }
        unused
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use meshpilot_model::{Interception, ProxyKind};

    #[test]
    fn hex16_is_sixteen_lowercase_digits() {
        for v in [0, 1, 0xdead_beef, u64::MAX, 0x0123_4567_89ab_cdef] {
            assert_eq!(hex16(v), format!("{v:016x}"));
        }
    }

    #[test]
    fn a_version_is_sixteen_lowercase_digits_held_inline() {
        for v in [0, 1, 0xabc, u64::MAX, 0x0123_4567_89ab_cdef] {
            let version = Version::of(v);
            assert_eq!(version.as_str(), format!("{v:016x}"));
            assert_eq!(version.to_string(), format!("{v:016x}"));
            assert_eq!(
                serde_json::to_string(&version).expect("serializes"),
                format!("\"{v:016x}\"")
            );
        }
        let body = b"a resource";
        let r = Resource::new("r", Bytes::from_static(body), vec![]);
        assert_eq!(r.version, hex16(xxhash_rust::xxh3::xxh3_64(body)));
    }

    #[test]
    fn a_patched_set_equals_the_set_built_from_its_result() {
        let r = |name: &str, body: &'static [u8]| {
            Arc::new(Resource::new(name, Bytes::from_static(body), Vec::new()))
        };
        let before = TypeSet::from_shared([r("a", b"1"), r("b", b"2"), r("c", b"3")]);
        // Remove one, replace one, add one, and remove a name that is not there.
        let (b2, d) = (r("b", b"22"), r("d", b"4"));
        let patched = before.patched(["a", "x"], [&b2, &d]);
        let built = TypeSet::from_shared([r("b", b"22"), r("c", b"3"), r("d", b"4")]);
        assert_eq!(patched, built, "same items, version and names hash");
        assert_ne!(patched.version, before.version);
        assert_ne!(patched.names_hash, before.names_hash);
        // Same names, another body: the names hash stays, the version moves.
        let c2 = r("c", b"33");
        let body_only = built.patched([], [&c2]);
        assert_eq!(body_only.names_hash, built.names_hash);
        assert_ne!(body_only.version, built.version);
        // Undoing a patch gives the version back.
        let c = r("c", b"3");
        assert_eq!(body_only.patched([], [&c]).version, built.version);
        assert_eq!(
            serde_json::to_value(&patched.items).expect("json"),
            serde_json::to_value(built.items.iter().collect::<BTreeMap<_, _>>()).expect("json"),
            "serializes as the map of names it is"
        );
    }

    #[test]
    fn per_type_reads_and_serializes_as_the_map_it_replaces() {
        let mut per: PerType<u32> = PerType::default();
        let mut map: BTreeMap<XdsType, u32> = BTreeMap::new();
        for (t, n) in [
            (XdsType::Route, 4),
            (XdsType::Cluster, 1),
            (XdsType::Route, 5),
        ] {
            *per.or_default(t) += n;
            *map.entry(t).or_default() += n;
        }
        assert_eq!(per.iter().count(), 2);
        assert!(per.contains(XdsType::Cluster) && !per.contains(XdsType::Endpoint));
        assert_eq!(per.get(XdsType::Route), Some(&9));
        assert_eq!(per.get(XdsType::Listener), None);
        let listed: Vec<(XdsType, u32)> = per.iter().map(|(t, n)| (t, *n)).collect();
        let expected: Vec<(XdsType, u32)> = map.iter().map(|(t, n)| (*t, *n)).collect();
        assert_eq!(listed, expected);
        assert_eq!(
            serde_json::to_value(&per).expect("json"),
            serde_json::to_value(&map).expect("json")
        );
        let copied: PerType<u32> = map.into_iter().collect();
        assert_eq!(copied, per);
    }

    fn class() -> ClassKey {
        ClassKey {
            kind: ProxyKind::Sidecar,
            namespace: "default".into(),
            labels: Default::default(),
            interception: Interception::Redirect,
            bind_ip: None,
            pod_ports: Default::default(),
            workload_certificate: false,
            locality: String::new(),
        }
    }

    fn res(name: &str, body: &'static [u8]) -> Resource {
        Resource::new(name, Bytes::from_static(body), vec![])
    }

    #[test]
    fn versions_are_content_hashes() {
        let a = Snapshot::new(class(), [vec![res("c", b"1")], vec![], vec![], vec![]], &[])
            .expect("consistent");
        let b = Snapshot::new(class(), [vec![res("c", b"1")], vec![], vec![], vec![]], &[])
            .expect("consistent");
        let c = Snapshot::new(class(), [vec![res("c", b"2")], vec![], vec![], vec![]], &[])
            .expect("consistent");
        assert_eq!(a.version, b.version);
        assert_ne!(a.version, c.version);
        assert_eq!(
            a.get(XdsType::Endpoint).version,
            c.get(XdsType::Endpoint).version
        );
    }

    #[test]
    fn secrets_change_the_version_only_when_there_are_some() {
        let plain = Snapshot::new(class(), [vec![res("c", b"1")], vec![], vec![], vec![]], &[])
            .expect("consistent");
        let none = plain.clone().with_secrets(Arc::new(TypeSet::default()));
        assert_eq!(
            none.version, plain.version,
            "no secrets: the version it always had"
        );
        let one = |body: &'static [u8]| {
            plain
                .clone()
                .with_secrets(Arc::new(TypeSet::new(vec![res("kubernetes://a", body)])))
        };
        let (a, b) = (one(b"k1"), one(b"k2"));
        assert_ne!(a.version, plain.version);
        assert_ne!(a.version, b.version);
        assert_eq!(
            a.get(XdsType::Listener).version,
            b.get(XdsType::Listener).version
        );
        assert_eq!(a.get(XdsType::Secret).items.len(), 1);
    }

    #[test]
    fn dangling_references_are_refused() {
        let err = Snapshot::new(
            class(),
            [vec![res("c", b"1")], vec![], vec![], vec![]],
            &[Reference {
                from_type: XdsType::Cluster,
                from: "c".into(),
                to_type: XdsType::Endpoint,
                to: "c".into(),
            }],
        )
        .expect_err("missing CLA");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn identical_publish_wakes_nobody() {
        let (cache, _rx) = SnapshotCache::new();
        let s = Arc::new(
            Snapshot::new(class(), [vec![res("c", b"1")], vec![], vec![], vec![]], &[])
                .expect("consistent"),
        );
        assert!(cache.publish(s.clone()));
        let same = Arc::new((*s).clone());
        assert!(!cache.publish(same));
    }
}
