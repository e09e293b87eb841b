//! How a sidecar's outbound cluster speaks TLS, as istiod decides it (`cluster_tls.go`):
//!
//! * A DestinationRule `tls` setting wins: DISABLE is plaintext; ISTIO_MUTUAL is Istio mutual
//!   TLS to every endpoint; SIMPLE and MUTUAL originate TLS with the files named
//!   (`caCertificates`, `clientCertificate`, `privateKey`) or the Secret of `credentialName`
//!   (asked for as SDS `kubernetes://NAME` on the ADS stream; only gateways are served it),
//!   checking `subjectAltNames` (a `scheme://` name against URI SANs, others against DNS
//!   SANs). As istiod does, a sidecar gets a SIMPLE or MUTUAL cluster whose rule (without
//!   `workloadSelector`) names a `credentialName` without TLS at all ([`For::Sidecars`]);
//!   the index warns of it.
//! * Else client auto-mTLS: `transport_socket_matches` send Istio mutual TLS to the endpoints
//!   whose pods carry the injector's `security.istio.io/tlsMode: istio` label (their EDS
//!   metadata says `tlsMode: istio`) and plaintext to the others. ALPN as an istio-proxy
//!   offers it for the port's protocol ([`tls::MeshAlpn`]). SNI is
//!   `outbound_.PORT_.SUBSET_.HOST`; the server's certificate must name one of the SPIFFE ids
//!   of the service's service accounts (and, for a ServiceEntry, one of its
//!   `subjectAltNames`). Off when the mesh- or namespace-level
//!   PeerAuthentication of the service's namespace is DISABLE (istiod cannot tell which
//!   workload-level policy applies to a service), for ServiceEntries outside the mesh
//!   (`location: MESH_EXTERNAL`, the default: their servers are not Istio's), for passthrough
//!   (ORIGINAL_DST) clusters, and for services none of whose endpoints carries the label
//!   (every endpoint would be plaintext anyway; a proxy without the agent's SDS can then
//!   still use the cluster). A WorkloadEntry that names a service account carries the label
//!   unless its own labels say otherwise, as under istiod.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch;
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SdsSecretConfig, TlsCertificate,
    UpstreamTlsContext, common_tls_context::ValidationContextType,
};

use super::{clusters, tls};
use meshpilot_index::{ServiceInfo, ServiceOrigin};
use meshpilot_model::{ClientTlsSettings, MtlsMode};

/// What a service's clusters need to speak Istio mutual TLS to it without a rule saying how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct AutoMtls {
    /// Some endpoint has a sidecar, the service is inside the mesh and its namespace does not
    /// DISABLE mTLS.
    pub enabled: bool,
    /// The SPIFFE ids of the service accounts of the endpoints with a sidecar, with a
    /// ServiceEntry's `subjectAltNames`, sorted: what a client speaking Istio mutual TLS to the
    /// service accepts (also under a DestinationRule's ISTIO_MUTUAL that names none).
    pub sans: Vec<String>,
}

impl AutoMtls {
    /// Auto-mTLS for `svc` in a namespace whose mesh/namespace-level mode is `namespace_mode`.
    pub fn of(svc: &ServiceInfo, trust_domain: &str, namespace_mode: MtlsMode) -> AutoMtls {
        if namespace_mode == MtlsMode::Disable {
            return AutoMtls::default();
        }
        let mut enabled = false;
        let mut sans: Vec<String> = svc.subject_alt_names.clone();
        for e in svc.endpoints.values().flatten() {
            if !tls::speaks_istio_mtls(&e.labels) {
                continue;
            }
            enabled = true;
            if let Some(sa) = &e.service_account {
                sans.push(tls::spiffe_id(trust_domain, &svc.namespace, sa));
            }
        }
        sans.sort_unstable();
        sans.dedup();
        let external = matches!(
            svc.origin,
            ServiceOrigin::ServiceEntry { external: true, .. } | ServiceOrigin::ExternalName
        );
        AutoMtls {
            enabled: enabled && !external,
            sans,
        }
    }
}

/// `outbound_.PORT_.SUBSET_.HOST`, the SNI of Istio mutual TLS to a cluster.
pub(super) fn sni(port: u16, subset: &str, host: &str) -> String {
    [
        "outbound_.",
        itoa::Buffer::new().format(port),
        "_.",
        subset,
        "_.",
        host,
    ]
    .concat()
}

/// Which proxies a cluster is compiled for: they differ where a rule's `credentialName` is
/// withheld from sidecars, and for headless Services (sidecars pass their connections through,
/// gateways balance over the endpoints, as istiod does: a gateway has no dialed pod address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum For {
    /// Every proxy class (the shared clusters); what gateways get.
    Everyone,
    /// Sidecars, for the clusters whose rule withholds its TLS from them and those of
    /// headless Services.
    Sidecars,
}

/// True when a cluster for `proxies` is built with no TLS at all: for sidecars, where the
/// rule's TLS is withheld from them (istiod's `buildUpstreamClusterTLSContext` returns no
/// context, and the rule's mode rules auto-mTLS out).
pub(super) fn withheld(proxies: For, rule_tls: Option<&ClientTlsSettings>) -> bool {
    proxies == For::Sidecars && rule_tls.is_some_and(ClientTlsSettings::withheld_from_sidecars)
}

/// Sets `cluster`'s transport as the module docs say.
pub(super) fn apply(
    cluster: &mut Cluster,
    svc: &ServiceInfo,
    port: u16,
    subset: &str,
    rule_tls: Option<&ClientTlsSettings>,
    auto: &AutoMtls,
) {
    let alpn = tls::MeshAlpn::of(svc.port(port).map(|p| p.protocol));
    let mesh = |sans: &[String], sni_override: Option<&str>| {
        let sni = sni_override.map_or_else(|| sni(port, subset, &svc.hostname), str::to_string);
        tls::outbound_mtls(&sni, sans, alpn)
    };
    match rule_tls.map(|t| (t, t.mode.as_deref().unwrap_or("DISABLE"))) {
        Some((_, "DISABLE")) => {}
        Some((t, "ISTIO_MUTUAL")) => {
            let sans = if t.subject_alt_names.is_empty() {
                &auto.sans
            } else {
                &t.subject_alt_names
            };
            cluster.transport_socket = Some(tls::upstream_socket(&mesh(sans, t.sni.as_deref())));
        }
        Some((t, mode)) => {
            cluster.transport_socket = Some(tls::upstream_socket(&originate(t, mode == "MUTUAL")));
        }
        None if auto.enabled && !is_passthrough(cluster) => {
            cluster.transport_socket_matches = vec![
                TransportSocketMatch {
                    name: "tlsMode-istio".to_string(),
                    r#match: Some(tls::tls_mode_istio()),
                    transport_socket: Some(tls::upstream_socket(&mesh(&auto.sans, None))),
                },
                TransportSocketMatch {
                    name: "tlsMode-disabled".to_string(),
                    r#match: Some(Default::default()),
                    transport_socket: Some(tls::raw_buffer()),
                },
            ];
        }
        None => {}
    }
}

fn is_passthrough(cluster: &Cluster) -> bool {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{
        ClusterDiscoveryType, DiscoveryType,
    };
    cluster.cluster_discovery_type
        == Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        ))
}

fn file(path: &str) -> DataSource {
    DataSource {
        specifier: Some(Specifier::Filename(path.to_string())),
        ..DataSource::default()
    }
}

/// SIMPLE or (`mutual`) MUTUAL TLS origination from a rule's files or Secret.
fn originate(t: &ClientTlsSettings, mutual: bool) -> UpstreamTlsContext {
    let secret = |name: String| SdsSecretConfig {
        name,
        sds_config: Some(clusters::ads()),
    };
    let mut common = CommonTlsContext::default();
    let mut validation = CertificateValidationContext {
        match_typed_subject_alt_names: tls::written_san_matchers(&t.subject_alt_names),
        ..CertificateValidationContext::default()
    };
    if let Some(name) = &t.credential_name {
        if mutual {
            common.tls_certificate_sds_secret_configs =
                vec![secret(["kubernetes://", name].concat())];
        }
        common.validation_context_type =
            Some(ValidationContextType::ValidationContextSdsSecretConfig(
                secret(["kubernetes://", name, "-cacert"].concat()),
            ));
    } else {
        if mutual && let (Some(cert), Some(key)) = (&t.client_certificate, &t.private_key) {
            common.tls_certificates = vec![TlsCertificate {
                certificate_chain: Some(file(cert)),
                private_key: Some(file(key)),
                ..TlsCertificate::default()
            }];
        }
        validation.trusted_ca = t.ca_certificates.as_deref().map(file);
        if validation.trusted_ca.is_some() || !validation.match_typed_subject_alt_names.is_empty() {
            common.validation_context_type =
                Some(ValidationContextType::ValidationContext(validation));
        }
    }
    UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: t.sni.clone().unwrap_or_default(),
        ..UpstreamTlsContext::default()
    }
}
