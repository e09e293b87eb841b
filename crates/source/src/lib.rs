//! Sources turn watched objects — YAML manifests in a directory, or the Kubernetes API —
//! into validated [`model::Object`](meshpilot_model::Object)s, and send them to the push engine as
//! [`SourceEvent`]s. Validation errors name the file, kind, namespace/name and field; a bad
//! object never reaches the index (its previous good version is kept instead).

pub mod convert;
pub mod files;
pub mod kube;

use std::fmt;

use serde::Serialize;

use meshpilot_model::{ConfigKey, Object};

/// Which source an event comes from; each source's objects are reset independently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum SourceId {
    /// Every `--config-dir`, together.
    Files,
    /// One watched Kubernetes kind in one scope: `scope` indexes `--namespaces` (0 when the
    /// kind is watched cluster-wide). Each is listed, reset and synced on its own.
    Kube { kind: kube::KubeKind, scope: u16 },
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceId::Files => f.write_str("files"),
            SourceId::Kube { kind, scope } => write!(f, "kube/{}/{scope}", kind.as_str()),
        }
    }
}

/// A validation or parse error, naming everything an operator needs to find the mistake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputError {
    /// The file path (or `kube`).
    pub origin: String,
    /// Kubernetes kind, when it could be read.
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Path of the offending field, e.g. `spec.http[0].route[1].weight`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(kind) = &self.kind {
            write!(f, ": {kind}")?;
        }
        match (&self.namespace, &self.name) {
            (Some(ns), Some(name)) if !ns.is_empty() => write!(f, " {ns}/{name}")?,
            (_, Some(name)) => write!(f, " {name}")?,
            _ => {}
        }
        if let Some(field) = &self.field {
            write!(f, ": field {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for InputError {}

/// What a source tells the push engine.
#[allow(
    clippy::large_enum_variant,
    reason = "events are few and moved, not stored in bulk; boxing would only add allocations"
)]
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// The complete current object set of one source, replacing its previous set atomically.
    /// Also marks the source as synced. `errors` lists every input that was refused (objects
    /// whose previous good version is kept are in `objects`).
    Reset {
        source: SourceId,
        /// Shared with the source where it keeps them too (the file source's loader).
        objects: Vec<std::sync::Arc<Object>>,
        errors: Vec<InputError>,
    },
    /// Part of one source's set changed, applied atomically: `upserts` are added or replace
    /// the object of the same key, `deletes` are removed, and `errors` replaces the source's
    /// list of refused inputs (as in `Reset`). Sent after a source's first `Reset` by sources
    /// that know what changed (the file source after a reload), so a one-object edit costs one
    /// object downstream, not the whole set.
    Update {
        source: SourceId,
        upserts: Vec<std::sync::Arc<Object>>,
        deletes: Vec<ConfigKey>,
        errors: Vec<InputError>,
    },
    /// One object added or changed.
    Apply {
        source: SourceId,
        object: Box<Object>,
    },
    /// One object removed.
    Delete { source: SourceId, key: ConfigKey },
    /// The current refused inputs of one source, replacing its previous list (for sources
    /// that report errors between resets, e.g. a watch event that fails to convert).
    Errors {
        source: SourceId,
        errors: Vec<InputError>,
    },
}
