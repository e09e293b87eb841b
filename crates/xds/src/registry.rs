//! The registry of connected proxies and, per stream and xDS type, what was sent, acknowledged
//! and rejected — per type (versions, nonces, [`SyncStatus`]) and per resource
//! ([`TypeRecord`]): the data behind `/debug/syncz`, `/debug/config_dump` and the xds tests.
//!
//! The registry is an observer of the protocol: each stream's [`Registration`] receives the
//! stream's [`ProtocolEvent`]s and is the only writer of its own entry; readers take copies with
//! [`Connections::list`] and [`Connections::sent_resources`]. The entry is removed when the
//! registration drops, i.e. when the stream ends for whatever reason.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use serde::{Serialize, Serializer};
use tracing::{debug, warn};

use super::events::{ProtocolEvent, ProtocolObserver, Versions};
use super::resources::Names;
use super::tracking::{SentResource, TypeRecord};
use meshpilot_model::{ClassKey, ConfigKey, ProxyKind};
use meshpilot_snapshot::{PerType, TypeSet, XdsType};

/// Which ADS flavour a stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Variant {
    /// State of the world: `StreamAggregatedResources`.
    Sotw,
    /// Incremental: `DeltaAggregatedResources`.
    Delta,
}

/// Istio's sync status of one type on one stream (istioctl `proxy-status` words).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SyncStatus {
    /// Nothing was sent for the type yet (often: nothing to send).
    #[default]
    NotSent,
    /// The proxy acknowledged the last response sent.
    Synced,
    /// A response was sent and the proxy has not answered it yet.
    Stale,
    /// The proxy rejected the last response sent.
    Error,
}

impl SyncStatus {
    /// The word istioctl prints.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::NotSent => "NOT SENT",
            SyncStatus::Synced => "SYNCED",
            SyncStatus::Stale => "STALE",
            SyncStatus::Error => "ERROR",
        }
    }
}

/// A resource named in a NACK, with the input objects that produced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NackedResource {
    pub name: String,
    pub version: String,
    pub sources: Vec<ConfigKey>,
}

/// The last rejection of one type on one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NackStatus {
    /// The version we sent that Envoy rejected.
    pub version: String,
    pub nonce: String,
    /// Envoy's `error_detail.message`, verbatim.
    pub message: String,
    #[serde(serialize_with = "ser_time")]
    pub at: SystemTime,
    /// The resources the rejection is about, and their input objects.
    pub resources: Vec<NackedResource>,
}

/// Protocol state of one xDS type on one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TypeStatus {
    /// Derived from the fields below by [`TypeStatus::sync_status`] after every change.
    pub status: SyncStatus,
    /// SotW: `version_info` of the last response; Delta: its `system_version_info`.
    pub version_sent: Option<String>,
    pub nonce_sent: Option<String>,
    /// The version of the last response Envoy acknowledged.
    pub version_acked: Option<String>,
    pub nonce_acked: Option<String>,
    pub last_nack: Option<NackStatus>,
    /// Whether the stream receives every resource of the type.
    pub wildcard: bool,
    /// Names explicitly subscribed to (empty for a plain wildcard subscription); shared with
    /// the stream's own subscription, not copied.
    pub subscribed: Names,
}

impl TypeStatus {
    /// Istio's rule: nothing sent → NOT_SENT; the last response rejected → ERROR; the last
    /// response acknowledged → SYNCED; otherwise the proxy has yet to answer → STALE.
    pub fn sync_status(&self) -> SyncStatus {
        let Some(sent) = &self.nonce_sent else {
            return SyncStatus::NotSent;
        };
        if self.last_nack.as_ref().is_some_and(|n| &n.nonce == sent) {
            SyncStatus::Error
        } else if self.nonce_acked.as_ref() == Some(sent) {
            SyncStatus::Synced
        } else {
            SyncStatus::Stale
        }
    }
}

/// One connected proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionStatus {
    /// Unique per process, increasing in connection order.
    pub id: u64,
    pub node_id: String,
    #[serde(rename = "type")]
    pub kind: ProxyKind,
    /// The class whose snapshot the proxy receives.
    pub class: ClassKey,
    /// The proxy's address as seen by the server.
    #[serde(rename = "address")]
    pub peer: Option<SocketAddr>,
    #[serde(serialize_with = "ser_time")]
    pub connected_since: SystemTime,
    pub variant: Variant,
    /// Only the types the proxy has asked for.
    pub types: PerType<TypeStatus>,
}

/// A stream's whole record: its status, and per type what it holds.
#[derive(Debug)]
struct Entry {
    status: ConnectionStatus,
    resources: PerType<TypeRecord>,
}

/// A stream's entry, held by the stream's [`Registration`] and by the registry. A sync mutex
/// per stream: the stream holds it for one field update (never across an await) and a debug
/// read holds it to copy, so it is contended only by those reads; no global or sharded lock is
/// taken per push or per ACK.
type StreamEntry = Arc<Mutex<Entry>>;

/// Sets `slot` to `value`, reusing the string it holds: a stream records a version and a nonce
/// with every response and every ACK, and these are the same few bytes long each time.
fn set_str(slot: &mut Option<String>, value: &str) {
    let s = slot.get_or_insert_default();
    s.clear();
    s.push_str(value);
}

fn lock(e: &Mutex<Entry>) -> MutexGuard<'_, Entry> {
    // A panic while holding it cannot leave an entry half-updated in a harmful way.
    e.lock().unwrap_or_else(|p| p.into_inner())
}

/// NACKs already logged (type, resource, version): each is logged once, whatever the number of
/// proxies and retries. Cleared when it grows past this bound.
const LOGGED_NACKS_MAX: usize = 10_000;

/// Every connected proxy, keyed by connection id.
#[derive(Debug, Default)]
pub struct Connections {
    next_id: AtomicU64,
    // DashMap: touched only on connect, disconnect and debug reads; each stream writes through
    // its own `Arc` (see [`StreamEntry`]).
    conns: DashMap<u64, StreamEntry>,
    logged_nacks: Mutex<HashSet<(XdsType, String, String)>>,
}

impl Connections {
    pub fn new() -> Connections {
        Connections::default()
    }

    /// A copy of every connection, in connection order.
    pub fn list(&self) -> Vec<ConnectionStatus> {
        let entries: Vec<StreamEntry> = self.conns.iter().map(|e| e.value().clone()).collect();
        let mut all: Vec<ConnectionStatus> =
            entries.iter().map(|e| lock(e).status.clone()).collect();
        all.sort_by_key(|c| c.id);
        all
    }

    fn newest(&self, node_id: &str) -> Option<StreamEntry> {
        let entries: Vec<StreamEntry> = self.conns.iter().map(|e| e.value().clone()).collect();
        entries
            .into_iter()
            .filter_map(|e| {
                let id = {
                    let g = lock(&e);
                    (g.status.node_id == node_id).then_some(g.status.id)
                };
                id.map(|id| (id, e))
            })
            .max_by_key(|(id, _)| *id)
            .map(|(_, e)| e)
    }

    /// The connection of a node id, if one is connected (the newest when several are).
    pub fn by_node(&self, node_id: &str) -> Option<ConnectionStatus> {
        self.newest(node_id).map(|e| lock(&e).status.clone())
    }

    /// The newest connection of a node id and, per type, every resource it was sent.
    pub fn sent_resources(
        &self,
        node_id: &str,
    ) -> Option<(ConnectionStatus, PerType<Vec<SentResource>>)> {
        let e = self.newest(node_id)?;
        let g = lock(&e);
        let resources = g.resources.iter().map(|(t, r)| (t, r.entries())).collect();
        Some((g.status.clone(), resources))
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Adds a connection; it stays listed until the returned registration drops.
    pub(crate) fn register(
        self: &Arc<Self>,
        node_id: String,
        kind: ProxyKind,
        class: ClassKey,
        peer: Option<SocketAddr>,
        variant: Variant,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Arc::new(Mutex::new(Entry {
            status: ConnectionStatus {
                id,
                node_id,
                kind,
                class,
                peer,
                connected_since: SystemTime::now(),
                variant,
                types: PerType::default(),
            },
            resources: PerType::default(),
        }));
        self.conns.insert(id, entry.clone());
        Registration {
            conns: self.clone(),
            id,
            entry,
        }
    }

    /// True the first time a rejected (type, resource, version) is seen.
    fn first_nack(&self, t: XdsType, r: &SentResource) -> bool {
        let mut seen = self.logged_nacks.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= LOGGED_NACKS_MAX {
            seen.clear();
        }
        seen.insert((
            t,
            r.resource.name.to_string(),
            r.resource.version.to_string(),
        ))
    }
}

/// A stream's handle on its own entry in [`Connections`].
#[derive(Debug)]
pub(crate) struct Registration {
    conns: Arc<Connections>,
    id: u64,
    entry: StreamEntry,
}

impl Registration {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn connected_since(&self) -> SystemTime {
        lock(&self.entry).status.connected_since
    }

    /// Updates the status of one type (creating it on first use).
    fn update(&self, t: XdsType, f: impl FnOnce(&mut TypeStatus)) {
        let mut g = lock(&self.entry);
        let s = g.status.types.or_default(t);
        f(s);
        s.status = s.sync_status();
    }

    /// A response was sent.
    fn record_sent(
        &self,
        t: XdsType,
        version: &str,
        nonce: &str,
        versions: Versions<'_>,
        holds: Arc<TypeSet>,
    ) {
        let now = SystemTime::now();
        let mut g = lock(&self.entry);
        g.resources.or_default(t).sent(versions, nonce, holds, now);
        let s = g.status.types.or_default(t);
        set_str(&mut s.version_sent, version);
        set_str(&mut s.nonce_sent, nonce);
        s.status = s.sync_status();
    }

    /// Envoy applied the response `nonce` (version `version`).
    fn record_ack(&self, t: XdsType, version: &str, nonce: &str) {
        let mut g = lock(&self.entry);
        if let Some(r) = g.resources.get_mut(t) {
            r.acked();
        }
        let s = g.status.types.or_default(t);
        set_str(&mut s.version_acked, version);
        set_str(&mut s.nonce_acked, nonce);
        s.status = s.sync_status();
    }

    /// Envoy rejected the response `nonce`. Finds the resources it is about and logs it at warn
    /// once per rejected resource version (not per retry or per proxy).
    fn record_nack(&self, t: XdsType, version: &str, nonce: &str, message: &str) {
        let (node, blamed) = {
            let mut g = lock(&self.entry);
            let blamed = g.resources.or_default(t).nacked(nonce, message);
            let nack = NackStatus {
                version: version.to_string(),
                nonce: nonce.to_string(),
                message: message.to_string(),
                at: SystemTime::now(),
                resources: blamed
                    .iter()
                    .map(|r| NackedResource {
                        name: r.resource.name.to_string(),
                        version: r.resource.version.to_string(),
                        sources: r.resource.sources.to_vec(),
                    })
                    .collect(),
            };
            let s = g.status.types.or_default(t);
            s.last_nack = Some(nack);
            s.status = s.sync_status();
            (g.status.node_id.clone(), blamed)
        };
        let new = blamed
            .iter()
            .filter(|r| self.conns.first_nack(t, r))
            .count();
        let described = describe(&blamed);
        if new > 0 || blamed.is_empty() {
            warn!(
                %node,
                r#type = %t,
                version,
                resources = %described,
                error = %message,
                "proxy rejected configuration (NACK); it keeps its previous config, and this \
                 content is not resent until it changes",
            );
        } else {
            debug!(%node, r#type = %t, version, resources = %described, error = %message,
                "proxy rejected configuration already reported (NACK)");
        }
    }
}

/// `name (Kind ns/name, …); …` for a log line.
fn describe(rs: &[SentResource]) -> String {
    rs.iter()
        .map(|r| {
            let sources: Vec<String> = r.resource.sources.iter().map(|k| k.to_string()).collect();
            if sources.is_empty() {
                r.resource.name.to_string()
            } else {
                format!("{} (from {})", r.resource.name, sources.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The registry follows the protocol: what a stream subscribed to, sent, and what the proxy
/// made of it.
impl ProtocolObserver for Registration {
    fn observe(&mut self, event: ProtocolEvent<'_>) {
        match event {
            ProtocolEvent::InitialRequest { t, wildcard } => {
                self.update(t, |s| s.wildcard = wildcard);
            }
            ProtocolEvent::Subscribed { t, wildcard, names } => {
                // Shared with the stream's own subscription when it is a snapshot's names.
                let names = names.clone();
                self.update(t, |s| {
                    s.wildcard = wildcard;
                    s.subscribed = names;
                });
            }
            ProtocolEvent::StaleNonce { t, nonce } => {
                debug!(r#type = %t, nonce, "ignoring a request with a stale nonce");
            }
            ProtocolEvent::Sent {
                t,
                version,
                nonce,
                versions,
                holds,
                ..
            } => self.record_sent(t, version, nonce, versions, holds),
            ProtocolEvent::Acked {
                t, version, nonce, ..
            } => self.record_ack(t, version, nonce),
            ProtocolEvent::Nacked {
                t,
                version,
                nonce,
                error_detail,
            } => self.record_nack(t, version, nonce, error_detail),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.conns.conns.remove(&self.id);
    }
}

/// A time as RFC 3339 UTC with milliseconds (`2025-01-31T12:00:00.123Z`), as Envoy prints
/// `last_updated`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

fn ser_time<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn nack(nonce: &str) -> NackStatus {
        NackStatus {
            version: "v".into(),
            nonce: nonce.into(),
            message: "bad".into(),
            at: UNIX_EPOCH,
            resources: vec![],
        }
    }

    fn ts(sent: Option<&str>, acked: Option<&str>, nacked: Option<&str>) -> TypeStatus {
        TypeStatus {
            nonce_sent: sent.map(str::to_string),
            nonce_acked: acked.map(str::to_string),
            last_nack: nacked.map(nack),
            ..Default::default()
        }
    }

    #[test]
    fn sync_status_follows_istios_words() {
        assert_eq!(ts(None, None, None).sync_status(), SyncStatus::NotSent);
        assert_eq!(ts(Some("1"), None, None).sync_status(), SyncStatus::Stale);
        assert_eq!(
            ts(Some("1"), Some("1"), None).sync_status(),
            SyncStatus::Synced
        );
        // Acked an older response, a newer one unanswered.
        assert_eq!(
            ts(Some("2"), Some("1"), None).sync_status(),
            SyncStatus::Stale
        );
        assert_eq!(
            ts(Some("2"), Some("1"), Some("2")).sync_status(),
            SyncStatus::Error
        );
        // An old NACK no longer matters once a newer response is acknowledged.
        assert_eq!(
            ts(Some("3"), Some("3"), Some("2")).sync_status(),
            SyncStatus::Synced
        );
        assert_eq!(SyncStatus::NotSent.as_str(), "NOT SENT");
        assert_eq!(
            serde_json::to_value(SyncStatus::NotSent).expect("json"),
            "NOT_SENT"
        );
    }

    #[test]
    fn rfc3339_formats_utc_with_millis() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_251_199_456);
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.456Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000Z");
    }
}
