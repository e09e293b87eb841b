//! CDS: one cluster per service port (`outbound|PORT||HOST`) and one per DestinationRule subset
//! (`outbound|PORT|SUBSET|HOST`); Kubernetes services and STATIC ServiceEntries use EDS, DNS
//! ServiceEntries STRICT_DNS with inline endpoints, NONE resolution ServiceEntries ORIGINAL_DST
//! (the connection goes to the address the client dialed), and so do headless Services on
//! sidecars (gateways, which have no dialed pod address, take their endpoints over EDS). Plus Istio's
//! `BlackHoleCluster` and `PassthroughCluster`.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, EdsClusterConfig, LbPolicy,
};
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, config_source::ConfigSourceSpecifier,
};

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use prost::Message;

use super::cluster_policy::{self, ClusterPolicy, DEFAULT_CONNECT_TIMEOUT};
use super::cluster_tls::{self, AutoMtls};
use super::{duration, endpoints, names, resource};
use meshpilot_index::{Named, ServiceInfo, ServiceOrigin};
use meshpilot_model::ConfigKey;
use meshpilot_model::{DestinationRule, Resolution};
use meshpilot_snapshot::Resource;

/// The ADS config source used by every EDS cluster and RDS listener.
pub fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..ConfigSource::default()
    }
}

/// The clusters of one service: one per port, and one per port and DestinationRule subset, each
/// made from `sources` (the service and its rule) and named by `names`
/// ([`names::service_clusters`]).
pub(super) fn for_service(
    svc: &ServiceInfo,
    dr: Option<&Named<DestinationRule>>,
    names: &[names::ServiceCluster<'_>],
    sources: &Arc<[ConfigKey]>,
    auto: &AutoMtls,
    proxies: cluster_tls::For,
) -> Vec<Arc<Resource>> {
    let resolution = resolution(svc, proxies);
    let eds = resolution == Resolution::Static;
    let no_auto_mtls = AutoMtls::default();
    names
        .iter()
        .filter_map(|c| {
            let mut policy = ClusterPolicy::of(dr.map(|d| &d.spec), c.subset, c.port);
            let auto_mtls = if cluster_tls::withheld(proxies, policy.tls) {
                policy.tls = None;
                &no_auto_mtls
            } else {
                auto
            };
            // HTTP/2 ports carry protocol options, so they leave the shared-bytes path.
            let http2 = svc
                .port(c.port)
                .is_some_and(|p| super::inbound::outbound_upstream_protocol(p.protocol).is_some());
            let plain = policy.is_default() && policy.tls.is_none() && !auto_mtls.enabled;
            let body = if plain && eds && !http2 {
                // Most clusters: every byte but the name is the same.
                plain_eds_cluster(&c.name)
            } else {
                let built = cluster(
                    svc,
                    resolution,
                    c.port,
                    c.subset_name(),
                    &c.name,
                    &policy,
                    dr,
                    auto_mtls,
                );
                // As istiod: a DNS cluster with no endpoint to resolve (a ServiceEntry whose
                // `workloadSelector` selects nothing, a subset whose labels match no endpoint)
                // is left out, not sent empty.
                if built
                    .load_assignment
                    .as_ref()
                    .is_some_and(|a| a.endpoints.is_empty())
                {
                    return None;
                }
                built.encode_to_vec()
            };
            Some(Arc::new(Resource::with_sources(
                c.name.clone(),
                Bytes::from(body),
                sources.clone(),
            )))
        })
        .collect()
}

/// The encoding of an EDS cluster with no traffic policy named `name`: the bytes prost writes
/// for what [`cluster`] builds, made from the parts that do not depend on the name (built once)
/// and the name. prost writes fields in tag order: `name` (1), the discovery type (2),
/// `eds_cluster_config` (3: `eds_config`, `service_name`), then the rest. Building and encoding
/// the whole `Cluster` message for each of 10,000 services was a fifth of a full compile.
fn plain_eds_cluster(name: &str) -> Vec<u8> {
    use meshpilot_snapshot::encode::{delimited_len, put_delimited_header, put_string, string_len};
    /// The discovery type; `eds_cluster_config.eds_config`; every field after the third.
    static PARTS: OnceLock<[Vec<u8>; 3]> = OnceLock::new();
    let [kind, eds_config, rest] = PARTS.get_or_init(|| {
        let mut rest = plain_eds_cluster_message("");
        let kind = Cluster {
            cluster_discovery_type: rest.cluster_discovery_type.take(),
            ..Cluster::default()
        };
        let eds_config = rest
            .eds_cluster_config
            .take()
            .and_then(|e| e.eds_config)
            .unwrap_or_default();
        [
            kind.encode_to_vec(),
            eds_config.encode_to_vec(),
            rest.encode_to_vec(),
        ]
    });
    let eds_len = delimited_len(1, eds_config.len()) + string_len(2, name);
    let mut buf = Vec::with_capacity(
        string_len(1, name) + kind.len() + delimited_len(3, eds_len) + rest.len(),
    );
    put_string(1, name, &mut buf);
    buf.extend_from_slice(kind);
    put_delimited_header(3, eds_len, &mut buf);
    put_delimited_header(1, eds_config.len(), &mut buf);
    buf.extend_from_slice(eds_config);
    put_string(2, name, &mut buf);
    buf.extend_from_slice(rest);
    buf
}

/// The message [`plain_eds_cluster`] encodes: [`cluster`] for a Kubernetes service's port with no
/// traffic policy.
fn plain_eds_cluster_message(name: &str) -> Cluster {
    let svc = ServiceInfo {
        hostname: "".into(),
        name: "".into(),
        namespace: "".into(),
        key: meshpilot_model::ConfigKey::new(meshpilot_model::Kind::Service, "", ""),
        origin: ServiceOrigin::Kubernetes,
        ports: Vec::new(),
        cluster_ip: None,
        selector: None,
        export_to: Vec::new(),
        subject_alt_names: Vec::new(),
        endpoints: Default::default(),
    };
    cluster(
        &svc,
        Resolution::Static,
        0,
        "",
        name,
        &ClusterPolicy::default(),
        None,
        &AutoMtls::default(),
    )
}

/// Istio's catch-all clusters, the same for every proxy.
pub(super) fn catch_all() -> Vec<Resource> {
    vec![
        resource(names::BLACKHOLE, &blackhole(), vec![]),
        resource(names::PASSTHROUGH, &passthrough(), vec![]),
    ]
}

/// True when the service's shared clusters (those gateways get) take endpoints over EDS.
pub fn cluster_uses_eds(svc: &ServiceInfo) -> bool {
    resolution(svc, cluster_tls::For::Everyone) == Resolution::Static
}

/// True for a wildcard host (`*.example.com`) that gets no cluster, listener or virtual host:
/// the host itself names no address to balance over. A ServiceEntry of resolution NONE serves
/// one (as istiod: an ORIGINAL_DST cluster, to the address the client dialled), and so does
/// one of resolution STATIC, whose endpoints are listed addresses (istiod's validation only
/// warns of its wildcard, and it builds the usual EDS cluster, listeners and virtual host).
pub(super) fn is_unserved_wildcard(svc: &ServiceInfo) -> bool {
    svc.hostname.starts_with('*')
        && !matches!(
            svc.origin,
            ServiceOrigin::ServiceEntry {
                resolution: Resolution::None | Resolution::Static,
                ..
            }
        )
}

/// How the clusters of `svc` compiled for `proxies` find their endpoints: `Static` is EDS.
fn resolution(svc: &ServiceInfo, proxies: cluster_tls::For) -> Resolution {
    match svc.origin {
        ServiceOrigin::Kubernetes => Resolution::Static,
        // istiod's `Passthrough` on sidecars: the client picked the pod (by its DNS name), so
        // the connection goes where it was dialed. A gateway has no such address: EDS.
        ServiceOrigin::Headless => match proxies {
            cluster_tls::For::Sidecars => Resolution::None,
            cluster_tls::For::Everyone => Resolution::Static,
        },
        // istiod's DNS load balancing (`DNSLB`): STRICT_DNS to the external name.
        ServiceOrigin::ExternalName => Resolution::Dns,
        ServiceOrigin::ServiceEntry { resolution, .. } => resolution,
    }
}

/// How often Envoy re-resolves a DNS cluster: the mesh default `dnsRefreshRate` (60 s).
const DNS_REFRESH_RATE: std::time::Duration = std::time::Duration::from_secs(60);

/// One cluster of `svc`, finding its endpoints as `resolution` says (which differs between
/// sidecars and gateways for headless Services, so the caller decides it).
#[allow(clippy::too_many_arguments)]
fn cluster(
    svc: &ServiceInfo,
    resolution: Resolution,
    port: u16,
    subset: &str,
    name: &str,
    policy: &ClusterPolicy<'_>,
    dr: Option<&Named<DestinationRule>>,
    auto_mtls: &AutoMtls,
) -> Cluster {
    let mut c = Cluster {
        name: name.to_string(),
        ..Cluster::default()
    };
    match resolution {
        Resolution::Static => {
            c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
            c.eds_cluster_config = Some(EdsClusterConfig {
                eds_config: Some(ads()),
                service_name: name.to_string(),
            });
        }
        Resolution::Dns | Resolution::DnsRoundRobin => {
            let t = if resolution == Resolution::Dns {
                DiscoveryType::StrictDns
            } else {
                DiscoveryType::LogicalDns
            };
            c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(t as i32));
            c.dns_lookup_family = DnsLookupFamily::V4Only as i32;
            // As istiod: the mesh's refresh rate, or sooner when the record's TTL says so.
            // Envoy deprecates these fields for a DNS cluster extension, but still reads them
            // and istiod still writes them.
            #[allow(deprecated)]
            {
                c.dns_refresh_rate = Some(duration(DNS_REFRESH_RATE));
                c.respect_dns_ttl = true;
            }
            c.load_assignment = Some(endpoints::assignment(svc, port, subset, name, dr));
        }
        Resolution::None => {
            c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32,
            ));
        }
    }
    cluster_policy::apply(&mut c, policy, svc.port(port).map(|p| p.protocol));
    cluster_tls::apply(&mut c, svc, port, subset, policy.tls, auto_mtls);
    cluster_policy::wrap_proxy_protocol(&mut c, policy);
    c
}

fn blackhole() -> Cluster {
    Cluster {
        name: names::BLACKHOLE.to_string(),
        connect_timeout: Some(duration(DEFAULT_CONNECT_TIMEOUT)),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        ..Cluster::default()
    }
}

fn passthrough() -> Cluster {
    Cluster {
        name: names::PASSTHROUGH.to_string(),
        connect_timeout: Some(duration(DEFAULT_CONNECT_TIMEOUT)),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: LbPolicy::ClusterProvided as i32,
        ..Cluster::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshpilot_model::{ConfigKey, Kind, Meta, Subset};

    fn service(origin: ServiceOrigin, hostname: &str) -> ServiceInfo {
        ServiceInfo {
            hostname: hostname.into(),
            name: "reviews".into(),
            namespace: "default".into(),
            key: ConfigKey::new(Kind::Service, "default", "reviews"),
            origin,
            ports: Vec::new(),
            cluster_ip: None,
            selector: None,
            export_to: Vec::new(),
            subject_alt_names: Vec::new(),
            endpoints: Default::default(),
        }
    }

    /// The bytes made from parts are prost's for the whole message, for every kind of EDS
    /// service, port, subset, and names whose lengths take one or two bytes to write.
    #[test]
    fn plain_eds_clusters_are_the_bytes_prost_writes() {
        let rule = Named {
            key: ConfigKey::new(Kind::DestinationRule, "default", "reviews"),
            meta: Meta::default(),
            spec: DestinationRule {
                host: "reviews".to_string(),
                subsets: vec![Subset {
                    name: "v1".to_string(),
                    ..Subset::default()
                }],
                ..DestinationRule::default()
            },
        };
        let long = format!("{}.example.com", "a".repeat(200));
        let static_entry = ServiceOrigin::ServiceEntry {
            resolution: Resolution::Static,
            external: true,
        };
        for svc in [
            service(
                ServiceOrigin::Kubernetes,
                "reviews.default.svc.cluster.local",
            ),
            service(static_entry, &long),
        ] {
            for (port, subset, dr) in [
                (80, "", None),
                (9080, "v1", Some(&rule)),
                (1, "", Some(&rule)),
            ] {
                let name = names::outbound_cluster(port, subset, &svc.hostname);
                assert_eq!(
                    plain_eds_cluster(&name),
                    cluster(
                        &svc,
                        resolution(&svc, cluster_tls::For::Everyone),
                        port,
                        subset,
                        &name,
                        &ClusterPolicy::default(),
                        dr,
                        &AutoMtls::default(),
                    )
                    .encode_to_vec(),
                    "{name}"
                );
            }
        }
        assert_eq!(
            plain_eds_cluster(""),
            plain_eds_cluster_message("").encode_to_vec()
        );
    }

    /// A service's clusters and assignments carry Istio's names, per port then per subset, each
    /// assignment named as its cluster.
    #[test]
    fn clusters_and_assignments_are_named_per_port_and_subset() {
        let mut svc = service(
            ServiceOrigin::Kubernetes,
            "reviews.default.svc.cluster.local",
        );
        svc.ports = [80, 9080]
            .map(|port| meshpilot_index::SvcPort {
                name: format!("http-{port}"),
                port,
                protocol: meshpilot_model::Protocol::Http,
                target_port: meshpilot_model::TargetPort::Number(port),
            })
            .to_vec();
        let rule = Named {
            key: ConfigKey::new(Kind::DestinationRule, "default", "reviews"),
            meta: Meta::default(),
            spec: DestinationRule {
                host: "reviews".to_string(),
                subsets: ["v1", "v2"]
                    .map(|name| Subset {
                        name: name.to_string(),
                        ..Subset::default()
                    })
                    .to_vec(),
                ..DestinationRule::default()
            },
        };
        let want: Vec<String> = [80, 9080]
            .into_iter()
            .flat_map(|port| {
                ["", "v1", "v2"].map(|s| names::outbound_cluster(port, s, &svc.hostname))
            })
            .collect();
        let names = names::service_clusters(&svc, Some(&rule));
        let sources: Arc<[ConfigKey]> = Arc::from([svc.key.clone()]);
        let clusters = for_service(
            &svc,
            Some(&rule),
            &names,
            &sources,
            &AutoMtls::default(),
            cluster_tls::For::Everyone,
        );
        let assignments = endpoints::for_service(&svc, Some(&rule), &names, &sources, &sources);
        for made in [&clusters, &assignments] {
            let got: Vec<&str> = made.iter().map(|r| &*r.name).collect();
            assert_eq!(got, want);
        }
        for (c, a) in clusters.iter().zip(&assignments) {
            let cla = envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(
                a.body.as_ref(),
            )
            .expect("decodes");
            let cluster = Cluster::decode(c.body.as_ref()).expect("decodes");
            assert_eq!(
                (cla.cluster_name.as_str(), cluster.name.as_str()),
                (&*c.name, &*c.name)
            );
        }
        let plain = names::service_clusters(&svc, None);
        assert_eq!(plain.len(), 2);
        assert_eq!(
            &*plain[1].name,
            "outbound|9080||reviews.default.svc.cluster.local"
        );
    }

    /// gRPC and `http2` ports are reached over HTTP/2 (a gRPC client's calls fail over
    /// HTTP/1.1); HTTP, TCP and unnamed ports keep Envoy's default.
    #[test]
    fn grpc_and_http2_ports_speak_http2_upstream() {
        use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
        use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
            UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
        };
        use meshpilot_model::Protocol;
        let mut svc = service(ServiceOrigin::Kubernetes, "api.default.svc.cluster.local");
        let ports = [
            (80, Protocol::Http, false),
            (81, Protocol::Http2, true),
            (82, Protocol::Grpc, true),
            (83, Protocol::Tcp, false),
            (84, Protocol::Unknown, false),
        ];
        svc.ports = ports
            .iter()
            .map(|&(port, protocol, _)| meshpilot_index::SvcPort {
                name: format!("p-{port}"),
                port,
                protocol,
                target_port: meshpilot_model::TargetPort::Number(port),
            })
            .collect();
        let names = names::service_clusters(&svc, None);
        let sources: Arc<[ConfigKey]> = Arc::from([svc.key.clone()]);
        let clusters = for_service(
            &svc,
            None,
            &names,
            &sources,
            &AutoMtls::default(),
            cluster_tls::For::Everyone,
        );
        for ((port, _, want_h2), c) in ports.iter().zip(&clusters) {
            let cluster = Cluster::decode(c.body.as_ref()).expect("decodes");
            let h2 = cluster
                .typed_extension_protocol_options
                .get("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
                .map(|a| HttpProtocolOptions::decode(a.value.as_slice()).expect("decodes"))
                .and_then(|o| o.upstream_protocol_options)
                .is_some_and(|o| {
                    matches!(
                        o,
                        UpstreamProtocolOptions::ExplicitHttpConfig(e)
                            if matches!(e.protocol_config, Some(ProtocolConfig::Http2ProtocolOptions(_)))
                    )
                });
            assert_eq!(h2, *want_h2, "port {port}");
            assert!(cluster.eds_cluster_config.is_some(), "port {port}");
        }
    }
}
