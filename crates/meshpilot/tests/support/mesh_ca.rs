//! A control plane with its CA: `serve --ca-dir` with a JWKS of a test token issuer, the
//! secure port on its own loopback address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshpilot_ca::testing::TestIssuer;
use meshpilot_ca::{IstioCertificateRequest, IstioCertificateResponse};
use tempfile::TempDir;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::Meshpilot;

pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
pub const KID: &str = "sa-key-1";

/// The cluster every Envoy of these tests looks for: the one Service the CA mesh serves.
pub const WEB_CLUSTER: &str = "outbound|8080||web.default.svc.cluster.local";

/// A running control plane with its CA (tokens from [`TestIssuer`] `KID`) serving one Service,
/// `web` in `default` with one Pod; the CA's files under `ca_dir`.
pub struct WebWithCa {
    pub dir: TempDir,
    pub ca_dir: PathBuf,
    pub issuer: TestIssuer,
    pub server: Meshpilot,
    /// The secure port's address.
    pub secure: SocketAddr,
}

impl WebWithCa {
    pub async fn start() -> WebWithCa {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config");
        std::fs::create_dir(&config).expect("config dir");
        let web = super::loopback_ip();
        super::write_manifests(
            &config,
            &[(
                "web.yaml",
                &format!(
                    "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\n\
                     spec:\n  selector: {{app: web}}\n  ports: [{{name: http, port: 8080}}]\n---\n{}",
                    super::pod_yaml("web-1", "default", &[("app", "web")], web, &[])
                ),
            )],
        );
        let ca_dir = dir.path().join("ca");
        let issuer = TestIssuer::new(KID);
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, issuer.jwks_json()).expect("jwks");
        let (server, secure) = serve_with_ca(&config, &ca_dir, &jwks, &[]);
        server.wait_ready(Duration::from_secs(20)).await;
        WebWithCa {
            dir,
            ca_dir,
            issuer,
            server,
            secure,
        }
    }

    /// The mesh root the CA signs with.
    pub fn root_cert(&self) -> PathBuf {
        self.ca_dir.join("root-cert.pem")
    }

    /// A file `name` holding a token for service account `ns/sa`.
    pub fn token_file(&self, name: &str, ns: &str, sa: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(
            &path,
            self.issuer.service_account_token(KID, ISSUER, ns, sa),
        )
        .expect("token");
        path
    }
}

/// True when `dump` (an Envoy config dump) holds [`WEB_CLUSTER`] active.
pub fn has_web_cluster(dump: &serde_json::Value) -> bool {
    super::dump::cluster_names(dump)
        .iter()
        .any(|n| n == WEB_CLUSTER)
}

/// `serve` with the CA; the secure port on a free loopback address (returned), plus `extra`.
pub fn serve_with_ca(
    config: &Path,
    ca_dir: &Path,
    jwks: &Path,
    extra: &[&str],
) -> (Meshpilot, SocketAddr) {
    let secure = super::admin_addr();
    let mut args = vec![
        "--ca-dir".to_string(),
        ca_dir.display().to_string(),
        "--jwks-file".to_string(),
        jwks.display().to_string(),
        "--token-issuer".to_string(),
        ISSUER.to_string(),
        "--secure-xds-address".to_string(),
        secure.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Meshpilot::spawn(&[config], &args), secure)
}

/// `CreateCertificate` over plaintext gRPC to `addr`, with `token` as the bearer token.
pub async fn create_certificate(
    addr: SocketAddr,
    token: Option<&str>,
    csr: &str,
    ttl_s: i64,
) -> Result<IstioCertificateResponse, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the xDS port");
    create_certificate_on(channel, token, csr, ttl_s).await
}

/// `CreateCertificate` on `channel`, with `token` (if any) as the bearer token.
pub async fn create_certificate_on(
    channel: tonic::transport::Channel,
    token: Option<&str>,
    csr: &str,
    ttl_s: i64,
) -> Result<IstioCertificateResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(IstioCertificateRequest {
        csr: csr.to_string(),
        validity_duration: ttl_s,
        metadata: None,
    });
    if let Some(t) = token {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header value"),
        );
    }
    let path = http::uri::PathAndQuery::from_static(
        "/istio.v1.auth.IstioCertificateService/CreateCertificate",
    );
    grpc.unary(req, path, tonic_prost::ProstCodec::default())
        .await
        .map(tonic::Response::into_inner)
}

fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("");
    super::base64_decode(&body)
}

/// The URI SANs of a PEM certificate.
pub fn spiffe_sans(pem: &str) -> Vec<String> {
    spiffe_sans_der(&pem_der(pem))
}

/// The URI SANs of a DER certificate.
pub fn spiffe_sans_der(der: &[u8]) -> Vec<String> {
    let (_, cert) = X509Certificate::from_der(der).expect("leaf certificate");
    cert.subject_alternative_name()
        .expect("SAN parses")
        .map(|e| {
            e.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A TLS acceptor presenting a certificate for `host` signed by `ca` (no client certificate
/// asked), for test backends.
pub fn tls_acceptor(
    ca: &meshpilot_ca::CertificateAuthority,
    host: &str,
) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = ca
        .sign_server(&[host.to_string()], Duration::from_secs(3600))
        .expect("server certificate");
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("chain");
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server config");
    tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
}
