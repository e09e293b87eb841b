//! Istio's `networking.istio.io` specs (v1alpha3, v1beta1 and v1 share one schema), as serde
//! types with Istio's camelCase field names. Unknown fields are ignored, as Kubernetes does.
//! Range checks (weights, ports) live in `source`, which names the failing field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Labels;

// ---------------------------------------------------------------------------------------------
// VirtualService

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VirtualService {
    pub hosts: Vec<String>,
    /// Gateway names (`name`, `ns/name`) or `mesh`. Empty means `mesh` only.
    pub gateways: Vec<String>,
    pub http: Vec<HttpRoute>,
    pub tcp: Vec<TcpRoute>,
    pub tls: Vec<TlsRoute>,
    pub export_to: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRoute {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    pub route: Vec<HttpRouteDestination>,
    pub redirect: Option<HttpRedirect>,
    pub direct_response: Option<HttpDirectResponse>,
    pub rewrite: Option<HttpRewrite>,
    /// Duration string, e.g. `10s`, `1.5s`, `500ms`.
    pub timeout: Option<String>,
    pub retries: Option<HttpRetry>,
    pub fault: Option<HttpFault>,
    pub mirror: Option<Destination>,
    pub mirror_percentage: Option<Percent>,
    /// The deprecated integer form of `mirrorPercentage`.
    pub mirror_percent: Option<u32>,
    /// Several mirrors, each with its own share; not together with `mirror`.
    pub mirrors: Vec<HttpMirrorPolicy>,
    pub cors_policy: Option<CorsPolicy>,
    pub headers: Option<Headers>,
    /// Routes delegated to another VirtualService (read only to refuse it by name).
    pub delegate: Option<Delegate>,
}

/// One of `mirrors`: where copies go and which share of requests is copied (all when absent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpMirrorPolicy {
    pub destination: Destination,
    pub percentage: Option<Percent>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Delegate {
    pub name: String,
    pub namespace: Option<String>,
}

/// Istio's StringMatch: one of `exact`, `prefix`, `regex` (RE2 syntax), or none of them (`{}`),
/// which for a header or query parameter means "present, with any value".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
    /// `{}`: any value.
    Any,
}

/// StringMatch as written: at most one of the three keys.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StringMatchFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    exact: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    regex: Option<String>,
}

impl Serialize for StringMatch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut f = StringMatchFields::default();
        match self {
            StringMatch::Exact(v) => f.exact = Some(v.clone()),
            StringMatch::Prefix(v) => f.prefix = Some(v.clone()),
            StringMatch::Regex(v) => f.regex = Some(v.clone()),
            StringMatch::Any => {}
        }
        f.serialize(s)
    }
}

impl<'de> Deserialize<'de> for StringMatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = StringMatchFields::deserialize(d)?;
        match (f.exact, f.prefix, f.regex) {
            (None, None, None) => Ok(StringMatch::Any),
            (Some(v), None, None) => Ok(StringMatch::Exact(v)),
            (None, Some(v), None) => Ok(StringMatch::Prefix(v)),
            (None, None, Some(v)) => Ok(StringMatch::Regex(v)),
            _ => Err(serde::de::Error::custom(
                "a string match takes only one of exact, prefix and regex",
            )),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpMatchRequest {
    pub name: Option<String>,
    pub uri: Option<StringMatch>,
    pub scheme: Option<StringMatch>,
    pub method: Option<StringMatch>,
    pub authority: Option<StringMatch>,
    pub headers: BTreeMap<String, StringMatch>,
    pub port: Option<u32>,
    pub source_labels: Labels,
    pub gateways: Vec<String>,
    pub query_params: BTreeMap<String, StringMatch>,
    pub ignore_uri_case: bool,
    pub without_headers: BTreeMap<String, StringMatch>,
    pub source_namespace: Option<String>,
    pub stat_prefix: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRouteDestination {
    pub destination: Destination,
    /// Relative to the other destinations' weights (need not sum to 100); omitted means the
    /// whole share when it is the only destination, else 0.
    pub weight: Option<i64>,
    pub headers: Option<Headers>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Destination {
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<PortSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PortSelector {
    pub number: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRedirect {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub port: Option<u32>,
    pub scheme: Option<String>,
    /// HTTP status; 301 when omitted.
    pub redirect_code: Option<u32>,
    /// Instead of `port`: keep the request's port, or use the scheme's default.
    pub derive_port: Option<DerivePort>,
    /// Replaces the matched prefix of the path in the redirect's location.
    pub prefix_rewrite: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DerivePort {
    FromProtocolDefault,
    FromRequestPort,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpDirectResponse {
    pub status: u32,
    pub body: Option<DirectResponseBody>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DirectResponseBody {
    pub string: Option<String>,
    /// Base64, as protobuf `bytes` are written in YAML and JSON.
    pub bytes: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRewrite {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RegexRewrite {
    /// RE2 pattern over the path.
    #[serde(rename = "match")]
    pub pattern: String,
    /// The substitution, with `\1`-style group references.
    pub rewrite: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRetry {
    pub attempts: i64,
    pub per_try_timeout: Option<String>,
    pub retry_on: Option<String>,
    pub retry_remote_localities: Option<bool>,
    /// On by default: a retry prefers a host not tried yet.
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Base interval of the exponential back-off between retries (a duration string).
    pub backoff: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpFault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FaultDelay {
    pub fixed_delay: Option<String>,
    pub exponential_delay: Option<String>,
    pub percentage: Option<Percent>,
    /// Deprecated integer percentage; `percentage` wins when both are set.
    pub percent: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FaultAbort {
    pub http_status: Option<u32>,
    /// A gRPC status name such as `UNAVAILABLE`.
    pub grpc_status: Option<String>,
    pub http2_error: Option<String>,
    pub percentage: Option<Percent>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Percent {
    pub value: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CorsPolicy {
    pub allow_origins: Vec<StringMatch>,
    /// Deprecated exact origins, used when `allowOrigins` is empty.
    pub allow_origin: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age: Option<String>,
    pub allow_credentials: Option<bool>,
    /// `FORWARD` (the default) or `IGNORE`: what to do with a preflight whose origin is not
    /// allowed.
    pub unmatched_preflights: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Headers {
    pub request: Option<HeaderOperations>,
    pub response: Option<HeaderOperations>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HeaderOperations {
    pub set: BTreeMap<String, String>,
    pub add: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TcpRoute {
    #[serde(rename = "match")]
    pub matches: Vec<L4Match>,
    pub route: Vec<RouteDestination>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TlsRoute {
    #[serde(rename = "match")]
    pub matches: Vec<L4Match>,
    pub route: Vec<RouteDestination>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct L4Match {
    pub port: Option<u32>,
    /// IPv4/IPv6 addresses or CIDR ranges the connection was sent to.
    pub destination_subnets: Vec<String>,
    pub sni_hosts: Vec<String>,
    pub gateways: Vec<String>,
    pub source_labels: Labels,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteDestination {
    pub destination: Destination,
    pub weight: Option<i64>,
}

// ---------------------------------------------------------------------------------------------
// Gateway

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Gateway {
    pub selector: Labels,
    pub servers: Vec<Server>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Server {
    pub port: GatewayPort,
    /// `host`, `ns/host`, `./host` or `*/host`.
    pub hosts: Vec<String>,
    pub tls: Option<ServerTls>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayPort {
    pub number: u32,
    pub name: String,
    pub protocol: String,
    pub target_port: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServerTls {
    /// On an HTTP server: answer every request with a 301 to `https://`.
    pub https_redirect: bool,
    /// `SIMPLE`, `MUTUAL` (served here), `PASSTHROUGH`, `AUTO_PASSTHROUGH`, `ISTIO_MUTUAL`.
    pub mode: Option<String>,
    /// A Secret in the gateway proxy's namespace, sent over SDS as `kubernetes://NAME`.
    pub credential_name: Option<String>,
    /// File paths on the gateway proxy, instead of `credentialName`.
    pub server_certificate: Option<String>,
    pub private_key: Option<String>,
    pub ca_certificates: Option<String>,
    /// `TLS_AUTO`, `TLSV1_0` … `TLSV1_3`.
    pub min_protocol_version: Option<String>,
    pub max_protocol_version: Option<String>,
    pub cipher_suites: Vec<String>,
    /// For MUTUAL: the client certificate must carry one of these SANs.
    pub subject_alt_names: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// ServiceEntry, WorkloadEntry, Sidecar

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceEntry {
    pub hosts: Vec<String>,
    pub addresses: Vec<String>,
    pub ports: Vec<ServiceEntryPort>,
    pub location: Option<Location>,
    pub resolution: Option<Resolution>,
    pub endpoints: Vec<WorkloadEntry>,
    pub workload_selector: Option<WorkloadSelector>,
    pub export_to: Vec<String>,
    /// The identities (SPIFFE ids) a client speaking Istio mutual TLS to the entry accepts,
    /// beside those of its endpoints' service accounts.
    pub subject_alt_names: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceEntryPort {
    pub number: u32,
    pub protocol: Option<String>,
    pub name: String,
    pub target_port: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    MeshExternal,
    MeshInternal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    None,
    Static,
    Dns,
    DnsRoundRobin,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkloadSelector {
    pub labels: Labels,
}

/// A WorkloadEntry spec; also a ServiceEntry's inline `endpoints` item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkloadEntry {
    pub address: String,
    /// Port name → target port number.
    pub ports: BTreeMap<String, u32>,
    pub labels: Labels,
    pub network: Option<String>,
    pub locality: Option<String>,
    pub weight: Option<u32>,
    pub service_account: Option<String>,
}

impl WorkloadEntry {
    /// Its labels as istiod's `ConvertWorkloadEntry` merges them: the spec's, with `meta`
    /// (the object's metadata labels; none for a ServiceEntry's inline endpoint) over them,
    /// and the `security.istio.io/tlsMode: istio` label istiod gives an entry that names a
    /// service account without saying its TLS mode: such a workload is taken to run a sidecar.
    pub fn endpoint_labels(&self, meta: &Labels) -> Labels {
        let mut labels = self.labels.clone();
        labels.extend(meta.iter().map(|(k, v)| (k.clone(), v.clone())));
        if self.service_account.is_some() && !labels.contains_key(TLS_MODE_LABEL) {
            labels.insert(TLS_MODE_LABEL.to_string(), "istio".to_string());
        }
        labels
    }

    /// Its locality: `locality`, else (as istiod) the one `labels` (its
    /// [`endpoint_labels`](Self::endpoint_labels)) give in [`locality_label`].
    pub fn endpoint_locality(&self, labels: &Labels) -> Option<String> {
        self.locality
            .clone()
            .filter(|l| !l.is_empty())
            .or_else(|| locality_label(labels))
    }
}

/// A workload's locality from its labels, as istiod's `GetLocalityLabel` and
/// `SanitizeLocalityLabel` read it: `topology.istio.io/locality`, else the older
/// `istio-locality`, with `.` standing for `/` (a Kubernetes label value cannot hold `/`).
pub fn locality_label(labels: &Labels) -> Option<String> {
    ["topology.istio.io/locality", "istio-locality"]
        .iter()
        .find_map(|k| labels.get(*k))
        .filter(|v| !v.is_empty())
        .map(|v| {
            if v.contains('/') {
                v.clone()
            } else {
                v.replace('.', "/")
            }
        })
}

/// The label the sidecar injector puts on a workload to say it speaks Istio mutual TLS.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Sidecar {
    pub workload_selector: Option<WorkloadSelector>,
    /// The ports the workload serves: when present they replace those of its Services.
    pub ingress: Vec<IstioIngressListener>,
    pub egress: Vec<IstioEgressListener>,
    pub outbound_traffic_policy: Option<SidecarOutboundTrafficPolicy>,
}

/// A Sidecar's `outboundTrafficPolicy`: the mode is read; `egressProxy` is not (reported as an
/// unread field).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SidecarOutboundTrafficPolicy {
    /// As written, so that a mode of the wrong type is refused naming its value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<serde_json::Value>,
}

impl Sidecar {
    /// The `outboundTrafficPolicy.mode` it sets, if it sets a known one.
    pub fn outbound_mode(&self) -> Option<OutboundTrafficMode> {
        let mode = self
            .outbound_traffic_policy
            .as_ref()?
            .mode
            .as_ref()?
            .as_str()?;
        OutboundTrafficMode::parse(mode)
    }
}

/// Where a sidecar sends traffic for destinations the registry does not know (MeshConfig and
/// Sidecar `outboundTrafficPolicy.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficMode {
    /// Passed through to the address the client dialled (istiod's default).
    #[default]
    AllowAny,
    /// Refused: only services in the registry are reachable.
    RegistryOnly,
}

impl OutboundTrafficMode {
    /// `ALLOW_ANY` or `REGISTRY_ONLY` (case-insensitive); anything else gives `None`.
    pub fn parse(s: &str) -> Option<OutboundTrafficMode> {
        match s.to_ascii_uppercase().as_str() {
            "ALLOW_ANY" => Some(OutboundTrafficMode::AllowAny),
            "REGISTRY_ONLY" => Some(OutboundTrafficMode::RegistryOnly),
            _ => None,
        }
    }
}

/// A Sidecar `ingress` listener: a port the workload serves and where the sidecar sends it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IstioIngressListener {
    pub port: GatewayPort,
    pub bind: Option<String>,
    /// `127.0.0.1:PORT`, `[::1]:PORT`, `0.0.0.0:PORT` (the pod IP), `[::]:PORT` or
    /// `unix:///path`; absent: the address the connection was sent to.
    pub default_endpoint: Option<String>,
    pub capture_mode: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IstioEgressListener {
    pub port: Option<GatewayPort>,
    pub bind: Option<String>,
    /// `ns/host` entries: `./*`, `istio-system/*`, `*/reviews.default.svc.cluster.local`.
    pub hosts: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Helpers for fields whose written form is not their value.

/// The number of a gRPC status name, as Istio's `fault.abort.grpcStatus` names it (`UNAVAILABLE`
/// is 14).
pub fn grpc_status_code(name: &str) -> Option<u32> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES
        .iter()
        .position(|n| *n == name)
        .and_then(|i| u32::try_from(i).ok())
}

/// Decodes standard base64 (with or without `=` padding), the way protobuf `bytes` fields are
/// written in YAML and JSON; `None` when `text` is not base64.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let digits = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in digits {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (bits < 6).then_some(out)
}

#[cfg(test)]
mod helper_tests {
    use super::*;

    #[test]
    fn base64_and_grpc_names() {
        assert_eq!(decode_base64("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(decode_base64("aGVsbG8").as_deref(), Some(&b"hello"[..]));
        assert_eq!(decode_base64("not base64!"), None);
        assert_eq!(grpc_status_code("UNAVAILABLE"), Some(14));
        assert_eq!(grpc_status_code("unavailable"), None);
    }

    #[test]
    fn string_match_reads_one_key_or_none() {
        let any: StringMatch = serde_json::from_str("{}").expect("empty match");
        assert_eq!(any, StringMatch::Any);
        let exact: StringMatch = serde_json::from_str(r#"{"exact":"a"}"#).expect("exact");
        assert_eq!(exact, StringMatch::Exact("a".into()));
        assert!(serde_json::from_str::<StringMatch>(r#"{"exact":"a","prefix":"b"}"#).is_err());
        assert!(serde_json::from_str::<StringMatch>(r#"{"suffix":"a"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&StringMatch::Any).expect("json"),
            "{}"
        );
    }
}
