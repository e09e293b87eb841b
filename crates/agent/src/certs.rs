//! The workload's certificate: a new key and CSR, `CreateCertificate` on the secure port with
//! the pod's token, and renewal at half the certificate's life (Istio's
//! `SECRET_GRACE_PERIOD_RATIO`), with backoff when the CA cannot be reached.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, KeyPair, SanType};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::AgentError;
use crate::tls::Upstream;
use meshpilot_ca::{IstioCertificateRequest, IstioCertificateResponse};

const CREATE_CERTIFICATE: &str = "/istio.v1.auth.IstioCertificateService/CreateCertificate";

/// Who the workload is, as its certificate must say.
#[derive(Debug, Clone)]
pub struct Workload {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl Workload {
    pub fn spiffe_id(&self) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

/// A certificate and its key, as SDS serves them.
#[derive(Debug)]
pub struct Credentials {
    /// The leaf and any intermediates (PEM), what `default` serves.
    pub chain_pem: String,
    pub key_pem: String,
    /// The last element of the CA's answer, what `ROOTCA` serves.
    pub root_pem: String,
    /// Distinct per certificate: SDS's `version_info`.
    pub version: String,
    /// How long the certificate was issued for.
    pub lifetime: Duration,
}

/// Reads the token afresh each time: kubelet rotates projected tokens in place.
fn read_token(path: &PathBuf) -> Result<String, AgentError> {
    let token = std::fs::read_to_string(path).map_err(|e| AgentError::Token {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(AgentError::Token {
            path: path.display().to_string(),
            message: "empty".to_string(),
        });
    }
    Ok(token)
}

/// One `CreateCertificate` round trip.
pub async fn fetch(
    upstream: &Upstream,
    workload: &Workload,
    token_file: &PathBuf,
    ttl: Duration,
) -> Result<Credentials, AgentError> {
    let key = KeyPair::generate().map_err(|e| AgentError::Csr(e.to_string()))?;
    let mut params = CertificateParams::default();
    let uri = workload
        .spiffe_id()
        .try_into()
        .map_err(|e| AgentError::Csr(format!("{e}")))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| AgentError::Csr(e.to_string()))?;
    let token = read_token(token_file)?;

    let up = upstream.clone();
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", up.server_name()))
        .map_err(|e| AgentError::Ca(e.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .connect_with_connector(tower::service_fn(move |_uri| {
            let up = up.clone();
            async move { up.connect().await.map(TokioIo::new) }
        }))
        .await
        .map_err(|e| AgentError::Ca(format!("connect: {e}")))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| AgentError::Ca(format!("connect: {e}")))?;
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr,
        validity_duration: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
        metadata: None,
    });
    let header = format!("Bearer {token}")
        .parse()
        .map_err(|_| AgentError::Token {
            path: token_file.display().to_string(),
            message: "not a valid header value".to_string(),
        })?;
    request.metadata_mut().insert("authorization", header);
    let path = http::uri::PathAndQuery::from_static(CREATE_CERTIFICATE);
    let response: IstioCertificateResponse = grpc
        .unary(request, path, tonic_prost::ProstCodec::default())
        .await
        .map_err(|s| AgentError::Ca(format!("{}: {}", s.code(), s.message())))?
        .into_inner();
    let mut chain = response.cert_chain;
    // Istio's agent refuses an answer without at least a leaf and a root.
    if chain.len() < 2 {
        return Err(AgentError::Ca(format!(
            "the CA answered {} certificate(s); a leaf and a root are needed",
            chain.len()
        )));
    }
    let root_pem = chain.pop().unwrap_or_default();
    let version = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos().to_string())
        .unwrap_or_default();
    Ok(Credentials {
        chain_pem: chain.concat(),
        key_pem: key.serialize_pem(),
        root_pem,
        version,
        lifetime: ttl,
    })
}

/// Keeps a certificate in `tx`: fetched at once, renewed at half its life, retried with
/// backoff (1 s doubling to 60 s) while the CA refuses or cannot be reached.
pub async fn keep_fresh(
    upstream: Upstream,
    workload: Workload,
    token_file: PathBuf,
    ttl: Duration,
    tx: watch::Sender<Option<Arc<Credentials>>>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let wait = match fetch(&upstream, &workload, &token_file, ttl).await {
            Ok(c) => {
                info!(identity = %workload.spiffe_id(), ttl_s = ttl.as_secs(), "workload certificate issued");
                let wait = c.lifetime / 2;
                tx.send_replace(Some(Arc::new(c)));
                backoff = Duration::from_secs(1);
                wait
            }
            Err(e) => {
                warn!(error = %e, retry_s = backoff.as_secs(), "failed to get a workload certificate");
                let wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                wait
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
