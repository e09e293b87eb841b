//! Partial decoding of the four resource types: only the fields a simulated proxy needs to
//! follow the xDS chain (which clusters use EDS and under what name, which route configurations
//! the listeners name) and to check an [`Expect`]ation. prost skips every other field, so this
//! costs a fraction of a full decode — the load tool shares the machine with the server.
//!
//! Field numbers are those of Envoy's v3 protos (`envoy.config.*.v3`).

use prost::Message;

use crate::mesh::Expect;
use crate::snapshot::XdsType;

/// `DiscoveryResponse` as the simulated proxy reads it: resource bodies are slices of the
/// received message (`Bytes`), not a copy per resource; prost skips the fields not listed here.
/// (The size received is measured on the wire by [`Received`], not from these fields.)
#[derive(Clone, PartialEq, Message)]
pub struct SotwResponse {
    #[prost(string, tag = "1")]
    pub version_info: String,
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<AnyValue>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub nonce: String,
}

/// `google.protobuf.Any`'s `value`, left as received (the type is the response's).
#[derive(Clone, PartialEq, Message)]
pub struct AnyValue {
    #[prost(bytes = "bytes", tag = "2")]
    pub value: bytes::Bytes,
}

/// `DeltaDiscoveryResponse`, read like [`SotwResponse`].
#[derive(Clone, PartialEq, Message)]
pub struct DeltaResponse {
    #[prost(string, tag = "1")]
    pub system_version_info: String,
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<DeltaResource>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub nonce: String,
    #[prost(string, repeated, tag = "6")]
    pub removed_resources: Vec<String>,
}

/// `envoy.service.discovery.v3.Resource`: the body and the name (as received: a slice, not
/// an allocation per resource; [`DeltaResource::name`] reads it).
#[derive(Clone, PartialEq, Message)]
pub struct DeltaResource {
    #[prost(message, optional, tag = "2")]
    pub resource: Option<AnyValue>,
    #[prost(bytes = "bytes", tag = "3")]
    pub name: bytes::Bytes,
}

impl DeltaResource {
    /// The resource's name; empty when it is not UTF-8 (the body's own name is used then).
    pub fn name(&self) -> &str {
        std::str::from_utf8(&self.name).unwrap_or_default()
    }
}

/// A decoded response with the size of its encoding as received.
pub struct Received<M> {
    pub bytes: usize,
    pub message: M,
}

/// `Cluster`: name, the `type` of the discovery-type oneof, and `eds_cluster_config`.
#[derive(Clone, PartialEq, Message)]
struct Cluster {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int32, optional, tag = "2")]
    r#type: Option<i32>,
    #[prost(message, optional, tag = "3")]
    eds: Option<EdsClusterConfig>,
}

#[derive(Clone, PartialEq, Message)]
struct EdsClusterConfig {
    #[prost(string, tag = "2")]
    service_name: String,
}

/// `DiscoveryType.EDS`.
const EDS: i32 = 3;

/// `Listener`: name, `filter_chains` and `default_filter_chain`.
#[derive(Clone, PartialEq, Message)]
struct Listener {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "3")]
    filter_chains: Vec<FilterChain>,
    #[prost(message, optional, tag = "25")]
    default_filter_chain: Option<FilterChain>,
}

#[derive(Clone, PartialEq, Message)]
struct FilterChain {
    #[prost(message, repeated, tag = "3")]
    filters: Vec<Filter>,
}

#[derive(Clone, PartialEq, Message)]
struct Filter {
    #[prost(message, optional, tag = "4")]
    typed_config: Option<AnyMsg>,
}

#[derive(Clone, PartialEq, Message)]
struct AnyMsg {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// `HttpConnectionManager`: only `rds`.
#[derive(Clone, PartialEq, Message)]
struct Hcm {
    #[prost(message, optional, tag = "3")]
    rds: Option<Rds>,
}

#[derive(Clone, PartialEq, Message)]
struct Rds {
    #[prost(string, tag = "2")]
    route_config_name: String,
}

/// Any resource's `name` (field 1 in Cluster, ClusterLoadAssignment, Listener and
/// RouteConfiguration alike).
#[derive(Clone, PartialEq, Message)]
struct Named {
    #[prost(string, tag = "1")]
    name: String,
}

/// A `RouteConfiguration`'s virtual host down to weighted clusters.
#[derive(Clone, PartialEq, Message)]
struct VirtualHost {
    #[prost(message, repeated, tag = "3")]
    routes: Vec<Route>,
}

#[derive(Clone, PartialEq, Message)]
struct Route {
    #[prost(message, optional, tag = "2")]
    route: Option<RouteAction>,
}

#[derive(Clone, PartialEq, Message)]
struct RouteAction {
    #[prost(message, optional, tag = "3")]
    weighted_clusters: Option<WeightedCluster>,
}

#[derive(Clone, PartialEq, Message)]
struct WeightedCluster {
    #[prost(message, repeated, tag = "1")]
    clusters: Vec<ClusterWeight>,
}

#[derive(Clone, PartialEq, Message)]
struct ClusterWeight {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    weight: Option<UInt32>,
}

#[derive(Clone, PartialEq, Message)]
struct UInt32 {
    #[prost(uint32, tag = "1")]
    value: u32,
}

/// What a simulated proxy keeps of one resource: its name and the names it makes the proxy
/// ask for (a cluster's ClusterLoadAssignment, a listener's route configurations).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    pub name: String,
    pub needs: Vec<String>,
}

/// Decodes what the proxy keeps of one resource; `None` when the bytes are not a valid message.
pub fn summarize(t: XdsType, body: &[u8]) -> Option<Summary> {
    match t {
        XdsType::Cluster => {
            let c = Cluster::decode(body).ok()?;
            let needs = if c.r#type == Some(EDS) {
                let service = c.eds.map(|e| e.service_name).unwrap_or_default();
                vec![if service.is_empty() {
                    c.name.clone()
                } else {
                    service
                }]
            } else {
                Vec::new()
            };
            Some(Summary {
                name: c.name,
                needs,
            })
        }
        XdsType::Listener => {
            let l = Listener::decode(body).ok()?;
            let mut needs = Vec::new();
            for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
                for f in &chain.filters {
                    if let Some(any) = &f.typed_config
                        && any.type_url == HCM
                        && let Ok(hcm) = Hcm::decode(any.value.as_slice())
                        && let Some(rds) = hcm.rds
                        && !needs.contains(&rds.route_config_name)
                    {
                        needs.push(rds.route_config_name);
                    }
                }
            }
            Some(Summary {
                name: l.name,
                needs,
            })
        }
        XdsType::Endpoint | XdsType::Route => Some(Summary {
            name: Named::decode(body).ok()?.name,
            needs: Vec::new(),
        }),
    }
}

/// The type an expectation is checked on.
pub fn expect_type(e: &Expect) -> XdsType {
    match e {
        Expect::Endpoint { .. } => XdsType::Endpoint,
        Expect::Weight { .. } => XdsType::Route,
        Expect::ClusterPresent { .. } | Expect::ClusterAbsent { .. } => XdsType::Cluster,
    }
}

/// The resource name whose body decides a content expectation (`None` for CDS membership,
/// which is checked on the names the proxy holds).
pub fn expect_resource(e: &Expect) -> Option<&str> {
    match e {
        Expect::Endpoint { cla, .. } => Some(cla),
        Expect::Weight { route, .. } => Some(route),
        Expect::ClusterPresent { .. } | Expect::ClusterAbsent { .. } => None,
    }
}

/// True when `body` (the resource [`expect_resource`] names) satisfies the expectation.
pub fn body_satisfies(e: &Expect, body: &[u8]) -> bool {
    match e {
        // Walked down to the socket addresses without building the message: every proxy
        // checks every changed assignment it receives while a change is pending.
        // ClusterLoadAssignment.endpoints (2) → LocalityLbEndpoints.lb_endpoints (2) →
        // LbEndpoint.endpoint (1) → Endpoint.address (1) → Address.socket_address (1) →
        // SocketAddress.address (2).
        Expect::Endpoint { ip, .. } => any_at_path(body, &[2, 2, 1, 1, 1, 2], &|address| {
            address == ip.as_bytes()
        }),
        Expect::Weight {
            cluster, weight, ..
        } => {
            // Only the virtual hosts that mention the cluster are decoded: a route
            // configuration of 1,000 virtual hosts is checked by 2,000 proxies per edit.
            let finder = memchr::memmem::Finder::new(cluster.as_bytes());
            // Every virtual host (field 2) is walked, so a malformed configuration fails.
            let mut found = false;
            let well_formed = any_field(body, 2, |vh| {
                found = found
                    || finder.find(vh).is_some()
                        && VirtualHost::decode(vh).is_ok_and(|vh| {
                            vh.routes
                                .into_iter()
                                .filter_map(|r| r.route?.weighted_clusters)
                                .flat_map(|wc| wc.clusters)
                                .any(|c| {
                                    &c.name == cluster && c.weight.map(|w| w.value) == Some(*weight)
                                })
                        });
                false
            });
            well_formed.is_some() && found
        }
        Expect::ClusterPresent { .. } | Expect::ClusterAbsent { .. } => false,
    }
}

/// True when some field reached from `body` through the field numbers of `path` (each a
/// length-delimited field; repeated ones are all tried) satisfies `f`.
fn any_at_path(body: &[u8], path: &[u64], f: &dyn Fn(&[u8]) -> bool) -> bool {
    match path.split_first() {
        None => f(body),
        Some((field, rest)) => {
            any_field(body, *field, |inner| any_at_path(inner, rest, f)) == Some(true)
        }
    }
}

/// Calls `f` with each length-delimited field number `want` of the message `body`, in order,
/// until it returns true. `Some(true)` when it did, `Some(false)` when no field did, `None`
/// when the bytes are not a well-formed message (as far as they were read).
fn any_field<'a>(
    mut body: &'a [u8],
    want: u64,
    mut f: impl FnMut(&'a [u8]) -> bool,
) -> Option<bool> {
    while !body.is_empty() {
        let key = prost::encoding::decode_varint(&mut body).ok()?;
        let (field, wire_type) = (key >> 3, key & 7);
        match wire_type {
            0 => {
                prost::encoding::decode_varint(&mut body).ok()?;
            }
            1 => body = body.get(8..)?,
            5 => body = body.get(4..)?,
            2 => {
                let len = usize::try_from(prost::encoding::decode_varint(&mut body).ok()?).ok()?;
                let value = body.get(..len)?;
                if field == want && f(value) {
                    return Some(true);
                }
                body = &body[len..];
            }
            _ => return None,
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::{
        Cluster as FullCluster, cluster::ClusterDiscoveryType, cluster::DiscoveryType,
        cluster::EdsClusterConfig as FullEds,
    };
    use envoy_types::pb::envoy::config::core::v3::{
        Address as FullAddress, SocketAddress as FullSocket, address,
    };
    use envoy_types::pb::envoy::config::endpoint::v3::{
        ClusterLoadAssignment, Endpoint as FullEndpoint, LbEndpoint as FullLb,
        LocalityLbEndpoints as FullLocality, lb_endpoint::HostIdentifier,
    };

    #[test]
    fn eds_clusters_name_their_assignment() {
        let c = FullCluster {
            name: "outbound|80||a".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(FullEds {
                eds_config: None,
                service_name: "outbound|80||a".into(),
            }),
            ..Default::default()
        };
        let s = summarize(XdsType::Cluster, &c.encode_to_vec()).expect("decodes");
        assert_eq!(s.name, "outbound|80||a");
        assert_eq!(s.needs, vec!["outbound|80||a".to_string()]);
        let static_cluster = FullCluster {
            name: "BlackHoleCluster".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
            ..Default::default()
        };
        let s = summarize(XdsType::Cluster, &static_cluster.encode_to_vec()).expect("decodes");
        assert!(s.needs.is_empty());
    }

    #[test]
    fn endpoint_expectation_reads_addresses() {
        let endpoint = |ip: &str, hostname: &str| FullLb {
            host_identifier: Some(HostIdentifier::Endpoint(FullEndpoint {
                address: Some(FullAddress {
                    address: Some(address::Address::SocketAddress(FullSocket {
                        address: ip.into(),
                        ..Default::default()
                    })),
                }),
                hostname: hostname.into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        // The address 10.0.0.8 is in the bytes (cluster name, a hostname) but no endpoint's.
        let cla = ClusterLoadAssignment {
            cluster_name: "10.0.0.8".into(),
            endpoints: vec![
                FullLocality {
                    lb_endpoints: vec![endpoint("10.0.0.7", "10.0.0.8")],
                    ..Default::default()
                },
                FullLocality {
                    lb_endpoints: vec![endpoint("10.0.0.5", ""), endpoint("10.0.0.9", "")],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let body = cla.encode_to_vec();
        let expect = |ip: &str| Expect::Endpoint {
            cla: "c".into(),
            ip: ip.into(),
        };
        assert!(body_satisfies(&expect("10.0.0.7"), &body));
        assert!(
            body_satisfies(&expect("10.0.0.9"), &body),
            "a later locality"
        );
        assert!(!body_satisfies(&expect("10.0.0.8"), &body));
        assert!(
            !body_satisfies(&expect("10.0.0.9"), &body[..body.len() - 3]),
            "cut short"
        );
    }

    #[test]
    fn weight_expectation_reads_only_the_virtual_host_naming_the_cluster() {
        use envoy_types::pb::envoy::config::route::v3::{
            Route as FullRoute, RouteAction as FullAction, RouteConfiguration as FullRc,
            VirtualHost as FullVh, WeightedCluster as FullWc, route::Action,
            route_action::ClusterSpecifier, weighted_cluster::ClusterWeight as FullCw,
        };
        let vh = |name: &str, clusters: &[(&str, u32)]| FullVh {
            name: name.to_string(),
            domains: vec![name.to_string()],
            routes: vec![FullRoute {
                action: Some(Action::Route(FullAction {
                    cluster_specifier: Some(ClusterSpecifier::WeightedClusters(FullWc {
                        clusters: clusters
                            .iter()
                            .map(|(n, w)| FullCw {
                                name: n.to_string(),
                                weight: Some(envoy_types::pb::google::protobuf::UInt32Value {
                                    value: *w,
                                }),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    })),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        };
        let rc = FullRc {
            name: "80".into(),
            virtual_hosts: vec![
                vh("a", &[("outbound|80|v1|a", 90), ("outbound|80|v2|a", 10)]),
                vh("b", &[("outbound|80|v1|b", 30), ("outbound|80|v2|b", 70)]),
            ],
            ..Default::default()
        }
        .encode_to_vec();
        let expect = |cluster: &str, weight: u32| Expect::Weight {
            route: "80".into(),
            cluster: cluster.into(),
            weight,
        };
        assert!(body_satisfies(&expect("outbound|80|v2|b", 70), &rc));
        assert!(!body_satisfies(&expect("outbound|80|v2|b", 10), &rc));
        assert!(!body_satisfies(&expect("outbound|80|v3|b", 70), &rc));
        assert!(!body_satisfies(
            &expect("outbound|80|v2|b", 70),
            &rc[..rc.len() - 3]
        ));
    }
}
