//! Which port a gateway's listener binds for each Gateway server port, as istiod decides it:
//! when a Kubernetes Service in the gateway proxy's namespace selects its labels and has the
//! server's port, the listener binds that port's `targetPort` (Istio's default ingress Service
//! sends 80 → 8080 and 443 → 8443, so the pod need not bind privileged ports); otherwise it
//! binds the server port itself. Route configuration names keep the server port (`http.80`).

use std::collections::BTreeMap;

use meshpilot_index::View;
use meshpilot_model::{Proxy, ProxyKind};

use super::inbound;

/// Server port → the port its listener binds, for the ports that differ; empty for sidecars
/// and for gateways no Service selects.
pub(super) fn bind_ports(view: &View, proxy: &Proxy) -> BTreeMap<u16, u16> {
    let mut ports = BTreeMap::new();
    if proxy.kind != ProxyKind::Router {
        return ports;
    }
    // The oldest Service wins a port two declare, as for a sidecar's inbound ports.
    for svc in inbound::selecting_services(view, proxy) {
        for p in &svc.ports {
            if let Some(target) = inbound::target_port(proxy, svc, p) {
                ports.entry(p.port).or_insert(target);
            }
        }
    }
    ports.retain(|port, target| port != target);
    ports
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshpilot_index::Index;
    use meshpilot_model::proxy::MetadataValue;
    use meshpilot_model::test_helpers::*;
    use meshpilot_model::{Body, Object, TargetPort};

    fn gateway(ns: &str) -> Proxy {
        let mut md = std::collections::BTreeMap::new();
        md.insert(
            "LABELS".to_string(),
            MetadataValue::Map(labels(&[("istio", "ingressgateway")])),
        );
        md.insert(
            "INTERCEPTION_MODE".to_string(),
            MetadataValue::String("NONE".into()),
        );
        let id = format!("router~127.0.0.10~ingress.{ns}~{ns}.svc.cluster.local");
        Proxy::parse(&id, &md).expect("valid node id")
    }

    /// istio's default ingress Service: 80 → 8080, 443 → 8443, selecting the gateway pod.
    fn ingress_service(ns: &str, selector: (&str, &str)) -> Object {
        let mut svc = mk_service(ns, "istio-ingressgateway", &[80, 443, 15021]);
        if let Body::Service(s) = &mut svc.body {
            s.selector = Some(labels(&[selector]));
            s.ports[0].target_port = TargetPort::Number(8080);
            s.ports[1].target_port = TargetPort::Number(8443);
        }
        svc
    }

    fn ports(objects: Vec<Object>, proxy: &Proxy) -> BTreeMap<u16, u16> {
        let mut index = Index::new();
        index.reset(meshpilot_model::SourceId::Files, objects);
        bind_ports(&index.build_view("cluster.local", None), proxy)
    }

    #[test]
    fn a_selecting_service_in_the_gateway_namespace_maps_ports_to_target_ports() {
        let got = ports(
            vec![ingress_service("istio-system", ("istio", "ingressgateway"))],
            &gateway("istio-system"),
        );
        assert_eq!(got, BTreeMap::from([(80, 8080), (443, 8443)]));
    }

    #[test]
    fn no_selecting_service_binds_the_server_ports() {
        // In another namespace, or selecting other pods: the server port is bound.
        let other_ns = ingress_service("default", ("istio", "ingressgateway"));
        let other_pods = ingress_service("istio-system", ("istio", "egressgateway"));
        assert!(ports(vec![other_ns, other_pods], &gateway("istio-system")).is_empty());
    }
}
