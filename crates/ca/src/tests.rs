use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use rcgen::{CertificateParams, KeyPair};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::authority::{
    CA_CERT, CA_KEY, CERT_CHAIN, CaError, CertificateAuthority, MAX_TTL, ROOT_CERT,
};
use crate::identity::{AuthError, JwtAuthenticator, SpiffeId};
use crate::keys;
use crate::testing::{TestIssuer, csr_for};

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId {
        trust_domain: "cluster.local".into(),
        namespace: ns.into(),
        service_account: sa.into(),
    }
}

fn der(pem: &str) -> Vec<u8> {
    keys::first_certificate_der(pem).expect("certificate PEM")
}

fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    cert.subject_alternative_name()
        .expect("SAN extension parses")
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Checks that each certificate of `chain` is signed by the next, and the last by itself.
fn assert_chain_verifies(chain: &[String]) {
    let ders: Vec<Vec<u8>> = chain.iter().map(|p| der(p)).collect();
    let certs: Vec<X509Certificate<'_>> = ders
        .iter()
        .map(|d| X509Certificate::from_der(d).expect("x509").1)
        .collect();
    for (i, cert) in certs.iter().enumerate() {
        let issuer = certs.get(i + 1).unwrap_or(cert);
        cert.verify_signature(Some(issuer.public_key()))
            .unwrap_or_else(|e| panic!("certificate {i} is not signed by the next: {e}"));
        assert_eq!(cert.issuer(), issuer.subject(), "certificate {i}'s issuer");
    }
}

#[test]
fn the_leaf_names_the_caller_not_what_the_csr_asks_for() {
    let ca = CertificateAuthority::self_signed("cluster.local").expect("ca");
    let (key, csr) = csr_for("spiffe://cluster.local/ns/istio-system/sa/istiod");
    let chain = ca
        .sign(&csr, &id("shop", "cart"), Duration::from_secs(3600))
        .expect("signed");
    assert_eq!(chain.len(), 2, "leaf and root");
    assert_eq!(chain[1], ca.root_pem());
    assert!(chain.iter().all(|c| c.ends_with('\n')));
    let leaf_der = der(&chain[0]);
    let (_, leaf) = X509Certificate::from_der(&leaf_der).expect("leaf");
    assert_eq!(
        uri_sans(&leaf),
        vec!["spiffe://cluster.local/ns/shop/sa/cart".to_string()]
    );
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw(),
        "the CSR's key is certified"
    );
    assert!(!leaf.is_ca());
    let life = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert_eq!(life, 3600 + 120, "the TTL asked for, from two minutes back");
    assert_chain_verifies(&chain);
}

#[test]
fn a_ttl_is_capped_at_ninety_days() {
    let ca = CertificateAuthority::self_signed("cluster.local").expect("ca");
    let (_, csr) = csr_for("spiffe://x");
    let chain = ca
        .sign(&csr, &id("a", "b"), Duration::from_secs(400 * 24 * 3600))
        .expect("signed");
    let leaf_der = der(&chain[0]);
    let (_, leaf) = X509Certificate::from_der(&leaf_der).expect("leaf");
    let life = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert_eq!(life as u64, MAX_TTL.as_secs() + 120);
}

#[test]
fn a_csr_whose_signature_fails_is_refused() {
    let ca = CertificateAuthority::self_signed("cluster.local").expect("ca");
    let (_, csr) = csr_for("spiffe://x");
    let mut body = keys::pem_block(&csr, "CERTIFICATE REQUEST").expect("der");
    let last = body.len() - 1;
    body[last] ^= 0xff; // the signature's last byte
    let broken = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::engine::general_purpose::STANDARD.encode(&body)
    );
    match ca.sign(&broken, &id("a", "b"), Duration::from_secs(60)) {
        Err(CaError::BadCsr(m)) => assert!(m.contains("signature"), "{m}"),
        other => panic!("expected a refused CSR, got {other:?}"),
    }
    assert!(matches!(
        ca.sign("not pem", &id("a", "b"), Duration::from_secs(60)),
        Err(CaError::BadCsr(_))
    ));
}

#[test]
fn an_empty_directory_gets_a_root_that_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = dir.path().join("ca");
    let first = CertificateAuthority::load_or_create(&ca_dir, "cluster.local").expect("created");
    for f in [CA_CERT, CA_KEY, ROOT_CERT] {
        assert!(ca_dir.join(f).exists(), "{f} written");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ca_dir.join(CA_KEY))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is private");
    }
    let second = CertificateAuthority::load_or_create(&ca_dir, "cluster.local").expect("loaded");
    assert_eq!(
        first.root_pem(),
        second.root_pem(),
        "same root after restart"
    );
    let (_, csr) = csr_for("spiffe://x");
    let chain = second
        .sign(&csr, &id("a", "b"), Duration::from_secs(60))
        .expect("signed");
    assert_eq!(chain.last().map(String::as_str), Some(first.root_pem()));
    assert_chain_verifies(&chain);
}

#[test]
fn part_of_a_layout_is_refused_rather_than_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(CA_CERT), "x").expect("write");
    let err = CertificateAuthority::load_or_create(dir.path(), "cluster.local")
        .expect_err("refused")
        .to_string();
    assert!(err.contains(CA_KEY) && err.contains("refusing"), "{err}");
    assert!(!dir.path().join(CA_KEY).exists(), "nothing generated");
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = CertificateAuthority::self_signed("cluster.local").expect("a");
    std::fs::write(dir.path().join(CA_CERT), a.root_pem()).expect("write");
    std::fs::write(
        dir.path().join(CA_KEY),
        KeyPair::generate().expect("key").serialize_pem(),
    )
    .expect("write");
    let err = CertificateAuthority::load_or_create(dir.path(), "cluster.local")
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("ca-key.pem") && err.contains("not the key"),
        "{err}"
    );
}

/// Istio's own self-signed CA keeps an RSA key in PKCS#1 (`RSA PRIVATE KEY`): the fixture is one
/// made with `openssl genrsa -traditional` and a CA certificate for it.
#[test]
fn istios_self_signed_layout_with_a_pkcs1_rsa_key_signs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    std::fs::copy(fixtures.join("rsa-ca-cert.pem"), dir.path().join(CA_CERT)).expect("copy");
    std::fs::copy(fixtures.join("rsa-pkcs1-key.pem"), dir.path().join(CA_KEY)).expect("copy");
    let ca = CertificateAuthority::load_or_create(dir.path(), "cluster.local").expect("loaded");
    let (_, csr) = csr_for("spiffe://x");
    let chain = ca
        .sign(&csr, &id("a", "b"), Duration::from_secs(60))
        .expect("signed");
    assert_eq!(chain.len(), 2);
    assert_chain_verifies(&chain);
}

#[test]
fn a_plugged_in_intermediate_is_sent_between_leaf_and_root() {
    let root_dir = tempfile::tempdir().expect("tempdir");
    let root =
        CertificateAuthority::load_or_create(root_dir.path(), "cluster.local").expect("root");
    let root_key =
        KeyPair::from_pem(&std::fs::read_to_string(root_dir.path().join(CA_KEY)).expect("key"))
            .expect("root key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(root.root_pem(), root_key).expect("issuer");
    // An intermediate CA signed by the root, as a plugged-in `cacerts` holds one.
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "intermediate");
    params.distinguished_name = dn;
    let intermediate = params.signed_by(&key, &issuer).expect("intermediate");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(CA_CERT), intermediate.pem()).expect("write");
    std::fs::write(dir.path().join(CA_KEY), key.serialize_pem()).expect("write");
    std::fs::write(dir.path().join(ROOT_CERT), root.root_pem()).expect("write");
    std::fs::write(
        dir.path().join(CERT_CHAIN),
        format!("{}{}", intermediate.pem(), root.root_pem()),
    )
    .expect("write");
    let ca = CertificateAuthority::load_or_create(dir.path(), "cluster.local").expect("loaded");
    let (_, leaf_csr) = csr_for("spiffe://x");
    let chain = ca
        .sign(&leaf_csr, &id("a", "b"), Duration::from_secs(60))
        .expect("signed");
    assert_eq!(chain.len(), 3, "leaf, intermediate, root");
    assert_eq!(chain[2], root.root_pem());
    assert_chain_verifies(&chain);
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[test]
fn a_service_account_token_proves_its_identity_and_nothing_else_does() {
    let issuer = TestIssuer::new("k1");
    let auth = JwtAuthenticator::new(issuer.jwks.clone(), "https://issuer.test", "cluster.local");
    let claims = |sub: &str, aud: &str, iss: &str, exp: i64| serde_json::json!({"sub": sub, "aud": [aud], "iss": iss, "exp": exp});
    let sub = "system:serviceaccount:shop:cart";
    let good = issuer.token(
        "k1",
        claims(sub, "istio-ca", "https://issuer.test", now() + 600),
    );
    assert_eq!(auth.authenticate(&good), Ok(id("shop", "cart")));

    let wrong_aud = issuer.token(
        "k1",
        claims(sub, "other", "https://issuer.test", now() + 600),
    );
    assert!(matches!(
        auth.authenticate(&wrong_aud),
        Err(AuthError::Invalid(_))
    ));
    let expired = issuer.token(
        "k1",
        claims(sub, "istio-ca", "https://issuer.test", now() - 600),
    );
    assert!(matches!(
        auth.authenticate(&expired),
        Err(AuthError::Invalid(_))
    ));
    let wrong_iss = issuer.token(
        "k1",
        claims(sub, "istio-ca", "https://evil.test", now() + 600),
    );
    assert!(matches!(
        auth.authenticate(&wrong_iss),
        Err(AuthError::Invalid(_))
    ));
    let unknown_kid = issuer.token(
        "k2",
        claims(sub, "istio-ca", "https://issuer.test", now() + 600),
    );
    assert!(matches!(
        auth.authenticate(&unknown_kid),
        Err(AuthError::UnknownKey(_))
    ));
    let user = issuer.token(
        "k1",
        claims("alice", "istio-ca", "https://issuer.test", now() + 600),
    );
    assert!(matches!(
        auth.authenticate(&user),
        Err(AuthError::Subject(_))
    ));
    // A token signed by another key under the same key id.
    let forger = TestIssuer::new("k1");
    let forged = forger.token(
        "k1",
        claims(sub, "istio-ca", "https://issuer.test", now() + 600),
    );
    assert!(matches!(
        auth.authenticate(&forged),
        Err(AuthError::Invalid(_))
    ));
    assert!(matches!(
        auth.authenticate("not-a-jwt"),
        Err(AuthError::Malformed(_))
    ));
}

/// A workload certificate names its holder by its SPIFFE URI SAN, in the mesh's trust domain
/// only; a certificate without one (the secure port's own kind) names nobody.
#[test]
fn a_workload_certificate_names_its_holder_in_the_trust_domain() {
    use crate::identity::certificate_identity;
    let ca = CertificateAuthority::self_signed("cluster.local").expect("CA");
    let (_key, csr) = csr_for("spiffe://cluster.local/ns/shop/sa/cart");
    let chain = ca
        .sign(&csr, &id("shop", "cart"), Duration::from_secs(600))
        .expect("signed");
    let leaf = der(&chain[0]);
    assert_eq!(
        certificate_identity(&leaf, "cluster.local"),
        Ok(id("shop", "cart"))
    );
    assert!(matches!(
        certificate_identity(&leaf, "other.domain"),
        Err(AuthError::Certificate { .. })
    ));
    let server = ca
        .sign_server(
            &["istiod.istio-system.svc".to_string()],
            Duration::from_secs(600),
        )
        .expect("server certificate");
    let err =
        certificate_identity(&der(&server.chain_pem), "cluster.local").expect_err("no SPIFFE id");
    assert!(err.to_string().contains("client certificate"), "{err}");
}
