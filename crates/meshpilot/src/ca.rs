//! The certificate authority's flags and set-up: where its keys live, how callers' tokens are
//! checked, and the gRPC routes it adds to the xDS port (plaintext there, as istiod serves
//! `CreateCertificate` on 15010 for agents configured with `CA_ADDR=…:15010`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tonic::service::Routes;
use tracing::{info, warn};

use meshpilot_ca::identity::bearer;
use meshpilot_ca::{CertificateAuthority, CertificateServer, CertificateService, JwtAuthenticator};
use meshpilot_transport::tls::{self, ServingCertificate};
use meshpilot_xds::{Secure, StreamAuthenticator, VerifiedIdentity};

/// `serve`'s CA flags.
#[derive(Debug, Clone, Args)]
pub struct CaArgs {
    /// Run the certificate authority with the key material in this directory (Istio's
    /// `cacerts` layout: ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem; or
    /// `istio-ca-secret`'s: ca-cert.pem, ca-key.pem). An empty or missing directory gets a new
    /// self-signed root, kept there for the next start.
    #[arg(long, env = "MESHPILOT_CA_DIR")]
    pub ca_dir: Option<PathBuf>,
    /// With --ca-dir: the JWKS (JSON) of the issuer of service-account tokens; a caller's token
    /// must be signed by one of its keys.
    #[arg(long, env = "MESHPILOT_JWKS_FILE", requires = "ca_dir")]
    pub jwks_file: Option<PathBuf>,
    /// With --jwks-file: the tokens' issuer (`iss`), e.g. the cluster's service-account issuer.
    #[arg(long, env = "MESHPILOT_TOKEN_ISSUER", requires = "jwks_file")]
    pub token_issuer: Option<String>,
    /// The mesh's trust domain: identities are spiffe://TRUST_DOMAIN/ns/NS/sa/SA.
    #[arg(long, env = "MESHPILOT_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// With --ca-dir: address of the secure gRPC port (TLS; ADS and the CA), Istio's 15012.
    #[arg(
        long,
        env = "MESHPILOT_SECURE_XDS_ADDRESS",
        default_value = "0.0.0.0:15012"
    )]
    pub secure_xds_address: SocketAddr,
    /// A further DNS name for the secure port's certificate (repeatable). It always names
    /// istiod.istio-system.svc (and .svc.DOMAIN) and istio-pilot.istio-system.svc, which
    /// Istio's agents check.
    #[arg(
        long = "secure-xds-dns-name",
        env = "MESHPILOT_SECURE_XDS_DNS_NAMES",
        value_delimiter = ','
    )]
    pub secure_xds_dns_names: Vec<String>,
    /// Lifetime of the secure port's certificate (seconds); it is renewed at half of it.
    #[arg(long, env = "MESHPILOT_SECURE_XDS_CERT_TTL", default_value_t = 24 * 3600)]
    pub secure_xds_cert_ttl: u64,
}

/// What the CA runs with.
#[derive(Debug, Clone)]
pub struct CaSettings {
    pub dir: PathBuf,
    pub jwks_file: PathBuf,
    pub issuer: String,
    pub trust_domain: String,
    pub secure_address: SocketAddr,
    /// Every DNS name of the secure port's certificate.
    pub dns_names: Vec<String>,
    pub cert_ttl: Duration,
}

/// Why the CA flags cannot run.
#[derive(Debug, thiserror::Error)]
pub enum CaConfigError {
    #[error(
        "--ca-dir needs a way to check callers' tokens: --jwks-file and --token-issuer \
         (Kubernetes TokenReview is not built yet)"
    )]
    NoAuthenticator,
    #[error("--trust-domain {0:?} is not a DNS name")]
    TrustDomain(String),
    #[error("--secure-xds-cert-ttl must be at least 2 seconds")]
    CertTtl,
}

impl CaArgs {
    /// The CA's settings, `None` without `--ca-dir`; `domain` is the cluster's DNS domain.
    pub fn into_settings(self, domain: &str) -> Result<Option<CaSettings>, CaConfigError> {
        let Some(dir) = self.ca_dir else {
            return Ok(None);
        };
        let td = &self.trust_domain;
        let valid = !td.is_empty()
            && td
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if !valid {
            return Err(CaConfigError::TrustDomain(self.trust_domain));
        }
        if self.secure_xds_cert_ttl < 2 {
            return Err(CaConfigError::CertTtl);
        }
        let mut dns_names: Vec<String> = [
            "istiod.istio-system.svc".to_string(),
            format!("istiod.istio-system.svc.{domain}"),
            "istio-pilot.istio-system.svc".to_string(),
        ]
        .into();
        for n in self.secure_xds_dns_names {
            if !dns_names.contains(&n) {
                dns_names.push(n);
            }
        }
        match (self.jwks_file, self.token_issuer) {
            (Some(jwks_file), Some(issuer)) => Ok(Some(CaSettings {
                dir,
                jwks_file,
                issuer,
                trust_domain: self.trust_domain,
                secure_address: self.secure_xds_address,
                dns_names,
                cert_ttl: Duration::from_secs(self.secure_xds_cert_ttl),
            })),
            _ => Err(CaConfigError::NoAuthenticator),
        }
    }
}

/// The running CA: its gRPC routes (served on both xDS ports) and what the secure port needs.
pub struct CaRuntime {
    pub routes: Routes,
    pub ca: Arc<CertificateAuthority>,
    /// Checks the token on each stream of the secure port.
    pub auth: Arc<JwtAuthenticator>,
}

/// The secure port's stream check: the `authorization: Bearer` token, as the CA checks it.
struct TokenCheck(Arc<JwtAuthenticator>);

impl StreamAuthenticator for TokenCheck {
    fn authenticate(&self, headers: &http::HeaderMap) -> Result<VerifiedIdentity, String> {
        let header = headers.get("authorization").and_then(|v| v.to_str().ok());
        let id = bearer(header)
            .and_then(|t| self.0.authenticate(t))
            .map_err(|e| e.to_string())?;
        Ok(VerifiedIdentity {
            namespace: id.namespace,
            service_account: id.service_account,
        })
    }
}

/// Loads (or creates) the CA and builds the gRPC routes that serve it.
pub fn start(settings: &CaSettings) -> anyhow::Result<CaRuntime> {
    let ca = Arc::new(
        CertificateAuthority::load_or_create(&settings.dir, &settings.trust_domain)
            .context("--ca-dir")?,
    );
    let auth = Arc::new(
        JwtAuthenticator::from_jwks_file(
            &settings.jwks_file,
            &settings.issuer,
            &settings.trust_domain,
        )
        .context("--jwks-file")?,
    );
    info!(
        keys = %ca.origin,
        issuer = %settings.issuer,
        trust_domain = %settings.trust_domain,
        "certificate authority serving CreateCertificate"
    );
    let service = CertificateService::new(
        ca.clone(),
        auth.clone(),
        meshpilot_telemetry::metrics().ca.clone(),
    );
    Ok(CaRuntime {
        routes: Routes::new(CertificateServer::new(service)),
        ca,
        auth,
    })
}

/// The secure port: TLS with a certificate from the CA for `settings.dns_names`, renewed at half
/// its life until `shutdown` (client certificates checked against the root), and a token
/// required on every ADS stream.
pub fn secure_port(
    settings: &CaSettings,
    runtime: &CaRuntime,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Secure> {
    let tls = secure_port_tls(settings, runtime.ca.clone(), shutdown)?;
    Ok(Secure {
        tls,
        auth: Arc::new(TokenCheck(runtime.auth.clone())),
    })
}

fn secure_port_tls(
    settings: &CaSettings,
    ca: Arc<CertificateAuthority>,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let first = ca
        .sign_server(&settings.dns_names, settings.cert_ttl)
        .context("sign the secure port's certificate")?;
    let serving = Arc::new(
        ServingCertificate::from_pem(&first.chain_pem, &first.key_pem)
            .context("the secure port's certificate")?,
    );
    let config = tls::server_config(serving.clone(), ca.root_pem()).context("TLS")?;
    let (names, ttl) = (settings.dns_names.clone(), settings.cert_ttl);
    tokio::spawn(async move {
        let mut lifetime = first.lifetime;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(lifetime / 2) => {}
            }
            match ca.sign_server(&names, ttl).map(|c| {
                let replaced = serving.replace(&c.chain_pem, &c.key_pem);
                (c.lifetime, replaced)
            }) {
                Ok((next, Ok(()))) => {
                    info!(
                        valid_s = next.as_secs(),
                        "secure port's certificate renewed"
                    );
                    lifetime = next;
                }
                Ok((_, Err(e))) => {
                    warn!(error = %e, "secure port's new certificate unusable; retrying in 10 s");
                    lifetime = Duration::from_secs(20);
                }
                Err(e) => {
                    warn!(error = %e, "renewing the secure port's certificate failed; retrying in 10 s");
                    lifetime = Duration::from_secs(20);
                }
            }
        }
    });
    Ok(config)
}
