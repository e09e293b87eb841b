//! The read-only view compile works from, derived from the current objects in one pass:
//! services keyed by fully qualified host (Kubernetes Services and ServiceEntry hosts), each with
//! its endpoints resolved per service port; routing objects in Istio's precedence order
//! (oldest first, then namespace/name); and the diagnostics of the cross-object (reference)
//! checks.

use compact_str::CompactString;
use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashMap, HashMapExt};
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use super::destination_rules::DrIndex;
use super::services::{
    HostRules, Workloads, fill_export_default, kube_service, service_selector_keys, services_of,
    workload_from_entry,
};

use meshpilot_model::host::host_matches;
use meshpilot_model::{
    Body, ConfigKey, DestinationRule, Diagnostic, EndpointSlice, ExportDefaults, Gateway, Kind,
    Labels, Meta, Object, ObjectRef, OutboundTrafficMode, PeerAuthentication, Protocol, Resolution,
    Sidecar, Stage, TargetPort, VirtualService, Workload, labels_match, resolve_host,
};

/// An Istio object with its metadata.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Named<T> {
    pub key: ConfigKey,
    pub meta: Meta,
    pub spec: T,
}

/// Where a service comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ServiceOrigin {
    Kubernetes,
    /// A headless Kubernetes Service (`clusterIP: None`): its clients dial one pod's address
    /// (from DNS), so its proxies pass each connection through to the address dialed (Istio's
    /// `Passthrough` resolution) rather than balancing over the endpoints.
    Headless,
    /// A Kubernetes Service of `type: ExternalName`: its one endpoint per port is the DNS
    /// name, resolved by the proxy (outside the mesh, as istiod's `MeshExternal` says).
    ExternalName,
    ServiceEntry {
        resolution: Resolution,
        external: bool,
    },
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SvcPort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
    /// Where the port leads on a workload: a Service's `targetPort` (a number, or a container
    /// port name each pod resolves), a ServiceEntry's `targetPort` or its own number.
    pub target_port: TargetPort,
}

/// One endpoint of a service port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Endpoint {
    /// An IP, or a DNS name for DNS-resolved ServiceEntries.
    pub address: CompactString,
    pub port: u16,
    pub labels: Labels,
    pub weight: Option<u32>,
    pub locality: Option<String>,
    /// The workload's Kubernetes service account (its SPIFFE identity's `sa`), when known.
    pub service_account: Option<CompactString>,
}

impl Endpoint {
    /// True when the endpoint carries every label of `selector`.
    pub fn selected_by(&self, selector: &Labels) -> bool {
        labels_match(selector, &self.labels)
    }
}

/// A service as compile needs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceInfo {
    /// Shared with the view's key for it.
    pub hostname: Arc<str>,
    /// The declaring object's name and namespace (shared with `key`).
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    /// The object that declared it.
    pub key: ConfigKey,
    pub origin: ServiceOrigin,
    pub ports: Vec<SvcPort>,
    pub cluster_ip: Option<IpAddr>,
    /// A Kubernetes Service's pod selector (`None` for ServiceEntries and Services without
    /// one): the proxies it selects serve its ports inbound.
    pub selector: Option<Labels>,
    /// The namespaces whose proxies see it (Istio's `exportTo`; empty: every namespace).
    pub export_to: Vec<String>,
    /// Ready endpoints, by service port number.
    pub endpoints: BTreeMap<u16, Vec<Endpoint>>,
    /// Identities its workloads present besides their endpoints' service accounts (a
    /// ServiceEntry's `subjectAltNames`; empty for Kubernetes Services).
    pub subject_alt_names: Vec<String>,
}

impl ServiceInfo {
    pub fn port(&self, number: u16) -> Option<&SvcPort> {
        self.ports.iter().find(|p| p.port == number)
    }
}

/// A view's services by hostname.
pub type Services = imbl::OrdMap<Arc<str>, Arc<ServiceInfo>>;

/// Immutable, derived state for one compile round.
#[derive(Debug, Default, Serialize)]
pub struct View {
    pub domain: String,
    /// The mesh-wide `outboundTrafficPolicy` (a Sidecar's own one overrides it); set by whoever
    /// builds the view from its configuration.
    pub outbound_mode: OutboundTrafficMode,
    /// The mesh-wide `exportTo` of objects that set none; set like `outbound_mode`. The view's
    /// services, VirtualServices and DestinationRules carry it already filled in.
    pub export_defaults: Arc<ExportDefaults>,
    /// By hostname. A persistent map: the next view shares every entry a change did not
    /// touch, and [`OrdMap::diff`](imbl::OrdMap::diff) between two views visits only those it did.
    pub services: Services,
    /// Valid VirtualServices, oldest first, then by namespace/name.
    pub virtual_services: Vec<Arc<Named<VirtualService>>>,
    pub destination_rules: Vec<Arc<Named<DestinationRule>>>,
    pub gateways: Vec<Arc<Named<Gateway>>>,
    pub sidecars: Vec<Arc<Named<Sidecar>>>,
    /// PeerAuthentications, oldest first (istiod's precedence within a level).
    pub peer_authentications: Vec<Arc<Named<PeerAuthentication>>>,
    /// What the cross-object checks found (destinations to unknown hosts, conflicts, fields
    /// served differently): warnings, the object each names still serving. Sorted.
    pub diagnostics: Vec<Diagnostic>,
    /// Every label key some selector reads of a proxy: Gateway selectors, Sidecar workload
    /// selectors, `sourceLabels` in VirtualService matches. Proxies that agree on these labels
    /// (and on type, namespace, interception) get the same listeners and routes.
    pub selector_keys: BTreeSet<String>,
    /// Every label key some Kubernetes Service's selector reads: sidecars that capture inbound
    /// traffic serve the ports of the Services selecting them, so these labels decide their
    /// inbound listener.
    pub service_selector_keys: BTreeSet<String>,
    #[serde(skip)]
    pub objects: super::ObjectMap,
    /// `destination_rules` by resolved host, and the merged rules of hosts several name.
    #[serde(skip)]
    dr_index: DrIndex,
}

/// The previous view's entries of one kind, by key: an object that has not changed since is
/// given the same entry again instead of a copy of its spec.
struct PreviousEntries<'a, T>(HashMap<&'a ConfigKey, &'a Arc<Named<T>>>);

impl<'a, T: Clone + PartialEq> PreviousEntries<'a, T> {
    fn of(previous: Option<&'a [Arc<Named<T>>]>) -> Self {
        PreviousEntries(
            previous
                .unwrap_or_default()
                .iter()
                .map(|n| (&n.key, n))
                .collect(),
        )
    }

    /// The entry for `o`: the previous one when unchanged, else a new one.
    fn entry_for(&self, o: &Object, spec: &T) -> Arc<Named<T>> {
        let key = o.key();
        if let Some(previous) = self.0.get(&key)
            && previous.meta == o.meta
            && previous.spec == *spec
        {
            return Arc::clone(previous);
        }
        Arc::new(Named {
            key,
            meta: o.meta.clone(),
            spec: spec.clone(),
        })
    }
}

/// Istio's precedence: oldest first (objects without a timestamp first), then namespace/name.
fn order<T>(v: &mut [Arc<Named<T>>]) {
    v.sort_by(|a, b| (a.meta.creation.as_str(), &a.key).cmp(&(b.meta.creation.as_str(), &b.key)));
}

impl View {
    /// Builds the view. Destinations to hosts nobody declares are warned (the VirtualService
    /// serves); entries unchanged since `previous` are shared with it.
    pub fn build(objects: super::ObjectMap, domain: &str, previous: Option<&View>) -> View {
        View::build_with(objects, domain, previous, None)
    }

    /// The view after a change to routing objects alone (VirtualServices, DestinationRules,
    /// Gateways, Sidecars; see [`super::Changes::routing_only`]): none of them makes or
    /// changes a service, so the services are `previous`'s, not rebuilt from every Service,
    /// slice and pod.
    pub fn with_routing_changed(previous: &View, objects: super::ObjectMap) -> View {
        let domain = previous.domain.clone();
        View::build_with(
            objects,
            &domain,
            Some(previous),
            Some(previous.services.clone()),
        )
    }

    /// [`View::build`]; with `services`, those are the view's and only the routing objects are
    /// read from `objects`.
    fn build_with(
        objects: super::ObjectMap,
        domain: &str,
        previous: Option<&View>,
        services: Option<Services>,
    ) -> View {
        let services_given = services.is_some();
        let mut view = View {
            domain: domain.to_string(),
            outbound_mode: previous.map(|p| p.outbound_mode).unwrap_or_default(),
            export_defaults: previous
                .map(|p| p.export_defaults.clone())
                .unwrap_or_default(),
            ..View::default()
        };
        let defaults = view.export_defaults.clone();
        let mut workloads = Workloads::default();
        let mut pod_by_name: HashMap<(&str, &str), &Workload> = HashMap::new();
        let mut slices: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        let mut legacy: HashMap<(&str, &str), &EndpointSlice> = HashMap::new();
        let mut workload_entries: Vec<(String, Workload)> = Vec::new();
        let mut service_entries: Vec<(&ConfigKey, &Object)> = Vec::new();
        let previous_entries = (
            PreviousEntries::of(previous.map(|p| p.virtual_services.as_slice())),
            PreviousEntries::of(previous.map(|p| p.destination_rules.as_slice())),
            PreviousEntries::of(previous.map(|p| p.gateways.as_slice())),
            PreviousEntries::of(previous.map(|p| p.sidecars.as_slice())),
            PreviousEntries::of(previous.map(|p| p.peer_authentications.as_slice())),
        );
        for (key, o) in objects.iter() {
            let ns = o.meta.namespace.as_str();
            if services_given && o.body.kind().is_endpoint_only() {
                continue;
            }
            match &o.body {
                Body::Pod(w) => {
                    workloads.add(ns, w);
                    pod_by_name.insert((ns, o.meta.name.as_str()), w);
                }
                Body::WorkloadEntry(we) => {
                    workload_entries.push((ns.to_string(), workload_from_entry(we, &o.meta)));
                }
                Body::EndpointSlice(s) => {
                    slices.entry((ns, s.service.as_str())).or_default().push(s);
                }
                Body::Endpoints(s) => {
                    legacy.insert((ns, s.service.as_str()), s);
                }
                Body::VirtualService(s) => {
                    let filled;
                    let s = if s.export_to.is_empty() && !defaults.virtual_service.is_empty() {
                        filled = VirtualService {
                            export_to: defaults.virtual_service.clone(),
                            ..s.clone()
                        };
                        &filled
                    } else {
                        s
                    };
                    let entry = previous_entries.0.entry_for(o, s);
                    view.virtual_services.push(entry);
                }
                Body::DestinationRule(s) => {
                    let filled;
                    let s = if s.export_to.is_empty() && !defaults.destination_rule.is_empty() {
                        filled = DestinationRule {
                            export_to: defaults.destination_rule.clone(),
                            ..s.clone()
                        };
                        &filled
                    } else {
                        s
                    };
                    let entry = previous_entries.1.entry_for(o, s);
                    view.destination_rules.push(entry);
                }
                Body::Gateway(s) => view.gateways.push(previous_entries.2.entry_for(o, s)),
                Body::Sidecar(s) => {
                    view.diagnostics
                        .extend(super::unserved::sidecar_fields(o, s));
                    view.sidecars.push(previous_entries.3.entry_for(o, s));
                }
                Body::PeerAuthentication(s) => view
                    .peer_authentications
                    .push(previous_entries.4.entry_for(o, s)),
                // Secrets are read from `objects` by the SDS generator, per namespace.
                Body::ServiceEntry(se) => {
                    service_entries.push((key, o));
                    view.diagnostics
                        .extend(super::unserved::service_entry_addresses(o, se));
                }
                Body::Namespace | Body::Service(_) | Body::Secret(_) => {}
            }
        }
        for (ns, w) in &workload_entries {
            workloads.add(ns, w);
        }
        let (host_owners, host_conflicts) =
            super::service_hosts::owners(service_entries, &objects, domain);
        view.diagnostics.extend(host_conflicts);

        match (services, previous) {
            (Some(services), Some(previous)) => {
                view.services = services;
                view.service_selector_keys = previous.service_selector_keys.clone();
            }
            (services, _) => {
                view.services = services.unwrap_or_else(|| {
                    services_of(
                        &objects,
                        domain,
                        HostRules {
                            owners: &host_owners,
                            export_default: &defaults.service,
                        },
                        &workloads,
                        &pod_by_name,
                        &slices,
                        &legacy,
                    )
                });
                view.service_selector_keys = service_selector_keys(&view.services);
            }
        }

        order(&mut view.virtual_services);
        let delegation = super::delegates::merge(&mut view.virtual_services);
        view.diagnostics.extend(delegation);
        order(&mut view.destination_rules);
        order(&mut view.gateways);
        order(&mut view.sidecars);
        order(&mut view.peer_authentications);
        view.objects = objects;
        let (dr_index, merge_warnings) = DrIndex::new(&view.destination_rules, domain);
        view.dr_index = dr_index;
        view.diagnostics.extend(merge_warnings);
        for dr in &view.destination_rules {
            view.diagnostics
                .extend(super::destination_rules::unserved_fields(dr));
        }
        view.check_virtual_services();
        let conflicts =
            super::vs_conflicts::mesh_host_conflicts(&view.virtual_services, |h, ns| {
                view.resolve(h, ns)
            });
        view.diagnostics.extend(conflicts);
        view.diagnostics.sort();
        view.selector_keys = view.collect_selector_keys();
        view
    }

    /// The view after a change that touched only EndpointSlices (or Endpoints) of the services
    /// `changed` (namespace, name): those services are rebuilt from `objects`, everything else
    /// is `previous`'s. `None` when the change needs a full [`View::build`] (a service left
    /// without slices takes its endpoints from its selector, which needs every workload).
    pub fn with_slices_changed(
        previous: &View,
        objects: super::ObjectMap,
        changed: &BTreeSet<(String, String)>,
    ) -> Option<View> {
        let domain = previous.domain.as_str();
        let mut services = previous.services.clone();
        // The WorkloadEntries of the changed services' namespaces, merged with their slices.
        let mut entries: Vec<(&str, Workload)> = Vec::new();
        for ns in changed
            .iter()
            .map(|(ns, _)| ns.as_str())
            .collect::<BTreeSet<_>>()
        {
            let from = ConfigKey {
                kind: Kind::WorkloadEntry,
                namespace: Arc::from(ns),
                name: Arc::from(""),
            };
            for (k, o) in objects.range(from..) {
                if k.kind != Kind::WorkloadEntry || *k.namespace != *ns {
                    break;
                }
                if let Body::WorkloadEntry(we) = &o.body {
                    entries.push((ns, workload_from_entry(we, &o.meta)));
                }
            }
        }
        let mut workloads = Workloads::default();
        for (ns, w) in &entries {
            workloads.add(ns, w);
        }
        for (ns, name) in changed {
            let key = |kind: Kind, name: &str| ConfigKey {
                kind,
                namespace: Arc::from(ns.as_str()),
                name: Arc::from(name),
            };
            let Some((service_key, o)) = objects.get_key_value(&key(Kind::Service, name)) else {
                continue; // slices of no Service give no endpoints
            };
            let Body::Service(svc) = &o.body else {
                return None;
            };
            let mut slices: Vec<&EndpointSlice> = objects
                .range(key(Kind::EndpointSlice, "")..)
                .take_while(|(k, _)| k.kind == Kind::EndpointSlice && *k.namespace == **ns)
                .filter_map(|(_, o)| match &o.body {
                    Body::EndpointSlice(s) if s.service == *name => Some(s),
                    _ => None,
                })
                .collect();
            if slices.is_empty()
                && let Some(Body::Endpoints(l)) =
                    objects.get(&key(Kind::Endpoints, name)).map(|o| &o.body)
            {
                slices.push(l);
            }
            if slices.is_empty() {
                return None;
            }
            let mut info = kube_service(
                service_key,
                o,
                svc,
                domain,
                Some(&slices),
                &workloads,
                |pod| match objects.get(&key(Kind::Pod, pod)).map(|o| &o.body) {
                    Some(Body::Pod(w)) => Some(w),
                    _ => None,
                },
            );
            fill_export_default(&mut info.export_to, &previous.export_defaults.service);
            services.insert(info.hostname.clone(), Arc::new(info));
        }
        Some(View {
            domain: previous.domain.clone(),
            outbound_mode: previous.outbound_mode,
            export_defaults: previous.export_defaults.clone(),
            services,
            virtual_services: previous.virtual_services.clone(),
            destination_rules: previous.destination_rules.clone(),
            gateways: previous.gateways.clone(),
            sidecars: previous.sidecars.clone(),
            peer_authentications: previous.peer_authentications.clone(),
            diagnostics: previous.diagnostics.clone(),
            selector_keys: previous.selector_keys.clone(),
            // A change of slices alone changes no Service's selector.
            service_selector_keys: previous.service_selector_keys.clone(),
            objects,
            dr_index: previous.dr_index.clone(),
        })
    }

    /// The service declaring `host` (exact), or a ServiceEntry wildcard host covering it.
    pub fn lookup(&self, host: &str) -> Option<&Arc<ServiceInfo>> {
        if let Some(s) = self.services.get(host) {
            return Some(s);
        }
        self.services
            .iter()
            .filter(|(h, _)| h.starts_with('*') && host_matches(h, host))
            .max_by_key(|(h, _)| h.len())
            .map(|(_, s)| s)
    }

    /// Resolves a host as written in an object of namespace `ns`.
    pub fn resolve(&self, host: &str, ns: &str) -> String {
        resolve_host(host, ns, &self.domain)
    }

    /// Whether some DestinationRule balances by consistent hash (so routes may need a hash
    /// policy).
    pub fn any_consistent_hash(&self) -> bool {
        self.dr_index.any_consistent_hash
    }

    /// The DestinationRule for a service host, for clients in a namespace that holds no rule
    /// and that no rule's `exportTo` names (most namespaces): the service's namespace's rule if
    /// exported to every namespace, else the root namespace's. Clients of the other namespaces
    /// ([`distinct_rule_namespaces`](Self::distinct_rule_namespaces)) may see another:
    /// [`destination_rule_for`](Self::destination_rule_for).
    pub fn destination_rule(&self, svc: &ServiceInfo) -> Option<&Arc<Named<DestinationRule>>> {
        self.dr_index.lookup(&svc.hostname, &svc.namespace, None)
    }

    /// The DestinationRule for a service host as clients in namespace `client` see it, as istiod
    /// looks it up: a rule of the client's namespace, else one of the service's namespace
    /// exported to the client, else one of the root namespace exported to it; several rules of
    /// one namespace for one host come merged.
    pub fn destination_rule_for(
        &self,
        svc: &ServiceInfo,
        client: &str,
    ) -> Option<&Arc<Named<DestinationRule>>> {
        let client = self
            .dr_index
            .distinct_namespaces
            .contains(client)
            .then_some(client);
        self.dr_index.lookup(&svc.hostname, &svc.namespace, client)
    }

    /// The namespaces whose clients may see another DestinationRule for some host than
    /// [`destination_rule`](Self::destination_rule) gives: those holding a rule and those a
    /// rule's `exportTo` names.
    pub fn distinct_rule_namespaces(&self) -> &std::collections::BTreeSet<String> {
        &self.dr_index.distinct_namespaces
    }

    /// A VirtualService's destinations that name no known host: (field path, host as written,
    /// resolved host, whether it is in an HTTP route).
    fn unknown_hosts(&self, vs: &Named<VirtualService>) -> Vec<(String, String, String, bool)> {
        let ns = &*vs.key.namespace;
        // (section, route index, what in the route, host); the field path is only written out
        // for a host that is unknown.
        let mut dests: Vec<(&str, usize, HostAt, &str)> = Vec::new();
        for (i, r) in vs.spec.http.iter().enumerate() {
            for (j, d) in r.route.iter().enumerate() {
                dests.push(("http", i, HostAt::Route(j), &d.destination.host));
            }
            if let Some(m) = &r.mirror {
                dests.push(("http", i, HostAt::Mirror, &m.host));
            }
            for (j, m) in r.mirrors.iter().enumerate() {
                dests.push(("http", i, HostAt::Mirrors(j), &m.destination.host));
            }
        }
        for (i, r) in vs.spec.tcp.iter().enumerate() {
            for (j, d) in r.route.iter().enumerate() {
                dests.push(("tcp", i, HostAt::Route(j), &d.destination.host));
            }
        }
        for (i, r) in vs.spec.tls.iter().enumerate() {
            for (j, d) in r.route.iter().enumerate() {
                dests.push(("tls", i, HostAt::Route(j), &d.destination.host));
            }
        }
        dests
            .into_iter()
            .filter_map(|(section, i, at, host)| {
                let fqdn = self.resolve(host, ns);
                self.lookup(&fqdn).is_none().then(|| {
                    let field = match at {
                        HostAt::Route(j) => {
                            format!("spec.{section}[{i}].route[{j}].destination.host")
                        }
                        HostAt::Mirror => format!("spec.{section}[{i}].mirror.host"),
                        HostAt::Mirrors(j) => {
                            format!("spec.{section}[{i}].mirrors[{j}].destination.host")
                        }
                    };
                    (field, host.to_string(), fqdn, section == "http")
                })
            })
            .collect()
    }

    /// Reports destinations that name hosts nobody declares. As istiod, this fails only what
    /// goes there: Envoy answers 503 for an HTTP route's cluster it does not have and drops
    /// mirrored copies, and closes the connections a `tcp`/`tls` route sends to one; the rest
    /// of the VirtualService serves, with a warning naming the field.
    fn check_virtual_services(&mut self) {
        let mut warnings = Vec::new();
        for vs in &self.virtual_services {
            for (field, host, fqdn, http) in self.unknown_hosts(vs) {
                let outcome = if field.contains("mirror") {
                    "copies mirrored to it are dropped"
                } else if http {
                    "requests this route sends to it get 503, as under istiod; the rest of the VirtualService serves"
                } else {
                    "connections this route sends to it are closed (Envoy has no such cluster), as under istiod; the rest of the VirtualService serves"
                };
                warnings.push(Diagnostic::warning(
                    Stage::Reference,
                    vs.meta.origin.clone(),
                    ObjectRef::of(&vs.key),
                    &field,
                    format!(
                        "destination host {host:?} (resolved to {fqdn}) is not a known Service or ServiceEntry host; {outcome}"
                    ),
                ));
            }
        }
        self.diagnostics.extend(warnings);
        self.diagnostics.sort();
    }

    fn collect_selector_keys(&self) -> BTreeSet<String> {
        let mut keys = BTreeSet::new();
        for gw in &self.gateways {
            keys.extend(gw.spec.selector.keys().cloned());
        }
        for sc in &self.sidecars {
            if let Some(sel) = &sc.spec.workload_selector {
                keys.extend(sel.labels.keys().cloned());
            }
        }
        for pa in &self.peer_authentications {
            if let Some(sel) = pa.spec.workload_selector() {
                keys.extend(sel.keys().cloned());
            }
        }
        for vs in &self.virtual_services {
            for r in &vs.spec.http {
                for m in &r.matches {
                    keys.extend(m.source_labels.keys().cloned());
                }
            }
            for m in vs.spec.tcp.iter().flat_map(|r| &r.matches) {
                keys.extend(m.source_labels.keys().cloned());
            }
            for m in vs.spec.tls.iter().flat_map(|r| &r.matches) {
                keys.extend(m.source_labels.keys().cloned());
            }
        }
        keys
    }

    /// Number of objects of a kind (for metrics and logs).
    pub fn count(&self, kind: Kind) -> usize {
        self.objects.keys().filter(|k| k.kind == kind).count()
    }
}

/// Where in a route a destination host is written.
#[derive(Debug, Clone, Copy)]
enum HostAt {
    Route(usize),
    Mirror,
    Mirrors(usize),
}
