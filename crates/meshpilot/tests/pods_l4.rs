//! Layer-4 routing in pods, with real Envoys configured by meshpilot: a sidecar behind
//! istio-init's rules routes TLS by SNI with a VirtualService `tls` route, and an ingress
//! gateway pod serves a Gateway TCP server and a TLS PASSTHROUGH server to a client pod. The
//! TLS apps hold certificates for their own names and the clients verify them, so a reply
//! proves the connection reached that app through proxies that never decrypted.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use meshpilot_ca::CertificateAuthority;
use support::pods::{Pod, PodApp, pod_helper, require_pods};
use support::{Envoy, Meshpilot, require_envoy};

pod_helper!();

const WAIT: Duration = Duration::from_secs(15);
const VIP_WEB: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 31);
const VIP_WEB_X: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 32);
const VIP_WEB_Y: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 33);
/// The gateway servers of `testdata/l4/gateway.yaml`.
const GATEWAY_TCP_PORT: u16 = 31400;
const GATEWAY_TLS_PORT: u16 = 8443;

/// A TLS app in `pod` on `port` with a certificate for `host` from `ca`.
fn tls_app(pod: &Pod, ca: &CertificateAuthority, port: u16, name: &str, host: &str) -> PodApp {
    let cert = ca
        .sign_server(&[host.to_string()], Duration::from_secs(3600))
        .expect("server certificate");
    pod.start_tls_app(port, name, &cert.chain_pem, &cert.key_pem)
}

/// Waits until TLS from `pod` to `target` with SNI `sni` verifies and the app's reply starts
/// with `prefix`; the reply.
async fn eventually_tls(
    pod: &Pod,
    target: SocketAddr,
    sni: &str,
    root_pem: &str,
    prefix: &str,
) -> String {
    let what = format!("{} → {target} as {sni}", pod.name());
    support::eventually(&what, WAIT, || async {
        match pod.tls_read(target, sni, root_pem) {
            Ok(t) if t.starts_with(prefix) => Ok(t),
            Ok(t) => Err(format!("read {t:?}")),
            Err(e) => Err(e),
        }
    })
    .await
}

async fn connections(envoy: &Envoy, cluster: &str) -> u64 {
    envoy
        .stat(&format!("cluster.{cluster}.upstream_cx_total"))
        .await
        .unwrap_or(0)
}

/// Opens TLS with an SNI no route names and checks that it fails and that no connection went
/// to any of `clusters`.
async fn assert_unrouted_sni_gets_nothing(
    pod: &Pod,
    envoy: &Envoy,
    target: SocketAddr,
    root_pem: &str,
    clusters: &[&str],
) {
    let mut before = Vec::new();
    for c in clusters {
        before.push(connections(envoy, c).await);
    }
    let got = pod.tls_read(target, "z.example.com", root_pem);
    assert!(got.is_err(), "an unrouted SNI must reach no app: {got:?}");
    for (c, n) in clusters.iter().zip(before) {
        assert_eq!(connections(envoy, c).await, n, "{c} got a connection");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_routes_tls_by_sni_to_the_app_holding_the_name() {
    let _envoy_bin = require_envoy!();
    let net = require_pods!();
    let (a, x, y) = (net.pod("a"), net.pod("web-x"), net.pod("web-y"));
    a.capture();
    let ca = CertificateAuthority::self_signed("cluster.local").expect("CA");

    // Clients dial `web`'s one port; the VirtualService sends each name to its own app. `web`
    // itself selects no pod, so a name no route has reaches nobody.
    let service = |name: &str, vip: Ipv4Addr| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
             spec:\n  clusterIP: {vip}\n  selector: {{app: {name}}}\n  \
             ports: [{{name: tls, port: 443, targetPort: 8443}}]\n"
        )
    };
    let manifests = [
        service("web", VIP_WEB),
        service("web-x", VIP_WEB_X),
        service("web-y", VIP_WEB_Y),
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web, x.example.com, y.example.com]
  tls:
  - match: [{port: 443, sniHosts: [x.example.com]}]
    route: [{destination: {host: web-x, port: {number: 443}}}]
  - match: [{port: 443, sniHosts: [y.example.com]}]
    route: [{destination: {host: web-y, port: {number: 443}}}]
"#
        .to_string(),
    ]
    .join("---\n");
    let pods = [
        support::pod_yaml("a", "default", &[("app", "a")], a.ip(), &[]),
        support::pod_yaml("web-x", "default", &[("app", "web-x")], x.ip(), &[]),
        support::pod_yaml("web-y", "default", &[("app", "web-y")], y.ip(), &[]),
    ]
    .join("---\n");
    let dir = tempfile::TempDir::new().expect("temp dir");
    support::write_manifests(
        dir.path(),
        &[("web.yaml", &manifests), ("pods.yaml", &pods)],
    );
    let server = Meshpilot::spawn_at(
        net.host_addr(),
        support::admin_addr(),
        &[dir.path()],
        &[],
        &[],
    );
    server.wait_ready(WAIT).await;

    let _app_x = tls_app(&x, &ca, 8443, "app-x", "x.example.com");
    let _app_y = tls_app(&y, &ca, 8443, "app-y", "y.example.com");
    // One sidecar at a time (they share the pod's admin port): SotW, then Delta.
    for delta in [false, true] {
        let envoy_a = a.start_sidecar(server.xds(), &[("app", "a")], delta).await;
        envoy_a
            .wait_for_listener(&format!("{VIP_WEB}_443"), WAIT)
            .await;

        let web = SocketAddr::new(IpAddr::V4(VIP_WEB), 443);
        let cluster_x = "outbound|443||web-x.default.svc.cluster.local";
        let cluster_y = "outbound|443||web-y.default.svc.cluster.local";
        for (sni, app, cluster) in [
            ("x.example.com", "app-x ", cluster_x),
            ("y.example.com", "app-y ", cluster_y),
        ] {
            let reply = eventually_tls(&a, web, sni, ca.root_pem(), app).await;
            // The app saw the connection come from pod A: its sidecar sent it on.
            assert!(
                reply.contains(&format!(" {}:", a.ip())),
                "{sni} (delta={delta}): {reply:?} is not from pod A"
            );
            assert!(connections(&envoy_a, cluster).await >= 1, "{cluster}");
        }
        let clusters = [cluster_x, cluster_y];
        assert_unrouted_sni_gets_nothing(&a, &envoy_a, web, ca.root_pem(), &clusters).await;
        envoy_a.assert_all_acked().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_pod_serves_tcp_and_tls_passthrough_to_backend_pods() {
    let _envoy_bin = require_envoy!();
    let net = require_pods!();
    let (gw, client, db, app_a, app_b) = (
        net.pod("gw"),
        net.pod("client"),
        net.pod("db"),
        net.pod("app-a"),
        net.pod("app-b"),
    );
    let ca = CertificateAuthority::self_signed("cluster.local").expect("CA");

    let manifests = include_str!("testdata/l4/gateway.yaml");
    let pods = [
        support::pod_yaml("db", "default", &[("app", "db")], db.ip(), &[]),
        support::pod_yaml("app-a", "default", &[("app", "a")], app_a.ip(), &[]),
        support::pod_yaml("app-b", "default", &[("app", "b")], app_b.ip(), &[]),
    ]
    .join("---\n");
    let dir = tempfile::TempDir::new().expect("temp dir");
    support::write_manifests(
        dir.path(),
        &[("edge.yaml", manifests), ("pods.yaml", &pods)],
    );
    let server = Meshpilot::spawn_at(
        net.host_addr(),
        support::admin_addr(),
        &[dir.path()],
        &[],
        &[],
    );
    server.wait_ready(WAIT).await;

    let _db = db.start_tcp_app(9000, "db-backend");
    let _a = tls_app(&app_a, &ca, 9443, "app-a", "a.example.com");
    let _b = tls_app(&app_b, &ca, 9443, "app-b", "b.example.com");
    for delta in [false, true] {
        let envoy = gw
            .start_gateway(server.xds(), &[("istio", "ingressgateway")], delta)
            .await;
        through_gateway(&gw, &client, &envoy, &ca).await;
    }
}

/// Through gateway `envoy` in pod `gw`, from `client`: TCP bytes reach the db pod, TLS by SNI
/// reaches the pod holding that name, an unrouted SNI reaches no pod, nothing was rejected.
async fn through_gateway(gw: &Pod, client: &Pod, envoy: &Envoy, ca: &CertificateAuthority) {
    for port in [GATEWAY_TCP_PORT, GATEWAY_TLS_PORT] {
        envoy
            .wait_for_listener(&format!("{}_{port}", gw.ip()), WAIT)
            .await;
    }

    // TCP: the bytes the db pod writes reach the client, sent on by the gateway pod.
    let tcp = SocketAddr::new(gw.ip(), GATEWAY_TCP_PORT);
    let got = support::eventually("client → gateway TCP → db", WAIT, || async {
        match client.tcp_read(tcp) {
            Ok(t) if t.starts_with("db-backend ") => Ok(t),
            Ok(t) => Err(format!("read {t:?}")),
            Err(e) => Err(e),
        }
    })
    .await;
    assert!(
        got.contains(&format!(" {}:", gw.ip())),
        "db saw {got:?}, not the gateway pod"
    );

    // TLS PASSTHROUGH: each name reaches the pod holding its certificate.
    let tls = SocketAddr::new(gw.ip(), GATEWAY_TLS_PORT);
    let cluster_a = "outbound|9443||a.default.svc.cluster.local";
    let cluster_b = "outbound|9443||b.default.svc.cluster.local";
    for (sni, app, cluster) in [
        ("a.example.com", "app-a ", cluster_a),
        ("b.example.com", "app-b ", cluster_b),
    ] {
        let reply = eventually_tls(client, tls, sni, ca.root_pem(), app).await;
        assert!(
            reply.contains(&format!(" {}:", gw.ip())),
            "{sni}: {reply:?} not via the gateway pod"
        );
        assert!(connections(envoy, cluster).await >= 1, "{cluster}");
    }
    assert_unrouted_sni_gets_nothing(client, envoy, tls, ca.root_pem(), &[cluster_a, cluster_b])
        .await;
    envoy.assert_all_acked().await;
}
