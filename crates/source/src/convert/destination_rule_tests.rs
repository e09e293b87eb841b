//! Tests for DestinationRule traffic policies: what istiod's validation refuses names the field
//! and says why; what it accepts converts with every field kept.

use meshpilot_model::{Body, H2UpgradePolicy};

use super::tests::{assert_error, error, one};

fn dr(policy: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: d, namespace: prod}}\nspec: {{host: h, trafficPolicy: {policy}}}\n"
    )
}

/// Each refused traffic-policy field is named, at the top level, in port-level settings and in
/// subsets.
#[test]
fn traffic_policy_errors_name_the_field() {
    let cases: [(&str, &str, &str); 19] = [
        (
            "{loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}}",
            "spec.trafficPolicy.loadBalancer.consistentHash",
            "alternatives",
        ),
        (
            "{loadBalancer: {consistentHash: {}}}",
            "spec.trafficPolicy.loadBalancer.consistentHash",
            "exactly one hash key",
        ),
        (
            "{loadBalancer: {consistentHash: {httpHeaderName: x, useSourceIp: true}}}",
            "spec.trafficPolicy.loadBalancer.consistentHash",
            "exactly one hash key",
        ),
        (
            "{loadBalancer: {consistentHash: {httpCookie: {ttl: 1s}}}}",
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
            "needs a name",
        ),
        (
            "{loadBalancer: {consistentHash: {httpCookie: {name: s, ttl: soon}}}}",
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.ttl",
            "invalid duration",
        ),
        (
            "{loadBalancer: {consistentHash: {useSourceIp: true, ringHash: {}, maglev: {}}}}",
            "spec.trafficPolicy.loadBalancer.consistentHash",
            "`ringHash` and `maglev`",
        ),
        (
            "{loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 8, maglev: {tableSize: 7}}}}",
            "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize",
            "deprecated",
        ),
        (
            "{loadBalancer: {simple: RANDOM, warmupDurationSecs: 10s}}",
            "spec.trafficPolicy.loadBalancer.warmup",
            "ROUND_ROBIN and LEAST_REQUEST",
        ),
        (
            "{loadBalancer: {warmup: {duration: 10s, minimumPercent: 101}}}",
            "spec.trafficPolicy.loadBalancer.warmup.minimumPercent",
            "out of range",
        ),
        (
            "{loadBalancer: {warmup: {duration: 10s, aggression: 0.5}}}",
            "spec.trafficPolicy.loadBalancer.warmup.aggression",
            "minimum of 1",
        ),
        (
            "{connectionPool: {tcp: {tcpKeepalive: {time: 500ms}}}}",
            "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time",
            "minimum of 1s",
        ),
        (
            "{connectionPool: {tcp: {maxConnectionDuration: long}}}",
            "spec.trafficPolicy.connectionPool.tcp.maxConnectionDuration",
            "invalid duration",
        ),
        (
            "{outlierDetection: {minHealthPercent: 120}}",
            "spec.trafficPolicy.outlierDetection.minHealthPercent",
            "out of range",
        ),
        (
            "{outlierDetection: {consecutiveLocalOriginFailures: 3}}",
            "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
            "splitExternalLocalOriginErrors",
        ),
        (
            "{portLevelSettings: [{port: {number: 80}}, {port: {number: 80}}]}",
            "spec.trafficPolicy.portLevelSettings[1].port.number",
            "twice",
        ),
        (
            "{portLevelSettings: [{connectionPool: {tcp: {maxConnections: 1}}}]}",
            "spec.trafficPolicy.portLevelSettings[0].port",
            "need a port",
        ),
        (
            "{tunnel: {targetPort: 8443}}",
            "spec.trafficPolicy.tunnel.targetHost",
            "host to tunnel to",
        ),
        (
            "{tunnel: {targetHost: 10.1.2.3, targetPort: 0}}",
            "spec.trafficPolicy.tunnel.targetPort",
            "out of range",
        ),
        (
            "{tunnel: {protocol: PUT, targetHost: 10.1.2.3, targetPort: 8443}}",
            "spec.trafficPolicy.tunnel.protocol",
            "CONNECT or POST",
        ),
    ];
    for (policy, field, says) in cases {
        assert_error(
            &error(&dr(policy)),
            "DestinationRule",
            "prod/d",
            field,
            says,
        );
    }
    let e = error(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d, namespace: prod}\nspec: {host: h, subsets: [{name: v1, trafficPolicy: {portLevelSettings: [{port: {number: 9080}, outlierDetection: {interval: often}}]}}]}\n",
    );
    assert_error(
        &e,
        "DestinationRule",
        "prod/d",
        "spec.subsets[0].trafficPolicy.portLevelSettings[0].outlierDetection.interval",
        "invalid duration",
    );
    let e = error(&dr(
        "{connectionPool: {http: {h2UpgradePolicy: SOMETIMES}}}",
    ));
    assert_eq!(
        e.field.as_deref(),
        Some("spec.trafficPolicy.connectionPool.http.h2UpgradePolicy"),
        "{e:?}"
    );
}

/// A policy using every field istiod accepts converts, and keeps each field.
#[test]
fn traffic_policy_fields_istiod_accepts_convert() {
    let o = one(&dr(
        "{loadBalancer: {consistentHash: {httpCookie: {name: s, path: /, ttl: 60s}, ringHash: {minimumRingSize: 64}}},
          connectionPool: {tcp: {maxConnections: 5, connectTimeout: 2s, tcpKeepalive: {probes: 3, time: 10s, interval: 5s}, maxConnectionDuration: 1h, idleTimeout: 30s},
                           http: {http1MaxPendingRequests: 1, http2MaxRequests: 2, maxRequestsPerConnection: 3, maxRetries: 4, idleTimeout: 5s, h2UpgradePolicy: UPGRADE, useClientProtocol: true, maxConcurrentStreams: 9}},
          outlierDetection: {consecutive5xxErrors: 2, consecutiveGatewayErrors: 1, splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 4, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100, minHealthPercent: 20},
          retryBudget: {percent: {value: 25}, minRetryConcurrency: 5},
          portLevelSettings: [{port: {number: 80}, loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 30s, minimumPercent: 5, aggression: 2}}}]}",
    ));
    let Body::DestinationRule(dr) = &o.body else {
        panic!("{o:?}")
    };
    let p = dr.traffic_policy.as_ref().expect("policy");
    let lb = p.load_balancer.as_ref().expect("lb");
    let ch = lb.consistent_hash.as_ref().expect("hash");
    assert_eq!(
        ch.http_cookie.as_ref().map(|c| c.ttl.as_deref()),
        Some(Some("60s"))
    );
    assert_eq!(
        ch.ring_hash.as_ref().and_then(|r| r.minimum_ring_size),
        Some(64)
    );
    let pool = p.connection_pool.as_ref().expect("pool");
    let tcp = pool.tcp.as_ref().expect("tcp");
    assert_eq!(tcp.tcp_keepalive.as_ref().and_then(|k| k.probes), Some(3));
    assert_eq!(tcp.max_connection_duration.as_deref(), Some("1h"));
    let http = pool.http.as_ref().expect("http");
    assert_eq!(http.h2_upgrade_policy, Some(H2UpgradePolicy::Upgrade));
    assert_eq!(http.use_client_protocol, Some(true));
    let od = p.outlier_detection.as_ref().expect("od");
    assert_eq!(od.min_health_percent, Some(20));
    assert_eq!(od.consecutive_local_origin_failures, Some(4));
    assert_eq!(p.port_level_settings.len(), 1);
    assert_eq!(
        p.retry_budget
            .as_ref()
            .and_then(|b| b.min_retry_concurrency),
        Some(5)
    );
}

/// `localityLbSetting` is refused where istiod's validation refuses it, naming the field; a
/// valid one converts with every part kept.
#[test]
fn locality_lb_setting_errors_name_the_field() {
    let at = "spec.trafficPolicy.loadBalancer.localityLbSetting";
    let cases = [
        (
            "{distribute: [{from: r/z/*, to: {r/z/*: 100}}], failover: [{from: r, to: s}]}",
            at.to_string(),
            "alternatives",
        ),
        (
            "{distribute: [{from: r/z/*, to: {r/z/*: 60, s/*: 30}}]}",
            format!("{at}.distribute[0].to"),
            "add up to 90",
        ),
        (
            "{distribute: [{from: r/z/*, to: {r/z/*: 0, s/*: 100}}]}",
            format!("{at}.distribute[0].to"),
            "out of range",
        ),
        (
            "{distribute: [{from: r/*, to: {r/*: 50, r/z/*: 50}}]}",
            format!("{at}.distribute[0].to"),
            "overlaps",
        ),
        (
            "{distribute: [{from: r/*/z, to: {r: 100}}]}",
            format!("{at}.distribute"),
            "at the end",
        ),
        (
            "{distribute: [{from: r//z, to: {r: 100}}]}",
            format!("{at}.distribute"),
            "no empty part",
        ),
        (
            "{failover: [{from: r, to: r}]}",
            format!("{at}.failover[0]"),
            "different regions",
        ),
        (
            "{failover: [{from: r/z, to: s}]}",
            format!("{at}.failover[0]"),
            "regions only",
        ),
        (
            "{failover: [{from: r, to: s}], failoverPriority: [topology.kubernetes.io/zone]}",
            format!("{at}.failoverPriority[0]"),
            "cannot be used with `failover`",
        ),
    ];
    for (setting, field, says) in cases {
        let policy = format!("{{loadBalancer: {{localityLbSetting: {setting}}}}}");
        assert_error(
            &error(&dr(&policy)),
            "DestinationRule",
            "prod/d",
            &field,
            says,
        );
    }
    let ok = one(&dr(
        "{loadBalancer: {localityLbSetting: {distribute: [{from: r/z/*, to: {r/z/*: 80, s/*: 20}}]}}}",
    ));
    let Body::DestinationRule(rule) = ok.body else {
        panic!("a DestinationRule: {ok:?}");
    };
    let lb = rule.traffic_policy.and_then(|p| p.load_balancer);
    let setting = lb.and_then(|l| l.locality_lb_setting).expect("kept");
    assert_eq!(setting.distribute[0].to["s/*"], 20);
}
