//! Prometheus metrics under istiod's names (`pilot_xds`, `pilot_xds_pushes`, …), so dashboards
//! and alerts written for istiod work unchanged.
//!
//! One process-wide registry ([`metrics`]): the one deliberate global, since Prometheus scrapes
//! one registry per process and every metric must land in it. The xDS server does not call
//! [`metrics`] itself: `app.rs` hands it its metrics, resolved once from this registry
//! (`meshpilot_xds::XdsMetrics`). Every labelled child that the hot path touches is
//! resolved once ([`Metrics::for_type`], [`Metrics::connected`]) and then updated with atomic
//! operations only: no lock, no allocation, no label lookup per push or per ACK. The `prometheus`
//! crate (tikv) is used rather than `prometheus-client` because it exports counters under their
//! exact names (istiod's have no `_total` suffix) and its histograms are lock-free.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Why the metrics could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The text encoder failed (not expected for well-formed metrics).
    #[error("encode metrics: {0}")]
    Encode(#[from] prometheus::Error),
    /// The encoder produced invalid UTF-8 (not expected).
    #[error("metrics text is not UTF-8: {0}")]
    Utf8(#[from] std::string::FromUtf8Error),
}

/// istiod's buckets for push and debounce times (seconds).
const TIME_BUCKETS: &[f64] = &[0.01, 0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];
/// istiod's buckets for `pilot_xds_config_size_bytes`.
const SIZE_BUCKETS: &[f64] = &[
    1.0,
    10_000.0,
    1_000_000.0,
    4_000_000.0,
    10_000_000.0,
    40_000_000.0,
];

/// Every metric the control plane exports.
pub struct Metrics {
    registry: Registry,
    xds: IntGaugeVec,
    pushes: IntCounterVec,
    push_time: HistogramVec,
    config_size: HistogramVec,
    total_rejects: IntCounterVec,
    type_rejects: Vec<(&'static str, IntCounter)>,
    /// `pilot_proxy_convergence_time`: from the change being seen to the proxy's ACK.
    pub convergence_time: Histogram,
    /// `pilot_debounce_time`: from the first change of a burst to its recompute.
    pub debounce_time: Histogram,
    /// `pilot_services`: services in the registry.
    pub services: IntGauge,
    /// `pilot_virt_services`: VirtualServices known.
    pub virt_services: IntGauge,
    /// The certificate authority's counters, under Citadel's names.
    pub ca: CaMetrics,
    /// `meshpilot_xds_refused{limit}`: connections or requests refused for passing a limit of
    /// the xDS server (`connections`, `resource_names`).
    refused: IntCounterVec,
    /// `meshpilot_xds_connections`: TCP connections open on the xDS port.
    pub xds_connections: IntGauge,
}

/// Citadel's counters (istiod's CA), so its dashboards read meshpilot's CA.
#[derive(Clone)]
pub struct CaMetrics {
    /// `citadel_server_csr_count`: certificate requests received.
    pub csr_count: IntCounter,
    /// `citadel_server_authentication_failure_count`: requests whose caller was not authenticated.
    pub authentication_failures: IntCounter,
    /// `citadel_server_csr_parsing_err_count`: requests whose CSR could not be used.
    pub csr_parsing_errors: IntCounter,
    /// `citadel_server_success_cert_issuance_count`: certificates issued.
    pub issued: IntCounter,
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("{name}: {e}"))
}

/// The pre-resolved metrics of one xDS type (cheap to clone: each is an `Arc`).
#[derive(Clone)]
pub struct TypeMetrics {
    /// `pilot_xds_pushes{type}`: responses sent.
    pub pushes: IntCounter,
    /// `pilot_xds_push_time{type}`: time to build a response for one proxy.
    pub push_time: Histogram,
    /// `pilot_xds_config_size_bytes{type}`: encoded size of a response.
    pub config_size: Histogram,
    /// `pilot_total_xds_rejects{type}`.
    pub total_rejects: IntCounter,
    /// `pilot_xds_{cds,eds,lds,rds}_reject`.
    pub rejects: IntCounter,
}

impl TypeMetrics {
    /// Records one response: its build time and encoded size.
    pub fn pushed(&self, took: Duration, bytes: usize) {
        self.pushes.inc();
        self.push_time.observe(took.as_secs_f64());
        self.config_size.observe(bytes as f64);
    }

    /// Records one NACK.
    pub fn rejected(&self) {
        self.total_rejects.inc();
        self.rejects.inc();
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(buckets.to_vec())
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        // The options below are constants: constructing them cannot fail, and registering each
        // name once cannot collide. An error would only lose that metric, never the process.
        let xds = IntGaugeVec::new(
            Opts::new("pilot_xds", "Proxies connected over ADS, by proxy type."),
            &["type"],
        )
        .unwrap_or_else(|e| unreachable!("pilot_xds: {e}"));
        let pushes = IntCounterVec::new(
            Opts::new("pilot_xds_pushes", "xDS responses sent, by xDS type."),
            &["type"],
        )
        .unwrap_or_else(|e| unreachable!("pilot_xds_pushes: {e}"));
        let push_time = HistogramVec::new(
            histogram(
                "pilot_xds_push_time",
                "Seconds to build one xDS response for one proxy, by xDS type.",
                TIME_BUCKETS,
            ),
            &["type"],
        )
        .unwrap_or_else(|e| unreachable!("pilot_xds_push_time: {e}"));
        let config_size = HistogramVec::new(
            histogram(
                "pilot_xds_config_size_bytes",
                "Encoded size of xDS responses, by xDS type.",
                SIZE_BUCKETS,
            ),
            &["type"],
        )
        .unwrap_or_else(|e| unreachable!("pilot_xds_config_size_bytes: {e}"));
        let total_rejects = IntCounterVec::new(
            Opts::new(
                "pilot_total_xds_rejects",
                "xDS responses rejected by proxies (NACKs), by xDS type.",
            ),
            &["type"],
        )
        .unwrap_or_else(|e| unreachable!("pilot_total_xds_rejects: {e}"));
        let type_rejects: Vec<(&'static str, IntCounter)> = ["cds", "eds", "lds", "rds"]
            .into_iter()
            .map(|t| {
                let name = format!("pilot_xds_{t}_reject");
                let help = format!("{} responses rejected by proxies.", t.to_uppercase());
                let c = IntCounter::new(name, help)
                    .unwrap_or_else(|e| unreachable!("pilot_xds_{t}_reject: {e}"));
                (t, c)
            })
            .collect();
        let convergence_time = Histogram::with_opts(histogram(
            "pilot_proxy_convergence_time",
            "Seconds from a configuration change being seen to a proxy acknowledging it.",
            &[0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0],
        ))
        .unwrap_or_else(|e| unreachable!("pilot_proxy_convergence_time: {e}"));
        let debounce_time = Histogram::with_opts(histogram(
            "pilot_debounce_time",
            "Seconds from the first change of a burst to the recompute that includes it.",
            TIME_BUCKETS,
        ))
        .unwrap_or_else(|e| unreachable!("pilot_debounce_time: {e}"));
        let services = IntGauge::new("pilot_services", "Services known to the control plane.")
            .unwrap_or_else(|e| unreachable!("pilot_services: {e}"));
        let virt_services = IntGauge::new(
            "pilot_virt_services",
            "VirtualServices known to the control plane.",
        )
        .unwrap_or_else(|e| unreachable!("pilot_virt_services: {e}"));

        let ca = CaMetrics {
            csr_count: counter("citadel_server_csr_count", "Certificate requests received."),
            authentication_failures: counter(
                "citadel_server_authentication_failure_count",
                "Certificate requests whose caller was not authenticated.",
            ),
            csr_parsing_errors: counter(
                "citadel_server_csr_parsing_err_count",
                "Certificate requests whose CSR could not be used.",
            ),
            issued: counter(
                "citadel_server_success_cert_issuance_count",
                "Workload certificates issued.",
            ),
        };
        let refused = IntCounterVec::new(
            Opts::new(
                "meshpilot_xds_refused",
                "Connections or requests the xDS server refused for passing a limit, by limit \
                 (connections: --xds-max-connections; resource_names: \
                 --max-resource-names-per-request).",
            ),
            &["limit"],
        )
        .unwrap_or_else(|e| unreachable!("meshpilot_xds_refused: {e}"));
        let xds_connections = IntGauge::new(
            "meshpilot_xds_connections",
            "TCP connections open on the xDS port.",
        )
        .unwrap_or_else(|e| unreachable!("meshpilot_xds_connections: {e}"));
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(refused.clone()),
            Box::new(xds_connections.clone()),
            Box::new(ca.csr_count.clone()),
            Box::new(ca.authentication_failures.clone()),
            Box::new(ca.csr_parsing_errors.clone()),
            Box::new(ca.issued.clone()),
            Box::new(xds.clone()),
            Box::new(pushes.clone()),
            Box::new(push_time.clone()),
            Box::new(config_size.clone()),
            Box::new(total_rejects.clone()),
            Box::new(convergence_time.clone()),
            Box::new(debounce_time.clone()),
            Box::new(services.clone()),
            Box::new(virt_services.clone()),
        ];
        for c in collectors.into_iter().chain(
            type_rejects
                .iter()
                .map(|(_, c)| Box::new(c.clone()) as Box<dyn prometheus::core::Collector>),
        ) {
            if let Err(e) = registry.register(c) {
                tracing::warn!(error = %e, "metric not registered");
            }
        }
        Metrics {
            registry,
            xds,
            pushes,
            push_time,
            config_size,
            total_rejects,
            type_rejects,
            convergence_time,
            debounce_time,
            services,
            virt_services,
            ca,
            refused,
            xds_connections,
        }
    }

    /// The `meshpilot_xds_refused{limit}` counter of one limit; resolve once and keep.
    pub fn refused(&self, limit: &str) -> IntCounter {
        self.refused.with_label_values(&[limit])
    }

    /// The metrics of one xDS type (`cds`, `eds`, `lds`, `rds`); resolve once and keep.
    pub fn for_type(&self, short: &'static str) -> TypeMetrics {
        let rejects = self
            .type_rejects
            .iter()
            .find(|(t, _)| *t == short)
            .map(|(_, c)| c.clone())
            // Not one of the four: counted in the total only, through a detached counter.
            .unwrap_or_else(|| {
                IntCounter::new("unregistered", "-")
                    .unwrap_or_else(|e| unreachable!("detached counter: {e}"))
            });
        TypeMetrics {
            pushes: self.pushes.with_label_values(&[short]),
            push_time: self.push_time.with_label_values(&[short]),
            config_size: self.config_size.with_label_values(&[short]),
            total_rejects: self.total_rejects.with_label_values(&[short]),
            rejects,
        }
    }

    /// The `pilot_xds{type}` gauge of a proxy type (`sidecar`, `router`); resolve once per stream.
    pub fn connected(&self, proxy_type: &str) -> IntGauge {
        self.xds.with_label_values(&[proxy_type])
    }

    /// Every metric in Prometheus text format (version 0.0.4).
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8(buf)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_istiods_and_counters_keep_them() {
        let m = metrics();
        let cds = m.for_type("cds");
        cds.pushed(Duration::from_millis(2), 1234);
        cds.rejected();
        m.connected("router").inc();
        m.refused("connections").inc();
        let text = m.render().expect("renders");
        for name in [
            "pilot_xds{type=\"router\"}",
            "pilot_xds_pushes{type=\"cds\"}",
            "pilot_xds_push_time_bucket{type=\"cds\"",
            "pilot_xds_config_size_bytes_sum{type=\"cds\"}",
            "pilot_total_xds_rejects{type=\"cds\"}",
            "pilot_xds_cds_reject ",
            "pilot_xds_rds_reject ",
            "pilot_proxy_convergence_time_bucket",
            "pilot_debounce_time_bucket",
            "pilot_services ",
            "pilot_virt_services ",
            "meshpilot_xds_refused{limit=\"connections\"}",
            "meshpilot_xds_connections ",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        // Counters keep istiod's names: no `_total` added.
        assert!(
            !text.contains("_total{") && !text.contains("_total "),
            "{text}"
        );
        m.connected("router").dec();
    }
}
