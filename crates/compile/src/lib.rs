//! Pure functions from a read-only [`View`] (and, for listeners and routes, one proxy class) to
//! Envoy resources, one file per xDS type. Nothing here does I/O or keeps state of its own.
//!
//! Clusters and endpoints depend only on the client's namespace, and most namespaces see the
//! same ones, so [`compile_shared`] runs once per change and every class reuses its encoded
//! bytes; [`compile_shared_cached`] does the same from the
//! previous round's [`ClustersAndEndpointsCache`], which its caller (the push engine) keeps, so
//! a change re-encodes only the services it touched. [`compile_class`] builds the listeners and
//! routes of one class and [`assemble`] (`assembly.rs`) makes a consistency-checked
//! [`Snapshot`](meshpilot_snapshot::Snapshot) of both.
//! A sidecar that captures inbound traffic also gets its own inbound listener and clusters
//! (`inbound.rs`), from the Services selecting its pod; those clusters join the shared ones in
//! its class's snapshot. Clients of a namespace with DestinationRules of its own, or that a
//! service is exported to alone, see some clusters differently: `namespace_clusters.rs` patches
//! the shared sets once per such namespace. Sidecars under a Sidecar with `egress` see only the
//! clusters and endpoints of what it reaches: `scoped_clusters.rs` prunes their namespace's
//! sets once per Sidecar and change, shared by every class it applies to.

mod assembly;
mod cluster_policy;
mod cluster_tls;
mod clusters;
mod endpoints;
mod gateway_ports;
mod gateway_refs;
mod gateway_tls;
mod httproute;
pub mod inbound;
mod inbound_tls;
mod listeners;
mod locality;
mod mesh_vs_hosts;
pub mod names;
mod namespace_clusters;
mod peer_authn;
mod route_policy;
mod routes;
mod scope;
mod scoped_clusters;
pub mod secrets;
mod tcproute;
pub mod tls;

use bytes::Bytes;
use clusters::cluster_uses_eds;
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use prost::Message;

use foldhash::HashMap;
use meshpilot_index::View;
use meshpilot_model::{ClassKey, ConfigKey, Diagnostic, ObjectRef, Proxy, ProxyKind, Stage};
use std::sync::Arc;

use imbl::ordmap::DiffItem;
use meshpilot_index::{Named, ServiceInfo, ServiceOrigin, Services};
use meshpilot_model::DestinationRule;
use meshpilot_snapshot::{Reference, Resource, SnapshotError, TypeSet, XdsType};
use std::collections::BTreeMap;

pub use assembly::{
    LocalityKey, assemble, assemble_with_endpoints, locality_endpoints, locality_key,
};
pub use locality::LocalityCluster;
pub use scope::ScopeKey;
pub use scoped_clusters::{ScopedSets, ScopedViews};

/// A problem compiling one object for one proxy class (the object's part is left out), as a
/// diagnostic naming the file or API the object came from.
fn compile_error(view: &View, key: &ConfigKey, field: &str, message: String) -> Diagnostic {
    let origin = view
        .objects
        .get(key)
        .map(|o| o.meta.origin.clone())
        .unwrap_or_default();
    Diagnostic::error(Stage::Compile, origin, ObjectRef::of(key), field, message)
}

/// Something compiled not quite as written for one proxy class (the message says what is left
/// out or changed), as a warning naming the object's origin.
fn compile_warning(view: &View, key: &ConfigKey, field: &str, message: String) -> Diagnostic {
    Diagnostic {
        severity: meshpilot_model::Severity::Warning,
        ..compile_error(view, key, field, message)
    }
}

pub use namespace_clusters::NamespaceSets;

/// Resources every proxy class shares: clusters and their endpoints, as shared sets (those of
/// services exported to every namespace, with the DestinationRules most namespaces see), and
/// the sets of the namespaces that see others.
#[derive(Debug, Clone, Default)]
pub struct ClustersAndEndpoints {
    pub clusters: Arc<TypeSet>,
    pub endpoints: Arc<TypeSet>,
    /// The sets of each namespace whose clients see other clusters than most: its own
    /// DestinationRules, services exported to it alone (usually none).
    pub by_namespace: namespace_clusters::ByNamespace,
    /// The clusters whose endpoints a client orders by its locality, by service hostname
    /// (usually none), as most namespaces see them (a namespace with sets of its own has its
    /// own map): [`locality_endpoints`] makes their assignments for one client.
    pub locality_aware: LocalityAware,
    /// What sidecars get instead of some of `clusters`: those whose DestinationRule's TLS
    /// istiod withholds from sidecars ([`DestinationRule::withholds_tls_from_sidecars`]), and
    /// those of headless Services (ORIGINAL_DST), by the same names. Usually empty.
    pub sidecar_clusters: Arc<TypeSet>,
    /// `clusters` with `sidecar_clusters` laid over them, made by the first sidecar class that
    /// needs it and shared by the others (see [`SidecarView`]).
    pub sidecar_view: SidecarView,
    /// The sets of the sidecars a Sidecar's `egress` scopes, made by the first class of each
    /// scope and shared by the others (see [`ClustersAndEndpoints::scoped_sets`]).
    pub scoped: ScopedViews,
}

/// The cluster set sidecars of one namespace see when some clusters have a sidecars' version:
/// patched once per change and shared by every sidecar class, not patched per class.
#[derive(Debug, Clone, Default)]
pub struct SidecarView(Arc<std::sync::OnceLock<Arc<TypeSet>>>);

impl SidecarView {
    /// `clusters` with `sidecar_clusters` over them (computed on the first call).
    fn get(&self, clusters: &TypeSet, sidecar_clusters: &TypeSet) -> Arc<TypeSet> {
        self.0
            .get_or_init(|| {
                Arc::new(clusters.patched(std::iter::empty(), sidecar_clusters.items.values()))
            })
            .clone()
    }
}

impl ClustersAndEndpoints {
    /// The clusters and endpoints of clients in namespace `ns`.
    pub fn for_namespace(&self, ns: &str) -> (&Arc<TypeSet>, &Arc<TypeSet>) {
        match self.by_namespace.get(ns) {
            Some(sets) => (&sets.clusters, &sets.endpoints),
            None => (&self.clusters, &self.endpoints),
        }
    }

    /// The clusters sidecars in namespace `ns` see: its clusters with the sidecars' version of
    /// those that have one; `None` when none has.
    pub fn sidecar_clusters_for(&self, ns: &str) -> Option<Arc<TypeSet>> {
        let (clusters, sidecar_clusters, view) = match self.by_namespace.get(ns) {
            Some(sets) => (&sets.clusters, &sets.sidecar_clusters, &sets.sidecar_view),
            None => (&self.clusters, &self.sidecar_clusters, &self.sidecar_view),
        };
        (!sidecar_clusters.items.is_empty()).then(|| view.get(clusters, sidecar_clusters))
    }

    /// The locality-aware clusters clients in namespace `ns` see, made from the rules they
    /// see, and whether `ns` has sets of its own.
    fn locality_aware_for(&self, ns: &str) -> (&LocalityAware, bool) {
        match self.by_namespace.get(ns) {
            Some(sets) => (&sets.locality_aware, true),
            None => (&self.locality_aware, false),
        }
    }

    /// The clusters and endpoints of the sidecars `scope` applies to: their namespace's
    /// sidecar sets less the service ports it does not reach (made once per scope).
    pub fn scoped_sets(&self, scope: &ScopeKey) -> Arc<ScopedSets> {
        self.scoped.get(self, scope)
    }
}

/// Locality-aware clusters by service hostname.
pub type LocalityAware = Arc<BTreeMap<Arc<str>, Arc<[LocalityCluster]>>>;

/// One service's compiled clusters and endpoints, reused while neither the service (ports,
/// endpoints) nor its DestinationRule changes.
#[derive(Debug)]
struct CachedService {
    svc: Arc<ServiceInfo>,
    dr: Option<Arc<Named<DestinationRule>>>,
    clusters: Vec<Arc<Resource>>,
    /// The sidecars' version of `clusters` when the rule withholds its TLS from sidecars or
    /// the service is headless; else empty.
    sidecar_clusters: Vec<Arc<Resource>>,
    endpoints: Vec<Arc<Resource>>,
    /// Its clusters whose assignments depend on the client's locality.
    locality_aware: Vec<LocalityCluster>,
    /// True when the clusters take their endpoints over EDS: each then needs the assignment
    /// of its own name.
    eds: bool,
    /// Whether every namespace sees the service (else its resources stay out of the shared
    /// sets, and join those of the namespaces it is exported to).
    public: bool,
    /// How clients speak mutual TLS to it without a rule saying how.
    auto_mtls: cluster_tls::AutoMtls,
}

impl CachedService {
    fn compile(
        svc: &Arc<ServiceInfo>,
        dr: Option<Arc<Named<DestinationRule>>>,
        auto_mtls: cluster_tls::AutoMtls,
    ) -> Self {
        let service: Arc<[ConfigKey]> = Arc::from([svc.key.clone()]);
        let with_rule = match &dr {
            Some(dr) => Arc::from([svc.key.clone(), dr.key.clone()]),
            None => service.clone(),
        };
        let dr_ref = dr.as_deref();
        // Each name is allocated once, shared by the cluster, its assignment and both set keys.
        let names = names::service_clusters(svc, dr_ref);
        let locality_aware = match (&dr, cluster_uses_eds(svc)) {
            (Some(dr), true) => names
                .iter()
                .filter_map(|c| {
                    LocalityCluster::of(
                        svc,
                        dr,
                        c.port,
                        c.subset,
                        c.name.clone(),
                        with_rule.clone(),
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
        let compile_for =
            |proxies| clusters::for_service(svc, dr_ref, &names, &with_rule, &auto_mtls, proxies);
        let sidecar_clusters = if svc.origin == ServiceOrigin::Headless
            || dr_ref.is_some_and(|d| d.spec.withholds_tls_from_sidecars())
        {
            compile_for(cluster_tls::For::Sidecars)
        } else {
            Vec::new()
        };
        CachedService {
            clusters: compile_for(cluster_tls::For::Everyone),
            sidecar_clusters,
            endpoints: endpoints::for_service(svc, dr_ref, &names, &service, &with_rule),
            locality_aware,
            eds: clusters::cluster_uses_eds(svc),
            public: namespace_clusters::is_public(svc),
            svc: svc.clone(),
            dr,
            auto_mtls,
        }
    }
}

/// What [`compile_shared_cached`] keeps between rounds, so a change re-encodes only the services
/// it touched and patches the previous sets instead of rebuilding them.
#[derive(Debug, Default)]
pub struct ClustersAndEndpointsCache {
    services: HashMap<Arc<str>, CachedService>,
    /// The previous round's result.
    previous_output: Option<ClustersAndEndpoints>,
    /// The namespaces that see other clusters than most, and their sets.
    namespaces: namespace_clusters::NamespaceCache,
    /// What the previous round compiled from.
    previous_inputs: Option<PreviousInputs>,
}

/// The services and DestinationRules a round compiled from. While the rules are the same (the
/// same allocations, in the same order, for the same domain), each service's rule is too, and
/// the next round visits only the services that differ between the two views' maps (which
/// share every entry a change did not touch) instead of every service.
#[derive(Debug)]
struct PreviousInputs {
    services: Services,
    rules: Vec<Arc<Named<DestinationRule>>>,
    /// PeerAuthentications decide whether clients may speak mutual TLS to a service.
    peer_authentications: Vec<Arc<Named<meshpilot_model::PeerAuthentication>>>,
    domain: String,
}

impl PreviousInputs {
    fn of(view: &View) -> PreviousInputs {
        PreviousInputs {
            services: view.services.clone(),
            rules: view.destination_rules.clone(),
            peer_authentications: view.peer_authentications.clone(),
            domain: view.domain.clone(),
        }
    }

    /// Whether every service's DestinationRule in `view` is the one it had in this round.
    fn same_rules(&self, view: &View) -> bool {
        self.domain == view.domain
            && self.rules.len() == view.destination_rules.len()
            && self
                .rules
                .iter()
                .zip(&view.destination_rules)
                .all(|(a, b)| Arc::ptr_eq(a, b))
            && self.peer_authentications.len() == view.peer_authentications.len()
            && self
                .peer_authentications
                .iter()
                .zip(&view.peer_authentications)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

/// Above this share of changed services (1 in N) the sets are rebuilt rather than patched.
const PATCH_UP_TO: usize = 8;

/// Compiles the clusters and endpoints of the whole view.
pub fn compile_shared(view: &View) -> Result<ClustersAndEndpoints, SnapshotError> {
    compile_shared_cached(view, &mut ClustersAndEndpointsCache::default())
}

/// Like [`compile_shared`], reusing the encoded resources of services that did not change since
/// the previous call with the same cache: when nothing changed the previous sets are returned as
/// they are (the same allocations), and when a few services changed only their entries are
/// replaced. Fails only if the result would be inconsistent.
pub fn compile_shared_cached(
    view: &View,
    cache: &mut ClustersAndEndpointsCache,
) -> Result<ClustersAndEndpoints, SnapshotError> {
    // Entries replaced or gone (their resources leave the sets), hostnames compiled anew.
    let mut removed: Vec<CachedService> = Vec::new();
    let mut added: Vec<&str> = Vec::new();
    // The services to look at: those that differ from the last round's, or all of them.
    let mut visit: Vec<&Arc<ServiceInfo>> = Vec::new();
    let mut gone: Vec<Arc<str>> = Vec::new();
    let previous = cache
        .previous_inputs
        .take()
        .filter(|previous| previous.same_rules(view));
    let every_service = previous.is_none();
    match previous {
        Some(previous) => {
            for item in previous.services.diff(&view.services) {
                match item {
                    DiffItem::Add(_, svc) | DiffItem::Update { new: (_, svc), .. } => {
                        visit.push(svc)
                    }
                    DiffItem::Remove(host, _) => gone.push(host.clone()),
                }
            }
        }
        None => {
            visit.extend(view.services.values());
            gone.extend(
                cache
                    .services
                    .keys()
                    .filter(|h| !view.services.contains_key(&***h))
                    .cloned(),
            );
        }
    }
    for &svc in &visit {
        if clusters::is_unserved_wildcard(svc) {
            continue;
        }
        let dr = view.destination_rule(svc).cloned();
        let auto_mtls = cluster_tls::AutoMtls::of(
            svc,
            &view.domain,
            peer_authn::namespace_mode(view, &svc.namespace),
        );
        match cache.services.get_mut(&svc.hostname) {
            // Pointer equality first: an unchanged service is the previous view's allocation.
            Some(c)
                if (Arc::ptr_eq(&c.svc, svc) || c.svc == *svc)
                    && same_rule(&c.dr, &dr)
                    && c.auto_mtls == auto_mtls =>
            {
                // Hold this view's allocations, so the next round compares pointers.
                c.svc = svc.clone();
                c.dr = dr;
            }
            Some(c) => {
                removed.push(std::mem::replace(
                    c,
                    CachedService::compile(svc, dr, auto_mtls),
                ));
                added.push(&svc.hostname);
            }
            None => {
                cache.services.insert(
                    svc.hostname.clone(),
                    CachedService::compile(svc, dr, auto_mtls),
                );
                added.push(&svc.hostname);
            }
        }
    }
    removed.extend(gone.iter().filter_map(|h| cache.services.remove(h)));
    cache.previous_inputs = Some(PreviousInputs::of(view));
    let changed = removed.len().max(added.len());
    // Only services every namespace sees join the shared sets.
    let fresh: Vec<&CachedService> = added
        .iter()
        .filter_map(|h| cache.services.get(*h))
        .filter(|c| c.public)
        .collect();
    let locality_aware = {
        let last = cache
            .previous_output
            .as_ref()
            .map(|o| o.locality_aware.clone())
            .unwrap_or_default();
        let touched = removed.iter().chain(fresh.iter().copied());
        if touched.clone().all(|c| c.locality_aware.is_empty()) {
            last
        } else {
            let mut map = (*last).clone();
            for c in &removed {
                map.remove(&c.svc.hostname);
            }
            for c in &fresh {
                if !c.locality_aware.is_empty() {
                    map.insert(c.svc.hostname.clone(), c.locality_aware.clone().into());
                }
            }
            Arc::new(map)
        }
    };
    let shared = match cache.previous_output.take() {
        // A new view may scope sidecars differently even when no service changed.
        Some(last) if changed == 0 => ClustersAndEndpoints {
            locality_aware,
            scoped: ScopedViews::default(),
            ..last
        },
        Some(last) if changed * PATCH_UP_TO <= cache.services.len() => {
            let patch = |set: &TypeSet, of: fn(&CachedService) -> &[Arc<Resource>]| {
                Arc::new(set.patched(
                    removed.iter().flat_map(of).map(|r| &*r.name),
                    fresh.iter().flat_map(|c| of(c)),
                ))
            };
            let shared = ClustersAndEndpoints {
                clusters: patch(&last.clusters, |c| &c.clusters),
                endpoints: patch(&last.endpoints, |c| &c.endpoints),
                by_namespace: Default::default(),
                locality_aware,
                sidecar_clusters: patch(&last.sidecar_clusters, |c| &c.sidecar_clusters),
                sidecar_view: SidecarView::default(),
                scoped: ScopedViews::default(),
            };
            // A service's resources refer only to its own: the others were checked before.
            check_shared(&shared, fresh.iter().copied())?;
            shared
        }
        _ => {
            let mut clusters: Vec<Arc<Resource>> = Vec::new();
            let mut endpoints: Vec<Arc<Resource>> = Vec::new();
            let mut sidecar_clusters: Vec<Arc<Resource>> = Vec::new();
            // In the view's order, as a compile from scratch.
            let public = view
                .services
                .keys()
                .filter_map(|h| cache.services.get(h))
                .filter(|c| c.public);
            for c in public {
                clusters.extend(c.clusters.iter().cloned());
                endpoints.extend(c.endpoints.iter().cloned());
                sidecar_clusters.extend(c.sidecar_clusters.iter().cloned());
            }
            clusters.extend(clusters::catch_all().into_iter().map(Arc::new));
            let shared = ClustersAndEndpoints {
                clusters: Arc::new(TypeSet::from_shared(clusters)),
                endpoints: Arc::new(TypeSet::from_shared(endpoints)),
                by_namespace: Default::default(),
                locality_aware,
                sidecar_clusters: Arc::new(TypeSet::from_shared(sidecar_clusters)),
                sidecar_view: SidecarView::default(),
                scoped: ScopedViews::default(),
            };
            check_shared(&shared, cache.services.values().filter(|c| c.public))?;
            shared
        }
    };
    let by_namespace = namespace_clusters::update(
        view,
        &mut cache.namespaces,
        &cache.services,
        &visit,
        &gone,
        every_service,
        &shared,
    )?;
    let shared = ClustersAndEndpoints {
        by_namespace,
        ..shared
    };
    cache.previous_output = Some(shared.clone());
    Ok(shared)
}

/// Checks that every EDS cluster of `services` has its assignment in `shared`.
fn check_shared<'c>(
    shared: &ClustersAndEndpoints,
    services: impl IntoIterator<Item = &'c CachedService>,
) -> Result<(), SnapshotError> {
    let eds_clusters = services
        .into_iter()
        .filter(|c| c.eds)
        .flat_map(|c| &c.clusters);
    for cluster in eds_clusters {
        if !shared.endpoints.items.contains_key(&cluster.name) {
            return Err(SnapshotError::Dangling {
                from_type: XdsType::Cluster,
                from: cluster.name.to_string(),
                to_type: XdsType::Endpoint,
                to: cluster.name.to_string(),
            });
        }
    }
    Ok(())
}

/// True when two rounds' DestinationRules for a service are the same: the same allocation (an
/// unchanged rule is the previous view's), else equal by value.
fn same_rule(
    a: &Option<Arc<Named<DestinationRule>>>,
    b: &Option<Arc<Named<DestinationRule>>>,
) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        (None, None) => true,
        _ => false,
    }
}

/// The routes of one proxy class and what its listeners need to refer to them. Routes do not
/// depend on the address listeners bind, so classes that differ only in it (proxies without
/// interception, each binding its own IP) share one. For a sidecar that captures inbound
/// traffic it also holds its inbound listener and clusters, which depend on nothing the routes
/// key leaves out.
#[derive(Debug, Clone, Default)]
pub struct RoutesOutput {
    pub routes: Arc<TypeSet>,
    /// What the listeners are built from: per port, the route configuration or TCP cluster.
    ports: listeners::ListenerPlan,
    /// `virtualInbound`, for sidecars that capture inbound traffic.
    inbound_listener: Option<Resource>,
    /// Their `inbound|PORT||` and `InboundPassthroughCluster` (empty for other proxies).
    inbound_clusters: Arc<TypeSet>,
    /// A gateway's TLS secrets (SDS), from its namespace's Secrets; empty for sidecars.
    secrets: Arc<TypeSet>,
    /// What its Sidecar's `egress` lets it reach; `None`: everything.
    scope: Option<ScopeKey>,
    pub errors: Vec<Diagnostic>,
}

/// The listeners and routes of one proxy class, and the clusters only it has (its inbound
/// ones; empty for most classes).
#[derive(Debug, Clone, Default)]
pub struct ClassOutput {
    pub listeners: Arc<TypeSet>,
    pub routes: Arc<TypeSet>,
    pub clusters: Arc<TypeSet>,
    /// A gateway's TLS secrets (empty for sidecars).
    pub secrets: Arc<TypeSet>,
    /// Listener → RouteConfiguration references.
    pub references: Vec<Reference>,
    /// What its Sidecar's `egress` lets it reach (its clusters and endpoints are then
    /// [`ClustersAndEndpoints::scoped_sets`]); `None`: everything.
    pub scope: Option<ScopeKey>,
    pub errors: Vec<Diagnostic>,
}

/// What of `proxy` its listeners and routes depend on: its class key with only the labels some
/// selector of `view` reads — for a sidecar that captures inbound traffic, Service selectors
/// too (they pick its inbound ports). Classes with equal compile keys get identical listeners,
/// routes and own clusters, so the push engine compiles them once and shares the result.
pub fn compile_key(view: &View, proxy: &Proxy) -> ClassKey {
    let mut key = proxy.class_key();
    // Only endpoints depend on the locality ([`locality_endpoints`]).
    key.locality.clear();
    // Service selectors pick a sidecar's inbound ports and a gateway's bound ports.
    let services_select = proxy.captures_inbound() || proxy.kind == ProxyKind::Router;
    key.labels.retain(|k, _| {
        view.selector_keys.contains(k)
            || (services_select && view.service_selector_keys.contains(k))
    });
    key
}

/// What of `proxy` its routes depend on: its compile key without the address its listeners
/// bind. Classes with equal routes keys share one [`RoutesOutput`].
pub fn routes_key(view: &View, proxy: &Proxy) -> ClassKey {
    let mut key = compile_key(view, proxy);
    key.bind_ip = None;
    key
}

/// Compiles the routes of `proxy`'s class (any proxy with the same [`routes_key`] gets the
/// same), and its inbound side.
pub fn compile_routes(view: &View, proxy: &Proxy) -> RoutesOutput {
    let mut plan = routes::plan(view, proxy);
    let ports = listeners::ListenerPlan::of(&plan, gateway_ports::bind_ports(view, proxy));
    let mut route_configs = routes::build(plan.http);
    route_configs.extend(plan.https.build_routes());
    let secrets = match proxy.kind {
        ProxyKind::Router => secrets::for_namespace(view, &proxy.namespace),
        ProxyKind::Sidecar => TypeSet::default(),
    };
    let (inbound_listener, inbound_clusters) = if proxy.captures_inbound() {
        let inbound_ports = inbound::plan(view, proxy);
        let mtls = peer_authn::for_workload(view, &proxy.namespace, &proxy.labels);
        (
            Some(inbound::listener(
                &inbound_ports,
                &mtls,
                proxy.workload_certificate,
            )),
            inbound::clusters(&inbound_ports),
        )
    } else {
        (None, Vec::new())
    };
    let errors = plan.errors;
    RoutesOutput {
        routes: Arc::new(TypeSet::new(route_configs)),
        ports,
        inbound_listener,
        inbound_clusters: Arc::new(TypeSet::new(inbound_clusters)),
        secrets: Arc::new(secrets),
        scope: ScopeKey::for_proxy(view, proxy),
        errors,
    }
}

/// Compiles the listeners of `proxy`'s class over its class's routes.
pub fn compile_listeners(proxy: &Proxy, routes: &RoutesOutput) -> ClassOutput {
    let (mut listeners, references) = listeners::build(proxy, &routes.ports);
    listeners.extend(routes.inbound_listener.clone());
    ClassOutput {
        listeners: Arc::new(TypeSet::new(listeners)),
        routes: routes.routes.clone(),
        clusters: routes.inbound_clusters.clone(),
        secrets: routes.secrets.clone(),
        references,
        scope: routes.scope.clone(),
        errors: routes.errors.clone(),
    }
}

/// Compiles one proxy class's listeners and routes.
pub fn compile_class(view: &View, proxy: &Proxy) -> ClassOutput {
    compile_listeners(proxy, &compile_routes(view, proxy))
}

/// Encodes a message into a snapshot resource.
pub fn resource<M: Message>(name: &str, msg: &M, sources: Vec<ConfigKey>) -> Resource {
    Resource::new(name, Bytes::from(msg.encode_to_vec()), sources)
}

/// Wraps a message in `Any` with its type URL.
pub fn any<M: Message>(type_url: &str, msg: &M) -> Any {
    Any {
        type_url: type_url.to_string(),
        value: msg.encode_to_vec(),
    }
}

pub fn duration(d: std::time::Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

pub use meshpilot_model::parse_duration;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_mtls;
#[cfg(test)]
mod tests_services;
