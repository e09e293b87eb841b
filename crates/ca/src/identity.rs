//! Who is asking: a workload's SPIFFE identity, proven by a service-account token or by a
//! workload certificate the CA issued (presented as the TLS client certificate).
//!
//! Out of a cluster there is no TokenReview to ask, so tokens are checked as Istio's OIDC
//! authenticator checks them: a JWT signed by a key of the issuer's JWKS, from the configured
//! issuer, with the CA's audience (`istio-ca`) among its audiences, unexpired, whose subject is
//! `system:serviceaccount:NAMESPACE:ACCOUNT`. The identity is
//! `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT`.

use std::fmt;
use std::path::Path;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

/// The audience Istio's agents ask their tokens for (`global.sds.token.aud`).
pub const ISTIO_CA_AUDIENCE: &str = "istio-ca";

/// A workload identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl SpiffeId {
    pub fn uri(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

/// Why a caller was not authenticated. Each says what an operator can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token in the 'authorization' header")]
    MissingToken,
    #[error("the token is not a JWT: {0}")]
    Malformed(String),
    #[error("the token's key id {0:?} is not in the issuer's JWKS")]
    UnknownKey(Option<String>),
    #[error("the token failed verification: {0}")]
    Invalid(String),
    #[error(
        "the token's subject {0:?} is not a Kubernetes service account \
         (system:serviceaccount:NAMESPACE:NAME)"
    )]
    Subject(String),
    /// The Kubernetes API did not accept the token (or could not be asked).
    #[error("token review: {0}")]
    Review(String),
    /// The client certificate names no workload of this mesh.
    #[error(
        "the client certificate names no workload of trust domain {trust_domain:?} \
         (a URI SAN spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/NAME): {why}"
    )]
    Certificate { trust_domain: String, why: String },
}

/// A future of an authentication result.
pub type AuthFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<SpiffeId, AuthError>> + Send + 'static>,
>;

/// Something that can tell whose token a bearer token is: a JWKS ([`JwtAuthenticator`]), or
/// the Kubernetes API's TokenReview (in the binary, which holds the Kubernetes client).
pub trait Authenticator: Send + Sync {
    fn verify(&self, token: &str) -> AuthFuture;
}

impl Authenticator for JwtAuthenticator {
    fn verify(&self, token: &str) -> AuthFuture {
        let result = self.authenticate(token);
        Box::pin(async move { result })
    }
}

/// The identity of a Kubernetes user name `system:serviceaccount:NS:SA`.
pub fn service_account_identity(username: &str, trust_domain: &str) -> Result<SpiffeId, AuthError> {
    let parts: Vec<&str> = username.split(':').collect();
    match parts.as_slice() {
        ["system", "serviceaccount", ns, sa] if !ns.is_empty() && !sa.is_empty() => Ok(SpiffeId {
            trust_domain: trust_domain.to_string(),
            namespace: (*ns).to_string(),
            service_account: (*sa).to_string(),
        }),
        _ => Err(AuthError::Subject(username.to_string())),
    }
}

/// What the CA reads from a token.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
}

/// Checks service-account JWTs against one issuer's JWKS.
pub struct JwtAuthenticator {
    issuer: String,
    audience: String,
    keys: JwkSet,
    trust_domain: String,
}

/// Why the authenticator could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a JWKS document: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

impl JwtAuthenticator {
    /// Reads the issuer's JWKS from a file.
    pub fn from_jwks_file(
        path: &Path,
        issuer: &str,
        trust_domain: &str,
    ) -> Result<JwtAuthenticator, JwksError> {
        let text = std::fs::read_to_string(path).map_err(|source| JwksError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let keys: JwkSet = serde_json::from_str(&text).map_err(|source| JwksError::Parse {
            path: path.display().to_string(),
            source,
        })?;
        Ok(JwtAuthenticator::new(keys, issuer, trust_domain))
    }

    pub fn new(keys: JwkSet, issuer: &str, trust_domain: &str) -> JwtAuthenticator {
        JwtAuthenticator {
            issuer: issuer.to_string(),
            audience: ISTIO_CA_AUDIENCE.to_string(),
            keys,
            trust_domain: trust_domain.to_string(),
        }
    }

    /// The identity a bearer token proves.
    pub fn authenticate(&self, token: &str) -> Result<SpiffeId, AuthError> {
        let header = decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let jwk = match &header.kid {
            Some(kid) => self.keys.find(kid),
            // Without a key id, a JWKS of one key is unambiguous.
            None if self.keys.keys.len() == 1 => self.keys.keys.first(),
            None => None,
        }
        .ok_or_else(|| AuthError::UnknownKey(header.kid.clone()))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[&self.audience]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        let data = decode::<Claims>(token, &key, &validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        service_account_identity(&data.claims.sub, &self.trust_domain)
    }
}

/// The identity of a caller that presented `der` as its TLS client certificate: the URI SAN
/// `spiffe://TRUST_DOMAIN/ns/NS/sa/SA` of `trust_domain`, as istiod's client-certificate
/// authenticator reads it. The TLS handshake has already checked that the certificate chains
/// to the mesh root and is within its validity period; this only reads whom it names.
pub fn certificate_identity(der: &[u8], trust_domain: &str) -> Result<SpiffeId, AuthError> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let refuse = |why: String| AuthError::Certificate {
        trust_domain: trust_domain.to_string(),
        why,
    };
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| refuse(e.to_string()))?;
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| refuse(e.to_string()))?
        .ok_or_else(|| refuse("no subject alternative names".to_string()))?;
    let prefix = format!("spiffe://{trust_domain}/");
    let found: Vec<&str> = sans
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    for uri in &found {
        let Some(path) = uri.strip_prefix(&prefix) else {
            continue;
        };
        if let ["ns", ns, "sa", sa] = path.split('/').collect::<Vec<_>>().as_slice()
            && !ns.is_empty()
            && !sa.is_empty()
        {
            return Ok(SpiffeId {
                trust_domain: trust_domain.to_string(),
                namespace: ns.to_string(),
                service_account: sa.to_string(),
            });
        }
    }
    Err(refuse(format!("its URI SANs are {found:?}")))
}

/// The token of an `authorization: Bearer TOKEN` header value.
pub fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    let value = header.ok_or(AuthError::MissingToken)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token.trim())
}
