//! The xDS metrics as an observer of the protocol: responses sent (count, build time, size),
//! NACKs, the convergence time from a change to its ACK, and the connected-proxy gauge.
//!
//! The Prometheus registry itself is process-wide and lives in `meshpilot-telemetry`; the
//! server is handed the [`XdsMetrics`] resolved from it once (by `app.rs`, or by a test), so
//! nothing here reaches for a global and no label is looked up per response or per ACK.

use std::sync::Arc;
use std::time::SystemTime;

use prometheus::{Histogram, IntGauge};

use super::events::ProtocolEvent;
use meshpilot_model::ProxyKind;
use meshpilot_snapshot::XdsType;
use meshpilot_telemetry::{Metrics, TypeMetrics};

/// The xDS server's metrics, each labelled child resolved once.
pub struct XdsMetrics {
    /// Per xDS type, in [`XdsType::ALL`] order.
    types: [TypeMetrics; 5],
    convergence_time: Histogram,
    sidecars_connected: IntGauge,
    routers_connected: IntGauge,
}

impl XdsMetrics {
    /// Resolves the server's metrics in `metrics` (usually the process-wide
    /// [`meshpilot_telemetry::metrics()`]).
    pub fn new(metrics: &Metrics) -> XdsMetrics {
        XdsMetrics {
            types: XdsType::ALL.map(|t| metrics.for_type(t.short())),
            convergence_time: metrics.convergence_time.clone(),
            sidecars_connected: metrics.connected(ProxyKind::Sidecar.as_str()),
            routers_connected: metrics.connected(ProxyKind::Router.as_str()),
        }
    }

    fn of_type(&self, t: XdsType) -> &TypeMetrics {
        &self.types[t as usize]
    }

    /// Counts a connected proxy of `kind` until the returned handle drops.
    pub(crate) fn stream(self: &Arc<Self>, kind: ProxyKind) -> StreamMetrics {
        let connected = match kind {
            ProxyKind::Sidecar => self.sidecars_connected.clone(),
            ProxyKind::Router => self.routers_connected.clone(),
        };
        connected.inc();
        StreamMetrics {
            metrics: self.clone(),
            connected,
        }
    }
}

/// One stream's view of the metrics: counted in `pilot_xds` while it lives, and the observer
/// of its protocol events.
pub(crate) struct StreamMetrics {
    metrics: Arc<XdsMetrics>,
    connected: IntGauge,
}

impl StreamMetrics {
    /// Records what `event` means for the metrics.
    pub(crate) fn observe(&self, event: &ProtocolEvent<'_>) {
        match event {
            ProtocolEvent::Sent { t, bytes, took, .. } => {
                self.metrics.of_type(*t).pushed(*took, *bytes)
            }
            ProtocolEvent::Acked {
                converging_since: Some(since),
                ..
            } => {
                if let Ok(took) = SystemTime::now().duration_since(*since) {
                    self.metrics.convergence_time.observe(took.as_secs_f64());
                }
            }
            ProtocolEvent::Nacked { t, .. } => self.metrics.of_type(*t).rejected(),
            ProtocolEvent::InitialRequest { .. }
            | ProtocolEvent::Subscribed { .. }
            | ProtocolEvent::StaleNonce { .. }
            | ProtocolEvent::Acked { .. } => {}
        }
    }
}

impl Drop for StreamMetrics {
    fn drop(&mut self) {
        self.connected.dec();
    }
}
