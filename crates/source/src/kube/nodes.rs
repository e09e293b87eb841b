//! Nodes, watched as metadata only (a Node's status — images, conditions — is never fetched)
//! and projected to their locality, `REGION/ZONE` from the `topology.kubernetes.io/region` and
//! `/zone` labels, which Pods on that node carry. The Node watch is a synced source of its own
//! (an empty one: Nodes put no object in the index), and the Pod watch starts only after it has
//! listed, so Pods get their locality from the first list on.
//!
//! A Pod's own locality label (`topology.istio.io/locality`, `istio-locality`) wins over its
//! Node's, as in istiod. A Node whose locality changes later (relabelled, or gone) bumps
//! [`Localities::changes`]: each Pod watch then re-sends the Pods whose locality came from a
//! Node and now differs, so their endpoints move to the new locality without a Pod change.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::Client;
use crate::{SourceEvent, SourceId};
use tokio_util::sync::CancellationToken as Shutdown;

const REGION_LABEL: &str = "topology.kubernetes.io/region";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Node name → locality, shared by the Node watch (the only writer) and the Pod watches.
#[derive(Clone)]
pub(super) struct Localities {
    // A std lock: held only for a map lookup or insert, never across an `.await`.
    map: Arc<RwLock<BTreeMap<String, String>>>,
    synced: watch::Sender<bool>,
    /// Bumped each time some Node's locality changes after the first list.
    changed: watch::Sender<u64>,
}

impl Default for Localities {
    fn default() -> Self {
        Localities {
            map: Arc::default(),
            synced: watch::Sender::new(false),
            changed: watch::Sender::new(0),
        }
    }
}

impl Localities {
    /// The locality of `node`, if its labels give one.
    pub(super) fn get(&self, node: &str) -> Option<String> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(node).cloned()
    }

    /// Resolves once the Nodes have been listed.
    pub(super) async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        // Err only if the sender is gone, which `self` prevents.
        let _ = rx.wait_for(|synced| *synced).await;
    }

    /// Told each time some Node's locality has changed (its value counts the changes).
    pub(super) fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn replace(&self, all: BTreeMap<String, String>) {
        let differs = {
            let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
            let differs = *map != all;
            *map = all;
            differs
        };
        if differs {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Records `node`'s locality; Pod watches are told when it differs from the one it had
    /// (a Node's other changes, such as its status heartbeats, tell them nothing).
    pub(super) fn set(&self, node: String, locality: Option<String>) {
        let previous = {
            let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
            match locality.clone() {
                Some(l) => map.insert(node, l),
                None => map.remove(&node),
            }
        };
        if previous != locality {
            self.changed.send_modify(|n| *n += 1);
        }
    }
}

/// The locality a Node's labels give: `REGION/ZONE`, `REGION`, or none.
fn locality_of(node: &PartialObjectMeta<Node>) -> Option<String> {
    let labels = node.metadata.labels.as_ref()?;
    let region = labels.get(REGION_LABEL).filter(|r| !r.is_empty())?;
    Some(match labels.get(ZONE_LABEL).filter(|z| !z.is_empty()) {
        Some(zone) => format!("{region}/{zone}"),
        None => region.clone(),
    })
}

/// Watches Node metadata until shutdown; each (re)list ends in an empty Reset of `source`.
pub(super) async fn run(
    client: Client,
    source: SourceId,
    localities: Localities,
    tx: mpsc::Sender<SourceEvent>,
    shutdown: Shutdown,
) {
    let api: Api<PartialObjectMeta<Node>> = Api::all(client);
    let stream = kube::runtime::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut listing: Option<BTreeMap<String, String>> = None;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            event = stream.next() => event,
        };
        match event {
            None => break,
            Some(Err(e)) => warn!(error = %e, "watch failed; retrying with backoff"),
            Some(Ok(Event::Init)) => listing = Some(BTreeMap::new()),
            Some(Ok(Event::InitApply(node))) => {
                if let (Some(name), Some(locality)) =
                    (node.metadata.name.clone(), locality_of(&node))
                {
                    listing
                        .get_or_insert_with(BTreeMap::new)
                        .insert(name, locality);
                }
            }
            Some(Ok(Event::InitDone)) => {
                let all = listing.take().unwrap_or_default();
                info!(with_locality = all.len(), "nodes listed");
                localities.replace(all);
                localities.synced.send_replace(true);
                let reset = SourceEvent::Reset {
                    source,
                    objects: Vec::new(),
                    diagnostics: Vec::new(),
                };
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    sent = tx.send(reset) => if sent.is_err() { break },
                }
            }
            Some(Ok(Event::Apply(node))) => {
                if let Some(name) = node.metadata.name.clone() {
                    localities.set(name, locality_of(&node));
                }
            }
            Some(Ok(Event::Delete(node))) => {
                if let Some(name) = node.metadata.name.clone() {
                    localities.set(name, None);
                }
            }
        }
    }
    debug!("node watch stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(labels: &[(&str, &str)]) -> PartialObjectMeta<Node> {
        let mut n = PartialObjectMeta::<Node>::default();
        n.metadata.name = Some("n1".into());
        n.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        n
    }

    #[test]
    fn locality_from_topology_labels() {
        assert_eq!(
            locality_of(&node(&[(REGION_LABEL, "eu-west1"), (ZONE_LABEL, "b")])).as_deref(),
            Some("eu-west1/b")
        );
        assert_eq!(
            locality_of(&node(&[(REGION_LABEL, "eu-west1")])).as_deref(),
            Some("eu-west1")
        );
        assert_eq!(locality_of(&node(&[(ZONE_LABEL, "b")])), None);
    }
}
