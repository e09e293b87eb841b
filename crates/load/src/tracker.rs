//! Shared bookkeeping between the simulated proxies and the driver: per-proxy counters, and the
//! tracked changes with the moment each proxy ACKed a response satisfying them.
//!
//! A change is registered *before* its file is written, so every response that could carry it
//! is checked against it; a proxy that never receives matching content never records a time,
//! and the change is reported as not converged.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use xxhash_rust::xxh3::xxh3_128;

use super::wire;
use crate::mesh::Expect;

/// Counters of one simulated proxy (written by its task, read by the driver).
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub bytes: AtomicU64,
    pub responses: AtomicU64,
    pub nacks: AtomicU64,
    /// Resources that did not decode.
    pub bad_resources: AtomicU64,
    /// Resources decoded into their Envoy type (`--decode full` only).
    pub fully_decoded: AtomicU64,
    /// Resources that did not decode into their Envoy type (`--decode full` only).
    pub decode_failures: AtomicU64,
    /// The stream is open (the server accepted it).
    pub connected: AtomicBool,
    /// Holds a complete configuration now.
    pub complete: AtomicBool,
    /// Nanoseconds from the run's start until the proxy first held a complete configuration
    /// (0: not yet).
    pub complete_ns: AtomicU64,
    /// Nanoseconds from the run's start until the proxy started connecting.
    pub connect_ns: AtomicU64,
    /// Attempts to open the stream that failed before it opened (then retried).
    pub retries: AtomicU64,
    /// The stream ended or failed.
    pub failed: AtomicBool,
    pub error: Mutex<Option<String>>,
}

/// Not yet satisfied.
const NOT_YET: u64 = u64::MAX;

/// One tracked change.
#[derive(Debug)]
pub struct Tracked {
    pub expect: Expect,
    pub registered: Instant,
    /// Per proxy: nanoseconds from `registered` until the proxy ACKed matching content.
    acked: Vec<AtomicU64>,
    /// The 128-bit hash of an endpoint assignment already found to satisfy `expect`. Every
    /// proxy receives the same bytes: the first to check them walks them, the others compare
    /// hashes (one hash of ~500 bytes instead of a walk, per proxy and change).
    verified: OnceLock<u128>,
}

impl Tracked {
    /// Per-proxy latencies in nanoseconds, `None` for proxies that never got it.
    pub fn latencies(&self) -> Vec<Option<u64>> {
        self.acked
            .iter()
            .map(|a| match a.load(Ordering::Relaxed) {
                NOT_YET => None,
                v => Some(v),
            })
            .collect()
    }

    /// Whether the resource `body` satisfies this change (see [`wire::body_satisfies`]).
    pub fn satisfied_by(&self, body: &[u8]) -> bool {
        if !matches!(self.expect, Expect::Endpoint { .. }) {
            return wire::body_satisfies(&self.expect, body);
        }
        let hash = xxh3_128(body);
        if self.verified.get() == Some(&hash) {
            return true;
        }
        let ok = wire::body_satisfies(&self.expect, body);
        if ok {
            // A later, different body that also satisfies is walked each time: rare.
            let _ = self.verified.set(hash);
        }
        ok
    }

    /// Proxy `proxy` ACKs content satisfying this change now (the first time counts).
    pub fn satisfy(&self, proxy: usize) {
        let ns = self.registered.elapsed().as_nanos() as u64;
        if let Some(slot) = self.acked.get(proxy) {
            let _ = slot.compare_exchange(NOT_YET, ns, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn missing(&self) -> usize {
        self.acked
            .iter()
            .filter(|a| a.load(Ordering::Relaxed) == NOT_YET)
            .count()
    }
}

/// The tracked changes of a run.
#[derive(Debug)]
pub struct Tracker {
    proxies: usize,
    /// Append-only. A std lock: held only to push or clone a few `Arc`s, never across an await.
    items: RwLock<Vec<Arc<Tracked>>>,
}

impl Tracker {
    pub fn new(proxies: usize) -> Tracker {
        Tracker {
            proxies,
            items: RwLock::new(Vec::new()),
        }
    }

    /// Registers a change; returns its id.
    pub fn register(&self, expect: Expect) -> usize {
        let t = Arc::new(Tracked {
            expect,
            registered: Instant::now(),
            acked: (0..self.proxies).map(|_| AtomicU64::new(NOT_YET)).collect(),
            verified: OnceLock::new(),
        });
        let mut items = self.items.write().unwrap_or_else(|e| e.into_inner());
        items.push(t);
        items.len() - 1
    }

    /// Appends the changes registered since `cursor` to `pending`; returns the new cursor.
    pub fn pending_since(&self, cursor: usize, pending: &mut Vec<Arc<Tracked>>) -> usize {
        let items = self.items.read().unwrap_or_else(|e| e.into_inner());
        if let Some(new) = items.get(cursor..) {
            pending.extend(new.iter().cloned());
        }
        items.len()
    }

    /// Every tracked change.
    pub fn all(&self) -> Vec<Arc<Tracked>> {
        self.items.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// (proxy, change) pairs still missing.
    pub fn missing(&self) -> usize {
        self.all().iter().map(|t| t.missing()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address};
    use envoy_types::pb::envoy::config::endpoint::v3::{
        ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
    };
    use prost::Message;

    fn cla(ips: &[&str]) -> Vec<u8> {
        let lb = |ip: &&str| LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: ip.to_string(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        ClusterLoadAssignment {
            cluster_name: "c".into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: ips.iter().map(lb).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn a_verified_body_is_recognised_and_any_other_is_still_read() {
        let tracker = Tracker::new(2);
        tracker.register(Expect::Endpoint {
            cla: "c".into(),
            ip: "10.0.0.9".into(),
        });
        let t = &tracker.all()[0];
        let with = cla(&["10.0.0.1", "10.0.0.9"]);
        let without = cla(&["10.0.0.1", "10.0.0.8"]);
        assert!(!t.satisfied_by(&without), "nothing verified yet");
        assert!(t.satisfied_by(&with), "read and verified");
        assert!(t.satisfied_by(&with), "the same bytes again");
        assert!(
            !t.satisfied_by(&without),
            "other bytes are read, not trusted"
        );
        assert!(
            t.satisfied_by(&cla(&["10.0.0.9"])),
            "a different body that satisfies"
        );
        assert!(!t.satisfied_by(&with[..with.len() - 2]), "cut short");
    }
}
