//! Kubernetes Service shapes beyond the ClusterIP one, as compiled: ExternalName Services.

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
