//! Locality ordering per client namespace: a client takes the priorities of the rule its own
//! namespace sees for a host, whether that rule is the common one or its namespace's own.

use super::*;
use meshpilot_model::Body;

/// `svc` in `shop` with one pod in `r-a/z-1` and one in `r-b/z-1`.
fn two_regions() -> Vec<Object> {
    let pod = |name: &str, ip: &str, locality: &str| {
        let mut pod = mk_pod("shop", name, ip, &[("app", "svc")]);
        if let Body::Pod(w) = &mut pod.body {
            w.locality = Some(locality.to_string());
        }
        pod
    };
    vec![
        mk_service("shop", "svc", &[80]),
        pod("a", "10.0.0.1", "r-a/z-1"),
        pod("b", "10.0.0.2", "r-b/z-1"),
    ]
}

/// A rule for `svc` in `ns`, seen by that namespace only; with outlier detection (which turns
/// locality failover on) when `failover`.
fn rule(ns: &str, failover: bool) -> Object {
    let policy = if failover {
        json!({"outlierDetection": {"consecutive5xxErrors": 1}})
    } else {
        json!({"connectionPool": {"tcp": {"maxConnections": 10}}})
    };
    mk_istio(
        "DestinationRule",
        ns,
        "svc",
        json!({"host": "svc.shop.svc.cluster.local", "exportTo": ["."], "trafficPolicy": policy}),
    )
}

/// The (address, priority) of each endpoint of `svc`'s cluster, as a sidecar in `ns` in
/// `r-b/z-1` gets them.
fn priorities(objects: Vec<Object>, ns: &str) -> Vec<(String, u64)> {
    let mut index = Index::new();
    index.reset(meshpilot_model::SourceId::Files, objects);
    let view = index.build_view("cluster.local", None);
    let shared = compile_shared(&view).expect("consistent shared set");
    let mut client = proxy(
        &format!("sidecar~127.0.0.20~client.{ns}~{ns}.svc.cluster.local"),
        &[("app", "client")],
        true,
    );
    client.locality = "r-b/z-1".to_string();
    let out = compile_class(&view, &client);
    let endpoints =
        locality_key(&shared, &client, &out).map(|key| locality_endpoints(&shared, &key));
    let snap = assemble_with_endpoints(client.class_key(), &shared, &out, endpoints)
        .expect("consistent snapshot");
    let j = snap.to_json(&XdsType::ALL).expect("renders");
    let mut got: Vec<(String, u64)> =
        j["eds"]["outbound|80||svc.shop.svc.cluster.local"]["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|group| {
                let priority = group["priority"].as_u64().unwrap_or(0);
                group["lb_endpoints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(move |e| {
                        let address = e["endpoint"]["address"]["socket_address"]["address"]
                            .as_str()
                            .unwrap_or("")
                            .to_string();
                        (address, priority)
                    })
            })
            .collect();
    got.sort();
    got
}

#[test]
fn a_namespaces_own_rule_orders_its_clients_endpoints_by_locality() {
    let mut objects = two_regions();
    objects.push(rule("near", true));
    // The namespace with the rule: its own region first.
    assert_eq!(
        priorities(objects.clone(), "near"),
        [("10.0.0.1".to_string(), 1), ("10.0.0.2".to_string(), 0)]
    );
    // Another namespace sees no rule: one priority.
    assert_eq!(
        priorities(objects, "far"),
        [("10.0.0.1".to_string(), 0), ("10.0.0.2".to_string(), 0)]
    );
}

#[test]
fn a_namespaces_own_rule_without_failover_keeps_its_clients_unordered() {
    let mut objects = two_regions();
    objects.push(exported(rule("shop", true), &["*"]));
    objects.push(rule("plain", false));
    // Most namespaces see the service's rule, with failover.
    assert_eq!(
        priorities(objects.clone(), "other"),
        [("10.0.0.1".to_string(), 1), ("10.0.0.2".to_string(), 0)]
    );
    // The namespace with a rule of its own without outlier detection: no failover.
    assert_eq!(
        priorities(objects, "plain"),
        [("10.0.0.1".to_string(), 0), ("10.0.0.2".to_string(), 0)]
    );
}

fn exported(mut o: Object, to: &[&str]) -> Object {
    if let Body::DestinationRule(d) = &mut o.body {
        d.export_to = to.iter().map(|s| s.to_string()).collect();
    }
    o
}
