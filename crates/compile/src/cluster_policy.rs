//! A DestinationRule's traffic policy as istiod applies it to one outbound cluster: which policy
//! a cluster gets (top level, then its port's settings, then its subset's, then the subset's
//! port settings: istiod's `MergeTrafficPolicy`), and what that policy sets in the cluster
//! (load balancer, connection pool and circuit breakers, outlier detection, the PROXY protocol
//! socket around its TLS), in the routes that reach it (the consistent-hash `hash_policy`) and
//! in the TCP proxies that reach it (idle timeout, HTTP tunnel).
//!
//! istiod applies its defaults to every outbound cluster, with or without a rule: LEAST_REQUEST
//! balancing, circuit-breaker thresholds of 2^32-1 (Envoy's own 1024 connections, pending and
//! active requests and 3 retries would throttle a busy service), a 10 s connect timeout.

use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds;
use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::thresholds::RetryBudget as EnvoyRetryBudget;
use envoy_types::pb::envoy::config::cluster::v3::cluster::common_lb_config::{
    LocalityConfigSpecifier, LocalityWeightedLbConfig,
};
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, CommonLbConfig, DiscoveryType, LbConfig, LbPolicy, LeastRequestLbConfig,
    MaglevLbConfig, RingHashLbConfig, RoundRobinLbConfig, SlowStartConfig,
};
use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlierDetection, UpstreamConnectionOptions,
};
use envoy_types::pb::envoy::config::core::v3::{
    Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CommonHttpOptions,
    ProxyProtocolConfig, RuntimeDouble, TcpKeepalive, TransportSocket, proxy_protocol_config,
    transport_socket,
};
use envoy_types::pb::envoy::config::route::v3::route_action::HashPolicy;
use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::{
    ConnectionProperties, Cookie, CookieAttribute, Header, PolicySpecifier, QueryParameter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::proxy_protocol::v3::ProxyProtocolUpstreamTransport;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    ExplicitHttpConfig, UpstreamProtocolOptions, UseDownstreamHttpConfig,
    explicit_http_config::ProtocolConfig,
};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{UInt32Value, UInt64Value};

use super::{duration, parse_duration};
use meshpilot_index::{ServiceInfo, View};
use meshpilot_model::{
    ClientTlsSettings, ConnectionPoolSettings, DestinationRule, H2UpgradePolicy,
    LoadBalancerSettings, OutlierDetection, Protocol, ProxyProtocol, ProxyProtocolVersion,
    RetryBudget, SimpleLb, Subset, TrafficPolicy,
};

/// The connect timeout of a cluster whose rule sets none (Istio's mesh default).
pub(super) const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The key of the upstream HTTP protocol options in a cluster's typed extension options.
const HTTP_OPTIONS_KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// The traffic policy one cluster gets, borrowed from its DestinationRule: each field is the
/// one that wins after istiod's merge (see [`ClusterPolicy::of`]).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ClusterPolicy<'a> {
    pub load_balancer: Option<&'a LoadBalancerSettings>,
    pub connection_pool: Option<&'a ConnectionPoolSettings>,
    pub outlier_detection: Option<&'a OutlierDetection>,
    /// Applied by `cluster_tls` (origination and auto-mTLS), not here.
    pub tls: Option<&'a ClientTlsSettings>,
    pub retry_budget: Option<&'a RetryBudget>,
    /// Applied by [`wrap_proxy_protocol`] once the TLS socket is in place.
    pub proxy_protocol: Option<&'a ProxyProtocol>,
}

impl<'a> ClusterPolicy<'a> {
    /// The policy of the cluster of `port` (and `subset`) under `dr`, as istiod's
    /// `MergeSubsetTrafficPolicy` makes it: the top-level policy, or instead its port-level
    /// settings for `port`; then the subset's policy field by field, or instead the subset's
    /// own port-level settings for `port`. Port-level settings carry load balancer, connection
    /// pool, outlier detection and TLS only and replace those four as a whole (unset ones fall
    /// back to the defaults, not to the level above); `proxyProtocol` and `retryBudget` of a
    /// policy whose port-level settings match `port` do not reach that port's clusters.
    pub fn of(dr: Option<&'a DestinationRule>, subset: Option<&'a Subset>, port: u16) -> Self {
        let mut p = ClusterPolicy::default();
        if let Some(top) = dr.and_then(|d| d.traffic_policy.as_ref()) {
            p.overlay(top, port);
        }
        if let Some(sub) = subset.and_then(|s| s.traffic_policy.as_ref()) {
            p.overlay(sub, port);
        }
        p
    }

    fn overlay(&mut self, t: &'a TrafficPolicy, port: u16) {
        let port_level = t.port_level_settings.iter().find(|pl| {
            pl.port
                .as_ref()
                .is_some_and(|p| p.number == u32::from(port))
        });
        if let Some(pl) = port_level {
            // istiod reads the port's entry in place of the whole policy (its
            // `shadowCopyPortTrafficPolicy`): what came from the level above stays only for
            // the fields a port entry cannot hold.
            self.load_balancer = pl.load_balancer.as_ref();
            self.connection_pool = pl.connection_pool.as_ref();
            self.outlier_detection = pl.outlier_detection.as_ref();
            self.tls = pl.tls.as_deref();
            return;
        }
        self.load_balancer = t.load_balancer.as_ref().or(self.load_balancer);
        self.connection_pool = t.connection_pool.as_ref().or(self.connection_pool);
        self.outlier_detection = t.outlier_detection.as_ref().or(self.outlier_detection);
        self.tls = t.tls.as_deref().or(self.tls);
        self.retry_budget = t.retry_budget.as_ref().or(self.retry_budget);
        self.proxy_protocol = t.proxy_protocol.as_ref().or(self.proxy_protocol);
    }

    /// True when the cluster gets istiod's defaults alone.
    pub fn is_default(&self) -> bool {
        self.load_balancer.is_none()
            && self.connection_pool.is_none()
            && self.outlier_detection.is_none()
            && self.retry_budget.is_none()
            && self.proxy_protocol.is_none()
    }
}

/// Applies `policy` (and istiod's defaults) to `c`, an outbound cluster of a port speaking
/// `protocol` (`None`: a port the service does not declare).
pub(super) fn apply(c: &mut Cluster, policy: &ClusterPolicy<'_>, protocol: Option<Protocol>) {
    connection_pool(c, policy, protocol);
    load_balancer(c, policy.load_balancer);
    if let Some(od) = policy.outlier_detection {
        outlier_detection(c, od);
    }
    if super::locality::weighted(policy) {
        // Locality group weights count (`distribute`, or the failover groups' own weights).
        c.common_lb_config
            .get_or_insert_with(CommonLbConfig::default)
            .locality_config_specifier = Some(LocalityConfigSpecifier::LocalityWeightedLbConfig(
            LocalityWeightedLbConfig::default(),
        ));
    }
}

fn u32v(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

fn dur(s: Option<&str>) -> Option<envoy_types::pb::google::protobuf::Duration> {
    s.and_then(parse_duration).map(duration)
}

/// istiod's `applyConnectionPool`: thresholds start at 2^32-1 and each limit set replaces its
/// own; HTTP limits go into the upstream HTTP protocol options.
fn connection_pool(c: &mut Cluster, policy: &ClusterPolicy<'_>, protocol: Option<Protocol>) {
    let pool = policy.connection_pool;
    let tcp = pool.and_then(|p| p.tcp.as_ref());
    let http = pool.and_then(|p| p.http.as_ref());
    let mut t = Thresholds {
        max_connections: u32v(u32::MAX),
        max_pending_requests: u32v(u32::MAX),
        max_requests: u32v(u32::MAX),
        max_retries: u32v(u32::MAX),
        track_remaining: true,
        ..Thresholds::default()
    };
    // As istiod: a limit of 0 means "not set".
    let positive = |v: Option<u32>| v.filter(|n| *n > 0);
    if let Some(n) = positive(tcp.and_then(|t| t.max_connections)) {
        t.max_connections = u32v(n);
    }
    if let Some(n) = positive(http.and_then(|h| h.http1_max_pending_requests)) {
        t.max_pending_requests = u32v(n);
    }
    if let Some(n) = positive(http.and_then(|h| h.http2_max_requests)) {
        t.max_requests = u32v(n);
    }
    if let Some(n) = positive(http.and_then(|h| h.max_retries)) {
        t.max_retries = u32v(n);
    }
    if let Some(b) = policy.retry_budget {
        // istiod's defaults: 20% of active requests, at least 3 retries.
        t.retry_budget = Some(EnvoyRetryBudget {
            budget_percent: Some(Percent {
                value: b.percent.as_ref().map_or(20.0, |p| p.value),
            }),
            min_retry_concurrency: u32v(positive(b.min_retry_concurrency).unwrap_or(3)),
            ..EnvoyRetryBudget::default()
        });
    }
    c.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![t],
        ..CircuitBreakers::default()
    });
    c.connect_timeout = Some(duration(
        tcp.and_then(|t| t.connect_timeout.as_deref())
            .and_then(parse_duration)
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
    ));
    if let Some(k) = tcp.and_then(|t| t.tcp_keepalive.as_ref()) {
        let secs = |s: Option<&str>| {
            s.and_then(parse_duration)
                .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
                .and_then(u32v)
        };
        c.upstream_connection_options = Some(UpstreamConnectionOptions {
            tcp_keepalive: Some(TcpKeepalive {
                keepalive_probes: k.probes.and_then(u32v),
                keepalive_time: secs(k.time.as_deref()),
                keepalive_interval: secs(k.interval.as_deref()),
            }),
            ..UpstreamConnectionOptions::default()
        });
    }

    // The upstream HTTP options: HTTP/2 for gRPC and http2 ports (or an HTTP port upgraded by
    // h2UpgradePolicy), the client's protocol with useClientProtocol, and the common limits.
    let mut options = protocol.and_then(super::inbound::outbound_upstream_protocol);
    let upgrade = http.and_then(|h| h.h2_upgrade_policy) == Some(H2UpgradePolicy::Upgrade);
    if upgrade && protocol == Some(Protocol::Http) {
        options = Some(HttpProtocolOptions {
            upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                        Http2ProtocolOptions::default(),
                    )),
                },
            )),
            ..HttpProtocolOptions::default()
        });
    }
    // As istiod: the TCP idle timeout stands in for the HTTP one when that is unset, so a
    // rule written for TCP also closes idle upstream HTTP connections.
    let idle_timeout = dur(http.and_then(|h| h.idle_timeout.as_deref()))
        .or_else(|| dur(tcp.and_then(|t| t.idle_timeout.as_deref())));
    let max_requests = positive(http.and_then(|h| h.max_requests_per_connection));
    let max_duration = dur(tcp.and_then(|t| t.max_connection_duration.as_deref()));
    let max_streams = positive(http.and_then(|h| h.max_concurrent_streams));
    if idle_timeout.is_some()
        || max_requests.is_some()
        || max_duration.is_some()
        || max_streams.is_some()
    {
        let o = options.get_or_insert_with(HttpProtocolOptions::default);
        let common = o
            .common_http_protocol_options
            .get_or_insert_with(CommonHttpOptions::default);
        common.idle_timeout = idle_timeout.or(common.idle_timeout);
        common.max_connection_duration = max_duration.or(common.max_connection_duration);
        if let Some(n) = max_requests {
            common.max_requests_per_connection = u32v(n);
        }
        // As istiod: the stream limit is an HTTP/2 option, so an HTTP/1.1 cluster ignores it.
        if let Some(n) = max_streams
            && let Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(h2)),
            })) = &mut o.upstream_protocol_options
        {
            h2.max_concurrent_streams = u32v(n);
        }
    }
    if http.and_then(|h| h.use_client_protocol) == Some(true) {
        let o = options.get_or_insert_with(HttpProtocolOptions::default);
        o.upstream_protocol_options = Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(
            UseDownstreamHttpConfig {
                http_protocol_options: Some(Http1ProtocolOptions::default()),
                http2_protocol_options: Some(Http2ProtocolOptions::default()),
                ..UseDownstreamHttpConfig::default()
            },
        ));
    }
    if let Some(mut options) = options {
        // Envoy requires a protocol choice: HTTP/1.1 unless one was made above.
        options.upstream_protocol_options.get_or_insert_with(|| {
            UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::HttpProtocolOptions(
                    Http1ProtocolOptions::default(),
                )),
            })
        });
        c.typed_extension_protocol_options.insert(
            HTTP_OPTIONS_KEY.to_string(),
            super::any(super::inbound::HTTP_PROTOCOL_OPTIONS, &options),
        );
    }
}

/// The TCP settings of `dr`'s top-level policy: istiod reads a TCP proxy's timeouts there only
/// (port-level and subset settings reach the clusters, not the proxy).
fn top_level_tcp(dr: Option<&DestinationRule>) -> Option<&meshpilot_model::TcpSettings> {
    dr?.traffic_policy
        .as_ref()?
        .connection_pool
        .as_ref()?
        .tcp
        .as_ref()
}

/// The idle timeout of the TCP proxies that send to `dr`'s host: `connectionPool.tcp.idleTimeout`
/// ([`top_level_tcp`]). `None` keeps Envoy's default of one hour.
pub(super) fn tcp_proxy_idle_timeout(dr: Option<&DestinationRule>) -> Option<std::time::Duration> {
    top_level_tcp(dr)?
        .idle_timeout
        .as_deref()
        .and_then(parse_duration)
}

/// How long the TCP proxies that send to `dr`'s host keep a connection at most, as istiod sets
/// their `max_downstream_connection_duration`: `connectionPool.tcp.maxConnectionDuration`
/// ([`top_level_tcp`]). `None`: no limit.
pub(super) fn tcp_proxy_max_connection_duration(
    dr: Option<&DestinationRule>,
) -> Option<std::time::Duration> {
    top_level_tcp(dr)?
        .max_connection_duration
        .as_deref()
        .and_then(parse_duration)
}

const PROXY_PROTOCOL_SOCKET: &str = "envoy.transport_sockets.upstream_proxy_protocol";
const PROXY_PROTOCOL_TRANSPORT: &str = "type.googleapis.com/envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport";

/// istiod's `applyUpstreamProxyProtocol`, after the cluster's TLS is chosen: every transport
/// socket the cluster has (its TLS, or each auto-mTLS match) is wrapped so that the PROXY
/// header goes first, in the clear, before any TLS handshake; a cluster without one wraps the
/// plain socket.
pub(super) fn wrap_proxy_protocol(c: &mut Cluster, policy: &ClusterPolicy<'_>) {
    let Some(pp) = policy.proxy_protocol else {
        return;
    };
    let version = match pp.version {
        Some(ProxyProtocolVersion::V2) => proxy_protocol_config::Version::V2,
        Some(ProxyProtocolVersion::V1) | None => proxy_protocol_config::Version::V1,
    };
    let wrap = |inner: TransportSocket| TransportSocket {
        name: PROXY_PROTOCOL_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(super::any(
            PROXY_PROTOCOL_TRANSPORT,
            &ProxyProtocolUpstreamTransport {
                config: Some(ProxyProtocolConfig {
                    version: version as i32,
                    ..ProxyProtocolConfig::default()
                }),
                transport_socket: Some(inner),
                ..ProxyProtocolUpstreamTransport::default()
            },
        ))),
    };
    if c.transport_socket_matches.is_empty() {
        let inner = c
            .transport_socket
            .take()
            .unwrap_or_else(super::tls::raw_buffer);
        c.transport_socket = Some(wrap(inner));
        return;
    }
    if let Some(inner) = c.transport_socket.take() {
        c.transport_socket = Some(wrap(inner));
    }
    for m in &mut c.transport_socket_matches {
        if let Some(inner) = m.transport_socket.take() {
            m.transport_socket = Some(wrap(inner));
        }
    }
}

/// The tunnel of a TCP proxy to `dr`'s host, as istiod's `tunnelingconfig.Apply`: the
/// `subset`'s own tunnel when the connection goes to one subset, else the top-level one (with
/// no fallback from a subset to the top level). The `host:port` to ask for and whether to POST.
pub(super) fn tcp_proxy_tunnel(
    dr: Option<&DestinationRule>,
    subset: Option<&str>,
) -> Option<(String, bool)> {
    let dr = dr?;
    let policy = match subset {
        Some(name) => dr
            .subsets
            .iter()
            .find(|s| s.name == name)?
            .traffic_policy
            .as_ref()?,
        None => dr.traffic_policy.as_deref()?,
    };
    let t = policy
        .tunnel
        .as_ref()
        .filter(|t| !t.target_host.is_empty())?;
    let host = match t.target_host.parse::<std::net::Ipv6Addr>() {
        Ok(_) => format!("[{}]:{}", t.target_host, t.target_port),
        Err(_) => format!("{}:{}", t.target_host, t.target_port),
    };
    Some((host, t.protocol.as_deref() == Some("POST")))
}

fn is_original_dst(c: &Cluster) -> bool {
    c.cluster_discovery_type
        == Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        ))
}

/// istiod's `applyLoadBalancer`: LEAST_REQUEST unless the rule says otherwise; PASSTHROUGH
/// makes the cluster an original-destination one; a consistent hash makes it RING_HASH (the
/// default, ring of at least 1024) or MAGLEV. An original-destination cluster keeps Envoy's
/// only policy for it.
fn load_balancer(c: &mut Cluster, lb: Option<&LoadBalancerSettings>) {
    if is_original_dst(c) {
        c.lb_policy = LbPolicy::ClusterProvided as i32;
        return;
    }
    let slow_start = lb.and_then(slow_start);
    match lb.and_then(|l| l.simple) {
        Some(SimpleLb::Random) => c.lb_policy = LbPolicy::Random as i32,
        Some(SimpleLb::RoundRobin) => {
            c.lb_policy = LbPolicy::RoundRobin as i32;
            if let Some(s) = slow_start {
                c.lb_config = Some(LbConfig::RoundRobinLbConfig(RoundRobinLbConfig {
                    slow_start_config: Some(s),
                }));
            }
        }
        Some(SimpleLb::Passthrough) => {
            c.lb_policy = LbPolicy::ClusterProvided as i32;
            c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32,
            ));
            c.eds_cluster_config = None;
            c.load_assignment = None;
        }
        Some(SimpleLb::LeastConn | SimpleLb::LeastRequest | SimpleLb::Unspecified) | None => {
            c.lb_policy = LbPolicy::LeastRequest as i32;
            if let Some(s) = slow_start {
                c.lb_config = Some(LbConfig::LeastRequestLbConfig(LeastRequestLbConfig {
                    slow_start_config: Some(s),
                    ..LeastRequestLbConfig::default()
                }));
            }
        }
    }
    let Some(ch) = lb.and_then(|l| l.consistent_hash.as_ref()) else {
        return;
    };
    if let Some(m) = &ch.maglev {
        c.lb_policy = LbPolicy::Maglev as i32;
        c.lb_config = m.table_size.filter(|n| *n > 0).map(|value| {
            LbConfig::MaglevLbConfig(MaglevLbConfig {
                table_size: Some(UInt64Value { value }),
            })
        });
    } else {
        c.lb_policy = LbPolicy::RingHash as i32;
        let size = match &ch.ring_hash {
            Some(r) => r.minimum_ring_size.filter(|n| *n > 0),
            // The deprecated field, with Envoy's default when it is absent, as istiod writes it.
            None => Some(ch.minimum_ring_size.filter(|n| *n > 0).unwrap_or(1024)),
        };
        c.lb_config = Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
            minimum_ring_size: size.map(|value| UInt64Value { value }),
            ..RingHashLbConfig::default()
        }));
    }
}

/// Slow start from `warmup` (aggression 1 and 10% minimum weight unless given), else from the
/// older `warmupDurationSecs`.
fn slow_start(lb: &LoadBalancerSettings) -> Option<SlowStartConfig> {
    if let Some(w) = &lb.warmup {
        return Some(SlowStartConfig {
            slow_start_window: dur(w.duration.as_deref()),
            aggression: Some(RuntimeDouble {
                default_value: w.aggression.unwrap_or(1.0),
                runtime_key: String::new(),
            }),
            min_weight_percent: Some(Percent {
                value: w.minimum_percent.unwrap_or(10.0),
            }),
        });
    }
    let window = dur(lb.warmup_duration_secs.as_deref())?;
    Some(SlowStartConfig {
        slow_start_window: Some(window),
        ..SlowStartConfig::default()
    })
}

/// istiod's `applyOutlierDetection`: success-rate ejection off; each consecutive-error count
/// enforced at 100% (0 when the count is 0); local-origin errors apart only when asked; the
/// panic threshold is `minHealthPercent` (0 unless set, so a mostly ejected service still
/// sends only to its healthy endpoints).
fn outlier_detection(c: &mut Cluster, od: &OutlierDetection) {
    let enforcing = |n: u32| u32v(if n > 0 { 100 } else { 0 });
    let mut out = EnvoyOutlierDetection {
        enforcing_success_rate: u32v(0),
        interval: dur(od.interval.as_deref()),
        base_ejection_time: dur(od.base_ejection_time.as_deref()),
        max_ejection_percent: od.max_ejection_percent.filter(|n| *n > 0).and_then(u32v),
        ..EnvoyOutlierDetection::default()
    };
    if let Some(n) = od.consecutive_5xx_errors {
        out.consecutive_5xx = u32v(n);
        out.enforcing_consecutive_5xx = enforcing(n);
    }
    if let Some(n) = od.consecutive_gateway_errors {
        out.consecutive_gateway_failure = u32v(n);
        out.enforcing_consecutive_gateway_failure = enforcing(n);
    }
    if od.split_external_local_origin_errors == Some(true) {
        out.split_external_local_origin_errors = true;
        if let Some(n) = od.consecutive_local_origin_failures.filter(|n| *n > 0) {
            out.consecutive_local_origin_failure = u32v(n);
            out.enforcing_consecutive_local_origin_failure = u32v(100);
        }
        out.enforcing_local_origin_success_rate = u32v(0);
    }
    c.outlier_detection = Some(out);
    c.common_lb_config
        .get_or_insert_with(CommonLbConfig::default)
        .healthy_panic_threshold = Some(Percent {
        value: f64::from(od.min_health_percent.unwrap_or(0)),
    });
}

/// The route `hash_policy` a consistent-hash load balancer needs, as istiod writes it: without
/// one, Envoy's ring-hash and Maglev clusters pick a random endpoint per request.
pub(super) fn hash_policy(lb: Option<&LoadBalancerSettings>) -> Option<HashPolicy> {
    let ch = lb?.consistent_hash.as_ref()?;
    let specifier = if let Some(name) = &ch.http_header_name {
        PolicySpecifier::Header(Header {
            header_name: name.clone(),
            ..Header::default()
        })
    } else if let Some(cookie) = &ch.http_cookie {
        PolicySpecifier::Cookie(Cookie {
            name: cookie.name.clone(),
            ttl: dur(cookie.ttl.as_deref()),
            path: cookie.path.clone().unwrap_or_default(),
            attributes: cookie
                .attributes
                .iter()
                .map(|a| CookieAttribute {
                    name: a.name.clone(),
                    value: a.value.clone(),
                })
                .collect(),
        })
    } else if ch.use_source_ip == Some(true) {
        PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true })
    } else if let Some(name) = &ch.http_query_parameter_name {
        PolicySpecifier::QueryParameter(QueryParameter { name: name.clone() })
    } else {
        return None;
    };
    Some(HashPolicy {
        policy_specifier: Some(specifier),
        ..HashPolicy::default()
    })
}

/// The hash policy for routes of clients in namespace `client` to `svc`'s cluster of `port` and
/// `subset` (`None`: the port's own cluster), from the DestinationRule their cluster is
/// compiled with.
pub(super) fn route_hash_policy(
    view: &View,
    client: &str,
    svc: &ServiceInfo,
    port: u16,
    subset: Option<&str>,
) -> Option<HashPolicy> {
    if !view.any_consistent_hash() {
        return None;
    }
    let dr = view.destination_rule_for(svc, client)?;
    let subset = match subset {
        Some(name) => Some(dr.spec.subsets.iter().find(|s| s.name == name)?),
        None => None,
    };
    hash_policy(ClusterPolicy::of(Some(&dr.spec), subset, port).load_balancer)
}

#[cfg(test)]
mod tests;
