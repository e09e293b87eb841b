//! Kubernetes objects projected to what compile needs: a Service's ports and selector, a
//! workload's address and labels (Pods and WorkloadEntries alike), an EndpointSlice's addresses
//! and conditions. Whole pod specs are never kept.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use super::Labels;

/// The application protocol of a port, from its `protocol`/`appProtocol`/name prefix
/// (Istio's protocol selection: `http-foo` → HTTP, `grpc` → GRPC, `tcp-x` → TCP, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    Https,
    Tls,
    Tcp,
    /// Nothing said: Istio sniffs; we serve it as HTTP.
    Unknown,
}

impl Protocol {
    /// Parses an Istio/Kubernetes protocol word (case-insensitive). Unknown words give `None`.
    pub fn parse(s: &str) -> Option<Protocol> {
        Some(match s.to_ascii_lowercase().as_str() {
            "http" | "http1" | "http_proxy" => Protocol::Http,
            "http2" | "h2c" => Protocol::Http2,
            "grpc" | "grpc-web" => Protocol::Grpc,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "tcp" | "mongo" | "mysql" | "redis" | "udp" | "thrift" => Protocol::Tcp,
            _ => return None,
        })
    }

    /// Istio's rule for Kubernetes ports: `appProtocol` first, then the name prefix before `-`.
    pub fn from_port(name: &str, app_protocol: Option<&str>) -> Protocol {
        if let Some(p) = app_protocol.and_then(Protocol::parse) {
            return p;
        }
        let prefix = name.split('-').next().unwrap_or("");
        Protocol::parse(prefix).unwrap_or(Protocol::Unknown)
    }

    /// True for protocols served through the HTTP connection manager.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::Unknown
        )
    }
}

/// A Service's `targetPort`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum TargetPort {
    Number(u16),
    /// A container port name, resolved per Pod.
    Name(String),
}

/// One port of a Kubernetes Service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ServicePort {
    /// Empty when the Service has a single unnamed port.
    pub name: String,
    pub port: u16,
    pub target_port: TargetPort,
    pub protocol: Protocol,
}

/// A Kubernetes Service (`v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    pub ports: Vec<ServicePort>,
    /// `None`: a Service without selector (endpoints come only from EndpointSlices).
    pub selector: Option<Labels>,
    /// `spec.clusterIP` when set (and not `None`).
    pub cluster_ip: Option<IpAddr>,
    /// The `networking.istio.io/exportTo` annotation's namespaces (empty: the mesh default).
    pub export_to: Vec<String>,
    /// `spec.externalName` of a `type: ExternalName` Service: the DNS name its clients reach
    /// on each of its ports (it has no endpoints of its own).
    pub external_name: Option<String>,
    /// `spec.clusterIP: None`: a headless Service.
    pub headless: bool,
}

/// Where a workload came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum WorkloadKind {
    Pod,
    WorkloadEntry,
}

/// A Pod (or a WorkloadEntry's spec): address, labels, named ports, readiness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workload {
    pub kind: WorkloadKind,
    /// The Pod IP, or the WorkloadEntry address (an IP, or a DNS name for DNS ServiceEntries).
    pub address: String,
    pub labels: Labels,
    /// Container port names → numbers (Pods), or Service port name → target port
    /// (WorkloadEntry `ports`).
    pub ports: BTreeMap<String, u16>,
    /// Running with an IP and Ready (Pods); always true for WorkloadEntries.
    pub ready: bool,
    pub node: Option<String>,
    /// WorkloadEntry `weight` (load-balancing weight), if any.
    pub weight: Option<u32>,
    pub locality: Option<String>,
    /// `spec.serviceAccountName` (Kubernetes' `default` when unset); a WorkloadEntry's
    /// `serviceAccount`. Clients check the SPIFFE identity it gives when they speak mTLS.
    pub service_account: Option<String>,
}

/// One endpoint of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SliceEndpoint {
    pub addresses: Vec<String>,
    /// `conditions.ready`, absent meaning true.
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// `targetRef.name` when it is a Pod (for subset labels).
    pub pod: Option<String>,
    pub node: Option<String>,
}

/// A named port of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlicePort {
    pub name: String,
    pub port: u16,
}

/// A `discovery.k8s.io/v1` EndpointSlice (or `v1` Endpoints projected into the same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointSlice {
    /// The owning Service (`kubernetes.io/service-name` label, or the Endpoints' name).
    pub service: String,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<SliceEndpoint>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_from_port_name_and_app_protocol() {
        assert_eq!(Protocol::from_port("http", None), Protocol::Http);
        assert_eq!(Protocol::from_port("http-web", None), Protocol::Http);
        assert_eq!(Protocol::from_port("grpc-api", None), Protocol::Grpc);
        assert_eq!(Protocol::from_port("tcp-db", None), Protocol::Tcp);
        assert_eq!(Protocol::from_port("https", None), Protocol::Https);
        assert_eq!(Protocol::from_port("web", None), Protocol::Unknown);
        assert_eq!(Protocol::from_port("web", Some("http2")), Protocol::Http2);
        assert!(Protocol::Unknown.is_http());
        assert!(!Protocol::Tcp.is_http());
        // Istio's other words: HTTP_PROXY is HTTP, THRIFT is TCP.
        assert_eq!(Protocol::parse("HTTP_PROXY"), Some(Protocol::Http));
        assert_eq!(Protocol::parse("THRIFT"), Some(Protocol::Tcp));
        assert_eq!(Protocol::parse("SOAP"), None);
    }
}
