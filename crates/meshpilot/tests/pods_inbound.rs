//! Sidecars both ways, in pods: network namespaces with istio-init's rules and real Envoys as
//! uid 1337, configured by meshpilot over SotW (pod A) and Delta (pod B). Traffic between them
//! crosses the client's outbound capture (15001) and the server's inbound capture (15006), as
//! in an injected Kubernetes pod; an unmeshed pod reaches a meshed one in plaintext.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use support::eventually_status;
use support::pods::{pod_helper, require_pods};
use support::{Meshpilot, require_envoy};

pod_helper!();

const WAIT: Duration = Duration::from_secs(15);
const VIP_A: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);
const VIP_B: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 12);
const VIP_D: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 14);

fn services() -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: a, namespace: default}}
spec:
  clusterIP: {VIP_A}
  selector: {{app: a}}
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
  - {{name: web, port: 8081, targetPort: 8081}}
---
apiVersion: v1
kind: Service
metadata: {{name: b, namespace: default}}
spec:
  clusterIP: {VIP_B}
  selector: {{app: b}}
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
  - {{name: tcp-greeting, port: 9000, targetPort: 9000}}
---
apiVersion: v1
kind: Service
metadata: {{name: d, namespace: default}}
spec:
  clusterIP: {VIP_D}
  selector: {{app: d}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
# d's app listens on its loopback only: its Sidecar sends port 8080 there.
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: d, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: d}}}}
  ingress:
  - {{port: {{number: 8080, protocol: HTTP, name: http}}, defaultEndpoint: "127.0.0.1:8080"}}
"#
    )
}

/// The request reached `app` from 127.0.0.6: through the server's sidecar, which dials the app
/// from the inbound passthrough address.
fn assert_through_sidecar(r: &support::Response, app: &str) {
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), Some(app), "{r:?}");
    let peer = r.header("x-peer").unwrap_or("");
    assert!(
        peer.starts_with("127.0.0.6:"),
        "app saw {peer:?}, not 127.0.0.6: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_to_pod_through_both_sidecars_and_plaintext_from_an_unmeshed_pod() {
    let _envoy_bin = require_envoy!();
    let net = require_pods!();
    let (a, b, c, d) = (net.pod("a"), net.pod("b"), net.pod("c"), net.pod("d"));
    a.capture();
    b.capture();
    d.capture();

    let dir = tempfile::TempDir::new().expect("temp dir");
    let pods = [
        support::pod_yaml("a", "default", &[("app", "a")], a.ip(), &[]),
        support::pod_yaml("b", "default", &[("app", "b")], b.ip(), &[]),
        support::pod_yaml("c", "default", &[("app", "c")], c.ip(), &[]),
        support::pod_yaml("d", "default", &[("app", "d")], d.ip(), &[]),
    ]
    .join("---\n");
    support::write_manifests(
        dir.path(),
        &[("services.yaml", &services()), ("pods.yaml", &pods)],
    );
    let server = Meshpilot::spawn_at(
        net.host_addr(),
        support::admin_addr(),
        &[dir.path()],
        &[],
        &[],
    );
    server.wait_ready(WAIT).await;

    let _app_a = a.start_http_app(8080, "app-a");
    let _web_a = a.start_http_app(8081, "app-a-web");
    let _app_b = b.start_http_app(8080, "app-b");
    let _greeter_b = b.start_tcp_app(9000, "greeter-b");
    let _undeclared_b = b.start_http_app(7070, "app-b-7070");
    let envoy_a = a.start_sidecar(server.xds(), &[("app", "a")], false).await;
    let envoy_b = b.start_sidecar(server.xds(), &[("app", "b")], true).await;
    let _loopback_d = d.start_loopback_http_app(8080, "app-d-loopback");
    let envoy_d = d.start_sidecar(server.xds(), &[("app", "d")], true).await;
    for (envoy, port) in [(&envoy_a, 8080), (&envoy_b, 8080)] {
        envoy.wait_for_listener("virtualInbound", WAIT).await;
        envoy
            .wait_for_cluster(&format!("inbound|{port}||"), WAIT)
            .await;
    }
    envoy_b.wait_for_cluster("inbound|9000||", WAIT).await;

    // A (SotW) → Service b by VIP, with b's name in Host and with its short name.
    let vip_b = SocketAddr::new(IpAddr::V4(VIP_B), 80);
    for host in ["b.default.svc.cluster.local", "b"] {
        let r = eventually_status(&format!("a → {vip_b} Host {host}"), 200, WAIT, || {
            a.http_get(vip_b, host, "/from-a")
        })
        .await;
        assert_through_sidecar(&r, "app-b");
        assert_eq!(r.header("x-path"), Some("/from-a"));
    }
    // And by a name the pod resolves itself (its /etc/hosts, as cluster DNS would answer).
    a.set_hosts(&[(IpAddr::V4(VIP_B), "b.default.svc.cluster.local")]);
    let r = a
        .http_get_name("b.default.svc.cluster.local", 80, "/by-name")
        .unwrap_or_else(|e| panic!("a → b by name: {e}"));
    assert_through_sidecar(&r, "app-b");
    // It left through A's outbound listener and crossed B's 15006 to B's port 8080 chain.
    assert!(
        envoy_a
            .counter("cluster.outbound|80||b.default.svc.cluster.local.upstream_rq_total")
            .await
            >= 3
    );
    assert!(
        envoy_b
            .counter("listener.0.0.0.0_15006.downstream_cx_total")
            .await
            >= 1
    );
    assert!(
        envoy_b
            .counter("http.inbound_0.0.0.0_8080.downstream_rq_total")
            .await
            >= 3
    );
    assert!(
        envoy_b
            .counter("cluster.inbound|8080||.upstream_rq_total")
            .await
            >= 3
    );

    // B (Delta) → Service a: the other direction, through both sidecars.
    let vip_a = SocketAddr::new(IpAddr::V4(VIP_A), 80);
    let r = eventually_status("b → a", 200, WAIT, || {
        b.http_get(vip_a, "a.default.svc.cluster.local", "/from-b")
    })
    .await;
    assert_through_sidecar(&r, "app-a");
    assert!(
        envoy_a
            .counter("cluster.inbound|8080||.upstream_rq_total")
            .await
            >= 1
    );

    // A port named without a protocol: A's sidecar tells HTTP from TCP (http_inspector) and
    // takes the HTTP chain.
    let r = eventually_status("b → a:8081", 200, WAIT, || {
        b.http_get(
            SocketAddr::new(IpAddr::V4(VIP_A), 8081),
            "a.default.svc.cluster.local",
            "/web",
        )
    })
    .await;
    assert_through_sidecar(&r, "app-a-web");
    assert!(
        envoy_a
            .counter("http.inbound_0.0.0.0_8081.downstream_rq_total")
            .await
            >= 1
    );

    // An unmeshed pod → B's pod IP in plaintext: accepted, and still through B's sidecar.
    let before = envoy_b
        .counter("cluster.inbound|8080||.upstream_rq_total")
        .await;
    let pod_b = SocketAddr::new(b.ip(), 8080);
    let r = c
        .http_get(pod_b, "b.default.svc.cluster.local", "/from-c")
        .unwrap_or_else(|e| panic!("c → {pod_b}: {e}"));
    assert_through_sidecar(&r, "app-b");
    assert_eq!(
        envoy_b
            .counter("cluster.inbound|8080||.upstream_rq_total")
            .await,
        before + 1
    );

    // A TCP Service port (the server speaks first): A → b's VIP:9000 → B's tcp chain.
    let greeting = support::eventually("a → b:9000", WAIT, || async {
        match a.tcp_read(SocketAddr::new(IpAddr::V4(VIP_B), 9000)) {
            Ok(t) if !t.is_empty() => Ok(t),
            Ok(_) => Err("empty reply".to_string()),
            Err(e) => Err(e),
        }
    })
    .await;
    assert!(
        greeting.starts_with("greeter-b 127.0.0.6:"),
        "greeting {greeting:?}"
    );
    assert!(
        envoy_b
            .counter("tcp.inbound|9000||.downstream_cx_total")
            .await
            >= 1
    );

    // A port no Service declares: B's passthrough chain still carries it to the app.
    let r = c
        .http_get(SocketAddr::new(b.ip(), 7070), "x", "/undeclared")
        .unwrap_or_else(|e| panic!("c → b:7070: {e}"));
    assert_through_sidecar(&r, "app-b-7070");
    assert!(
        envoy_b
            .counter("cluster.InboundPassthroughCluster.upstream_rq_total")
            .await
            >= 1
    );

    // A Sidecar's ingress listener with a defaultEndpoint: d's sidecar sends port 8080 to the
    // app on its loopback, from loopback (no 127.0.0.6 bind there, as under istiod).
    envoy_d.wait_for_cluster("inbound|8080||", WAIT).await;
    let r = eventually_status("a → d", 200, WAIT, || {
        a.http_get(
            SocketAddr::new(IpAddr::V4(VIP_D), 80),
            "d.default.svc.cluster.local",
            "/to-loopback",
        )
    })
    .await;
    assert_eq!(r.header("x-backend"), Some("app-d-loopback"), "{r:?}");
    assert!(
        r.header("x-peer")
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{r:?}"
    );
    assert!(
        envoy_d
            .counter("cluster.inbound|8080||.upstream_rq_total")
            .await
            >= 1
    );

    // A connection to 15006 itself meets the loop guard.
    assert!(
        c.http_get(SocketAddr::new(b.ip(), 15006), "x", "/")
            .is_err()
    );
    assert!(
        envoy_b
            .counter("tcp.BlackHoleCluster.downstream_cx_total")
            .await
            >= 1
    );

    envoy_a.assert_all_acked().await;
    envoy_b.assert_all_acked().await;
    envoy_d.assert_all_acked().await;
}
