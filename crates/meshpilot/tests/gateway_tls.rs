//! Gateway HTTPS against a real Envoy 1.40: certificates from Secrets in the manifests
//! directory, sent over SDS on the gateway's ADS stream (`--plaintext-secrets`, as these
//! loopback tests use the plaintext port). A TLS client checks which certificate each SNI
//! name gets, that a rotated Secret reaches Envoy without a listener update, that MUTUAL
//! wants a client certificate signed by the Secret's CA, that `httpsRedirect` answers 301,
//! that a Secret of another namespace is never sent, and that no debug output shows a key.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use support::{Backend, Envoy, Meshpilot};

const WAIT: Duration = Duration::from_secs(10);

/// A test CA and the certificates it signs.
struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate with its key, as PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA cert");
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `dns` (its SAN), with `cn` as common name.
    fn leaf(&self, dns: &str, cn: &str) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(vec![dns.to_string()]).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("    {l}\n")).collect()
}

/// A `kubernetes.io/tls` Secret (with `ca.crt` when `ca` is given).
fn tls_secret(name: &str, ns: &str, leaf: &Leaf, ca: Option<&str>) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&leaf.cert),
        indent(&leaf.key)
    );
    if let Some(ca) = ca {
        y.push_str(&format!("  ca.crt: |\n{}", indent(ca)));
    }
    y
}

/// The backend `web` (default/web:8080) and a VirtualService sending `hosts` through the
/// ingress gateway to it.
fn web(ip: IpAddr, hosts: &[&str]) -> String {
    let hosts: String = hosts.iter().map(|h| format!("  - {h}\n")).collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\n\
         spec:\n  ports:\n  - port: 8080\n    name: http\n  selector:\n    app: web\n---\n\
         {}---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: web\n  \
         namespace: default\nspec:\n  hosts:\n{hosts}  gateways:\n  - istio-system/gw\n  \
         http:\n  - route:\n    - destination:\n        host: web\n        port:\n          \
         number: 8080\n",
        support::pod_yaml("web", "default", &[("app", "web")], ip, &[])
    )
}

/// A manifests directory served with `--plaintext-secrets`, and a gateway Envoy in
/// istio-system.
struct GatewayMesh {
    dir: TempDir,
    server: Meshpilot,
}

impl GatewayMesh {
    async fn start(files: &[(&str, String)]) -> GatewayMesh {
        let dir = TempDir::new().expect("temp dir");
        let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
        support::write_manifests(dir.path(), &refs);
        let server = Meshpilot::spawn(&[dir.path()], &["--plaintext-secrets"]);
        server
            .wait_ready(support::server::SERVER_READY_TIMEOUT)
            .await;
        GatewayMesh { dir, server }
    }

    fn write(&self, rel: &str, text: &str) {
        support::write_manifests(self.dir.path(), &[(rel, text)]);
    }

    async fn gateway(&self, delta: bool) -> (Envoy, IpAddr, String) {
        let ip = support::loopback_ip();
        let admin = support::admin_addr();
        let node = support::node_id(
            "router",
            ip,
            &format!("gw-{}", ip.to_string().replace('.', "-")),
            "istio-system",
        );
        let mut args = support::bootstrap_args(&node, self.server.xds(), admin);
        args.labels = [("istio".to_string(), "ingressgateway".to_string())]
            .into_iter()
            .collect();
        args.delta = delta;
        let envoy = Envoy::start(support::render_bootstrap(&args), admin).await;
        (envoy, ip, node)
    }
}

/// The outcome of one HTTPS request: the server's certificate (PEM body) and the response,
/// or why the exchange failed.
struct HttpsOutcome {
    server_cert: CertificateDer<'static>,
    response: Result<String, String>,
}

/// Connects with SNI `sni`, trusting `ca`, optionally presenting `client`, and sends
/// `GET / Host: sni`. `Err` when the handshake itself fails.
async fn https_get(
    addr: SocketAddr,
    sni: &str,
    ca: &str,
    client: Option<&Leaf>,
) -> Result<HttpsOutcome, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA cert");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    let config = match client {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(leaf.cert.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).expect("key"),
            )
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).expect("server name");
    let mut tls = tokio::time::timeout(
        WAIT,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| format!("handshake: {e}"))?;
    let server_cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .expect("server certificate")
        .into_owned();
    let request = format!("GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
    let response = async {
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut body = Vec::new();
        tls.read_to_end(&mut body)
            .await
            .map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&body).to_string())
    };
    let response = tokio::time::timeout(WAIT, response)
        .await
        .unwrap_or_else(|_| Err("response timed out".to_string()));
    Ok(HttpsOutcome {
        server_cert,
        response,
    })
}

/// The common name of a DER certificate.
fn common_name(der: &CertificateDer<'_>) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("x509");
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The common name served for `sni`, once a handshake succeeds.
async fn served_cn(addr: SocketAddr, sni: &str, ca: &str) -> Result<String, String> {
    https_get(addr, sni, ca, None)
        .await
        .map(|o| common_name(&o.server_cert))
}

fn gateway_yaml(servers: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  \
         namespace: istio-system\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n{servers}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_each_hosts_certificate_by_sni_and_rotates_without_a_listener_update() {
    let _envoy_bin = support::require_envoy!();
    let ca = TestCa::new("test CA");
    let web_ip = support::loopback_ip();
    let _web = Backend::start(web_ip, 8080, "web");
    let servers = "  - port: {number: 443, name: https-a, protocol: HTTPS}\n    hosts: [a.example.com]\n    tls: {mode: SIMPLE, credentialName: a-cert, minProtocolVersion: TLSV1_2}\n\
                   \x20 - port: {number: 443, name: https-b, protocol: HTTPS}\n    hosts: [b.example.com]\n    tls: {mode: SIMPLE, credentialName: b-cert}\n\
                   \x20 - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*.example.com\"]\n    tls: {httpsRedirect: true}\n";
    let key_a = ca.leaf("a.example.com", "a-one");
    let mesh = GatewayMesh::start(&[
        ("gateway.yaml", gateway_yaml(servers)),
        ("web.yaml", web(web_ip, &["a.example.com", "b.example.com"])),
        ("a.yaml", tls_secret("a-cert", "istio-system", &key_a, None)),
        (
            "b.yaml",
            tls_secret(
                "b-cert",
                "istio-system",
                &ca.leaf("b.example.com", "b-one"),
                None,
            ),
        ),
    ])
    .await;
    for delta in [false, true] {
        let (gw, ip, node) = mesh.gateway(delta).await;
        gw.wait_for_listener(&format!("{ip}_443"), WAIT).await;
        let addr = SocketAddr::new(ip, 443);
        let cn = support::eventually("a.example.com served", WAIT, || async {
            served_cn(addr, "a.example.com", &ca.pem).await
        })
        .await;
        // The first pass serves the first certificate; the second pass starts after rotation.
        let expected_a = if delta { "a-two" } else { "a-one" };
        assert_eq!(cn, expected_a);
        assert_eq!(
            served_cn(addr, "b.example.com", &ca.pem).await.as_deref(),
            Ok("b-one")
        );
        let through = https_get(addr, "a.example.com", &ca.pem, None)
            .await
            .expect("handshake");
        let body = through.response.expect("response");
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains("web"), "{body}");

        // Plain HTTP on 80 is redirected to HTTPS.
        gw.wait_for_listener(&format!("{ip}_80"), WAIT).await;
        let r = support::try_get(SocketAddr::new(ip, 80), "a.example.com", "/some/path", &[])
            .await
            .expect("plain HTTP");
        assert_eq!(r.status, 301, "{r:?}");
        assert_eq!(
            r.header("location"),
            Some("https://a.example.com/some/path"),
            "{r:?}"
        );

        if !delta {
            // Rotate a-cert: the new certificate is served, and no listener changed.
            let modified = gw.stat("listener_manager.listener_modified").await;
            let added = gw.stat("listener_manager.listener_added").await;
            assert!(
                modified.is_some() && added.is_some(),
                "Envoy's listener stats"
            );
            mesh.write(
                "a.yaml",
                &tls_secret(
                    "a-cert",
                    "istio-system",
                    &ca.leaf("a.example.com", "a-two"),
                    None,
                ),
            );
            support::wait_until("rotated certificate served", WAIT, || async {
                served_cn(addr, "a.example.com", &ca.pem).await.as_deref() == Ok("a-two")
            })
            .await;
            assert_eq!(
                gw.stat("listener_manager.listener_modified").await,
                modified
            );
            assert_eq!(gw.stat("listener_manager.listener_added").await, added);
        }
        gw.assert_all_acked().await;

        // No debug output carries key material.
        let key_marker = "PRIVATE KEY";
        for path in [
            format!("/debug/config_dump?proxyID={node}"),
            "/debug/configz".to_string(),
            format!("/debug/config_dump?proxyID={node}&types=sds"),
        ] {
            let r = mesh.server.debug_get(&path).await.expect("debug");
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            assert!(!r.body.contains(key_marker), "{path} shows a key");
            assert!(!r.body.contains(key_body(&key_a.key)), "{path} shows a key");
        }
        let dump = mesh
            .server
            .debug_json(&format!("/debug/config_dump?proxyID={node}&types=sds"))
            .await
            .expect("sds dump");
        assert!(dump.to_string().contains("kubernetes://a-cert"), "{dump}");
        assert!(dump.to_string().contains("[redacted]"), "{dump}");
    }
    assert!(!mesh.server.logs().contains("PRIVATE KEY"));
}

/// A line from the middle of a PEM key (base64 of key bytes).
fn key_body(pem: &str) -> &str {
    pem.lines().nth(1).unwrap_or("-")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_wants_a_client_certificate_and_secrets_stay_in_their_namespace() {
    let _envoy_bin = support::require_envoy!();
    let ca = TestCa::new("server CA");
    let clients = TestCa::new("client CA");
    let web_ip = support::loopback_ip();
    let _web = Backend::start(web_ip, 8080, "web");
    let mutual = "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [m.example.com]\n    tls: {mode: MUTUAL, credentialName: m-cert}\n";
    let other = "  - port: {number: 8443, name: other, protocol: HTTPS}\n    hosts: [o.example.com]\n    tls: {mode: SIMPLE, credentialName: elsewhere}\n";
    let mesh = GatewayMesh::start(&[
        ("gateway.yaml", gateway_yaml(mutual)),
        ("web.yaml", web(web_ip, &["m.example.com", "o.example.com"])),
        (
            "m.yaml",
            tls_secret(
                "m-cert",
                "istio-system",
                &ca.leaf("m.example.com", "m"),
                Some(&clients.pem),
            ),
        ),
        // In the wrong namespace for a gateway in istio-system.
        (
            "elsewhere.yaml",
            tls_secret("elsewhere", "default", &ca.leaf("o.example.com", "o"), None),
        ),
    ])
    .await;
    let (gw, ip, node) = mesh.gateway(false).await;
    gw.wait_for_listener(&format!("{ip}_443"), WAIT).await;
    let addr = SocketAddr::new(ip, 443);
    support::eventually("m.example.com served", WAIT, || async {
        served_cn(addr, "m.example.com", &ca.pem).await
    })
    .await;
    // Without a client certificate: refused (in TLS 1.3 the refusal comes after the handshake).
    match https_get(addr, "m.example.com", &ca.pem, None).await {
        Err(_) => {}
        Ok(o) => assert!(
            o.response.as_ref().map_or(true, |r| !r.contains("200")),
            "served without a client certificate: {:?}",
            o.response
        ),
    }
    // A certificate from another CA: refused too.
    let stranger = TestCa::new("stranger").leaf("client", "client");
    match https_get(addr, "m.example.com", &ca.pem, Some(&stranger)).await {
        Err(_) => {}
        Ok(o) => assert!(
            o.response.as_ref().map_or(true, |r| !r.contains("200")),
            "served to a stranger: {:?}",
            o.response
        ),
    }
    // Signed by the Secret's CA: served.
    let client = clients.leaf("client", "client");
    let ok = https_get(addr, "m.example.com", &ca.pem, Some(&client))
        .await
        .expect("handshake");
    let body = ok.response.expect("response");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");

    // A server naming a Secret of another namespace: the Secret is never sent, its listener
    // waits for it (while the others serve on), and the diagnostics say why.
    mesh.write("gateway.yaml", &gateway_yaml(&format!("{mutual}{other}")));
    let text = support::eventually("the missing Secret diagnosed", WAIT, || async {
        let text = mesh
            .server
            .debug_json("/debug/diagnosticz")
            .await?
            .to_string();
        if text.contains("no Secret \\\"elsewhere\\\"") && text.contains("istio-system") {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .await;
    assert!(text.contains("credentialName"), "{text}");
    gw.wait_for_dump("8443 warming", WAIT, |d| {
        d.to_string().contains(&format!("{ip}_8443"))
    })
    .await;
    let dump = mesh
        .server
        .debug_json(&format!("/debug/config_dump?proxyID={node}&types=sds"))
        .await
        .expect("sds dump");
    assert!(
        !dump.to_string().contains("kubernetes://elsewhere\""),
        "{dump}"
    );
    let active = support::dump::listener_names(&gw.config_dump().await);
    assert!(active.contains(&format!("{ip}_443")), "{active:?}");
    assert!(
        !active.contains(&format!("{ip}_8443")),
        "the listener without its secret must stay warming: {active:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_go_to_verified_gateways_on_the_secure_port_and_not_over_plaintext() {
    let _envoy_bin = support::require_envoy!();
    let mesh = support::mesh_ca::WebWithCa::start().await;
    let ca = TestCa::new("gateway CA");
    let servers = "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.example.com]\n    tls: {mode: SIMPLE, credentialName: a-cert}\n";
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: web\n  \
              namespace: default\nspec:\n  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  \
              http:\n  - route:\n    - destination: {host: web, port: {number: 8080}}\n";
    support::write_manifests(
        &mesh.dir.path().join("config"),
        &[
            ("gateway.yaml", &gateway_yaml(servers)),
            ("vs.yaml", vs),
            (
                "a.yaml",
                &tls_secret(
                    "a-cert",
                    "istio-system",
                    &ca.leaf("a.example.com", "a"),
                    None,
                ),
            ),
        ],
    );
    let gateway_args = |xds: SocketAddr| {
        let ip = support::loopback_ip();
        let admin = support::admin_addr();
        let node = support::node_id(
            "router",
            ip,
            &format!("gw-{}", ip.to_string().replace('.', "-")),
            "istio-system",
        );
        let mut args = support::bootstrap_args(&node, xds, admin);
        args.labels = [("istio".to_string(), "ingressgateway".to_string())]
            .into_iter()
            .collect();
        (args, ip, admin, node)
    };

    // Over the secure port, with a token of the gateway's namespace: served.
    let (mut args, ip, admin, _) = gateway_args(mesh.secure);
    args.xds_root_cert = Some(mesh.root_cert());
    args.xds_token_file = Some(mesh.token_file("gw-token", "istio-system", "ingress"));
    let gw = Envoy::start(support::render_bootstrap(&args), admin).await;
    gw.wait_for_listener(&format!("{ip}_443"), WAIT).await;
    let cn = support::eventually("a.example.com served", WAIT, || async {
        served_cn(SocketAddr::new(ip, 443), "a.example.com", &ca.pem).await
    })
    .await;
    assert_eq!(cn, "a");

    // Over the plaintext port (no --plaintext-secrets): the secret is never sent.
    let (args, _, admin, node) = gateway_args(mesh.server.xds());
    let _plain = Envoy::spawn(support::render_bootstrap(&args), admin);
    support::wait_until("the refusal logged", WAIT, || async {
        mesh.server
            .logs()
            .contains("not sending TLS secrets to an unauthenticated stream")
    })
    .await;
    let dump = mesh
        .server
        .debug_json(&format!("/debug/config_dump?proxyID={node}&types=sds"))
        .await
        .expect("sds dump");
    assert!(!dump.to_string().contains("kubernetes://a-cert"), "{dump}");
}

/// istio's default ingress Service: it sends 80 → 8080 and 443 → 8443 to the gateway pod.
const INGRESS_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: istio-ingressgateway\n  \
    namespace: istio-system\nspec:\n  selector:\n    istio: ingressgateway\n  ports:\n  \
    - {name: http2, port: 80, targetPort: 8080}\n  - {name: https, port: 443, targetPort: 8443}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_listeners_bind_the_target_ports_of_the_gateway_service() {
    let _envoy_bin = support::require_envoy!();
    let ca = TestCa::new("test CA");
    let web_ip = support::loopback_ip();
    let _web = Backend::start(web_ip, 8080, "web");
    let servers = "  - port: {number: 443, name: https-a, protocol: HTTPS}\n    hosts: [a.example.com]\n    tls: {mode: SIMPLE, credentialName: a-cert}\n\
                   \x20 - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [a.example.com]\n";
    let mesh = GatewayMesh::start(&[
        ("gateway.yaml", gateway_yaml(servers)),
        ("service.yaml", INGRESS_SERVICE.to_string()),
        ("web.yaml", web(web_ip, &["a.example.com"])),
        (
            "a.yaml",
            tls_secret(
                "a-cert",
                "istio-system",
                &ca.leaf("a.example.com", "a-one"),
                None,
            ),
        ),
    ])
    .await;
    for delta in [false, true] {
        let (gw, ip, _) = mesh.gateway(delta).await;
        gw.wait_for_listener(&format!("{ip}_8080"), WAIT).await;
        gw.wait_for_listener(&format!("{ip}_8443"), WAIT).await;
        let r = support::eventually("HTTP on the target port", WAIT, || async {
            support::try_get(SocketAddr::new(ip, 8080), "a.example.com", "/", &[])
                .await
                .map_err(|e| format!("{e:#}"))
                .and_then(|r| {
                    if r.status == 200 {
                        Ok(r)
                    } else {
                        Err(format!("HTTP {}", r.status))
                    }
                })
        })
        .await;
        assert_eq!(r.header("x-backend"), Some("web"), "{r:?}");
        let https = https_get(SocketAddr::new(ip, 8443), "a.example.com", &ca.pem, None)
            .await
            .expect("handshake on 8443");
        assert_eq!(common_name(&https.server_cert), "a-one");
        let body = https.response.expect("response");
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        // The server ports themselves are not bound: the Service's port is the way in.
        for port in [80, 443] {
            assert!(
                TcpStream::connect(SocketAddr::new(ip, port)).await.is_err(),
                "delta={delta}: port {port} is bound"
            );
        }
        gw.assert_all_acked().await;
    }
}
