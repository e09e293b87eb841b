//! Layer-4 listeners, as istiod plans them: a sidecar's TCP and TLS service ports (one
//! `VIP_PORT` listener per service VIP under REDIRECT, so two TCP services on one port do not
//! collide; for a headless Service one `POD_IP_PORT` listener per endpoint), VirtualService `tcp` routes (by port and `destinationSubnets`) and `tls` routes
//! (by SNI) as filter chains, and a gateway's TCP servers and TLS PASSTHROUGH servers.
//!
//! Envoy picks the most specific filter chain (destination address, then SNI, then transport
//! protocol), so a chain per route match plus one chain without a match (the service's own
//! cluster) gives istiod's behaviour; of two routes with the same match the first wins. On a
//! TLS port, as istiod, only `tls` routes apply, and when one matches the service's own chain
//! is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, filter::ConfigType,
};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy,
    tcp_proxy::{
        ClusterSpecifier, TunnelingConfig, WeightedCluster, weighted_cluster::ClusterWeight,
    },
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};

use super::endpoints::socket_address;
use super::gateway_refs::{names_gateway, server_host_for};
use super::httproute::{self, RouteCtx};
use super::{any, cluster_policy, compile_error, compile_warning, duration, inbound, names};
use meshpilot_index::{Named, ServiceInfo, ServiceOrigin, SvcPort, View};
use meshpilot_model::host::{hosts_intersect, narrower};
use meshpilot_model::{
    ConfigKey, Diagnostic, Gateway, Interception, L4Match, OutboundTrafficMode, Protocol, Proxy,
    RouteDestination, Server, VirtualService, labels_match,
};

const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const TLS_INSPECTOR: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";

/// Where a layer-4 listener listens: a service VIP (sidecars under REDIRECT), or `None` for the
/// proxy's default address (`0.0.0.0` under REDIRECT, its own IP without interception).
pub type L4Key = (u16, Option<IpAddr>);

/// One layer-4 listener being planned.
#[derive(Debug, Clone, Default)]
pub struct L4Listener {
    /// Its filter chains, in the order they were added; no two share a match.
    pub chains: Vec<L4Chain>,
    pub sources: BTreeSet<ConfigKey>,
}

/// A filter chain: what a connection must match, and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L4Chain {
    /// SNI names (a VirtualService `tls` match's `sniHosts`).
    pub server_names: Vec<String>,
    /// Destination ranges (`destinationSubnets`): address and prefix length.
    pub destinations: Vec<(IpAddr, u32)>,
    /// Only TLS connections (sidecar `tls` routes).
    pub tls: bool,
    /// Clusters and weights; one entry means the whole connection goes there.
    pub to: Vec<(String, u32)>,
    /// How long a connection may stay idle before the proxy closes it: the first destination
    /// host's DestinationRule `connectionPool.tcp.idleTimeout` (`None`: Envoy's one hour).
    pub idle_timeout: Option<Duration>,
    /// How long a connection may last at most, from the same rule's
    /// `connectionPool.tcp.maxConnectionDuration` (`None`: no limit).
    pub max_duration: Option<Duration>,
    /// The HTTP tunnel to carry the connection in, from the same rule: `host:port` to ask
    /// for, and whether to POST instead of CONNECT.
    pub tunnel: Option<(String, bool)>,
}

impl L4Chain {
    pub(super) fn to(cluster: String) -> L4Chain {
        L4Chain {
            server_names: Vec::new(),
            destinations: Vec::new(),
            tls: false,
            to: vec![(cluster, 100)],
            idle_timeout: None,
            max_duration: None,
            tunnel: None,
        }
    }

    fn has_match(&self) -> bool {
        !self.server_names.is_empty() || !self.destinations.is_empty() || self.tls
    }

    fn same_match(&self, other: &L4Chain) -> bool {
        self.server_names == other.server_names
            && self.destinations == other.destinations
            && self.tls == other.tls
    }
}

impl L4Listener {
    /// Adds `chain` unless a chain with the same match is already there (the first wins).
    fn add(&mut self, chain: L4Chain) {
        if !self.chains.iter().any(|c| c.same_match(&chain)) {
            self.chains.push(chain);
        }
    }
}

/// What a sidecar's layer-4 listeners depend on besides the service.
pub(super) struct SidecarCtx<'a> {
    pub view: &'a View,
    pub proxy: &'a Proxy,
    /// Where a TLS connection for no known name goes on a listener shared by several services.
    pub mode: OutboundTrafficMode,
}

/// A sidecar's listener for one TCP or TLS port of `svc`: on the service's VIP under REDIRECT
/// (on the proxy's default address when it has none), with a chain per VirtualService `tcp`
/// route match (on a TLS port, `tls` route match) that applies, then the service's own cluster
/// (on a TLS port only when no `tls` match applies). TLS
/// services without a VIP share `0.0.0.0_PORT` under REDIRECT, each told apart by its name
/// (SNI); a name none of them has meets istiod's fallthrough chain (`PassthroughCluster`, or
/// `BlackHoleCluster` under REGISTRY_ONLY).
pub(super) fn sidecar_port(
    ctx: &SidecarCtx<'_>,
    svc: &ServiceInfo,
    port: &SvcPort,
    bound: &[&Named<VirtualService>],
    out: &mut BTreeMap<L4Key, L4Listener>,
    errors: &mut Vec<Diagnostic>,
) {
    let (view, proxy) = (ctx.view, ctx.proxy);
    let vip = match proxy.interception {
        Interception::Redirect => svc.cluster_ip,
        Interception::None => None,
    };
    let tls_port = matches!(port.protocol, Protocol::Tls | Protocol::Https);
    // A headless Service's clients dial one pod: under REDIRECT each endpoint gets a listener
    // of its own (`POD_IP_PORT`), so the connection keeps the pod it was meant for and only
    // this Service's routes see it. Its chains are planned once, then copied to each.
    let headless =
        svc.origin == ServiceOrigin::Headless && proxy.interception == Interception::Redirect;
    let mut per_endpoint = L4Listener::default();
    let listener = if headless {
        &mut per_endpoint
    } else {
        out.entry((port.port, vip)).or_default()
    };
    listener.sources.insert(svc.key.clone());
    // As istiod, a `tls` match on a TLS port replaces the service's own chain: a connection
    // with another name is closed rather than sent to the service.
    let mut tls_matched = false;
    for vs in bound {
        let ctx = RouteCtx {
            view,
            vs,
            gateway: None,
            port: port.port,
            proxy,
            server_tls: false,
        };
        let mut used = false;
        if tls_port {
            for (i, route) in vs.spec.tls.iter().enumerate() {
                let at = format!("spec.tls[{i}]");
                for m in route
                    .matches
                    .iter()
                    .filter(|m| for_mesh(m, port.port, proxy))
                {
                    let Some(chain) = routed(&ctx, &route.route, &at, errors) else {
                        continue;
                    };
                    let server_names = m
                        .sni_hosts
                        .iter()
                        .map(|h| view.resolve(h, &vs.key.namespace))
                        .collect();
                    listener.add(L4Chain {
                        server_names,
                        destinations: subnets(&m.destination_subnets),
                        tls: true,
                        ..chain
                    });
                    used = true;
                    tls_matched = true;
                }
            }
        }
        for (i, route) in vs.spec.tcp.iter().enumerate() {
            let at = format!("spec.tcp[{i}]");
            if tls_port {
                // istiod builds no `tcp` chain on a TLS port; say so where one would apply.
                if route.matches.is_empty()
                    || route.matches.iter().any(|m| for_mesh(m, port.port, proxy))
                {
                    errors.push(compile_warning(
                        view,
                        &vs.key,
                        &at,
                        format!(
                            "port {} of {} is TLS: tcp routes do not apply there (as in Istio); use a tls route",
                            port.port, svc.hostname
                        ),
                    ));
                }
                continue;
            }
            let matches: Vec<&L4Match> = route
                .matches
                .iter()
                .filter(|m| for_mesh(m, port.port, proxy))
                .collect();
            if !route.matches.is_empty() && matches.is_empty() {
                continue;
            }
            let Some(chain) = routed(&ctx, &route.route, &at, errors) else {
                continue;
            };
            used = true;
            if matches.is_empty() {
                listener.add(chain);
                continue;
            }
            for m in matches {
                listener.add(L4Chain {
                    destinations: subnets(&m.destination_subnets),
                    ..chain.clone()
                });
            }
        }
        if used {
            listener.sources.insert(vs.key.clone());
        }
    }
    let own = to_service(
        view,
        &proxy.namespace,
        Some(svc),
        None,
        vec![(names::outbound_cluster(port.port, "", &svc.hostname), 100)],
    );
    // A pod's own listener needs no SNI match: its address says which service it is.
    if tls_port && vip.is_none() && !headless && proxy.interception == Interception::Redirect {
        if !tls_matched {
            listener.add(L4Chain {
                server_names: vec![svc.hostname.to_string()],
                tls: true,
                ..own
            });
        }
        let fallthrough = match ctx.mode {
            OutboundTrafficMode::AllowAny => names::PASSTHROUGH,
            OutboundTrafficMode::RegistryOnly => names::BLACKHOLE,
        };
        listener.add(L4Chain::to(fallthrough.to_string()));
    } else if !tls_matched {
        listener.add(own);
    }
    if headless {
        for ip in headless_endpoints(svc, port.port) {
            let at = out.entry((port.port, Some(ip))).or_default();
            at.sources.extend(per_endpoint.sources.iter().cloned());
            for chain in &per_endpoint.chains {
                at.add(chain.clone());
            }
        }
    }
}

/// The addresses of a headless Service's ready endpoints on `port`, as istiod binds their
/// listeners: IPs only (a name cannot be a listener address), each once. (istiod also leaves
/// out the proxy's own address; meshpilot's listeners are shared by a class of proxies, and a
/// pod's connections to itself never reach its outbound listeners.)
fn headless_endpoints(svc: &ServiceInfo, port: u16) -> BTreeSet<IpAddr> {
    svc.endpoints
        .get(&port)
        .into_iter()
        .flatten()
        .filter_map(|e| e.address.parse().ok())
        .collect()
}

/// True when a `tcp`/`tls` match applies to `proxy`, a sidecar, on `port`.
fn for_mesh(m: &L4Match, port: u16, proxy: &Proxy) -> bool {
    m.port.is_none_or(|p| p == u32::from(port))
        && (m.gateways.is_empty() || m.gateways.iter().any(|g| g == "mesh"))
        && labels_match(&m.source_labels, &proxy.labels)
}

/// `destinationSubnets` as (address, prefix length); a bare address is one host. (The source
/// checked their form.)
fn subnets(list: &[String]) -> Vec<(IpAddr, u32)> {
    list.iter()
        .filter_map(|s| {
            let (ip, len) = s.split_once('/').unwrap_or((s, ""));
            let ip: IpAddr = ip.parse().ok()?;
            let full = if ip.is_ipv4() { 32 } else { 128 };
            Some((ip, len.parse().unwrap_or(full)))
        })
        .collect()
}

/// A chain to `svc` with the idle timeout and tunnel of the rule clients in `client_ns` see
/// for it (of `subset`'s tunnel when given); a host nobody declares has no rule.
pub(super) fn to_service(
    view: &View,
    client_ns: &str,
    svc: Option<&ServiceInfo>,
    subset: Option<&str>,
    to: Vec<(String, u32)>,
) -> L4Chain {
    let dr = svc
        .and_then(|s| view.destination_rule_for(s, client_ns))
        .map(|d| &d.spec);
    L4Chain {
        to,
        idle_timeout: cluster_policy::tcp_proxy_idle_timeout(dr),
        max_duration: cluster_policy::tcp_proxy_max_connection_duration(dr),
        tunnel: cluster_policy::tcp_proxy_tunnel(dr, subset),
        ..L4Chain::to(String::new())
    }
}

/// A chain to a route's destinations, with no match yet: the clusters and weights (those of
/// weight 0 left out, as Envoy refuses them) and, as istiod, the idle timeout and tunnel of
/// the first destination's host (its subset's tunnel only when the route has one
/// destination); `None`, with an error, when none is left or one cannot be named.
fn routed(
    ctx: &RouteCtx<'_>,
    route: &[RouteDestination],
    at: &str,
    errors: &mut Vec<Diagnostic>,
) -> Option<L4Chain> {
    let to = destinations(ctx, route, at, errors)?;
    let first = route.first().and_then(|d| {
        let host = ctx.view.resolve(&d.destination.host, &ctx.vs.key.namespace);
        ctx.view.lookup(&host)
    });
    let subset = match route {
        [only] => only.destination.subset.as_deref(),
        _ => None,
    };
    Some(to_service(
        ctx.view,
        &ctx.proxy.namespace,
        first.map(|s| &**s),
        subset,
        to,
    ))
}

/// The clusters and weights of a route's destinations (those of weight 0 left out, as Envoy
/// refuses them); `None`, with an error, when none is left or one cannot be named.
fn destinations(
    ctx: &RouteCtx<'_>,
    route: &[RouteDestination],
    at: &str,
    errors: &mut Vec<Diagnostic>,
) -> Option<Vec<(String, u32)>> {
    let mut out = Vec::with_capacity(route.len());
    let mut warnings = Vec::new();
    for (j, d) in route.iter().enumerate() {
        let field = format!("{at}.route[{j}].destination");
        let weight = match d.weight {
            Some(w) => u32::try_from(w).unwrap_or(0),
            None if route.len() == 1 => 100,
            None => 0,
        };
        if weight == 0 {
            continue;
        }
        match httproute::cluster_for(ctx, &d.destination, &field, &mut warnings) {
            Ok((cluster, _)) => out.push((cluster, weight)),
            Err(e) => {
                errors.push(*e);
                return None;
            }
        }
    }
    for (field, message) in warnings {
        errors.push(compile_warning(ctx.view, &ctx.vs.key, &field, message));
    }
    if out.is_empty() {
        errors.push(compile_error(
            ctx.view,
            &ctx.vs.key,
            &format!("{at}.route"),
            "no destination has a weight above 0; route left out".to_string(),
        ));
        return None;
    }
    Some(out)
}

/// True for the Gateway servers this module serves: TCP (and the TCP-based protocols istiod
/// proxies as TCP), and TLS or HTTPS with mode PASSTHROUGH (istiod routes both by SNI).
pub(super) fn serves(server: &Server) -> bool {
    match server.port.protocol.to_ascii_uppercase().as_str() {
        "TCP" | "MONGO" | "REDIS" | "MYSQL" => true,
        // An absent mode is PASSTHROUGH, the proto's default, as istiod reads it.
        "TLS" | "HTTPS" => server.tls.as_ref().is_some_and(|t| {
            t.mode
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case("PASSTHROUGH"))
        }),
        _ => false,
    }
}

/// A gateway's TCP or TLS PASSTHROUGH `server` of `gw` on `port`: a chain per VirtualService
/// `tcp` route (TCP) or `tls` route SNI match (TLS, names narrowed to the server's hosts) that
/// is bound to the gateway. A server no route reaches gets no listener, as under istiod.
pub(super) fn gateway_server(
    view: &View,
    proxy: &Proxy,
    gw: &Named<Gateway>,
    server: &Server,
    port: u16,
    out: &mut BTreeMap<L4Key, L4Listener>,
    errors: &mut Vec<Diagnostic>,
) {
    let tls = server.port.protocol.eq_ignore_ascii_case("TLS")
        || server.port.protocol.eq_ignore_ascii_case("HTTPS");
    let mut planned = L4Listener::default();
    for vs in &view.virtual_services {
        if !names_gateway(&vs.spec.gateways, &vs.key.namespace, &gw.key)
            || !meshpilot_model::exported_to(
                &vs.spec.export_to,
                &vs.key.namespace,
                &proxy.namespace,
            )
        {
            continue;
        }
        // The server's hosts this VirtualService's namespace may bind to (`ns/host`).
        let server_hosts: Vec<&str> = server
            .hosts
            .iter()
            .filter_map(|h| server_host_for(h, &gw.key.namespace, &vs.key.namespace))
            .collect();
        let hosts: Vec<String> = vs
            .spec
            .hosts
            .iter()
            .map(|h| view.resolve(h, &vs.key.namespace))
            .collect();
        if !hosts
            .iter()
            .any(|h| server_hosts.iter().any(|s| hosts_intersect(s, h)))
        {
            continue;
        }
        let ctx = RouteCtx {
            view,
            vs,
            gateway: Some(&gw.key),
            port,
            proxy,
            server_tls: false,
        };
        let for_gateway = |m: &L4Match| {
            m.port.is_none_or(|p| p == u32::from(port))
                && labels_match(&m.source_labels, &proxy.labels)
                && (m.gateways.is_empty() || names_gateway(&m.gateways, &vs.key.namespace, &gw.key))
        };
        let before = planned.chains.len();
        if tls {
            for (i, route) in vs.spec.tls.iter().enumerate() {
                let at = format!("spec.tls[{i}]");
                for m in route.matches.iter().filter(|m| for_gateway(m)) {
                    let server_names: Vec<String> = m
                        .sni_hosts
                        .iter()
                        .map(|h| view.resolve(h, &vs.key.namespace))
                        .flat_map(|sni| {
                            server_hosts
                                .iter()
                                .filter(|s| hosts_intersect(s, &sni))
                                .map(|s| narrower(s, &sni).to_string())
                                .collect::<Vec<_>>()
                        })
                        .collect();
                    if server_names.is_empty() {
                        continue;
                    }
                    let Some(chain) = routed(&ctx, &route.route, &at, errors) else {
                        continue;
                    };
                    planned.add(L4Chain {
                        server_names,
                        destinations: subnets(&m.destination_subnets),
                        ..chain
                    });
                }
            }
        } else {
            for (i, route) in vs.spec.tcp.iter().enumerate() {
                let at = format!("spec.tcp[{i}]");
                let matches: Vec<&L4Match> =
                    route.matches.iter().filter(|m| for_gateway(m)).collect();
                if !route.matches.is_empty() && matches.is_empty() {
                    continue;
                }
                let Some(chain) = routed(&ctx, &route.route, &at, errors) else {
                    continue;
                };
                let subnets_of: Vec<Vec<(IpAddr, u32)>> = if matches.is_empty() {
                    vec![Vec::new()]
                } else {
                    matches
                        .iter()
                        .map(|m| subnets(&m.destination_subnets))
                        .collect()
                };
                for destinations in subnets_of {
                    planned.add(L4Chain {
                        destinations,
                        ..chain.clone()
                    });
                }
            }
        }
        if planned.chains.len() > before {
            planned.sources.insert(vs.key.clone());
        }
    }
    if planned.chains.is_empty() {
        return;
    }
    let listener = out.entry((port, None)).or_default();
    listener.sources.insert(gw.key.clone());
    listener.sources.extend(planned.sources);
    for chain in planned.chains {
        listener.add(chain);
    }
}

/// The listener `name` on `address:port` for `plan`, `tls_inspector` first when a chain looks
/// at SNI or the transport protocol.
pub(super) fn listener(
    name: &str,
    address: &str,
    port: u16,
    plan: &L4Listener,
    bind_to_port: Option<BoolValue>,
) -> Listener {
    let mut listener = Listener {
        name: name.to_string(),
        address: Some(socket_address(address, port)),
        // Envoy picks the most specific chain whatever the order; the chain without a match
        // is written last so that a reader sees it as the default it is.
        filter_chains: plan
            .chains
            .iter()
            .filter(|c| c.has_match())
            .chain(plan.chains.iter().filter(|c| !c.has_match()))
            .map(filter_chain)
            .collect(),
        bind_to_port,
        ..Listener::default()
    };
    if plan
        .chains
        .iter()
        .any(|c| c.tls || !c.server_names.is_empty())
    {
        listener.listener_filters.push(inbound::listener_filter(
            "envoy.filters.listener.tls_inspector",
            TLS_INSPECTOR,
            &TlsInspector::default(),
            None,
        ));
    }
    listener
}

pub(super) fn filter_chain(chain: &L4Chain) -> FilterChain {
    let cluster_specifier = match chain.to.as_slice() {
        [(cluster, _)] => ClusterSpecifier::Cluster(cluster.clone()),
        many => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: many
                .iter()
                .map(|(name, weight)| ClusterWeight {
                    name: name.clone(),
                    weight: *weight,
                    ..ClusterWeight::default()
                })
                .collect(),
        }),
    };
    let tcp = TcpProxy {
        stat_prefix: chain.to.first().map(|(c, _)| c.clone()).unwrap_or_default(),
        cluster_specifier: Some(cluster_specifier),
        idle_timeout: chain.idle_timeout.map(duration),
        max_downstream_connection_duration: chain.max_duration.map(duration),
        tunneling_config: chain
            .tunnel
            .as_ref()
            .map(|(hostname, use_post)| TunnelingConfig {
                hostname: hostname.clone(),
                use_post: *use_post,
                ..TunnelingConfig::default()
            }),
        ..TcpProxy::default()
    };
    FilterChain {
        filter_chain_match: chain.has_match().then(|| FilterChainMatch {
            server_names: chain.server_names.clone(),
            prefix_ranges: chain
                .destinations
                .iter()
                .map(|(ip, len)| CidrRange {
                    address_prefix: ip.to_string(),
                    prefix_len: Some(UInt32Value { value: *len }),
                })
                .collect(),
            transport_protocol: if chain.tls {
                "tls".to_string()
            } else {
                String::new()
            },
            ..FilterChainMatch::default()
        }),
        filters: vec![Filter {
            name: "envoy.filters.network.tcp_proxy".to_string(),
            config_type: Some(ConfigType::TypedConfig(any(TCP_PROXY, &tcp))),
        }],
        ..FilterChain::default()
    }
}
