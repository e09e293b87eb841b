//! Locality-aware load balancing (DestinationRule `localityLbSetting`) as a user sees it: one
//! real `meshpilot serve`, one real Envoy 1.40 gateway whose bootstrap puts it in
//! `region-a/zone-1`, and four backends on loopback addresses whose Pods carry their locality
//! in the `istio-locality` label (a Pod in files has no Node). With outlier detection, every
//! request stays in the client's zone, and fails over zone by zone, then region, as the
//! endpoints there go; `distribute` splits requests over localities by its weights; Envoy's
//! config dump shows the localities and priorities it got.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{Envoy, Meshpilot, dump};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(10);
const HOST: &str = "loc.example.com";
const FAILOVER: &str = "outbound|8080||failover.default.svc.cluster.local";
const SPREAD: &str = "outbound|8080||spread.default.svc.cluster.local";

const RULES: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: loc-gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: loc, namespace: default}
spec:
  hosts: [loc.example.com]
  gateways: [istio-system/loc-gw]
  http:
  - match: [{uri: {prefix: /failover}}]
    route: [{destination: {host: failover}}]
  - match: [{uri: {prefix: /spread}}]
    route: [{destination: {host: spread}}]
---
apiVersion: v1
kind: Service
metadata: {name: failover, namespace: default}
spec:
  ports: [{port: 8080, name: http}]
  selector: {app: loc}
---
apiVersion: v1
kind: Service
metadata: {name: spread, namespace: default}
spec:
  ports: [{port: 8080, name: http}]
  selector: {app: loc}
---
# Outlier detection alone turns on istiod's default failover (mesh localityLbSetting on).
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: failover, namespace: default}
spec:
  host: failover
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 5, interval: 1s, baseEjectionTime: 30s}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: spread, namespace: default}
spec:
  host: spread
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute:
        - from: region-a/zone-1/*
          to: {"region-a/zone-1/*": 75, "region-b/*": 25}
"#;

/// The backends: name and locality (as the `istio-locality` label writes it).
const BACKENDS: [(&str, &str); 4] = [
    ("near-1", "region-a.zone-1"),
    ("near-2", "region-a.zone-1"),
    ("mid", "region-a.zone-2"),
    ("far", "region-b.zone-1"),
];

/// The Pods of the backends named in `keep`.
fn pods(ips: &BTreeMap<&str, IpAddr>, keep: &[&str]) -> String {
    BACKENDS
        .iter()
        .filter(|(name, _)| keep.contains(name))
        .map(|(name, locality)| {
            support::pod_yaml(
                name,
                "default",
                &[("app", "loc"), ("istio-locality", locality)],
                ips[name],
                &[],
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// An ingress gateway like `support::ingress_gateway`, whose node says it runs in
/// `region-a/zone-1` (`meshpilot bootstrap --locality`).
async fn gateway_in_zone_1(server: &Meshpilot) -> (Envoy, SocketAddr) {
    let ip = support::loopback_ip();
    let admin = support::admin_addr();
    let mut args = support::bootstrap_args(
        &support::node_id("router", ip, "ingress", "istio-system"),
        server.xds(),
        admin,
    );
    args.labels = vec![("istio".to_string(), "ingressgateway".to_string())];
    args.locality = Some("region-a/zone-1".to_string());
    let envoy = Envoy::start(support::render_bootstrap(&args), admin).await;
    envoy.wait_for_listener(&format!("{ip}_80"), WAIT).await;
    (envoy, SocketAddr::new(ip, 80))
}

/// Each locality group of `cluster`'s assignment in the dump: (`region/zone`, priority,
/// locality weight, endpoint count).
fn groups(d: &Value, cluster: &str) -> Vec<(String, u64, u64, usize)> {
    let s = dump::section(d, "EndpointsConfigDump");
    let mut out: Vec<_> = s
        .and_then(|s| s["dynamic_endpoint_configs"].as_array())
        .into_iter()
        .flatten()
        .map(|e| &e["endpoint_config"])
        .filter(|cla| cla["cluster_name"] == cluster)
        .flat_map(|cla| cla["endpoints"].as_array().into_iter().flatten())
        .map(|g| {
            let l = &g["locality"];
            (
                format!(
                    "{}/{}",
                    l["region"].as_str().unwrap_or(""),
                    l["zone"].as_str().unwrap_or("")
                ),
                g["priority"].as_u64().unwrap_or(0),
                g["load_balancing_weight"].as_u64().unwrap_or(0),
                g["lb_endpoints"].as_array().map_or(0, Vec::len),
            )
        })
        .collect();
    out.sort();
    out
}

/// Requests to `path` until every answer comes from one of `want` (the EDS update may take a
/// moment to reach Envoy); the last distribution.
async fn until_only(addr: SocketAddr, path: &str, want: &[&str]) -> BTreeMap<String, usize> {
    let mut last = BTreeMap::new();
    for _ in 0..50 {
        last = support::distribution(addr, HOST, path, &[], 40).await;
        if last.keys().all(|k| want.contains(&k.as_str())) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expected only {want:?} at {path}; distribution: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locality_failover_and_distribute_through_a_gateway() {
    let _envoy_bin = support::require_envoy!();
    let mut ips = BTreeMap::new();
    let mut backends = Vec::new();
    for (name, _) in BACKENDS {
        let ip = support::loopback_ip();
        backends.push(support::Backend::start(ip, 8080, name));
        ips.insert(name, ip);
    }
    let all = ["near-1", "near-2", "mid", "far"];
    let dir = TempDir::new().expect("temp dir");
    let write_pods = |dir: &Path, keep: &[&str]| {
        support::write_manifests(dir, &[("pods.yaml", &pods(&ips, keep))]);
    };
    support::write_manifests(dir.path(), &[("rules.yaml", RULES)]);
    write_pods(dir.path(), &all);
    let server = Meshpilot::start(&[dir.path()]).await;
    let (envoy, addr) = gateway_in_zone_1(&server).await;
    let d = envoy
        .wait_for_dump("every endpoint of both clusters", WAIT, |d| {
            dump::endpoints(d, FAILOVER).len() == 4 && dump::endpoints(d, SPREAD).len() == 3
        })
        .await;
    envoy.assert_all_acked().await;

    // What Envoy holds: one group per locality; failover priorities by what each shares with
    // the gateway's zone; `distribute` weights (the unnamed zone-2 gets no endpoints, and
    // Envoy keeps no empty group).
    assert_eq!(
        groups(&d, FAILOVER),
        [
            ("region-a/zone-1".to_string(), 0, 2, 2),
            ("region-a/zone-2".to_string(), 1, 1, 1),
            ("region-b/zone-1".to_string(), 2, 1, 1),
        ],
        "failover assignment"
    );
    assert_eq!(
        groups(&d, SPREAD),
        [
            ("region-a/zone-1".to_string(), 0, 75, 2),
            ("region-b/zone-1".to_string(), 0, 25, 1),
        ],
        "distribute assignment"
    );
    let spread = dump::section(&d, "ClustersConfigDump")
        .and_then(|s| s["dynamic_active_clusters"].as_array())
        .into_iter()
        .flatten()
        .map(|c| &c["cluster"])
        .find(|c| c["name"] == SPREAD)
        .expect("spread cluster");
    assert!(
        spread["common_lb_config"]["locality_weighted_lb_config"].is_object(),
        "distribute balances by locality weight: {spread}"
    );

    // `distribute`: 75 % to zone 1, 25 % to region b, nothing to zone 2.
    let dist = support::distribution(addr, HOST, "/spread", &[], 200).await;
    let mut by_zone: BTreeMap<String, usize> = BTreeMap::new();
    for (name, n) in &dist {
        let zone = if name.starts_with("near") {
            "zone-1"
        } else {
            name
        };
        *by_zone.entry(zone.to_string()).or_default() += n;
    }
    assert!(!by_zone.contains_key("mid"), "{dist:?}");
    support::assert_share(&by_zone, "zone-1", 75.0);
    support::assert_share(&by_zone, "far", 25.0);

    // Failover: all to the gateway's zone while it has endpoints, then the same region's
    // other zone, then the other region.
    until_only(addr, "/failover", &["near-1", "near-2"]).await;
    write_pods(dir.path(), &["mid", "far"]);
    until_only(addr, "/failover", &["mid"]).await;
    write_pods(dir.path(), &["far"]);
    until_only(addr, "/failover", &["far"]).await;
    // And back once the zone's endpoints return.
    write_pods(dir.path(), &all);
    until_only(addr, "/failover", &["near-1", "near-2"]).await;
    drop(backends);
}
