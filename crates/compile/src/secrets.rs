//! SDS: the TLS secrets a gateway proxy may receive, from the Secrets of its own namespace
//! (as istiod's `SecretGen` serves `kubernetes://` names only within the proxy's namespace).
//! A Secret `NAME` with a certificate and key becomes `kubernetes://NAME`; its `ca.crt`
//! becomes `kubernetes://NAME-cacert`, as does a Secret named `NAME-cacert` holding only a CA
//! (the Secret's own `ca.crt` wins when both exist). Nothing here is ever logged.

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret::Type,
};
use prost::Message;

use meshpilot_index::View;
use meshpilot_model::{Body, ConfigKey, Kind, SecretBytes, TlsSecret};
use meshpilot_snapshot::{Resource, TypeSet};

/// The SDS name of a Secret's certificate and key.
pub fn certificate_name(secret: &str) -> String {
    ["kubernetes://", secret].concat()
}

/// The SDS name of a Secret's CA bundle (its `ca.crt`, or the Secret `NAME-cacert`).
pub fn ca_name(secret: &str) -> String {
    ["kubernetes://", secret, CACERT_SUFFIX].concat()
}

const CACERT_SUFFIX: &str = "-cacert";

/// The TLS Secrets of `namespace`, by name.
pub(super) fn in_namespace<'v>(
    view: &'v View,
    namespace: &str,
) -> impl Iterator<Item = (&'v str, &'v TlsSecret)> {
    let from = ConfigKey::new(Kind::Secret, namespace, "");
    view.objects
        .range(from..)
        .take_while(move |(k, _)| k.kind == Kind::Secret && &*k.namespace == namespace)
        .filter_map(|(k, o)| match &o.body {
            Body::Secret(s) => Some((&*k.name, s)),
            _ => None,
        })
}

/// The secret resources of a gateway in `namespace`.
pub(super) fn for_namespace(view: &View, namespace: &str) -> TypeSet {
    let mut out: Vec<Resource> = Vec::new();
    for (name, tls) in in_namespace(view, namespace) {
        let key = ConfigKey::new(Kind::Secret, namespace, name);
        if let (Some(chain), Some(private_key)) = (&tls.cert_chain, &tls.private_key) {
            let sds = certificate_name(name);
            let secret = Secret {
                name: sds.clone(),
                r#type: Some(Type::TlsCertificate(TlsCertificate {
                    certificate_chain: Some(inline(chain)),
                    private_key: Some(inline(private_key)),
                    ..TlsCertificate::default()
                })),
            };
            out.push(resource(sds, &secret, &key));
        }
        if let Some(ca) = &tls.ca_cert {
            let mut names = vec![ca_name(name)];
            if tls.cert_chain.is_none() && name.ends_with(CACERT_SUFFIX) {
                // `NAME-cacert` holding only a CA answers for `NAME`'s CA name, unless `NAME`
                // has a `ca.crt` of its own (sorted by name, `NAME` came first).
                names.push(certificate_name(name));
            }
            for sds in names {
                if out.iter().any(|r| *r.name == *sds) {
                    continue;
                }
                let secret = Secret {
                    name: sds.clone(),
                    r#type: Some(Type::ValidationContext(CertificateValidationContext {
                        trusted_ca: Some(inline(ca)),
                        ..CertificateValidationContext::default()
                    })),
                };
                out.push(resource(sds, &secret, &key));
            }
        }
    }
    TypeSet::new(out)
}

/// True when `namespace` has a certificate and key under `secret`.
pub(super) fn has_certificate(view: &View, namespace: &str, secret: &str) -> bool {
    secret_in(view, namespace, secret)
        .is_some_and(|s| s.cert_chain.is_some() && s.private_key.is_some())
}

/// True when `namespace` has a CA for `secret` (its `ca.crt`, or a `NAME-cacert` Secret).
pub(super) fn has_ca(view: &View, namespace: &str, secret: &str) -> bool {
    secret_in(view, namespace, secret).is_some_and(|s| s.ca_cert.is_some())
        || secret_in(view, namespace, &[secret, CACERT_SUFFIX].concat())
            .is_some_and(|s| s.ca_cert.is_some())
}

fn secret_in<'v>(view: &'v View, namespace: &str, name: &str) -> Option<&'v TlsSecret> {
    match &view
        .objects
        .get(&ConfigKey::new(Kind::Secret, namespace, name))?
        .body
    {
        Body::Secret(s) => Some(s),
        _ => None,
    }
}

fn inline(bytes: &SecretBytes) -> DataSource {
    DataSource {
        specifier: Some(Specifier::InlineBytes(bytes.expose().to_vec())),
        ..DataSource::default()
    }
}

fn resource(name: String, secret: &Secret, key: &ConfigKey) -> Resource {
    Resource::new(name, Bytes::from(secret.encode_to_vec()), vec![key.clone()])
}
