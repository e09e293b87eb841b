//! `istio.v1.auth.IstioCertificateService/CreateCertificate` as a gRPC service: Istio's messages
//! (field numbers as in Istio's `security/v1alpha1/ca.proto`, see `proto/` at the repository
//! root), the caller authenticated from its TLS client certificate (a workload certificate the
//! CA issued, on the secure port) or its bearer token, the certificate signed for that
//! identity.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use envoy_types::pb::google::protobuf::Struct;
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::NamedService;
use tonic::{Code, Request, Response, Status};
use tracing::{info, warn};

use crate::authority::{CaError, CertificateAuthority, DEFAULT_TTL};
use crate::identity::{AuthError, Authenticator, bearer, certificate_identity};
use meshpilot_telemetry::CaMetrics;

const CREATE_CERTIFICATE: &str = "/istio.v1.auth.IstioCertificateService/CreateCertificate";

/// Istio's `IstioCertificateRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateRequest {
    /// PEM-encoded certificate signing request.
    #[prost(string, tag = "1")]
    pub csr: String,
    /// Requested lifetime in seconds; zero or less means the default.
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
    /// Istio's agent sends `CertSigner` here; meshpilot has one signer and reads none of it.
    #[prost(message, optional, tag = "4")]
    pub metadata: Option<Struct>,
}

/// Istio's `IstioCertificateResponse`: the leaf first, the root last.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateResponse {
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

/// Reads a caller's TLS client certificate (DER, verified against the mesh root by the
/// handshake) from a request's extensions, where the server that accepted the connection put
/// it; this crate does not know that server's types.
pub type CallerCertificate = Arc<dyn Fn(&http::Extensions) -> Option<Arc<[u8]>> + Send + Sync>;

/// Signs certificates for authenticated callers.
pub struct CertificateService {
    ca: Arc<CertificateAuthority>,
    auth: Arc<dyn Authenticator>,
    metrics: CaMetrics,
    /// With the trust domain whose workloads' certificates identify their callers.
    client_certificates: Option<(CallerCertificate, String)>,
}

impl CertificateService {
    pub fn new(
        ca: Arc<CertificateAuthority>,
        auth: Arc<dyn Authenticator>,
        metrics: CaMetrics,
    ) -> CertificateService {
        CertificateService {
            ca,
            auth,
            metrics,
            client_certificates: None,
        }
    }

    /// Also takes a workload certificate of `trust_domain`, presented as the TLS client
    /// certificate, as the caller's identity (as istiod's client-certificate authenticator
    /// does, so an agent renews with its current certificate); a token is then not needed.
    pub fn with_client_certificates(
        mut self,
        read: CallerCertificate,
        trust_domain: &str,
    ) -> CertificateService {
        self.client_certificates = Some((read, trust_domain.to_string()));
        self
    }

    /// The caller's identity: its client certificate when it presented one that names a
    /// workload, else its bearer token.
    async fn authenticate(
        &self,
        request: &Request<IstioCertificateRequest>,
    ) -> Result<crate::SpiffeId, AuthError> {
        let from_certificate = self.client_certificates.as_ref().and_then(|(read, td)| {
            read(request.extensions()).map(|der| certificate_identity(&der, td))
        });
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match (from_certificate, bearer(header)) {
            (Some(Ok(id)), _) => Ok(id),
            (_, Ok(token)) => self.auth.verify(token).await,
            (Some(Err(e)), Err(_)) | (None, Err(e)) => Err(e),
        }
    }

    /// One `CreateCertificate` call.
    pub async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        self.metrics.csr_count.inc();
        let identity = match self.authenticate(&request).await {
            Ok(id) => id,
            Err(e) => {
                self.metrics.authentication_failures.inc();
                warn!(error = %e, "certificate request not authenticated");
                return Err(Status::unauthenticated(format!(
                    "request authenticate failure: {e}"
                )));
            }
        };
        let req = request.into_inner();
        let ttl = u64::try_from(req.validity_duration)
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TTL);
        match self.ca.sign(&req.csr, &identity, ttl) {
            Ok(chain) => {
                self.metrics.issued.inc();
                info!(%identity, ttl_s = ttl.as_secs(), "certificate issued");
                Ok(Response::new(IstioCertificateResponse {
                    cert_chain: chain,
                }))
            }
            Err(e @ CaError::BadCsr(_)) => {
                self.metrics.csr_parsing_errors.inc();
                warn!(%identity, error = %e, "certificate request refused");
                Err(Status::invalid_argument(e.to_string()))
            }
            Err(e) => {
                warn!(%identity, error = %e, "signing failed");
                Err(Status::internal(e.to_string()))
            }
        }
    }
}

/// The gRPC service around [`CertificateService`].
#[derive(Clone)]
pub struct CertificateServer {
    inner: Arc<CertificateService>,
}

impl CertificateServer {
    pub fn new(service: CertificateService) -> CertificateServer {
        CertificateServer {
            inner: Arc::new(service),
        }
    }
}

impl NamedService for CertificateServer {
    const NAME: &'static str = "istio.v1.auth.IstioCertificateService";
}

struct CreateCertificate(Arc<CertificateService>);

impl tonic::server::UnaryService<IstioCertificateRequest> for CreateCertificate {
    type Response = IstioCertificateResponse;
    type Future = BoxFuture<Response<IstioCertificateResponse>, Status>;

    fn call(&mut self, request: Request<IstioCertificateRequest>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.create_certificate(request).await })
    }
}

impl<B> Service<http::Request<B>> for CertificateServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() == CREATE_CERTIFICATE {
            let method = CreateCertificate(self.inner.clone());
            return Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(method, req).await)
            });
        }
        Box::pin(async move { Ok(Status::new(Code::Unimplemented, "no such method").into_http()) })
    }
}
