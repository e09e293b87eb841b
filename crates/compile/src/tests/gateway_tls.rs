//! Gateway HTTPS servers and their SDS secrets: one SNI chain per server, secrets only from the
//! gateway proxy's namespace, MUTUAL's CA name, `httpsRedirect`, and a Secret change that
//! leaves the listeners as they were.

use super::*;
use meshpilot_model::{Body, SecretBytes, TlsSecret};

const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn secret(ns: &str, name: &str, key: &str, ca: bool) -> Object {
    Object {
        meta: mk_meta(ns, name),
        body: Body::Secret(TlsSecret {
            cert_chain: Some(SecretBytes::new(CERT.as_bytes().to_vec())),
            private_key: Some(SecretBytes::new(key.as_bytes().to_vec())),
            ca_cert: ca.then(|| SecretBytes::new(CERT.as_bytes().to_vec())),
        }),
    }
}

fn https_gateway(servers: Value) -> Object {
    mk_istio(
        "Gateway",
        "istio-system",
        "gw",
        json!({"selector": {"istio": "ingressgateway"}, "servers": servers}),
    )
}

fn web() -> Vec<Object> {
    vec![
        mk_service("default", "web", &[8080]),
        mk_virtual_service(
            "default",
            "web",
            json!({"hosts": ["a.example.com", "b.example.com"], "gateways": ["istio-system/gw"],
                   "http": [{"route": [{"destination": {"host": "web"}}]}]}),
        ),
    ]
}

/// The server names of each filter chain of `listener`, in order.
fn chain_names(j: &Value, listener: &str) -> Vec<Value> {
    j["lds"][listener]["filter_chains"]
        .as_array()
        .expect("chains")
        .iter()
        .map(|c| c["filter_chain_match"]["server_names"].clone())
        .collect()
}

#[test]
fn https_servers_get_an_sni_chain_each_and_secrets_of_their_namespace_only() {
    let mut objects = web();
    objects.push(https_gateway(json!([
        {"port": {"number": 443, "name": "https-a", "protocol": "HTTPS"}, "hosts": ["a.example.com"],
         "tls": {"mode": "SIMPLE", "credentialName": "a-cert", "minProtocolVersion": "TLSV1_2"}},
        {"port": {"number": 443, "name": "https-b", "protocol": "HTTPS"}, "hosts": ["b.example.com"],
         "tls": {"mode": "SIMPLE", "credentialName": "b-cert"}},
    ])));
    objects.push(secret("istio-system", "a-cert", "KEY-A", false));
    objects.push(secret("istio-system", "b-cert", "KEY-B", false));
    objects.push(secret("default", "c-cert", "KEY-C", false));
    let (j, errors) = compile_json(objects, &gateway_proxy());
    assert!(errors.is_empty(), "{errors:?}");
    let listener = "127.0.0.10_443";
    assert_eq!(
        chain_names(&j, listener),
        [json!(["a.example.com"]), json!(["b.example.com"])]
    );
    let chain = &j["lds"][listener]["filter_chains"][0];
    let tls = &chain["transport_socket"]["typed_config"];
    let common = &tls["common_tls_context"];
    assert_eq!(
        common["tls_certificate_sds_secret_configs"][0]["name"],
        "kubernetes://a-cert"
    );
    assert!(common["tls_certificate_sds_secret_configs"][0]["sds_config"]["ads"].is_object());
    assert_eq!(
        common["tls_params"]["tls_minimum_protocol_version"],
        "TLSv1_2"
    );
    assert_eq!(
        j["lds"][listener]["listener_filters"][0]["name"],
        "envoy.filters.listener.tls_inspector"
    );
    assert!(
        j["rds"]["https.443.https-a.gw.istio-system"].is_object(),
        "{}",
        j["rds"]
    );
    let sds = j["sds"].as_object().expect("sds section");
    let names: Vec<&String> = sds.keys().collect();
    assert_eq!(names, ["kubernetes://a-cert", "kubernetes://b-cert"]);
    let text = j["sds"].to_string();
    assert!(!text.contains("KEY-"), "a private key in the dump: {text}");
    assert!(text.contains("[redacted]"), "{text}");
}

/// istiod names an HTTPS server's routes by its port (`https.PORT.PORT_NAME.GATEWAY.NAMESPACE`)
/// whatever `servers[].name` says, so tools that parse the name (EnvoyFilter patches) find the
/// port there.
#[test]
fn https_route_names_come_from_the_port_not_the_server_name() {
    let mut objects = web();
    objects.push(https_gateway(json!([
        {"name": "server-a", "port": {"number": 443, "name": "https-a", "protocol": "HTTPS"},
         "hosts": ["a.example.com"], "tls": {"mode": "SIMPLE", "credentialName": "a-cert"}},
    ])));
    objects.push(secret("istio-system", "a-cert", "KEY-A", false));
    let (j, errors) = compile_json(objects, &gateway_proxy());
    assert!(errors.is_empty(), "{errors:?}");
    let rds: Vec<&String> = j["rds"].as_object().expect("rds").keys().collect();
    assert_eq!(rds, ["https.443.https-a.gw.istio-system"]);
    let hcm = &j["lds"]["127.0.0.10_443"]["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(
        hcm["rds"]["route_config_name"],
        "https.443.https-a.gw.istio-system"
    );
}

#[test]
fn mutual_wants_the_ca_secret_and_http_servers_can_redirect() {
    let mut objects = web();
    objects.push(https_gateway(json!([
        {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["a.example.com"],
         "tls": {"mode": "MUTUAL", "credentialName": "m-cert", "subjectAltNames": ["client.example.com"]}},
        {"port": {"number": 8443, "name": "other", "protocol": "HTTPS"}, "hosts": ["b.example.com"],
         "tls": {"mode": "SIMPLE", "credentialName": "missing"}},
        {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*.example.com"],
         "tls": {"httpsRedirect": true}},
    ])));
    objects.push(secret("istio-system", "m-cert", "KEY-M", true));
    let (j, errors) = compile_json(objects, &gateway_proxy());
    let tls = &j["lds"]["127.0.0.10_443"]["filter_chains"][0]["transport_socket"]["typed_config"];
    assert_eq!(tls["require_client_certificate"], true);
    let combined = &tls["common_tls_context"]["combined_validation_context"];
    assert_eq!(
        combined["validation_context_sds_secret_config"]["name"],
        "kubernetes://m-cert-cacert"
    );
    assert_eq!(
        combined["default_validation_context"]["match_typed_subject_alt_names"][0]["matcher"]["exact"],
        "client.example.com"
    );
    assert!(j["sds"]["kubernetes://m-cert-cacert"]["validation_context"].is_object());
    // The missing Secret: a warning naming the namespace looked in; the listener is still sent.
    assert!(j["lds"]["127.0.0.10_8443"].is_object());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].message.contains("\"missing\"") && errors[0].message.contains("istio-system"),
        "{errors:?}"
    );
    // Plain HTTP to a redirecting server's hosts gets a 301 to HTTPS.
    let hosts = j["rds"]["http.80"]["virtual_hosts"]
        .as_array()
        .expect("hosts");
    assert!(!hosts.is_empty());
    for vh in hosts {
        assert_eq!(vh["require_tls"], "ALL", "{vh}");
    }
}

#[test]
fn a_changed_secret_leaves_the_listeners_as_they_were() {
    let compile = |key: &str| {
        let mut objects = web();
        objects.push(https_gateway(json!([
            {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["a.example.com"],
             "tls": {"mode": "SIMPLE", "credentialName": "a-cert"}},
        ])));
        objects.push(secret("istio-system", "a-cert", key, false));
        let mut index = Index::new();
        index.reset(meshpilot_model::SourceId::Files, objects);
        let view = index.build_view("cluster.local", None);
        let shared = compile_shared(&view).expect("consistent");
        let out = compile_class(&view, &gateway_proxy());
        assemble(gateway_proxy().class_key(), &shared, &out).expect("consistent")
    };
    let (before, after) = (compile("KEY-1"), compile("KEY-2"));
    assert_eq!(
        before.get(XdsType::Listener).version,
        after.get(XdsType::Listener).version
    );
    assert_ne!(
        before.get(XdsType::Secret).version,
        after.get(XdsType::Secret).version
    );
    assert_ne!(before.version, after.version);
}

#[test]
fn sidecars_get_no_secrets() {
    let mut objects = web();
    objects.push(secret("default", "c-cert", "KEY-C", false));
    let (j, _) = compile_json(objects, &sidecar_proxy());
    assert_eq!(j["sds"], json!({}));
}

/// istio's default ingress Service beside the gateway pod: 80 → 8080, 443 → 8443, 31400 as is.
fn ingress_service() -> Object {
    let mut svc = mk_service("istio-system", "istio-ingressgateway", &[80, 443, 31400]);
    if let Body::Service(s) = &mut svc.body {
        s.selector = Some(labels(&[("istio", "ingressgateway")]));
        s.ports[0].target_port = meshpilot_model::TargetPort::Number(8080);
        s.ports[1].target_port = meshpilot_model::TargetPort::Number(8443);
    }
    svc
}

#[test]
fn gateway_listeners_bind_the_target_ports_of_the_service_selecting_the_gateway() {
    let mut objects = web();
    objects.push(https_gateway(json!([
        {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["a.example.com"]},
        {"port": {"number": 443, "name": "https-a", "protocol": "HTTPS"}, "hosts": ["a.example.com"],
         "tls": {"mode": "SIMPLE", "credentialName": "a-cert"}},
        {"port": {"number": 31400, "name": "tcp", "protocol": "TCP"}, "hosts": ["*"]},
    ])));
    objects.push(secret("istio-system", "a-cert", "KEY-A", false));
    objects.push(mk_virtual_service(
        "default",
        "web-tcp",
        json!({"hosts": ["*"], "gateways": ["istio-system/gw"],
               "tcp": [{"route": [{"destination": {"host": "web", "port": {"number": 8080}}}]}]}),
    ));
    let (without, _) = compile_json(objects.clone(), &gateway_proxy());
    objects.push(ingress_service());
    let (j, errors) = compile_json(objects, &gateway_proxy());
    assert!(errors.is_empty(), "{errors:?}");

    let lds = j["lds"].as_object().expect("lds");
    let names: Vec<&String> = lds.keys().collect();
    assert_eq!(
        names,
        ["127.0.0.10_31400", "127.0.0.10_8080", "127.0.0.10_8443"]
    );
    let port = |l: &str| j["lds"][l]["address"]["socket_address"]["port_value"].clone();
    assert_eq!(port("127.0.0.10_8080"), 8080);
    assert_eq!(port("127.0.0.10_8443"), 8443);
    assert_eq!(port("127.0.0.10_31400"), 31400);
    // The routes keep the server's port in their names, as istiod's do.
    let hcm = &j["lds"]["127.0.0.10_8080"]["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(hcm["rds"]["route_config_name"], "http.80");
    assert!(j["rds"]["http.80"].is_object(), "{}", j["rds"]);
    assert!(j["rds"]["https.443.https-a.gw.istio-system"].is_object());

    // Without the Service the server ports themselves are bound.
    let names: Vec<&String> = without["lds"].as_object().expect("lds").keys().collect();
    assert_eq!(
        names,
        ["127.0.0.10_31400", "127.0.0.10_443", "127.0.0.10_80"]
    );
}

/// An ISTIO_MUTUAL server serves the gateway's own workload certificate and checks clients
/// against the mesh root, both from the gateway's agent; a gateway without an agent cannot
/// serve it and is told so.
#[test]
fn istio_mutual_servers_use_the_agents_certificate_and_root() {
    let mut objects = web();
    objects.push(https_gateway(json!([
        {"port": {"number": 443, "name": "mesh", "protocol": "HTTPS"}, "hosts": ["a.example.com"],
         "tls": {"mode": "ISTIO_MUTUAL",
                 "subjectAltNames": ["spiffe://cluster.local/ns/default/sa/client"]}},
    ])));
    let mut proxy = gateway_proxy();
    proxy.workload_certificate = true;
    let (j, errors) = compile_json(objects.clone(), &proxy);
    assert!(errors.is_empty(), "{errors:?}");
    let tls = &j["lds"]["127.0.0.10_443"]["filter_chains"][0]["transport_socket"]["typed_config"];
    assert_eq!(tls["require_client_certificate"], true);
    let common = &tls["common_tls_context"];
    let cert = &common["tls_certificate_sds_secret_configs"][0];
    assert_eq!(cert["name"], "default");
    assert_eq!(
        cert["sds_config"]["api_config_source"]["grpc_services"][0]["envoy_grpc"]["cluster_name"],
        "sds-grpc"
    );
    let combined = &common["combined_validation_context"];
    assert_eq!(
        combined["validation_context_sds_secret_config"]["name"],
        "ROOTCA"
    );
    assert_eq!(
        combined["default_validation_context"]["match_typed_subject_alt_names"][0]["matcher"]["exact"],
        "spiffe://cluster.local/ns/default/sa/client"
    );
    assert_eq!(common["alpn_protocols"], json!(["h2", "http/1.1"]));
    // Nothing to send over ADS: the agent serves both.
    assert!(
        j["sds"].as_object().is_none_or(|s| s.is_empty()),
        "{}",
        j["sds"]
    );

    let (j, errors) = compile_json(objects, &gateway_proxy());
    assert!(j["lds"]["127.0.0.10_443"].is_null(), "{}", j["lds"]);
    assert!(
        errors
            .iter()
            .any(|e| e.field.as_deref() == Some("spec.servers[0].tls.mode")
                && e.message.contains("agent")),
        "{errors:?}"
    );
}

/// A TLS (not HTTPS) server that would terminate TLS is not served yet: the error says so
/// instead of calling the TLS protocol unserved, and PASSTHROUGH on the same gateway still is.
#[test]
fn a_terminating_tls_server_is_reported_as_not_served_yet() {
    for mode in ["SIMPLE", "MUTUAL", "ISTIO_MUTUAL"] {
        let mut objects = web();
        objects.push(https_gateway(json!([{
            "port": {"number": 9443, "name": "tls", "protocol": "TLS"},
            "hosts": ["a.example.com"],
            "tls": {"mode": mode, "credentialName": "a-cert"}}])));
        let (_, errors) = compile_json(objects, &gateway_proxy());
        let error = errors
            .iter()
            .find(|d| d.field.as_deref() == Some("spec.servers[0].tls.mode"))
            .unwrap_or_else(|| panic!("{mode}: {errors:?}"));
        assert!(
            error.message.contains("only with mode PASSTHROUGH")
                && error.message.contains("not served yet"),
            "{mode}: {}",
            error.message
        );
    }
}

/// Without `credentialName`, a server's certificate, key and CA are the files it names, with
/// its TLS versions and cipher suites; MUTUAL without `caCertificates`, and a minimum version
/// above the maximum, skip the server with an error naming the field.
#[test]
fn file_certificates_versions_and_ciphers_reach_the_chain() {
    let mut objects = web();
    objects.push(https_gateway(json!([
        {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["a.example.com"],
         "tls": {"mode": "MUTUAL", "serverCertificate": "/etc/certs/a.pem",
                 "privateKey": "/etc/certs/a.key", "caCertificates": "/etc/certs/ca.pem",
                 "maxProtocolVersion": "TLSV1_2", "cipherSuites": ["ECDHE-RSA-AES128-GCM-SHA256"]}},
        {"port": {"number": 8443, "name": "https-m", "protocol": "HTTPS"}, "hosts": ["b.example.com"],
         "tls": {"mode": "MUTUAL", "serverCertificate": "/etc/certs/b.pem",
                 "privateKey": "/etc/certs/b.key"}},
        {"port": {"number": 9443, "name": "https-v", "protocol": "HTTPS"}, "hosts": ["b.example.com"],
         "tls": {"mode": "SIMPLE", "credentialName": "b-cert",
                 "minProtocolVersion": "TLSV1_3", "maxProtocolVersion": "TLSV1_2"}},
    ])));
    let (j, errors) = compile_json(objects, &gateway_proxy());
    let common = &j["lds"]["127.0.0.10_443"]["filter_chains"][0]["transport_socket"]["typed_config"]
        ["common_tls_context"];
    assert_eq!(
        common["tls_certificates"][0]["certificate_chain"]["filename"],
        "/etc/certs/a.pem"
    );
    assert_eq!(
        common["validation_context"]["trusted_ca"]["filename"],
        "/etc/certs/ca.pem"
    );
    assert_eq!(
        common["tls_params"]["tls_maximum_protocol_version"],
        "TLSv1_2"
    );
    assert_eq!(
        common["tls_params"]["cipher_suites"],
        json!(["ECDHE-RSA-AES128-GCM-SHA256"])
    );
    let field = |f: &str| errors.iter().any(|e| e.field.as_deref() == Some(f));
    assert!(field("spec.servers[1].tls.caCertificates"), "{errors:?}");
    assert!(
        field("spec.servers[2].tls.minProtocolVersion"),
        "{errors:?}"
    );
    assert!(j["lds"]["127.0.0.10_8443"].is_null(), "{}", j["lds"]);
    assert!(j["lds"]["127.0.0.10_9443"].is_null(), "{}", j["lds"]);
}

/// A redirect without a scheme on an HTTPS server keeps https, so (as istiod's
/// `ApplyRedirect`) port 443, set or derived from the request, is left out of the location and
/// port 80 is kept; on a plain HTTP server it is the other way round.
#[test]
fn redirects_on_https_servers_drop_443_and_keep_80() {
    let redirect = |name: &str, redirect: Value| {
        mk_virtual_service(
            "default",
            name,
            json!({"hosts": [format!("{name}.example.com")], "gateways": ["istio-system/gw"],
                   "http": [{"redirect": redirect}]}),
        )
    };
    let objects = vec![
        https_gateway(json!([
            {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["*.example.com"],
             "tls": {"mode": "SIMPLE", "credentialName": "cert"}},
            {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*.example.com"]},
        ])),
        secret("istio-system", "cert", "KEY", false),
        redirect("set", json!({"authority": "x.example.com", "port": 443})),
        redirect(
            "derived",
            json!({"authority": "x.example.com", "derivePort": "FROM_REQUEST_PORT"}),
        ),
        redirect("plain", json!({"authority": "x.example.com", "port": 80})),
    ];
    let (j, errors) = compile_json(objects, &gateway_proxy());
    assert!(errors.is_empty(), "{errors:?}");
    let port_of = |rc: &str, host: &str| {
        let hosts = j["rds"][rc]["virtual_hosts"].as_array().expect("hosts");
        let vh = hosts
            .iter()
            .find(|vh| {
                vh["domains"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|d| d == host))
            })
            .unwrap_or_else(|| panic!("no virtual host {host} in {rc}: {hosts:?}"));
        vh["routes"][0]["redirect"]["port_redirect"]
            .as_u64()
            .unwrap_or(0)
    };
    let https = "https.443.https.gw.istio-system";
    assert_eq!(port_of(https, "set.example.com"), 0);
    assert_eq!(port_of(https, "derived.example.com"), 0);
    assert_eq!(port_of(https, "plain.example.com"), 80);
    assert_eq!(port_of("http.80", "set.example.com"), 443);
    assert_eq!(port_of("http.80", "derived.example.com"), 0);
    assert_eq!(port_of("http.80", "plain.example.com"), 0);
}
