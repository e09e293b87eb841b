//! Putting one proxy class's snapshot together: the shared (or its namespace's, or its
//! Sidecar scope's) clusters and endpoints with the class's own listeners, routes and clusters,
//! and, where some cluster balances by locality, the endpoint set of the class's locality.

use std::sync::Arc;

use bytes::Bytes;
use meshpilot_model::{ClassKey, Proxy, ProxyKind};
use meshpilot_snapshot::{Resource, Snapshot, SnapshotError, TypeSet};
use prost::Message;

use super::{ClassOutput, ClustersAndEndpoints, ScopeKey};

/// What of a client its endpoint assignments depend on, when some cluster balances by
/// locality: its locality, the labels `failoverPriority` compares, and which namespace's sets
/// it sees. Clients with equal keys share one [`locality_endpoints`] set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocalityKey {
    pub locality: String,
    /// Its labels that `failoverPriority` reads; `None` for a client without any labels.
    pub labels: Option<meshpilot_model::Labels>,
    /// Its namespace when that namespace has sets of its own (`None`: the common sets).
    pub namespace: Option<String>,
    /// Its Sidecar's egress scope, whose assignments it starts from (`None`: unscoped).
    pub scope: Option<ScopeKey>,
}

/// The [`LocalityKey`] of `proxy` (whose class compiled to `out`), or `None` when no cluster of
/// `shared` balances by locality (the proxy then takes the shared assignments as they are).
pub fn locality_key(
    shared: &ClustersAndEndpoints,
    proxy: &Proxy,
    out: &ClassOutput,
) -> Option<LocalityKey> {
    let (aware, own_sets) = shared.locality_aware_for(&proxy.namespace);
    if aware.is_empty() {
        return None;
    }
    let mut labels = meshpilot_model::Labels::new();
    for key in aware
        .values()
        .flat_map(|c| c.iter())
        .flat_map(|c| c.label_keys())
    {
        if let Some(v) = proxy.labels.get(key) {
            labels.insert(key.to_string(), v.clone());
        }
    }
    Some(LocalityKey {
        locality: proxy.locality.clone(),
        labels: (!proxy.labels.is_empty()).then_some(labels),
        namespace: own_sets.then(|| proxy.namespace.clone()),
        scope: out.scope.clone(),
    })
}

/// The endpoint set of clients with `key`: their namespace's assignments with those of the
/// locality-aware clusters made for their locality laid over them. Made once per key and
/// change, shared by every class with that key ([`assemble_with_endpoints`]).
pub fn locality_endpoints(shared: &ClustersAndEndpoints, key: &LocalityKey) -> Arc<TypeSet> {
    let ns = key.namespace.as_deref().unwrap_or_default();
    let scoped = key.scope.as_ref().map(|s| shared.scoped_sets(s));
    let base = match &scoped {
        Some(sets) => &sets.endpoints,
        None => shared.for_namespace(ns).1,
    };
    // The namespace's own map: each cluster's ordering comes from the rule its clients see.
    let (aware, _) = shared.locality_aware_for(ns);
    let own: Vec<Arc<Resource>> = aware
        .values()
        .flat_map(|c| c.iter())
        // Under a Sidecar's scope, only the clusters it reaches.
        .filter(|c| scoped.is_none() || base.items.contains_key(&c.name))
        .map(|c| {
            let cla = c.assignment(&key.locality, key.labels.as_ref());
            Arc::new(Resource::with_sources(
                c.name.clone(),
                Bytes::from(cla.encode_to_vec()),
                c.sources.clone(),
            ))
        })
        .collect();
    if own.is_empty() {
        return base.clone();
    }
    Arc::new(base.patched(std::iter::empty(), &own))
}

/// Assembles a class's snapshot from the shared clusters/endpoints and its own listeners/routes,
/// checking that every listener's route configuration is there.
pub fn assemble(
    class: ClassKey,
    shared: &ClustersAndEndpoints,
    out: &ClassOutput,
) -> Result<Snapshot, SnapshotError> {
    assemble_with_endpoints(class, shared, out, None)
}

/// [`assemble`], with the class's endpoint set from [`locality_endpoints`] in place of its
/// namespace's (or its scope's). A class whose Sidecar scopes it takes its scope's sets
/// ([`ClustersAndEndpoints::scoped_sets`]), the others their namespace's as they are.
pub fn assemble_with_endpoints(
    class: ClassKey,
    shared: &ClustersAndEndpoints,
    out: &ClassOutput,
    endpoints: Option<Arc<TypeSet>>,
) -> Result<Snapshot, SnapshotError> {
    let (base, endpoints) = match &out.scope {
        Some(scope) => {
            let sets = shared.scoped_sets(scope);
            let endpoints = endpoints.unwrap_or_else(|| sets.endpoints.clone());
            (sets.clusters.clone(), endpoints)
        }
        None => {
            let (shared_clusters, shared_endpoints) = shared.for_namespace(&class.namespace);
            let endpoints = endpoints.unwrap_or_else(|| shared_endpoints.clone());
            // A sidecar takes the sidecars' version of the clusters that have one.
            let base = match class.kind {
                ProxyKind::Sidecar => shared.sidecar_clusters_for(&class.namespace),
                ProxyKind::Router => None,
            }
            .unwrap_or_else(|| shared_clusters.clone());
            (base, endpoints)
        }
    };
    let clusters = if out.clusters.items.is_empty() {
        base
    } else {
        // Shares every untouched part of the shared set.
        Arc::new(base.patched(std::iter::empty(), out.clusters.items.values()))
    };
    Snapshot::from_sets(
        class,
        [
            clusters,
            endpoints,
            out.listeners.clone(),
            out.routes.clone(),
        ],
        &out.references,
    )
    .map(|s| {
        if out.secrets.items.is_empty() {
            s
        } else {
            s.with_secrets(out.secrets.clone())
        }
    })
}
