//! Mutual TLS between sidecars as istiod configures it, in pods: each sidecar a stock Envoy
//! behind `meshpilot agent` (its certificate from meshpilot's CA, for the service account of
//! a token this test mints), PeerAuthentication deciding what each inbound port accepts, and
//! client auto-mTLS picking TLS or plaintext by the destination pod's `tlsMode` label.
//! STRICT refuses plaintext and a TLS client without a certificate alike.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use meshpilot_ca::testing::TestIssuer;
use support::eventually_status;
use support::mesh_ca::{ISSUER, KID, serve_with_ca};
use support::mesh_client::AcceptAnyServer;
use support::pod_agent::AgentIdentity;
use support::pods::{Pod, pod_helper, require_pods};
use support::require_envoy;
use tokio_rustls::rustls;

pod_helper!();

const WAIT: Duration = Duration::from_secs(20);
const VIP_WEB: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 21);
const VIP_STRICT: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 22);
const VIP_SPOOF: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 23);
const VIP_LEGACY: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 24);

fn service(name: &str, vip: Ipv4Addr, extra_port: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  clusterIP: {vip}\n  selector: {{app: {name}}}\n  ports:\n\
         \x20 - {{name: http, port: 80, targetPort: 8080}}\n{extra_port}"
    )
}

/// The namespace PERMISSIVE; `strict` pods STRICT (workload level); `web`'s port 9090
/// STRICT (port level).
const POLICIES: &str = r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: default}
spec:
  selector: {matchLabels: {app: strict}}
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: web-admin, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  portLevelMtls:
    9090: {mode: STRICT}
"#;

/// A pod manifest with `app: NAME`, the injector's `tlsMode` label when `injected`, and
/// service account `sa`.
fn pod(p: &Pod, app: &str, injected: bool, sa: &str) -> String {
    let mut labels = vec![("app", app)];
    if injected {
        labels.push(("security.istio.io/tlsMode", "istio"));
    }
    support::pod_yaml(p.name(), "default", &labels, p.ip(), &[]).replace(
        "spec:\n  containers:",
        &format!("spec:\n  serviceAccountName: {sa}\n  containers:"),
    )
}

fn ok(r: &Result<support::Response, String>) -> bool {
    matches!(r, Ok(r) if r.status == 200)
}

/// A TLS connection with ALPN `istio` and no client certificate, from the host, accepting any
/// server certificate.
async fn connect_without_certificate(
    addr: SocketAddr,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AcceptAnyServer(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"istio".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from("strict.default.svc.cluster.local")
        .map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))
}

/// A GET over TLS with ALPN `istio` and no client certificate, from the host; what came back
/// (the handshake or the read may fail instead).
async fn tls_get_without_certificate(addr: SocketAddr) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = connect_without_certificate(addr).await?;
    tls.write_all(b"GET / HTTP/1.1\r\nhost: strict\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer))
        .await
        .map_err(|_| "read timed out".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// The certificate a sidecar serves on a new connection to `addr` (DER of the leaf), as a TLS
/// client sees it: the server's certificate comes before the client's is asked for.
async fn served_certificate(addr: SocketAddr) -> Vec<u8> {
    let tls = connect_without_certificate(addr)
        .await
        .unwrap_or_else(|e| panic!("TLS to {addr}: {e}"));
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.to_vec())
        .unwrap_or_else(|| panic!("{addr} served no certificate"))
}

fn peer(r: &support::Response) -> String {
    r.header("x-peer").unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_speak_mutual_tls_as_peer_authentication_and_tls_mode_say() {
    let _envoy_bin = require_envoy!();
    let net = require_pods!();
    let client = net.pod("client");
    let web = net.pod("web");
    let strict = net.pod("strict");
    let spoof = net.pod("spoof");
    let legacy = net.pod("legacy");
    let plain = net.pod("plain");
    for p in [&client, &web, &strict, &spoof] {
        p.capture();
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config");
    std::fs::create_dir(&config).expect("config dir");
    let services = [
        service(
            "web",
            VIP_WEB,
            "  - {name: http-admin, port: 90, targetPort: 9090}\n",
        ),
        service("strict", VIP_STRICT, ""),
        service("spoof", VIP_SPOOF, ""),
        service("legacy", VIP_LEGACY, ""),
    ]
    .join("---\n");
    let pods = [
        pod(&client, "client", true, "client"),
        pod(&web, "web", true, "web-sa"),
        pod(&strict, "strict", true, "strict-sa"),
        pod(&spoof, "spoof", true, "spoof-sa"),
        pod(&legacy, "legacy", false, "default"),
        pod(&plain, "plain", false, "default"),
    ]
    .join("---\n");
    support::write_manifests(
        &config,
        &[
            ("services.yaml", &services),
            ("pods.yaml", &pods),
            ("policies.yaml", POLICIES),
        ],
    );
    let issuer = TestIssuer::new(KID);
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, issuer.jwks_json()).expect("jwks");
    let ca_dir = dir.path().join("ca");
    let (server, secure) = serve_with_ca(&config, &ca_dir, &jwks, &[]);
    server.wait_ready(WAIT).await;
    let root = ca_dir.join("root-cert.pem");

    let token = |sa: &str| -> PathBuf {
        let path = dir.path().join(format!("token-{sa}"));
        std::fs::write(
            &path,
            issuer.service_account_token(KID, ISSUER, "default", sa),
        )
        .expect("token");
        path
    };
    let agents = dir.path().join("pods");

    let _app_web = web.start_http_app(8080, "app-web");
    let _admin_web = web.start_http_app(9090, "app-web-admin");
    let _app_strict = strict.start_http_app(8080, "app-strict");
    let _app_spoof = spoof.start_http_app(8080, "app-spoof");
    let _app_legacy = legacy.start_http_app(8080, "app-legacy");

    let mut sidecars = Vec::new();
    // spoof's agent proves another service account than its pod declares: clients expect
    // `spoof-sa` and must refuse the certificate of `intruder`.
    for (p, app, sa) in [
        (&client, "client", "client"),
        (&web, "web", "web-sa"),
        (&strict, "strict", "strict-sa"),
        (&spoof, "spoof", "intruder"),
    ] {
        let token_file = token(sa);
        let identity = AgentIdentity {
            secure,
            root_cert: &root,
            token_file: &token_file,
            namespace: "default",
            service_account: sa,
            cert_ttl_seconds: None,
        };
        let labels = [("app", app), ("security.istio.io/tlsMode", "istio")];
        sidecars.push(p.start_sidecar_via_agent(&agents, &identity, &labels).await);
    }
    let web_envoy = &sidecars[1].0;
    let strict_envoy = &sidecars[2].0;
    client.set_hosts(&[
        (IpAddr::V4(VIP_WEB), "web web.default.svc.cluster.local"),
        (IpAddr::V4(VIP_STRICT), "strict"),
        (IpAddr::V4(VIP_SPOOF), "spoof"),
        (IpAddr::V4(VIP_LEGACY), "legacy"),
    ]);

    // Sidecar to sidecar: mutual TLS. The server's sidecar saw the client's certificate and
    // says whose it is (x-forwarded-client-cert); the app sees the connection from 127.0.0.6.
    let handshakes_before = web_envoy
        .counter("listener.0.0.0.0_15006.ssl.handshake")
        .await;
    let r = eventually_status("client → web over mTLS", 200, WAIT, || {
        client.http_get_name("web", 80, "/")
    })
    .await;
    assert_eq!(r.header("x-backend"), Some("app-web"), "{r:?}");
    assert!(peer(&r).starts_with("127.0.0.6:"), "{r:?}");
    let seen = r.header("x-seen-headers").unwrap_or("").to_string();
    assert!(
        seen.contains("x-forwarded-client-cert=")
            && seen.contains("URI=spiffe://cluster.local/ns/default/sa/client"),
        "the app should see the client's SPIFFE id: {seen}"
    );
    assert!(
        web_envoy
            .counter("listener.0.0.0.0_15006.ssl.handshake")
            .await
            > handshakes_before,
        "web's sidecar terminated no TLS"
    );

    // PERMISSIVE (namespace): a pod without a sidecar reaches web's app in plaintext.
    let web_app = SocketAddr::new(web.ip(), 8080);
    let r = eventually_status("plain pod → web in plaintext", 200, WAIT, || {
        plain.http_get(web_app, "web", "/")
    })
    .await;
    assert!(
        peer(&r).starts_with("127.0.0.6:"),
        "through web's sidecar: {r:?}"
    );

    // Port level: web's 9090 is STRICT. The sidecar client gets through; plaintext does not.
    let r = eventually_status("client → web's STRICT port over mTLS", 200, WAIT, || {
        client.http_get_name("web", 90, "/")
    })
    .await;
    assert_eq!(r.header("x-backend"), Some("app-web-admin"), "{r:?}");
    let refused = plain.http_get(SocketAddr::new(web.ip(), 9090), "web", "/");
    assert!(
        !ok(&refused),
        "plaintext to a STRICT port got through: {refused:?}"
    );

    // Workload level: strict's pod is STRICT although its namespace is PERMISSIVE.
    eventually_status("client → strict over mTLS", 200, WAIT, || {
        client.http_get_name("strict", 80, "/")
    })
    .await;
    let refused = plain.http_get(SocketAddr::new(strict.ip(), 8080), "strict", "/");
    assert!(
        !ok(&refused),
        "plaintext to a STRICT pod got through: {refused:?}"
    );
    assert!(
        strict_envoy
            .counter("listener.0.0.0.0_15006.no_filter_chain_match")
            .await
            > 0,
        "strict's sidecar should have closed the plaintext connection"
    );
    // A TLS client that presents no certificate (Istio's ALPN, so it lands on the mutual-TLS
    // chain) is reset: no response, and the sidecar counts the missing certificate.
    let no_cert_before = strict_envoy
        .counter("listener.0.0.0.0_15006.ssl.fail_verify_no_cert")
        .await;
    let answer = tls_get_without_certificate(SocketAddr::new(strict.ip(), 8080)).await;
    assert!(
        !answer.as_deref().is_ok_and(|a| a.contains(" 200 ")),
        "a TLS client without a certificate got through: {answer:?}"
    );
    assert!(
        strict_envoy
            .counter("listener.0.0.0.0_15006.ssl.fail_verify_no_cert")
            .await
            > no_cert_before,
        "strict's sidecar should have refused the client for its missing certificate: {answer:?}"
    );

    // A pod without the tlsMode label (and no sidecar): the client's sidecar speaks plaintext
    // to it, straight from the client pod.
    let r = eventually_status("client → legacy in plaintext", 200, WAIT, || {
        client.http_get_name("legacy", 80, "/")
    })
    .await;
    assert_eq!(r.header("x-backend"), Some("app-legacy"), "{r:?}");
    assert!(
        peer(&r).starts_with(&format!("{}:", client.ip())),
        "legacy's app should see the client pod: {r:?}"
    );

    // A certificate of the wrong service account fails the client's SAN check.
    let r = client.http_get_name("spoof", 80, "/");
    match &r {
        Ok(r) => assert_eq!(r.status, 503, "{r:?}"),
        Err(e) => panic!("client → spoof: {e}"),
    }
    // Envoy counts the refused certificate on the client's cluster for spoof.
    let client_envoy = &sidecars[0].0;
    let stats = client_envoy
        .admin_get("/stats?filter=spoof.*ssl.fail_verify_san")
        .await
        .map(|r| r.body)
        .unwrap_or_default();
    let refused: u64 = stats
        .lines()
        .filter_map(|l| l.rsplit_once(": ")?.1.trim().parse::<u64>().ok())
        .sum();
    assert!(refused > 0, "no SAN verification failure counted: {stats}");
    drop(sidecars);
}

/// How often each pod's agent is told its certificate lives: renewed at half of it.
const SHORT_TTL_SECONDS: u64 = 6;
/// What an istio-proxy's `SECRET_TTL` might say for short-lived certificates: two minutes,
/// renewed (as pilot-agent does) after about one.
const TWO_MINUTES: u64 = 120;

/// Two injected pods, `client` and `web` (STRICT: every request that gets through was mutual
/// TLS), each sidecar behind an agent asking for certificates living `ttl_seconds`; ready
/// once client → web answers. Dropping it stops everything.
struct RotatingPair {
    client: Pod,
    /// The client's sidecar, then web's: each Envoy with its agent.
    sidecars: Vec<(support::envoy::Envoy, support::pod_agent::PodAgent)>,
    web: Pod,
    _app: support::pods::PodApp,
    _server: support::server::Meshpilot,
    _dir: tempfile::TempDir,
}

impl RotatingPair {
    async fn start(net: &support::pods::PodNet, ttl_seconds: u64) -> Self {
        let client = net.pod("client");
        let web = net.pod("web");
        for p in [&client, &web] {
            p.capture();
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config");
        std::fs::create_dir(&config).expect("config dir");
        let strict_web = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
                          metadata: {name: web, namespace: default}\n\
                          spec: {selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}}\n";
        let pods = [
            pod(&client, "client", true, "client"),
            pod(&web, "web", true, "web-sa"),
        ]
        .join("---\n");
        support::write_manifests(
            &config,
            &[
                ("services.yaml", &service("web", VIP_WEB, "")),
                ("pods.yaml", &pods),
                ("policies.yaml", strict_web),
            ],
        );
        let issuer = TestIssuer::new(KID);
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, issuer.jwks_json()).expect("jwks");
        let ca_dir = dir.path().join("ca");
        let (server, secure) = serve_with_ca(&config, &ca_dir, &jwks, &[]);
        server.wait_ready(WAIT).await;
        let root = ca_dir.join("root-cert.pem");
        let agents = dir.path().join("pods");
        let app = web.start_http_app(8080, "app-web");
        let mut sidecars = Vec::new();
        for (p, app, sa) in [(&client, "client", "client"), (&web, "web", "web-sa")] {
            let token_file = dir.path().join(format!("token-{sa}"));
            std::fs::write(
                &token_file,
                issuer.service_account_token(KID, ISSUER, "default", sa),
            )
            .expect("token");
            let identity = AgentIdentity {
                secure,
                root_cert: &root,
                token_file: &token_file,
                namespace: "default",
                service_account: sa,
                cert_ttl_seconds: Some(ttl_seconds),
            };
            let labels = [("app", app), ("security.istio.io/tlsMode", "istio")];
            sidecars.push(p.start_sidecar_via_agent(&agents, &identity, &labels).await);
        }
        client.set_hosts(&[(IpAddr::V4(VIP_WEB), "web")]);
        eventually_status("client → web over mTLS", 200, WAIT, || {
            client.http_get_name("web", 80, "/")
        })
        .await;
        Self {
            client,
            sidecars,
            web,
            _app: app,
            _server: server,
            _dir: dir,
        }
    }

    /// How many certificates the agent of sidecar `i` (0 client, 1 web) has been issued.
    fn issued(&self, i: usize) -> usize {
        self.sidecars[i]
            .1
            .logs()
            .matches("workload certificate issued")
            .count()
    }

    /// One request client → web; `Err` says what came back when it was not web's 200.
    fn request(&self) -> Result<support::Response, String> {
        match self.client.http_get_name("web", 80, "/") {
            Ok(r) if r.status == 200 && r.header("x-backend") == Some("app-web") => Ok(r),
            other => Err(format!("{other:?}")),
        }
    }

    /// How many certificates sidecar `i`'s Envoy took over SDS (`default`, its own).
    async fn sds_updates(&self, i: usize) -> u64 {
        let stats = self.sidecars[i]
            .0
            .admin_get("/stats?filter=^sds\\.default\\.")
            .await
            .map(|r| r.body)
            .unwrap_or_default();
        stats
            .lines()
            .filter(|l| l.starts_with("sds.default.update_success:"))
            .filter_map(|l| l.rsplit_once(": ")?.1.trim().parse::<u64>().ok())
            .sum()
    }

    /// The serial numbers of the workload certificates sidecar `i`'s Envoy holds now (its
    /// admin `/certs`: the chains, not the mesh root).
    async fn serving_serials(&self, i: usize) -> std::collections::BTreeSet<String> {
        let body = self.sidecars[i]
            .0
            .admin_get("/certs")
            .await
            .map(|r| r.body)
            .unwrap_or_default();
        let certs: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        certs["certificates"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["cert_chain"].as_array().into_iter().flatten())
            .filter_map(|c| c["serial_number"].as_str().map(str::to_string))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_certificates_rotate_under_steady_traffic_with_no_failed_request() {
    let _envoy_bin = require_envoy!();
    let net = require_pods!();
    let pair = RotatingPair::start(&net, SHORT_TTL_SECONDS).await;

    // Steady traffic for three lifetimes: each side's certificate is replaced about six times
    // (and the first ones expire) while requests keep flowing.
    let issued_before = [pair.issued(0), pair.issued(1)];
    let deadline = std::time::Instant::now() + Duration::from_secs(3 * SHORT_TTL_SECONDS);
    let (mut served, mut failed) = (0usize, Vec::new());
    while std::time::Instant::now() < deadline {
        match pair.request() {
            Ok(_) => served += 1,
            Err(e) => failed.push(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        served + failed.len()
    );
    assert!(
        served >= 20,
        "too little traffic to prove anything: {served}"
    );
    for (i, who) in [(0, "client"), (1, "web")] {
        let renewed = pair.issued(i) - issued_before[i];
        assert!(
            renewed >= 3,
            "{who}'s certificate was renewed {renewed} times: {}",
            pair.sidecars[i].1.logs()
        );
    }
    // web's Envoy took the new certificates (SDS updates of `default`), and later connections
    // were still mutual TLS.
    let updates = pair.sds_updates(1).await;
    assert!(updates >= 3, "web's Envoy took {updates} certificates");
    pair.request().expect("after rotation");
}

/// Named to sort first, so that it starts first: it runs about 70 s, beside the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_living_two_minutes_renew_after_one_under_steady_traffic_with_no_failed_request()
 {
    let _envoy_bin = require_envoy!();
    let net = require_pods!();
    let started = std::time::Instant::now();
    let pair = RotatingPair::start(&net, TWO_MINUTES).await;
    let serials_before = [pair.serving_serials(0).await, pair.serving_serials(1).await];
    for (i, who) in [(0, "client"), (1, "web")] {
        assert!(
            !serials_before[i].is_empty(),
            "{who}'s Envoy holds no certificate"
        );
    }
    // The certificate web's sidecar serves a new connection (the client's sidecar keeps its
    // connections, made with the certificates of their time).
    let web_mtls = SocketAddr::new(pair.web.ip(), 8080);
    let served_before = served_certificate(web_mtls).await;
    pair.request().expect("first request");

    // Steady traffic until both agents renewed (pilot-agent's grace ratio: after 60 s ± 1.2 s)
    // and a few seconds of requests over the new certificates; never beyond 100 s.
    let (mut served, mut failed) = (0usize, Vec::new());
    let mut renewed_at = None;
    let bound = started + Duration::from_secs(100);
    while std::time::Instant::now() < bound {
        match pair.request() {
            Ok(_) => served += 1,
            Err(e) => failed.push(e),
        }
        if renewed_at.is_none() && pair.issued(0) >= 2 && pair.issued(1) >= 2 {
            renewed_at = Some(std::time::Instant::now());
        }
        if renewed_at.is_some_and(|at| at.elapsed() > Duration::from_secs(5)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Some(renewed_after) = renewed_at.map(|at| at - started) else {
        panic!(
            "not both agents renewed within 100 s: client {} / web {} certificates",
            pair.issued(0),
            pair.issued(1)
        );
    };
    // Half the life (59–61 s after issuance, which came after `started`), not sooner.
    assert!(
        renewed_after >= Duration::from_secs(58),
        "renewed after {renewed_after:?}, before half of the {TWO_MINUTES} s life"
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        served + failed.len()
    );
    assert!(
        served >= 100,
        "too little traffic to prove anything: {served}"
    );
    // Each side renewed once, its Envoy took the new certificate and holds it.
    for (i, who) in [(0, "client"), (1, "web")] {
        assert_eq!(
            pair.issued(i),
            2,
            "{who}'s agent should have renewed exactly once: {}",
            pair.sidecars[i].1.logs()
        );
        assert!(
            pair.sds_updates(i).await >= 2,
            "{who}'s Envoy did not take its renewed certificate"
        );
        let now = pair.serving_serials(i).await;
        assert!(
            now.iter().any(|s| !serials_before[i].contains(s)),
            "{who}'s Envoy still serves only the first certificate: {now:?} (was {:?})",
            serials_before[i]
        );
    }
    // A client connecting now is served web's new certificate.
    let served_after = served_certificate(web_mtls).await;
    assert_ne!(
        served_after, served_before,
        "web's sidecar serves the certificate it started with"
    );
}
