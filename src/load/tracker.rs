//! Shared bookkeeping between the simulated proxies and the driver: per-proxy counters, and the
//! tracked changes with the moment each proxy ACKed a response satisfying them.
//!
//! A change is registered *before* its file is written, so every response that could carry it
//! is checked against it; a proxy that never receives matching content never records a time,
//! and the change is reported as not converged.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::mesh::Expect;

/// Counters of one simulated proxy (written by its task, read by the driver).
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub bytes: AtomicU64,
    pub responses: AtomicU64,
    pub nacks: AtomicU64,
    /// Resources that did not decode.
    pub bad_resources: AtomicU64,
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
