//! The domain vocabulary: services, workloads, endpoint slices, the Istio routing specs, the
//! identity of a connected proxy, which source an object came from ([`SourceId`], [`Origin`])
//! and what is wrong with an input ([`Diagnostic`]). No I/O here, and neither Kubernetes (k8s-openapi) nor protobuf
//! (prost) types: sources convert *into* these, compile converts *out of* them.

pub mod destination_rule;
pub mod diagnostic;
pub mod duration;
pub mod export;
pub mod host;
pub mod istio;
pub mod k8s;
pub mod proxy;
pub mod secret;
pub mod security;
pub mod source_id;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use destination_rule::*;
pub use diagnostic::{Diagnostic, InputLimit, LimitExceeded, ObjectRef, Origin, Severity, Stage};
pub use duration::parse_duration;
pub use export::{
    ExportDefaults, ROOT_NAMESPACE, SERVICE_EXPORT_TO_ANNOTATION, export_or_default, exported_to,
};
pub use host::{Hostname, resolve_host};
pub use istio::*;
pub use k8s::*;
pub use proxy::{ClassKey, Interception, MetadataValue, Proxy, ProxyKind, ProxyParseError};
pub use secret::{SecretBytes, TlsSecret};
pub use security::{MtlsMode, PeerAuthentication, PeerMtls};
pub use source_id::{KubeKind, SourceId};

/// Labels as Kubernetes has them: an ordered string map (ordered so hashes are stable).
pub type Labels = BTreeMap<String, String>;

/// True when `labels` carries every label of `selector` (an empty selector selects all).
pub fn labels_match(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Every kind of input object the control plane understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Namespace,
    Service,
    Pod,
    Endpoints,
    EndpointSlice,
    VirtualService,
    DestinationRule,
    Gateway,
    ServiceEntry,
    WorkloadEntry,
    Sidecar,
    /// A Secret holding TLS material (gateway credentials).
    Secret,
    PeerAuthentication,
}

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 13] = [
        Kind::Namespace,
        Kind::Service,
        Kind::Pod,
        Kind::Endpoints,
        Kind::EndpointSlice,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::Sidecar,
        Kind::Secret,
        Kind::PeerAuthentication,
    ];

    /// The Kubernetes `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::Pod => "Pod",
            Kind::Endpoints => "Endpoints",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Gateway => "Gateway",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::Sidecar => "Sidecar",
            Kind::Secret => "Secret",
            Kind::PeerAuthentication => "PeerAuthentication",
        }
    }

    /// True for kinds that only move endpoints (no listener/route change can follow from them
    /// alone, except through service ports, which only `Service`/`ServiceEntry` carry).
    pub fn is_endpoint_only(self) -> bool {
        matches!(
            self,
            Kind::Pod | Kind::Endpoints | Kind::EndpointSlice | Kind::WorkloadEntry
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Objects by key, in a persistent map: a copy is O(1) and shares the nodes, and an update
/// copies only the path it changes. The file source, the index and every view hold the same
/// object set this way instead of copying it per change.
pub type ObjectMap = imbl::OrdMap<ConfigKey, std::sync::Arc<Object>>;

/// Identity of one input object: kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConfigKey {
    pub kind: Kind,
    /// Empty for cluster-scoped kinds (Namespace).
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl ConfigKey {
    pub fn new(kind: Kind, namespace: impl AsRef<str>, name: impl AsRef<str>) -> Self {
        ConfigKey {
            kind,
            namespace: Arc::from(namespace.as_ref()),
            name: Arc::from(name.as_ref()),
        }
    }
}

impl fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Object metadata that compile or debug output needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Meta {
    pub name: String,
    /// `default` when the manifest omits it (empty for cluster-scoped kinds).
    pub namespace: String,
    pub labels: Labels,
    /// Where the object came from — for diagnostics and configz.
    pub origin: Origin,
    /// Kubernetes `metadata.creationTimestamp` when known (RFC 3339); orders VirtualServices
    /// that share a host the way Istio does (oldest first). Empty when unknown.
    pub creation: String,
}

/// One validated input object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Object {
    pub meta: Meta,
    pub body: Body,
}

impl Object {
    pub fn kind(&self) -> Kind {
        self.body.kind()
    }

    pub fn key(&self) -> ConfigKey {
        ConfigKey::new(self.kind(), &self.meta.namespace, &self.meta.name)
    }
}

/// The kind-specific part of an [`Object`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "spec")]
pub enum Body {
    Namespace,
    Service(Service),
    /// A Pod, projected to what compile needs.
    Pod(Workload),
    /// v1 Endpoints, projected into the same shape as an EndpointSlice.
    Endpoints(EndpointSlice),
    EndpointSlice(EndpointSlice),
    VirtualService(VirtualService),
    DestinationRule(DestinationRule),
    Gateway(Gateway),
    ServiceEntry(ServiceEntry),
    WorkloadEntry(WorkloadEntry),
    Sidecar(Sidecar),
    /// A Secret with TLS material (others are not read).
    Secret(TlsSecret),
    PeerAuthentication(PeerAuthentication),
}

impl Body {
    pub fn kind(&self) -> Kind {
        match self {
            Body::Namespace => Kind::Namespace,
            Body::Service(_) => Kind::Service,
            Body::Pod(_) => Kind::Pod,
            Body::Endpoints(_) => Kind::Endpoints,
            Body::EndpointSlice(_) => Kind::EndpointSlice,
            Body::VirtualService(_) => Kind::VirtualService,
            Body::DestinationRule(_) => Kind::DestinationRule,
            Body::Gateway(_) => Kind::Gateway,
            Body::ServiceEntry(_) => Kind::ServiceEntry,
            Body::WorkloadEntry(_) => Kind::WorkloadEntry,
            Body::Sidecar(_) => Kind::Sidecar,
            Body::Secret(_) => Kind::Secret,
            Body::PeerAuthentication(_) => Kind::PeerAuthentication,
        }
    }
}

/// `mk_*` builders shared by the tests of every crate (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub mod test_helpers;
