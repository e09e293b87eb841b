//! Pure functions from a read-only [`View`] (and, for listeners and routes, one proxy class) to
//! Envoy resources, one file per xDS type. Nothing here does I/O or keeps state.
//!
//! Clusters and endpoints do not depend on the proxy, so [`compile_shared`] runs once per change
//! and every class reuses its encoded bytes; [`compile_class`] builds the listeners and routes of
//! one class and [`assemble`] makes a consistency-checked [`Snapshot`] of both.

mod clusters;
mod endpoints;
mod httproute;
mod listeners;
pub mod names;
mod routes;
mod scope;

use bytes::Bytes;
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use prost::Message;

use crate::index::View;
use crate::model::{ClassKey, ConfigKey, Proxy};
use crate::snapshot::{Reference, Resource, Snapshot, SnapshotError};

/// A problem compiling one object for one proxy class; the object's part is left out.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CompileError {
    pub key: ConfigKey,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: field {}: {}", self.key, self.field, self.message)
    }
}

/// Resources every proxy class shares: clusters and their endpoints.
#[derive(Debug, Clone, Default)]
pub struct Shared {
    pub clusters: Vec<Resource>,
    pub endpoints: Vec<Resource>,
    /// Cluster → ClusterLoadAssignment references, checked in every snapshot.
    pub references: Vec<Reference>,
}

/// Compiles the clusters and endpoints of the whole view.
pub fn compile_shared(view: &View) -> Shared {
    let (clusters, references) = clusters::build(view);
    let endpoints = endpoints::build(view);
    Shared {
        clusters,
        endpoints,
        references,
    }
}

/// The listeners and routes of one proxy class.
#[derive(Debug, Clone, Default)]
pub struct ClassOutput {
    pub listeners: Vec<Resource>,
    pub routes: Vec<Resource>,
    /// Listener → RouteConfiguration references.
    pub references: Vec<Reference>,
    pub errors: Vec<CompileError>,
}

/// Compiles one proxy class's listeners and routes.
pub fn compile_class(view: &View, proxy: &Proxy) -> ClassOutput {
    let plan = routes::plan(view, proxy);
    let (listeners, references) = listeners::build(proxy, &plan);
    let routes = routes::build(&plan);
    ClassOutput {
        listeners,
        routes,
        references,
        errors: plan.errors,
    }
}

/// Assembles a class's snapshot from the shared clusters/endpoints and its own listeners/routes,
/// checking that every reference resolves.
pub fn assemble(
    class: ClassKey,
    shared: &Shared,
    out: &ClassOutput,
) -> Result<Snapshot, SnapshotError> {
    let mut refs = out.references.clone();
    refs.extend(shared.references.iter().cloned());
    Snapshot::new(
        class,
        [
            shared.clusters.clone(),
            shared.endpoints.clone(),
            out.listeners.clone(),
            out.routes.clone(),
        ],
        &refs,
    )
}

/// Encodes a message into a snapshot resource.
pub(crate) fn resource<M: Message>(name: &str, msg: &M, sources: Vec<ConfigKey>) -> Resource {
    Resource::new(name, Bytes::from(msg.encode_to_vec()), sources)
}

/// Wraps a message in `Any` with its type URL.
pub(crate) fn any<M: Message>(type_url: &str, msg: &M) -> Any {
    Any {
        type_url: type_url.to_string(),
        value: msg.encode_to_vec(),
    }
}

pub(crate) fn duration(d: std::time::Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

pub(crate) use crate::model::parse_duration;

#[cfg(test)]
mod tests;
