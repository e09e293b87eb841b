//! The certificate authority's flags and set-up: where its keys live, how callers' tokens are
//! checked, and the gRPC routes it adds to the xDS port (plaintext there, as istiod serves
//! `CreateCertificate` on 15010 for agents configured with `CA_ADDR=…:15010`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use tonic::service::Routes;
use tracing::info;

use meshpilot_ca::{CertificateAuthority, CertificateServer, CertificateService, JwtAuthenticator};

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
}

/// What the CA runs with.
#[derive(Debug, Clone)]
pub struct CaSettings {
    pub dir: PathBuf,
    pub jwks_file: PathBuf,
    pub issuer: String,
    pub trust_domain: String,
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
}

impl CaArgs {
    pub fn into_settings(self) -> Result<Option<CaSettings>, CaConfigError> {
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
        match (self.jwks_file, self.token_issuer) {
            (Some(jwks_file), Some(issuer)) => Ok(Some(CaSettings {
                dir,
                jwks_file,
                issuer,
                trust_domain: self.trust_domain,
            })),
            _ => Err(CaConfigError::NoAuthenticator),
        }
    }
}

/// Loads (or creates) the CA and returns the gRPC routes that serve it.
pub fn routes(settings: &CaSettings) -> anyhow::Result<Routes> {
    let ca = CertificateAuthority::load_or_create(&settings.dir, &settings.trust_domain)
        .context("--ca-dir")?;
    let auth = JwtAuthenticator::from_jwks_file(
        &settings.jwks_file,
        &settings.issuer,
        &settings.trust_domain,
    )
    .context("--jwks-file")?;
    info!(
        keys = %ca.origin,
        issuer = %settings.issuer,
        trust_domain = %settings.trust_domain,
        "certificate authority serving CreateCertificate"
    );
    let service = CertificateService::new(
        Arc::new(ca),
        Arc::new(auth),
        meshpilot_telemetry::metrics().ca.clone(),
    );
    Ok(Routes::new(CertificateServer::new(service)))
}
