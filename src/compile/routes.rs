//! RDS, and the per-proxy plan that listeners share: which ports get an HTTP listener (with
//! which route configuration) or a TCP one, and each route configuration's virtual hosts.
//!
//! Sidecars: one route configuration per HTTP service port (named by the port), one virtual host
//! per service (`HOST:PORT`, with Istio's short-name domains; the port of a `Host` header is
//! ignored in matching), VirtualServices bound to `mesh` replacing the default route.
//! Gateways: one route configuration `http.PORT` per server port of every Gateway selecting the
//! proxy, virtual hosts from the Gateway's hosts and the VirtualServices bound to it (several on
//! one host merge, in Istio's precedence order).

use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashMap, HashMapExt, HashSet};
use prost::Message;

use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route::Action,
    route_action::ClusterSpecifier, route_match::PathSpecifier,
};

use super::httproute::{self, RouteCtx};
use super::scope::{Scope, visible};
use super::{CompileError, names};
use crate::index::{Named, ServiceInfo, ServiceOrigin, View};
use crate::model::host::{hosts_intersect, narrower};
use crate::model::{ConfigKey, Proxy, ProxyKind, VirtualService};
use crate::snapshot::Resource;

/// One route configuration being assembled. Virtual hosts are encoded as they are added, so a
/// configuration of 10,000 of them never holds their messages all at once.
#[derive(Debug, Clone, Default)]
pub struct PlannedRoutes {
    pub name: String,
    /// The encoded `virtual_hosts` fields (field 2) of the configuration, in order.
    encoded_hosts: Vec<u8>,
    pub sources: BTreeSet<ConfigKey>,
    /// Domains used so far (a hash set: 10,000 services give 100,000 of them).
    domains: HashSet<String>,
}

/// `virtual_hosts` in `envoy.config.route.v3.RouteConfiguration`.
const VIRTUAL_HOSTS_FIELD: u32 = 2;

impl PlannedRoutes {
    fn new(name: String) -> PlannedRoutes {
        PlannedRoutes {
            name,
            ..PlannedRoutes::default()
        }
    }

    /// A configuration expected to hold about `domains` domains (growing the set step by step
    /// rehashed it ~17 times for 100,000).
    fn with_domains(name: String, domains: usize) -> PlannedRoutes {
        PlannedRoutes {
            domains: HashSet::with_capacity_and_hasher(domains, Default::default()),
            ..PlannedRoutes::new(name)
        }
    }

    /// Adds a virtual host, dropping domains already used (Envoy refuses duplicates).
    fn add(&mut self, mut vh: VirtualHost, sources: impl IntoIterator<Item = ConfigKey>) {
        // Keep each domain's first use; the kept strings then move into the set.
        let mut kept = 0;
        for i in 0..vh.domains.len() {
            let d = &vh.domains[i];
            if !self.domains.contains(d) && !vh.domains[..kept].contains(d) {
                vh.domains.swap(kept, i);
                kept += 1;
            }
        }
        vh.domains.truncate(kept);
        if vh.domains.is_empty() {
            return;
        }
        self.sources.extend(sources);
        prost::encoding::message::encode(VIRTUAL_HOSTS_FIELD, &vh, &mut self.encoded_hosts);
        self.domains.extend(std::mem::take(&mut vh.domains));
    }

    /// The RouteConfiguration as a resource: exactly what prost encodes for one holding these
    /// virtual hosts (fields in number order: `name`, `virtual_hosts`, then
    /// `ignore_port_in_host_matching`, set as istiod sets it: a `Host` header's port never
    /// decides the virtual host, so domains carry no `:PORT` variants).
    fn into_resource(self) -> Resource {
        let head = RouteConfiguration {
            name: self.name,
            ..RouteConfiguration::default()
        };
        let tail = RouteConfiguration {
            ignore_port_in_host_matching: true,
            ..RouteConfiguration::default()
        };
        let mut body =
            Vec::with_capacity(head.encoded_len() + self.encoded_hosts.len() + tail.encoded_len());
        head.encode_raw(&mut body);
        body.extend_from_slice(&self.encoded_hosts);
        tail.encode_raw(&mut body);
        Resource::new(
            head.name,
            bytes::Bytes::from(body),
            self.sources.into_iter().collect(),
        )
    }
}

/// A TCP listener's destination.
#[derive(Debug, Clone)]
pub struct PlannedTcp {
    pub cluster: String,
    pub sources: BTreeSet<ConfigKey>,
}

/// Everything listeners and routes of one proxy class are built from.
#[derive(Debug, Clone, Default)]
pub struct RoutePlan {
    pub http: BTreeMap<u16, PlannedRoutes>,
    pub tcp: BTreeMap<u16, PlannedTcp>,
    pub errors: Vec<CompileError>,
}

pub(super) fn plan(view: &View, proxy: &Proxy) -> RoutePlan {
    match proxy.kind {
        ProxyKind::Sidecar => sidecar(view, proxy),
        ProxyKind::Router => gateway(view, proxy),
    }
}

/// The route configurations of a plan.
pub(super) fn build(http: BTreeMap<u16, PlannedRoutes>) -> Vec<Resource> {
    http.into_values()
        .map(PlannedRoutes::into_resource)
        .collect()
}

/// True when a VirtualService applies to sidecars.
fn applies_to_mesh(vs: &VirtualService) -> bool {
    vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")
}

fn sidecar(view: &View, proxy: &Proxy) -> RoutePlan {
    let mut plan = RoutePlan::default();
    let mesh_vs: Vec<&Named<VirtualService>> = view
        .virtual_services
        .iter()
        .filter(|vs| applies_to_mesh(&vs.spec))
        .map(|vs| vs.as_ref())
        .collect();
    // Resolved VirtualService hosts, to attach them to services.
    let vs_hosts: Vec<(String, &Named<VirtualService>)> = mesh_vs
        .iter()
        .flat_map(|vs| {
            vs.spec
                .hosts
                .iter()
                .map(move |h| (view.resolve(h, &vs.key.namespace), *vs))
        })
        .collect();
    let mut by_host: HashMap<&str, Vec<&Named<VirtualService>>> = HashMap::new();
    for (h, vs) in &vs_hosts {
        by_host.entry(h.as_str()).or_default().push(*vs);
    }
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    let scope = Scope::for_proxy(view, proxy);
    // Services per port number: each gives its route configuration up to 5 domains.
    let mut per_port: HashMap<u16, usize> = HashMap::new();
    for port in view.services.values().flat_map(|s| &s.ports) {
        *per_port.entry(port.port).or_default() += 1;
    }

    for svc in view.services.values() {
        if svc.hostname.starts_with('*') {
            continue;
        }
        let bound: &[&Named<VirtualService>] = by_host
            .get(svc.hostname.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if !bound.is_empty() {
            claimed.insert(svc.hostname.clone());
        }
        for port in &svc.ports {
            if !visible(scope.as_ref(), &svc.namespace, &svc.hostname, port.port) {
                continue;
            }
            if !port.protocol.is_http() {
                plan.tcp.entry(port.port).or_insert_with(|| PlannedTcp {
                    cluster: names::outbound_cluster(port.port, "", &svc.hostname),
                    sources: [svc.key.clone()].into(),
                });
                continue;
            }
            let rc = plan.http.entry(port.port).or_insert_with(|| {
                let services = per_port.get(&port.port).copied().unwrap_or_default();
                PlannedRoutes::with_domains(names::sidecar_route(port.port), services * 5)
            });
            let domains = sidecar_domains(svc, &proxy.namespace);
            let mut sources = vec![svc.key.clone()];
            let routes = if bound.is_empty() {
                vec![default_route(&names::outbound_cluster(
                    port.port,
                    "",
                    &svc.hostname,
                ))]
            } else {
                let mut routes = Vec::new();
                for vs in bound {
                    let ctx = RouteCtx {
                        view,
                        vs,
                        gateway: None,
                        port: port.port,
                        proxy,
                    };
                    let (r, errs) = httproute::translate(&ctx);
                    routes.extend(r);
                    plan.errors.extend(errs);
                    sources.push(vs.key.clone());
                }
                routes
            };
            rc.add(
                VirtualHost {
                    name: names::host_port(&svc.hostname, port.port),
                    domains,
                    routes,
                    ..VirtualHost::default()
                },
                sources,
            );
        }
    }

    // VirtualService hosts that are not services (e.g. a name only a VirtualService defines):
    // served on the ports their matches name, else port 80.
    for (host, vs) in &vs_hosts {
        if claimed.contains(host) || view.services.contains_key(host) || host == "*" {
            continue;
        }
        let mut ports: BTreeSet<u16> = vs
            .spec
            .http
            .iter()
            .flat_map(|r| r.matches.iter().filter_map(|m| m.port))
            .filter_map(|p| u16::try_from(p).ok())
            .collect();
        if ports.is_empty() {
            ports.insert(80);
        }
        for port in ports {
            if !visible(scope.as_ref(), &vs.key.namespace, host, port) {
                continue;
            }
            let ctx = RouteCtx {
                view,
                vs,
                gateway: None,
                port,
                proxy,
            };
            let (routes, errs) = httproute::translate(&ctx);
            plan.errors.extend(errs);
            let rc = plan
                .http
                .entry(port)
                .or_insert_with(|| PlannedRoutes::new(names::sidecar_route(port)));
            rc.add(
                VirtualHost {
                    name: names::host_port(host, port),
                    domains: vec![host.clone()],
                    routes,
                    ..VirtualHost::default()
                },
                [vs.key.clone()],
            );
        }
    }
    plan
}

/// Istio's outbound domains for a service: the FQDN, the short forms a client in the same
/// namespace (or any namespace) can use, and the cluster IP. No `:PORT` forms: the route
/// configuration ignores the port in host matching (as istiod's do since Istio 1.15).
fn sidecar_domains(svc: &ServiceInfo, proxy_ns: &str) -> Vec<String> {
    let mut names = vec![svc.hostname.clone()];
    if svc.origin == ServiceOrigin::Kubernetes {
        if svc.namespace == proxy_ns {
            names.push(svc.name.clone());
        }
        names.push(super::names::concat(&[&svc.name, ".", &svc.namespace]));
        names.push(super::names::concat(&[
            &svc.name,
            ".",
            &svc.namespace,
            ".svc",
        ]));
        if let Some(ip) = svc.cluster_ip {
            names.push(ip.to_string());
        }
    }
    names
}

fn default_route(cluster: &str) -> Route {
    Route {
        name: "default".to_string(),
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
            ..RouteMatch::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
            timeout: Some(super::duration(std::time::Duration::ZERO)),
            retry_policy: Some(httproute::default_retry_policy()),
            ..RouteAction::default()
        })),
        ..Route::default()
    }
}

/// Strips the `ns/` part of a Gateway server host (`./host`, `*/host`, `ns/host`).
fn server_host(h: &str) -> &str {
    h.rsplit_once('/').map(|(_, host)| host).unwrap_or(h)
}

/// True when a VirtualService's `gateways` list names this Gateway.
pub(super) fn names_gateway(list: &[String], vs_ns: &str, gw: &ConfigKey) -> bool {
    list.iter().any(|g| match g.split_once('/') {
        Some((ns, name)) => ns == gw.namespace && name == gw.name,
        None => g != "mesh" && vs_ns == gw.namespace && g == &gw.name,
    })
}

/// A gateway virtual host being assembled: host, routes, the objects behind them.
type GatewayHost = (String, Vec<Route>, BTreeSet<ConfigKey>);

fn gateway(view: &View, proxy: &Proxy) -> RoutePlan {
    let mut plan = RoutePlan::default();
    // port → host → (routes, sources), hosts in first-seen order.
    let mut vhosts: BTreeMap<u16, Vec<GatewayHost>> = BTreeMap::new();
    for gw in &view.gateways {
        if !crate::model::labels_match(&gw.spec.selector, &proxy.labels) {
            continue;
        }
        for (si, server) in gw.spec.servers.iter().enumerate() {
            let Ok(port) = u16::try_from(server.port.number) else {
                continue;
            };
            let protocol = server.port.protocol.to_ascii_uppercase();
            if !matches!(protocol.as_str(), "HTTP" | "HTTP2" | "GRPC" | "") {
                plan.errors.push(CompileError {
                    key: gw.key.clone(),
                    field: format!("spec.servers[{si}].port.protocol"),
                    message: format!(
                        "protocol {protocol} is not served yet (HTTP, HTTP2 and GRPC are); server skipped"
                    ),
                });
                continue;
            }
            plan.http
                .entry(port)
                .or_insert_with(|| PlannedRoutes::new(names::gateway_route(port)))
                .sources
                .insert(gw.key.clone());
            let hosts = vhosts.entry(port).or_default();
            for sh in server.hosts.iter().map(|h| server_host(h)) {
                for vs in &view.virtual_services {
                    if !names_gateway(&vs.spec.gateways, &vs.key.namespace, &gw.key) {
                        continue;
                    }
                    for vh in &vs.spec.hosts {
                        let vh = view.resolve(vh, &vs.key.namespace);
                        if !hosts_intersect(sh, &vh) {
                            continue;
                        }
                        let host = narrower(sh, &vh).to_string();
                        let ctx = RouteCtx {
                            view,
                            vs,
                            gateway: Some(&gw.key),
                            port,
                            proxy,
                        };
                        let (routes, errs) = httproute::translate(&ctx);
                        plan.errors.extend(errs);
                        let entry = match hosts.iter_mut().position(|(h, _, _)| *h == host) {
                            Some(i) => &mut hosts[i],
                            None => {
                                hosts.push((host.clone(), Vec::new(), BTreeSet::new()));
                                let last = hosts.len() - 1;
                                &mut hosts[last]
                            }
                        };
                        // The same VirtualService reached through two server hosts adds once.
                        if entry.2.insert(vs.key.clone()) {
                            entry.1.extend(routes);
                        }
                        entry.2.insert(gw.key.clone());
                    }
                }
            }
        }
    }
    for (port, hosts) in vhosts {
        let Some(rc) = plan.http.get_mut(&port) else {
            continue;
        };
        for (host, routes, sources) in hosts {
            let domains = vec![host.clone()];
            rc.add(
                VirtualHost {
                    name: names::host_port(&host, port),
                    domains,
                    routes,
                    ..VirtualHost::default()
                },
                sources,
            );
        }
    }
    plan
}
