//! Test helpers for this crate's tests and the black-box tests (feature `testing`): a token
//! issuer with its JWKS, and CSRs made as Istio's agent makes them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{EncodingKey, Header};
use rcgen::{CertificateParams, KeyPair, SanType};

/// A CSR as Istio's agent makes one: its own key, and a SAN naming the identity it wants.
pub fn csr_for(san: &str) -> (KeyPair, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(san.try_into().expect("ia5"))];
    let csr = params.serialize_request(&key).expect("csr");
    (key, csr.pem().expect("pem"))
}

/// A token issuer for tests: an ECDSA key and its JWKS.
pub struct TestIssuer {
    key: KeyPair,
    pub jwks: JwkSet,
}

impl TestIssuer {
    pub fn new(kid: &str) -> TestIssuer {
        let key = KeyPair::generate().expect("key");
        let point = key.public_key_raw();
        let (x, y) = point[1..].split_at(32);
        let jwks: JwkSet = serde_json::from_value(serde_json::json!({
            "keys": [{
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
            }]
        }))
        .expect("jwks");
        TestIssuer { key, jwks }
    }

    pub fn token(&self, kid: &str, claims: serde_json::Value) -> String {
        let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.to_string());
        let key = EncodingKey::from_ec_der(&self.key.serialize_der());
        jsonwebtoken::encode(&header, &claims, &key).expect("token")
    }
}

impl TestIssuer {
    /// A service-account token as Kubernetes projects one for Istio: audience `istio-ca`.
    pub fn service_account_token(&self, kid: &str, issuer: &str, ns: &str, sa: &str) -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() + 600)
            .unwrap_or(0);
        self.token(
            kid,
            serde_json::json!({
                "sub": format!("system:serviceaccount:{ns}:{sa}"),
                "aud": ["istio-ca"], "iss": issuer, "exp": exp,
            }),
        )
    }

    /// The JWKS as a file would hold it.
    pub fn jwks_json(&self) -> String {
        serde_json::to_string(&self.jwks).unwrap_or_default()
    }
}
