//! Sidecar outbound protocol selection: what a port's name or `appProtocol` makes of its
//! listener and cluster, and when a DNS cluster exists at all.

use super::*;
use meshpilot_model::Protocol;

/// A service `name` in `default` with one port per `(number, protocol)`.
fn service_with(name: &str, ports: &[(u16, Protocol)]) -> Object {
    let mut svc = mk_service("default", name, &[]);
    if let meshpilot_model::Body::Service(s) = &mut svc.body {
        s.ports = ports
            .iter()
            .map(|&(port, protocol)| meshpilot_model::ServicePort {
                name: String::new(),
                port,
                target_port: meshpilot_model::TargetPort::Number(port),
                protocol,
            })
            .collect();
    }
    svc
}

#[test]
fn an_unnamed_port_is_sniffed_http_first_then_tcp() {
    let objects = vec![
        service_with("db", &[(7000, Protocol::Unknown)]),
        service_with("web", &[(8080, Protocol::Http)]),
    ];
    let (j, _) = compile_json(objects, &sidecar_proxy());
    let sniffed = &j["lds"]["127.0.0.20_7000"];
    let chains = sniffed["filter_chains"].as_array().expect("chains");
    assert_eq!(chains.len(), 2, "{sniffed:#}");
    assert_eq!(
        chains[0]["filter_chain_match"]["application_protocols"],
        json!(["http/1.1", "h2c"])
    );
    assert_eq!(
        chains[0]["filters"][0]["name"],
        "envoy.filters.network.http_connection_manager"
    );
    assert_eq!(chains[1]["filter_chain_match"], Value::Null);
    assert_eq!(
        chains[1]["filters"][0]["typed_config"]["cluster"],
        "outbound|7000||db.default.svc.cluster.local"
    );
    assert_eq!(
        sniffed["listener_filters"][0]["name"],
        "envoy.filters.listener.http_inspector"
    );
    // A declared HTTP port needs no detection.
    let http = &j["lds"]["127.0.0.20_8080"];
    assert_eq!(http["filter_chains"].as_array().map(Vec::len), Some(1));
    assert_eq!(http["listener_filters"], Value::Null);
}

#[test]
fn two_services_on_one_unnamed_port_fall_back_to_passthrough() {
    let objects = vec![
        service_with("a", &[(7000, Protocol::Unknown)]),
        service_with("b", &[(7000, Protocol::Unknown)]),
    ];
    let (j, _) = compile_json(objects, &sidecar_proxy());
    assert_eq!(
        j["lds"]["127.0.0.20_7000"]["filter_chains"][1]["filters"][0]["typed_config"]["cluster"],
        "PassthroughCluster"
    );
}

/// The TCP fallback of a sniffed port proxies to the service as a TCP port does, so it takes
/// the same connection policy from the service's DestinationRule.
#[test]
fn a_sniffed_ports_tcp_fallback_takes_the_destination_rules_tcp_policy() {
    let objects = vec![
        service_with("db", &[(7000, Protocol::Unknown)]),
        mk_istio(
            "DestinationRule",
            "default",
            "db",
            json!({"host": "db", "trafficPolicy": {
                "connectionPool": {"tcp": {"idleTimeout": "7s", "maxConnectionDuration": "90s"}},
                "tunnel": {"targetHost": "10.1.2.3", "targetPort": 8443}}}),
        ),
    ];
    let (j, errors) = compile_json(objects, &sidecar_proxy());
    assert!(errors.is_empty(), "{errors:?}");
    let fallback = &j["lds"]["127.0.0.20_7000"]["filter_chains"][1]["filters"][0]["typed_config"];
    assert_eq!(
        fallback["cluster"],
        "outbound|7000||db.default.svc.cluster.local"
    );
    assert_eq!(fallback["idle_timeout"], "7s", "{fallback:#}");
    assert_eq!(fallback["max_downstream_connection_duration"], "90s");
    assert_eq!(fallback["tunneling_config"]["hostname"], "10.1.2.3:8443");
}

#[test]
fn grpc_ports_reach_their_service_over_http2() {
    let objects = vec![service_with(
        "api",
        &[(9000, Protocol::Grpc), (9001, Protocol::Http)],
    )];
    let (j, _) = compile_json(objects, &sidecar_proxy());
    let options = |port: u16| {
        j["cds"][format!("outbound|{port}||api.default.svc.cluster.local")]
            ["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
            .clone()
    };
    assert!(
        options(9000)["explicit_http_config"]["http2_protocol_options"].is_object(),
        "{:#}",
        options(9000)
    );
    assert_eq!(options(9001), Value::Null);
}

/// The names of the virtual hosts of route configuration `rc`, in order.
fn vhost_names(j: &Value, rc: &str) -> Vec<String> {
    j["rds"][rc]["virtual_hosts"]
        .as_array()
        .map(|hosts| {
            hosts
                .iter()
                .filter_map(|v| v["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn redirect_sidecar() -> Proxy {
    proxy(
        "sidecar~10.0.0.5~client.default~default.svc.cluster.local",
        &[("app", "client")],
        false,
    )
}

#[test]
fn unknown_hosts_pass_through_unless_registry_only() {
    let svc = mk_service("default", "a", &[80]);
    let (j, _) = compile_json(vec![svc.clone()], &redirect_sidecar());
    assert_eq!(
        vhost_names(&j, "80"),
        ["a.default.svc.cluster.local:80", "allow_any"]
    );
    let allow_any = &j["rds"]["80"]["virtual_hosts"][1];
    assert_eq!(allow_any["domains"], json!(["*"]));
    assert_eq!(
        allow_any["routes"][0]["route"]["cluster"],
        names::PASSTHROUGH
    );
    assert_eq!(
        j["lds"]["virtualOutbound"]["filter_chains"][0]["filters"][0]["typed_config"]["cluster"],
        names::PASSTHROUGH
    );

    // A mesh-wide Sidecar that only sets the policy: every service stays visible (`*/*`), and
    // unknown hosts and addresses are refused.
    let registry_only = mk_istio(
        "Sidecar",
        "istio-system",
        "default",
        json!({"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}),
    );
    let (j, _) = compile_json(vec![svc, registry_only], &redirect_sidecar());
    assert_eq!(
        vhost_names(&j, "80"),
        ["a.default.svc.cluster.local:80", "block_all"]
    );
    assert_eq!(
        j["rds"]["80"]["virtual_hosts"][1]["routes"][0]["direct_response"]["status"],
        502
    );
    assert_eq!(
        j["lds"]["virtualOutbound"]["filter_chains"][0]["filters"][0]["typed_config"]["cluster"],
        names::BLACKHOLE
    );
}

/// Without interception the client dialled the sidecar's own listener: passing an unknown
/// host through would dial that listener again, so only REGISTRY_ONLY adds a catch-all.
#[test]
fn sidecars_without_interception_pass_nothing_through() {
    let (j, _) = compile_json(vec![mk_service("default", "a", &[80])], &sidecar_proxy());
    assert_eq!(vhost_names(&j, "80"), ["a.default.svc.cluster.local:80"]);
}

/// As istiod: a DNS ServiceEntry whose `workloadSelector` selects no WorkloadEntry has no
/// cluster (istiod leaves a DNS cluster without endpoints out); once one is selected, its
/// cluster resolves that entry's address.
#[test]
fn a_dns_service_entry_selecting_no_workload_has_no_cluster() {
    let entry = mk_istio(
        "ServiceEntry",
        "default",
        "vms",
        json!({
            "hosts": ["vms.example.com"],
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
            "resolution": "DNS",
            "workloadSelector": {"labels": {"app": "vm"}}
        }),
    );
    let name = "outbound|80||vms.example.com";
    let (json, _) = compile_json(vec![entry.clone()], &sidecar_proxy());
    assert!(json["cds"].get(name).is_none(), "{}", json["cds"]);

    let vm = mk_istio(
        "WorkloadEntry",
        "default",
        "vm-1",
        json!({"address": "vm-1.example.com", "labels": {"app": "vm"}}),
    );
    let (json, _) = compile_json(vec![entry, vm], &sidecar_proxy());
    let c = &json["cds"][name];
    assert_eq!(c["type"], "STRICT_DNS");
    assert_eq!(
        c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
            ["address"],
        "vm-1.example.com"
    );
}
