//! LDS: an HTTP listener (HTTP connection manager → RDS) per planned HTTP port, a TCP proxy
//! listener per planned TCP port. Without interception every listener binds the proxy's own IP
//! (`IP_PORT`); with Istio's REDIRECT layout sidecar listeners are `0.0.0.0_PORT` with
//! `bind_to_port: false` behind the `virtualOutbound` listener on 15001. A sidecar port of
//! unknown protocol (an unnamed port) is sniffed as istiod does: HTTP by `http_inspector`,
//! TCP otherwise.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, filter::ConfigType,
};
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds, http_connection_manager::CodecType,
    http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier,
};
use envoy_types::pb::google::protobuf::BoolValue;

use super::clusters::ads;
use super::endpoints::socket_address;
use super::routes::{PlannedTcp, RoutePlan};
use super::tcproute::{self, L4Key, L4Listener};
use super::{any, duration, gateway_tls, inbound, names, resource};
use meshpilot_model::{ConfigKey, Interception, OutboundTrafficMode, Proxy, ProxyKind};
use meshpilot_snapshot::{Reference, Resource, XdsType};

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

/// Per port, what a listener refers to: a route configuration (HTTP) or a cluster (TCP). Kept
/// apart from the routes' bodies so that listeners for another address reuse it.
#[derive(Debug, Clone, Default)]
pub(super) struct ListenerPlan {
    http: BTreeMap<u16, RouteConfigRef>,
    tcp: BTreeMap<L4Key, L4Listener>,
    sniffed: BTreeMap<u16, PlannedTcp>,
    outbound_mode: OutboundTrafficMode,
    /// Gateway HTTPS servers, per port.
    https: BTreeMap<u16, Vec<gateway_tls::TlsChain>>,
    /// A gateway's server ports whose listeners bind another port (the gateway Service's
    /// `targetPort`, see `gateway_ports.rs`).
    bind_ports: BTreeMap<u16, u16>,
}

/// An HTTP port's route configuration: its name and the objects behind it.
#[derive(Debug, Clone)]
struct RouteConfigRef {
    name: String,
    sources: Arc<[ConfigKey]>,
}

impl ListenerPlan {
    pub(super) fn of(plan: &RoutePlan, bind_ports: BTreeMap<u16, u16>) -> ListenerPlan {
        ListenerPlan {
            http: plan
                .http
                .iter()
                .map(|(port, rc)| {
                    let r = RouteConfigRef {
                        name: rc.name.clone(),
                        sources: rc.sources.clone(),
                    };
                    (*port, r)
                })
                .collect(),
            tcp: plan.tcp.clone(),
            sniffed: plan.sniffed.clone(),
            outbound_mode: plan.outbound_mode,
            https: plan.https.chains(),
            bind_ports,
        }
    }

    /// The port the listener for server (or service) port `port` binds.
    fn bound(&self, port: u16) -> u16 {
        self.bind_ports.get(&port).copied().unwrap_or(port)
    }
}

pub(super) fn build(proxy: &Proxy, plan: &ListenerPlan) -> (Vec<Resource>, Vec<Reference>) {
    let redirect_sidecar =
        proxy.kind == ProxyKind::Sidecar && proxy.interception == Interception::Redirect;
    let address = match proxy.interception {
        Interception::None => proxy.ip.to_string(),
        Interception::Redirect => "0.0.0.0".to_string(),
    };
    let bind_to_port = redirect_sidecar.then_some(BoolValue { value: false });
    let mut out = Vec::new();
    let mut refs = Vec::new();
    for (port, rc) in &plan.http {
        let bound = plan.bound(*port);
        let name = names::listener(&address, bound);
        let hcm = HttpConnectionManager {
            stat_prefix: match proxy.kind {
                ProxyKind::Sidecar => ["outbound_", name.as_str()].concat(),
                ProxyKind::Router => rc.name.clone(),
            },
            codec_type: CodecType::Auto as i32,
            route_specifier: Some(RouteSpecifier::Rds(Rds {
                config_source: Some(ads()),
                route_config_name: rc.name.clone(),
            })),
            http_filters: super::route_policy::http_filters(),
            use_remote_address: (proxy.kind == ProxyKind::Router)
                .then_some(BoolValue { value: true }),
            ..HttpConnectionManager::default()
        };
        let mut listener = Listener {
            name: name.clone(),
            address: Some(socket_address(&address, bound)),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "envoy.filters.network.http_connection_manager".to_string(),
                    config_type: Some(ConfigType::TypedConfig(any(HCM, &hcm))),
                }],
                ..FilterChain::default()
            }],
            bind_to_port,
            ..Listener::default()
        };
        if let Some(fallback) = plan.sniffed.get(port) {
            sniff(&mut listener, &fallback.chain);
        }
        refs.push(Reference {
            from_type: XdsType::Listener,
            from: name.clone(),
            to_type: XdsType::Route,
            to: rc.name.clone(),
        });
        out.push(Resource::with_sources(
            name,
            Bytes::from(listener.encode_to_vec()),
            rc.sources.clone(),
        ));
    }
    gateway_tls::listeners(
        &address,
        &plan.https,
        |port| plan.bound(port),
        &mut out,
        &mut refs,
    );
    for ((port, vip), tcp) in &plan.tcp {
        if vip.is_none() && (plan.http.contains_key(port) || plan.https.contains_key(port)) {
            // an HTTP service (or a gateway's HTTPS server) already owns this port
            continue;
        }
        // A per-VIP listener is a sidecar's: only a gateway's wildcard ports are remapped.
        let bound = if vip.is_none() {
            plan.bound(*port)
        } else {
            *port
        };
        let vip = vip.map(|ip| ip.to_string());
        let address = vip.as_deref().unwrap_or(&address);
        let name = names::listener(address, bound);
        let listener = tcproute::listener(&name, address, bound, tcp, bind_to_port);
        out.push(resource(
            &name,
            &listener,
            tcp.sources.iter().cloned().collect(),
        ));
    }
    if redirect_sidecar {
        // Connections to an address no listener claims: passed through, or refused under
        // REGISTRY_ONLY.
        let default = match plan.outbound_mode {
            OutboundTrafficMode::AllowAny => names::PASSTHROUGH,
            OutboundTrafficMode::RegistryOnly => names::BLACKHOLE,
        };
        let mut l = tcp_listener(names::VIRTUAL_OUTBOUND, "0.0.0.0", 15001, default, None);
        l.use_original_dst = Some(BoolValue { value: true });
        out.push(resource(
            names::VIRTUAL_OUTBOUND,
            &l,
            Vec::<ConfigKey>::new(),
        ));
    }
    (out, refs)
}

/// Turns an HTTP listener for a port of unknown protocol into istiod's sniffing shape:
/// `http_inspector` reads the first bytes, plaintext HTTP/1.1 and HTTP/2 take the HTTP chain,
/// anything else is proxied as TCP by `fallback` (with the destination's TCP policy, as a TCP
/// port's chain).
fn sniff(listener: &mut Listener, fallback: &tcproute::L4Chain) {
    for chain in &mut listener.filter_chains {
        chain.filter_chain_match = Some(FilterChainMatch {
            application_protocols: inbound::HTTP_ALPNS.iter().map(|s| s.to_string()).collect(),
            ..FilterChainMatch::default()
        });
    }
    listener
        .filter_chains
        .push(tcproute::filter_chain(fallback));
    listener.listener_filters.push(inbound::listener_filter(
        "envoy.filters.listener.http_inspector",
        inbound::HTTP_INSPECTOR,
        &HttpInspector::default(),
        None,
    ));
    listener.listener_filters_timeout = Some(duration(inbound::PROTOCOL_DETECTION_TIMEOUT));
    listener.continue_on_listener_filters_timeout = true;
}

fn tcp_listener(
    name: &str,
    address: &str,
    port: u16,
    cluster: &str,
    bind_to_port: Option<BoolValue>,
) -> Listener {
    let tcp = TcpProxy {
        stat_prefix: cluster.to_string(),
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
        ..TcpProxy::default()
    };
    Listener {
        name: name.to_string(),
        address: Some(socket_address(address, port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.tcp_proxy".to_string(),
                config_type: Some(ConfigType::TypedConfig(any(TCP_PROXY, &tcp))),
            }],
            ..FilterChain::default()
        }],
        bind_to_port,
        ..Listener::default()
    }
}
