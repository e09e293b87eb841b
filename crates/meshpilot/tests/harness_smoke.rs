//! Proves the test harness itself against a real Envoy with *static* routing (no meshpilot
//! involved) — the only place static routing config is allowed — and checks that the bootstraps
//! meshpilot generates pass `envoy --mode validate`.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Backend, Envoy, assert_only, assert_share, distribution, require_envoy};

fn static_cluster(name: &str, backend: SocketAddr) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": { "socket_address": {
                "address": backend.ip().to_string(), "port_value": backend.port()
            }}}}]}]
        }
    })
}

/// A listener on `listen` routing host `smoke.test`: `/v1-only` to v1, everything else 80/20
/// across v1/v2. Other hosts get 404.
fn static_bootstrap(listen: SocketAddr, v1: SocketAddr, v2: SocketAddr) -> Value {
    json!({
        "node": { "id": "harness-smoke", "cluster": "harness" },
        "static_resources": {
            "listeners": [{
                "name": "smoke",
                "address": { "socket_address": {
                    "address": listen.ip().to_string(), "port_value": listen.port()
                }},
                "filter_chains": [{ "filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "smoke",
                        "route_config": {
                            "name": "smoke-routes",
                            "virtual_hosts": [{
                                "name": "smoke",
                                "domains": ["smoke.test"],
                                "routes": [
                                    { "match": { "path": "/v1-only" }, "route": { "cluster": "v1" } },
                                    { "match": { "prefix": "/" }, "route": { "weighted_clusters": {
                                        "clusters": [
                                            { "name": "v1", "weight": 80 },
                                            { "name": "v2", "weight": 20 }
                                        ]
                                    }}}
                                ]
                            }]
                        },
                        "http_filters": [{
                            "name": "envoy.filters.http.router",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                            }
                        }]
                    }
                }]}]
            }],
            "clusters": [static_cluster("v1", v1), static_cluster("v2", v2)]
        }
    })
}

#[tokio::test]
async fn weighted_split_through_static_envoy() {
    let _bin = require_envoy!();
    let v1 = Backend::start(support::loopback_ip(), 0, "v1");
    let v2 = Backend::start(support::loopback_ip(), 0, "v2");
    assert_ne!(v1.ip(), v2.ip());
    let envoy_ip = support::loopback_ip();
    let listen = support::free_addr(envoy_ip);
    let envoy = Envoy::start(
        static_bootstrap(listen, v1.addr(), v2.addr()),
        support::admin_addr(),
    )
    .await;
    envoy
        .wait_for_listener("smoke", Duration::from_secs(5))
        .await;
    envoy
        .wait_for_route_domain("smoke.test", Duration::from_secs(5))
        .await;

    let started = Instant::now();
    let dist = distribution(listen, "smoke.test", "/anything", &[], 1000).await;
    eprintln!(
        "1000 requests through envoy in {:?}: {dist:?}",
        started.elapsed()
    );
    assert_eq!(dist.values().sum::<usize>(), 1000);
    assert_share(&dist, "v1", 80.0);
    assert_share(&dist, "v2", 20.0);
    assert_eq!(v1.requests() + v2.requests(), 1000);
    assert_eq!(dist.get("v1").copied(), Some(v1.requests()));

    let dist = distribution(listen, "smoke.test", "/v1-only", &[], 50).await;
    assert_only(&dist, "v1");

    // Unknown host: no virtual host matches.
    let (status, _) = support::get(listen, "other.test", "/", &[]).await;
    assert_eq!(status, 404);

    // Backends echo what they saw.
    let r = support::try_get(listen, "smoke.test", "/v1-only?x=1", &[("x-test", "yes")])
        .await
        .expect("request");
    assert_eq!(r.header("x-backend"), Some("v1"));
    assert_eq!(r.header("x-host"), Some("smoke.test"));
    assert_eq!(r.header("x-path"), Some("/v1-only?x=1"));
    let seen = v1.recent().pop().expect("v1 saw a request");
    assert!(
        seen.headers
            .contains(&("x-test".to_string(), "yes".to_string()))
    );

    envoy.assert_all_acked().await;
    let dump = envoy.config_dump().await;
    assert!(support::dump::cluster_names(&dump).contains(&"v2".to_string()));
    assert_eq!(
        envoy.stat("cluster.v1.upstream_rq_2xx").await,
        Some(v1.requests() as u64)
    );
}

#[tokio::test]
async fn backend_and_client_without_envoy() {
    let b = Backend::start(support::loopback_ip(), 0, "direct");
    let dist = distribution(b.addr(), "h", "/", &[], 200).await;
    assert_only(&dist, "direct");
    assert_eq!(dist["direct"], 200);
    assert_eq!(b.requests(), 200);
    let (status, body) = support::get(b.addr(), "h", "/x", &[]).await;
    assert_eq!((status, body.as_str()), (200, "direct"));
    b.reset_requests();
    assert_eq!(b.requests(), 0);
}

#[test]
fn error_states_are_found() {
    let dump = json!({"configs": [{
        "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
        "dynamic_listeners": [
            {"name": "ok", "active_state": {"listener": {"name": "ok"}}},
            {"name": "bad", "error_state": {"details": "nope"}}
        ]
    }]});
    let errors = support::dump::error_states(&dump);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("bad") && errors[0].contains("nope"));
    assert_eq!(support::dump::listener_names(&dump), vec!["ok".to_string()]);
}

#[test]
fn pod_manifest_is_yaml_with_status() {
    let ip = support::loopback_ip();
    let y = support::pod_yaml("p", "default", &[("app", "x")], ip, &[("http", 8080)]);
    assert!(y.contains(&format!("podIP: {ip}")));
    assert!(y.contains("phase: Running"));
    assert!(y.contains("type: Ready"));
    let dir = tempfile::tempdir().expect("tempdir");
    support::write_manifests(dir.path(), &[("pods/p.yaml", &y)]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("pods/p.yaml")).expect("read"),
        y
    );
    assert!(
        support::scenario_dir("01-mvc-canary")
            .join("app.yaml")
            .is_file()
    );
}

/// Every combination of proxy kind and xDS flavour meshpilot renders is a valid bootstrap.
#[test]
fn generated_bootstraps_pass_envoy_validate() {
    let _bin = require_envoy!();
    let ip = support::loopback_ip();
    let xds: SocketAddr = "127.0.0.1:15010".parse().expect("addr");
    for kind in ["sidecar", "router"] {
        for delta in [false, true] {
            let mut args = support::bootstrap_args(
                &support::node_id(kind, ip, "pod-1", "default"),
                xds,
                support::admin_addr(),
            );
            args.delta = delta;
            args.labels = vec![("app".into(), "reviews".into())];
            let b = support::render_bootstrap(&args);
            support::validate(&b).unwrap_or_else(|e| panic!("{kind} delta={delta}: {e}\n{b:#}"));
        }
    }
    // A DNS name for the control plane (STRICT_DNS cluster).
    let mut args = support::bootstrap_args(
        &support::node_id("sidecar", ip, "pod-2", "ns"),
        xds,
        support::admin_addr(),
    );
    args.xds_address = "meshpilot.istio-system.svc:15010".into();
    args.interception = meshpilot::config::InterceptionArg::Redirect;
    support::validate(&support::render_bootstrap(&args)).unwrap_or_else(|e| panic!("{e}"));
}

/// The `meshpilot bootstrap` subcommand prints a bootstrap Envoy accepts, and fails with the
/// node id in the message for a bad one.
#[test]
fn bootstrap_subcommand_output_validates() {
    let _bin = require_envoy!();
    let exe = env!("CARGO_BIN_EXE_meshpilot");
    let out = std::process::Command::new(exe)
        .args([
            "bootstrap",
            "--node-id",
            "router~127.0.0.10~ingress-1.istio-system~istio-system.svc.cluster.local",
            "--label",
            "istio=ingressgateway",
            "--delta",
        ])
        .output()
        .expect("run meshpilot bootstrap");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(b["node"]["metadata"]["LABELS"]["istio"], "ingressgateway");
    support::validate(&b).unwrap_or_else(|e| panic!("{e}"));

    let out = std::process::Command::new(exe)
        .args(["bootstrap", "--node-id", "bogus~id"])
        .output()
        .expect("run meshpilot bootstrap");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus~id"));
}

/// An Envoy on a rendered bootstrap dials the xDS address and speaks HTTP/2 to it (without
/// `http2_protocol_options` on `xds-grpc` it would speak HTTP/1.1 and never initialize).
#[tokio::test]
async fn rendered_bootstrap_dials_xds_over_http2() {
    use tokio::io::AsyncReadExt;
    let _bin = require_envoy!();
    for delta in [false, true] {
        let xds = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let xds_addr = xds.local_addr().expect("addr");
        let ip = support::loopback_ip();
        let admin = support::admin_addr();
        let mut args = support::bootstrap_args(
            &support::node_id("router", ip, "gw", "default"),
            xds_addr,
            admin,
        );
        args.delta = delta;
        let _envoy = Envoy::spawn(support::render_bootstrap(&args), admin);
        let (mut conn, _) = tokio::time::timeout(Duration::from_secs(10), xds.accept())
            .await
            .expect("envoy dials xds-grpc within 10 s")
            .expect("accept");
        let mut preface = [0u8; 24];
        tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut preface))
            .await
            .expect("preface within 5 s")
            .expect("read preface");
        assert_eq!(
            &preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "delta={delta}"
        );
    }
}
