//! EDS: one ClusterLoadAssignment per EDS cluster, holding the service port's ready endpoints,
//! filtered by the subset's labels (an empty subset gives an empty assignment: Envoy answers 503).

use envoy_types::pb::envoy::config::core::v3::{
    Address, SocketAddress, address, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::google::protobuf::UInt32Value;

use super::clusters::cluster_uses_eds;
use super::{names, resource};
use crate::index::{Named, ServiceInfo};
use crate::model::DestinationRule;
use crate::snapshot::Resource;

/// The assignments of one service's EDS clusters (none for DNS or passthrough services).
pub(super) fn for_service(svc: &ServiceInfo, dr: Option<&Named<DestinationRule>>) -> Vec<Resource> {
    let mut out = Vec::new();
    if !cluster_uses_eds(svc) {
        return out;
    }
    for port in &svc.ports {
        let mut subsets = vec![String::new()];
        if let Some(dr) = dr {
            subsets.extend(dr.spec.subsets.iter().map(|s| s.name.clone()));
        }
        for subset in subsets {
            let name = names::outbound_cluster(port.port, &subset, &svc.hostname);
            let cla = assignment(svc, port.port, &subset, &name, dr);
            let mut sources = vec![svc.key.clone()];
            if let Some(dr) = dr.filter(|_| !subset.is_empty()) {
                sources.push(dr.key.clone());
            }
            out.push(resource(&name, &cla, sources));
        }
    }
    out
}

/// The endpoints of `svc`'s `port` selected by `subset` (looked up in its DestinationRule).
pub(super) fn assignment(
    svc: &ServiceInfo,
    port: u16,
    subset: &str,
    cluster_name: &str,
    dr: Option<&Named<DestinationRule>>,
) -> ClusterLoadAssignment {
    let selector = if subset.is_empty() {
        None
    } else {
        dr.map(|dr| {
            dr.spec
                .subsets
                .iter()
                .find(|s| s.name == subset)
                .map(|s| s.labels.clone())
                .unwrap_or_default()
        })
    };
    let lb_endpoints: Vec<LbEndpoint> = svc
        .endpoints
        .get(&port)
        .into_iter()
        .flatten()
        .filter(|e| selector.as_ref().is_none_or(|sel| e.selected_by(sel)))
        .map(|e| LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(socket_address(&e.address, e.port)),
                ..Endpoint::default()
            })),
            load_balancing_weight: e
                .weight
                .filter(|w| *w > 0)
                .map(|value| UInt32Value { value }),
            ..LbEndpoint::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_string(),
        endpoints: if lb_endpoints.is_empty() {
            vec![]
        } else {
            vec![LocalityLbEndpoints {
                lb_endpoints,
                ..LocalityLbEndpoints::default()
            }]
        },
        ..ClusterLoadAssignment::default()
    }
}

/// A TCP socket address.
pub(crate) fn socket_address(addr: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..SocketAddress::default()
        })),
    }
}
