//! Sidecar outbound traffic as istiod configures it, in pods with istio-init's rules and real
//! Envoys as uid 1337: destinations the registry does not know pass through until a Sidecar
//! sets REGISTRY_ONLY; TCP services that share a port (Kubernetes Services and a ServiceEntry
//! with `addresses`) each reach their own backends through a listener on their VIP; a client
//! that dials one pod of a headless Service reaches that pod.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use support::eventually_status;
use support::pods::{pod_helper, require_pods};
use support::{Meshpilot, require_envoy};

pod_helper!();

const WAIT: Duration = Duration::from_secs(15);
const VIP_B: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 12);
const VIP_DB1: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 21);
const VIP_DB2: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 22);
const VIP_EXT: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 23);

/// Waits until a TCP read of `target` from `pod` gives text starting with `prefix`.
async fn eventually_reads(pod: &support::pods::Pod, target: SocketAddr, prefix: &str) -> String {
    support::eventually(&format!("{} → {target}", pod.name()), WAIT, || async {
        match pod.tcp_read(target) {
            Ok(t) if t.starts_with(prefix) => Ok(t),
            Ok(t) => Err(format!("read {t:?}")),
            Err(e) => Err(e),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_destinations_pass_through_until_registry_only() {
    let _envoy_bin = require_envoy!();
    let net = require_pods!();
    let (a, b, ext) = (net.pod("a"), net.pod("b"), net.pod("ext"));
    a.capture();
    b.capture();

    let dir = tempfile::TempDir::new().expect("temp dir");
    let services = format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: b, namespace: default}}
spec:
  clusterIP: {VIP_B}
  selector: {{app: b}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"#
    );
    // `ext` is in no Service and no Pod list: the registry does not know it.
    let pods = [
        support::pod_yaml("a", "default", &[("app", "a")], a.ip(), &[]),
        support::pod_yaml("b", "default", &[("app", "b")], b.ip(), &[]),
    ]
    .join("---\n");
    support::write_manifests(
        dir.path(),
        &[("services.yaml", &services), ("pods.yaml", &pods)],
    );
    let server = Meshpilot::spawn_at(
        net.host_addr(),
        support::admin_addr(),
        &[dir.path()],
        &[],
        &[],
    );
    server.wait_ready(WAIT).await;

    let _app_b = b.start_http_app(8080, "app-b");
    let _web_ext = ext.start_http_app(80, "external-web");
    let _tcp_ext = ext.start_tcp_app(9100, "external-tcp");
    let envoy_a = a.start_sidecar(server.xds(), &[("app", "a")], false).await;
    let envoy_b = b.start_sidecar(server.xds(), &[("app", "b")], true).await;
    envoy_b.wait_for_listener("virtualInbound", WAIT).await;

    let vip_b = SocketAddr::new(IpAddr::V4(VIP_B), 80);
    let to_b = || a.http_get(vip_b, "b.default.svc.cluster.local", "/mesh");
    let r = eventually_status("a → b", 200, WAIT, to_b).await;
    assert_eq!(r.header("x-backend"), Some("app-b"), "{r:?}");

    // An HTTP host nobody declares, on a port a mesh service uses: istiod's `allow_any`
    // virtual host passes it on to the address the client dialled.
    let ext_web = SocketAddr::new(ext.ip(), 80);
    let to_ext = || a.http_get(ext_web, "external.example.com", "/outside");
    let r = eventually_status("a → external host", 200, WAIT, to_ext).await;
    assert_eq!(r.header("x-backend"), Some("external-web"), "{r:?}");
    assert!(
        envoy_a
            .counter("cluster.PassthroughCluster.upstream_rq_total")
            .await
            >= 1
    );
    // A TCP port no listener claims: virtualOutbound passes it through too.
    let ext_tcp = SocketAddr::new(ext.ip(), 9100);
    eventually_reads(&a, ext_tcp, "external-tcp ").await;

    // A mesh-wide Sidecar that sets only REGISTRY_ONLY: it hides no service (no egress means
    // `*/*`), but unknown hosts get 502 and unknown addresses are dropped.
    support::write_manifests(
        dir.path(),
        &[(
            "sidecar.yaml",
            r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"#,
        )],
    );
    eventually_status("a → external host blocked", 502, WAIT, to_ext).await;
    support::eventually("a → external TCP dropped", WAIT, || async {
        match a.tcp_read(ext_tcp) {
            Ok(t) if !t.is_empty() => Err(format!("still read {t:?}")),
            _ => Ok(()),
        }
    })
    .await;
    assert!(
        envoy_a
            .counter("tcp.BlackHoleCluster.downstream_cx_total")
            .await
            >= 1
    );
    let r = to_b().unwrap_or_else(|e| panic!("a → b after REGISTRY_ONLY: {e}"));
    assert_eq!(r.status, 200, "mesh traffic still flows: {r:?}");
    assert_eq!(r.header("x-backend"), Some("app-b"), "{r:?}");

    envoy_a.assert_all_acked().await;
    envoy_b.assert_all_acked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_services_on_one_port_reach_their_own_backends() {
    let _envoy_bin = require_envoy!();
    let net = require_pods!();
    let (a, db1, db2, ext) = (
        net.pod("a"),
        net.pod("db1"),
        net.pod("db2"),
        net.pod("extdb"),
    );
    a.capture();

    let dir = tempfile::TempDir::new().expect("temp dir");
    let services = format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: db1, namespace: default}}
spec:
  clusterIP: {VIP_DB1}
  selector: {{app: db1}}
  ports: [{{name: tcp-db, port: 9000, targetPort: 9000}}]
---
apiVersion: v1
kind: Service
metadata: {{name: db2, namespace: default}}
spec:
  clusterIP: {VIP_DB2}
  selector: {{app: db2}}
  ports: [{{name: tcp-db, port: 9000, targetPort: 9000}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext-db, namespace: default}}
spec:
  hosts: [db.example.com]
  addresses: [{VIP_EXT}]
  ports: [{{number: 9000, name: tcp-db, protocol: TCP}}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{{address: {ext_ip}}}]
"#,
        ext_ip = ext.ip()
    );
    let pods = [
        support::pod_yaml("a", "default", &[("app", "a")], a.ip(), &[]),
        support::pod_yaml("db1", "default", &[("app", "db1")], db1.ip(), &[]),
        support::pod_yaml("db2", "default", &[("app", "db2")], db2.ip(), &[]),
    ]
    .join("---\n");
    support::write_manifests(
        dir.path(),
        &[("services.yaml", &services), ("pods.yaml", &pods)],
    );
    let server = Meshpilot::spawn_at(
        net.host_addr(),
        support::admin_addr(),
        &[dir.path()],
        &[],
        &[],
    );
    server.wait_ready(WAIT).await;

    let _db1 = db1.start_tcp_app(9000, "db-one");
    let _db2 = db2.start_tcp_app(9000, "db-two");
    let _ext = ext.start_tcp_app(9000, "db-external");
    let envoy_a = a.start_sidecar(server.xds(), &[("app", "a")], true).await;
    for vip in [VIP_DB1, VIP_DB2, VIP_EXT] {
        envoy_a
            .wait_for_listener(&format!("{vip}_9000"), WAIT)
            .await;
    }

    for (vip, backend, cluster) in [
        (
            VIP_DB1,
            "db-one ",
            "outbound|9000||db1.default.svc.cluster.local",
        ),
        (
            VIP_DB2,
            "db-two ",
            "outbound|9000||db2.default.svc.cluster.local",
        ),
        (VIP_EXT, "db-external ", "outbound|9000||db.example.com"),
    ] {
        let target = SocketAddr::new(IpAddr::V4(vip), 9000);
        eventually_reads(&a, target, backend).await;
        assert!(
            envoy_a
                .counter(&format!("cluster.{cluster}.upstream_cx_total"))
                .await
                >= 1,
            "{cluster}"
        );
    }
    envoy_a.assert_all_acked().await;
}

/// A headless Service (`clusterIP: None`): a client that got a pod's address (from DNS) and
/// dials it reaches that pod, on the TCP port through the pod's own listener and on the HTTP
/// port through the service's route, both to the ORIGINAL_DST cluster. Under REGISTRY_ONLY, so
/// that the catch-all pass-through cannot be what carries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headless_service_reaches_the_pod_dialed() {
    let _envoy_bin = require_envoy!();
    let net = require_pods!();
    let (a, db0, db1) = (net.pod("a"), net.pod("db0"), net.pod("db1"));
    a.capture();

    let dir = tempfile::TempDir::new().expect("temp dir");
    let services = r#"apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  clusterIP: None
  selector: {app: db}
  ports:
  - {name: tcp-db, port: 9000, targetPort: 9000}
  - {name: http-web, port: 8080, targetPort: 8080}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"#;
    let pods = [
        support::pod_yaml("a", "default", &[("app", "a")], a.ip(), &[]),
        support::pod_yaml("db-0", "default", &[("app", "db")], db0.ip(), &[]),
        support::pod_yaml("db-1", "default", &[("app", "db")], db1.ip(), &[]),
    ]
    .join("---\n");
    support::write_manifests(
        dir.path(),
        &[("services.yaml", services), ("pods.yaml", &pods)],
    );
    let server = Meshpilot::spawn_at(
        net.host_addr(),
        support::admin_addr(),
        &[dir.path()],
        &[],
        &[],
    );
    server.wait_ready(WAIT).await;

    let _tcp0 = db0.start_tcp_app(9000, "db-zero");
    let _tcp1 = db1.start_tcp_app(9000, "db-one");
    let _web0 = db0.start_http_app(8080, "web-zero");
    let _web1 = db1.start_http_app(8080, "web-one");
    let envoy_a = a.start_sidecar(server.xds(), &[("app", "a")], true).await;
    for pod in [&db0, &db1] {
        envoy_a
            .wait_for_listener(&format!("{}_9000", pod.ip()), WAIT)
            .await;
    }

    for (pod, tcp, web) in [(&db0, "db-zero ", "web-zero"), (&db1, "db-one ", "web-one")] {
        // Each pod, dialed by its address, answers itself, several times over.
        for _ in 0..3 {
            eventually_reads(&a, SocketAddr::new(pod.ip(), 9000), tcp).await;
            let target = SocketAddr::new(pod.ip(), 8080);
            let get = || a.http_get(target, "db.default.svc.cluster.local", "/pod");
            let r = eventually_status("a → db pod over HTTP", 200, WAIT, get).await;
            assert_eq!(r.header("x-backend"), Some(web), "{r:?}");
        }
    }
    for cluster in [
        "outbound|9000||db.default.svc.cluster.local",
        "outbound|8080||db.default.svc.cluster.local",
    ] {
        assert!(
            envoy_a
                .counter(&format!("cluster.{cluster}.upstream_cx_total"))
                .await
                >= 2,
            "{cluster}"
        );
    }
    envoy_a.assert_all_acked().await;
}
