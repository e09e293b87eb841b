//! CDS: one cluster per service port (`outbound|PORT||HOST`) and one per DestinationRule subset
//! (`outbound|PORT|SUBSET|HOST`); Kubernetes services and STATIC ServiceEntries use EDS, DNS
//! ServiceEntries STRICT_DNS with inline endpoints, NONE resolution ORIGINAL_DST. Plus Istio's
//! `BlackHoleCluster` and `PassthroughCluster`.

use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, EdsClusterConfig, LbPolicy,
};
use envoy_types::pb::envoy::config::cluster::v3::{CircuitBreakers, Cluster, OutlierDetection};
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, config_source::ConfigSourceSpecifier,
};
use envoy_types::pb::google::protobuf::UInt32Value;

use super::{duration, endpoints, names, parse_duration, resource};
use crate::index::{Named, ServiceInfo, ServiceOrigin};
use crate::model::{DestinationRule, Resolution, SimpleLb, TrafficPolicy};
use crate::snapshot::{Reference, Resource, XdsType};

const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The ADS config source used by every EDS cluster and RDS listener.
pub(crate) fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..ConfigSource::default()
    }
}

/// The clusters of one service: one per port, and one per port and DestinationRule subset, with
/// the references of EDS clusters to their assignments.
pub(super) fn for_service(
    svc: &ServiceInfo,
    dr: Option<&Named<DestinationRule>>,
) -> (Vec<Resource>, Vec<Reference>) {
    let mut out = Vec::new();
    let mut refs = Vec::new();
    let mut sources = vec![svc.key.clone()];
    if let Some(dr) = dr {
        sources.push(dr.key.clone());
    }
    for port in &svc.ports {
        let base_policy = dr.and_then(|d| d.spec.traffic_policy.as_ref());
        let mut variants: Vec<(String, Option<&TrafficPolicy>)> =
            vec![(String::new(), base_policy)];
        if let Some(dr) = dr {
            for s in &dr.spec.subsets {
                variants.push((s.name.clone(), s.traffic_policy.as_ref().or(base_policy)));
            }
        }
        for (subset, policy) in variants {
            let name = names::outbound_cluster(port.port, &subset, &svc.hostname);
            let cluster = cluster(svc, port.port, &subset, &name, policy, dr);
            if cluster_uses_eds(svc) {
                refs.push(Reference {
                    from_type: XdsType::Cluster,
                    from: name.clone(),
                    to_type: XdsType::Endpoint,
                    to: name.clone(),
                });
            }
            out.push(resource(&name, &cluster, sources.clone()));
        }
    }
    (out, refs)
}

/// Istio's catch-all clusters, the same for every proxy.
pub(super) fn catch_all() -> Vec<Resource> {
    vec![
        resource(names::BLACKHOLE, &blackhole(), vec![]),
        resource(names::PASSTHROUGH, &passthrough(), vec![]),
    ]
}

/// True when the service's clusters take endpoints over EDS.
pub(crate) fn cluster_uses_eds(svc: &ServiceInfo) -> bool {
    match svc.origin {
        ServiceOrigin::Kubernetes => true,
        ServiceOrigin::ServiceEntry { resolution, .. } => resolution == Resolution::Static,
    }
}

fn cluster(
    svc: &ServiceInfo,
    port: u16,
    subset: &str,
    name: &str,
    policy: Option<&TrafficPolicy>,
    dr: Option<&Named<DestinationRule>>,
) -> Cluster {
    let connect_timeout = policy
        .and_then(|p| p.connection_pool.as_ref())
        .and_then(|c| c.tcp.as_ref())
        .and_then(|t| t.connect_timeout.as_deref())
        .and_then(parse_duration)
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let mut c = Cluster {
        name: name.to_string(),
        connect_timeout: Some(duration(connect_timeout)),
        lb_policy: lb_policy(policy) as i32,
        ..Cluster::default()
    };
    let resolution = match svc.origin {
        ServiceOrigin::Kubernetes => Resolution::Static,
        ServiceOrigin::ServiceEntry { resolution, .. } => resolution,
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
            c.load_assignment = Some(endpoints::assignment(svc, port, subset, name, dr));
        }
        Resolution::None => {
            c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32,
            ));
            c.lb_policy = LbPolicy::ClusterProvided as i32;
        }
    }
    if let Some(pool) = policy.and_then(|p| p.connection_pool.as_ref()) {
        let mut t = Thresholds::default();
        if let Some(n) = pool.tcp.as_ref().and_then(|t| t.max_connections) {
            t.max_connections = Some(UInt32Value { value: n });
        }
        if let Some(h) = &pool.http {
            t.max_pending_requests = h
                .http1_max_pending_requests
                .map(|value| UInt32Value { value });
            t.max_requests = h.http2_max_requests.map(|value| UInt32Value { value });
            t.max_retries = h.max_retries.map(|value| UInt32Value { value });
        }
        c.circuit_breakers = Some(CircuitBreakers {
            thresholds: vec![t],
            ..CircuitBreakers::default()
        });
    }
    if let Some(od) = policy.and_then(|p| p.outlier_detection.as_ref()) {
        c.outlier_detection = Some(OutlierDetection {
            consecutive_5xx: od.consecutive_5xx_errors.map(|value| UInt32Value { value }),
            consecutive_gateway_failure: od
                .consecutive_gateway_errors
                .map(|value| UInt32Value { value }),
            interval: od
                .interval
                .as_deref()
                .and_then(parse_duration)
                .map(duration),
            base_ejection_time: od
                .base_ejection_time
                .as_deref()
                .and_then(parse_duration)
                .map(duration),
            max_ejection_percent: od.max_ejection_percent.map(|value| UInt32Value { value }),
            ..OutlierDetection::default()
        });
    }
    c
}

fn lb_policy(policy: Option<&TrafficPolicy>) -> LbPolicy {
    match policy
        .and_then(|p| p.load_balancer.as_ref())
        .and_then(|l| l.simple)
    {
        Some(SimpleLb::Random) => LbPolicy::Random,
        Some(SimpleLb::LeastConn | SimpleLb::LeastRequest) => LbPolicy::LeastRequest,
        _ => LbPolicy::RoundRobin,
    }
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
