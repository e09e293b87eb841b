//! Which source an object or event comes from: the files, or one Kubernetes watch. The index
//! keeps each source's objects apart by this id, and decides between two sources that define
//! the same object by it (see the index's conflict rule), never by its text.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Kind;

/// One source of objects; each is reset and synced on its own.
///
/// The order of the variants is the conflict rule's order: a later source's definition of an
/// object serves over an earlier one's (the Kubernetes API over the files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum SourceId {
    /// Every `--config-dir`, together.
    Files,
    /// One watched Kubernetes kind in one scope: `scope` indexes `--namespaces` (0 when the
    /// kind is watched cluster-wide). Each is listed, reset and synced on its own.
    Kube { kind: KubeKind, scope: u16 },
}

impl SourceId {
    /// False when this source cannot hold objects of `kind` (a Kubernetes watch holds only
    /// its own kind), so conflict checks skip it.
    pub fn may_hold(self, kind: Kind) -> bool {
        match self {
            SourceId::Files => true,
            SourceId::Kube { kind: watched, .. } => watched.model_kind() == Some(kind),
        }
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceId::Files => f.write_str("files"),
            SourceId::Kube { kind, scope } => write!(f, "kube/{}/{scope}", kind.as_str()),
        }
    }
}

/// A kind the Kubernetes source watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum KubeKind {
    Namespace,
    Node,
    Service,
    EndpointSlice,
    Pod,
    VirtualService,
    DestinationRule,
    Gateway,
    ServiceEntry,
    WorkloadEntry,
    Sidecar,
    /// Only those with TLS material are kept (gateway credentials).
    Secret,
    /// `security.istio.io`: the mTLS mode of inbound traffic.
    PeerAuthentication,
    /// The Istio kinds istiod acts on and meshpilot does not: watched for their metadata only,
    /// so each object present is reported as a warning saying what its author loses.
    EnvoyFilter,
    WorkloadGroup,
    ProxyConfig,
    Telemetry,
    AuthorizationPolicy,
    RequestAuthentication,
    WasmPlugin,
}

impl KubeKind {
    /// Every watched kind. Nodes come before Pods so Pods can carry their node's locality.
    pub const ALL: [KubeKind; 20] = [
        KubeKind::Namespace,
        KubeKind::Node,
        KubeKind::Service,
        KubeKind::EndpointSlice,
        KubeKind::Pod,
        KubeKind::VirtualService,
        KubeKind::DestinationRule,
        KubeKind::Gateway,
        KubeKind::ServiceEntry,
        KubeKind::WorkloadEntry,
        KubeKind::Sidecar,
        KubeKind::Secret,
        KubeKind::PeerAuthentication,
        KubeKind::EnvoyFilter,
        KubeKind::WorkloadGroup,
        KubeKind::ProxyConfig,
        KubeKind::Telemetry,
        KubeKind::AuthorizationPolicy,
        KubeKind::RequestAuthentication,
        KubeKind::WasmPlugin,
    ];

    /// The Kubernetes `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            KubeKind::Namespace => "Namespace",
            KubeKind::Node => "Node",
            KubeKind::Service => "Service",
            KubeKind::EndpointSlice => "EndpointSlice",
            KubeKind::Pod => "Pod",
            KubeKind::VirtualService => "VirtualService",
            KubeKind::DestinationRule => "DestinationRule",
            KubeKind::Gateway => "Gateway",
            KubeKind::ServiceEntry => "ServiceEntry",
            KubeKind::WorkloadEntry => "WorkloadEntry",
            KubeKind::Sidecar => "Sidecar",
            KubeKind::Secret => "Secret",
            KubeKind::PeerAuthentication => "PeerAuthentication",
            KubeKind::EnvoyFilter => "EnvoyFilter",
            KubeKind::WorkloadGroup => "WorkloadGroup",
            KubeKind::ProxyConfig => "ProxyConfig",
            KubeKind::Telemetry => "Telemetry",
            KubeKind::AuthorizationPolicy => "AuthorizationPolicy",
            KubeKind::RequestAuthentication => "RequestAuthentication",
            KubeKind::WasmPlugin => "WasmPlugin",
        }
    }

    /// True for the Istio kinds (served only where their CRD is installed).
    pub fn is_istio(self) -> bool {
        self.istio_group().is_some()
    }

    /// The API group of an Istio kind (`networking.istio.io`, `security.istio.io`,
    /// `telemetry.istio.io` or `extensions.istio.io`); `None` for the built-in Kubernetes kinds.
    pub fn istio_group(self) -> Option<&'static str> {
        match self {
            KubeKind::Namespace
            | KubeKind::Node
            | KubeKind::Service
            | KubeKind::EndpointSlice
            | KubeKind::Pod
            | KubeKind::Secret => None,
            KubeKind::PeerAuthentication
            | KubeKind::AuthorizationPolicy
            | KubeKind::RequestAuthentication => Some("security.istio.io"),
            KubeKind::VirtualService
            | KubeKind::DestinationRule
            | KubeKind::Gateway
            | KubeKind::ServiceEntry
            | KubeKind::WorkloadEntry
            | KubeKind::Sidecar
            | KubeKind::EnvoyFilter
            | KubeKind::WorkloadGroup
            | KubeKind::ProxyConfig => Some("networking.istio.io"),
            KubeKind::Telemetry => Some("telemetry.istio.io"),
            KubeKind::WasmPlugin => Some("extensions.istio.io"),
        }
    }

    /// False for cluster-scoped kinds (always watched cluster-wide).
    pub fn is_namespaced(self) -> bool {
        !matches!(self, KubeKind::Namespace | KubeKind::Node)
    }
}

impl KubeKind {
    /// True for the Istio kinds meshpilot does not serve: only their metadata is watched, and
    /// each object present is a warning.
    pub fn is_unserved(self) -> bool {
        matches!(
            self,
            KubeKind::EnvoyFilter
                | KubeKind::WorkloadGroup
                | KubeKind::ProxyConfig
                | KubeKind::Telemetry
                | KubeKind::AuthorizationPolicy
                | KubeKind::RequestAuthentication
                | KubeKind::WasmPlugin
        )
    }

    /// The model kind its objects become (`None` for Nodes, which only lend Pods a locality,
    /// and for the unserved Istio kinds, which become warnings only).
    pub fn model_kind(self) -> Option<Kind> {
        Some(match self {
            KubeKind::Namespace => Kind::Namespace,
            KubeKind::Node
            | KubeKind::EnvoyFilter
            | KubeKind::WorkloadGroup
            | KubeKind::ProxyConfig
            | KubeKind::Telemetry
            | KubeKind::AuthorizationPolicy
            | KubeKind::RequestAuthentication
            | KubeKind::WasmPlugin => return None,
            KubeKind::Service => Kind::Service,
            KubeKind::EndpointSlice => Kind::EndpointSlice,
            KubeKind::Pod => Kind::Pod,
            KubeKind::VirtualService => Kind::VirtualService,
            KubeKind::DestinationRule => Kind::DestinationRule,
            KubeKind::Gateway => Kind::Gateway,
            KubeKind::ServiceEntry => Kind::ServiceEntry,
            KubeKind::WorkloadEntry => Kind::WorkloadEntry,
            KubeKind::Sidecar => Kind::Sidecar,
            KubeKind::Secret => Kind::Secret,
            KubeKind::PeerAuthentication => Kind::PeerAuthentication,
        })
    }
}
