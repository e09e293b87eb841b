//! Istio's `security.istio.io` PeerAuthentication: which mutual-TLS mode a workload's sidecar
//! accepts inbound, for the whole mesh (root namespace, no selector), a namespace, the workloads
//! a selector picks, and single ports of those.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Labels;

/// A PeerAuthentication spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PeerAuthentication {
    /// The workloads it applies to; absent or empty: every workload of its namespace (of the
    /// mesh, in the root namespace).
    pub selector: Option<MatchLabels>,
    pub mtls: Option<PeerMtls>,
    /// By workload (target) port; only meaningful with a selector.
    pub port_level_mtls: BTreeMap<u32, PeerMtls>,
}

impl PeerAuthentication {
    /// The workload selector, when it selects by at least one label.
    pub fn workload_selector(&self) -> Option<&Labels> {
        self.selector
            .as_ref()
            .map(|s| &s.match_labels)
            .filter(|l| !l.is_empty())
    }
}

/// A security workload selector (`matchLabels`, unlike networking's `labels`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MatchLabels {
    pub match_labels: Labels,
}

/// One `mtls` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerMtls {
    pub mode: MtlsMode,
}

/// How a sidecar accepts inbound connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the enclosing level (mesh → namespace → workload → port).
    #[default]
    Unset,
    /// Plaintext only.
    Disable,
    /// Mutual TLS and plaintext side by side (Istio's default).
    Permissive,
    /// Mutual TLS only.
    Strict,
}

impl MtlsMode {
    /// `self` unless it is unset, else `inherited`.
    pub fn or(self, inherited: MtlsMode) -> MtlsMode {
        if self == MtlsMode::Unset {
            inherited
        } else {
            self
        }
    }
}
