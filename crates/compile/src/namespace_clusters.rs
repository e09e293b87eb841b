//! The clusters and endpoints of the client namespaces that see other ones than most, as istiod
//! computes them per client: a namespace with DestinationRules of its own (or named by a rule's
//! `exportTo`) gets the clusters of the hosts those rules cover compiled with them, and a
//! service exported to some namespaces only (`exportTo`) has clusters in those namespaces' sets
//! and in no other. Each such namespace's sets are the shared ones patched once per change and
//! shared by all its classes; every other namespace takes the shared sets as they are.

use std::collections::BTreeSet;
use std::sync::Arc;

use foldhash::HashMap;

use meshpilot_index::{ServiceInfo, View};
use meshpilot_model::exported_to;
use meshpilot_snapshot::{Resource, SnapshotError, TypeSet, XdsType};

use super::{CachedService, ClustersAndEndpoints, same_rule};

/// One namespace's clusters and endpoints, where they differ from the shared ones.
#[derive(Debug, Clone, Default)]
pub struct NamespaceSets {
    pub clusters: Arc<TypeSet>,
    pub endpoints: Arc<TypeSet>,
    /// Its sidecars' version of some clusters (see `ClustersAndEndpoints::sidecar_clusters`).
    pub sidecar_clusters: Arc<TypeSet>,
    /// `clusters` as its sidecars see them, made once.
    pub sidecar_view: super::SidecarView,
}

/// The sets of every namespace whose clients see other clusters than most, by namespace.
pub type ByNamespace = Arc<HashMap<String, NamespaceSets>>;

/// How one namespace's clusters for one host differ from the shared set's.
#[derive(Debug)]
enum HostVariant {
    /// Compiled with the DestinationRule this namespace's clients see.
    Own(CachedService),
    /// A service exported to some namespaces only, this one among them, with the rule most
    /// namespaces see: the shared compile, which the shared set leaves out.
    Shared,
}

/// What [`update`] keeps between rounds, inside the shared cache.
#[derive(Debug, Default)]
pub(super) struct NamespaceCache {
    /// Services not exported to every namespace, by hostname.
    restricted: BTreeSet<Arc<str>>,
    /// Per namespace that sees other clusters than most, per host whose clusters differ.
    variants: HashMap<String, HashMap<Arc<str>, HostVariant>>,
    /// The namespaces of the previous round, and its result.
    previous: Option<(BTreeSet<String>, ByNamespace)>,
}

/// Whether every namespace sees `svc`.
pub(super) fn is_public(svc: &ServiceInfo) -> bool {
    svc.export_to.is_empty() || svc.export_to.iter().any(|e| e == "*")
}

/// Brings the per-namespace sets up to date after a round of the shared compile: `visited` are
/// the services that round looked at (all of them when `every_service`), `gone` the hosts it
/// dropped, `services` its compiles and `shared` its sets. Only the visited services are
/// compiled again, unless the namespaces that differ changed.
pub(super) fn update(
    view: &View,
    cache: &mut NamespaceCache,
    services: &HashMap<Arc<str>, CachedService>,
    visited: &[&Arc<ServiceInfo>],
    gone: &[Arc<str>],
    mut every_service: bool,
    shared: &ClustersAndEndpoints,
) -> Result<ByNamespace, SnapshotError> {
    for svc in visited {
        if is_public(svc) {
            cache.restricted.remove(&svc.hostname);
        } else {
            cache.restricted.insert(svc.hostname.clone());
        }
    }
    for host in gone {
        cache.restricted.remove(host);
    }
    let mut namespaces = view.distinct_rule_namespaces().clone();
    for svc in cache.restricted.iter().filter_map(|h| view.services.get(h)) {
        namespaces.insert(svc.namespace.to_string());
        namespaces.extend(
            svc.export_to
                .iter()
                .filter(|e| !matches!(e.as_str(), "*" | "." | "~"))
                .cloned(),
        );
    }
    let previous = cache.previous.take();
    let unchanged = match &previous {
        Some((last, _)) => *last == namespaces,
        None => false,
    };
    every_service |= !unchanged;
    if !every_service
        && visited.is_empty()
        && gone.is_empty()
        && let Some((_, sets)) = previous
    {
        cache.previous = Some((namespaces, sets.clone()));
        return Ok(sets);
    }
    cache.variants.retain(|ns, _| namespaces.contains(ns));
    let all: Vec<&Arc<ServiceInfo>>;
    let targets = if every_service {
        all = view.services.values().collect();
        &all[..]
    } else {
        visited
    };
    for ns in &namespaces {
        let hosts = cache.variants.entry(ns.clone()).or_default();
        if every_service {
            hosts.retain(|h, _| view.services.contains_key(&**h));
        }
        for host in gone {
            hosts.remove(host);
        }
        for svc in targets {
            match variant(view, ns, svc, services, hosts.remove(&svc.hostname)) {
                Some(v) => hosts.insert(svc.hostname.clone(), v),
                None => None,
            };
        }
    }
    let mut sets: HashMap<String, NamespaceSets> = HashMap::default();
    for (ns, hosts) in &cache.variants {
        sets.insert(ns.clone(), patched(shared, services, hosts)?);
    }
    let sets = Arc::new(sets);
    cache.previous = Some((namespaces, sets.clone()));
    Ok(sets)
}

/// How clients in `ns` see `svc`'s clusters (`None`: as the shared set has them, or not at all
/// for a service not exported to them); `last` is the previous round's, reused if still right.
fn variant(
    view: &View,
    ns: &str,
    svc: &Arc<ServiceInfo>,
    services: &HashMap<Arc<str>, CachedService>,
    last: Option<HostVariant>,
) -> Option<HostVariant> {
    if super::clusters::is_unserved_wildcard(svc)
        || !exported_to(&svc.export_to, &svc.namespace, ns)
    {
        return None;
    }
    let common = services.get(&svc.hostname)?;
    let dr = view.destination_rule_for(svc, ns).cloned();
    if same_rule(&common.dr, &dr) {
        return (!common.public).then_some(HostVariant::Shared);
    }
    match last {
        Some(HostVariant::Own(mut c))
            if (Arc::ptr_eq(&c.svc, svc) || c.svc == *svc)
                && same_rule(&c.dr, &dr)
                && c.auto_mtls == common.auto_mtls =>
        {
            c.svc = svc.clone();
            c.dr = dr;
            Some(HostVariant::Own(c))
        }
        _ => Some(HostVariant::Own(CachedService::compile(
            svc,
            dr,
            common.auto_mtls.clone(),
        ))),
    }
}

/// The shared sets with `hosts`' clusters and assignments in place of the shared ones.
fn patched(
    shared: &ClustersAndEndpoints,
    services: &HashMap<Arc<str>, CachedService>,
    hosts: &HashMap<Arc<str>, HostVariant>,
) -> Result<NamespaceSets, SnapshotError> {
    let mut gone_clusters: Vec<&str> = Vec::new();
    let mut gone_endpoints: Vec<&str> = Vec::new();
    let mut gone_sidecar_clusters: Vec<&str> = Vec::new();
    let mut compiles: Vec<&CachedService> = Vec::new();
    for (host, v) in hosts {
        let Some(common) = services.get(host) else {
            continue;
        };
        match v {
            HostVariant::Own(own) => {
                if common.public {
                    gone_clusters.extend(common.clusters.iter().map(|r| &*r.name));
                    gone_endpoints.extend(common.endpoints.iter().map(|r| &*r.name));
                    gone_sidecar_clusters.extend(common.sidecar_clusters.iter().map(|r| &*r.name));
                }
                compiles.push(own);
            }
            HostVariant::Shared => compiles.push(common),
        }
    }
    let of = |f: fn(&CachedService) -> &[Arc<Resource>]| -> Vec<&Arc<Resource>> {
        compiles.iter().flat_map(|c| f(c)).collect()
    };
    let sets = NamespaceSets {
        clusters: Arc::new(shared.clusters.patched(gone_clusters, of(|c| &c.clusters))),
        endpoints: Arc::new(
            shared
                .endpoints
                .patched(gone_endpoints, of(|c| &c.endpoints)),
        ),
        sidecar_clusters: Arc::new(
            shared
                .sidecar_clusters
                .patched(gone_sidecar_clusters, of(|c| &c.sidecar_clusters)),
        ),
        sidecar_view: super::SidecarView::default(),
    };
    for cluster in compiles.iter().filter(|c| c.eds).flat_map(|c| &c.clusters) {
        if !sets.endpoints.items.contains_key(&cluster.name) {
            return Err(SnapshotError::Dangling {
                from_type: XdsType::Cluster,
                from: cluster.name.to_string(),
                to_type: XdsType::Endpoint,
                to: cluster.name.to_string(),
            });
        }
    }
    Ok(sets)
}
