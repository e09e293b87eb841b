//! DestinationRule `tls` SIMPLE and MUTUAL as a user sees them: a real `meshpilot serve` and a
//! real Envoy 1.40 ingress gateway on loopback, in front of HTTPS backends whose certificates
//! come from their own CA (not the mesh's). The gateway takes plaintext HTTP and originates TLS
//! to the backend with the rule's `sni`, trusting only its `caCertificates` file and checking
//! its `subjectAltNames` (DNS names): the backend with a certificate from that CA answers, the
//! one from another CA does not. A backend that requires a client certificate answers MUTUAL
//! with the rule's `clientCertificate`/`privateKey`, and not SIMPLE.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use meshpilot_ca::CertificateAuthority;
use support::{Meshpilot, dump};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);
const PORT: u16 = 8443;

/// An HTTPS backend on `addr` with a certificate for `host` from `ca`: answers every request
/// `200` with `name` and closes. Its tasks end with the test's runtime.
async fn https_backend(
    ca: &CertificateAuthority,
    addr: SocketAddr,
    host: &str,
    name: &'static str,
) {
    serve_https(support::mesh_ca::tls_acceptor(ca, host), addr, name).await;
}

/// A TLS acceptor for `host` (certificate from `ca`) that requires a client certificate
/// `ca` signed.
fn client_cert_acceptor(ca: &CertificateAuthority, host: &str) -> tokio_rustls::TlsAcceptor {
    use std::sync::Arc;
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = ca
        .sign_server(&[host.to_string()], Duration::from_secs(3600))
        .expect("server certificate");
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("chain");
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.root_pem().as_bytes()) {
        roots.add(c.expect("root")).expect("root added");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Serves HTTPS on `addr` with `acceptor`, answering every request `200` with `name`.
async fn serve_https(acceptor: tokio_rustls::TlsAcceptor, addr: SocketAddr, name: &'static str) {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let _ = conn.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(conn).await else {
                    return;
                };
                // Read the request head, then answer in one write.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-backend: {name}\r\n\
                     connection: close\r\n\r\n{name}",
                    name.len()
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
}

/// The client certificate files of a MUTUAL rule.
struct ClientFiles<'a> {
    cert: &'a std::path::Path,
    key: &'a std::path::Path,
}

fn manifests(
    trusted_ca: &std::path::Path,
    (good, bad): (IpAddr, IpAddr),
    (mutual, without): (IpAddr, IpAddr),
    client: &ClientFiles<'_>,
) -> String {
    let ca = trusted_ca.display();
    let service = |name: &str, ip: IpAddr, mode: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
             spec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: {PORT}}}]\n---\n{}\
             ---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: {{name: {name}, namespace: default}}\nspec:\n  host: {name}\n\
             \x20 trafficPolicy:\n    tls:\n      mode: {mode}\n      caCertificates: {ca}\n\
             \x20     sni: {name}.default.svc.cluster.local\n\
             \x20     subjectAltNames: [{name}.default.svc.cluster.local]\n---\n",
            support::pod_yaml(&format!("{name}-1"), "default", &[("app", name)], ip, &[])
        )
    };
    let mutual_mode = format!(
        "MUTUAL\n      clientCertificate: {}\n      privateKey: {}",
        client.cert.display(),
        client.key.display()
    );
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\n\
         metadata: {{name: gw, namespace: istio-system}}\nspec:\n\
         \x20 selector: {{istio: ingressgateway}}\n\
         \x20 servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ['*']}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {{name: tls-origination, namespace: default}}\nspec:\n\
         \x20 hosts: [tls.example.com]\n  gateways: [istio-system/gw]\n  http:\n\
         \x20 - match: [{{uri: {{prefix: /good}}}}]\n    route: [{{destination: {{host: good}}}}]\n\
         \x20 - match: [{{uri: {{prefix: /bad}}}}]\n    route: [{{destination: {{host: bad}}}}]\n\
         \x20 - match: [{{uri: {{prefix: /mutual}}}}]\n    route: [{{destination: {{host: mutual}}}}]\n\
         \x20 - match: [{{uri: {{prefix: /without}}}}]\n    route: [{{destination: {{host: without}}}}]\n\
         ---\n{}{}{}{}",
        service("good", good, "SIMPLE"),
        service("bad", bad, "SIMPLE"),
        service("mutual", mutual, &mutual_mode),
        service("without", without, "SIMPLE"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_rule_simple_and_mutual_originate_tls_trusting_their_own_ca() {
    let _envoy_bin = support::require_envoy!();
    // The backends' CA is not the mesh's; `bad` has a certificate from yet another CA.
    let backend_ca = CertificateAuthority::self_signed("backends.example").expect("CA");
    let other_ca = CertificateAuthority::self_signed("elsewhere.example").expect("CA");
    let (good_ip, bad_ip) = (support::loopback_ip(), support::loopback_ip());
    https_backend(
        &backend_ca,
        SocketAddr::new(good_ip, PORT),
        "good.default.svc.cluster.local",
        "good",
    )
    .await;
    https_backend(
        &other_ca,
        SocketAddr::new(bad_ip, PORT),
        "bad.default.svc.cluster.local",
        "bad",
    )
    .await;
    // Two backends that want a client certificate from the backends' CA.
    let (mutual_ip, without_ip) = (support::loopback_ip(), support::loopback_ip());
    for (ip, name) in [(mutual_ip, "mutual"), (without_ip, "without")] {
        let host = format!("{name}.default.svc.cluster.local");
        serve_https(
            client_cert_acceptor(&backend_ca, &host),
            SocketAddr::new(ip, PORT),
            name,
        )
        .await;
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let trusted = dir.path().join("backend-ca.pem");
    std::fs::write(&trusted, backend_ca.root_pem()).expect("CA file");
    let client = backend_ca
        .sign_server(&["gateway.example".to_string()], Duration::from_secs(3600))
        .expect("client certificate");
    let (cert, key) = (
        dir.path().join("client.pem"),
        dir.path().join("client-key.pem"),
    );
    std::fs::write(&cert, &client.chain_pem).expect("client certificate file");
    std::fs::write(&key, &client.key_pem).expect("client key file");
    let config = dir.path().join("config");
    std::fs::create_dir(&config).expect("config dir");
    support::write_manifests(
        &config,
        &[(
            "tls.yaml",
            &manifests(
                &trusted,
                (good_ip, bad_ip),
                (mutual_ip, without_ip),
                &ClientFiles {
                    cert: &cert,
                    key: &key,
                },
            ),
        )],
    );
    let server = Meshpilot::start(&[&config]).await;
    let (envoy, addr) = support::ingress_gateway(&server, WAIT).await;
    let good = format!("outbound|{PORT}||good.default.svc.cluster.local");
    envoy
        .wait_for_dump("good's endpoint", WAIT, |d| {
            dump::endpoints(d, &good).len() == 1
        })
        .await;
    envoy.assert_all_acked().await;
    let gateway = addr;

    // The backend whose certificate the rule's CA signed answers through the gateway.
    let dist = support::distribution(gateway, "tls.example.com", "/good", &[], 5).await;
    support::assert_only(&dist, "good");
    let handshakes = envoy
        .stat(&format!("cluster.{good}.ssl.handshake"))
        .await
        .unwrap_or(0);
    assert!(handshakes > 0, "the gateway originated no TLS to good");

    // A certificate from another CA fails verification: no response from that backend.
    let dist = support::distribution(gateway, "tls.example.com", "/bad", &[], 3).await;
    support::assert_only(&dist, "HTTP 503");
    let bad = format!("outbound|{PORT}||bad.default.svc.cluster.local");
    let refused = envoy
        .stat(&format!("cluster.{bad}.ssl.fail_verify_error"))
        .await
        .unwrap_or(0);
    assert!(
        refused > 0,
        "bad's certificate should have failed verification"
    );

    // MUTUAL presents the rule's client certificate: the backend that requires one answers.
    let dist = support::distribution(gateway, "tls.example.com", "/mutual", &[], 5).await;
    support::assert_only(&dist, "mutual");
    // SIMPLE to a backend that requires a client certificate: refused, 503.
    let dist = support::distribution(gateway, "tls.example.com", "/without", &[], 3).await;
    support::assert_only(&dist, "HTTP 503");
}
