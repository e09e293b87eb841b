//! `mk_*` builders for model objects, shared by unit tests and (with the `testing` feature) by
//! integration tests.

use crate::{
    Body, DestinationRule, EndpointSlice, Labels, Meta, Object, Protocol, Service, ServicePort,
    SliceEndpoint, SlicePort, Subset, TargetPort, VirtualService, Workload, WorkloadKind,
};

/// Labels from `k=v` pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn mk_meta(ns: &str, name: &str) -> Meta {
    Meta {
        name: name.to_string(),
        namespace: ns.to_string(),
        origin: crate::Origin::File("test".to_string()),
        ..Meta::default()
    }
}

/// A Service with HTTP ports (target port = port) selecting `app=<name>`.
pub fn mk_service(ns: &str, name: &str, ports: &[u16]) -> Object {
    Object {
        meta: mk_meta(ns, name),
        body: Body::Service(Service {
            ports: ports
                .iter()
                .map(|p| ServicePort {
                    name: format!("http-{p}"),
                    port: *p,
                    target_port: TargetPort::Number(*p),
                    protocol: Protocol::Http,
                })
                .collect(),
            selector: Some(labels(&[("app", name)])),
            export_to: Vec::new(),
            cluster_ip: None,
            external_name: None,
            headless: false,
        }),
    }
}

/// A running, ready Pod.
pub fn mk_pod(ns: &str, name: &str, ip: &str, pod_labels: &[(&str, &str)]) -> Object {
    Object {
        meta: Meta {
            labels: labels(pod_labels),
            ..mk_meta(ns, name)
        },
        body: Body::Pod(Workload {
            kind: WorkloadKind::Pod,
            address: ip.to_string(),
            labels: labels(pod_labels),
            ports: Default::default(),
            ready: true,
            node: None,
            weight: None,
            locality: None,
            service_account: Some("default".to_string()),
        }),
    }
}

/// A DestinationRule with subsets `name → version=<name>`.
pub fn mk_destination_rule(ns: &str, name: &str, host: &str, subsets: &[&str]) -> Object {
    Object {
        meta: mk_meta(ns, name),
        body: Body::DestinationRule(DestinationRule {
            host: host.to_string(),
            subsets: subsets
                .iter()
                .map(|s| Subset {
                    name: s.to_string(),
                    labels: labels(&[("version", s)]),
                    traffic_policy: None,
                })
                .collect(),
            ..DestinationRule::default()
        }),
    }
}

/// A VirtualService from its spec, written as JSON (Istio's field names).
pub fn mk_virtual_service(ns: &str, name: &str, spec: serde_json::Value) -> Object {
    let spec: VirtualService = serde_json::from_value(spec).expect("valid VirtualService spec");
    Object {
        meta: mk_meta(ns, name),
        body: Body::VirtualService(spec),
    }
}

/// Any Istio object from kind and JSON spec.
pub fn mk_istio(kind: &str, ns: &str, name: &str, spec: serde_json::Value) -> Object {
    let body = match kind {
        "VirtualService" => Body::VirtualService(serde_json::from_value(spec).expect("spec")),
        "DestinationRule" => Body::DestinationRule(serde_json::from_value(spec).expect("spec")),
        "Gateway" => Body::Gateway(serde_json::from_value(spec).expect("spec")),
        "ServiceEntry" => Body::ServiceEntry(serde_json::from_value(spec).expect("spec")),
        "WorkloadEntry" => Body::WorkloadEntry(serde_json::from_value(spec).expect("spec")),
        "Sidecar" => Body::Sidecar(serde_json::from_value(spec).expect("spec")),
        "PeerAuthentication" => {
            Body::PeerAuthentication(serde_json::from_value(spec).expect("spec"))
        }
        other => panic!("mk_istio: unknown kind {other}"),
    };
    Object {
        meta: mk_meta(ns, name),
        body,
    }
}

/// An EndpointSlice of `service` (port `http-80` → 8080) with `(address, pod, ready)` endpoints.
pub fn mk_slice(ns: &str, name: &str, service: &str, eps: &[(&str, Option<&str>, bool)]) -> Object {
    Object {
        meta: mk_meta(ns, name),
        body: Body::EndpointSlice(EndpointSlice {
            service: service.to_string(),
            ports: vec![SlicePort {
                name: "http-80".into(),
                port: 8080,
            }],
            endpoints: eps
                .iter()
                .map(|(ip, pod, ready)| SliceEndpoint {
                    addresses: vec![ip.to_string()],
                    ready: *ready,
                    serving: *ready,
                    terminating: false,
                    pod: pod.map(str::to_string),
                    node: None,
                })
                .collect(),
        }),
    }
}
