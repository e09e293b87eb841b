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
use std::sync::{Arc, OnceLock};

use foldhash::{HashMap, HashMapExt, HashSet};
use prost::Message;

use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
    route::Action, route_action::ClusterSpecifier, route_match::PathSpecifier,
    virtual_host::TlsRequirementType,
};

use super::gateway_refs::{names_gateway, server_host, server_host_for, warn_unadmitted};
use super::gateway_tls;
use super::httproute::{self, RouteCtx};
use super::mesh_vs_hosts::{MeshVsHosts, own_host_ports, stands_alone};
use super::scope::{self, Scope, visible};
use super::tcproute::{self, L4Chain, L4Key, L4Listener};
use super::{cluster_policy, route_policy};
use super::{compile_error, names};
use meshpilot_index::{Named, ServiceInfo, ServiceOrigin, View, applies_to_mesh};
use meshpilot_model::exported_to;
use meshpilot_model::host::{hosts_intersect, narrower};
use meshpilot_model::{
    ConfigKey, Diagnostic, Interception, OutboundTrafficMode, Protocol, Proxy, ProxyKind,
    VirtualService,
};
use meshpilot_snapshot::Resource;

/// One route configuration being assembled. Virtual hosts are encoded as they are added, so a
/// configuration of 10,000 of them never holds their messages all at once.
#[derive(Debug, Clone, Default)]
pub struct PlannedRoutes {
    pub name: String,
    /// The encoded `virtual_hosts` fields (field 2) of the configuration, in order.
    encoded_hosts: Vec<u8>,
    /// The objects behind it, sorted and without duplicates, once [`plan`] returns (shared by
    /// the configuration and its listener).
    pub sources: Arc<[ConfigKey]>,
    /// The objects behind it as planning adds them (a sorted set's insertions were a sixth of a
    /// sidecar's route compile for 10,000 services).
    pub(super) added_sources: Vec<ConfigKey>,
    /// Domains used so far (a hash set: 10,000 services give 100,000 of them).
    domains: HashSet<String>,
}

/// `virtual_hosts` in `envoy.config.route.v3.RouteConfiguration`.
const VIRTUAL_HOSTS_FIELD: u32 = 2;

impl PlannedRoutes {
    pub(super) fn new(name: String) -> PlannedRoutes {
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
    pub(super) fn add(
        &mut self,
        mut vh: VirtualHost,
        sources: impl IntoIterator<Item = ConfigKey>,
    ) {
        if !self.keep_new_domains(&mut vh.domains) {
            return;
        }
        self.added_sources.extend(sources);
        encode_virtual_host(&mut vh, &mut self.encoded_hosts);
        self.domains.extend(std::mem::take(&mut vh.domains));
    }

    /// [`PlannedRoutes::add`] for the virtual host of a service no VirtualService routes: its one
    /// route sends everything to `cluster` ([`default_route`]).
    fn add_default(
        &mut self,
        name: &str,
        mut domains: Vec<String>,
        cluster: &str,
        source: &ConfigKey,
    ) {
        if !self.keep_new_domains(&mut domains) {
            return;
        }
        self.added_sources.push(source.clone());
        encode_default_host(name, &domains, cluster, &mut self.encoded_hosts);
        self.domains.extend(domains);
    }

    /// Drops the domains already used (keeping each one's first use, in order); false when none
    /// is left.
    fn keep_new_domains(&self, domains: &mut Vec<String>) -> bool {
        let mut kept = 0;
        for i in 0..domains.len() {
            let d = &domains[i];
            if !self.domains.contains(d) && !domains[..kept].contains(d) {
                domains.swap(kept, i);
                kept += 1;
            }
        }
        domains.truncate(kept);
        !domains.is_empty()
    }

    /// The RouteConfiguration as a resource: exactly what prost encodes for one holding these
    /// virtual hosts (fields in number order: `name`, `virtual_hosts`, then
    /// `ignore_port_in_host_matching`, set as istiod sets it: a `Host` header's port never
    /// decides the virtual host, so domains carry no `:PORT` variants).
    pub(super) fn into_resource(self) -> Resource {
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
        Resource::with_sources(head.name, bytes::Bytes::from(body), self.sources)
    }
}

/// `routes` in `envoy.config.route.v3.VirtualHost`.
const ROUTES_FIELD: u32 = 3;

/// Appends `vh` as a `virtual_hosts` entry (taking its routes when it writes them itself). prost writes a map field in its
/// `HashMap`'s iteration order, which differs between two compiles of the same input; a route
/// with more than one per-filter configuration (fault and CORS) gets its entries written in
/// key order instead, so equal inputs give equal bytes (and an unchanged content version).
fn encode_virtual_host(vh: &mut VirtualHost, buf: &mut Vec<u8>) {
    use meshpilot_snapshot::encode::put_delimited_header;
    if vh
        .routes
        .iter()
        .all(|r| r.typed_per_filter_config.len() <= 1)
    {
        prost::encoding::message::encode(VIRTUAL_HOSTS_FIELD, &*vh, buf);
        return;
    }
    // The virtual hosts built here set only `name`, `domains` and `routes` (fields 1-3), so
    // writing the routes after the rest keeps prost's field order.
    let routes = std::mem::take(&mut vh.routes);
    let mut body = vh.encode_to_vec();
    for mut route in routes {
        let mut entries: Vec<_> = std::mem::take(&mut route.typed_per_filter_config)
            .into_iter()
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut encoded = route.encode_to_vec();
        for (name, config) in entries {
            let one = Route {
                typed_per_filter_config: [(name, config)].into(),
                ..Route::default()
            };
            one.encode_raw(&mut encoded);
        }
        put_delimited_header(ROUTES_FIELD, encoded.len(), &mut body);
        body.extend_from_slice(&encoded);
    }
    put_delimited_header(VIRTUAL_HOSTS_FIELD, body.len(), buf);
    buf.extend_from_slice(&body);
}

/// Where a sniffed port's connections go when they are not HTTP.
#[derive(Debug, Clone)]
pub struct PlannedTcp {
    /// The TCP proxy's destination, with the idle timeout, connection duration and tunnel of
    /// the DestinationRule the client sees for it, as a TCP port's chain has them.
    pub chain: L4Chain,
    pub sources: BTreeSet<ConfigKey>,
}

/// Everything listeners and routes of one proxy class are built from.
#[derive(Debug, Clone, Default)]
pub struct RoutePlan {
    pub http: BTreeMap<u16, PlannedRoutes>,
    /// TCP and TLS listeners, by port and address (see [`tcproute`]).
    pub tcp: BTreeMap<L4Key, L4Listener>,
    /// Sidecar ports of unknown protocol: HTTP is told apart by `http_inspector`, anything else
    /// goes to this destination (the port's one such service, or `PassthroughCluster` when
    /// several share the port).
    pub sniffed: BTreeMap<u16, PlannedTcp>,
    /// For sidecars: what traffic for hosts the registry does not know meets.
    pub outbound_mode: OutboundTrafficMode,
    /// Gateway HTTPS servers: per port, one TLS filter chain each, with its own routes.
    pub https: gateway_tls::HttpsPlan,
    pub errors: Vec<Diagnostic>,
}

pub(super) fn plan(view: &View, proxy: &Proxy) -> RoutePlan {
    let mut plan = match proxy.kind {
        ProxyKind::Sidecar => {
            let mut plan = sidecar(view, proxy);
            if let Some(vh) = catch_all_host(plan.outbound_mode, proxy.interception) {
                for rc in plan.http.values_mut() {
                    rc.add(vh.clone(), []);
                }
            }
            plan
        }
        ProxyKind::Router => gateway(view, proxy),
    };
    // A VirtualService translated for several hosts or ports reports a problem once.
    plan.errors.sort();
    plan.errors.dedup();
    for rc in plan.http.values_mut().chain(plan.https.routes_mut()) {
        let mut sources = std::mem::take(&mut rc.added_sources);
        sources.sort_unstable();
        sources.dedup();
        rc.sources = sources.into();
    }
    plan
}

/// The route configurations of a plan.
pub(super) fn build(http: BTreeMap<u16, PlannedRoutes>) -> Vec<Resource> {
    http.into_values()
        .map(PlannedRoutes::into_resource)
        .collect()
}

fn sidecar(view: &View, proxy: &Proxy) -> RoutePlan {
    let mut plan = RoutePlan {
        outbound_mode: scope::outbound_mode(view, proxy),
        ..RoutePlan::default()
    };
    let mesh_vs: Vec<&Named<VirtualService>> = view
        .virtual_services
        .iter()
        .filter(|vs| {
            applies_to_mesh(&vs.spec)
                && exported_to(&vs.spec.export_to, &vs.key.namespace, &proxy.namespace)
        })
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
    // Several VirtualServices for one host: the oldest this proxy sees routes it, as istiod
    // does on sidecars (the index reports the others). `mesh_vs` is oldest first.
    let by_host = MeshVsHosts::new(&vs_hosts);
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    let scope = Scope::for_proxy(view, proxy);
    // Services per port number: each gives its route configuration up to 5 domains.
    let mut per_port: HashMap<u16, usize> = HashMap::new();
    for port in view.services.values().flat_map(|s| &s.ports) {
        *per_port.entry(port.port).or_default() += 1;
    }

    for svc in view.services.values() {
        if super::clusters::is_unserved_wildcard(svc)
            || !exported_to(&svc.export_to, &svc.namespace, &proxy.namespace)
        {
            continue;
        }
        let bound = by_host.for_service(&svc.hostname);
        if !bound.is_empty() {
            claimed.insert(svc.hostname.to_string());
        }
        for port in &svc.ports {
            if !visible(scope.as_ref(), &svc.namespace, &svc.hostname, port.port) {
                continue;
            }
            if !port.protocol.is_http() {
                tcproute::sidecar_port(
                    &tcproute::SidecarCtx {
                        view,
                        proxy,
                        mode: plan.outbound_mode,
                    },
                    svc,
                    port,
                    &by_host.covering(&svc.hostname),
                    &mut plan.tcp,
                    &mut plan.errors,
                );
                continue;
            }
            if port.protocol == Protocol::Unknown {
                plan.sniffed
                    .entry(port.port)
                    .and_modify(|t| {
                        // Several services share the port: no one of their rules applies.
                        t.chain = L4Chain::to(names::PASSTHROUGH.to_string());
                        t.sources.insert(svc.key.clone());
                    })
                    .or_insert_with(|| PlannedTcp {
                        chain: tcproute::to_service(
                            view,
                            &proxy.namespace,
                            Some(svc),
                            None,
                            vec![(names::outbound_cluster(port.port, "", &svc.hostname), 100)],
                        ),
                        sources: [svc.key.clone()].into(),
                    });
            }
            let rc = plan.http.entry(port.port).or_insert_with(|| {
                let services = per_port.get(&port.port).copied().unwrap_or_default();
                PlannedRoutes::with_domains(names::sidecar_route(port.port), services * 5)
            });
            let domains = sidecar_domains(svc, &proxy.namespace);
            let mut sources = vec![svc.key.clone()];
            let mut routes = Vec::new();
            for vs in bound {
                let ctx = RouteCtx {
                    view,
                    vs,
                    gateway: None,
                    port: port.port,
                    proxy,
                    server_tls: false,
                };
                let (r, errs) = httproute::translate(&ctx);
                routes.extend(r);
                plan.errors.extend(errs);
                sources.push(vs.key.clone());
            }
            // As istiod, a service whose VirtualServices give no HTTP route on this port
            // (e.g. only `tls` or `tcp` routes) keeps its default route.
            if routes.is_empty() {
                let cluster = names::outbound_cluster(port.port, "", &svc.hostname);
                let name = names::host_port(&svc.hostname, port.port);
                match cluster_policy::route_hash_policy(
                    view,
                    &proxy.namespace,
                    svc,
                    port.port,
                    None,
                ) {
                    None => rc.add_default(&name, domains, &cluster, &svc.key),
                    // A consistent-hash cluster needs the hash on its route, as istiod
                    // writes it for services no VirtualService routes.
                    Some(hash) => {
                        let mut route = default_route(&cluster);
                        if let Some(Action::Route(a)) = &mut route.action {
                            a.hash_policy = vec![hash];
                            a.retry_policy = route_policy::retry_policy(None, true);
                        }
                        let vh = VirtualHost {
                            name,
                            domains,
                            routes: vec![route],
                            ..VirtualHost::default()
                        };
                        let rule = view
                            .destination_rule_for(svc, &proxy.namespace)
                            .map(|d| d.key.clone());
                        rc.add(vh, std::iter::once(svc.key.clone()).chain(rule));
                    }
                }
                continue;
            }
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

    // VirtualService hosts that are not services (e.g. a name only a VirtualService defines,
    // or a wildcard covering none the proxy sees): served on the ports their matches name, else
    // port 80.
    for (host, vs) in &vs_hosts {
        if claimed.contains(host) || !stands_alone(host, view, proxy, scope.as_ref()) {
            continue;
        }
        for port in own_host_ports(&vs.spec) {
            if !visible(scope.as_ref(), &vs.key.namespace, host, port) {
                continue;
            }
            let ctx = RouteCtx {
                view,
                vs,
                gateway: None,
                port,
                proxy,
                server_tls: false,
            };
            let (routes, errs) = httproute::translate(&ctx);
            plan.errors.extend(errs);
            // istiod adds no virtual host for a VirtualService with no HTTP route here.
            if routes.is_empty() {
                continue;
            }
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
    let mut names = vec![svc.hostname.to_string()];
    if matches!(
        svc.origin,
        ServiceOrigin::Kubernetes | ServiceOrigin::Headless | ServiceOrigin::ExternalName
    ) {
        if *svc.namespace == *proxy_ns {
            names.push(svc.name.to_string());
        }
        names.push([&*svc.name, ".", &svc.namespace].concat());
        names.push([&*svc.name, ".", &svc.namespace, ".svc"].concat());
        if let Some(ip) = svc.cluster_ip {
            names.push(ip.to_string());
        }
    }
    names
}

/// Appends to `buf` the `virtual_hosts` entry of a RouteConfiguration for a virtual host
/// holding only [`default_route`] to `cluster`: the bytes prost writes for that message, from
/// parts that do not depend on the service (built once). prost writes fields in tag order:
/// VirtualHost `name` (1), `domains` (2), `routes` (3); Route `match` (1), `route` (2), `name`
/// (14); RouteAction `cluster` (1, a `oneof` member), then the rest. Building and encoding these messages for
/// each of 10,000 services was most of a sidecar's route compile.
fn encode_default_host(name: &str, domains: &[String], cluster: &str, buf: &mut Vec<u8>) {
    use meshpilot_snapshot::encode::{delimited_len, put_delimited_header, put_string, string_len};
    /// The route's `match` field; its action's fields after `cluster`; its `name` field.
    static PARTS: OnceLock<[Vec<u8>; 3]> = OnceLock::new();
    let [matcher, action_rest, route_name] = PARTS.get_or_init(|| {
        let mut route = default_route("");
        let action = match route.action.take() {
            Some(Action::Route(a)) => RouteAction {
                cluster_specifier: None,
                ..a
            },
            _ => RouteAction::default(),
        };
        let matcher = Route {
            r#match: route.r#match.take(),
            ..Route::default()
        };
        [
            matcher.encode_to_vec(),
            action.encode_to_vec(),
            route.encode_to_vec(),
        ]
    });
    // A `oneof` member: written even when empty.
    let action_len = delimited_len(1, cluster.len()) + action_rest.len();
    let route_len = matcher.len() + delimited_len(2, action_len) + route_name.len();
    let host_len = string_len(1, name)
        + domains
            .iter()
            .map(|d| delimited_len(2, d.len()))
            .sum::<usize>()
        + delimited_len(3, route_len);
    buf.reserve(delimited_len(VIRTUAL_HOSTS_FIELD, host_len));
    put_delimited_header(VIRTUAL_HOSTS_FIELD, host_len, buf);
    put_string(1, name, buf);
    for d in domains {
        put_delimited_header(2, d.len(), buf);
        buf.extend_from_slice(d.as_bytes());
    }
    put_delimited_header(3, route_len, buf);
    buf.extend_from_slice(matcher);
    put_delimited_header(2, action_len, buf);
    put_delimited_header(1, cluster.len(), buf);
    buf.extend_from_slice(cluster.as_bytes());
    buf.extend_from_slice(action_rest);
    buf.extend_from_slice(route_name);
}

fn default_route(cluster: &str) -> Route {
    // istiod sets the deprecated `max_grpc_timeout` to the route timeout (none).
    #[allow(deprecated)]
    Route {
        name: "default".to_string(),
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
            ..RouteMatch::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
            timeout: Some(super::duration(std::time::Duration::ZERO)),
            max_grpc_timeout: Some(super::duration(std::time::Duration::ZERO)),
            retry_policy: Some(httproute::default_retry_policy()),
            ..RouteAction::default()
        })),
        ..Route::default()
    }
}

/// istiod's last virtual host in every sidecar route configuration, for a `Host` no service
/// claims: `allow_any` sends it on to the address the client dialled (`PassthroughCluster`),
/// `block_all` answers 502. Without interception the client dialled the sidecar itself, so
/// passing through would loop: there only `REGISTRY_ONLY` adds one (`block_all`).
fn catch_all_host(mode: OutboundTrafficMode, interception: Interception) -> Option<VirtualHost> {
    let name = match (mode, interception) {
        (OutboundTrafficMode::AllowAny, Interception::Redirect) => "allow_any",
        (OutboundTrafficMode::AllowAny, Interception::None) => return None,
        (OutboundTrafficMode::RegistryOnly, _) => "block_all",
    };
    let action = match mode {
        OutboundTrafficMode::AllowAny => {
            // istiod sets the deprecated `max_grpc_timeout` to the route timeout (none).
            #[allow(deprecated)]
            Action::Route(RouteAction {
                cluster_specifier: Some(ClusterSpecifier::Cluster(names::PASSTHROUGH.to_string())),
                timeout: Some(super::duration(std::time::Duration::ZERO)),
                max_grpc_timeout: Some(super::duration(std::time::Duration::ZERO)),
                ..RouteAction::default()
            })
        }
        OutboundTrafficMode::RegistryOnly => Action::DirectResponse(DirectResponseAction {
            status: 502,
            ..DirectResponseAction::default()
        }),
    };
    Some(VirtualHost {
        name: name.to_string(),
        domains: vec!["*".to_string()],
        routes: vec![Route {
            name: name.to_string(),
            r#match: Some(RouteMatch {
                path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
                ..RouteMatch::default()
            }),
            action: Some(action),
            ..Route::default()
        }],
        include_request_attempt_count: true,
        ..VirtualHost::default()
    })
}

/// A gateway virtual host being assembled: host, routes, the objects behind them, and whether
/// it answers plain HTTP with a redirect to HTTPS (`tls.httpsRedirect`).
pub(super) type GatewayHost = (String, Vec<Route>, BTreeSet<ConfigKey>, bool);

fn gateway(view: &View, proxy: &Proxy) -> RoutePlan {
    let mut plan = RoutePlan::default();
    // port → host → (routes, sources), hosts in first-seen order.
    let mut vhosts: BTreeMap<u16, Vec<GatewayHost>> = BTreeMap::new();
    for gw in &view.gateways {
        if !meshpilot_model::labels_match(&gw.spec.selector, &proxy.labels) {
            continue;
        }
        warn_unadmitted(view, gw, &mut plan.errors);
        for (si, server) in gw.spec.servers.iter().enumerate() {
            let Ok(port) = u16::try_from(server.port.number) else {
                continue;
            };
            if tcproute::serves(server) {
                tcproute::gateway_server(
                    view,
                    proxy,
                    gw,
                    server,
                    port,
                    &mut plan.tcp,
                    &mut plan.errors,
                );
                continue;
            }
            let protocol = server.port.protocol.to_ascii_uppercase();
            if gateway_tls::plan_server(view, proxy, gw, si, port, &mut plan) {
                continue;
            }
            if protocol == "TLS" {
                // istiod terminates TLS here (SIMPLE, MUTUAL, ISTIO_MUTUAL) and routes the
                // plaintext by the VirtualServices' `tcp` routes; meshpilot does not yet.
                plan.errors.push(compile_error(
                    view,
                    &gw.key,
                    &format!("spec.servers[{si}].tls.mode"),
                    "a TLS server is served only with mode PASSTHROUGH; terminating TLS on it \
                     (SIMPLE, MUTUAL, ISTIO_MUTUAL) is not served yet (an HTTPS server is); \
                     server skipped"
                        .to_string(),
                ));
                continue;
            }
            if protocol == "HTTPS" {
                // PASSTHROUGH went to the layer-4 servers and SIMPLE, MUTUAL and ISTIO_MUTUAL
                // to the HTTPS chains: what is left is a mode meshpilot does not terminate.
                let mode = server.tls.as_ref().and_then(|t| t.mode.as_deref());
                let message = match mode {
                    Some(m) => format!(
                        "tls.mode {} is not served on an HTTPS server (SIMPLE, MUTUAL, \
                         ISTIO_MUTUAL and PASSTHROUGH are); server skipped",
                        m.to_ascii_uppercase()
                    ),
                    // The source refuses an HTTPS server without tls, and one without a
                    // mode is PASSTHROUGH: only a Gateway built by hand gets here.
                    None => "an HTTPS server needs tls settings; server skipped".to_string(),
                };
                plan.errors.push(compile_error(
                    view,
                    &gw.key,
                    &format!("spec.servers[{si}].tls.mode"),
                    message,
                ));
                continue;
            }
            // gRPC-Web is HTTP to the gateway, as in istiod.
            if !matches!(
                protocol.as_str(),
                "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" | ""
            ) {
                plan.errors.push(compile_error(
                    view,
                    &gw.key,
                    &format!("spec.servers[{si}].port.protocol"),
                    format!(
                        "protocol {protocol} is not served on gateways (HTTP, HTTP2, GRPC, GRPC-WEB, HTTPS, TCP, TLS and MONGO/REDIS/MYSQL are); server skipped"
                    ),
                ));
                continue;
            }
            if plan.https.serves(port) {
                plan.errors.push(compile_error(
                    view,
                    &gw.key,
                    &format!("spec.servers[{si}].port.number"),
                    format!("port {port} already serves HTTPS on this gateway; server skipped"),
                ));
                continue;
            }
            plan.http
                .entry(port)
                .or_insert_with(|| PlannedRoutes::new(names::gateway_route(port)))
                .added_sources
                .push(gw.key.clone());
            let hosts = vhosts.entry(port).or_default();
            let redirect = server.tls.as_ref().is_some_and(|t| t.https_redirect);
            bind_server_hosts(view, proxy, gw, si, port, redirect, hosts, &mut plan.errors);
        }
    }
    for (port, hosts) in vhosts {
        let Some(rc) = plan.http.get_mut(&port) else {
            continue;
        };
        add_gateway_hosts(rc, hosts, port);
    }
    plan
}

/// Adds to `hosts` the virtual hosts of one Gateway server: for each of its hosts, the routes
/// of the VirtualServices bound to the Gateway whose hosts meet it (several on one host merge,
/// in precedence order). With `redirect`, each of the server's hosts gets a virtual host even
/// without a VirtualService, so that plain HTTP to it is redirected.
#[allow(clippy::too_many_arguments)]
pub(super) fn bind_server_hosts(
    view: &View,
    proxy: &Proxy,
    gw: &Named<meshpilot_model::Gateway>,
    si: usize,
    port: u16,
    redirect: bool,
    hosts: &mut Vec<GatewayHost>,
    errors: &mut Vec<Diagnostic>,
) {
    let server = &gw.spec.servers[si];
    for h in &server.hosts {
        let sh = server_host(h);
        for vs in &view.virtual_services {
            if !names_gateway(&vs.spec.gateways, &vs.key.namespace, &gw.key)
                || !exported_to(&vs.spec.export_to, &vs.key.namespace, &proxy.namespace)
                || server_host_for(h, &gw.key.namespace, &vs.key.namespace).is_none()
            {
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
                    server_tls: server.tls.is_some(),
                };
                let (routes, errs) = httproute::translate(&ctx);
                errors.extend(errs);
                let entry = gateway_host(hosts, &host);
                // The same VirtualService reached through two server hosts adds once.
                if entry.2.insert(vs.key.clone()) {
                    entry.1.extend(routes);
                }
                entry.2.insert(gw.key.clone());
                entry.3 |= redirect;
            }
        }
        if redirect {
            let entry = gateway_host(hosts, sh);
            entry.2.insert(gw.key.clone());
            entry.3 = true;
        }
    }
}

/// The entry of `host` in `hosts`, added (empty) if it is not there yet.
fn gateway_host<'h>(hosts: &'h mut Vec<GatewayHost>, host: &str) -> &'h mut GatewayHost {
    let i = match hosts.iter().position(|(h, ..)| h == host) {
        Some(i) => i,
        None => {
            hosts.push((host.to_string(), Vec::new(), BTreeSet::new(), false));
            hosts.len() - 1
        }
    };
    &mut hosts[i]
}

/// Adds the assembled virtual hosts of one gateway port (or HTTPS server) to `rc`.
pub(super) fn add_gateway_hosts(rc: &mut PlannedRoutes, hosts: Vec<GatewayHost>, port: u16) {
    for (host, mut routes, sources, redirect) in hosts {
        httproute::catch_alls_last(&mut routes);
        let domains = vec![host.clone()];
        rc.add(
            VirtualHost {
                name: names::host_port(&host, port),
                domains,
                routes,
                // Envoy answers plain HTTP to such a host with a 301 to `https://`.
                require_tls: if redirect {
                    TlsRequirementType::All as i32
                } else {
                    TlsRequirementType::None as i32
                },
                ..VirtualHost::default()
            },
            sources,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes made from parts are prost's for the whole virtual host, whatever the lengths
    /// (one- and two-byte length prefixes) and however many domains, none included.
    #[test]
    fn default_hosts_are_the_bytes_prost_writes() {
        let long = format!("{}.example.com", "a".repeat(300));
        let cases: [(&str, Vec<String>, &str); 4] = [
            (
                "reviews:9080",
                vec!["reviews".into(), "10.0.0.1".into()],
                "outbound|9080||reviews",
            ),
            (&long, vec![long.clone(), String::new()], &long),
            ("", vec![], ""),
            ("x:1", (0..40).map(|i| format!("host-{i}")).collect(), "c"),
        ];
        for (name, domains, cluster) in cases {
            let vh = VirtualHost {
                name: name.to_string(),
                domains: domains.clone(),
                routes: vec![default_route(cluster)],
                ..VirtualHost::default()
            };
            let mut want = Vec::new();
            prost::encoding::message::encode(VIRTUAL_HOSTS_FIELD, &vh, &mut want);
            let mut got = vec![7];
            encode_default_host(name, &domains, cluster, &mut got);
            assert_eq!(got[1..], want[..], "{name}");
        }
    }

    /// A route with fault and CORS configuration encodes to the same bytes every time, and
    /// those bytes decode to the virtual host.
    #[test]
    fn per_filter_configs_encode_in_key_order() {
        use envoy_types::pb::google::protobuf::Any;
        let config = |n: u8| Any {
            type_url: format!("type.googleapis.com/x{n}"),
            value: vec![n],
        };
        let vh = || VirtualHost {
            name: "h".to_string(),
            domains: vec!["a".to_string(), "b".to_string()],
            routes: vec![Route {
                name: "r".to_string(),
                typed_per_filter_config: (0..8u8).map(|n| (format!("f{n}"), config(n))).collect(),
                ..default_route("c")
            }],
            ..VirtualHost::default()
        };
        let mut first = Vec::new();
        encode_virtual_host(&mut vh(), &mut first);
        for _ in 0..16 {
            let mut again = Vec::new();
            encode_virtual_host(&mut vh(), &mut again);
            assert_eq!(again, first);
        }
        let config = RouteConfiguration::decode(&first[..]).expect("decodes");
        assert_eq!(config.virtual_hosts, vec![vh()]);
    }
}
