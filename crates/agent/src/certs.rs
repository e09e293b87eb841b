//! The workload's certificate: a new key and CSR, `CreateCertificate` on the secure port with
//! the pod's token, and renewal when pilot-agent would: once only a grace share of the
//! certificate's life is left (`SECRET_GRACE_PERIOD_RATIO`, half by default, moved up or down
//! by a random `SECRET_GRACE_PERIOD_RATIO_JITTER` so a fleet does not renew at one moment),
//! with backoff when the CA cannot be reached.

use std::hash::{BuildHasher, RandomState};
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

/// When a certificate is renewed, as pilot-agent decides it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenewalPolicy {
    /// The share of the lifetime still left when the certificate is renewed (0..=1).
    pub grace_ratio: f64,
    /// At most this much is added to or taken from `grace_ratio`, at random, per certificate.
    pub grace_ratio_jitter: f64,
}

impl Default for RenewalPolicy {
    /// pilot-agent's defaults: renew at half the life, ±1 % (about 15 minutes of a day).
    fn default() -> Self {
        Self {
            grace_ratio: 0.5,
            grace_ratio_jitter: 0.01,
        }
    }
}

impl RenewalPolicy {
    /// How long after issuance a certificate living `lifetime` is renewed, for a random
    /// `spread` in -1..=1 (the share of the jitter applied, and its direction).
    pub fn renew_after(&self, lifetime: Duration, spread: f64) -> Duration {
        let grace =
            (self.grace_ratio + self.grace_ratio_jitter * spread.clamp(-1.0, 1.0)).clamp(0.0, 1.0);
        lifetime.mul_f64(1.0 - grace)
    }
}

/// A random number in -1..=1 for [`RenewalPolicy::renew_after`]: std's per-instance random
/// hash keys are enough to stagger renewals, and need no random-number crate.
fn random_spread() -> f64 {
    let bits = RandomState::new().hash_one(SystemTime::now());
    // The top 53 bits as a fraction of one, then stretched to -1..=1.
    (bits >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// Keeps a certificate in `tx`: fetched at once, renewed as `renewal` says, retried with
/// backoff (1 s doubling to 60 s) while the CA refuses or cannot be reached.
pub async fn keep_fresh(
    upstream: Upstream,
    workload: Workload,
    token_file: PathBuf,
    ttl: Duration,
    renewal: RenewalPolicy,
    tx: watch::Sender<Option<Arc<Credentials>>>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let wait = match fetch(&upstream, &workload, &token_file, ttl).await {
            Ok(c) => {
                let wait = renewal.renew_after(c.lifetime, random_spread());
                info!(
                    identity = %workload.spiffe_id(),
                    ttl_s = ttl.as_secs(),
                    renew_in_s = wait.as_secs_f64(),
                    "workload certificate issued"
                );
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

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn renewal_comes_at_half_the_life_by_default_within_the_jitter() {
        let policy = RenewalPolicy::default();
        assert_eq!(policy.renew_after(DAY, 0.0), DAY / 2);
        // ±1 % of a day: about 15 minutes either way, as pilot-agent staggers it.
        let early = policy.renew_after(DAY, 1.0);
        let late = policy.renew_after(DAY, -1.0);
        assert_eq!(DAY / 2 - early, Duration::from_secs(864));
        assert_eq!(late - DAY / 2, Duration::from_secs(864));
        for _ in 0..100 {
            let at = policy.renew_after(DAY, random_spread());
            assert!(at >= early && at <= late, "{at:?}");
        }
    }

    #[test]
    fn a_grace_ratio_says_how_much_life_is_left_at_renewal() {
        let policy = RenewalPolicy {
            grace_ratio: 0.25,
            grace_ratio_jitter: 0.0,
        };
        let two_minutes = Duration::from_secs(120);
        assert_eq!(
            policy.renew_after(two_minutes, 0.7),
            Duration::from_secs(90)
        );
        // The jitter never pushes renewal past expiry or before issuance.
        let wild = RenewalPolicy {
            grace_ratio: 0.9,
            grace_ratio_jitter: 0.5,
        };
        assert_eq!(wild.renew_after(two_minutes, 1.0), Duration::ZERO);
        let late = RenewalPolicy {
            grace_ratio: 0.1,
            grace_ratio_jitter: 0.5,
        };
        assert_eq!(late.renew_after(two_minutes, -1.0), two_minutes);
    }

    #[test]
    fn the_spread_is_random_and_within_bounds() {
        let spreads: Vec<f64> = (0..50).map(|_| random_spread()).collect();
        assert!(spreads.iter().all(|s| (-1.0..=1.0).contains(s)));
        assert!(spreads.iter().any(|s| *s > 0.0) && spreads.iter().any(|s| *s < 0.0));
    }
}
