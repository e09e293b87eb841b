//! The services of the current objects: Kubernetes Services and ServiceEntry hosts, each with
//! its endpoints resolved per service port from EndpointSlices, Pods and WorkloadEntries.

use compact_str::CompactString;
use std::collections::{BTreeMap, BTreeSet};

use foldhash::HashMap;
use std::sync::Arc;

use super::service_hosts::HostOwners;
use super::view::{Endpoint, ServiceInfo, ServiceOrigin, Services, SvcPort};

use meshpilot_model::{
    Body, ConfigKey, EndpointSlice, Labels, Meta, Object, Protocol, Resolution, TargetPort,
    Workload, WorkloadKind, labels_match,
};

/// Pods and WorkloadEntries indexed by namespace and by each label pair, so a selector is
/// matched against the workloads carrying its rarest label rather than every workload.
#[derive(Default)]
pub(crate) struct Workloads<'a> {
    by_namespace: HashMap<&'a str, Vec<&'a Workload>>,
    by_label: HashMap<(&'a str, &'a str, &'a str), Vec<&'a Workload>>,
}

impl<'a> Workloads<'a> {
    pub(crate) fn add(&mut self, ns: &'a str, w: &'a Workload) {
        self.by_namespace.entry(ns).or_default().push(w);
        for (k, v) in &w.labels {
            self.by_label
                .entry((ns, k.as_str(), v.as_str()))
                .or_default()
                .push(w);
        }
    }

    /// The workloads of `ns` carrying every label of `selector` (all of them for an empty one).
    fn select(&self, ns: &str, selector: &Labels) -> Vec<&'a Workload> {
        let candidates: &[&'a Workload] = if selector.is_empty() {
            self.by_namespace.get(ns).map(Vec::as_slice).unwrap_or(&[])
        } else {
            selector
                .iter()
                .map(|(k, v)| {
                    self.by_label
                        .get(&(ns, k.as_str(), v.as_str()))
                        .map(Vec::as_slice)
                        .unwrap_or(&[])
                })
                .min_by_key(|l| l.len())
                .unwrap_or(&[])
        };
        candidates
            .iter()
            .copied()
            .filter(|w| labels_match(selector, &w.labels))
            .collect()
    }
}

/// What decides which object serves a host ([`HostOwners`]) and, for one that sets no
/// `exportTo`, where it is seen (the mesh's default).
#[derive(Clone, Copy)]
pub(crate) struct HostRules<'r> {
    pub(crate) owners: &'r HostOwners<'r>,
    pub(crate) export_default: &'r [String],
}

/// The services of `objects`: ServiceEntry hosts (each from the entry `owners` names), then
/// Kubernetes Services (which win a host both declare) with their ready endpoints.
pub(crate) fn services_of<'a>(
    objects: &'a super::ObjectMap,
    domain: &str,
    rules: HostRules<'_>,
    workloads: &Workloads<'a>,
    pod_by_name: &HashMap<(&'a str, &'a str), &'a Workload>,
    slices: &HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    legacy: &HashMap<(&'a str, &'a str), &'a EndpointSlice>,
) -> Services {
    let mut services = Services::new();
    // ServiceEntries first, so a Kubernetes Service of the same host wins.
    for (key, o) in objects.iter() {
        let Body::ServiceEntry(se) = &o.body else {
            continue;
        };
        let ns = o.meta.namespace.as_str();
        let resolution = se.resolution.unwrap_or(Resolution::None);
        let external = se.location != Some(meshpilot_model::Location::MeshInternal);
        let ports: Vec<SvcPort> = se
            .ports
            .iter()
            .filter_map(|p| {
                let port = u16::try_from(p.number).ok()?;
                let target = p.target_port.and_then(|t| u16::try_from(t).ok());
                Some(SvcPort {
                    name: p.name.clone(),
                    port,
                    // No protocol: istiod sniffs it, as for a Service port named without
                    // one (source refuses an unknown word).
                    protocol: p
                        .protocol
                        .as_deref()
                        .and_then(Protocol::parse)
                        .unwrap_or(Protocol::Unknown),
                    target_port: TargetPort::Number(target.unwrap_or(port)),
                })
            })
            .collect();
        for host in &se.hosts {
            let hostname = host.to_ascii_lowercase();
            if rules
                .owners
                .get(&hostname)
                .is_none_or(|owner| *owner != key)
            {
                continue; // another entry or a Kubernetes Service serves it (warned)
            }
            let mut endpoints = BTreeMap::new();
            for (sp, p) in ports.iter().zip(&se.ports) {
                let target = p.target_port.and_then(|t| u16::try_from(t).ok());
                let mut eps = Vec::new();
                for ep in &se.endpoints {
                    let port = ep
                        .ports
                        .get(&sp.name)
                        .and_then(|n| u16::try_from(*n).ok())
                        .or(target)
                        .unwrap_or(sp.port);
                    let labels = ep.endpoint_labels(&Labels::new());
                    eps.push(Endpoint {
                        address: CompactString::from(ep.address.as_str()),
                        port,
                        locality: ep.endpoint_locality(&labels),
                        labels,
                        weight: ep.weight,
                        service_account: ep.service_account.as_deref().map(CompactString::from),
                    });
                }
                if let Some(sel) = &se.workload_selector {
                    for w in workloads.select(ns, &sel.labels) {
                        match w.kind {
                            WorkloadKind::Pod if w.ready => {
                                eps.push(endpoint_of(w, target.unwrap_or(sp.port)));
                            }
                            WorkloadKind::Pod => {}
                            WorkloadKind::WorkloadEntry => {
                                let port = w.ports.get(&sp.name).copied();
                                eps.push(endpoint_of(w, port.or(target).unwrap_or(sp.port)));
                            }
                        }
                    }
                }
                if eps.is_empty()
                    && se.workload_selector.is_none()
                    && matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin)
                    && !hostname.starts_with('*')
                {
                    eps.push(Endpoint {
                        address: CompactString::from(hostname.as_str()),
                        port: target.unwrap_or(sp.port),
                        labels: Labels::new(),
                        weight: None,
                        locality: None,
                        service_account: None,
                    });
                }
                eps.sort_by(|a, b| (&a.address, a.port).cmp(&(&b.address, b.port)));
                endpoints.insert(sp.port, eps);
            }
            let hostname: Arc<str> = Arc::from(hostname);
            services.insert(
                hostname.clone(),
                Arc::new(ServiceInfo {
                    hostname,
                    name: key.name.clone(),
                    namespace: key.namespace.clone(),
                    key: key.clone(),
                    origin: ServiceOrigin::ServiceEntry {
                        resolution,
                        external,
                    },
                    ports: ports.clone(),
                    // The other addresses are warned (`unserved`).
                    cluster_ip: super::unserved::service_entry_vip(se).map(|(_, ip)| ip),
                    selector: None,
                    export_to: meshpilot_model::export_or_default(
                        &se.export_to,
                        rules.export_default,
                    )
                    .to_vec(),
                    endpoints,
                    subject_alt_names: se.subject_alt_names.clone(),
                }),
            );
        }
    }

    for (key, o) in objects.iter() {
        let Body::Service(svc) = &o.body else {
            continue;
        };
        let ns = o.meta.namespace.as_str();
        let name = o.meta.name.as_str();
        let from_slices: Option<&[&EndpointSlice]> =
            match (slices.get(&(ns, name)), legacy.get(&(ns, name))) {
                (Some(s), _) => Some(s),
                (None, Some(l)) => Some(std::slice::from_ref(l)),
                (None, None) => None,
            };
        let mut info = kube_service(key, o, svc, domain, from_slices, workloads, |pod| {
            pod_by_name.get(&(ns, pod)).copied()
        });
        fill_export_default(&mut info.export_to, rules.export_default);
        services.insert(info.hostname.clone(), Arc::new(info));
    }
    services
}

/// Gives a service that sets no `exportTo` (no annotation) the mesh's default.
pub(crate) fn fill_export_default(export_to: &mut Vec<String>, default: &[String]) {
    if export_to.is_empty() {
        export_to.extend_from_slice(default);
    }
}

/// A Kubernetes Service with its ready endpoints per port: from its EndpointSlices (or legacy
/// Endpoints) when it has any, else from the workloads its selector picks.
pub(crate) fn kube_service<'p>(
    key: &ConfigKey,
    o: &Object,
    svc: &meshpilot_model::Service,
    domain: &str,
    slices: Option<&[&EndpointSlice]>,
    workloads: &Workloads<'p>,
    pod_of: impl Fn(&str) -> Option<&'p Workload>,
) -> ServiceInfo {
    let ns = o.meta.namespace.as_str();
    let name = o.meta.name.as_str();
    let hostname = meshpilot_model::host::service_hostname(name, ns, domain);
    let mut endpoints = BTreeMap::new();
    for p in &svc.ports {
        let mut eps =
            Vec::with_capacity(slices.map_or(0, |l| l.iter().map(|s| s.endpoints.len()).sum()));
        if let Some(name) = &svc.external_name {
            // As istiod: the name itself on the service's own port, whatever slices say.
            eps.push(Endpoint {
                address: CompactString::from(name.as_str()),
                port: p.port,
                labels: Labels::new(),
                weight: None,
                locality: None,
                service_account: None,
            });
        } else if let Some(slice_list) = slices {
            for s in slice_list {
                let Some(sp) = s
                    .ports
                    .iter()
                    .find(|sp| sp.name == p.name || (svc.ports.len() == 1 && s.ports.len() == 1))
                else {
                    continue;
                };
                for e in &s.endpoints {
                    if !e.ready {
                        continue;
                    }
                    let pod = e.pod.as_deref().and_then(&pod_of);
                    for addr in e.addresses.iter().take(1) {
                        eps.push(Endpoint {
                            address: CompactString::from(addr.as_str()),
                            port: sp.port,
                            labels: pod.map(|w| w.labels.clone()).unwrap_or_default(),
                            weight: None,
                            // The Pod's (its label's or its Node's), as istiod takes it.
                            locality: pod.and_then(|w| w.locality.clone()),
                            service_account: pod
                                .and_then(|w| w.service_account.as_deref())
                                .map(CompactString::from),
                        });
                    }
                }
            }
        }
        // Without slices the selector picks Pods and WorkloadEntries; with slices the Pods come
        // from them, and the WorkloadEntries (which Kubernetes writes no slices for) are merged
        // in, as istiod does. An empty selector selects no WorkloadEntry.
        let selector = match (&svc.selector, slices) {
            _ if svc.external_name.is_some() => None,
            (Some(selector), None) => Some(selector),
            (Some(selector), Some(_)) if !selector.is_empty() => Some(selector),
            _ => None,
        };
        if let Some(selector) = selector {
            for w in workloads.select(ns, selector) {
                let port = match (w.kind, &p.target_port) {
                    (WorkloadKind::Pod, _) if slices.is_some() => None,
                    (WorkloadKind::Pod, _) if !w.ready || w.address.is_empty() => None,
                    (WorkloadKind::Pod, TargetPort::Number(n)) => Some(*n),
                    (WorkloadKind::Pod, TargetPort::Name(n)) => w.ports.get(n).copied(),
                    (WorkloadKind::WorkloadEntry, target) => {
                        Some(w.ports.get(&p.name).copied().unwrap_or(match target {
                            TargetPort::Number(n) => *n,
                            TargetPort::Name(_) => p.port,
                        }))
                    }
                };
                if let Some(port) = port {
                    eps.push(endpoint_of(w, port));
                }
            }
        }
        eps.sort_by(|a, b| (&a.address, a.port).cmp(&(&b.address, b.port)));
        eps.dedup();
        endpoints.insert(p.port, eps);
    }
    ServiceInfo {
        hostname: Arc::from(hostname),
        name: key.name.clone(),
        namespace: key.namespace.clone(),
        key: key.clone(),
        origin: if svc.external_name.is_some() {
            ServiceOrigin::ExternalName
        } else if svc.headless {
            ServiceOrigin::Headless
        } else {
            ServiceOrigin::Kubernetes
        },
        ports: svc
            .ports
            .iter()
            .map(|p| SvcPort {
                name: p.name.clone(),
                port: p.port,
                protocol: p.protocol,
                target_port: p.target_port.clone(),
            })
            .collect(),
        cluster_ip: svc.cluster_ip,
        // An empty selector selects nothing (Kubernetes manages no endpoints for it).
        selector: svc.selector.clone().filter(|s| !s.is_empty()),
        export_to: svc.export_to.clone(),
        endpoints,
        subject_alt_names: Vec::new(),
    }
}

/// The label keys the selectors of `services` read.
pub(crate) fn service_selector_keys(services: &Services) -> BTreeSet<String> {
    services
        .values()
        .filter_map(|s| s.selector.as_ref())
        .flat_map(|sel| sel.keys().cloned())
        .collect()
}

fn endpoint_of(w: &Workload, port: u16) -> Endpoint {
    Endpoint {
        address: CompactString::from(w.address.as_str()),
        port,
        labels: w.labels.clone(),
        weight: w.weight,
        locality: w.locality.clone(),
        service_account: w.service_account.as_deref().map(CompactString::from),
    }
}

pub(crate) fn workload_from_entry(we: &meshpilot_model::WorkloadEntry, meta: &Meta) -> Workload {
    let labels = we.endpoint_labels(&meta.labels);
    Workload {
        kind: WorkloadKind::WorkloadEntry,
        address: we.address.clone(),
        locality: we.endpoint_locality(&labels),
        labels,
        ports: we
            .ports
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), u16::try_from(*v).ok()?)))
            .collect(),
        ready: true,
        node: None,
        weight: we.weight,
        service_account: we.service_account.clone(),
    }
}
