//! Where a sidecar's layer-4 routes meet istiod's choices: a VirtualService with no HTTP route
//! adds no virtual host, and on TLS ports `tls` routes replace the service's own chain.

use super::*;
use meshpilot_model::Protocol;

/// A service `name` in `default` with VIP `vip` and one port per `(number, protocol)`.
fn service_at(name: &str, vip: &str, ports: &[(u16, Protocol)]) -> Object {
    let mut svc = mk_service("default", name, &[]);
    if let meshpilot_model::Body::Service(s) = &mut svc.body {
        s.cluster_ip = Some(vip.parse().expect("ip"));
        s.ports = ports
            .iter()
            .map(|&(port, protocol)| meshpilot_model::ServicePort {
                name: format!("p-{port}"),
                port,
                target_port: meshpilot_model::TargetPort::Number(port),
                protocol,
            })
            .collect();
    }
    svc
}

fn redirect_sidecar() -> Proxy {
    proxy(
        "sidecar~10.0.0.5~client.default~default.svc.cluster.local",
        &[("app", "client")],
        false,
    )
}

/// `(virtual host name, first route's cluster)` of route configuration `rc`.
fn vhosts(j: &Value, rc: &str) -> Vec<(String, Value)> {
    j["rds"][rc]["virtual_hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or_default().to_string(),
                v["routes"][0]["route"]["cluster"].clone(),
            )
        })
        .collect()
}

#[test]
fn a_virtual_service_with_only_layer4_routes_adds_no_http_virtual_host() {
    let objects = vec![
        service_at("api", "10.96.0.30", &[(443, Protocol::Tls)]),
        service_at("web", "10.96.0.40", &[(80, Protocol::Http)]),
        mk_virtual_service(
            "default",
            "api",
            json!({"hosts": ["api", "v2.api.example.com"], "tls": [
                {"match": [{"port": 443, "sniHosts": ["v2.api.example.com"]}],
                 "route": [{"destination": {"host": "web", "port": {"number": 80}}}]}]}),
        ),
        mk_virtual_service(
            "default",
            "web",
            json!({"hosts": ["web"], "tcp": [
                {"route": [{"destination": {"host": "api"}}]}]}),
        ),
    ];
    let (j, errors) = compile_json(objects, &redirect_sidecar());
    assert!(errors.is_empty(), "{errors:?}");
    let hosts = vhosts(&j, "80");
    // No empty `v2.api.example.com:80`; web keeps its default route, as under istiod.
    assert!(
        hosts
            .iter()
            .all(|(name, _)| name != "v2.api.example.com:80"),
        "{hosts:?}"
    );
    assert!(
        hosts.contains(&(
            "web.default.svc.cluster.local:80".to_string(),
            json!("outbound|80||web.default.svc.cluster.local")
        )),
        "{hosts:?}"
    );
}

/// `(filter_chain_match, cluster)` of each chain of listener `name`.
fn chains(j: &Value, name: &str) -> Vec<(Value, Value)> {
    j["lds"][name]["filter_chains"]
        .as_array()
        .unwrap_or_else(|| panic!("listener {name} in {:#}", j["lds"]))
        .iter()
        .map(|c| {
            (
                c["filter_chain_match"].clone(),
                c["filters"][0]["typed_config"]["cluster"].clone(),
            )
        })
        .collect()
}

#[test]
fn on_a_tls_port_only_tls_routes_apply_and_replace_the_services_own_chain() {
    let objects = vec![
        service_at("api", "10.96.0.30", &[(443, Protocol::Tls)]),
        service_at("api-v2", "10.96.0.31", &[(443, Protocol::Tls)]),
        service_at("db", "10.96.0.32", &[(443, Protocol::Tls)]),
        mk_virtual_service(
            "default",
            "api",
            json!({"hosts": ["api", "v2.api.example.com"],
                   "tls": [{"match": [{"port": 443, "sniHosts": ["v2.api.example.com"]}],
                            "route": [{"destination": {"host": "api-v2"}}]}],
                   "tcp": [{"route": [{"destination": {"host": "db"}}]}]}),
        ),
    ];
    let (j, errors) = compile_json(objects, &redirect_sidecar());
    // Only the SNI chain: no chain from the `tcp` route, none to api's own cluster.
    assert_eq!(
        chains(&j, "10.96.0.30_443"),
        vec![(
            json!({"server_names": ["v2.api.example.com"], "transport_protocol": "tls"}),
            json!("outbound|443||api-v2.default.svc.cluster.local")
        )]
    );
    // The ignored `tcp` route is named in a warning.
    assert!(
        errors
            .iter()
            .any(|e| e.field.as_deref() == Some("spec.tcp[0]")
                && e.severity == meshpilot_model::Severity::Warning
                && e.message
                    .contains("port 443 of api.default.svc.cluster.local is TLS")),
        "{errors:?}"
    );
    // A TLS service no `tls` route matches keeps its own chain.
    assert_eq!(
        chains(&j, "10.96.0.31_443"),
        vec![(
            Value::Null,
            json!("outbound|443||api-v2.default.svc.cluster.local")
        )]
    );
}
