//! DestinationRule traffic policies as a user sees them: one real `meshpilot serve`, one real
//! Envoy 1.40 ingress gateway and seven backends serve every check — consistent-hash stickiness
//! by header and by a cookie Envoy sets, ejection of failing endpoints by outlier detection
//! (with istiod's panic threshold of 0), and the connection-pool limits and load-balancer
//! policies Envoy accepted (its config dump, nothing rejected). The rules are
//! `tests/testdata/dr-policy/rules.yaml`; the golden test compiles the same file.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use support::{Envoy, Meshpilot, dump};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(10);
const HOST: &str = "dr.example.com";

/// A backend that answers every request `503` (keep-alive, one write per reply), for outlier
/// detection to eject. Its threads end with the test process.
fn start_failing(ip: IpAddr, port: u16) {
    let listener = std::net::TcpListener::bind((ip, port))
        .unwrap_or_else(|e| panic!("failing backend: bind {ip}:{port}: {e}"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let _ = stream.set_nodelay(true);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut chunk) else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    // Requests through Envoy here carry no body: one reply per header block.
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let reply =
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nfail";
                        if stream.write_all(reply).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
}

/// The one backend every response in `dist` came from; panics if there were several.
fn only_backend(dist: &std::collections::BTreeMap<String, usize>) -> String {
    assert_eq!(dist.len(), 1, "expected one backend: {dist:?}");
    dist.keys().next().cloned().unwrap_or_default()
}

/// The active cluster `name` in a config dump, as Envoy holds it.
fn cluster<'a>(d: &'a Value, name: &str) -> &'a Value {
    dump::section(d, "ClustersConfigDump")
        .and_then(|s| s["dynamic_active_clusters"].as_array())
        .into_iter()
        .flatten()
        .map(|c| &c["cluster"])
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no active cluster {name}"))
}

async fn start_gateway(server: &Meshpilot) -> (Envoy, SocketAddr) {
    support::ingress_gateway(server, WAIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_rule_policies_through_a_gateway() {
    let _envoy_bin = support::require_envoy!();
    let mut pods = Vec::new();
    let mut backends = Vec::new();
    for (name, app) in [
        ("s1", "sticky"),
        ("s2", "sticky"),
        ("s3", "sticky"),
        ("good", "eject"),
        ("pooled", "pooled"),
    ] {
        let ip = support::loopback_ip();
        backends.push(support::Backend::start(ip, 8080, name));
        pods.push(support::pod_yaml(name, "default", &[("app", app)], ip, &[]));
    }
    for name in ["bad-1", "bad-2"] {
        let ip = support::loopback_ip();
        start_failing(ip, 8080);
        pods.push(support::pod_yaml(
            name,
            "default",
            &[("app", "eject")],
            ip,
            &[],
        ));
    }
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/testdata/dr-policy/rules.yaml"),
    )
    .expect("read the dr-policy fixture");
    let dir = TempDir::new().expect("temp dir");
    support::write_manifests(
        dir.path(),
        &[("rules.yaml", &rules), ("pods.yaml", &pods.join("---\n"))],
    );
    let server = Meshpilot::start(&[dir.path()]).await;
    let (envoy, addr) = start_gateway(&server).await;
    let sticky = "outbound|8080||sticky.default.svc.cluster.local";
    let eject = "outbound|8080||eject.default.svc.cluster.local";
    let d = envoy
        .wait_for_dump("every endpoint of sticky and eject", WAIT, |d| {
            dump::endpoints(d, sticky).len() == 3 && dump::endpoints(d, eject).len() == 3
        })
        .await;

    // What Envoy accepted: nothing rejected, and each policy in the clusters it holds.
    envoy.assert_all_acked().await;
    let plain = cluster(&d, "outbound|8080||plain.default.svc.cluster.local");
    assert_eq!(
        plain["lb_policy"], "LEAST_REQUEST",
        "istiod's default: {plain}"
    );
    let limits = &plain["circuit_breakers"]["thresholds"][0];
    assert_eq!(limits["max_connections"], u32::MAX, "{plain}");
    assert_eq!(limits["max_requests"], u32::MAX, "{plain}");
    let pooled = cluster(&d, "outbound|8080||pooled.default.svc.cluster.local");
    let limits = &pooled["circuit_breakers"]["thresholds"][0];
    for (field, want) in [
        ("max_connections", 7),
        ("max_pending_requests", 11),
        ("max_requests", 13),
        ("max_retries", 19),
    ] {
        assert_eq!(limits[field], want, "{field}: {pooled}");
    }
    assert_eq!(
        limits["retry_budget"]["min_retry_concurrency"], 5,
        "{pooled}"
    );
    assert_eq!(pooled["connect_timeout"], "2s");
    assert_eq!(
        pooled["upstream_connection_options"]["tcp_keepalive"]["keepalive_probes"],
        3
    );
    let http = &pooled["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        ["common_http_protocol_options"];
    assert_eq!(http["idle_timeout"], "30s", "{pooled}");
    assert_eq!(http["max_requests_per_connection"], 17, "{pooled}");
    assert_eq!(http["max_connection_duration"], "3600s", "{pooled}");
    assert_eq!(
        pooled["least_request_lb_config"]["slow_start_config"]["slow_start_window"],
        "30s"
    );
    let od = &pooled["outlier_detection"];
    assert_eq!(od["consecutive_gateway_failure"], 5, "{pooled}");
    assert_eq!(od["enforcing_consecutive_gateway_failure"], 100, "{pooled}");
    assert_eq!(od["consecutive_local_origin_failure"], 4, "{pooled}");
    assert_eq!(od["split_external_local_origin_errors"], true, "{pooled}");
    assert_eq!(
        pooled["common_lb_config"]["healthy_panic_threshold"]["value"],
        25.0
    );
    // The port-level settings of 9090 replace the balancer and the pool as a whole.
    let admin_port = cluster(&d, "outbound|9090||pooled.default.svc.cluster.local");
    // ROUND_ROBIN is Envoy's default, left out of the dump; its warm-up config shows it.
    assert_eq!(admin_port["lb_policy"], Value::Null, "{admin_port}");
    assert_eq!(
        admin_port["round_robin_lb_config"]["slow_start_config"]["slow_start_window"],
        "10s"
    );
    assert_eq!(
        admin_port["circuit_breakers"]["thresholds"][0]["max_connections"],
        u32::MAX
    );
    let sticky_cluster = cluster(&d, sticky);
    assert_eq!(sticky_cluster["lb_policy"], "RING_HASH");
    assert_eq!(
        sticky_cluster["ring_hash_lb_config"]["minimum_ring_size"],
        "64"
    );
    let ring = cluster(&d, "outbound|8080||ring.default.svc.cluster.local");
    assert_eq!(ring["lb_policy"], "MAGLEV", "{ring}");
    let direct = cluster(&d, "outbound|8080||direct.default.svc.cluster.local");
    assert_eq!(direct["type"], "ORIGINAL_DST", "{direct}");

    // Consistent hash by header: one user sticks to one backend over 100 requests, and users
    // spread over the backends.
    let dist = support::distribution(addr, HOST, "/sticky", &[("x-user", "alice")], 100).await;
    let alice = only_backend(&dist);
    assert!(["s1", "s2", "s3"].contains(&alice.as_str()), "{dist:?}");
    let mut seen = BTreeSet::new();
    for i in 0..30 {
        let user = format!("user-{i}");
        let dist = support::distribution(addr, HOST, "/sticky", &[("x-user", &user)], 3).await;
        seen.insert(only_backend(&dist));
    }
    assert!(seen.len() >= 2, "30 users all went to {seen:?}");

    // Consistent hash by cookie (the subset's own balancer): Envoy sets the cookie with the
    // TTL and path the rule gives, and requests carrying it stick.
    let mut conn = support::Conn::connect(addr).await.expect("connect");
    let r = conn.get(HOST, "/cookie", &[]).await.expect("GET /cookie");
    let set_cookie = r.header("set-cookie").unwrap_or_default().to_string();
    assert!(
        set_cookie.starts_with("session=")
            && set_cookie.contains("Max-Age=60")
            && set_cookie.contains("Path=/"),
        "{r:?}"
    );
    let cookie = set_cookie.split(';').next().unwrap_or_default().to_string();
    let dist = support::distribution(addr, HOST, "/cookie", &[("cookie", &cookie)], 50).await;
    only_backend(&dist);

    // Outlier detection: the two endpoints answering 503 are ejected after two errors each,
    // and the good one takes all the traffic. With one endpoint of three healthy, Envoy's own
    // panic threshold (50%) would spread traffic over all three again; istiod's 0 does not.
    let first = support::distribution(addr, HOST, "/eject", &[], 30).await;
    assert!(
        first.contains_key("HTTP 503"),
        "failing endpoints answer: {first:?}"
    );
    let mut last = first;
    for _ in 0..20 {
        last = support::distribution(addr, HOST, "/eject", &[], 60).await;
        if last.keys().all(|k| k == "good") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    support::assert_only(&last, "good");

    // What a merge ignores is said, naming the rule; `localityLbSetting` is served, so not
    // reported.
    let configz = server
        .debug_get("/debug/configz")
        .await
        .map(|r| r.body)
        .unwrap_or_default();
    assert!(
        !configz.contains("spec.trafficPolicy.loadBalancer.localityLbSetting")
            && configz.contains("sticky-b"),
        "the merge is reported, locality balancing is not: {configz}"
    );
    drop(backends);
}
