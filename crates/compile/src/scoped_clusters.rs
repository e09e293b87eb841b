//! The clusters and endpoints of the sidecars a Sidecar's `egress` scopes, as istiod's
//! `SidecarScope` prunes them: only those of the service ports the scope reaches (see
//! [`ScopeKey`]), plus every cluster that is not a service's (`PassthroughCluster`,
//! `BlackHoleCluster`; a class's inbound clusters join later). Made once per change, Sidecar
//! and client namespace from that namespace's sidecar sets, and shared by every class the
//! Sidecar applies to; classes without such a Sidecar take the common sets untouched.

use std::sync::{Arc, Mutex, PoisonError};

use foldhash::HashMap;
use meshpilot_snapshot::TypeSet;

use super::ClustersAndEndpoints;
use super::scope::ScopeKey;

/// One scope's clusters and their assignments (an assignment is kept exactly when its
/// cluster is, so the snapshot's references still hold).
#[derive(Debug, Clone, Default)]
pub struct ScopedSets {
    pub clusters: Arc<TypeSet>,
    pub endpoints: Arc<TypeSet>,
}

/// The scoped sets made from one round's shared sets, by scope; emptied with each new round
/// (a new [`ClustersAndEndpoints`] starts an empty one).
///
/// A `std` mutex, because assembly is synchronous and the lock is never held across an
/// `.await`; it is taken once per class assembly, never per proxy or per response.
#[derive(Debug, Clone, Default)]
pub struct ScopedViews(Arc<Mutex<HashMap<ScopeKey, Arc<ScopedSets>>>>);

impl ScopedViews {
    /// The sets of `scope` over `shared` (made on the first call of the round).
    pub(super) fn get(&self, shared: &ClustersAndEndpoints, scope: &ScopeKey) -> Arc<ScopedSets> {
        let mut made = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        made.entry(scope.clone())
            .or_insert_with(|| Arc::new(scoped(shared, scope)))
            .clone()
    }
}

/// The sidecar sets of `scope`'s namespace without the clusters (and assignments) of service
/// ports it does not reach.
fn scoped(shared: &ClustersAndEndpoints, scope: &ScopeKey) -> ScopedSets {
    let (clusters, endpoints) = shared.for_namespace(&scope.namespace);
    let clusters = shared
        .sidecar_clusters_for(&scope.namespace)
        .unwrap_or_else(|| clusters.clone());
    let hidden: Vec<&str> = clusters
        .items
        .keys()
        .map(|name| &**name)
        .filter(|name| {
            super::names::outbound_host_port(name)
                .is_some_and(|(host, port)| !scope.reaches(host, port))
        })
        .collect();
    if hidden.is_empty() {
        return ScopedSets {
            clusters,
            endpoints: endpoints.clone(),
        };
    }
    ScopedSets {
        // An assignment has its cluster's name; names absent from the set are skipped.
        endpoints: Arc::new(endpoints.patched(hidden.iter().copied(), std::iter::empty())),
        clusters: Arc::new(clusters.patched(hidden.iter().copied(), std::iter::empty())),
    }
}
