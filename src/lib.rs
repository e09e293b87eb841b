//! meshpilot: an xDS control plane that serves Istio routing objects to Envoy.
//!
//! Data flows one way, and each stage has one owner:
//!
//! ```text
//!  Kubernetes API ─┐
//!  (kube-rs watch) ├► source ─► index ─► compile ─► snapshot ─► xds ─► Envoy (ADS: SotW / Delta)
//!  YAML directory ─┘  (convert) (one     (pure fns)  (versioned  (streams,
//!                               writer)              per class)   ACK/NACK)
//!                       └───────── push: debounce, recompute, publish ─────┘
//!                                  debug: read-only HTTP (dumps, sync, metrics)
//! ```
//!
//! * [`model`] — the vocabulary (no Kubernetes or protobuf types).
//! * [`source`] — manifests (files, Kubernetes API) → validated model objects, errors naming
//!   object and field.
//! * [`index`] — the single writer of current state; builds read-only [`index::View`]s.
//! * [`compile`] — pure functions: view + proxy class → Envoy resources, one file per type.
//! * [`snapshot`] — encoded, content-hashed resource sets per proxy class; `watch` slots.
//! * [`push`] — applies source events, debounces, recompiles each class, publishes.
//! * [`xds`] — the ADS server (SotW and Delta), nonces, ACK/NACK per stream and type.
//! * [`debug`] — HTTP: readiness, health, per-proxy config dumps in Envoy's JSON with ACK/NACK,
//!   sync status, registry, inputs, metrics.
//! * [`app`], [`config`], [`bootstrap`] — wiring, flags, Envoy bootstrap generation.
//! * [`cli`] — `proxy-status` / `proxy-config`: istioctl-like tables from a running server.
//! * [`telemetry`] — logging, and Prometheus metrics under istiod's names.
//! * [`mesh`], [`load`] — benchmark tooling: the mesh generator and its mutators, and the load
//!   tool that simulates many proxies (`meshpilot-load`); see BENCHMARKS.md.

pub mod app;
pub mod bootstrap;
pub mod cli;
pub mod compile;
pub mod config;
pub mod debug;
pub mod frames;
pub mod index;
pub mod load;
pub mod mesh;
pub mod model;
pub mod push;
pub mod shutdown;
pub mod snapshot;
pub mod source;
pub mod telemetry;
pub mod xds;

#[cfg(any(test, feature = "testing"))]
pub mod test_helpers;
