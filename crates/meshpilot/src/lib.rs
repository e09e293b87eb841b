//! meshpilot: an xDS control plane that serves Istio routing objects to Envoy. This crate is the
//! top of the layers: it wires them into the `serve` process and holds the command line.
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
//! Each stage is its own crate (`meshpilot-model`, `-source`, `-index`, `-compile`,
//! `-snapshot`, `-push`, `-xds`, `-transport`, `-debug`, `-telemetry`); ARCHITECTURE.md at the
//! repository's root has the map and the rules. Here:
//!
//! * [`app`] — the `serve` process: its tasks and their shutdown order.
//! * [`config`] — flags and environment → a validated configuration.
//! * [`bootstrap`] — an Envoy bootstrap for one proxy (`meshpilot bootstrap`).
//! * [`cli`] — `proxy-status` / `proxy-config`: istioctl-like tables from a running server.

pub mod agent;
pub mod analyze;
pub mod app;
pub mod bootstrap;
pub mod ca;
pub mod cli;
pub mod config;
pub mod webhook;
