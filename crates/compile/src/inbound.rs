//! LDS and CDS of a sidecar's inbound side, shaped as istiod shapes them for iptables REDIRECT:
//! istio-init sends every inbound TCP connection of the pod to `virtualInbound` on
//! 0.0.0.0:15006, which picks a filter chain by the connection's original destination port.
//!
//! The ports served are the target ports of the Kubernetes Services in the proxy's namespace
//! whose selector matches its labels (the oldest Service wins a port two declare); a named
//! target port resolves through the pod's `POD_PORTS`, else through the Service's endpoints.
//! When the Sidecar that applies to the proxy has `ingress` listeners, those are the ports
//! instead (as istiod does by default), each sent to its `defaultEndpoint`: loopback or a unix
//! socket (a STATIC cluster), the pod IP on another port (`0.0.0.0:PORT`), or by default where
//! the connection was sent.
//! Each gets chains named `0.0.0.0_PORT` to the cluster `inbound|PORT||` (HTTP: an HTTP
//! connection manager with an inline route; TCP: tcp_proxy; a port of unknown protocol both,
//! told apart by `http_inspector`). Every other port goes to `InboundPassthroughCluster`, and a
//! connection to 15006 itself to `BlackHoleCluster` (a loop guard). The clusters are
//! ORIGINAL_DST bound to 127.0.0.6, so the app sees its own pod IP dialled from 127.0.0.6 and
//! istio-init's rules let that connection through uncaptured; they speak HTTP/2 to `grpc` and
//! `http2` ports and the client's protocol to ports of unknown protocol, as istiod's do.
//!
//! Which of those chains terminate mutual TLS, accept plaintext, or both, follows the
//! PeerAuthentication of the workload and port (`peer_authn.rs`, `inbound_tls.rs`);
//! `tls_inspector` runs on the ports that have TLS chains.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, LbConfig, LbPolicy, OriginalDstLbConfig,
};
use envoy_types::pb::envoy::config::core::v3::Pipe;
use envoy_types::pb::envoy::config::core::v3::{
    BindConfig, Http1ProtocolOptions, Http2ProtocolOptions, TrafficDirection, address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
    ListenerFilterChainMatchPredicate,
    filter::ConfigType,
    listener_filter,
    listener_filter_chain_match_predicate::{MatchSet, Rule},
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
    route::Action,
    route_action::{ClusterSpecifier as RouteCluster, MaxStreamDuration},
    route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager::CodecType,
    http_connection_manager::ForwardClientCertDetails, http_connection_manager::RouteSpecifier,
    http_connection_manager::SetCurrentClientCertDetails, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    ExplicitHttpConfig, UpstreamProtocolOptions, UseDownstreamHttpConfig,
    explicit_http_config::ProtocolConfig,
};
use envoy_types::pb::envoy::r#type::v3::Int32Range;
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};

use super::endpoints::socket_address;
use super::inbound_tls::{self, PortChains};
use super::peer_authn::InboundMtls;
use super::{any, duration, names, resource};
use meshpilot_index::{ServiceInfo, ServiceOrigin, SvcPort, View};
use meshpilot_model::{ConfigKey, IstioIngressListener, Protocol, Proxy, TargetPort, labels_match};
use meshpilot_snapshot::Resource;

/// istiod's inbound capture port (`ProxyInboundListenPort`).
pub const INBOUND_PORT: u16 = 15006;
/// The source address of every connection the sidecar makes to its own app: istio-init's
/// rules let it through instead of capturing it again.
const INBOUND_BIND: &str = "127.0.0.6";
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// istiod never cleans up an inbound ORIGINAL_DST cluster's hosts: the longest interval a
/// protobuf Duration holds in nanoseconds (about 292 years).
const NEVER: std::time::Duration = std::time::Duration::from_secs(9_223_372_035);
/// The mesh's default `protocolDetectionTimeout`: 0, no timeout for the listener filters.
pub(super) const PROTOCOL_DETECTION_TIMEOUT: std::time::Duration = std::time::Duration::ZERO;
pub(super) const HTTP_PROTOCOL_OPTIONS: &str =
    "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const TLS_INSPECTOR: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
const ORIGINAL_DST: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst";
pub(super) const HTTP_INSPECTOR: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector";
/// What `http_inspector` reports for plaintext HTTP/1.1 and HTTP/2 (prior knowledge).
pub(super) const HTTP_ALPNS: [&str; 2] = ["http/1.1", "h2c"];

/// One port the proxy's pod serves to the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct InboundPort {
    /// The port connections arrive on (a Service's target port, a Sidecar ingress port).
    pub port: u16,
    pub protocol: Protocol,
    /// Where the sidecar sends them.
    pub endpoint: InboundEndpoint,
    /// The Service (or Sidecar) that declared it.
    pub source: ConfigKey,
}

/// Where an inbound port's connections go (a Sidecar ingress `defaultEndpoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum InboundEndpoint {
    /// Where the connection was sent: the pod IP and the port.
    OriginalDestination,
    /// The pod IP on another port (`0.0.0.0:PORT`, `[::]:PORT`).
    PodPort(u16),
    /// A loopback address (`127.0.0.1`, `::1`) and port.
    Loopback(&'static str, u16),
    /// A unix socket path.
    Unix(String),
}

impl InboundEndpoint {
    /// Parses a `defaultEndpoint` (validated by the source; anything else is the default).
    fn parse(default_endpoint: Option<&str>) -> InboundEndpoint {
        let Some(e) = default_endpoint else {
            return InboundEndpoint::OriginalDestination;
        };
        if let Some(path) = e.strip_prefix("unix://") {
            return InboundEndpoint::Unix(path.to_string());
        }
        let parsed = e
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)));
        match parsed {
            Some(("127.0.0.1", p)) => InboundEndpoint::Loopback("127.0.0.1", p),
            Some(("[::1]", p)) => InboundEndpoint::Loopback("::1", p),
            Some(("0.0.0.0" | "[::]", p)) => InboundEndpoint::PodPort(p),
            _ => InboundEndpoint::OriginalDestination,
        }
    }
}

/// The ports `proxy` serves, by port: its Sidecar's ingress listeners if it has any, else the
/// target ports of the Services selecting it.
pub(super) fn plan(view: &View, proxy: &Proxy) -> Vec<InboundPort> {
    if let Some(sidecar) = super::scope::applicable(view, proxy)
        && !sidecar.spec.ingress.is_empty()
    {
        return from_sidecar(&sidecar.key, &sidecar.spec.ingress);
    }
    from_services(view, proxy)
}

/// A Sidecar's ingress listeners (the first of a port wins).
fn from_sidecar(key: &ConfigKey, ingress: &[IstioIngressListener]) -> Vec<InboundPort> {
    let mut ports: BTreeMap<u16, InboundPort> = BTreeMap::new();
    for listener in ingress {
        let Some(port) = u16::try_from(listener.port.number)
            .ok()
            .filter(|p| *p != 0 && *p != INBOUND_PORT)
        else {
            continue;
        };
        ports.entry(port).or_insert_with(|| InboundPort {
            port,
            protocol: Protocol::parse(&listener.port.protocol).unwrap_or(Protocol::Unknown),
            endpoint: InboundEndpoint::parse(listener.default_endpoint.as_deref()),
            source: key.clone(),
        });
    }
    ports.into_values().collect()
}

/// The Kubernetes Services in `proxy`'s namespace whose selector matches its labels, oldest
/// first (then by namespace/name): the order in which istiod lets them claim a port.
pub(super) fn selecting_services<'v>(view: &'v View, proxy: &Proxy) -> Vec<&'v ServiceInfo> {
    let mut selecting: Vec<(&str, &ServiceInfo)> = view
        .services
        .values()
        .filter(|s| {
            matches!(
                s.origin,
                ServiceOrigin::Kubernetes | ServiceOrigin::Headless
            ) && *s.namespace == *proxy.namespace
                && s.selector
                    .as_ref()
                    .is_some_and(|sel| labels_match(sel, &proxy.labels))
        })
        .map(|s| {
            let created = view
                .objects
                .get(&s.key)
                .map_or("", |o| o.meta.creation.as_str());
            (created, &**s)
        })
        .collect();
    selecting.sort_by(|a, b| (a.0, &a.1.key).cmp(&(b.0, &b.1.key)));
    selecting.into_iter().map(|(_, s)| s).collect()
}

/// The port on `proxy`'s pod that a port of `svc` selecting it leads to: a number as written,
/// a name through the pod's `POD_PORTS`, else through the Service's endpoints; `None` when it
/// does not resolve or is 0.
pub(super) fn target_port(proxy: &Proxy, svc: &ServiceInfo, p: &SvcPort) -> Option<u16> {
    let target = match &p.target_port {
        TargetPort::Number(n) => Some(*n),
        TargetPort::Name(name) => proxy
            .pod_ports
            .get(name)
            .copied()
            .or_else(|| common_endpoint_port(svc, p.port)),
    };
    target.filter(|t| *t != 0)
}

/// The target ports of the Services selecting `proxy`; the oldest Service wins a target port
/// two declare, as in istiod.
fn from_services(view: &View, proxy: &Proxy) -> Vec<InboundPort> {
    let mut ports: BTreeMap<u16, InboundPort> = BTreeMap::new();
    for svc in selecting_services(view, proxy) {
        for p in &svc.ports {
            let Some(target) = target_port(proxy, svc, p).filter(|t| *t != INBOUND_PORT) else {
                continue;
            };
            ports.entry(target).or_insert_with(|| InboundPort {
                port: target,
                protocol: p.protocol,
                endpoint: InboundEndpoint::OriginalDestination,
                source: svc.key.clone(),
            });
        }
    }
    ports.into_values().collect()
}

/// The port every endpoint of a service port shares, if they agree: where a named target port
/// leads when the proxy did not send its pod's ports.
fn common_endpoint_port(svc: &ServiceInfo, port: u16) -> Option<u16> {
    let mut eps = svc.endpoints.get(&port)?.iter().map(|e| e.port);
    let first = eps.next()?;
    eps.all(|p| p == first).then_some(first)
}

/// `inbound|PORT||`, istiod's inbound cluster (and inline route configuration) name.
pub fn cluster_name(port: u16) -> String {
    ["inbound|", itoa::Buffer::new().format(port), "||"].concat()
}

/// The `virtualInbound` listener for `ports`, their chains as `mtls` says; `can_terminate`:
/// the proxy has its workload certificate (see `inbound_tls.rs`).
pub(super) fn listener(ports: &[InboundPort], mtls: &InboundMtls, can_terminate: bool) -> Resource {
    let mut chains = vec![tcp_chain(
        names::VIRTUAL_INBOUND_BLACKHOLE,
        Some(INBOUND_PORT),
        names::BLACKHOLE,
    )];
    // Ports whose chains need no protocol detection: http_inspector stays off for them, so a
    // server-first protocol on a declared TCP port is not held waiting for the client's bytes.
    let mut declared: Vec<u16> = vec![INBOUND_PORT];
    // Likewise for tls_inspector: off on the ports with no TLS chain.
    let mut plaintext_only: Vec<u16> = vec![INBOUND_PORT];
    for p in ports {
        let name = names::listener("0.0.0.0", p.port);
        let cluster = cluster_name(p.port);
        if p.protocol != Protocol::Unknown {
            declared.push(p.port);
        }
        let port_chains = PortChains {
            http_name: &name,
            tcp_name: &name,
            port: Some(p.port),
            protocol: p.protocol,
            cluster: &cluster,
            vhost_port: p.port,
        }
        .build(mtls.port(p.port), can_terminate);
        if !inbound_tls::matches_tls(&port_chains) {
            plaintext_only.push(p.port);
        }
        chains.extend(port_chains);
    }
    let passthrough = PortChains {
        http_name: names::VIRTUAL_INBOUND_CATCHALL_HTTP,
        tcp_name: names::VIRTUAL_INBOUND,
        port: None,
        protocol: Protocol::Unknown,
        cluster: names::INBOUND_PASSTHROUGH,
        vhost_port: 0,
    }
    .build(mtls.workload, can_terminate);
    let passthrough_tls = inbound_tls::matches_tls(&passthrough);
    chains.extend(passthrough);
    let mut listener_filters = vec![listener_filter(
        "envoy.filters.listener.original_dst",
        ORIGINAL_DST,
        &OriginalDst::default(),
        None,
    )];
    let tls_disabled = inbound_tls::inspector_disabled(
        ports.iter().map(|p| p.port),
        &plaintext_only,
        passthrough_tls,
    );
    if let Some(disabled) = tls_disabled {
        listener_filters.push(listener_filter(
            "envoy.filters.listener.tls_inspector",
            TLS_INSPECTOR,
            &TlsInspector::default(),
            Some(disabled),
        ));
    }
    listener_filters.push(listener_filter(
        "envoy.filters.listener.http_inspector",
        HTTP_INSPECTOR,
        &HttpInspector::default(),
        Some(ports_predicate(&declared)),
    ));
    let listener = Listener {
        name: names::VIRTUAL_INBOUND.to_string(),
        address: Some(socket_address("0.0.0.0", INBOUND_PORT)),
        filter_chains: chains,
        listener_filters,
        traffic_direction: TrafficDirection::Inbound as i32,
        listener_filters_timeout: Some(duration(PROTOCOL_DETECTION_TIMEOUT)),
        continue_on_listener_filters_timeout: true,
        ..Listener::default()
    };
    let sources: Vec<ConfigKey> = ports.iter().map(|p| p.source.clone()).collect();
    resource(names::VIRTUAL_INBOUND, &listener, sources)
}

/// `inbound|PORT||` for each port, and `InboundPassthroughCluster`.
pub(super) fn clusters(ports: &[InboundPort]) -> Vec<Resource> {
    ports
        .iter()
        .map(|p| {
            let name = cluster_name(p.port);
            let mut cluster = match &p.endpoint {
                InboundEndpoint::OriginalDestination => original_dst_cluster(&name),
                InboundEndpoint::PodPort(port) => {
                    let mut c = original_dst_cluster(&name);
                    c.lb_config = Some(LbConfig::OriginalDstLbConfig(OriginalDstLbConfig {
                        upstream_port_override: Some(UInt32Value {
                            value: u32::from(*port),
                        }),
                        ..OriginalDstLbConfig::default()
                    }));
                    c
                }
                InboundEndpoint::Loopback(ip, port) => {
                    static_cluster(&name, socket_address(ip, *port))
                }
                InboundEndpoint::Unix(path) => static_cluster(
                    &name,
                    envoy_types::pb::envoy::config::core::v3::Address {
                        address: Some(address::Address::Pipe(Pipe {
                            path: path.clone(),
                            ..Pipe::default()
                        })),
                    },
                ),
            };
            if let Some(options) = upstream_protocol(p.protocol) {
                cluster.typed_extension_protocol_options.insert(
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
                    any(HTTP_PROTOCOL_OPTIONS, &options),
                );
            }
            resource(&name, &cluster, vec![p.source.clone()])
        })
        .chain(std::iter::once(resource(
            names::INBOUND_PASSTHROUGH,
            &original_dst_cluster(names::INBOUND_PASSTHROUGH),
            vec![],
        )))
        .collect()
}

/// How the sidecar speaks HTTP to its app, as istiod sets it: HTTP/2 for `grpc`/`http2` ports,
/// the client's own protocol for ports of unknown protocol, HTTP/1.1 (Envoy's default) else.
/// Outbound clusters take the HTTP/2 half of it ([`outbound_upstream_protocol`]).
fn upstream_protocol(protocol: Protocol) -> Option<HttpProtocolOptions> {
    let options = match protocol {
        Protocol::Http2 | Protocol::Grpc => {
            UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                    Http2ProtocolOptions::default(),
                )),
            })
        }
        Protocol::Unknown => {
            UpstreamProtocolOptions::UseDownstreamProtocolConfig(UseDownstreamHttpConfig {
                http_protocol_options: Some(Http1ProtocolOptions::default()),
                http2_protocol_options: Some(Http2ProtocolOptions::default()),
                ..UseDownstreamHttpConfig::default()
            })
        }
        _ => return None,
    };
    Some(HttpProtocolOptions {
        upstream_protocol_options: Some(options),
        ..HttpProtocolOptions::default()
    })
}

/// How a proxy speaks to an outbound service port, as istiod sets it: HTTP/2 for `grpc`,
/// `grpc-web` and `http2` ports (gRPC needs it end to end), Envoy's default (HTTP/1.1) else.
pub(super) fn outbound_upstream_protocol(protocol: Protocol) -> Option<HttpProtocolOptions> {
    match protocol {
        Protocol::Http2 | Protocol::Grpc => upstream_protocol(protocol),
        _ => None,
    }
}

/// A STATIC cluster of one address the sidecar reaches without capture (loopback connections
/// of uid 1337 and unix sockets are not redirected), so it binds no source address.
fn static_cluster(
    name: &str,
    address: envoy_types::pb::envoy::config::core::v3::Address,
) -> Cluster {
    Cluster {
        name: name.to_string(),
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(address),
                        ..Endpoint::default()
                    })),
                    ..LbEndpoint::default()
                }],
                ..LocalityLbEndpoints::default()
            }],
            ..ClusterLoadAssignment::default()
        }),
        ..Cluster::default()
    }
}

/// An ORIGINAL_DST cluster whose connections leave from 127.0.0.6.
fn original_dst_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.to_string(),
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: LbPolicy::ClusterProvided as i32,
        cleanup_interval: Some(duration(NEVER)),
        upstream_bind_config: Some(BindConfig {
            source_address: match socket_address(INBOUND_BIND, 0).address {
                Some(address::Address::SocketAddress(a)) => Some(a),
                _ => None,
            },
            ..BindConfig::default()
        }),
        ..Cluster::default()
    }
}

pub(super) fn listener_filter<M: prost::Message>(
    name: &str,
    type_url: &str,
    config: &M,
    filter_disabled: Option<ListenerFilterChainMatchPredicate>,
) -> ListenerFilter {
    ListenerFilter {
        name: name.to_string(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(
            type_url, config,
        ))),
        filter_disabled,
    }
}

/// True for a connection to any of `ports`.
pub(super) fn ports_predicate(ports: &[u16]) -> ListenerFilterChainMatchPredicate {
    let one = |p: u16| ListenerFilterChainMatchPredicate {
        rule: Some(Rule::DestinationPortRange(Int32Range {
            start: i32::from(p),
            end: i32::from(p) + 1,
        })),
    };
    match ports {
        [p] => one(*p),
        _ => ListenerFilterChainMatchPredicate {
            rule: Some(Rule::OrMatch(MatchSet {
                rules: ports.iter().map(|p| one(*p)).collect(),
            })),
        },
    }
}

fn chain_match(port: Option<u16>, http_alpn: bool) -> Option<FilterChainMatch> {
    if port.is_none() && !http_alpn {
        return None;
    }
    Some(FilterChainMatch {
        destination_port: port.map(|p| UInt32Value {
            value: u32::from(p),
        }),
        application_protocols: if http_alpn {
            HTTP_ALPNS.iter().map(|s| s.to_string()).collect()
        } else {
            Vec::new()
        },
        ..FilterChainMatch::default()
    })
}

pub(super) fn tcp_chain(name: &str, port: Option<u16>, cluster: &str) -> FilterChain {
    let tcp = TcpProxy {
        stat_prefix: cluster.to_string(),
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
        ..TcpProxy::default()
    };
    FilterChain {
        name: name.to_string(),
        filter_chain_match: chain_match(port, false),
        filters: vec![Filter {
            name: "envoy.filters.network.tcp_proxy".to_string(),
            config_type: Some(ConfigType::TypedConfig(any(TCP_PROXY, &tcp))),
        }],
        ..FilterChain::default()
    }
}

/// An HTTP chain whose inline route sends everything to `cluster`; `port` 0 for passthrough
/// (istiod's virtual host `inbound|http|0`).
pub(super) fn http_chain(
    name: &str,
    port: Option<u16>,
    http_alpn: bool,
    cluster: &str,
    vhost_port: u16,
) -> FilterChain {
    let route = RouteConfiguration {
        name: cluster.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: ["inbound|http|", itoa::Buffer::new().format(vhost_port)].concat(),
            domains: vec!["*".to_string()],
            routes: vec![Route {
                name: "default".to_string(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
                    ..RouteMatch::default()
                }),
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(RouteCluster::Cluster(cluster.to_string())),
                    timeout: Some(duration(std::time::Duration::ZERO)),
                    max_stream_duration: Some(MaxStreamDuration {
                        max_stream_duration: Some(duration(std::time::Duration::ZERO)),
                        ..MaxStreamDuration::default()
                    }),
                    ..RouteAction::default()
                })),
                ..Route::default()
            }],
            ..VirtualHost::default()
        }],
        validate_clusters: Some(BoolValue { value: false }),
        ..RouteConfiguration::default()
    };
    let stat_prefix = match port {
        Some(p) => ["inbound_", &names::listener("0.0.0.0", p)].concat(),
        None => cluster.to_string(),
    };
    let hcm = HttpConnectionManager {
        stat_prefix,
        codec_type: CodecType::Auto as i32,
        route_specifier: Some(RouteSpecifier::RouteConfig(route)),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(any(
                ROUTER,
                &Router::default(),
            ))),
            ..HttpFilter::default()
        }],
        forward_client_cert_details: ForwardClientCertDetails::AppendForward as i32,
        set_current_client_cert_details: Some(SetCurrentClientCertDetails {
            subject: Some(BoolValue { value: true }),
            uri: true,
            dns: true,
            ..SetCurrentClientCertDetails::default()
        }),
        ..HttpConnectionManager::default()
    };
    FilterChain {
        name: name.to_string(),
        filter_chain_match: chain_match(port, http_alpn),
        filters: vec![Filter {
            name: "envoy.filters.network.http_connection_manager".to_string(),
            config_type: Some(ConfigType::TypedConfig(any(HCM, &hcm))),
        }],
        ..FilterChain::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use meshpilot_index::Index;
    use meshpilot_model::proxy::MetadataValue;
    use meshpilot_model::test_helpers::*;
    use meshpilot_model::{Body, Object};

    fn view(objects: Vec<Object>) -> View {
        let mut index = Index::new();
        index.reset(meshpilot_model::SourceId::Files, objects);
        index.build_view("cluster.local", None)
    }

    fn sidecar(labels_: &[(&str, &str)], pod_ports: Option<&str>) -> Proxy {
        let mut md = BTreeMap::new();
        md.insert("LABELS".to_string(), MetadataValue::Map(labels(labels_)));
        if let Some(p) = pod_ports {
            md.insert("POD_PORTS".to_string(), MetadataValue::String(p.into()));
        }
        Proxy::parse(
            "sidecar~10.0.0.9~r-1.default~default.svc.cluster.local",
            &md,
        )
        .expect("valid node id")
    }

    /// A Service selecting `app=r` with one port.
    fn service(
        ns: &str,
        name: &str,
        created: &str,
        port: u16,
        target: TargetPort,
        proto: Protocol,
    ) -> Object {
        let mut o = mk_service(ns, name, &[port]);
        o.meta.creation = created.to_string();
        if let Body::Service(s) = &mut o.body {
            s.selector = Some(labels(&[("app", "r")]));
            s.ports[0].target_port = target;
            s.ports[0].protocol = proto;
        }
        o
    }

    fn ports(plan: &[InboundPort]) -> Vec<(u16, Protocol, String)> {
        plan.iter()
            .map(|p| (p.port, p.protocol, p.source.name.to_string()))
            .collect()
    }

    #[test]
    fn the_oldest_selecting_service_in_the_namespace_wins_a_target_port() {
        let v = view(vec![
            service(
                "default",
                "newer",
                "2021-01-01T00:00:00Z",
                81,
                TargetPort::Number(8080),
                Protocol::Tcp,
            ),
            service(
                "default",
                "older",
                "2020-01-01T00:00:00Z",
                80,
                TargetPort::Number(8080),
                Protocol::Http,
            ),
            service(
                "default",
                "db",
                "2022-01-01T00:00:00Z",
                3306,
                TargetPort::Number(3306),
                Protocol::Tcp,
            ),
            service(
                "other",
                "elsewhere",
                "2019-01-01T00:00:00Z",
                90,
                TargetPort::Number(9090),
                Protocol::Http,
            ),
            mk_service("default", "unrelated", &[7070]),
        ]);
        assert_eq!(
            ports(&plan(&v, &sidecar(&[("app", "r")], None))),
            [
                (3306, Protocol::Tcp, "db".to_string()),
                (8080, Protocol::Http, "older".to_string()),
            ]
        );
        assert!(plan(&v, &sidecar(&[("app", "x")], None)).is_empty());
    }

    #[test]
    fn a_named_target_port_resolves_through_pod_ports_then_endpoints() {
        let named = service(
            "default",
            "web",
            "",
            80,
            TargetPort::Name("web".into()),
            Protocol::Http,
        );
        let mut pod = mk_pod("default", "r-1", "10.0.0.9", &[("app", "r")]);
        if let Body::Pod(w) = &mut pod.body {
            w.ports.insert("web".into(), 9000);
        }
        let v = view(vec![named, pod]);
        let from_metadata = sidecar(
            &[("app", "r")],
            Some(r#"[{"name":"web","containerPort":9443}]"#),
        );
        assert_eq!(plan(&v, &from_metadata)[0].port, 9443);
        assert_eq!(plan(&v, &sidecar(&[("app", "r")], None))[0].port, 9000);
    }

    #[test]
    fn a_sidecars_ingress_listeners_replace_the_services_ports() {
        let with_ingress = mk_istio(
            "Sidecar",
            "default",
            "r",
            serde_json::json!({
                "workloadSelector": {"labels": {"app": "r", "ingress": "yes"}},
                "ingress": [
                    {"port": {"number": 9080, "protocol": "HTTP", "name": "http"},
                     "defaultEndpoint": "127.0.0.1:8080"},
                    {"port": {"number": 9081, "protocol": "TCP", "name": "tcp"},
                     "defaultEndpoint": "0.0.0.0:8081"},
                    {"port": {"number": 9082, "protocol": "bogus", "name": "x"}},
                ],
            }),
        );
        let v = view(vec![mk_service("default", "r", &[80]), with_ingress]);
        let got: Vec<(u16, Protocol, InboundEndpoint)> =
            plan(&v, &sidecar(&[("app", "r"), ("ingress", "yes")], None))
                .into_iter()
                .map(|p| (p.port, p.protocol, p.endpoint))
                .collect();
        assert_eq!(
            got,
            [
                (
                    9080,
                    Protocol::Http,
                    InboundEndpoint::Loopback("127.0.0.1", 8080)
                ),
                (9081, Protocol::Tcp, InboundEndpoint::PodPort(8081)),
                (
                    9082,
                    Protocol::Unknown,
                    InboundEndpoint::OriginalDestination
                ),
            ]
        );
        // A pod the Sidecar does not select keeps its Services' ports.
        let other = plan(&v, &sidecar(&[("app", "r")], None));
        assert_eq!(other.len(), 1);
    }

    #[test]
    fn only_sidecars_that_capture_inbound_get_virtual_inbound() {
        let v = view(vec![mk_service("default", "r", &[80])]);
        let has_inbound = |p: &Proxy| {
            let out = crate::compile_class(&v, p);
            out.listeners.items.contains_key(names::VIRTUAL_INBOUND)
        };
        assert!(has_inbound(&sidecar(&[("app", "r")], None)));
        let mut md = BTreeMap::new();
        md.insert(
            "INTERCEPTION_MODE".to_string(),
            MetadataValue::String("NONE".into()),
        );
        let none = Proxy::parse(
            "sidecar~10.0.0.9~r-1.default~default.svc.cluster.local",
            &md,
        )
        .expect("valid");
        assert!(!has_inbound(&none));
        let router = Proxy::parse(
            "router~10.0.0.9~gw.default~default.svc.cluster.local",
            &BTreeMap::new(),
        )
        .expect("valid");
        assert!(!has_inbound(&router));
    }
}
