//! TLS material from Kubernetes Secrets (`kubernetes.io/tls`, or generic ones with `tls.crt`,
//! `tls.key`, `ca.crt`), as gateways receive it over SDS. The bytes never leave through
//! `Debug` or `Serialize`: dumps and logs show only their length.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// Key or certificate bytes (PEM) that print and serialize as `<redacted: N bytes>`, so that no
/// dump of the model (`/debug/configz`, logs) carries them.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SecretBytes(Arc<[u8]>);

impl SecretBytes {
    pub fn new(bytes: impl Into<Arc<[u8]>>) -> SecretBytes {
        SecretBytes(bytes.into())
    }

    /// The material itself, for the one place that sends it (the SDS generator).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    fn redacted(&self) -> String {
        format!("<redacted: {} bytes>", self.0.len())
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// What a Secret holds for TLS: a certificate chain with its key, a CA bundle, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TlsSecret {
    /// `tls.crt` (or `cert`), with `private_key`.
    pub cert_chain: Option<SecretBytes>,
    /// `tls.key` (or `key`).
    pub private_key: Option<SecretBytes>,
    /// `ca.crt` (or `cacert`): the CA that client certificates must chain to.
    pub ca_cert: Option<SecretBytes>,
}
