//! Which VirtualServices a Gateway server serves: its hosts' `ns/` parts (the namespaces whose
//! VirtualServices may bind) and the gateway names a VirtualService may use, as istiod reads them.

use super::*;
use meshpilot_model::Severity;

/// A Gateway `gw` in `istio-system` with one server of `protocol` on `port` and `hosts`, and a
/// service `shop` on port 80 in each of `team-a` and `team-b`, each with a VirtualService for
/// `shop.example.com` bound to the gateway through `gateway_ref` and routing to its own `shop`.
fn two_teams(protocol: &str, port: u16, hosts: &[&str], gateway_ref: &str) -> Vec<Object> {
    let mut objects = vec![mk_istio(
        "Gateway",
        "istio-system",
        "gw",
        json!({"selector": {"istio": "ingressgateway"}, "servers": [{
            "port": {"number": port, "name": "p", "protocol": protocol},
            "hosts": hosts,
            "tls": if protocol == "TLS" { json!({"mode": "PASSTHROUGH"}) } else { Value::Null }
        }]}),
    )];
    for team in ["team-a", "team-b"] {
        objects.push(mk_service(team, "shop", &[80]));
        let route = json!([{"route": [{"destination": {"host": "shop", "port": {"number": 80}}}]}]);
        let spec = match protocol {
            "TCP" => {
                json!({"hosts": ["shop.example.com"], "gateways": [gateway_ref], "tcp": route})
            }
            "TLS" => json!({"hosts": ["shop.example.com"], "gateways": [gateway_ref], "tls": [{
                "match": [{"sniHosts": ["shop.example.com"]}],
                "route": [{"destination": {"host": "shop", "port": {"number": 80}}}]
            }]}),
            _ => json!({"hosts": ["shop.example.com"], "gateways": [gateway_ref], "http": route}),
        };
        objects.push(mk_virtual_service(team, "shop", spec));
    }
    objects
}

fn cluster(team: &str) -> String {
    format!("outbound|80||shop.{team}.svc.cluster.local")
}

/// Every cluster a rendered snapshot's routes or listeners name, in the JSON text.
fn names_cluster(j: &Value, team: &str) -> bool {
    let text = json!({"rds": j["rds"], "lds": j["lds"]}).to_string();
    text.contains(&format!("\"{}\"", cluster(team)))
}

fn warnings_for(errors: &[Diagnostic], team: &str) -> Vec<String> {
    errors
        .iter()
        .filter(|d| d.severity == Severity::Warning && d.object.namespace.as_deref() == Some(team))
        .map(|d| d.message.clone())
        .collect()
}

#[test]
fn http_server_host_with_a_namespace_serves_that_namespace_only() {
    let (j, errors) = compile_json(
        two_teams("HTTP", 80, &["team-a/shop.example.com"], "istio-system/gw"),
        &gateway_proxy(),
    );
    assert!(names_cluster(&j, "team-a"), "{:#}", j["rds"]);
    assert!(!names_cluster(&j, "team-b"), "{:#}", j["rds"]);
    let b = warnings_for(&errors, "team-b");
    assert_eq!(b.len(), 1, "{errors:?}");
    assert!(b[0].contains("istio-system/gw"), "{b:?}");
    assert!(warnings_for(&errors, "team-a").is_empty(), "{errors:?}");
}

#[test]
fn star_and_bare_server_hosts_admit_every_namespace() {
    for host in ["*/shop.example.com", "shop.example.com"] {
        let (j, errors) = compile_json(
            two_teams("HTTP", 80, &[host], "istio-system/gw"),
            &gateway_proxy(),
        );
        assert!(names_cluster(&j, "team-a"), "{host}: {:#}", j["rds"]);
        assert!(names_cluster(&j, "team-b"), "{host}: {:#}", j["rds"]);
        assert!(
            !errors.iter().any(|d| d.severity == Severity::Warning),
            "{host}: {errors:?}"
        );
    }
}

#[test]
fn dot_server_host_admits_the_gateways_own_namespace() {
    let mut objects = two_teams("HTTP", 80, &["./shop.example.com"], "istio-system/gw");
    objects.push(mk_service("istio-system", "shop", &[80]));
    objects.push(mk_virtual_service(
        "istio-system",
        "shop",
        json!({"hosts": ["shop.example.com"], "gateways": ["gw"], "http": [
            {"route": [{"destination": {"host": "shop", "port": {"number": 80}}}]}
        ]}),
    ));
    let (j, errors) = compile_json(objects, &gateway_proxy());
    assert!(names_cluster(&j, "istio-system"), "{:#}", j["rds"]);
    assert!(!names_cluster(&j, "team-a"), "{:#}", j["rds"]);
    assert!(!names_cluster(&j, "team-b"), "{:#}", j["rds"]);
    assert_eq!(warnings_for(&errors, "team-a").len(), 1, "{errors:?}");
}

#[test]
fn tcp_and_tls_server_hosts_with_a_namespace_serve_that_namespace_only() {
    for protocol in ["TCP", "TLS"] {
        let (j, errors) = compile_json(
            two_teams(
                protocol,
                9443,
                &["team-a/shop.example.com"],
                "istio-system/gw",
            ),
            &gateway_proxy(),
        );
        assert!(names_cluster(&j, "team-a"), "{protocol}: {:#}", j["lds"]);
        assert!(!names_cluster(&j, "team-b"), "{protocol}: {:#}", j["lds"]);
        assert_eq!(warnings_for(&errors, "team-b").len(), 1, "{errors:?}");
    }
}

#[test]
fn gateway_names_resolve_as_istiod_resolves_them() {
    // The deprecated FQDN and `name.ns` forms, and `ns/name`, all name istio-system/gw.
    for name in [
        "gw.istio-system.svc.cluster.local",
        "gw.istio-system",
        "istio-system/gw",
    ] {
        let (j, _) = compile_json(
            two_teams("HTTP", 80, &["*/shop.example.com"], name),
            &gateway_proxy(),
        );
        assert!(names_cluster(&j, "team-a"), "{name}: {:#}", j["rds"]);
    }
    // Short names and `./name` are in the VirtualService's namespace: not this gateway's.
    for name in ["gw", "./gw", "gw.team-a.svc.cluster.local", "other/gw"] {
        let (j, _) = compile_json(
            two_teams("HTTP", 80, &["*/shop.example.com"], name),
            &gateway_proxy(),
        );
        assert!(!names_cluster(&j, "team-a"), "{name}: {:#}", j["rds"]);
    }
}

#[test]
fn https_server_with_an_unserved_mode_names_tls_mode() {
    for (tls, want) in [
        (
            json!({"mode": "OPTIONAL_MUTUAL"}),
            "tls.mode OPTIONAL_MUTUAL is not served",
        ),
        (
            json!({"mode": "AUTO_PASSTHROUGH"}),
            "tls.mode AUTO_PASSTHROUGH is not served",
        ),
    ] {
        let gw = mk_istio(
            "Gateway",
            "istio-system",
            "gw",
            json!({"selector": {"istio": "ingressgateway"}, "servers": [{
                "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                "hosts": ["*"], "tls": tls
            }]}),
        );
        let (_, errors) = compile_json(vec![gw], &gateway_proxy());
        let error = errors
            .iter()
            .find(|d| d.field.as_deref() == Some("spec.servers[0].tls.mode"))
            .unwrap_or_else(|| panic!("{want}: {errors:?}"));
        assert!(error.message.contains(want), "{}", error.message);
        assert!(error.message.contains("SIMPLE"), "{}", error.message);
        assert!(
            !error.message.contains("protocol HTTPS"),
            "{}",
            error.message
        );
    }
}

/// A GRPC-WEB server is an HTTP server to the gateway, as in istiod: its VirtualServices'
/// routes are served, not refused for the protocol.
#[test]
fn grpc_web_server_is_served_as_http() {
    let (j, errors) = compile_json(
        two_teams("GRPC-WEB", 8080, &["*/shop.example.com"], "istio-system/gw"),
        &gateway_proxy(),
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert!(names_cluster(&j, "team-a"), "{:#}", j["rds"]);
}
