//! Logging and metrics set-up: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), and
//! the process-wide Prometheus [`metrics`] with istiod's names.

pub mod metrics;

use tracing_subscriber::EnvFilter;

pub use metrics::{CaMetrics, Metrics, TypeMetrics, metrics};

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
