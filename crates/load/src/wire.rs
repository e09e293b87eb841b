//! Partial reading of responses and of the four resource types: only the fields a simulated
//! proxy needs to follow the xDS chain (which clusters use EDS and under what name, which route
//! configurations the listeners name) and to check an [`Expect`]ation. Responses are decoded by
//! prost into messages that skip every other field; resources are read by walking their
//! encoding, names borrowed from the bytes. This costs a fraction of a full decode — the load
//! tool shares the machine with the server.
//!
//! Field numbers are those of Envoy's v3 protos (`envoy.config.*.v3`).

use prost::Message;
use smallvec::SmallVec;

use crate::mesh::Expect;
use meshpilot_snapshot::XdsType;

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

/// `Cluster.type` (field 2), the discovery type: `DiscoveryType.EDS`.
const EDS: u64 = 3;

const HCM: &[u8] = b"type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

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
/// ask for (a cluster's ClusterLoadAssignment, a listener's route configurations), borrowed
/// from the received bytes — a proxy keeps them only once they are shared (`proxy::Names`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary<'a> {
    pub name: &'a str,
    pub needs: SmallVec<[&'a str; 1]>,
}

/// Reads what the proxy keeps of one resource, walking its encoding without building the
/// message (a thousand proxies read the same thousand clusters); `None` when the bytes are not
/// a well-formed message or a name is not UTF-8.
///
/// Field numbers: every type's `name` is 1. `Cluster`: `type` 2, `eds_cluster_config` 3 →
/// `service_name` 2. `Listener`: `filter_chains` 3 and `default_filter_chain` 25 → `filters`
/// 3 → `typed_config` 4 (an `Any`: `type_url` 1, `value` 2) → `HttpConnectionManager.rds` 3
/// → `route_config_name` 2. As in a decode, the last occurrence of a singular field wins.
pub fn summarize(t: XdsType, body: &[u8]) -> Option<Summary<'_>> {
    let mut s = Summary::default();
    let mut bad = false;
    let mut eds = false;
    let mut service = None;
    walk(body, |field, value| {
        match (field, value) {
            (1, Value::Bytes(b)) => match std::str::from_utf8(b) {
                Ok(name) => s.name = name,
                Err(_) => bad = true,
            },
            (2, Value::Varint(v)) if t == XdsType::Cluster => eds = v == EDS,
            (3, Value::Bytes(config)) if t == XdsType::Cluster => {
                let found = walk(config, |f, v| {
                    if let (2, Value::Bytes(b)) = (f, v) {
                        service = Some(b);
                    }
                    false
                });
                bad |= found.is_none();
            }
            (3 | 25, Value::Bytes(chain)) if t == XdsType::Listener => {
                bad |= !chain_routes(chain, &mut s.needs);
            }
            _ => {}
        }
        false
    })?;
    if bad {
        return None;
    }
    if eds {
        s.needs.push(match service.filter(|b| !b.is_empty()) {
            Some(b) => std::str::from_utf8(b).ok()?,
            None => s.name,
        });
    }
    Some(s)
}

/// Adds the route configurations a filter chain's HTTP connection managers name to `out` (once
/// each); false when the chain is malformed.
fn chain_routes<'a>(chain: &'a [u8], out: &mut SmallVec<[&'a str; 1]>) -> bool {
    let mut ok = true;
    let walked = any_field(chain, 3, |filter| {
        let mut filter_ok = true;
        let walked = any_field(filter, 4, |any| {
            filter_ok &= hcm_route(any, out);
            false
        });
        ok &= filter_ok && walked.is_some();
        false
    });
    ok && walked.is_some()
}

/// Adds the route configuration named by `any` (an `Any`) to `out` when it holds an HTTP
/// connection manager using RDS; false when it is malformed.
fn hcm_route<'a>(any: &'a [u8], out: &mut SmallVec<[&'a str; 1]>) -> bool {
    let (mut hcm, mut value) = (false, None);
    let walked = walk(any, |field, v| {
        match (field, v) {
            (1, Value::Bytes(url)) => hcm = url == HCM,
            (2, Value::Bytes(b)) => value = Some(b),
            _ => {}
        }
        false
    });
    let (Some(_), true, Some(value)) = (walked, hcm, value) else {
        return walked.is_some();
    };
    let (mut rds_ok, mut name) = (true, None);
    let walked = any_field(value, 3, |rds| {
        rds_ok &= walk(rds, |field, v| {
            if let (2, Value::Bytes(b)) = (field, v) {
                name = Some(b);
            }
            false
        })
        .is_some();
        false
    });
    if !rds_ok || walked.is_none() {
        return false;
    }
    match name.map(std::str::from_utf8) {
        Some(Ok(n)) => {
            if !out.contains(&n) {
                out.push(n);
            }
            true
        }
        Some(Err(_)) => false,
        None => true,
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

/// One field's value as encoded.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Varint(u64),
    /// Length-delimited: a string, bytes or a message.
    Bytes(&'a [u8]),
    /// A fixed 32- or 64-bit value (not read).
    Fixed,
}

/// Calls `f` with each field (number, value) of the message `body`, in order, until it returns
/// true. `Some(true)` when it did, `Some(false)` when every field was read, `None` when the
/// bytes are not a well-formed message (as far as they were read).
fn walk<'a>(mut body: &'a [u8], mut f: impl FnMut(u64, Value<'a>) -> bool) -> Option<bool> {
    use prost::encoding::decode_varint;
    while !body.is_empty() {
        let key = decode_varint(&mut body).ok()?;
        let (field, wire_type) = (key >> 3, key & 7);
        if field == 0 {
            return None;
        }
        let value = match wire_type {
            0 => Value::Varint(decode_varint(&mut body).ok()?),
            1 => {
                body = body.get(8..)?;
                Value::Fixed
            }
            5 => {
                body = body.get(4..)?;
                Value::Fixed
            }
            2 => {
                let len = usize::try_from(decode_varint(&mut body).ok()?).ok()?;
                let value = body.get(..len)?;
                body = &body[len..];
                Value::Bytes(value)
            }
            _ => return None,
        };
        if f(field, value) {
            return Some(true);
        }
    }
    Some(false)
}

/// Calls `f` with each length-delimited field number `want` of the message `body`, in order,
/// until it returns true; the result as [`walk`]'s.
fn any_field<'a>(body: &'a [u8], want: u64, mut f: impl FnMut(&'a [u8]) -> bool) -> Option<bool> {
    walk(
        body,
        |field, value| matches!(value, Value::Bytes(b) if field == want && f(b)),
    )
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
        let body = c.encode_to_vec();
        let s = summarize(XdsType::Cluster, &body).expect("decodes");
        assert_eq!(s.name, "outbound|80||a");
        assert_eq!(s.needs.as_slice(), ["outbound|80||a"]);
        let static_cluster = FullCluster {
            name: "BlackHoleCluster".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
            ..Default::default()
        };
        let body = static_cluster.encode_to_vec();
        let s = summarize(XdsType::Cluster, &body).expect("decodes");
        assert!(s.needs.is_empty());
    }

    #[test]
    fn an_eds_cluster_without_a_service_name_needs_its_own_name() {
        let c = FullCluster {
            name: "outbound|80||b".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(FullEds::default()),
            ..Default::default()
        };
        let body = c.encode_to_vec();
        let s = summarize(XdsType::Cluster, &body).expect("decodes");
        assert_eq!(s.needs.as_slice(), ["outbound|80||b"]);
    }

    #[test]
    fn listeners_need_the_route_configurations_their_managers_name_once() {
        use envoy_types::pb::envoy::config::listener::v3::{
            Filter as FullFilter, FilterChain as FullChain, Listener as FullListener,
            filter::ConfigType,
        };
        use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
            HttpConnectionManager, Rds as FullRds, http_connection_manager::RouteSpecifier,
        };
        let filter = |type_url: &str, route: &str| FullFilter {
            name: "f".into(),
            config_type: Some(ConfigType::TypedConfig(prost_types_any(
                type_url,
                HttpConnectionManager {
                    route_specifier: Some(RouteSpecifier::Rds(FullRds {
                        route_config_name: route.into(),
                        ..Default::default()
                    })),
                    ..Default::default()
                }
                .encode_to_vec(),
            ))),
        };
        let hcm = std::str::from_utf8(HCM).expect("utf-8");
        let listener = FullListener {
            name: "0.0.0.0_15001".into(),
            filter_chains: vec![
                FullChain {
                    filters: vec![filter(hcm, "80"), filter("type.googleapis.com/other", "x")],
                    ..Default::default()
                },
                FullChain {
                    filters: vec![filter(hcm, "9080"), filter(hcm, "80")],
                    ..Default::default()
                },
            ],
            default_filter_chain: Some(FullChain {
                filters: vec![filter(hcm, "8080")],
                ..Default::default()
            }),
            ..Default::default()
        };
        let body = listener.encode_to_vec();
        let s = summarize(XdsType::Listener, &body).expect("decodes");
        assert_eq!(s.name, "0.0.0.0_15001");
        assert_eq!(s.needs.as_slice(), ["80", "9080", "8080"]);
        assert_eq!(summarize(XdsType::Listener, &body[..body.len() - 2]), None);
    }

    fn prost_types_any(type_url: &str, value: Vec<u8>) -> envoy_types::pb::google::protobuf::Any {
        envoy_types::pb::google::protobuf::Any {
            type_url: type_url.into(),
            value,
        }
    }

    #[test]
    fn malformed_resources_and_names_are_not_read() {
        let cla = ClusterLoadAssignment {
            cluster_name: "outbound|80||a".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let s = summarize(XdsType::Endpoint, &cla).expect("decodes");
        assert_eq!(s.name, "outbound|80||a");
        assert!(s.needs.is_empty());
        // Cut inside the name; a name that is not UTF-8; a field numbered 0.
        assert_eq!(summarize(XdsType::Endpoint, &cla[..cla.len() - 1]), None);
        assert_eq!(summarize(XdsType::Route, &[0x0a, 0x02, 0xff, 0xfe]), None);
        assert_eq!(summarize(XdsType::Route, &[0x00, 0x01]), None);
        // An EDS cluster whose service name is not UTF-8.
        assert_eq!(
            summarize(
                XdsType::Cluster,
                &[0x10, 0x03, 0x1a, 0x04, 0x12, 0x02, 0xff, 0xfe]
            ),
            None
        );
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
