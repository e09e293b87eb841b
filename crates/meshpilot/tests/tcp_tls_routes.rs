//! VirtualService `tcp` and `tls` routes, served by the real `meshpilot serve` to real Envoy
//! 1.40 proxies on loopback: a gateway's TCP server and TLS PASSTHROUGH server routed by SNI
//! (SotW and Delta), a sidecar's TLS port routed by SNI and TCP port split by weight, and the
//! same kinds of route bound through a wildcard VirtualService host. The
//! TLS backends hold certificates for their own names: a client that completes the handshake
//! and checks the name reached the backend end to end, through proxies that never decrypted.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use meshpilot_ca::CertificateAuthority;
use support::{Envoy, Meshpilot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

const WAIT: Duration = Duration::from_secs(10);
/// The gateway servers of `testdata/l4/gateway.yaml`.
const TCP_PORT: u16 = 31400;
const TLS_PORT: u16 = 8443;

/// Starts an ingress gateway Envoy (labels `istio=ingressgateway`, interception NONE).
async fn ingress(server: &Meshpilot, delta: bool) -> (Envoy, IpAddr) {
    proxy(
        server,
        "router",
        "istio-system",
        ("istio", "ingressgateway"),
        delta,
    )
    .await
}

/// Starts an Envoy of `kind` in `ns` with one label, interception NONE.
async fn proxy(
    server: &Meshpilot,
    kind: &str,
    ns: &str,
    label: (&str, &str),
    delta: bool,
) -> (Envoy, IpAddr) {
    let ip = support::loopback_ip();
    let admin = support::admin_addr();
    let id = support::node_id(
        kind,
        ip,
        &format!("{kind}-{}", ip.to_string().replace('.', "-")),
        ns,
    );
    let mut args = support::bootstrap_args(&id, server.xds(), admin);
    args.labels = vec![(label.0.to_string(), label.1.to_string())];
    args.delta = delta;
    (
        Envoy::start(support::render_bootstrap(&args), admin).await,
        ip,
    )
}

/// A TCP backend on `addr` that writes `name` to each connection and closes it.
async fn greeter(addr: SocketAddr, name: &'static str) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let _ = conn.write_all(name.as_bytes()).await;
        }
    })
}

/// A TLS backend on `addr` with a certificate for `host` from `ca`: after the handshake it
/// writes `host` and closes.
async fn tls_backend(
    ca: &CertificateAuthority,
    addr: SocketAddr,
    host: &'static str,
) -> tokio::task::JoinHandle<()> {
    let acceptor = support::mesh_ca::tls_acceptor(ca, host);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(conn).await {
                    let _ = tls.write_all(host.as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    })
}

/// Reads what the server at `addr` writes before closing.
async fn tcp_read(addr: SocketAddr) -> Result<String, String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut text))
        .await
        .map_err(|_| "read timed out".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    Ok(text)
}

/// Opens TLS to `addr` with SNI `sni`, checking the certificate against `root_pem`; what the
/// server writes before closing.
async fn tls_read(addr: SocketAddr, sni: &str, root_pem: &str) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(c.expect("root")).expect("add root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS to {addr} as {sni}: {e}"))?;
    let mut text = String::new();
    // The backend closes without close_notify at times; what arrived before counts.
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_string(&mut text)).await;
    Ok(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_tcp_server_and_tls_passthrough_by_sni() {
    let _envoy_bin = support::require_envoy!();
    let ca = CertificateAuthority::self_signed("cluster.local").expect("CA");
    let (db_ip, a_ip, b_ip) = (
        support::loopback_ip(),
        support::loopback_ip(),
        support::loopback_ip(),
    );
    let _db = greeter(SocketAddr::new(db_ip, 9000), "db-backend").await;
    let _a = tls_backend(&ca, SocketAddr::new(a_ip, 9443), "a.example.com").await;
    let _b = tls_backend(&ca, SocketAddr::new(b_ip, 9443), "b.example.com").await;

    let manifests = include_str!("testdata/l4/gateway.yaml");
    let pods = [
        support::pod_yaml("db", "default", &[("app", "db")], db_ip, &[]),
        support::pod_yaml("a", "default", &[("app", "a")], a_ip, &[]),
        support::pod_yaml("b", "default", &[("app", "b")], b_ip, &[]),
    ]
    .join("---\n");
    let dir = tempfile::TempDir::new().expect("temp dir");
    support::write_manifests(
        dir.path(),
        &[("edge.yaml", manifests), ("pods.yaml", &pods)],
    );
    let server = Meshpilot::start(&[dir.path()]).await;

    for delta in [false, true] {
        let (envoy, ip) = ingress(&server, delta).await;
        for port in [TCP_PORT, TLS_PORT] {
            envoy.wait_for_listener(&format!("{ip}_{port}"), WAIT).await;
        }
        let tcp = SocketAddr::new(ip, TCP_PORT);
        let got = support::eventually("gateway TCP → db", WAIT, || async {
            tcp_read(tcp).await.and_then(|t| {
                if t == "db-backend" {
                    Ok(t)
                } else {
                    Err(format!("read {t:?}"))
                }
            })
        })
        .await;
        assert_eq!(got, "db-backend");

        let tls = SocketAddr::new(ip, TLS_PORT);
        for host in ["a.example.com", "b.example.com"] {
            let got = support::eventually(&format!("gateway TLS → {host}"), WAIT, || async {
                tls_read(tls, host, ca.root_pem()).await.and_then(|t| {
                    if t == host {
                        Ok(t)
                    } else {
                        Err(format!("read {t:?}"))
                    }
                })
            })
            .await;
            assert_eq!(got, host, "delta={delta}");
        }
        // A name no route has: no chain matches, the gateway closes the connection.
        assert!(
            tls_read(tls, "c.example.com", ca.root_pem()).await.is_err(),
            "an unrouted SNI must not reach a backend"
        );
        assert!(
            envoy
                .stat("cluster.outbound|9443||b.default.svc.cluster.local.upstream_cx_total")
                .await
                .unwrap_or(0)
                >= 1
        );
        envoy.assert_all_acked().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_tls_route_by_sni_and_tcp_route_by_weight() {
    let _envoy_bin = support::require_envoy!();
    let ca = CertificateAuthority::self_signed("cluster.local").expect("CA");
    let ips: Vec<IpAddr> = (0..4).map(|_| support::loopback_ip()).collect();
    let _api = tls_backend(&ca, SocketAddr::new(ips[0], 9443), "api.example.com").await;
    let _v2 = tls_backend(&ca, SocketAddr::new(ips[1], 9443), "v2.api.example.com").await;
    let _one = greeter(SocketAddr::new(ips[2], 9001), "db-one").await;
    let _two = greeter(SocketAddr::new(ips[3], 9002), "db-two").await;
    let service = |name: &str, port: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
             spec:\n  selector: {{app: {name}}}\n  ports: [{port}]\n"
        )
    };
    let manifests = [
        service("api", "{name: tls, port: 9443, targetPort: 9443}"),
        // On a port of its own: without interception, services sharing a port share one
        // listener, and the first one's would be the default.
        service("api-v2", "{name: tls, port: 9444, targetPort: 9443}"),
        service("db", "{name: tcp, port: 9000, targetPort: 9000}"),
        service("db-one", "{name: tcp, port: 9001, targetPort: 9001}"),
        service("db-two", "{name: tcp, port: 9002, targetPort: 9002}"),
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api, v2.api.example.com, api.example.com]
  tls:
  - match: [{port: 9443, sniHosts: [v2.api.example.com]}]
    route: [{destination: {host: api-v2, port: {number: 9444}}}]
  - match: [{port: 9443, sniHosts: [api.example.com]}]
    route: [{destination: {host: api, port: {number: 9443}}}]
"#
        .to_string(),
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: default}
spec:
  hosts: [db]
  tcp:
  - route:
    - {destination: {host: db-one, port: {number: 9001}}, weight: 25}
    - {destination: {host: db-two, port: {number: 9002}}, weight: 75}
"#
        .to_string(),
    ]
    .join("---\n");
    let pods = ["api", "api-v2", "db-one", "db-two"]
        .iter()
        .zip(&ips)
        .map(|(name, ip)| support::pod_yaml(name, "default", &[("app", name)], *ip, &[]))
        .collect::<Vec<_>>()
        .join("---\n");
    let dir = tempfile::TempDir::new().expect("temp dir");
    support::write_manifests(
        dir.path(),
        &[("routes.yaml", &manifests), ("pods.yaml", &pods)],
    );
    let server = Meshpilot::start(&[dir.path()]).await;
    let (envoy, ip) = proxy(&server, "sidecar", "default", ("app", "client"), true).await;
    for port in [9443, 9000] {
        envoy.wait_for_listener(&format!("{ip}_{port}"), WAIT).await;
    }

    // The TLS port: each routed SNI goes to its service. (As istiod, once a `tls` route
    // matches the port there is no chain to the service itself: a name no route has is closed.)
    let tls = SocketAddr::new(ip, 9443);
    for host in ["v2.api.example.com", "api.example.com"] {
        let got = support::eventually(&format!("sidecar TLS → {host}"), WAIT, || async {
            tls_read(tls, host, ca.root_pem()).await.and_then(|t| {
                if t == host {
                    Ok(t)
                } else {
                    Err(format!("read {t:?}"))
                }
            })
        })
        .await;
        assert_eq!(got, host);
    }

    // The TCP port: connections split 25/75.
    let tcp = SocketAddr::new(ip, 9000);
    support::eventually("sidecar TCP → db", WAIT, || async {
        tcp_read(tcp).await.map(|_| ())
    })
    .await;
    let mut one = 0;
    const CONNECTIONS: usize = 400;
    for _ in 0..CONNECTIONS {
        match tcp_read(tcp).await.as_deref() {
            Ok("db-one") => one += 1,
            Ok("db-two") => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let share = one as f64 * 100.0 / CONNECTIONS as f64;
    assert!(
        (15.0..=35.0).contains(&share),
        "db-one got {share}%, want ~25%"
    );
    envoy.assert_all_acked().await;
}

/// A wildcard VirtualService host (`*.default.svc.cluster.local`) binds its `tls` and `tcp`
/// routes to the services it covers, as istiod: the routed SNI on api's port reaches api-v2,
/// another name api itself, and db's port goes to db-two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_tls_and_tcp_routes_of_a_wildcard_host() {
    let _envoy_bin = support::require_envoy!();
    let ca = CertificateAuthority::self_signed("cluster.local").expect("CA");
    let ips: Vec<IpAddr> = (0..3).map(|_| support::loopback_ip()).collect();
    let _api = tls_backend(&ca, SocketAddr::new(ips[0], 9443), "api.example.com").await;
    let _v2 = tls_backend(&ca, SocketAddr::new(ips[1], 9443), "v2.api.example.com").await;
    let _two = greeter(SocketAddr::new(ips[2], 9002), "db-two").await;
    let service = |name: &str, port: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
             spec:\n  selector: {{app: {name}}}\n  ports: [{port}]\n"
        )
    };
    let manifests = [
        service("api", "{name: tls, port: 9443, targetPort: 9443}"),
        service("api-v2", "{name: tls, port: 9444, targetPort: 9443}"),
        service("db", "{name: tcp, port: 9000, targetPort: 9000}"),
        service("db-two", "{name: tcp, port: 9002, targetPort: 9002}"),
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: all-default, namespace: default}
spec:
  hosts: ["*.default.svc.cluster.local", v2.api.example.com, api.example.com]
  tls:
  - match: [{port: 9443, sniHosts: [v2.api.example.com]}]
    route: [{destination: {host: api-v2, port: {number: 9444}}}]
  - match: [{port: 9443, sniHosts: [api.example.com]}]
    route: [{destination: {host: api, port: {number: 9443}}}]
  tcp:
  - match: [{port: 9000}]
    route: [{destination: {host: db-two, port: {number: 9002}}}]
"#
        .to_string(),
    ]
    .join("---\n");
    let pods = ["api", "api-v2", "db-two"]
        .iter()
        .zip(&ips)
        .map(|(name, ip)| support::pod_yaml(name, "default", &[("app", name)], *ip, &[]))
        .collect::<Vec<_>>()
        .join("---\n");
    let dir = tempfile::TempDir::new().expect("temp dir");
    support::write_manifests(
        dir.path(),
        &[("routes.yaml", &manifests), ("pods.yaml", &pods)],
    );
    let server = Meshpilot::start(&[dir.path()]).await;
    let (envoy, ip) = proxy(&server, "sidecar", "default", ("app", "client"), false).await;
    for port in [9443, 9000] {
        envoy.wait_for_listener(&format!("{ip}_{port}"), WAIT).await;
    }

    let tls = SocketAddr::new(ip, 9443);
    for host in ["v2.api.example.com", "api.example.com"] {
        let got = support::eventually(&format!("sidecar TLS → {host}"), WAIT, || async {
            tls_read(tls, host, ca.root_pem()).await.and_then(|t| {
                if t == host {
                    Ok(t)
                } else {
                    Err(format!("read {t:?}"))
                }
            })
        })
        .await;
        assert_eq!(got, host);
    }

    // db has no pod: only the wildcard host's route reaches a backend.
    let tcp = SocketAddr::new(ip, 9000);
    let got = support::eventually("sidecar TCP → db-two", WAIT, || tcp_read(tcp)).await;
    assert_eq!(got, "db-two");
    envoy.assert_all_acked().await;
}
