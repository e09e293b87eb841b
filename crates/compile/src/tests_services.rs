//! Kubernetes Service shapes beyond the ClusterIP one, as compiled: ExternalName and headless
//! Services.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use prost::Message;

use super::*;
use meshpilot_index::Index;
use meshpilot_model::test_helpers::*;
use meshpilot_model::{Body, Object};

fn view(objects: Vec<Object>) -> View {
    let mut index = Index::new();
    index.reset(meshpilot_model::SourceId::Files, objects);
    index.build_view("cluster.local", None)
}

/// Service `ext` in `default` on 80 and 5432, `type: ExternalName` to `db.example.com`; its
/// (ignored) selector picks a pod with a sidecar.
fn external_name() -> Vec<Object> {
    let mut svc = mk_service("default", "ext", &[80, 5432]);
    if let Body::Service(s) = &mut svc.body {
        s.external_name = Some("db.example.com".to_string());
    }
    let mut pod = mk_pod("default", "ext-1", "10.0.0.1", &[("app", "ext")]);
    if let Body::Pod(w) = &mut pod.body {
        w.labels
            .insert(tls::TLS_MODE_LABEL.to_string(), "istio".to_string());
    }
    vec![svc, pod]
}

#[test]
fn an_external_name_service_is_a_strict_dns_cluster_to_the_name_on_each_port() {
    let v = view(external_name());
    let shared = compile_shared(&v).expect("consistent");
    for port in [80u16, 5432] {
        let name = format!("outbound|{port}||ext.default.svc.cluster.local");
        let r = shared.clusters.items.get(name.as_str()).expect("cluster");
        let c = Cluster::decode(r.body.clone()).expect("a Cluster");
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32)),
            "{name}"
        );
        let la = c.load_assignment.expect("inline endpoints");
        let text = format!("{la:?}");
        assert!(text.contains("db.example.com"), "{text}");
        assert!(text.contains(&format!("PortValue({port})")), "{text}");
        // Outside the mesh: never upgraded to mutual TLS, whatever pods its selector names.
        assert!(c.transport_socket_matches.is_empty() && c.transport_socket.is_none());
        // Its endpoints travel inline, not over EDS.
        assert!(
            !shared.endpoints.items.contains_key(name.as_str()),
            "{name}"
        );
    }
    let svc = &v.services["ext.default.svc.cluster.local"];
    assert_eq!(svc.endpoints[&80].len(), 1, "{:?}", svc.endpoints);
}

/// Headless Service `db` in `default` (`clusterIP: None`) on 5432 (TCP), 8080 (HTTP) and 9443
/// (TLS), with
/// two ready pods, `db-0` at 10.0.0.1 and `db-1` at 10.0.0.2.
fn headless() -> Vec<Object> {
    let mut svc = mk_service("default", "db", &[]);
    if let Body::Service(s) = &mut svc.body {
        s.headless = true;
        s.ports = [
            (5432, meshpilot_model::Protocol::Tcp),
            (8080, meshpilot_model::Protocol::Http),
            (9443, meshpilot_model::Protocol::Tls),
        ]
        .map(|(port, protocol)| meshpilot_model::ServicePort {
            name: format!("p-{port}"),
            port,
            target_port: meshpilot_model::TargetPort::Number(port),
            protocol,
        })
        .to_vec();
    }
    vec![
        svc,
        mk_pod("default", "db-0", "10.0.0.1", &[("app", "db")]),
        mk_pod("default", "db-1", "10.0.0.2", &[("app", "db")]),
    ]
}

#[test]
fn a_headless_service_passes_connections_to_the_pod_dialed() {
    let v = view(headless());
    assert!(v.diagnostics.is_empty(), "{:?}", v.diagnostics);
    let shared = compile_shared(&v).expect("consistent");
    let kind = |set: &TypeSet, name: &str| {
        let r = set.items.get(name).expect("cluster");
        let c = Cluster::decode(r.body.clone()).expect("a Cluster");
        (c.cluster_discovery_type, c.lb_policy)
    };
    for port in [5432u16, 8080] {
        let name = format!("outbound|{port}||db.default.svc.cluster.local");
        // Sidecars: to the address dialed.
        assert_eq!(
            kind(&shared.sidecar_clusters, &name),
            (
                Some(ClusterDiscoveryType::Type(
                    DiscoveryType::OriginalDst as i32
                )),
                envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy::ClusterProvided
                    as i32
            ),
            "{name}"
        );
        // Gateways have no dialed pod address: EDS over the ready pods, as istiod.
        assert_eq!(
            kind(&shared.clusters, &name).0,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            "{name}"
        );
        let cla = shared
            .endpoints
            .items
            .get(name.as_str())
            .expect("assignment");
        let cla = envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(
            cla.body.clone(),
        )
        .expect("decodes");
        assert_eq!(cla.endpoints[0].lb_endpoints.len(), 2, "{name}");
    }

    // A sidecar under REDIRECT: a listener per pod on the TCP port, the usual route on the
    // HTTP one.
    let mut md = std::collections::BTreeMap::new();
    md.insert(
        "LABELS".to_string(),
        meshpilot_model::proxy::MetadataValue::Map(labels(&[("app", "client")])),
    );
    let proxy = meshpilot_model::Proxy::parse(
        "sidecar~10.0.0.5~client.default~default.svc.cluster.local",
        &md,
    )
    .expect("valid node id");
    let out = compile_class(&v, &proxy);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let snap = assemble(proxy.class_key(), &shared, &out).expect("consistent snapshot");
    let j = snap
        .to_json(&meshpilot_snapshot::XdsType::ALL)
        .expect("renders");
    // TCP and TLS ports alike: one chain, no SNI match (the address says which service).
    for port in [5432, 9443] {
        let cluster = format!("outbound|{port}||db.default.svc.cluster.local");
        assert_eq!(j["cds"][&cluster]["type"], "ORIGINAL_DST", "{:#}", j["cds"]);
        for pod in ["10.0.0.1", "10.0.0.2"] {
            let l = &j["lds"][format!("{pod}_{port}")];
            assert_eq!(
                l["address"]["socket_address"]["address"], pod,
                "{:#}",
                j["lds"]
            );
            assert_eq!(l["address"]["socket_address"]["port_value"], port);
            assert_eq!(l["bind_to_port"], false);
            let chains = l["filter_chains"].as_array().expect("chains");
            assert_eq!(chains.len(), 1, "{l:#}");
            assert!(chains[0].get("filter_chain_match").is_none(), "{l:#}");
            assert_eq!(
                chains[0]["filters"][0]["typed_config"]["cluster"],
                cluster.as_str()
            );
        }
        let wildcard = format!("0.0.0.0_{port}");
        assert!(j["lds"].get(&wildcard).is_none(), "{:#}", j["lds"]);
    }
    assert_eq!(
        j["lds"]["0.0.0.0_8080"]["filter_chains"][0]["filters"][0]["name"],
        "envoy.filters.network.http_connection_manager"
    );
    let hosts = j["rds"]["8080"]["virtual_hosts"].to_string();
    assert!(
        hosts.contains("outbound|8080||db.default.svc.cluster.local")
            && hosts.contains("\"db.default\""),
        "{hosts}"
    );
}
