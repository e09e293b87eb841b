//! The validating admission webhook on the secure port, called as the API server calls it:
//! HTTPS (HTTP/2) to `/validate`, the server's certificate checked against the mesh root for the
//! Service name, an `AdmissionReview` in and out.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshpilot_ca::testing::TestIssuer;
use serde_json::{Value, json};
use support::mesh_ca::{KID, serve_with_ca};
use tokio_rustls::rustls;

async fn post_review(addr: SocketAddr, root_pem: &str, review: &Value) -> Value {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(c.expect("root")).expect("add root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let deadline = Instant::now() + Duration::from_secs(10);
    let tcp = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("connect {addr}: {e}"),
        }
    };
    // The name a ValidatingWebhookConfiguration's service reference resolves to.
    let name = ServerName::try_from("istiod.istio-system.svc").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS to the secure port");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("HTTP/2");
    tokio::spawn(conn);
    let req = http::Request::post("https://istiod.istio-system.svc/validate")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(review.to_string())))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&body).expect("AdmissionReview JSON")
}

fn review(uid: &str, weight: i64) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "operation": "CREATE",
            "object": {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": { "name": "reviews", "namespace": "default" },
                "spec": { "hosts": ["reviews"], "http": [{ "route": [
                    { "destination": { "host": "reviews" }, "weight": weight }
                ]}]},
            },
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_allows_valid_objects_and_denies_invalid_ones_with_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config");
    std::fs::create_dir(&config).expect("config");
    let ca_dir = dir.path().join("ca");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, TestIssuer::new(KID).jwks_json()).expect("jwks");
    let (server, secure) = serve_with_ca(&config, &ca_dir, &jwks, &[]);
    server.wait_ready(Duration::from_secs(20)).await;
    let root = std::fs::read_to_string(ca_dir.join("root-cert.pem")).expect("root");

    let ok = post_review(secure, &root, &review("a", 100)).await;
    assert_eq!(ok["kind"], "AdmissionReview");
    assert_eq!(ok["response"]["uid"], "a");
    assert_eq!(ok["response"]["allowed"], true);

    let bad = post_review(secure, &root, &review("b", -5)).await;
    assert_eq!(bad["response"]["uid"], "b");
    assert_eq!(bad["response"]["allowed"], false);
    let message = bad["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("spec.http[0].route[0].weight") && message.contains("negative"),
        "{message}"
    );
}
