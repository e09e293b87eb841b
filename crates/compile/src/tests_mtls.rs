//! PeerAuthentication and auto-mTLS as compiled: the inbound chains per mode, the clusters'
//! transport sockets, and what a proxy without the agent's SDS gets.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
use prost::Message;

use super::*;
use meshpilot_index::Index;
use meshpilot_model::proxy::MetadataValue;
use meshpilot_model::test_helpers::*;
use meshpilot_model::{Body, Object, Protocol, TargetPort};

fn view(objects: Vec<Object>) -> View {
    let mut index = Index::new();
    index.reset(meshpilot_model::SourceId::Files, objects);
    index.build_view("cluster.local", None)
}

/// A sidecar in `ns` with `app=web`; with the agent's SDS when `agent`.
fn sidecar(ns: &str, agent: bool) -> Proxy {
    let mut md = BTreeMap::new();
    md.insert(
        "LABELS".to_string(),
        MetadataValue::Map(labels(&[("app", "web")])),
    );
    md.insert("NAMESPACE".to_string(), MetadataValue::String(ns.into()));
    if agent {
        md.insert(
            "WORKLOAD_IDENTITY_SOCKET_FILE".to_string(),
            MetadataValue::String("socket".into()),
        );
    }
    Proxy::parse(
        &format!("sidecar~10.0.0.9~web-1.{ns}~{ns}.svc.cluster.local"),
        &md,
    )
    .expect("valid node id")
}

/// Service `web` in `ns` selecting `app=web`: 8080 HTTP, 9000 TCP, 7000 of unknown protocol.
fn web(ns: &str) -> Object {
    let mut o = mk_service(ns, "web", &[8080, 9000, 7000]);
    if let Body::Service(s) = &mut o.body {
        s.selector = Some(labels(&[("app", "web")]));
        for (p, proto) in s
            .ports
            .iter_mut()
            .zip([Protocol::Http, Protocol::Tcp, Protocol::Unknown])
        {
            p.protocol = proto;
            p.target_port = TargetPort::Number(p.port);
        }
    }
    o
}

fn policy(ns: &str, name: &str, spec: serde_json::Value) -> Object {
    mk_istio("PeerAuthentication", ns, name, spec)
}

fn inbound(objects: Vec<Object>, proxy: &Proxy) -> Listener {
    let v = view(objects);
    let out = compile_class(&v, proxy);
    let r = out
        .listeners
        .items
        .get(names::VIRTUAL_INBOUND)
        .expect("virtualInbound");
    Listener::decode(r.body.clone()).expect("a Listener")
}

/// Per chain: (port, transport protocol, ALPNs, terminates TLS, the first filter's name).
fn chains_of(l: &Listener, port: Option<u32>) -> Vec<(String, Vec<String>, bool, String)> {
    l.filter_chains
        .iter()
        .filter(|c: &&FilterChain| {
            c.filter_chain_match
                .as_ref()
                .and_then(|m| m.destination_port.map(|p| p.value))
                == port
        })
        .map(|c| {
            let m = c.filter_chain_match.clone().unwrap_or_default();
            (
                m.transport_protocol,
                m.application_protocols,
                c.transport_socket.is_some(),
                c.filters[0]
                    .name
                    .rsplit('.')
                    .next()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

fn listener_filters(l: &Listener) -> Vec<String> {
    l.listener_filters.iter().map(|f| f.name.clone()).collect()
}

#[test]
fn permissive_by_default_serves_mutual_tls_beside_plaintext() {
    let l = inbound(vec![web("default")], &sidecar("default", true));
    let http = chains_of(&l, Some(8080));
    assert_eq!(http.len(), 2, "{http:?}");
    assert_eq!(
        (http[0].0.as_str(), http[0].2, http[0].3.as_str()),
        ("tls", true, "http_connection_manager")
    );
    assert!(http[0].1.contains(&"istio".to_string()));
    assert_eq!((http[1].0.as_str(), http[1].2), ("raw_buffer", false));
    let tcp = chains_of(&l, Some(9000));
    assert_eq!(
        tcp.iter()
            .map(|c| (c.0.as_str(), c.1.is_empty(), c.2))
            .collect::<Vec<_>>(),
        // Istio mutual TLS; the app's own TLS passed through; plaintext.
        [
            ("tls", false, true),
            ("tls", true, false),
            ("raw_buffer", true, false)
        ]
    );
    // What an istio-proxy may offer, as istiod's inbound chains take it: every Istio ALPN on a
    // port declared HTTP or TCP; on a sniffed port `istio-http/*` picks the HTTP chain.
    let all = tls::MTLS_ALL_ALPNS.map(str::to_string);
    assert_eq!(http[0].1, all);
    assert_eq!(tcp[0].1, all);
    let sniffed = chains_of(&l, Some(7000));
    assert_eq!(
        (sniffed[0].1.clone(), sniffed[0].3.as_str()),
        (
            tls::MTLS_HTTP_ALPNS.map(str::to_string).to_vec(),
            "http_connection_manager"
        )
    );
    assert_eq!(
        (sniffed[1].1.clone(), sniffed[1].3.as_str()),
        (
            tls::MTLS_TCP_ALPNS.map(str::to_string).to_vec(),
            "tcp_proxy"
        )
    );
    assert!(listener_filters(&l).contains(&"envoy.filters.listener.tls_inspector".to_string()));
    // The server offers plain HTTP ALPNs, never Istio's metadata exchange.
    let socket = l
        .filter_chains
        .iter()
        .find_map(|c| c.transport_socket.as_ref())
        .expect("a TLS chain");
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
    let Some(ConfigType::TypedConfig(any)) = &socket.config_type else {
        panic!("typed config");
    };
    let ctx = envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext::decode(
        any.value.as_slice(),
    )
    .expect("DownstreamTlsContext");
    assert_eq!(ctx.require_client_certificate.map(|b| b.value), Some(true));
    let common = ctx.common_tls_context.expect("common");
    assert_eq!(common.alpn_protocols, ["h2", "http/1.1"]);
    assert_eq!(common.tls_certificate_sds_secret_configs[0].name, "default");
}

#[test]
fn strict_namespace_keeps_only_mutual_tls_and_workload_and_port_policies_override() {
    let objects = vec![
        web("prod"),
        policy(
            "prod",
            "ns",
            serde_json::json!({"mtls": {"mode": "STRICT"}}),
        ),
    ];
    let l = inbound(objects.clone(), &sidecar("prod", true));
    for port in [8080, 9000, 7000] {
        let chains = chains_of(&l, Some(port));
        assert!(
            chains.iter().all(|c| c.0 == "tls" && c.2),
            "port {port}: {chains:?}"
        );
    }
    // The passthrough too: no plaintext chain anywhere.
    assert!(chains_of(&l, None).iter().all(|c| c.0 == "tls" && c.2));

    let mut with_workload = objects;
    with_workload.push(policy(
        "prod",
        "web",
        serde_json::json!({
            "selector": {"matchLabels": {"app": "web"}},
            "mtls": {"mode": "PERMISSIVE"},
            "portLevelMtls": {"9000": {"mode": "DISABLE"}},
        }),
    ));
    let l = inbound(with_workload, &sidecar("prod", true));
    let http = chains_of(&l, Some(8080));
    assert_eq!(
        http.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        ["tls", "raw_buffer"]
    );
    let tcp = chains_of(&l, Some(9000));
    assert_eq!(tcp.len(), 1);
    assert_eq!((tcp[0].0.as_str(), tcp[0].2), ("", false));
}

#[test]
fn a_proxy_without_the_agents_sds_gets_plaintext_and_strict_refuses_everything() {
    let l = inbound(vec![web("default")], &sidecar("default", false));
    assert!(l.filter_chains.iter().all(|c| c.transport_socket.is_none()));
    assert!(!listener_filters(&l).contains(&"envoy.filters.listener.tls_inspector".to_string()));
    let strict = vec![
        web("prod"),
        policy(
            "prod",
            "ns",
            serde_json::json!({"mtls": {"mode": "STRICT"}}),
        ),
    ];
    let l = inbound(strict, &sidecar("prod", false));
    let tcp = chains_of(&l, Some(9000));
    assert_eq!(tcp.len(), 1);
    let chain = l
        .filter_chains
        .iter()
        .find(|c| {
            c.filter_chain_match
                .as_ref()
                .and_then(|m| m.destination_port)
                .is_some_and(|p| p.value == 9000)
        })
        .expect("9000's chain");
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
        TcpProxy, tcp_proxy::ClusterSpecifier,
    };
    let Some(ConfigType::TypedConfig(any)) = &chain.filters[0].config_type else {
        panic!("typed config");
    };
    let tcp = TcpProxy::decode(any.value.as_slice()).expect("TcpProxy");
    assert_eq!(
        tcp.cluster_specifier,
        Some(ClusterSpecifier::Cluster(names::BLACKHOLE.to_string()))
    );
}

fn shared_cluster(objects: Vec<Object>, name: &str) -> Cluster {
    let v = view(objects);
    let shared = compile_shared(&v).expect("consistent");
    let r = shared.clusters.items.get(name).expect("cluster");
    Cluster::decode(r.body.clone()).expect("a Cluster")
}

/// `web` in `default` on 8080, with pods `web-1` (sidecar, service account `web-sa`) and
/// `web-2` (no sidecar).
fn web_with_pods(sidecar_label: bool) -> Vec<Object> {
    let mut svc = mk_service("default", "web", &[8080]);
    if let Body::Service(s) = &mut svc.body {
        s.selector = Some(labels(&[("app", "web")]));
    }
    let mut injected = mk_pod("default", "web-1", "10.0.0.1", &[("app", "web")]);
    if let Body::Pod(w) = &mut injected.body {
        if sidecar_label {
            w.labels
                .insert(tls::TLS_MODE_LABEL.to_string(), "istio".to_string());
        }
        w.service_account = Some("web-sa".to_string());
    }
    let plain = mk_pod("default", "web-2", "10.0.0.2", &[("app", "web")]);
    vec![svc, injected, plain]
}

const WEB: &str = "outbound|8080||web.default.svc.cluster.local";

fn upstream(
    socket: &envoy_types::pb::envoy::config::core::v3::TransportSocket,
) -> UpstreamTlsContext {
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
    let Some(ConfigType::TypedConfig(any)) = &socket.config_type else {
        panic!("typed config: {socket:?}");
    };
    UpstreamTlsContext::decode(any.value.as_slice()).expect("UpstreamTlsContext")
}

#[test]
fn clusters_of_services_with_sidecars_match_mutual_tls_by_endpoint_metadata() {
    let c = shared_cluster(web_with_pods(true), WEB);
    assert_eq!(c.transport_socket_matches.len(), 2);
    let istio = &c.transport_socket_matches[0];
    assert_eq!(istio.r#match, Some(tls::tls_mode_istio()));
    let ctx = upstream(istio.transport_socket.as_ref().expect("socket"));
    assert_eq!(ctx.sni, "outbound_.8080_._.web.default.svc.cluster.local");
    let common = ctx.common_tls_context.expect("common");
    // An HTTP port: what istio-proxy's ALPN filter sends for HTTP/1.1.
    assert_eq!(
        common.alpn_protocols,
        ["istio-http/1.1", "istio", "http/1.1"]
    );
    assert_eq!(common.tls_certificate_sds_secret_configs[0].name, "default");
    let json = format!("{:?}", common.validation_context_type);
    assert!(
        json.contains("spiffe://cluster.local/ns/default/sa/web-sa"),
        "{json}"
    );
    assert!(json.contains("ROOTCA"), "{json}");
    assert_eq!(c.transport_socket_matches[1].name, "tlsMode-disabled");

    // No pod with a sidecar: plaintext, the shared bytes of an untouched cluster.
    let c = shared_cluster(web_with_pods(false), WEB);
    assert!(c.transport_socket_matches.is_empty());
    assert!(c.transport_socket.is_none());
}

/// Each port's mutual TLS offers what an istio-proxy offers for its protocol, so an istiod
/// sidecar's inbound takes HTTP on its HTTP chain and TCP on its TCP chain; a DestinationRule's
/// ISTIO_MUTUAL offers the same.
#[test]
fn mesh_mtls_offers_istio_proxys_alpn_for_the_ports_protocol() {
    let mut objects = web_with_pods(true);
    if let Body::Service(s) = &mut objects[0].body {
        s.ports = [
            (8080, Protocol::Http),
            (8081, Protocol::Http2),
            (8082, Protocol::Grpc),
            (8083, Protocol::Tcp),
            (8084, Protocol::Unknown),
        ]
        .into_iter()
        .map(|(port, protocol)| meshpilot_model::ServicePort {
            name: format!("p-{port}"),
            port,
            target_port: TargetPort::Number(port),
            protocol,
        })
        .collect();
    }
    objects.push(mk_istio(
        "DestinationRule",
        "default",
        "web-mutual",
        serde_json::json!({"host": "web", "subsets": [{"name": "v1", "labels": {"app": "web"},
            "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}]}),
    ));
    let v = view(objects);
    let shared = compile_shared(&v).expect("consistent");
    let alpn = |name: &str| {
        let r = shared.clusters.items.get(name).expect("cluster");
        let c = Cluster::decode(r.body.clone()).expect("a Cluster");
        let socket = c
            .transport_socket
            .as_ref()
            .or_else(|| c.transport_socket_matches[0].transport_socket.as_ref())
            .expect("mutual TLS");
        upstream(socket)
            .common_tls_context
            .expect("common")
            .alpn_protocols
    };
    let host = "web.default.svc.cluster.local";
    for (port, subset, want) in [
        (8080, "", &["istio-http/1.1", "istio", "http/1.1"][..]),
        (8081, "", &["istio-h2", "istio", "h2"]),
        (8082, "", &["istio-h2", "istio", "h2"]),
        (8083, "", &["istio"]),
        // Sniffed: one cluster carries HTTP and raw TCP, so only what TCP may offer.
        (8084, "", &["istio"]),
        (8080, "v1", &["istio-http/1.1", "istio", "http/1.1"]),
        (8083, "v1", &["istio"]),
    ] {
        let name = format!("outbound|{port}|{subset}|{host}");
        assert_eq!(alpn(&name), want, "{name}");
    }
}

#[test]
fn a_disabled_namespace_and_destination_rule_tls_turn_auto_mtls_off_or_replace_it() {
    let mut disabled = web_with_pods(true);
    disabled.push(policy(
        "default",
        "off",
        serde_json::json!({"mtls": {"mode": "DISABLE"}}),
    ));
    let c = shared_cluster(disabled, WEB);
    assert!(c.transport_socket_matches.is_empty());

    let rule = |tls: serde_json::Value| {
        let mut objects = web_with_pods(true);
        objects.push(mk_istio(
            "DestinationRule",
            "default",
            "web",
            serde_json::json!({"host": "web", "trafficPolicy": {"tls": tls}}),
        ));
        shared_cluster(objects, WEB)
    };
    let c = rule(serde_json::json!({"mode": "DISABLE"}));
    assert!(c.transport_socket_matches.is_empty() && c.transport_socket.is_none());
    let c = rule(serde_json::json!({"mode": "ISTIO_MUTUAL"}));
    let ctx = upstream(c.transport_socket.as_ref().expect("ISTIO_MUTUAL socket"));
    assert_eq!(ctx.sni, "outbound_.8080_._.web.default.svc.cluster.local");
    let c = rule(serde_json::json!({
        "mode": "MUTUAL", "sni": "web.example",
        "clientCertificate": "/etc/certs/c.pem", "privateKey": "/etc/certs/k.pem",
        "caCertificates": "/etc/certs/ca.pem", "subjectAltNames": ["web.example"],
    }));
    let ctx = upstream(c.transport_socket.as_ref().expect("MUTUAL socket"));
    assert_eq!(ctx.sni, "web.example");
    let json = format!("{:?}", ctx.common_tls_context);
    for want in [
        "/etc/certs/c.pem",
        "/etc/certs/k.pem",
        "/etc/certs/ca.pem",
        "web.example",
    ] {
        assert!(json.contains(want), "{want}: {json}");
    }
    assert!(c.transport_socket_matches.is_empty());
}

/// What `proxy` gets for `name` from a view of `objects`: the assembled snapshot's cluster.
fn assembled_cluster(objects: Vec<Object>, proxy: &Proxy, name: &str) -> Cluster {
    let v = view(objects);
    let shared = compile_shared(&v).expect("consistent");
    let out = compile_class(&v, proxy);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let snap = assemble(proxy.class_key(), &shared, &out).expect("consistent snapshot");
    let r = snap
        .get(meshpilot_snapshot::XdsType::Cluster)
        .items
        .get(name)
        .expect("cluster");
    Cluster::decode(r.body.clone()).expect("a Cluster")
}

fn ingress_gateway() -> Proxy {
    let mut md = BTreeMap::new();
    md.insert(
        "LABELS".to_string(),
        MetadataValue::Map(labels(&[("istio", "ingressgateway")])),
    );
    Proxy::parse(
        "router~10.0.0.50~ingress.istio-system~istio-system.svc.cluster.local",
        &md,
    )
    .expect("valid node id")
}

fn web_rule(spec: serde_json::Value) -> Vec<Object> {
    let mut objects = web_with_pods(true);
    objects.push(mk_istio("DestinationRule", "default", "web", spec));
    objects
}

/// As istiod (`cluster_tls.go`): a rule without `workloadSelector` originating SIMPLE TLS from
/// a Secret's `credentialName` gives gateways TLS from the Secret and sidecars the cluster
/// without TLS (not even auto-mTLS), and the index says so once per view (clusters being
/// shared by every class), not again by each sidecar class's compile.
#[test]
fn a_credential_name_gives_gateways_tls_and_sidecars_the_cluster_without_tls() {
    let objects = web_rule(
        serde_json::json!({"host": "web", "trafficPolicy": {"tls": {"mode": "SIMPLE", "credentialName": "web-ca"}}}),
    );
    let v = view(objects.clone());
    let warned: Vec<_> = v
        .diagnostics
        .iter()
        .filter(|d| d.field.as_deref() == Some("spec.trafficPolicy.tls.credentialName"))
        .collect();
    assert_eq!(warned.len(), 1, "{:?}", v.diagnostics);
    for want in [
        "web-ca",
        "sidecars get this traffic without TLS",
        "as istiod sends it",
    ] {
        assert!(
            warned[0].message.contains(want),
            "{want}: {}",
            warned[0].message
        );
    }

    let gateway = assembled_cluster(objects.clone(), &ingress_gateway(), WEB);
    let socket = gateway.transport_socket.as_ref().expect("gateway TLS");
    let json = format!("{:?}", upstream(socket));
    assert!(json.contains("kubernetes://web-ca-cacert"), "{json}");

    let side = assembled_cluster(objects.clone(), &sidecar("default", true), WEB);
    assert_eq!(side.transport_socket, None, "{side:?}");
    assert!(side.transport_socket_matches.is_empty(), "{side:?}");
    // Only the rule's cluster has a sidecars' version.
    let mut other = objects;
    other.push(mk_service("default", "api", &[80]));
    let shared = compile_shared(&view(other)).expect("consistent");
    let withheld: Vec<&str> = shared.sidecar_clusters.items.keys().map(|k| &**k).collect();
    assert_eq!(withheld, vec![WEB]);
}

/// MUTUAL too, at port level. With a `workloadSelector` istiod would have the selected
/// sidecars fetch the Secret, which meshpilot does not serve them: their cluster keeps the
/// rule's TLS and the warning says it fails. Without a Secret (`configmap://`, files) or with
/// ISTIO_MUTUAL nothing is withheld.
#[test]
fn only_a_secret_for_simple_or_mutual_without_a_selector_is_withheld_from_sidecars() {
    let port_level = web_rule(serde_json::json!({"host": "web", "trafficPolicy": {
        "portLevelSettings": [{"port": {"number": 8080}, "tls": {"mode": "MUTUAL", "credentialName": "web-client"}}]}}));
    let side = assembled_cluster(port_level, &sidecar("default", true), WEB);
    assert_eq!(side.transport_socket, None, "{side:?}");

    let selected = web_rule(serde_json::json!({"host": "web",
        "workloadSelector": {"matchLabels": {"app": "web"}},
        "trafficPolicy": {"tls": {"mode": "SIMPLE", "credentialName": "web-ca"}}}));
    let v = view(selected.clone());
    let warned = v
        .diagnostics
        .iter()
        .find(|d| d.field.as_deref() == Some("spec.trafficPolicy.tls.credentialName"))
        .expect("warned");
    assert!(
        warned.message.contains("not served to sidecars"),
        "{}",
        warned.message
    );
    let side = assembled_cluster(selected, &sidecar("default", true), WEB);
    assert!(side.transport_socket.is_some(), "{side:?}");

    for tls in [
        serde_json::json!({"mode": "SIMPLE", "credentialName": "configmap://web-ca"}),
        serde_json::json!({"mode": "SIMPLE", "caCertificates": "/etc/certs/ca.pem"}),
        serde_json::json!({"mode": "ISTIO_MUTUAL", "credentialName": "web-ca"}),
    ] {
        let objects = web_rule(serde_json::json!({"host": "web", "trafficPolicy": {"tls": tls}}));
        let side = assembled_cluster(objects, &sidecar("default", true), WEB);
        assert!(side.transport_socket.is_some(), "{tls}: {side:?}");
    }
}

/// A STATIC ServiceEntry `db.internal` on 5432 at `location` (absent: istiod's default,
/// MESH_EXTERNAL), whose endpoints are a WorkloadEntry with service account `db-sa` and one
/// that says it has no sidecar.
fn db_entry(location: Option<&str>) -> Vec<Object> {
    let mut spec = serde_json::json!({
        "hosts": ["db.internal"], "resolution": "STATIC",
        "ports": [{"number": 5432, "name": "tcp", "protocol": "TCP"}],
        "subjectAltNames": ["spiffe://cluster.local/ns/legacy/sa/db"],
        "workloadSelector": {"labels": {"app": "db"}},
    });
    if let Some(location) = location {
        spec["location"] = serde_json::json!(location);
    }
    let entry = |name: &str, spec: serde_json::Value| mk_istio("WorkloadEntry", "data", name, spec);
    vec![
        mk_istio("ServiceEntry", "data", "db", spec),
        entry(
            "db-vm",
            serde_json::json!({"address": "10.5.0.1", "serviceAccount": "db-sa",
                               "labels": {"app": "db"}}),
        ),
        entry(
            "db-plain",
            serde_json::json!({"address": "10.5.0.2", "serviceAccount": "db-plain",
                               "labels": {"app": "db", "security.istio.io/tlsMode": "disabled"}}),
        ),
    ]
}

const DB: &str = "outbound|5432||db.internal";

#[test]
fn a_mesh_internal_entry_speaks_mutual_tls_to_its_workload_entries_with_their_identities() {
    let c = shared_cluster(db_entry(Some("MESH_INTERNAL")), DB);
    assert_eq!(c.transport_socket_matches.len(), 2, "{c:?}");
    let ctx = upstream(
        c.transport_socket_matches[0]
            .transport_socket
            .as_ref()
            .expect("socket"),
    );
    assert_eq!(ctx.sni, "outbound_.5432_._.db.internal");
    let json = format!("{:?}", ctx.common_tls_context);
    // The entry's own subjectAltNames and the WorkloadEntry's service account, but not the
    // account of the entry whose label says it has no sidecar.
    assert!(
        json.contains("spiffe://cluster.local/ns/legacy/sa/db"),
        "{json}"
    );
    assert!(
        json.contains("spiffe://cluster.local/ns/data/sa/db-sa"),
        "{json}"
    );
    assert!(!json.contains("db-plain"), "{json}");

    // Its EDS says which endpoint speaks Istio mutual TLS.
    let v = view(db_entry(Some("MESH_INTERNAL")));
    let eps = &v.services["db.internal"].endpoints[&5432];
    let istio: Vec<&str> = eps
        .iter()
        .filter(|e| tls::speaks_istio_mtls(&e.labels))
        .map(|e| e.address.as_str())
        .collect();
    assert_eq!(istio, ["10.5.0.1"]);
}

#[test]
fn a_mesh_external_entry_is_never_upgraded_to_mutual_tls_but_istio_mutual_checks_its_names() {
    for location in [None, Some("MESH_EXTERNAL")] {
        let c = shared_cluster(db_entry(location), DB);
        assert!(
            c.transport_socket_matches.is_empty() && c.transport_socket.is_none(),
            "{location:?}: {c:?}"
        );
    }
    // A rule asking for Istio mutual TLS to it verifies the entry's subjectAltNames.
    let mut objects = db_entry(None);
    objects.push(mk_istio(
        "DestinationRule",
        "data",
        "db",
        serde_json::json!({"host": "db.internal", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}),
    ));
    let c = shared_cluster(objects, DB);
    let ctx = upstream(c.transport_socket.as_ref().expect("ISTIO_MUTUAL socket"));
    let json = format!("{:?}", ctx.common_tls_context);
    assert!(
        json.contains("spiffe://cluster.local/ns/legacy/sa/db"),
        "{json}"
    );
}
