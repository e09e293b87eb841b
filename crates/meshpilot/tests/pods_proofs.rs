//! What a user checks first after switching a mesh to meshpilot, in pods with istio-init's
//! rules and real Envoys as uid 1337 (clients over SotW and Delta): a VirtualService's weights
//! hold over hundreds of requests through both sidecars; ports with no name are told apart by
//! what the client sends (HTTP, or a binary line carried as TCP); gRPC crosses both sidecars
//! over HTTP/2; a deleted Pod leaves the clients' endpoints within two seconds; and no Envoy
//! rejected any of it.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use support::pods::{Pod, pod_helper, require_pods};
use support::{Envoy, Meshpilot, require_envoy};

pod_helper!();

const WAIT: Duration = Duration::from_secs(15);
const VIP_WEB: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 31);
const VIP_RAW_HTTP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 32);
const VIP_RAW_LINE: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 33);
const VIP_GREETER: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 34);
/// Requests per client for the weighted split.
const SPLIT_REQUESTS: usize = 500;
/// How soon a deleted Pod must leave every client's endpoints.
const ENDPOINT_REMOVAL: Duration = Duration::from_secs(2);
const WEB_CLUSTER: &str = "outbound|80||web.default.svc.cluster.local";
/// Starts with bytes no HTTP request starts with.
const BINARY_LINE: &str = "\u{1}\u{2}mesh binary hello\n";

/// `web` split 80/20 between its v1 and v2 pods; two single-port Services with unnamed ports
/// (protocol unknown: sniffed) and a gRPC Service on the `raw` pod.
fn config() -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  clusterIP: {VIP_WEB}
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: raw-http, namespace: default}}
spec:
  clusterIP: {VIP_RAW_HTTP}
  selector: {{app: raw}}
  ports: [{{port: 7000, targetPort: 7000}}]
---
apiVersion: v1
kind: Service
metadata: {{name: raw-line, namespace: default}}
spec:
  clusterIP: {VIP_RAW_LINE}
  selector: {{app: raw}}
  ports: [{{port: 7001, targetPort: 7001}}]
---
apiVersion: v1
kind: Service
metadata: {{name: greeter, namespace: default}}
spec:
  clusterIP: {VIP_GREETER}
  selector: {{app: raw}}
  ports: [{{name: grpc, port: 9090, targetPort: 9090}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web, namespace: default}}
spec:
  host: web
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web]
  http:
  - route:
    - {{destination: {{host: web, subset: v1}}, weight: 80}}
    - {{destination: {{host: web, subset: v2}}, weight: 20}}
"#
    )
}

/// Envoy's `/clusters` text: one line per endpoint, `CLUSTER::IP:PORT::…`.
async fn clusters_text(envoy: &Envoy) -> String {
    match envoy.admin_get("/clusters").await {
        Ok(r) if r.status == 200 => r.body,
        Ok(r) => panic!("/clusters from {}: HTTP {}", envoy.admin(), r.status),
        Err(e) => panic!("/clusters from {}: {e:#}", envoy.admin()),
    }
}

/// True when `envoy` lists `ip:port` among the endpoints of `cluster`.
async fn has_endpoint(envoy: &Envoy, cluster: &str, ip: IpAddr, port: u16) -> bool {
    clusters_text(envoy)
        .await
        .contains(&format!("{cluster}::{ip}:{port}::"))
}

/// Waits until one request from `pod` through its sidecar to `target` answers 200.
async fn first_ok(pod: &Pod, target: SocketAddr, host: &str) -> support::Response {
    support::eventually(&format!("{} → {target}", pod.name()), WAIT, || async {
        match pod.http_get(target, host, "/first") {
            Ok(r) if r.status == 200 => Ok(r),
            Ok(r) => Err(format!("HTTP {} {:?}", r.status, r.headers)),
            Err(e) => Err(e),
        }
    })
    .await
}

fn assert_from_inbound_passthrough(r: &support::Response, app: &str) {
    assert_eq!(r.header("x-backend"), Some(app), "{r:?}");
    let peer = r.header("x-peer").unwrap_or("");
    assert!(peer.starts_with("127.0.0.6:"), "app saw {peer:?}: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_unnamed_ports_deleted_pods_and_no_rejected_config() {
    let _envoy_bin = require_envoy!();
    let net = require_pods!();
    let (a, c) = (net.pod("a"), net.pod("c"));
    let (w1, w2, raw) = (net.pod("w1"), net.pod("w2"), net.pod("raw"));
    for p in [&a, &c, &w1, &w2, &raw] {
        p.capture();
    }
    let pod_list = |with_w2: bool| {
        let mut pods = vec![
            support::pod_yaml("a", "default", &[("app", "a")], a.ip(), &[]),
            support::pod_yaml("c", "default", &[("app", "c")], c.ip(), &[]),
            support::pod_yaml(
                "w1",
                "default",
                &[("app", "web"), ("version", "v1")],
                w1.ip(),
                &[],
            ),
            support::pod_yaml("raw", "default", &[("app", "raw")], raw.ip(), &[]),
        ];
        if with_w2 {
            pods.push(support::pod_yaml(
                "w2",
                "default",
                &[("app", "web"), ("version", "v2")],
                w2.ip(),
                &[],
            ));
        }
        pods.join("---\n")
    };
    let dir = tempfile::TempDir::new().expect("temp dir");
    support::write_manifests(
        dir.path(),
        &[("config.yaml", &config()), ("pods.yaml", &pod_list(true))],
    );
    let server = Meshpilot::spawn_at(
        net.host_addr(),
        support::admin_addr(),
        &[dir.path()],
        &[],
        &[],
    );
    server.wait_ready(WAIT).await;

    let _app_w1 = w1.start_http_app(8080, "app-w1");
    let _app_w2 = w2.start_http_app(8080, "app-w2");
    let _raw_http = raw.start_http_app(7000, "app-raw-http");
    let _raw_line = raw.start_line_echo_app(7001, "app-raw-line");
    let _grpc = raw.start_grpc_app(9090, "app-grpc");
    let envoy_a = a.start_sidecar(server.xds(), &[("app", "a")], false).await;
    let envoy_c = c.start_sidecar(server.xds(), &[("app", "c")], true).await;
    let envoy_w1 = w1
        .start_sidecar(server.xds(), &[("app", "web"), ("version", "v1")], true)
        .await;
    let envoy_w2 = w2
        .start_sidecar(server.xds(), &[("app", "web"), ("version", "v2")], false)
        .await;
    let envoy_raw = raw
        .start_sidecar(server.xds(), &[("app", "raw")], true)
        .await;
    for envoy in [&envoy_w1, &envoy_w2] {
        envoy.wait_for_cluster("inbound|8080||", WAIT).await;
    }
    envoy_raw.wait_for_cluster("inbound|7001||", WAIT).await;
    envoy_raw.wait_for_cluster("inbound|9090||", WAIT).await;
    let clients = [(&a, &envoy_a, "SotW"), (&c, &envoy_c, "Delta")];

    // The 80/20 split holds over SPLIT_REQUESTS requests from each client, through both
    // sidecars: the client's picks the subset, the server's carries it to its app.
    let web = SocketAddr::new(IpAddr::V4(VIP_WEB), 80);
    for (pod, envoy, mode) in clients {
        let r = first_ok(pod, web, "web.default.svc.cluster.local").await;
        assert!(
            r.header("x-backend")
                .is_some_and(|b| b.starts_with("app-w"))
        );
        let served = (
            envoy_w1
                .counter("cluster.inbound|8080||.upstream_rq_total")
                .await,
            envoy_w2
                .counter("cluster.inbound|8080||.upstream_rq_total")
                .await,
        );
        let dist = pod
            .http_distribution(
                web,
                "web.default.svc.cluster.local",
                "/split",
                SPLIT_REQUESTS,
            )
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        eprintln!("{mode}: {SPLIT_REQUESTS} requests to web: {dist:?}");
        assert_eq!(
            dist.values().sum::<usize>(),
            SPLIT_REQUESTS,
            "{mode}: {dist:?}"
        );
        assert!(
            dist.keys().all(|k| k == "app-w1" || k == "app-w2"),
            "{mode}: answers other than the two subsets: {dist:?}"
        );
        support::assert_share(&dist, "app-w1", 80.0);
        support::assert_share(&dist, "app-w2", 20.0);
        assert!(
            envoy
                .counter("cluster.outbound|80|v1|web.default.svc.cluster.local.upstream_rq_total")
                .await
                >= dist["app-w1"] as u64,
            "{mode}"
        );
        // Each answer crossed the server pod's sidecar.
        assert!(
            envoy_w1
                .counter("cluster.inbound|8080||.upstream_rq_total")
                .await
                >= served.0 + dist["app-w1"] as u64,
            "{mode}"
        );
        assert!(
            envoy_w2
                .counter("cluster.inbound|8080||.upstream_rq_total")
                .await
                >= served.1 + dist["app-w2"] as u64,
            "{mode}"
        );
    }

    // Ports with no name: the client's sidecar sniffs each connection. HTTP takes the HTTP
    // chain to raw-http; a binary line is carried as TCP to raw-line's app, byte for byte.
    for (pod, envoy, mode) in clients {
        let r = first_ok(
            pod,
            SocketAddr::new(IpAddr::V4(VIP_RAW_HTTP), 7000),
            "raw-http.default.svc.cluster.local",
        )
        .await;
        assert_from_inbound_passthrough(&r, "app-raw-http");
        assert!(
            envoy
                .counter("http.outbound_0.0.0.0_7000.downstream_rq_total")
                .await
                >= 1,
            "{mode}: the request did not take the client's HTTP chain"
        );

        let line = SocketAddr::new(IpAddr::V4(VIP_RAW_LINE), 7001);
        let reply = support::eventually(&format!("{mode}: binary line → {line}"), WAIT, || async {
            match pod.tcp_send_line(line, BINARY_LINE) {
                Ok(t) if !t.is_empty() => Ok(t),
                Ok(_) => Err("empty reply".to_string()),
                Err(e) => Err(e),
            }
        })
        .await;
        assert!(
            reply.starts_with("app-raw-line 127.0.0.6:") && reply.ends_with(BINARY_LINE),
            "{mode}: reply {reply:?}"
        );
        assert!(
            envoy
                .counter(
                    "tcp.outbound|7001||raw-line.default.svc.cluster.local.downstream_cx_total"
                )
                .await
                >= 1,
            "{mode}: the line did not take the client's TCP chain"
        );
    }
    assert!(
        envoy_raw
            .counter("http.inbound_0.0.0.0_7000.downstream_rq_total")
            .await
            >= 2
    );
    assert!(
        envoy_raw
            .counter("tcp.inbound|7001||.downstream_cx_total")
            .await
            >= 2
    );

    // gRPC on a `grpc` port: cleartext HTTP/2 from the app through both sidecars, which speak
    // HTTP/2 upstream (the app speaks nothing else, and its trailers arrive).
    let greeter = SocketAddr::new(IpAddr::V4(VIP_GREETER), 9090);
    for (pod, envoy, mode) in clients {
        let reply = support::eventually(&format!("{mode}: gRPC → {greeter}"), WAIT, || async {
            match pod.grpc_call(
                greeter,
                "greeter.default.svc.cluster.local:9090",
                "/greet.Greeter/Hello",
                mode,
            ) {
                Ok(r) if r.status == 200 => Ok(r),
                Ok(r) => Err(format!("{r:?}")),
                Err(e) => Err(e),
            }
        })
        .await;
        assert_eq!(reply.grpc_status, "0", "{mode}: {reply:?}");
        assert!(
            reply.message.starts_with("app-grpc 127.0.0.6:")
                && reply
                    .message
                    .ends_with(&format!(" /greet.Greeter/Hello {mode}")),
            "{mode}: {reply:?}"
        );
        assert!(
            envoy.counter("cluster.outbound|9090||greeter.default.svc.cluster.local.upstream_cx_http2_total"
            )
            .await
                >= 1,
            "{mode}: the client's sidecar did not speak HTTP/2 upstream"
        );
    }
    assert!(
        envoy_raw
            .counter("cluster.inbound|9090||.upstream_cx_http2_total")
            .await
            >= 1
    );

    // Deleting Pod w2 takes its address out of both clients' endpoints within two seconds;
    // w1's stays.
    for (_, envoy, mode) in clients {
        assert!(
            has_endpoint(envoy, WEB_CLUSTER, w2.ip(), 8080).await,
            "{mode}: w2 is not an endpoint before the deletion"
        );
    }
    let deleted = Instant::now();
    support::write_manifests(dir.path(), &[("pods.yaml", &pod_list(false))]);
    for (_, envoy, mode) in clients {
        while has_endpoint(envoy, WEB_CLUSTER, w2.ip(), 8080).await {
            assert!(
                deleted.elapsed() < ENDPOINT_REMOVAL,
                "{mode}: the deleted pod's endpoint is still listed after {:?}",
                deleted.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            has_endpoint(envoy, WEB_CLUSTER, w1.ip(), 8080).await,
            "{mode}"
        );
    }
    let removal = deleted.elapsed();
    eprintln!("deleted pod left both clients' endpoints after {removal:?}");
    assert!(removal < ENDPOINT_REMOVAL, "took {removal:?}");

    // No Envoy rejected anything it was sent (no `error_state` in its config dump).
    for envoy in [&envoy_a, &envoy_c, &envoy_w1, &envoy_w2, &envoy_raw] {
        envoy.assert_all_acked().await;
    }
}
