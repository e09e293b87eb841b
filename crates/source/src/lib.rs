//! Sources turn watched objects — YAML manifests in a directory, or the Kubernetes API —
//! into validated [`model::Object`](meshpilot_model::Object)s, and send them to the push engine as
//! [`SourceEvent`]s. A refused input becomes a [`Diagnostic`] naming the file (or the
//! Kubernetes kind), kind, namespace/name and field; a bad object never reaches the index (its
//! previous good version is kept instead). Sources do not log diagnostics: the push engine,
//! which sees every source, logs each once.

pub mod convert;
pub mod files;
pub mod kube;
pub mod mesh_config;

use std::sync::Arc;

use meshpilot_model::{ConfigKey, Object};
pub use meshpilot_model::{Diagnostic, SourceId};

/// What a source tells the push engine: one vocabulary for the file source and every
/// Kubernetes watch. Each event carries the source's complete current list of refused inputs
/// (`diagnostics`), replacing the list it sent before, so a fix that changes no object still
/// reaches the engine.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// The complete current object set of one source, replacing its previous set atomically
    /// (a source's first list, a relist, a full reload). Also marks the source as synced.
    /// Objects whose previous good version is kept while their new one is refused are in
    /// `objects`, their diagnostics in `diagnostics`.
    Reset {
        source: SourceId,
        /// Shared with the source where it keeps them too (the file source's loader).
        objects: Vec<Arc<Object>>,
        diagnostics: Vec<Diagnostic>,
    },
    /// Part of one source's set changed, applied atomically: `upserts` are added or replace
    /// the object of the same key, `deletes` are removed. Sent after the source's first
    /// `Reset`: by the file source after a reload (only the objects that differ, so a
    /// one-object edit costs one object downstream) and by a Kubernetes watch for each watch
    /// event (one upsert, one delete, or none when only the diagnostics changed).
    Update {
        source: SourceId,
        upserts: Vec<Arc<Object>>,
        deletes: Vec<ConfigKey>,
        diagnostics: Vec<Diagnostic>,
    },
    /// The source has read its inputs but holds them back: it has never synced, and some of
    /// its inputs could not be read, so its set would lack what they define, and serving it
    /// would take that from every proxy still holding it from before a restart. Carries the
    /// refused inputs (so they are logged and shown); the source is not synced, and nothing
    /// is served until its first `Reset`.
    Held {
        source: SourceId,
        diagnostics: Vec<Diagnostic>,
    },
}
