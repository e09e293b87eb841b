//! The certificate authority as an Istio agent meets it: `CreateCertificate` on the xDS port
//! with a service-account token, the identity in the certificate taken from the token, callers
//! without a valid token refused, the root kept across a restart, Citadel's counters counting.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use meshpilot_ca::testing::{TestIssuer, csr_for};
use meshpilot_ca::{IstioCertificateRequest, IstioCertificateResponse};
use support::Meshpilot;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const KID: &str = "sa-key-1";

async fn create_certificate(
    addr: SocketAddr,
    token: Option<&str>,
    csr: &str,
    ttl_s: i64,
) -> Result<IstioCertificateResponse, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the xDS port");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let mut req = tonic::Request::new(IstioCertificateRequest {
        csr: csr.to_string(),
        validity_duration: ttl_s,
        metadata: None,
    });
    if let Some(t) = token {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header value"),
        );
    }
    let path = http::uri::PathAndQuery::from_static(
        "/istio.v1.auth.IstioCertificateService/CreateCertificate",
    );
    grpc.unary(req, path, tonic_prost::ProstCodec::default())
        .await
        .map(tonic::Response::into_inner)
}

fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("");
    base64_decode(&body)
}

/// Standard base64 (the test avoids another dependency for it).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        acc = (acc << 6) | u32::from(val(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn spiffe_sans(pem: &str) -> Vec<String> {
    let der = pem_der(pem);
    let (_, cert) = X509Certificate::from_der(&der).expect("leaf certificate");
    cert.subject_alternative_name()
        .expect("SAN parses")
        .map(|e| {
            e.value
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

fn serve_with_ca(config: &Path, ca_dir: &Path, jwks: &Path) -> Meshpilot {
    Meshpilot::spawn(
        &[config],
        &[
            "--ca-dir",
            &ca_dir.display().to_string(),
            "--jwks-file",
            &jwks.display().to_string(),
            "--token-issuer",
            ISSUER,
        ],
    )
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_a_token_gets_a_certificate_for_its_service_account() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config");
    std::fs::create_dir(&config).expect("config dir");
    let ca_dir = dir.path().join("ca");
    let issuer = TestIssuer::new(KID);
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, issuer.jwks_json()).expect("jwks");

    let server = serve_with_ca(&config, &ca_dir, &jwks);
    server.wait_ready(Duration::from_secs(20)).await;
    let token = issuer.service_account_token(KID, ISSUER, "shop", "cart");
    // The CSR asks for another identity; the certificate names the token's.
    let (_key, csr) = csr_for("spiffe://cluster.local/ns/istio-system/sa/istiod");
    let chain = create_certificate(server.xds(), Some(&token), &csr, 3600)
        .await
        .expect("certificate issued")
        .cert_chain;
    assert_eq!(chain.len(), 2, "leaf and root");
    assert_eq!(
        spiffe_sans(&chain[0]),
        vec!["spiffe://cluster.local/ns/shop/sa/cart".to_string()]
    );
    let root = std::fs::read_to_string(ca_dir.join("root-cert.pem")).expect("root persisted");
    assert_eq!(chain[1], root, "the last element is the persisted root");

    // No token, a token from another issuer's key, a token for another audience.
    let none = create_certificate(server.xds(), None, &csr, 3600).await;
    assert_eq!(
        none.as_ref().map_err(tonic::Status::code).err(),
        Some(tonic::Code::Unauthenticated),
        "{none:?}"
    );
    let stranger = TestIssuer::new(KID).service_account_token(KID, ISSUER, "shop", "cart");
    let forged = create_certificate(server.xds(), Some(&stranger), &csr, 3600).await;
    assert_eq!(
        forged.as_ref().map_err(tonic::Status::code).err(),
        Some(tonic::Code::Unauthenticated)
    );
    let message = forged
        .err()
        .map(|s| s.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("verification"), "{message}");

    let metrics = server.debug_get("/metrics").await.expect("metrics").body;
    assert_eq!(metric(&metrics, "citadel_server_csr_count"), Some(3));
    assert_eq!(
        metric(&metrics, "citadel_server_success_cert_issuance_count"),
        Some(1)
    );
    assert_eq!(
        metric(&metrics, "citadel_server_authentication_failure_count"),
        Some(2)
    );
    drop(server);

    // A restart signs with the same root.
    let again = serve_with_ca(&config, &ca_dir, &jwks);
    again.wait_ready(Duration::from_secs(20)).await;
    let chain = create_certificate(again.xds(), Some(&token), &csr, 60)
        .await
        .expect("certificate issued after restart")
        .cert_chain;
    assert_eq!(chain.last(), Some(&root));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_without_a_way_to_check_tokens_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshpilot"))
        .args(["serve", "--config-dir"])
        .arg(dir.path())
        .arg("--ca-dir")
        .arg(dir.path().join("ca"))
        .output()
        .expect("run meshpilot");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--jwks-file"), "{stderr}");

    // A directory holding part of a CA is refused, naming what is missing.
    let ca_dir = dir.path().join("partial");
    std::fs::create_dir(&ca_dir).expect("dir");
    std::fs::write(ca_dir.join("ca-cert.pem"), "x").expect("write");
    std::fs::write(dir.path().join("jwks.json"), r#"{"keys":[]}"#).expect("jwks");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshpilot"))
        .args([
            "serve",
            "--xds-address",
            "127.0.0.1:0",
            "--debug-address",
            "127.0.0.1:0",
        ])
        .arg("--config-dir")
        .arg(dir.path())
        .arg("--ca-dir")
        .arg(&ca_dir)
        .arg("--jwks-file")
        .arg(dir.path().join("jwks.json"))
        .args(["--token-issuer", ISSUER])
        .output()
        .expect("run meshpilot");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ca-key.pem") && stderr.contains("refusing"),
        "{stderr}"
    );
    assert!(!ca_dir.join("ca-key.pem").exists(), "no new root written");
}
