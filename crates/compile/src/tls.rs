//! The TLS shapes istiod gives sidecars, built from stock Envoy extensions only: the workload
//! certificate (`default`) and mesh root (`ROOTCA`) over SDS from the agent's `sds-grpc`
//! cluster, the server side of inbound mutual TLS, the client side of auto-mTLS, and the
//! `tlsMode` endpoint metadata that picks between TLS and plaintext per endpoint.
//!
//! Never Istio's own extensions and never the `istio-peer-exchange` ALPN (stock Envoy has no
//! metadata-exchange filter to speak it). A client offers what an istio-proxy offers for the
//! cluster's protocol ([`MeshAlpn`]), so the server's HTTP or TCP chain takes the connection
//! whichever of meshpilot's and istiod's sidecars sits on either side.

use envoy_types::pb::envoy::config::core::v3::{
    ApiConfigSource, ApiVersion, ConfigSource, GrpcService, Metadata, TransportSocket,
    api_config_source::ApiType, config_source::ConfigSourceSpecifier, grpc_service,
    transport_socket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, TlsParameters, UpstreamTlsContext,
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    subject_alt_name_matcher::SanType,
    tls_parameters::TlsProtocol,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::{BoolValue, Struct, Value, value::Kind};

use super::{any, duration};

/// The agent's SDS cluster in an Istio bootstrap.
pub const SDS_CLUSTER: &str = "sds-grpc";
/// The workload certificate's SDS name.
pub const WORKLOAD_CERT: &str = "default";
/// The mesh root's SDS name.
pub const ROOT_CA: &str = "ROOTCA";
/// The endpoint metadata namespace `transport_socket_matches` reads.
pub const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";
/// The pod label (set by the injector) and endpoint metadata key that say the endpoint has a
/// sidecar speaking Istio mutual TLS.
pub const TLS_MODE_LABEL: &str = meshpilot_model::TLS_MODE_LABEL;
pub const TLS_MODE_KEY: &str = "tlsMode";
pub const TLS_MODE_ISTIO: &str = "istio";
/// The ALPN a client of Istio mutual TLS offers (without metadata exchange).
pub const ALPN_ISTIO: &str = "istio";
/// The ALPNs an Istio client may offer for a connection the server terminates as TCP...
pub const MTLS_TCP_ALPNS: [&str; 2] = ["istio-peer-exchange", "istio"];
/// ...and those that say it carries HTTP (set by istio-proxy's ALPN filter).
pub const MTLS_HTTP_ALPNS: [&str; 3] = ["istio-http/1.0", "istio-http/1.1", "istio-h2"];
/// Every ALPN an Istio client of mutual TLS may offer: what a port declared HTTP or TCP
/// accepts as mutual TLS when it also takes other traffic (PERMISSIVE), as istiod's
/// `allIstioMtlsALPNs`.
pub const MTLS_ALL_ALPNS: [&str; 5] = [
    "istio",
    "istio-peer-exchange",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];

/// What a client of Istio mutual TLS offers as ALPN, by what the cluster carries. istio-proxy's
/// `istio.alpn` filter replaces the cluster's list per request with `istio-http/1.1, istio,
/// http/1.1` or `istio-h2, istio, h2`; stock Envoy has no such filter, so the list is fixed
/// per cluster from the port's declared protocol, which gives the same bytes on the wire for
/// HTTP and HTTP/2 ports. The server picks its chain by the first of these it knows, so HTTP
/// lands on its HTTP chain even on a port whose protocol it sniffs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshAlpn {
    /// TCP, and ports whose protocol is sniffed (one cluster carries both the sniffed HTTP
    /// and the raw TCP, and raw TCP must not land on an HTTP chain): `istio`, as istiod's
    /// `ALPNInMesh` without metadata exchange.
    Tcp,
    /// A port declared HTTP (HTTP/1.1 upstream).
    Http11,
    /// A port declared `http2` or `grpc` (HTTP/2 upstream).
    Http2,
}

impl MeshAlpn {
    /// The ALPN of clusters to a port of `protocol` (none: unknown, sniffed).
    pub fn of(protocol: Option<meshpilot_model::Protocol>) -> MeshAlpn {
        use meshpilot_model::Protocol;
        match protocol {
            Some(Protocol::Http) => MeshAlpn::Http11,
            Some(Protocol::Http2 | Protocol::Grpc) => MeshAlpn::Http2,
            _ => MeshAlpn::Tcp,
        }
    }

    fn protocols(self) -> &'static [&'static str] {
        match self {
            MeshAlpn::Tcp => &[ALPN_ISTIO],
            MeshAlpn::Http11 => &["istio-http/1.1", ALPN_ISTIO, "http/1.1"],
            MeshAlpn::Http2 => &["istio-h2", ALPN_ISTIO, "h2"],
        }
    }
}
/// What an inbound mutual-TLS server offers (istiod's list without `istio-peer-exchange`).
const SERVER_ALPNS: [&str; 2] = ["h2", "http/1.1"];
/// istiod's inbound cipher suites.
const SERVER_CIPHERS: [&str; 6] = [
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
];

const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
const DOWNSTREAM_TLS: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const UPSTREAM_TLS: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const RAW_BUFFER: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";

/// The agent's SDS as istiod points to it: state-of-the-world gRPC on `sds-grpc`, waiting for
/// the secret however long it takes (`initial_fetch_timeout: 0s`), so nothing serves before
/// the proxy holds its certificate.
fn agent_sds() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        initial_fetch_timeout: Some(duration(std::time::Duration::ZERO)),
        config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(ApiConfigSource {
            api_type: ApiType::Grpc as i32,
            transport_api_version: ApiVersion::V3 as i32,
            grpc_services: vec![GrpcService {
                target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                    grpc_service::EnvoyGrpc {
                        cluster_name: SDS_CLUSTER.to_string(),
                        ..grpc_service::EnvoyGrpc::default()
                    },
                )),
                ..GrpcService::default()
            }],
            set_node_on_first_message_only: true,
            ..ApiConfigSource::default()
        })),
        ..ConfigSource::default()
    }
}

fn agent_secret(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(agent_sds()),
    }
}

/// The workload certificate, validated against the mesh root with `validation` added.
fn mesh_common(alpns: &[&str], validation: CertificateValidationContext) -> CommonTlsContext {
    CommonTlsContext {
        tls_params: Some(TlsParameters {
            tls_minimum_protocol_version: TlsProtocol::TlSv12 as i32,
            tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
            ..TlsParameters::default()
        }),
        alpn_protocols: alpns.iter().map(|s| s.to_string()).collect(),
        tls_certificate_sds_secret_configs: vec![agent_secret(WORKLOAD_CERT)],
        validation_context_type: Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(validation),
                validation_context_sds_secret_config: Some(agent_secret(ROOT_CA)),
                ..CombinedCertificateValidationContext::default()
            },
        )),
        ..CommonTlsContext::default()
    }
}

/// The server side of inbound mutual TLS: the workload certificate, a client certificate
/// signed by the mesh root required (any identity of the mesh: authorization is not ours).
pub fn inbound_mtls() -> TransportSocket {
    let mut common = mesh_common(&SERVER_ALPNS, CertificateValidationContext::default());
    if let Some(params) = common.tls_params.as_mut() {
        params.cipher_suites = SERVER_CIPHERS.iter().map(|s| s.to_string()).collect();
    }
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(BoolValue { value: true }),
        ..DownstreamTlsContext::default()
    };
    tls_socket(any(DOWNSTREAM_TLS, &ctx))
}

/// The server side of a gateway's `ISTIO_MUTUAL` server, as istiod builds it: the gateway's
/// own workload certificate (SDS `default` from its agent) and the client's certificate
/// checked against the mesh root (`ROOTCA`) and, when given, `sans`; `params` and `alpns`
/// are the server's.
pub fn gateway_istio_mutual(
    params: TlsParameters,
    alpns: &[&str],
    sans: Vec<SubjectAltNameMatcher>,
) -> CommonTlsContext {
    let validation = CertificateValidationContext {
        match_typed_subject_alt_names: sans,
        ..CertificateValidationContext::default()
    };
    CommonTlsContext {
        tls_params: Some(params),
        ..mesh_common(alpns, validation)
    }
}

/// The client side of Istio mutual TLS to a service: SNI `sni`, the peer's certificate must
/// carry one of `sans` (SPIFFE ids; none: any identity the mesh root signed); ALPN as an
/// istio-proxy offers it for what the cluster carries.
pub fn outbound_mtls(sni: &str, sans: &[String], alpn: MeshAlpn) -> UpstreamTlsContext {
    UpstreamTlsContext {
        common_tls_context: Some(mesh_common(alpn.protocols(), san_validation(sans))),
        sni: sni.to_string(),
        ..UpstreamTlsContext::default()
    }
}

/// A validation context that accepts only certificates with one of `sans` as a URI SAN.
pub fn san_validation(sans: &[String]) -> CertificateValidationContext {
    CertificateValidationContext {
        match_typed_subject_alt_names: sans
            .iter()
            .map(|san| SubjectAltNameMatcher {
                san_type: SanType::Uri as i32,
                matcher: Some(StringMatcher {
                    match_pattern: Some(MatchPattern::Exact(san.clone())),
                    ..StringMatcher::default()
                }),
                ..SubjectAltNameMatcher::default()
            })
            .collect(),
        ..CertificateValidationContext::default()
    }
}

/// SAN matchers for names a user wrote (a Gateway's or a DestinationRule's
/// `subjectAltNames`): a `spiffe://` (or other `scheme://`) name matches URI SANs, others DNS
/// SANs, so a backend certificate naming its host matches as it does under istiod's untyped
/// matcher.
pub fn written_san_matchers(sans: &[String]) -> Vec<SubjectAltNameMatcher> {
    sans.iter()
        .map(|san| SubjectAltNameMatcher {
            san_type: if san.contains("://") {
                SanType::Uri
            } else {
                SanType::Dns
            } as i32,
            matcher: Some(StringMatcher {
                match_pattern: Some(MatchPattern::Exact(san.clone())),
                ..StringMatcher::default()
            }),
            ..SubjectAltNameMatcher::default()
        })
        .collect()
}

/// A TLS transport socket for an upstream context.
pub fn upstream_socket(ctx: &UpstreamTlsContext) -> TransportSocket {
    tls_socket(any(UPSTREAM_TLS, ctx))
}

fn tls_socket(config: envoy_types::pb::google::protobuf::Any) -> TransportSocket {
    TransportSocket {
        name: TLS_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(config)),
    }
}

/// Plaintext.
pub fn raw_buffer() -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.raw_buffer".to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(
            RAW_BUFFER,
            &RawBuffer::default(),
        ))),
    }
}

/// `{tlsMode: istio}`: the match of the mutual-TLS transport socket, and the endpoint metadata
/// it matches.
pub fn tls_mode_istio() -> Struct {
    Struct {
        fields: [(
            TLS_MODE_KEY.to_string(),
            Value {
                kind: Some(Kind::StringValue(TLS_MODE_ISTIO.to_string())),
            },
        )]
        .into_iter()
        .collect(),
    }
}

/// The metadata of an endpoint whose pod has a sidecar speaking Istio mutual TLS.
pub fn istio_endpoint_metadata() -> Metadata {
    Metadata {
        filter_metadata: [(TRANSPORT_SOCKET_MATCH.to_string(), tls_mode_istio())]
            .into_iter()
            .collect(),
        ..Metadata::default()
    }
}

/// True for an endpoint whose workload carries the injector's `tlsMode: istio` label.
pub fn speaks_istio_mtls(labels: &meshpilot_model::Labels) -> bool {
    labels.get(TLS_MODE_LABEL).map(String::as_str) == Some(TLS_MODE_ISTIO)
}

/// `spiffe://TRUST_DOMAIN/ns/NS/sa/SA`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    [
        "spiffe://",
        trust_domain,
        "/ns/",
        namespace,
        "/sa/",
        service_account,
    ]
    .concat()
}
