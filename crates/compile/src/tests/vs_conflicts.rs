//! Several VirtualServices for one host: sidecars take the oldest, gateways merge them with
//! catch-all routes last.

use super::*;

/// A VirtualService created at `created` (RFC 3339) sending `prefix` on `host` to `dest`.
fn vs_at(name: &str, created: &str, host: &str, prefix: &str, dest: &str, gw: &[&str]) -> Object {
    let mut o = mk_virtual_service(
        "default",
        name,
        json!({"hosts": [host], "gateways": gw, "http": [
            {"match": [{"uri": {"prefix": prefix}}], "route": [{"destination": {"host": dest}}]}]}),
    );
    o.meta.creation = created.to_string();
    o
}

fn route_clusters(vh: &Value) -> Vec<(String, String)> {
    vh["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|r| {
            (
                r["match"]["prefix"].as_str().unwrap_or("").to_string(),
                r["route"]["cluster"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn sidecars_use_the_oldest_virtual_service_of_a_host() {
    let objects = vec![
        mk_service("default", "web", &[80]),
        mk_service("default", "a", &[80]),
        mk_service("default", "b", &[80]),
        // Named first but created later: it loses to `older`.
        vs_at(
            "first-by-name",
            "2024-02-01T00:00:00Z",
            "web",
            "/",
            "b",
            &[],
        ),
        vs_at("older", "2024-01-01T00:00:00Z", "web", "/", "a", &[]),
    ];
    let (j, _) = compile_json(objects, &sidecar_proxy());
    let hosts = j["rds"]["80"]["virtual_hosts"].as_array().expect("vhosts");
    let web = hosts
        .iter()
        .find(|h| h["name"] == "web.default.svc.cluster.local:80")
        .expect("web's virtual host");
    assert_eq!(
        route_clusters(web),
        vec![(
            "/".to_string(),
            "outbound|80||a.default.svc.cluster.local".to_string()
        )],
        "only the oldest VirtualService routes web"
    );
}

#[test]
fn gateway_hosts_merge_with_catch_all_routes_last() {
    let objects = vec![
        mk_service("default", "a", &[80]),
        mk_service("default", "b", &[80]),
        mk_istio(
            "Gateway",
            "default",
            "gw",
            json!({"selector": {"istio": "ingressgateway"},
            "servers": [{"port": {"number": 80, "protocol": "HTTP"}, "hosts": ["*"]}]}),
        ),
        // The older one is a catch-all: it must not hide the younger one's `/b`.
        vs_at(
            "all",
            "2024-01-01T00:00:00Z",
            "web.example.com",
            "/",
            "a",
            &["gw"],
        ),
        vs_at(
            "only-b",
            "2024-02-01T00:00:00Z",
            "web.example.com",
            "/b",
            "b",
            &["gw"],
        ),
    ];
    let (j, errors) = compile_json(objects, &gateway_proxy());
    assert!(errors.is_empty(), "{errors:?}");
    let vh = &j["rds"]["http.80"]["virtual_hosts"][0];
    assert_eq!(vh["domains"], json!(["web.example.com"]));
    assert_eq!(
        route_clusters(vh),
        vec![
            (
                "/b".to_string(),
                "outbound|80||b.default.svc.cluster.local".to_string()
            ),
            (
                "/".to_string(),
                "outbound|80||a.default.svc.cluster.local".to_string()
            ),
        ]
    );
}
