//! Secrets → TLS material for gateway credentials. Istio reads `tls.crt`/`tls.key`/`ca.crt`
//! (or `cert`/`key`/`cacert`) from `kubernetes.io/tls` and generic Secrets alike; a Secret
//! with none of them is not ours (service-account tokens, registry credentials) and is
//! skipped. What is read is checked to be PEM of the right kind, so a bad certificate is a
//! diagnostic naming the Secret and key, not a handshake failure on the gateway.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1 as core;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

use super::Ctx;
use meshpilot_model::{Diagnostic, SecretBytes, TlsSecret};

/// The keys a certificate, its private key and a CA bundle go by (Istio's two spellings).
const CERT_KEYS: [&str; 2] = ["tls.crt", "cert"];
const KEY_KEYS: [&str; 2] = ["tls.key", "key"];
const CA_KEYS: [&str; 2] = ["ca.crt", "cacert"];

/// What kind of PEM a key must hold.
#[derive(Clone, Copy)]
enum Pem {
    Certificates,
    PrivateKey,
}

/// The TLS material of a Secret, `None` when it holds none.
pub(super) fn convert(doc: Value, ctx: &Ctx) -> Result<Option<TlsSecret>, Diagnostic> {
    let secret: core::Secret = ctx.deserialize(doc)?;
    let tls_type = secret.type_.as_deref() == Some("kubernetes.io/tls");
    // `stringData` is write-only on the API server (merged into `data`); files may use it.
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, ByteString(v))| (k, v))
        .collect();
    let mut from_string: BTreeMap<String, ()> = BTreeMap::new();
    for (k, v) in secret.string_data.unwrap_or_default() {
        from_string.insert(k.clone(), ());
        data.insert(k, v.into_bytes());
    }
    let field = |key: &str| {
        let section = if from_string.contains_key(key) {
            "stringData"
        } else {
            "data"
        };
        format!("{section}.{key}")
    };
    let read = |keys: [&str; 2], pem: Pem| -> Result<Option<SecretBytes>, Diagnostic> {
        let Some((key, bytes)) = keys
            .iter()
            .find_map(|k| data.get(*k).map(|v| (*k, v.as_slice())))
        else {
            return Ok(None);
        };
        check_pem(bytes, pem).map_err(|why| ctx.err(&field(key), why))?;
        Ok(Some(SecretBytes::new(bytes.to_vec())))
    };
    let tls = TlsSecret {
        cert_chain: read(CERT_KEYS, Pem::Certificates)?,
        private_key: read(KEY_KEYS, Pem::PrivateKey)?,
        ca_cert: read(CA_KEYS, Pem::Certificates)?,
    };
    match (&tls.cert_chain, &tls.private_key) {
        (Some(_), None) => {
            return Err(ctx.err(
                &field("tls.key"),
                "missing: a certificate (tls.crt) needs its private key (tls.key)",
            ));
        }
        (None, Some(_)) => {
            return Err(ctx.err(
                &field("tls.crt"),
                "missing: a private key (tls.key) needs its certificate (tls.crt)",
            ));
        }
        (None, None) if tls_type => {
            return Err(ctx.err(
                "data",
                "a kubernetes.io/tls Secret needs tls.crt and tls.key",
            ));
        }
        _ => {}
    }
    if tls == TlsSecret::default() {
        return Ok(None);
    }
    Ok(Some(tls))
}

/// Checks that `bytes` is PEM holding at least one item of the kind wanted, and nothing broken.
fn check_pem(bytes: &[u8], pem: Pem) -> Result<(), String> {
    match pem {
        Pem::Certificates => {
            let mut n = 0;
            for cert in CertificateDer::pem_slice_iter(bytes) {
                cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
                n += 1;
            }
            if n == 0 {
                return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) found".into());
            }
            Ok(())
        }
        Pem::PrivateKey => PrivateKeyDer::from_pem_slice(bytes)
            .map(|_| ())
            .map_err(|e| format!("not a PEM private key: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshpilot_model::Origin;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIBAA==\n-----END PRIVATE KEY-----\n";

    fn convert_yaml(data: Value) -> Result<Option<TlsSecret>, Diagnostic> {
        let origin = Origin::default();
        let ctx = Ctx {
            origin: &origin,
            kind: "Secret",
            namespace: Some("gw"),
            name: Some("cert"),
        };
        let mut doc = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "cert", "namespace": "gw"},
        });
        if let (Some(o), Value::Object(extra)) = (doc.as_object_mut(), data) {
            o.extend(extra);
        }
        convert(doc, &ctx)
    }

    #[test]
    fn a_tls_secret_keeps_its_material_and_never_prints_it() {
        let tls = convert_yaml(serde_json::json!({
            "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": CERT, "tls.key": KEY, "ca.crt": CERT},
        }))
        .expect("valid")
        .expect("tls");
        assert_eq!(
            tls.cert_chain.as_ref().map(|c| c.expose()),
            Some(CERT.as_bytes())
        );
        assert!(tls.ca_cert.is_some());
        let shown = format!("{tls:?} {}", serde_json::to_string(&tls).expect("json"));
        assert!(!shown.contains("MIIB"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn bad_pem_and_a_missing_key_name_the_field() {
        let err = convert_yaml(serde_json::json!({
            "stringData": {"tls.crt": "not pem", "tls.key": KEY},
        }))
        .expect_err("bad pem");
        assert_eq!(err.field.as_deref(), Some("stringData.tls.crt"), "{err:?}");
        let err = convert_yaml(serde_json::json!({
            "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": CERT},
        }))
        .expect_err("no key");
        assert_eq!(err.field.as_deref(), Some("data.tls.key"), "{err:?}");
        assert!(err.message.contains("missing"), "{err:?}");
    }

    #[test]
    fn secrets_without_tls_material_are_not_ours() {
        let none = convert_yaml(serde_json::json!({
            "type": "kubernetes.io/service-account-token",
            "data": {"token": "dG9rZW4="},
        }))
        .expect("skipped");
        assert_eq!(none, None);
    }
}
