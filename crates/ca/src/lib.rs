//! The mesh's certificate authority: Istio's `CreateCertificate` (what pilot-agent calls for
//! each workload's certificate), signing only for identities proven by a service-account token
//! or by a workload certificate it issued. Key material in Istio's layouts ([`authority`]),
//! token and certificate checks ([`identity`]), the gRPC
//! service ([`service`]).

pub mod authority;
pub mod identity;
mod keys;
pub mod service;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use authority::{CaError, CertificateAuthority, ServerCertificate};
pub use identity::{AuthError, Authenticator, JwtAuthenticator, SpiffeId};
pub use service::{
    CallerCertificate, CertificateServer, CertificateService, IstioCertificateRequest,
    IstioCertificateResponse,
};

#[cfg(test)]
mod tests;
