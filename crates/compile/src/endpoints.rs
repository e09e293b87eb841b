//! EDS: one ClusterLoadAssignment per EDS cluster, holding the service port's ready endpoints,
//! filtered by the subset's labels (an empty subset gives an empty assignment: Envoy answers 503),
//! in one group per locality (`REGION/ZONE/SUBZONE`; endpoints without one in a group without
//! one). How a client orders the groups by its own locality is `locality.rs`.

use envoy_types::pb::envoy::config::core::v3::{
    Address, SocketAddress, address, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::google::protobuf::UInt32Value;

use std::sync::{Arc, OnceLock};

use prost::Message;

use bytes::Bytes;

use super::clusters::cluster_uses_eds;
use super::locality::Locality;
use super::names::ServiceCluster;
use super::tls;
use meshpilot_index::{Named, ServiceInfo};
use meshpilot_model::{ConfigKey, DestinationRule};
use meshpilot_snapshot::Resource;

/// The assignments of one service's EDS clusters (none for DNS or passthrough services), made
/// from the service alone (`service`) or, for a subset, from the service and its rule
/// (`with_rule`).
pub(super) fn for_service(
    svc: &ServiceInfo,
    dr: Option<&Named<DestinationRule>>,
    names: &[ServiceCluster<'_>],
    service: &Arc<[ConfigKey]>,
    with_rule: &Arc<[ConfigKey]>,
) -> Vec<Arc<Resource>> {
    if !cluster_uses_eds(svc) {
        return Vec::new();
    }
    names
        .iter()
        .map(|c| {
            let body = encoded_assignment(svc, c.port, c.subset_name(), &c.name, dr);
            let sources = if c.subset.is_none() {
                service
            } else {
                with_rule
            };
            Arc::new(Resource::with_sources(
                c.name.clone(),
                Bytes::from(body),
                sources.clone(),
            ))
        })
        .collect()
}

/// The endpoints of `svc`'s `port` selected by `subset` (looked up in its DestinationRule).
fn selected<'a>(
    svc: &'a ServiceInfo,
    port: u16,
    subset: &str,
    dr: Option<&'a Named<DestinationRule>>,
) -> impl Iterator<Item = &'a meshpilot_index::Endpoint> + Clone {
    /// The selector of a subset the rule does not define: empty.
    static NONE: meshpilot_model::Labels = meshpilot_model::Labels::new();
    let selector = if subset.is_empty() {
        None
    } else {
        dr.map(|dr| {
            dr.spec
                .subsets
                .iter()
                .find(|s| s.name == subset)
                .map_or(&NONE, |s| &s.labels)
        })
    };
    svc.endpoints
        .get(&port)
        .into_iter()
        .flatten()
        .filter(move |e| selector.is_none_or(|sel| e.selected_by(sel)))
}

/// An endpoint's locality, `None` when it has none (or an empty one).
fn locality_of(e: &meshpilot_index::Endpoint) -> Option<&str> {
    e.locality.as_deref().filter(|l| !l.is_empty())
}

/// The endpoints [`selected`] by `subset`, grouped by locality: endpoints without one first,
/// then by locality name, each group in the endpoints' order.
pub(super) fn groups<'a>(
    svc: &'a ServiceInfo,
    port: u16,
    subset: &str,
    dr: Option<&'a Named<DestinationRule>>,
) -> Vec<(Option<&'a str>, Vec<&'a meshpilot_index::Endpoint>)> {
    let mut by_locality: std::collections::BTreeMap<Option<&str>, Vec<_>> = Default::default();
    for e in selected(svc, port, subset, dr) {
        by_locality.entry(locality_of(e)).or_default().push(e);
    }
    by_locality.into_iter().collect()
}

/// The ClusterLoadAssignment of `svc`'s `port` and `subset`, as a message (for clusters that
/// carry their endpoints inline, and the base of a client's own, `locality.rs`).
pub(super) fn assignment(
    svc: &ServiceInfo,
    port: u16,
    subset: &str,
    cluster_name: &str,
    dr: Option<&Named<DestinationRule>>,
) -> ClusterLoadAssignment {
    let lb_endpoint = |e: &meshpilot_index::Endpoint| LbEndpoint {
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(socket_address(&e.address, e.port)),
            ..Endpoint::default()
        })),
        load_balancing_weight: weight(e).map(|value| UInt32Value { value }),
        metadata: tls::speaks_istio_mtls(&e.labels).then(tls::istio_endpoint_metadata),
        ..LbEndpoint::default()
    };
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_string(),
        endpoints: groups(svc, port, subset, dr)
            .into_iter()
            .map(|(locality, eps)| LocalityLbEndpoints {
                locality: Locality::message(locality),
                lb_endpoints: eps.into_iter().map(lb_endpoint).collect(),
                ..LocalityLbEndpoints::default()
            })
            .collect(),
        ..ClusterLoadAssignment::default()
    }
}

fn weight(e: &meshpilot_index::Endpoint) -> Option<u32> {
    e.weight.filter(|w| *w > 0)
}

/// [`assignment`], encoded: the same bytes prost writes for it, without building the message
/// (EDS encodes one per cluster on every endpoint change; the message form allocated a string
/// and four messages per endpoint). Field numbers are those of `envoy.config.endpoint.v3`.
fn encoded_assignment(
    svc: &ServiceInfo,
    port: u16,
    subset: &str,
    cluster_name: &str,
    dr: Option<&Named<DestinationRule>>,
) -> Vec<u8> {
    use meshpilot_snapshot::encode::{
        delimited_len, put_delimited_header, put_string, put_varint, string_len, varint_len,
    };
    /// The `tlsMode: istio` metadata, encoded once: the same for every endpoint with a sidecar.
    static ISTIO_METADATA: OnceLock<Vec<u8>> = OnceLock::new();
    let istio_metadata =
        ISTIO_METADATA.get_or_init(|| tls::istio_endpoint_metadata().encode_to_vec());
    let metadata = |e: &meshpilot_index::Endpoint| {
        tls::speaks_istio_mtls(&e.labels).then_some(istio_metadata.as_slice())
    };
    // SocketAddress{address = 2, port_value = 3} in Address{socket_address = 1} in
    // Endpoint{address = 1} in LbEndpoint{endpoint = 1, metadata = 3,
    // load_balancing_weight = 4}.
    let sizes = |e: &meshpilot_index::Endpoint| {
        let socket = string_len(2, &e.address) + varint_len(3, u64::from(e.port));
        let address = delimited_len(1, socket);
        let endpoint = delimited_len(1, address);
        let weight = weight(e).map_or(0, |w| delimited_len(4, varint_len(1, u64::from(w))));
        let metadata = metadata(e).map_or(0, |m| delimited_len(3, m.len()));
        (
            socket,
            address,
            endpoint,
            delimited_len(1, endpoint) + metadata + weight,
        )
    };
    // Locality{region = 1, zone = 2, sub_zone = 3} in LocalityLbEndpoints{locality = 1}.
    let locality_len = |l: Option<&str>| {
        l.map_or(0, |l| {
            let l = Locality::parse(l);
            delimited_len(
                1,
                string_len(1, l.region) + string_len(2, l.zone) + string_len(3, l.sub_zone),
            )
        })
    };
    let one_group;
    let several;
    let eps = selected(svc, port, subset, dr);
    let Some(first) = eps.clone().next() else {
        let mut buf = Vec::with_capacity(string_len(1, cluster_name));
        put_string(1, cluster_name, &mut buf);
        return buf;
    };
    // Most services have one locality (or none): one group, walked twice (sizes, then bytes)
    // rather than collected, into one exact allocation. Several localities take a group each,
    // as `assignment` orders them.
    let grouped: &[(Option<&str>, Vec<&meshpilot_index::Endpoint>)] =
        if eps.clone().all(|e| locality_of(e) == locality_of(first)) {
            one_group = [(locality_of(first), Vec::new())];
            &one_group
        } else {
            several = groups(svc, port, subset, dr);
            &several
        };
    // LocalityLbEndpoints{locality = 1, lb_endpoints = 2}, in ClusterLoadAssignment{endpoints = 2}.
    let group_len = |i: usize| {
        let (locality, listed) = &grouped[i];
        locality_len(*locality)
            + Members::of(&eps, listed)
                .map(|e| delimited_len(2, sizes(e).3))
                .sum::<usize>()
    };
    let mut first_group = Some(group_len(0));
    let mut buf = Vec::with_capacity(
        string_len(1, cluster_name) + first_group.map_or(0, |g| delimited_len(2, g)),
    );
    put_string(1, cluster_name, &mut buf);
    for (i, (locality, listed)) in grouped.iter().enumerate() {
        let group = match first_group.take() {
            Some(len) => len,
            None => {
                let len = group_len(i);
                buf.reserve(delimited_len(2, len));
                len
            }
        };
        put_delimited_header(2, group, &mut buf);
        if let Some(l) = locality {
            let l = Locality::parse(l);
            put_delimited_header(
                1,
                string_len(1, l.region) + string_len(2, l.zone) + string_len(3, l.sub_zone),
                &mut buf,
            );
            put_string(1, l.region, &mut buf);
            put_string(2, l.zone, &mut buf);
            put_string(3, l.sub_zone, &mut buf);
        }
        for e in Members::of(&eps, listed) {
            let (socket, address, endpoint, lb_endpoint) = sizes(e);
            put_delimited_header(2, lb_endpoint, &mut buf);
            put_delimited_header(1, endpoint, &mut buf);
            put_delimited_header(1, address, &mut buf);
            put_delimited_header(1, socket, &mut buf);
            put_string(2, &e.address, &mut buf);
            put_varint(3, u64::from(e.port), &mut buf);
            if let Some(m) = metadata(e) {
                put_delimited_header(3, m.len(), &mut buf);
                buf.extend_from_slice(m);
            }
            if let Some(w) = weight(e) {
                put_delimited_header(4, varint_len(1, u64::from(w)), &mut buf);
                put_varint(1, u64::from(w), &mut buf);
            }
        }
    }
    buf
}

/// The endpoints of one locality group: all selected ones, or those listed.
enum Members<'s, 'a, I> {
    All(I),
    Listed(std::slice::Iter<'s, &'a meshpilot_index::Endpoint>),
}

impl<'s, 'a, I: Iterator<Item = &'a meshpilot_index::Endpoint> + Clone> Members<'s, 'a, I> {
    /// `listed`, or all of `all` when `listed` is empty (a service's only group).
    fn of(all: &I, listed: &'s [&'a meshpilot_index::Endpoint]) -> Self {
        if listed.is_empty() {
            Members::All(all.clone())
        } else {
            Members::Listed(listed.iter())
        }
    }
}

impl<'a, I: Iterator<Item = &'a meshpilot_index::Endpoint>> Iterator for Members<'_, 'a, I> {
    type Item = &'a meshpilot_index::Endpoint;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Members::All(i) => i.next(),
            Members::Listed(i) => i.next().copied(),
        }
    }
}

/// A TCP socket address.
pub fn socket_address(addr: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..SocketAddress::default()
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names;
    use meshpilot_index::{Endpoint as Ep, ServiceOrigin};
    use meshpilot_model::{ConfigKey, Kind, Labels, Meta, Subset};
    use prost::Message;
    use std::collections::BTreeMap;

    fn ep(address: &str, port: u16, version: &str, weight: Option<u32>) -> Ep {
        Ep {
            address: address.into(),
            port,
            labels: Labels::from([("version".to_string(), version.to_string())]),
            weight,
            locality: None,
            service_account: None,
        }
    }

    /// An endpoint whose pod has the injector's `tlsMode: istio` label.
    fn with_sidecar(mut e: Ep) -> Ep {
        e.labels
            .insert(tls::TLS_MODE_LABEL.to_string(), "istio".to_string());
        e
    }

    /// An endpoint at `locality`.
    fn at(mut e: Ep, locality: &str) -> Ep {
        e.locality = Some(locality.to_string());
        e
    }

    /// The hand-written encoding is byte for byte what prost writes for the message form:
    /// weights (set, zero, absent, multi-byte), `tlsMode` metadata, ports over 127, empty and
    /// non-empty subsets, an empty address, a port without endpoints, a subset selecting
    /// nothing, and localities (none, empty, partial, several, one shared by all).
    #[test]
    fn encoded_assignment_is_prosts_encoding_of_the_message() {
        let svc = ServiceInfo {
            hostname: "reviews.default.svc.cluster.local".into(),
            name: "reviews".into(),
            namespace: "default".into(),
            key: ConfigKey::new(Kind::Service, "default", "reviews"),
            origin: ServiceOrigin::Kubernetes,
            ports: vec![],
            cluster_ip: None,
            selector: None,
            export_to: Vec::new(),
            subject_alt_names: Vec::new(),
            endpoints: BTreeMap::from([
                (
                    9080,
                    vec![
                        ep("10.0.0.1", 9080, "v1", None),
                        ep("10.0.0.2", 65535, "v2", Some(300)),
                        ep("10.0.0.3", 1, "v2", Some(0)),
                        ep("", 80, "v1", Some(1)),
                        with_sidecar(ep("10.0.0.4", 9080, "v1", None)),
                        with_sidecar(ep("10.0.0.5", 9080, "v2", Some(7))),
                    ],
                ),
                (80, vec![]),
                (
                    81,
                    vec![
                        at(ep("10.0.1.1", 81, "v1", None), "r1/z1/s1"),
                        at(ep("10.0.1.2", 81, "v2", Some(3)), "r2"),
                        ep("10.0.1.3", 81, "v1", None),
                        at(ep("10.0.1.4", 81, "v1", None), "r1/z1/s1"),
                        at(ep("10.0.1.5", 81, "v2", None), ""),
                    ],
                ),
                (82, vec![at(ep("10.0.2.1", 82, "v1", None), "r1/z2")]),
            ]),
        };
        let dr = Named {
            key: ConfigKey::new(Kind::DestinationRule, "default", "reviews"),
            meta: Meta::default(),
            spec: DestinationRule {
                subsets: ["v1", "v2", "v3"]
                    .map(|v| Subset {
                        name: v.to_string(),
                        labels: Labels::from([("version".to_string(), v.to_string())]),
                        traffic_policy: None,
                    })
                    .to_vec(),
                ..DestinationRule::default()
            },
        };
        for port in [9080, 80, 81, 82, 83] {
            for subset in ["", "v1", "v2", "v3", "none"] {
                let name = names::outbound_cluster(port, subset, &svc.hostname);
                let want = assignment(&svc, port, subset, &name, Some(&dr)).encode_to_vec();
                let got = encoded_assignment(&svc, port, subset, &name, Some(&dr));
                assert_eq!(got, want, "port {port} subset {subset:?}");
                let decoded = ClusterLoadAssignment::decode(got.as_slice()).expect("decodes");
                assert_eq!(decoded.cluster_name, name);
            }
        }
        // The weighted endpoint really carries its weight through the encoding.
        let name = names::outbound_cluster(9080, "v2", &svc.hostname);
        let got = encoded_assignment(&svc, 9080, "v2", &name, Some(&dr));
        let decoded = ClusterLoadAssignment::decode(got.as_slice()).expect("decodes");
        let weights: Vec<Option<u32>> = decoded.endpoints[0]
            .lb_endpoints
            .iter()
            .map(|e| e.load_balancing_weight.map(|w| w.value))
            .collect();
        assert_eq!(weights, vec![Some(300), None, Some(7)]);
        // Only the endpoint with a sidecar says `tlsMode: istio`.
        let modes: Vec<bool> = decoded.endpoints[0]
            .lb_endpoints
            .iter()
            .map(|e| {
                e.metadata
                    .as_ref()
                    .and_then(|m| m.filter_metadata.get(tls::TRANSPORT_SOCKET_MATCH))
                    .is_some_and(|s| s == &tls::tls_mode_istio())
            })
            .collect();
        assert_eq!(modes, vec![false, false, true]);
        // Several localities make a group each, endpoints without one first.
        let name = names::outbound_cluster(81, "", &svc.hostname);
        let got = encoded_assignment(&svc, 81, "", &name, Some(&dr));
        let decoded = ClusterLoadAssignment::decode(got.as_slice()).expect("decodes");
        let groups: Vec<(Option<String>, usize)> = decoded
            .endpoints
            .iter()
            .map(|g| {
                (
                    g.locality
                        .as_ref()
                        .map(|l| format!("{}/{}/{}", l.region, l.zone, l.sub_zone)),
                    g.lb_endpoints.len(),
                )
            })
            .collect();
        let l = |r: &str, z: &str, s: &str| Some(format!("{r}/{z}/{s}"));
        assert_eq!(
            groups,
            vec![(None, 2), (l("r1", "z1", "s1"), 2), (l("r2", "", ""), 1)]
        );
    }
}
