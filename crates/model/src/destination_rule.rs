//! Istio's `DestinationRule` spec (networking.istio.io v1alpha3, v1beta1 and v1 share it): what
//! happens to traffic for a host after routing — load balancing, connection pool, outlier
//! detection, TLS, per-port and per-subset overrides. Serde types with Istio's camelCase names;
//! unknown fields are ignored, as Kubernetes does. Range checks live in `source`, which names the
//! failing field; what compile serves of each field is in `docs/parity.md`.

use serde::{Deserialize, Serialize};

use super::{Labels, Percent, PortSelector};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DestinationRule {
    pub host: String,
    /// Boxed: the policy is large and most rules have none, and every object in memory is as
    /// large as its largest kind.
    pub traffic_policy: Option<Box<TrafficPolicy>>,
    pub subsets: Vec<Subset>,
    pub export_to: Vec<String>,
    /// Client workloads the rule applies to (read so that it can be reported, not served).
    pub workload_selector: Option<ClientWorkloadSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClientWorkloadSelector {
    pub match_labels: Labels,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Subset {
    pub name: String,
    pub labels: Labels,
    pub traffic_policy: Option<TrafficPolicy>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TrafficPolicy {
    pub load_balancer: Option<LoadBalancerSettings>,
    pub connection_pool: Option<ConnectionPoolSettings>,
    pub outlier_detection: Option<OutlierDetection>,
    /// Boxed: its file paths would double the size of every object body.
    pub tls: Option<Box<ClientTlsSettings>>,
    /// Overrides for one port each; a port's settings replace (not merge with) the four fields
    /// above, as istiod applies them.
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// Carry the TCP connections to this host through an HTTP CONNECT (or POST) tunnel.
    pub tunnel: Option<TunnelSettings>,
    /// Send a PROXY protocol header (the client's addresses) first on each upstream
    /// connection.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Circuit-breaker retry budget: the share of active requests that may be retries.
    pub retry_budget: Option<RetryBudget>,
}

/// Where a tunnelled TCP connection asks to go: the proxy sends `CONNECT targetHost:targetPort`
/// (or a POST to it with `protocol: POST`) to the host's endpoints, then the connection's bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TunnelSettings {
    /// `CONNECT` (the default) or `POST`.
    pub protocol: Option<String>,
    pub target_host: String,
    pub target_port: u32,
}

/// The PROXY protocol header a proxy writes upstream before the connection's bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyProtocol {
    /// `None`: V1, as in Istio's API.
    pub version: Option<ProxyProtocolVersion>,
}

/// PROXY protocol version 1 (a text line) or 2 (binary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProxyProtocolVersion {
    V1,
    V2,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PortTrafficPolicy {
    pub port: Option<PortSelector>,
    pub load_balancer: Option<LoadBalancerSettings>,
    pub connection_pool: Option<ConnectionPoolSettings>,
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<Box<ClientTlsSettings>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LoadBalancerSettings {
    pub simple: Option<SimpleLb>,
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Locality-aware balancing: failover order or weights by the client's locality.
    pub locality_lb_setting: Option<LocalityLbSetting>,
    /// Slow start, as a duration string (`60s`).
    pub warmup_duration_secs: Option<String>,
    pub warmup: Option<WarmupConfiguration>,
}

/// Istio's `LocalityLoadBalancerSetting`: how a client spreads requests over the localities
/// (`REGION/ZONE/SUBZONE`) of a service's endpoints. `distribute` and `failover` are
/// alternatives; with neither, failover goes same subzone, zone, region, then anywhere.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LocalityLbSetting {
    /// Weights per destination locality, for clients in a source locality.
    pub distribute: Vec<LocalityDistribute>,
    /// Which region a client's region fails over to first.
    pub failover: Vec<LocalityFailover>,
    /// Label keys (optionally `KEY=VALUE`): endpoints sharing more of them, in order, with
    /// the client are preferred.
    pub failover_priority: Vec<String>,
    /// `false` turns locality balancing off for the rule (the mesh default is on).
    pub enabled: Option<bool>,
}

/// One `distribute` entry: clients in `from` send `to[locality]` percent to each locality.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LocalityDistribute {
    /// A locality, possibly ending in `*` (`us-west/zone1/*`, `us-west/*`).
    pub from: String,
    pub to: std::collections::BTreeMap<String, u32>,
}

/// One `failover` entry: clients in region `from` go to region `to` before any other.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LocalityFailover {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    Unspecified,
    LeastConn,
    LeastRequest,
    RoundRobin,
    Random,
    Passthrough,
}

/// Sticky balancing: one hash key (exactly one of the four) and the ring's or table's size.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsistentHashLb {
    pub http_header_name: Option<String>,
    pub http_cookie: Option<HttpCookie>,
    pub use_source_ip: Option<bool>,
    pub http_query_parameter_name: Option<String>,
    pub ring_hash: Option<RingHash>,
    pub maglev: Option<Maglev>,
    /// The deprecated ring size (ring hash).
    pub minimum_ring_size: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpCookie {
    pub name: String,
    pub path: Option<String>,
    /// Duration string; when set, Envoy makes the cookie if the request has none.
    pub ttl: Option<String>,
    pub attributes: Vec<CookieAttribute>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CookieAttribute {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RingHash {
    pub minimum_ring_size: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Maglev {
    pub table_size: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WarmupConfiguration {
    pub duration: Option<String>,
    pub minimum_percent: Option<f64>,
    pub aggression: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConnectionPoolSettings {
    pub tcp: Option<TcpSettings>,
    pub http: Option<HttpSettings>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TcpSettings {
    pub max_connections: Option<u32>,
    pub connect_timeout: Option<String>,
    pub tcp_keepalive: Option<TcpKeepalive>,
    pub max_connection_duration: Option<String>,
    pub idle_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TcpKeepalive {
    pub probes: Option<u32>,
    pub time: Option<String>,
    pub interval: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpSettings {
    pub http1_max_pending_requests: Option<u32>,
    pub http2_max_requests: Option<u32>,
    pub max_requests_per_connection: Option<u32>,
    pub max_retries: Option<u32>,
    pub idle_timeout: Option<String>,
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    pub use_client_protocol: Option<bool>,
    pub max_concurrent_streams: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    Default,
    DoNotUpgrade,
    Upgrade,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OutlierDetection {
    pub consecutive_5xx_errors: Option<u32>,
    pub consecutive_gateway_errors: Option<u32>,
    /// Deprecated: 5xx errors counted as gateway errors.
    pub consecutive_errors: Option<i32>,
    pub split_external_local_origin_errors: Option<bool>,
    pub consecutive_local_origin_failures: Option<u32>,
    pub interval: Option<String>,
    pub base_ejection_time: Option<String>,
    pub max_ejection_percent: Option<u32>,
    pub min_health_percent: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClientTlsSettings {
    /// `DISABLE`, `SIMPLE`, `MUTUAL` or `ISTIO_MUTUAL` (checked by the source).
    pub mode: Option<String>,
    pub sni: Option<String>,
    /// Files on the proxy (SIMPLE, MUTUAL).
    pub client_certificate: Option<String>,
    pub private_key: Option<String>,
    pub ca_certificates: Option<String>,
    /// A Secret served over SDS (`kubernetes://NAME`) instead of the files.
    pub credential_name: Option<String>,
    /// Identities the server's certificate must carry one of.
    pub subject_alt_names: Vec<String>,
}

impl ClientTlsSettings {
    /// True when istiod sends a sidecar (not a gateway) this setting's cluster without TLS:
    /// SIMPLE or MUTUAL from a Secret's `credentialName` (a `configmap://` one excepted, which
    /// any proxy may read), so that sidecars the rule reaches do not wait for a Secret they
    /// may not read.
    pub fn withheld_from_sidecars(&self) -> bool {
        self.credential_name
            .as_deref()
            .is_some_and(|c| !c.is_empty() && !c.starts_with("configmap://"))
            && matches!(self.mode.as_deref(), Some("SIMPLE" | "MUTUAL"))
    }
}

impl DestinationRule {
    /// Whether istiod sends sidecars some of this rule's clusters without TLS: a rule without
    /// `workloadSelector` whose policy (top level, a subset's, a port's) is
    /// [`withheld_from_sidecars`](ClientTlsSettings::withheld_from_sidecars). (With a
    /// selector istiod asks the selected sidecars' agents for the Secret instead.)
    pub fn withholds_tls_from_sidecars(&self) -> bool {
        self.workload_selector.is_none()
            && self
                .traffic_policy
                .iter()
                .map(|p| &**p)
                .chain(
                    self.subsets
                        .iter()
                        .filter_map(|s| s.traffic_policy.as_ref()),
                )
                .any(TrafficPolicy::withholds_tls_from_sidecars)
    }
}

impl TrafficPolicy {
    /// Whether some `tls` of this policy (top level or a port's) is
    /// [`withheld_from_sidecars`](ClientTlsSettings::withheld_from_sidecars).
    pub fn withholds_tls_from_sidecars(&self) -> bool {
        std::iter::once(&self.tls)
            .chain(self.port_level_settings.iter().map(|p| &p.tls))
            .flatten()
            .any(|t| t.withheld_from_sidecars())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RetryBudget {
    pub percent: Option<Percent>,
    pub min_retry_concurrency: Option<u32>,
}
