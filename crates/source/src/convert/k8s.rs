//! Kubernetes core kinds (Service, Pod, Namespace, Endpoints, EndpointSlice), read with
//! k8s-openapi types and projected to the model's narrow shapes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use tracing::{debug, warn};

use super::Ctx;
use meshpilot_model::{
    Body, Diagnostic, EndpointSlice, Protocol, Service, ServicePort, SliceEndpoint, SlicePort,
    TargetPort, Workload, WorkloadKind,
};

/// The label naming an EndpointSlice's Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// True for transport protocols the mesh does not proxy (UDP, SCTP).
fn is_unproxied(protocol: Option<&str>) -> bool {
    protocol.is_some_and(|p| p.eq_ignore_ascii_case("UDP") || p.eq_ignore_ascii_case("SCTP"))
}

pub(super) fn namespace(doc: Value, ctx: &Ctx) -> Result<Body, Diagnostic> {
    // Read for its type errors only; a Namespace carries nothing else compile needs.
    let _: core::Namespace = ctx.deserialize(doc)?;
    Ok(Body::Namespace)
}

pub(super) fn service(doc: Value, ctx: &Ctx) -> Result<Service, Diagnostic> {
    let svc: core::Service = ctx.deserialize(doc)?;
    let spec = svc.spec.unwrap_or_default();
    let mut ports = Vec::new();
    for (i, p) in spec.ports.unwrap_or_default().into_iter().enumerate() {
        let field = format!("spec.ports[{i}]");
        if is_unproxied(p.protocol.as_deref()) {
            debug!(port = p.port, "skipping a UDP/SCTP service port");
            continue;
        }
        let port = ctx.port(&format!("{field}.port"), p.port.into())?;
        let target_port = match p.target_port {
            None | Some(IntOrString::Int(0)) => TargetPort::Number(port),
            Some(IntOrString::Int(n)) => {
                TargetPort::Number(ctx.port(&format!("{field}.targetPort"), n.into())?)
            }
            Some(IntOrString::String(s)) if s.is_empty() => TargetPort::Number(port),
            Some(IntOrString::String(s)) if s.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(ctx.err(
                    &format!("{field}.targetPort"),
                    format!("targetPort \"{s}\" is a string: write a number without quotes, or a container port name"),
                ));
            }
            Some(IntOrString::String(s)) => TargetPort::Name(s),
        };
        let name = p.name.unwrap_or_default();
        let protocol = Protocol::from_port(&name, p.app_protocol.as_deref());
        ports.push(ServicePort {
            name,
            port,
            target_port,
            protocol,
        });
    }
    let export_to: Vec<String> = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(meshpilot_model::SERVICE_EXPORT_TO_ANNOTATION))
        .map(|v| {
            v.split(',')
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let field = format!(
        "metadata.annotations[{}]",
        meshpilot_model::SERVICE_EXPORT_TO_ANNOTATION
    );
    super::export_to::check(ctx, &field, &export_to)?;
    // An ExternalName Service without a name is an ordinary one to istiod too.
    let external_name = spec
        .external_name
        .filter(|n| spec.type_.as_deref() == Some("ExternalName") && !n.is_empty())
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase());
    let headless = external_name.is_none() && spec.cluster_ip.as_deref() == Some("None");
    Ok(Service {
        ports,
        external_name,
        headless,
        selector: spec.selector.filter(|s| !s.is_empty()),
        export_to,
        cluster_ip: spec
            .cluster_ip
            .as_deref()
            .filter(|ip| *ip != "None")
            .and_then(|ip| ip.parse::<IpAddr>().ok()),
    })
}

pub(super) fn pod(doc: Value, ctx: &Ctx) -> Result<Workload, Diagnostic> {
    let pod: core::Pod = ctx.deserialize(doc)?;
    let spec = pod.spec.unwrap_or_default();
    let status = pod.status.unwrap_or_default();
    let mut ports = BTreeMap::new();
    for (i, c) in spec.containers.iter().enumerate() {
        for (j, p) in c.ports.iter().flatten().enumerate() {
            let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            let field = format!("spec.containers[{i}].ports[{j}].containerPort");
            let number = ctx.port(&field, p.container_port.into())?;
            ports.entry(name.to_string()).or_insert(number);
        }
    }
    let address = status.pod_ip.unwrap_or_default();
    if !address.is_empty() && address.parse::<IpAddr>().is_err() {
        return Err(ctx.err(
            "status.podIP",
            format!("podIP `{address}` is not an IP address"),
        ));
    }
    let running = status.phase.as_deref() == Some("Running");
    let locality = pod.metadata.labels.as_ref().and_then(locality_label);
    let ready_condition = match status.conditions.as_deref() {
        None | Some([]) => true,
        Some(conditions) => conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
    };
    Ok(Workload {
        kind: WorkloadKind::Pod,
        ready: running && !address.is_empty() && ready_condition,
        address,
        labels: pod.metadata.labels.unwrap_or_default(),
        ports,
        node: spec.node_name.filter(|n| !n.is_empty()),
        weight: None,
        locality,
        service_account: Some(
            spec.service_account_name
                .filter(|sa| !sa.is_empty())
                .unwrap_or_else(|| "default".to_string()),
        ),
    })
}

/// A workload's locality from its labels ([`meshpilot_model::locality_label`]). It wins over
/// the locality of the Pod's Node, and is the only one a Pod in files has.
pub(crate) fn locality_label(labels: &BTreeMap<String, String>) -> Option<String> {
    meshpilot_model::locality_label(labels)
}

pub(super) fn endpoint_slice(doc: Value, ctx: &Ctx) -> Result<EndpointSlice, Diagnostic> {
    let slice: discovery::EndpointSlice = ctx.deserialize(doc)?;
    let Some(service) = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .filter(|s| !s.is_empty())
        .cloned()
    else {
        return Err(ctx.err(
            &format!("metadata.labels.{SERVICE_NAME_LABEL}"),
            format!("an EndpointSlice needs the `{SERVICE_NAME_LABEL}` label naming its Service"),
        ));
    };
    let mut ports = Vec::new();
    for (i, p) in slice.ports.unwrap_or_default().into_iter().enumerate() {
        if is_unproxied(p.protocol.as_deref()) {
            continue;
        }
        // A port without a number means "all ports": nothing to route to by number.
        let Some(number) = p.port else { continue };
        ports.push(SlicePort {
            name: p.name.unwrap_or_default(),
            port: ctx.port(&format!("ports[{i}].port"), number.into())?,
        });
    }
    let must_be_ip = matches!(slice.address_type.as_str(), "IPv4" | "IPv6");
    let mut endpoints = Vec::new();
    for (i, e) in slice.endpoints.unwrap_or_default().into_iter().enumerate() {
        if must_be_ip {
            for (j, a) in e.addresses.iter().enumerate() {
                if a.parse::<IpAddr>().is_err() {
                    return Err(ctx.err(
                        &format!("endpoints[{i}].addresses[{j}]"),
                        format!(
                            "`{a}` is not an IP address (addressType {})",
                            slice.address_type
                        ),
                    ));
                }
            }
        }
        let conditions = e.conditions.unwrap_or_default();
        let ready = conditions.ready.unwrap_or(true);
        endpoints.push(SliceEndpoint {
            addresses: e.addresses,
            ready,
            serving: conditions.serving.unwrap_or(ready),
            terminating: conditions.terminating.unwrap_or(false),
            pod: pod_ref(e.target_ref.as_ref()),
            node: e.node_name,
        });
    }
    Ok(EndpointSlice {
        service,
        ports,
        endpoints,
    })
}

/// v1 Endpoints, projected into the EndpointSlice shape: `addresses` become ready endpoints,
/// `notReadyAddresses` not-ready ones. The model keeps one port list per slice, so the ports
/// of all subsets are merged by name; a name with different numbers in different subsets is
/// logged and the first number kept (EndpointSlices do not have this limitation).
pub(super) fn endpoints(doc: Value, ctx: &Ctx, name: &str) -> Result<EndpointSlice, Diagnostic> {
    let eps: core::Endpoints = ctx.deserialize(doc)?;
    let mut ports: Vec<SlicePort> = Vec::new();
    let mut endpoints = Vec::new();
    for (i, subset) in eps.subsets.unwrap_or_default().into_iter().enumerate() {
        for (j, p) in subset.ports.iter().flatten().enumerate() {
            if is_unproxied(p.protocol.as_deref()) {
                continue;
            }
            let number = ctx.port(&format!("subsets[{i}].ports[{j}].port"), p.port.into())?;
            let port_name = p.name.clone().unwrap_or_default();
            match ports.iter().find(|existing| existing.name == port_name) {
                Some(existing) if existing.port != number => warn!(
                    endpoints = name,
                    port = port_name,
                    kept = existing.port,
                    ignored = number,
                    "Endpoints subsets disagree on a port number; use EndpointSlices for this"
                ),
                Some(_) => {}
                None => ports.push(SlicePort {
                    name: port_name,
                    port: number,
                }),
            }
        }
        let groups = [
            ("addresses", subset.addresses, true),
            ("notReadyAddresses", subset.not_ready_addresses, false),
        ];
        for (list, addresses, ready) in groups {
            for (j, a) in addresses.unwrap_or_default().into_iter().enumerate() {
                if a.ip.parse::<IpAddr>().is_err() {
                    return Err(ctx.err(
                        &format!("subsets[{i}].{list}[{j}].ip"),
                        format!("`{}` is not an IP address", a.ip),
                    ));
                }
                endpoints.push(SliceEndpoint {
                    addresses: vec![a.ip],
                    ready,
                    serving: ready,
                    terminating: false,
                    pod: pod_ref(a.target_ref.as_ref()),
                    node: a.node_name,
                });
            }
        }
    }
    Ok(EndpointSlice {
        service: name.to_string(),
        ports,
        endpoints,
    })
}

fn pod_ref(target: Option<&core::ObjectReference>) -> Option<String> {
    target
        .filter(|t| t.kind.as_deref() == Some("Pod"))
        .and_then(|t| t.name.clone())
}
