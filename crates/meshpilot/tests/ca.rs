//! The certificate authority as an Istio agent meets it: `CreateCertificate` on the xDS port
//! with a service-account token, the identity in the certificate taken from the token, callers
//! without a valid token refused, the root kept across a restart, Citadel's counters counting;
//! on the secure port a workload certificate the CA issued proves its holder as a token does.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshpilot_ca::testing::{TestIssuer, csr_for};

use support::mesh_ca::{
    ISSUER, KID, WebWithCa, create_certificate, create_certificate_on, has_web_cluster,
    serve_with_ca, spiffe_sans,
};

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

    let (server, _) = serve_with_ca(&config, &ca_dir, &jwks, &[]);
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
    let (again, _) = serve_with_ca(&config, &ca_dir, &jwks, &[]);
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

/// The secure port's certificate as a TLS client sees it: its DER, verified against `root` for
/// the name Istio's agents check.
async fn secure_port_certificate(addr: SocketAddr, root: &str) -> Vec<u8> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root.as_bytes()) {
        roots.add(c.expect("root PEM")).expect("root added");
    }
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("istiod.istio-system.svc").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake verifies the server as istiod.istio-system.svc");
    tls.get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0]
        .to_vec()
}

async fn secure_port_serves(what: &str, addr: SocketAddr, root: &str) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return secure_port_certificate(addr, root).await;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: secure port {addr} never opened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secure_port_is_tls_for_istiod_and_its_certificate_is_renewed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config");
    std::fs::create_dir(&config).expect("config dir");
    let ca_dir = dir.path().join("ca");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, TestIssuer::new(KID).jwks_json()).expect("jwks");
    let (server, secure) = serve_with_ca(&config, &ca_dir, &jwks, &["--secure-xds-cert-ttl", "4"]);
    server.wait_ready(Duration::from_secs(20)).await;
    let root = std::fs::read_to_string(ca_dir.join("root-cert.pem")).expect("root");
    let first = secure_port_serves("first", secure, &root).await;
    // Renewed at half of its 4 s: a handshake 3 s later gets another certificate.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = secure_port_certificate(secure, &root).await;
    assert_ne!(first, second, "the certificate was renewed");
    assert!(
        server.logs().contains("secure port's certificate renewed"),
        "{}",
        server.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_envoy_gets_its_configuration_over_the_secure_port() {
    let _envoy_bin = support::require_envoy!();
    let mesh = WebWithCa::start().await;
    let (server, secure, ca_dir) = (&mesh.server, mesh.secure, &mesh.ca_dir);
    let token_file = mesh.token_file("istio-token", "default", "client");

    let ip = support::loopback_ip();
    let admin = support::admin_addr();
    let node = support::node_id("sidecar", ip, "client", "default");
    let mut args = support::bootstrap_args(&node, secure, admin);
    args.xds_root_cert = Some(ca_dir.join("root-cert.pem"));
    args.xds_token_file = Some(token_file);
    let envoy = support::Envoy::start(support::render_bootstrap(&args), admin).await;
    let dump = envoy
        .wait_for_dump(
            "web's cluster over TLS",
            Duration::from_secs(15),
            has_web_cluster,
        )
        .await;
    assert!(support::dump::error_states(&dump).is_empty());
    envoy.assert_all_acked().await;
    let stats = envoy
        .admin_get("/stats?filter=^cluster.xds-grpc.ssl.handshake$")
        .await
        .expect("stats")
        .body;
    let handshakes: u64 = stats
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        handshakes >= 1,
        "Envoy reached the control plane over TLS: {stats}"
    );

    // Without a token, and with a token for another namespace than the node claims: refused,
    // and nothing is served to either.
    let start_other = |token: Option<&Path>| {
        let ip = support::loopback_ip();
        let admin = support::admin_addr();
        let node = support::node_id("sidecar", ip, "intruder", "default");
        let mut args = support::bootstrap_args(&node, secure, admin);
        args.xds_root_cert = Some(ca_dir.join("root-cert.pem"));
        args.xds_token_file = token.map(Path::to_path_buf);
        (support::render_bootstrap(&args), admin)
    };
    let (b, a) = start_other(None);
    let anonymous = support::Envoy::spawn(b, a);
    let other_ns = mesh.token_file("other-token", "other", "client");
    let (b, a) = start_other(Some(&other_ns));
    let impostor = support::Envoy::spawn(b, a);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(server
        .logs()
        .contains("refusing unauthenticated ADS stream")
        && server
            .logs()
            .contains("but its token is for service account other/client"))
    {
        assert!(
            Instant::now() < deadline,
            "both refusals logged: {}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (what, envoy) in [("no token", &anonymous), ("other namespace", &impostor)] {
        let dump = envoy
            .admin_get("/config_dump")
            .await
            .expect("config dump")
            .body;
        assert!(
            !dump.contains("web.default.svc.cluster.local"),
            "{what}: an unauthenticated proxy was served configuration"
        );
    }
}

/// A gRPC channel to the secure port over TLS (the server verified as istiod against `root`),
/// presenting `client` (chain PEM, key PEM) when given; `Err` when no connection is made.
async fn secure_channel(
    addr: SocketAddr,
    root: &str,
    client: Option<(&str, &str)>,
) -> Result<tonic::transport::Channel, String> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root.as_bytes()) {
        roots.add(c.expect("root PEM")).expect("root added");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots);
    let mut config = match client {
        Some((chain, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("chain"),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
            )
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    tonic::transport::Endpoint::from_static("http://istiod.istio-system.svc")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = ServerName::try_from("istiod.istio-system.svc").expect("name");
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| format!("{e:?}"))
}

/// The first CDS response of an ADS stream on `channel` for a sidecar in `default` with no
/// token, or the stream's refusal.
async fn first_clusters(channel: tonic::transport::Channel) -> Result<Vec<String>, tonic::Status> {
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    let request = DiscoveryRequest {
        node: Some(Node {
            id: support::node_id("sidecar", support::loopback_ip(), "client", "default"),
            ..Node::default()
        }),
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".to_string(),
        ..DiscoveryRequest::default()
    };
    // The request side stays open, as a proxy's does.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(request).await.expect("queue request");
    let mut stream = AggregatedDiscoveryServiceClient::new(channel)
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let response = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no CDS response"))??
        .ok_or_else(|| tonic::Status::aborted("stream ended"))?;
    drop(tx);
    Ok(response
        .resources
        .iter()
        .map(|r| {
            use prost::Message;
            envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(r.value.as_slice())
                .expect("a Cluster")
                .name
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_certificate_proves_its_holder_on_the_secure_port() {
    let mesh = WebWithCa::start().await;
    let root = std::fs::read_to_string(mesh.root_cert()).expect("root");
    let spiffe = "spiffe://cluster.local/ns/default/sa/client";

    // The first certificate, with a token (as an agent starts).
    let (key, csr) = csr_for(spiffe);
    let token = mesh
        .issuer
        .service_account_token(KID, ISSUER, "default", "client");
    let first = create_certificate(mesh.server.xds(), Some(&token), &csr, 3600)
        .await
        .expect("first certificate");
    let (chain, key_pem) = (first.cert_chain.concat(), key.serialize_pem());

    // Renewal with only that certificate: no token on the call.
    let channel = support::eventually("the secure port", Duration::from_secs(10), || async {
        secure_channel(mesh.secure, &root, Some((&chain, &key_pem))).await
    })
    .await;
    let (next_key, next_csr) = csr_for(spiffe);
    let renewed = create_certificate_on(channel.clone(), None, &next_csr, 3600)
        .await
        .expect("a renewal proven by the workload certificate alone");
    assert_eq!(spiffe_sans(&renewed.cert_chain[0]), [spiffe]);
    assert_ne!(renewed.cert_chain[0], first.cert_chain[0]);
    drop(next_key);

    // ADS on the same connection: the certificate speaks for its namespace, no token needed.
    let clusters = first_clusters(channel)
        .await
        .expect("served by certificate");
    assert!(
        clusters.iter().any(|c| c == support::mesh_ca::WEB_CLUSTER),
        "{clusters:?}"
    );

    // A certificate of this CA that names no workload (the secure port's own kind): not an
    // identity, so without a token the call is Unauthenticated.
    let ca = meshpilot_ca::CertificateAuthority::load_or_create(&mesh.ca_dir, "cluster.local")
        .expect("the CA's files");
    let server_like = ca
        .sign_server(
            &["not-a-workload.example".to_string()],
            Duration::from_secs(600),
        )
        .expect("a certificate without a SPIFFE id");
    let channel = secure_channel(
        mesh.secure,
        &root,
        Some((&server_like.chain_pem, &server_like.key_pem)),
    )
    .await
    .expect("a connection with a certificate the root signed");
    let status = create_certificate_on(channel.clone(), None, &next_csr, 3600)
        .await
        .expect_err("no identity in the certificate");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("client certificate"),
        "{status:?}"
    );
    let refused = first_clusters(channel).await.expect_err("no ADS either");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    // A workload certificate from another CA: refused at the handshake (as istiod's
    // VerifyClientCertIfGiven refuses it), so no certificate either way.
    let other =
        meshpilot_ca::CertificateAuthority::self_signed("cluster.local").expect("another CA");
    let (foreign_key, foreign_csr) = csr_for(spiffe);
    let foreign = other
        .sign(
            &foreign_csr,
            &meshpilot_ca::SpiffeId {
                trust_domain: "cluster.local".to_string(),
                namespace: "default".to_string(),
                service_account: "client".to_string(),
            },
            Duration::from_secs(600),
        )
        .expect("foreign certificate")
        .concat();
    let foreign_key = foreign_key.serialize_pem();
    let answer = match secure_channel(mesh.secure, &root, Some((&foreign, &foreign_key))).await {
        Ok(channel) => create_certificate_on(channel, None, &next_csr, 3600)
            .await
            .map_err(|s| format!("{s:?}")),
        Err(e) => Err(e),
    };
    assert!(answer.is_err(), "a foreign certificate got a certificate");
}
