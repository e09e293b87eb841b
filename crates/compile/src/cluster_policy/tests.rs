//! Unit tests of how a DestinationRule's traffic policy is merged and applied to a cluster.

use super::*;

fn rule(spec: serde_json::Value) -> DestinationRule {
    serde_json::from_value(spec).expect("valid DestinationRule spec")
}

fn built(policy: &ClusterPolicy<'_>, protocol: Option<Protocol>) -> Cluster {
    let mut c = Cluster {
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        ..Cluster::default()
    };
    apply(&mut c, policy, protocol);
    c
}

/// A subset's policy overrides its parent's field by field (the parent's connection pool
/// and outlier detection stay); port-level settings replace the four per-port fields as a
/// whole, so what they leave unset falls back to istiod's defaults, not to the parent.
#[test]
fn subset_and_port_policies_merge_as_istiod_merges_them() {
    let dr = rule(serde_json::json!({
        "host": "reviews",
        "trafficPolicy": {
            "loadBalancer": {"simple": "RANDOM"},
            "connectionPool": {"tcp": {"maxConnections": 7}},
            "outlierDetection": {"consecutive5xxErrors": 3},
            "portLevelSettings": [{"port": {"number": 9090}, "loadBalancer": {"simple": "ROUND_ROBIN"}}]
        },
        "subsets": [{"name": "v1", "trafficPolicy": {"loadBalancer": {"consistentHash": {"useSourceIp": true}}}}]
    }));
    let subset = dr.subsets.first();
    let top = built(
        &ClusterPolicy::of(Some(&dr), None, 8080),
        Some(Protocol::Http),
    );
    assert_eq!(top.lb_policy, LbPolicy::Random as i32);
    let v1 = built(
        &ClusterPolicy::of(Some(&dr), subset, 8080),
        Some(Protocol::Http),
    );
    assert_eq!(v1.lb_policy, LbPolicy::RingHash as i32);
    let max = |c: &Cluster| {
        c.circuit_breakers
            .as_ref()
            .map(|b| b.thresholds[0].max_connections)
    };
    assert_eq!(max(&v1), Some(u32v(7)), "the parent's pool stays");
    assert!(
        v1.outlier_detection.is_some(),
        "the parent's outlier detection stays"
    );
    let port = built(
        &ClusterPolicy::of(Some(&dr), None, 9090),
        Some(Protocol::Http),
    );
    assert_eq!(port.lb_policy, LbPolicy::RoundRobin as i32);
    assert_eq!(
        max(&port),
        Some(u32v(u32::MAX)),
        "no pool on the port: defaults"
    );
    assert!(port.outlier_detection.is_none());
    // A subset on that port: the subset's balancer over the port's settings.
    let v1_port = built(&ClusterPolicy::of(Some(&dr), subset, 9090), None);
    assert_eq!(v1_port.lb_policy, LbPolicy::RingHash as i32);
}

/// Without a rule: LEAST_REQUEST, a 10 s connect timeout and thresholds of 2^32-1, as
/// istiod gives every outbound cluster; an HTTP port upgraded to HTTP/2 only when asked.
#[test]
fn defaults_and_h2_upgrade() {
    let c = built(&ClusterPolicy::default(), Some(Protocol::Http));
    assert_eq!(c.lb_policy, LbPolicy::LeastRequest as i32);
    assert_eq!(c.connect_timeout, Some(duration(DEFAULT_CONNECT_TIMEOUT)));
    let t = &c.circuit_breakers.as_ref().expect("thresholds").thresholds[0];
    assert_eq!((t.max_requests, t.track_remaining), (u32v(u32::MAX), true));
    assert!(c.typed_extension_protocol_options.is_empty());
    let dr = rule(serde_json::json!({
        "host": "h",
        "trafficPolicy": {"connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE"}}}
    }));
    let p = ClusterPolicy::of(Some(&dr), None, 80);
    assert!(
        !built(&p, Some(Protocol::Http))
            .typed_extension_protocol_options
            .is_empty()
    );
    assert!(
        built(&p, Some(Protocol::Tcp))
            .typed_extension_protocol_options
            .is_empty()
    );
}

/// The upstream HTTP options of a built cluster, if it has any.
fn http_options(c: &Cluster) -> Option<HttpProtocolOptions> {
    c.typed_extension_protocol_options
        .get(HTTP_OPTIONS_KEY)
        .map(|a| {
            <HttpProtocolOptions as prost::Message>::decode(a.value.as_slice())
                .expect("HTTP options")
        })
}

/// `http.maxConcurrentStreams` set alone limits the streams of an HTTP/2 cluster (as istiod,
/// whenever it is positive), and an HTTP/1.1 cluster ignores it.
#[test]
fn max_concurrent_streams_alone_limits_http2_clusters() {
    let dr = rule(serde_json::json!({
        "host": "grpc",
        "trafficPolicy": {"connectionPool": {"http": {"maxConcurrentStreams": 17}}}
    }));
    let p = ClusterPolicy::of(Some(&dr), None, 9000);
    let streams = |c: &Cluster| match http_options(c).and_then(|o| o.upstream_protocol_options) {
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(h2)),
        })) => Some(h2.max_concurrent_streams),
        _ => None,
    };
    assert_eq!(streams(&built(&p, Some(Protocol::Grpc))), Some(u32v(17)));
    assert_eq!(streams(&built(&p, Some(Protocol::Http2))), Some(u32v(17)));
    assert_eq!(streams(&built(&p, Some(Protocol::Http))), None);
}

/// A port whose port-level settings match takes load balancer, connection pool, outlier
/// detection and TLS from them, and neither `proxyProtocol` nor `retryBudget` from the
/// policy that holds them (istiod's `shadowCopyPortTrafficPolicy`); other ports keep both. A
/// subset's port-level settings likewise drop the subset's own `proxyProtocol`, leaving the
/// top level's.
#[test]
fn port_level_settings_drop_proxy_protocol_and_retry_budget() {
    let dr = rule(serde_json::json!({
        "host": "db",
        "trafficPolicy": {
            "proxyProtocol": {"version": "V1"},
            "retryBudget": {"minRetryConcurrency": 5},
            "portLevelSettings": [{"port": {"number": 9090}, "loadBalancer": {"simple": "RANDOM"}}]
        },
        "subsets": [{"name": "v2", "trafficPolicy": {
            "proxyProtocol": {"version": "V2"},
            "portLevelSettings": [{"port": {"number": 8080}, "loadBalancer": {"simple": "ROUND_ROBIN"}}]
        }}]
    }));
    let version = |p: &ClusterPolicy<'_>| p.proxy_protocol.map(|pp| pp.version);
    let other = ClusterPolicy::of(Some(&dr), None, 8080);
    assert_eq!(version(&other), Some(Some(ProxyProtocolVersion::V1)));
    assert!(other.retry_budget.is_some());
    let port = ClusterPolicy::of(Some(&dr), None, 9090);
    assert_eq!(version(&port), None);
    assert!(port.retry_budget.is_none());
    let c = built(&port, Some(Protocol::Tcp));
    assert_eq!(c.lb_policy, LbPolicy::Random as i32);
    let t = &c.circuit_breakers.as_ref().expect("thresholds").thresholds[0];
    assert!(t.retry_budget.is_none(), "no retry budget on the port");
    let subset = dr.subsets.first();
    let v2_port = ClusterPolicy::of(Some(&dr), subset, 8080);
    assert_eq!(version(&v2_port), Some(Some(ProxyProtocolVersion::V1)));
    assert!(v2_port.retry_budget.is_some());
    let v2_other = ClusterPolicy::of(Some(&dr), subset, 7070);
    assert_eq!(version(&v2_other), Some(Some(ProxyProtocolVersion::V2)));
}

/// `tcp.idleTimeout` closes idle upstream HTTP connections when `http.idleTimeout` is
/// unset (the HTTP one wins when both are), and times out the TCP proxies to the host from
/// the top-level policy only.
#[test]
fn tcp_idle_timeout_reaches_clusters_and_tcp_proxies() {
    let idle = |c: &Cluster| {
        c.typed_extension_protocol_options
            .get(HTTP_OPTIONS_KEY)
            .map(|a| {
                <HttpProtocolOptions as prost::Message>::decode(a.value.as_slice())
                    .expect("HTTP options")
            })
            .and_then(|o| o.common_http_protocol_options)
            .and_then(|c| c.idle_timeout)
    };
    let dr = rule(serde_json::json!({
        "host": "db",
        "trafficPolicy": {
            "connectionPool": {"tcp": {"idleTimeout": "3s"}},
            "portLevelSettings": [{"port": {"number": 80}, "connectionPool": {
                "tcp": {"idleTimeout": "9s"}, "http": {"idleTimeout": "4s"}}}]
        }
    }));
    let tcp = built(
        &ClusterPolicy::of(Some(&dr), None, 5432),
        Some(Protocol::Tcp),
    );
    assert_eq!(idle(&tcp), dur(Some("3s")));
    let http = built(
        &ClusterPolicy::of(Some(&dr), None, 80),
        Some(Protocol::Http),
    );
    assert_eq!(idle(&http), dur(Some("4s")), "the HTTP idle timeout wins");
    assert_eq!(
        tcp_proxy_idle_timeout(Some(&dr)),
        Some(std::time::Duration::from_secs(3))
    );
    assert_eq!(tcp_proxy_max_connection_duration(Some(&dr)), None);
    let lasting = rule(serde_json::json!({"host": "db", "trafficPolicy": {
        "connectionPool": {"tcp": {"maxConnectionDuration": "1h"}}}}));
    assert_eq!(
        tcp_proxy_max_connection_duration(Some(&lasting)),
        Some(std::time::Duration::from_secs(3600))
    );
    let no_tcp = rule(serde_json::json!({"host": "db", "trafficPolicy": {}}));
    assert_eq!(tcp_proxy_idle_timeout(Some(&no_tcp)), None);
    assert_eq!(tcp_proxy_idle_timeout(None), None);
}

/// A tunnel is the subset's when the connection goes to one subset, else the top level's.
#[test]
fn tunnels_come_from_the_subset_or_the_top_level() {
    let dr = rule(serde_json::json!({
        "host": "egress",
        "trafficPolicy": {"tunnel": {"targetHost": "10.0.0.1", "targetPort": 443}},
        "subsets": [
            {"name": "post", "trafficPolicy": {"tunnel": {"protocol": "POST", "targetHost": "::1", "targetPort": 80}}},
            {"name": "none"}
        ]
    }));
    assert_eq!(
        tcp_proxy_tunnel(Some(&dr), None),
        Some(("10.0.0.1:443".to_string(), false))
    );
    assert_eq!(
        tcp_proxy_tunnel(Some(&dr), Some("post")),
        Some(("[::1]:80".to_string(), true))
    );
    assert_eq!(tcp_proxy_tunnel(Some(&dr), Some("none")), None);
    assert_eq!(tcp_proxy_tunnel(None, None), None);
}

/// `proxyProtocol` wraps whatever socket the cluster has (the plain one when none, each
/// auto-mTLS match otherwise) in Envoy's upstream PROXY protocol socket, V1 by default.
#[test]
fn proxy_protocol_wraps_every_transport_socket() {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch;
    let unwrap = |t: Option<&TransportSocket>| {
        let t = t.expect("a transport socket");
        assert_eq!(t.name, PROXY_PROTOCOL_SOCKET);
        let Some(transport_socket::ConfigType::TypedConfig(any)) = &t.config_type else {
            panic!("typed config");
        };
        let pp = <ProxyProtocolUpstreamTransport as prost::Message>::decode(any.value.as_slice())
            .expect("upstream proxy protocol transport");
        let version = pp.config.expect("config").version;
        (version, pp.transport_socket.expect("inner socket").name)
    };
    let dr = rule(serde_json::json!({
        "host": "db",
        "trafficPolicy": {"proxyProtocol": {}},
        "subsets": [{"name": "v2", "trafficPolicy": {"proxyProtocol": {"version": "V2"}}}]
    }));
    let mut plain = built(&ClusterPolicy::of(Some(&dr), None, 80), Some(Protocol::Tcp));
    wrap_proxy_protocol(&mut plain, &ClusterPolicy::of(Some(&dr), None, 80));
    assert_eq!(
        unwrap(plain.transport_socket.as_ref()),
        (
            proxy_protocol_config::Version::V1 as i32,
            super::super::tls::raw_buffer().name
        )
    );
    let v2 = ClusterPolicy::of(Some(&dr), dr.subsets.first(), 80);
    let mut matched = built(&v2, Some(Protocol::Tcp));
    matched.transport_socket_matches = ["tlsMode-istio", "tlsMode-disabled"]
        .map(|name| TransportSocketMatch {
            name: name.to_string(),
            transport_socket: Some(TransportSocket {
                name: name.to_string(),
                ..TransportSocket::default()
            }),
            ..TransportSocketMatch::default()
        })
        .to_vec();
    wrap_proxy_protocol(&mut matched, &v2);
    assert!(matched.transport_socket.is_none());
    for m in &matched.transport_socket_matches {
        assert_eq!(
            unwrap(m.transport_socket.as_ref()),
            (proxy_protocol_config::Version::V2 as i32, m.name.clone())
        );
    }
    let mut none = built(&ClusterPolicy::default(), None);
    wrap_proxy_protocol(&mut none, &ClusterPolicy::default());
    assert!(none.transport_socket.is_none());
}

/// Each consistent-hash key becomes the route hash policy istiod writes.
#[test]
fn hash_keys_become_route_hash_policies() {
    let lb = |ch: serde_json::Value| -> LoadBalancerSettings {
        serde_json::from_value(serde_json::json!({"consistentHash": ch})).expect("valid")
    };
    let spec = |ch| hash_policy(Some(&lb(ch))).and_then(|h| h.policy_specifier);
    assert!(matches!(
        spec(serde_json::json!({"httpHeaderName": "x-user"})),
        Some(PolicySpecifier::Header(h)) if h.header_name == "x-user"
    ));
    assert!(matches!(
        spec(serde_json::json!({"httpCookie": {"name": "s", "ttl": "10s", "path": "/a"}})),
        Some(PolicySpecifier::Cookie(c)) if c.name == "s" && c.path == "/a" && c.ttl.is_some()
    ));
    assert!(matches!(
        spec(serde_json::json!({"useSourceIp": true})),
        Some(PolicySpecifier::ConnectionProperties(p)) if p.source_ip
    ));
    assert!(matches!(
        spec(serde_json::json!({"httpQueryParameterName": "u"})),
        Some(PolicySpecifier::QueryParameter(q)) if q.name == "u"
    ));
    assert!(hash_policy(Some(&LoadBalancerSettings::default())).is_none());
}
