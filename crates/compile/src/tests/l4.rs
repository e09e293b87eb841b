//! Layer-4 listeners: per-VIP TCP listeners, VirtualService `tcp` and `tls` routes on sidecars,
//! gateway TCP and TLS PASSTHROUGH servers.

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

/// `(filter_chain_match, tcp_proxy config)` of each chain of listener `name`.
fn chains(j: &Value, name: &str) -> Vec<(Value, Value)> {
    j["lds"][name]["filter_chains"]
        .as_array()
        .unwrap_or_else(|| panic!("listener {name} in {:#}", j["lds"]))
        .iter()
        .map(|c| {
            (
                c["filter_chain_match"].clone(),
                c["filters"][0]["typed_config"].clone(),
            )
        })
        .collect()
}

#[test]
fn tcp_services_on_one_port_get_a_listener_per_vip() {
    let objects = vec![
        service_at("db1", "10.96.0.1", &[(5432, Protocol::Tcp)]),
        service_at("db2", "10.96.0.2", &[(5432, Protocol::Tcp)]),
        service_at("web", "10.96.0.3", &[(5432, Protocol::Http)]),
        mk_istio(
            "ServiceEntry",
            "default",
            "ext-db",
            json!({"hosts": ["db.example.com"], "addresses": ["192.0.2.10"],
                   "ports": [{"number": 5432, "name": "tcp", "protocol": "TCP"}],
                   "resolution": "STATIC", "endpoints": [{"address": "192.0.2.11"}]}),
        ),
    ];
    let (j, errors) = compile_json(objects, &redirect_sidecar());
    assert!(errors.is_empty(), "{errors:?}");
    for (listener, host) in [
        ("10.96.0.1_5432", "db1.default.svc.cluster.local"),
        ("10.96.0.2_5432", "db2.default.svc.cluster.local"),
        ("192.0.2.10_5432", "db.example.com"),
    ] {
        let l = &j["lds"][listener];
        assert_eq!(l["bind_to_port"], false, "{listener}");
        assert_eq!(
            l["address"]["socket_address"]["address"],
            listener.split('_').next().expect("ip")
        );
        assert_eq!(
            chains(&j, listener),
            vec![(
                Value::Null,
                json!({"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                       "stat_prefix": format!("outbound|5432||{host}"),
                       "cluster": format!("outbound|5432||{host}")})
            )]
        );
    }
    // The HTTP service keeps 0.0.0.0_5432.
    assert!(
        j["lds"]["0.0.0.0_5432"]["filter_chains"][0]["filters"][0]["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("http_connection_manager"))
    );
}

#[test]
fn virtual_service_tcp_routes_shift_weights_and_match_subnets() {
    let objects = vec![
        service_at("db", "10.96.0.1", &[(5432, Protocol::Tcp)]),
        service_at("db-next", "10.96.0.2", &[(5432, Protocol::Tcp)]),
        mk_virtual_service(
            "default",
            "db",
            json!({"hosts": ["db"], "tcp": [
                {"match": [{"port": 5432, "destinationSubnets": ["10.96.0.1/32"]}],
                 "route": [{"destination": {"host": "db-next"}}]},
                {"route": [{"destination": {"host": "db"}, "weight": 80},
                           {"destination": {"host": "db-next"}, "weight": 20}]}]}),
        ),
    ];
    let (j, errors) = compile_json(objects, &redirect_sidecar());
    assert!(errors.is_empty(), "{errors:?}");
    let c = chains(&j, "10.96.0.1_5432");
    assert_eq!(c.len(), 2, "{c:#?}");
    assert_eq!(
        c[0].0,
        json!({"prefix_ranges": [{"address_prefix": "10.96.0.1", "prefix_len": 32}]})
    );
    assert_eq!(
        c[0].1["cluster"],
        "outbound|5432||db-next.default.svc.cluster.local"
    );
    assert_eq!(c[1].0, Value::Null);
    assert_eq!(
        c[1].1["weighted_clusters"]["clusters"],
        json!([{"name": "outbound|5432||db.default.svc.cluster.local", "weight": 80},
               {"name": "outbound|5432||db-next.default.svc.cluster.local", "weight": 20}])
    );
    // The route replaced the service's own default chain; db-next has its own listener.
    assert_eq!(chains(&j, "10.96.0.2_5432").len(), 1);
}

/// A `tcp` route to a host nobody declares sends its connections to a cluster Envoy does not
/// have (as istiod), and the VirtualService's other routes still serve.
#[test]
fn a_tcp_route_to_an_unknown_host_leaves_the_other_routes_serving() {
    let objects = vec![
        service_at("db", "10.96.0.1", &[(5432, Protocol::Tcp)]),
        mk_virtual_service(
            "default",
            "db",
            json!({"hosts": ["db"], "tcp": [
                {"match": [{"destinationSubnets": ["10.96.0.1/32"], "sourceLabels": {"app": "client"}}],
                 "route": [{"destination": {"host": "gone"}}]},
                {"route": [{"destination": {"host": "db"}}]}]}),
        ),
    ];
    let (j, errors) = compile_json(objects, &redirect_sidecar());
    assert!(errors.is_empty(), "{errors:?}");
    let c = chains(&j, "10.96.0.1_5432");
    assert_eq!(c.len(), 2, "{c:#?}");
    assert_eq!(
        c[0].1["cluster"],
        "outbound|5432||gone.default.svc.cluster.local"
    );
    assert_eq!(
        c[1].1["cluster"],
        "outbound|5432||db.default.svc.cluster.local"
    );
}

#[test]
fn virtual_service_tls_routes_match_sni_on_tls_ports() {
    let objects = vec![
        service_at("api", "10.96.0.7", &[(443, Protocol::Https)]),
        service_at("api-v2", "10.96.0.8", &[(443, Protocol::Https)]),
        mk_virtual_service(
            "default",
            "api",
            json!({"hosts": ["api"], "tls": [
                {"match": [{"port": 443, "sniHosts": ["v2.api.example.com"]}],
                 "route": [{"destination": {"host": "api-v2"}}]}]}),
        ),
    ];
    let (j, errors) = compile_json(objects, &redirect_sidecar());
    assert!(errors.is_empty(), "{errors:?}");
    // As istiod, the `tls` match replaces the service's own chain.
    let c = chains(&j, "10.96.0.7_443");
    assert_eq!(c.len(), 1, "{c:#?}");
    assert_eq!(
        c[0].0,
        json!({"server_names": ["v2.api.example.com"], "transport_protocol": "tls"})
    );
    assert_eq!(
        c[0].1["cluster"],
        "outbound|443||api-v2.default.svc.cluster.local"
    );
    assert_eq!(
        j["lds"]["10.96.0.7_443"]["listener_filters"][0]["name"],
        "envoy.filters.listener.tls_inspector"
    );
}

/// As istiod (`getConfigsForHost`), a sidecar's TCP and TLS routes come from every
/// VirtualService whose host meets the service, wildcards included; where two have the same
/// match, the more specific host's route wins (the rule of HTTP routes).
#[test]
fn wildcard_virtual_service_hosts_bind_tcp_and_tls_routes() {
    let objects = vec![
        service_at("db", "10.96.0.1", &[(5432, Protocol::Tcp)]),
        service_at("db-next", "10.96.0.2", &[(5432, Protocol::Tcp)]),
        service_at("api", "10.96.0.7", &[(443, Protocol::Tls)]),
        service_at("api-v2", "10.96.0.8", &[(443, Protocol::Tls)]),
        mk_virtual_service(
            "default",
            "all-default",
            json!({"hosts": ["*.default.svc.cluster.local"],
                   "tcp": [{"match": [{"port": 5432}],
                            "route": [{"destination": {"host": "db-next"}}]}],
                   "tls": [{"match": [{"port": 443, "sniHosts": ["v2.api.example.com"]}],
                            "route": [{"destination": {"host": "api-v2"}}]}]}),
        ),
        mk_virtual_service(
            "default",
            "db-next",
            json!({"hosts": ["db-next"],
                   "tcp": [{"route": [{"destination": {"host": "db"}}]}]}),
        ),
        mk_virtual_service(
            "default",
            "api",
            json!({"hosts": ["api"],
                   "tls": [{"match": [{"sniHosts": ["beta.api.example.com"]}],
                            "route": [{"destination": {"host": "api-v2"}}]}]}),
        ),
    ];
    let (j, errors) = compile_json(objects, &redirect_sidecar());
    assert!(errors.is_empty(), "{errors:?}");
    let db = chains(&j, "10.96.0.1_5432");
    assert_eq!(db.len(), 1, "{db:#?}");
    assert_eq!(
        db[0].1["cluster"],
        "outbound|5432||db-next.default.svc.cluster.local"
    );
    // Both the exact and the wildcard host bind db-next: the exact host's route wins.
    let next = chains(&j, "10.96.0.2_5432");
    assert_eq!(next.len(), 1, "{next:#?}");
    assert_eq!(
        next[0].1["cluster"],
        "outbound|5432||db.default.svc.cluster.local"
    );
    // The exact host's SNI route and the wildcard host's both apply, and (as istiod) no chain
    // to the service's own cluster.
    let api = chains(&j, "10.96.0.7_443");
    let to = |sni: &str| {
        (api.iter())
            .find(|(m, _)| m["server_names"] == json!([sni]))
            .map(|(_, t)| t["cluster"].clone())
    };
    let v2 = json!("outbound|443||api-v2.default.svc.cluster.local");
    assert_eq!(to("beta.api.example.com"), Some(v2.clone()), "{api:#?}");
    assert_eq!(to("v2.api.example.com"), Some(v2), "{api:#?}");
    assert_eq!(api.len(), 2, "{api:#?}");
    // api-v2 has only the wildcard's route.
    assert_eq!(chains(&j, "10.96.0.8_443").len(), 1);
}

#[test]
fn gateway_tcp_and_tls_passthrough_servers() {
    let objects = vec![
        service_at("db", "10.96.0.1", &[(5432, Protocol::Tcp)]),
        service_at("a", "10.96.0.2", &[(8443, Protocol::Https)]),
        service_at("b", "10.96.0.3", &[(8443, Protocol::Https)]),
        mk_istio(
            "Gateway",
            "istio-system",
            "edge",
            json!({"selector": {"istio": "ingressgateway"}, "servers": [
                {"port": {"number": 31400, "name": "tcp", "protocol": "TCP"}, "hosts": ["*"]},
                {"port": {"number": 443, "name": "tls", "protocol": "HTTPS"}, "hosts": ["*.example.com"],
                 "tls": {"mode": "PASSTHROUGH"}}]}),
        ),
        mk_virtual_service(
            "default",
            "edge-routes",
            json!({"hosts": ["*"], "gateways": ["istio-system/edge"],
                   "tcp": [{"match": [{"port": 31400}],
                            "route": [{"destination": {"host": "db", "port": {"number": 5432}}}]}],
                   "tls": [{"match": [{"port": 443, "sniHosts": ["a.example.com"]}],
                            "route": [{"destination": {"host": "a", "port": {"number": 8443}}}]},
                           {"match": [{"port": 443, "sniHosts": ["b.example.com", "other.org"]}],
                            "route": [{"destination": {"host": "b", "port": {"number": 8443}}}]}]}),
        ),
    ];
    let (j, errors) = compile_json(objects, &gateway_proxy());
    assert!(errors.is_empty(), "{errors:?}");
    let tcp = chains(&j, "127.0.0.10_31400");
    assert_eq!(tcp.len(), 1);
    assert_eq!(
        tcp[0].1["cluster"],
        "outbound|5432||db.default.svc.cluster.local"
    );
    let tls = chains(&j, "127.0.0.10_443");
    assert_eq!(
        tls.iter().map(|c| c.0.clone()).collect::<Vec<_>>(),
        vec![
            json!({"server_names": ["a.example.com"]}),
            json!({"server_names": ["b.example.com"]})
        ]
    );
    assert_eq!(
        tls[1].1["cluster"],
        "outbound|8443||b.default.svc.cluster.local"
    );
    assert_eq!(
        j["lds"]["127.0.0.10_443"]["listener_filters"][0]["name"],
        "envoy.filters.listener.tls_inspector"
    );
    assert!(
        j["rds"].as_object().is_none_or(|r| r.is_empty()),
        "{:#}",
        j["rds"]
    );
}

/// A TLS or HTTPS server whose `tls` sets no mode is PASSTHROUGH (the proto's default, as
/// istiod reads it): its SNI routes are served, not refused for want of a mode.
#[test]
fn gateway_tls_server_without_a_mode_is_passthrough() {
    for protocol in ["TLS", "HTTPS"] {
        let objects = vec![
            service_at("a", "10.96.0.2", &[(8443, Protocol::Https)]),
            mk_istio(
                "Gateway",
                "istio-system",
                "edge",
                json!({"selector": {"istio": "ingressgateway"}, "servers": [
                    {"port": {"number": 443, "name": "tls", "protocol": protocol},
                     "hosts": ["*.example.com"], "tls": {}}]}),
            ),
            mk_virtual_service(
                "default",
                "edge-routes",
                json!({"hosts": ["a.example.com"], "gateways": ["istio-system/edge"],
                       "tls": [{"match": [{"port": 443, "sniHosts": ["a.example.com"]}],
                                "route": [{"destination": {"host": "a", "port": {"number": 8443}}}]}]}),
            ),
        ];
        let (j, errors) = compile_json(objects, &gateway_proxy());
        assert!(errors.is_empty(), "{protocol}: {errors:?}");
        let tls = chains(&j, "127.0.0.10_443");
        assert_eq!(tls.len(), 1, "{protocol}: {:#}", j["lds"]);
        assert_eq!(tls[0].0, json!({"server_names": ["a.example.com"]}));
        assert_eq!(
            tls[0].1["cluster"],
            "outbound|8443||a.default.svc.cluster.local"
        );
    }
}

#[test]
fn tcp_routes_for_other_source_labels_do_not_apply() {
    let objects = vec![
        service_at("db", "10.96.0.1", &[(5432, Protocol::Tcp)]),
        service_at("db-next", "10.96.0.2", &[(5432, Protocol::Tcp)]),
        mk_virtual_service(
            "default",
            "db",
            json!({"hosts": ["db"], "tcp": [
                {"match": [{"sourceLabels": {"app": "canary-client"}}],
                 "route": [{"destination": {"host": "db-next"}}]}]}),
        ),
    ];
    let (j, _) = compile_json(objects.clone(), &redirect_sidecar());
    let c = chains(&j, "10.96.0.1_5432");
    assert_eq!(c.len(), 1, "{c:#?}");
    assert_eq!(
        c[0].1["cluster"],
        "outbound|5432||db.default.svc.cluster.local"
    );
    let canary = proxy(
        "sidecar~10.0.0.6~canary.default~default.svc.cluster.local",
        &[("app", "canary-client")],
        false,
    );
    let (j, _) = compile_json(objects, &canary);
    let c = chains(&j, "10.96.0.1_5432");
    assert_eq!(
        c[0].1["cluster"],
        "outbound|5432||db-next.default.svc.cluster.local"
    );
}

/// TLS ServiceEntries without addresses share `0.0.0.0_443`: each is reached by its name, and
/// any other name passes through (or is dropped under REGISTRY_ONLY), never to the first entry.
#[test]
fn tls_entries_without_a_vip_are_told_apart_by_sni() {
    let entry = |name: &str, host: &str| {
        mk_istio(
            "ServiceEntry",
            "default",
            name,
            json!({"hosts": [host], "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}],
                   "location": "MESH_EXTERNAL", "resolution": "DNS"}),
        )
    };
    let mut objects = vec![
        entry("api", "api.example.com"),
        entry("pay", "pay.example.org"),
    ];
    let (j, errors) = compile_json(objects.clone(), &redirect_sidecar());
    assert!(errors.is_empty(), "{errors:?}");
    let c = chains(&j, "0.0.0.0_443");
    let summary: Vec<(Value, Value)> = c
        .iter()
        .map(|(m, t)| (m["server_names"].clone(), t["cluster"].clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                json!(["api.example.com"]),
                json!("outbound|443||api.example.com")
            ),
            (
                json!(["pay.example.org"]),
                json!("outbound|443||pay.example.org")
            ),
            (Value::Null, json!("PassthroughCluster")),
        ]
    );
    objects.push(mk_istio(
        "Sidecar",
        "default",
        "locked",
        json!({"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}),
    ));
    let (j, _) = compile_json(objects, &redirect_sidecar());
    let c = chains(&j, "0.0.0.0_443");
    assert_eq!(c[2].1["cluster"], "BlackHoleCluster");
}
