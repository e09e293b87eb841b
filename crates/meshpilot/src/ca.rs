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

use meshpilot_ca::identity::{
    AuthError, Authenticator, ISTIO_CA_AUDIENCE, bearer, certificate_identity,
    service_account_identity,
};
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
    /// must be signed by one of its keys. Without it, under --kube, tokens are checked with the
    /// Kubernetes API's TokenReview (audience istio-ca), as istiod does.
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
    pub tokens: TokenCheckBy,
    pub trust_domain: String,
    pub secure_address: SocketAddr,
    /// Every DNS name of the secure port's certificate.
    pub dns_names: Vec<String>,
    pub cert_ttl: Duration,
}

/// How callers' tokens are checked.
#[derive(Debug, Clone)]
pub enum TokenCheckBy {
    /// Signed by a key of this JWKS file, from this issuer.
    Jwks { file: PathBuf, issuer: String },
    /// The Kubernetes API's TokenReview (needs `--kube`).
    TokenReview,
}

/// Why the CA flags cannot run.
#[derive(Debug, thiserror::Error)]
pub enum CaConfigError {
    #[error(
        "--ca-dir needs a way to check callers' tokens: --jwks-file and --token-issuer, or \
         --kube (Kubernetes TokenReview)"
    )]
    NoAuthenticator,
    #[error("--trust-domain {0:?} is not a DNS name")]
    TrustDomain(String),
    #[error("--secure-xds-cert-ttl must be at least 2 seconds")]
    CertTtl,
}

impl CaArgs {
    /// The CA's settings, `None` without `--ca-dir`; `domain` is the cluster's DNS domain.
    pub fn into_settings(
        self,
        domain: &str,
        kube: bool,
    ) -> Result<Option<CaSettings>, CaConfigError> {
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
        let tokens = match (self.jwks_file, self.token_issuer) {
            (Some(file), Some(issuer)) => TokenCheckBy::Jwks { file, issuer },
            (None, None) if kube => TokenCheckBy::TokenReview,
            _ => return Err(CaConfigError::NoAuthenticator),
        };
        Ok(Some(CaSettings {
            dir,
            tokens,
            trust_domain: self.trust_domain,
            secure_address: self.secure_xds_address,
            dns_names,
            cert_ttl: Duration::from_secs(self.secure_xds_cert_ttl),
        }))
    }
}

/// The running CA: its gRPC routes (served on both xDS ports) and what the secure port needs.
pub struct CaRuntime {
    pub routes: Routes,
    pub ca: Arc<CertificateAuthority>,
    /// Checks the token on each stream of the secure port.
    pub auth: Arc<dyn Authenticator>,
}

/// The secure port's stream check, as the CA checks a caller: a workload certificate of the
/// trust domain presented as the TLS client certificate, else the `authorization: Bearer`
/// token.
struct StreamCheck {
    tokens: Arc<dyn Authenticator>,
    trust_domain: String,
}

impl StreamAuthenticator for StreamCheck {
    fn authenticate(
        &self,
        authorization: Option<String>,
        client_certificate: Option<Arc<[u8]>>,
    ) -> futures::future::BoxFuture<'static, Result<VerifiedIdentity, String>> {
        let from_certificate = client_certificate
            .map(|der| certificate_identity(&der, &self.trust_domain).map_err(|e| e.to_string()));
        let tokens = self.tokens.clone();
        Box::pin(async move {
            let id = match (from_certificate, bearer(authorization.as_deref())) {
                (Some(Ok(id)), _) => id,
                (_, Ok(token)) => tokens.verify(token).await.map_err(|e| e.to_string())?,
                (Some(Err(e)), Err(_)) => return Err(e),
                (None, Err(e)) => return Err(e.to_string()),
            };
            Ok(VerifiedIdentity {
                namespace: id.namespace,
                service_account: id.service_account,
            })
        })
    }
}

/// The client certificate of a request on the secure port (none on the plaintext port).
fn caller_certificate(extensions: &http::Extensions) -> Option<Arc<[u8]>> {
    extensions
        .get::<tls::TlsConnectInfo>()
        .and_then(|t| t.client_certificate.clone())
}

/// Tokens checked by the Kubernetes API (`TokenReview` with audience `istio-ca`), as istiod's
/// KubeJWTAuthenticator does: the API says whether the token is valid and whose it is.
struct TokenReviewer {
    client: kube::Client,
    trust_domain: String,
}

impl Authenticator for TokenReviewer {
    fn verify(&self, token: &str) -> meshpilot_ca::identity::AuthFuture {
        use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        let trust_domain = self.trust_domain.clone();
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: Some(vec![ISTIO_CA_AUDIENCE.to_string()]),
            },
            ..TokenReview::default()
        };
        Box::pin(async move {
            let answer = api
                .create(&kube::api::PostParams::default(), &review)
                .await
                .map_err(|e| {
                    AuthError::Review(format!("the API server could not be asked: {e}"))
                })?;
            let status = answer.status.unwrap_or_default();
            if status.authenticated != Some(true) {
                let why = status
                    .error
                    .unwrap_or_else(|| "not authenticated".to_string());
                return Err(AuthError::Review(why));
            }
            if let Some(audiences) = &status.audiences
                && !audiences.iter().any(|a| a == ISTIO_CA_AUDIENCE)
            {
                return Err(AuthError::Review(format!(
                    "the token is not for audience {ISTIO_CA_AUDIENCE}"
                )));
            }
            let user = status.user.unwrap_or_default();
            let username = user.username.unwrap_or_default();
            service_account_identity(&username, &trust_domain)
        })
    }
}

/// Loads (or creates) the CA and builds the gRPC routes that serve it. `kube` is the Kubernetes
/// client, for TokenReview.
pub fn start(settings: &CaSettings, kube: Option<&kube::Client>) -> anyhow::Result<CaRuntime> {
    let ca = Arc::new(
        CertificateAuthority::load_or_create(&settings.dir, &settings.trust_domain)
            .context("--ca-dir")?,
    );
    let (auth, how): (Arc<dyn Authenticator>, String) = match (&settings.tokens, kube) {
        (TokenCheckBy::Jwks { file, issuer }, _) => (
            Arc::new(
                JwtAuthenticator::from_jwks_file(file, issuer, &settings.trust_domain)
                    .context("--jwks-file")?,
            ),
            format!("JWKS of {issuer}"),
        ),
        (TokenCheckBy::TokenReview, Some(client)) => (
            Arc::new(TokenReviewer {
                client: client.clone(),
                trust_domain: settings.trust_domain.clone(),
            }),
            "Kubernetes TokenReview".to_string(),
        ),
        (TokenCheckBy::TokenReview, None) => {
            anyhow::bail!("--ca-dir without --jwks-file needs --kube (TokenReview)")
        }
    };
    info!(
        keys = %ca.origin,
        tokens = %how,
        trust_domain = %settings.trust_domain,
        "certificate authority serving CreateCertificate"
    );
    let service = CertificateService::new(
        ca.clone(),
        auth.clone(),
        meshpilot_telemetry::metrics().ca.clone(),
    )
    .with_client_certificates(Arc::new(caller_certificate), &settings.trust_domain);
    Ok(CaRuntime {
        routes: Routes::new(CertificateServer::new(service)),
        ca,
        auth,
    })
}

/// The secure port: TLS with a certificate from the CA for `settings.dns_names`, renewed at half
/// its life until `shutdown` (client certificates checked against the root), and every ADS
/// stream's caller proven by its workload certificate or a token.
pub fn secure_port(
    settings: &CaSettings,
    runtime: &CaRuntime,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Secure> {
    let tls = secure_port_tls(settings, runtime.ca.clone(), shutdown)?;
    Ok(Secure {
        tls,
        auth: Arc::new(StreamCheck {
            tokens: runtime.auth.clone(),
            trust_domain: settings.trust_domain.clone(),
        }),
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

/// The ConfigMap every namespace gets with the mesh root (Istio's name, key and label): the
/// injected sidecar mounts it, and a pod whose namespace lacks it cannot start.
pub const ROOT_CONFIGMAP: &str = "istio-ca-root-cert";
/// Namespaces Istio's namespace controller leaves alone.
const IGNORED_NAMESPACES: [&str; 3] = ["kube-public", "kube-node-lease", "local-path-storage"];

/// Keeps `istio-ca-root-cert` (`root-cert.pem`) in every namespace, as istiod's namespace
/// controller does: applied (server-side, field manager `meshpilot`) to each namespace when it
/// is first seen, and again whenever the ConfigMap is deleted or its `root-cert.pem` edited,
/// until `shutdown`.
pub async fn distribute_root(
    client: kube::Client,
    root_pem: String,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    use kube::runtime::{WatchStreamExt, watcher};
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    let mut namespace_events = std::pin::pin!(
        watcher(namespaces, watcher::Config::default())
            .default_backoff()
            .applied_objects()
    );
    let configmaps: kube::Api<ConfigMap> = kube::Api::all(client.clone());
    let mut configmap_events = std::pin::pin!(
        watcher(
            configmaps,
            watcher::Config::default().fields(&format!("metadata.name={ROOT_CONFIGMAP}")),
        )
        .default_backoff()
    );
    let mut done: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    loop {
        // The namespace to (re)publish in, if this event asks for one.
        let name = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = namespace_events.next() => match ev {
                Some(Ok(ns)) => ns.metadata.name.filter(|n| !done.contains(n)),
                Some(Err(e)) => {
                    warn!(error = %e, "watching namespaces for the root certificate");
                    continue;
                }
                None => return,
            },
            ev = configmap_events.next() => match ev {
                Some(Ok(watcher::Event::Delete(cm))) => {
                    cm.metadata.namespace.filter(|_| cm.metadata.name.as_deref() == Some(ROOT_CONFIGMAP))
                }
                Some(Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm))) => {
                    let ours = cm.metadata.name.as_deref() == Some(ROOT_CONFIGMAP);
                    let current = cm
                        .data
                        .as_ref()
                        .and_then(|d| d.get("root-cert.pem"))
                        .is_some_and(|pem| *pem == root_pem);
                    cm.metadata.namespace.filter(|_| ours && !current)
                }
                Some(Ok(_)) => None,
                Some(Err(e)) => {
                    warn!(error = %e, "watching {ROOT_CONFIGMAP} ConfigMaps");
                    continue;
                }
                None => return,
            },
        };
        let Some(name) = name else {
            continue;
        };
        if IGNORED_NAMESPACES.contains(&name.as_str()) {
            continue;
        }
        let cm = ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(ROOT_CONFIGMAP.to_string()),
                namespace: Some(name.clone()),
                labels: Some([("istio.io/config".to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            data: Some([("root-cert.pem".to_string(), root_pem.clone())].into()),
            ..Default::default()
        };
        let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), &name);
        let params = kube::api::PatchParams::apply("meshpilot").force();
        match api
            .patch(ROOT_CONFIGMAP, &params, &kube::api::Patch::Apply(&cm))
            .await
        {
            Ok(_) => {
                info!(namespace = %name, "root certificate published ({ROOT_CONFIGMAP})");
                done.insert(name);
            }
            Err(e) => {
                warn!(namespace = %name, error = %e, "publishing the root certificate failed; retried when the namespace or the ConfigMap next changes")
            }
        }
    }
}
