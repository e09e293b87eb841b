//! The registry of connected proxies and, per stream and xDS type, what was sent, acknowledged
//! and rejected: the data behind `/syncz` and the assertions of the xds tests.
//!
//! Each stream task is the only writer of its own entry (through its [`Registration`]); readers
//! take copies with [`Connections::list`]. The entry is removed when the registration drops,
//! i.e. when the stream task ends for whatever reason.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use serde::{Serialize, Serializer};

use crate::model::{ClassKey, ProxyKind};
use crate::snapshot::XdsType;

/// Which ADS flavour a stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Variant {
    /// State of the world: `StreamAggregatedResources`.
    Sotw,
    /// Incremental: `DeltaAggregatedResources`.
    Delta,
}

/// The last rejection of one type on one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NackStatus {
    /// The version we sent that Envoy rejected.
    pub version: String,
    pub nonce: String,
    /// Envoy's `error_detail.message`, verbatim.
    pub message: String,
    #[serde(serialize_with = "unix_millis")]
    pub at: SystemTime,
}

/// Protocol state of one xDS type on one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TypeStatus {
    /// SotW: `version_info` of the last response; Delta: its `system_version_info`.
    pub version_sent: Option<String>,
    pub nonce_sent: Option<String>,
    /// The version of the last response Envoy acknowledged.
    pub version_acked: Option<String>,
    pub last_nack: Option<NackStatus>,
    /// Whether the stream receives every resource of the type.
    pub wildcard: bool,
    /// Names explicitly subscribed to (empty for a plain wildcard subscription).
    pub subscribed: BTreeSet<String>,
}

/// One connected proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionStatus {
    /// Unique per process, increasing in connection order.
    pub id: u64,
    pub node_id: String,
    pub kind: ProxyKind,
    /// The class whose snapshot the proxy receives.
    pub class: ClassKey,
    pub peer: Option<SocketAddr>,
    #[serde(serialize_with = "unix_millis")]
    pub connected_since: SystemTime,
    pub variant: Variant,
    /// Only the types the proxy has asked for.
    pub types: BTreeMap<XdsType, TypeStatus>,
}

/// Every connected proxy, keyed by connection id.
#[derive(Debug, Default)]
pub struct Connections {
    next_id: AtomicU64,
    // DashMap: each stream writes only its own entry, under a shard lock held for one field
    // update (never across an await), so streams do not contend on one global lock.
    conns: DashMap<u64, ConnectionStatus>,
}

impl Connections {
    pub fn new() -> Connections {
        Connections::default()
    }

    /// A copy of every connection, in connection order.
    pub fn list(&self) -> Vec<ConnectionStatus> {
        let mut all: Vec<ConnectionStatus> = self.conns.iter().map(|e| e.value().clone()).collect();
        all.sort_by_key(|c| c.id);
        all
    }

    /// The connection of a node id, if one is connected (the newest when several are).
    pub fn by_node(&self, node_id: &str) -> Option<ConnectionStatus> {
        self.list().into_iter().rev().find(|c| c.node_id == node_id)
    }

    /// The class of a connected node id (for config dumps).
    pub fn class_of(&self, node_id: &str) -> Option<ClassKey> {
        self.by_node(node_id).map(|c| c.class)
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
        self.conns.insert(
            id,
            ConnectionStatus {
                id,
                node_id,
                kind,
                class,
                peer,
                connected_since: SystemTime::now(),
                variant,
                types: BTreeMap::new(),
            },
        );
        Registration {
            conns: self.clone(),
            id,
        }
    }
}

/// A stream's handle on its own entry in [`Connections`].
#[derive(Debug)]
pub(crate) struct Registration {
    conns: Arc<Connections>,
    id: u64,
}

impl Registration {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Updates the status of one type (creating it on first use).
    pub(crate) fn update(&self, t: XdsType, f: impl FnOnce(&mut TypeStatus)) {
        if let Some(mut conn) = self.conns.conns.get_mut(&self.id) {
            f(conn.types.entry(t).or_default());
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.conns.conns.remove(&self.id);
    }
}

fn unix_millis<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    s.serialize_u64(ms)
}
