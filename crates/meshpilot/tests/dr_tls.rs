//! DestinationRule `tls` SIMPLE as a user sees it: a real `meshpilot serve` and a real Envoy
//! 1.40 ingress gateway on loopback, in front of HTTPS backends whose certificates come from
//! their own CA (not the mesh's). The gateway takes plaintext HTTP and originates TLS to the
//! backend with the rule's `sni`, trusting only its `caCertificates` file and checking its
//! `subjectAltNames` (DNS names): the backend with a certificate from that CA answers, the one
//! from another CA does not.

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
    let acceptor = support::mesh_ca::tls_acceptor(ca, host);
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

fn manifests(trusted_ca: &std::path::Path, good: IpAddr, bad: IpAddr) -> String {
    let ca = trusted_ca.display();
    let service = |name: &str, ip: IpAddr| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
             spec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: {PORT}}}]\n---\n{}\
             ---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: {{name: {name}, namespace: default}}\nspec:\n  host: {name}\n\
             \x20 trafficPolicy:\n    tls:\n      mode: SIMPLE\n      caCertificates: {ca}\n\
             \x20     sni: {name}.default.svc.cluster.local\n\
             \x20     subjectAltNames: [{name}.default.svc.cluster.local]\n---\n",
            support::pod_yaml(&format!("{name}-1"), "default", &[("app", name)], ip, &[])
        )
    };
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
         ---\n{}{}",
        service("good", good),
        service("bad", bad)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_rule_simple_originates_tls_trusting_its_own_ca() {
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

    let dir = tempfile::tempdir().expect("temp dir");
    let trusted = dir.path().join("backend-ca.pem");
    std::fs::write(&trusted, backend_ca.root_pem()).expect("CA file");
    let config = dir.path().join("config");
    std::fs::create_dir(&config).expect("config dir");
    support::write_manifests(
        &config,
        &[("tls.yaml", &manifests(&trusted, good_ip, bad_ip))],
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
}
