//! The load tool against an in-process server: a W1 smoke run and a short W4 over Delta and
//! SotW (correctness only, no timing assertions), proxies spread over namespaces and zones of a
//! mesh with namespace rules, localities and Sidecars, and the tool's own guarantees — a NACK is
//! counted, and a change that never arrives is reported as not converged.

use std::time::Duration;

use meshpilot::app::Server;
use meshpilot::config::ServeConfig;
use meshpilot_load::mesh::{ChangeKind, Mesh, MeshSpec};
use meshpilot_load::{self as load, ChangePlan, Decode, LoadConfig, NackRule, Protocol, Report};
use meshpilot_snapshot::XdsType;

/// Writes a mesh into a fresh directory and serves it.
async fn start(spec: MeshSpec) -> (tempfile::TempDir, Mesh, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = Mesh::new(spec, dir.path());
    mesh.write().expect("write mesh");
    let server = Server::start(ServeConfig::for_dirs(vec![dir.path().to_path_buf()]))
        .await
        .expect("start server");
    (dir, mesh, server)
}

fn config(server: &Server, proxies: usize) -> LoadConfig {
    let mut cfg = LoadConfig::new(server.xds_addr, proxies);
    cfg.debug_address = Some(server.debug_addr);
    cfg.timeout = Duration::from_secs(20);
    cfg
}

fn assert_clean(r: &Report) {
    let t = r.table();
    assert!(r.sync.all_complete, "{t}");
    assert_eq!(r.nacks_sent, 0, "{t}");
    assert_eq!(r.failed_streams, 0, "{t}");
    assert_eq!(r.undecodable_resources, 0, "{t}");
    assert!(r.ok(), "{t}");
}

/// W1: 100 services × 10 endpoints, 100 proxies; a no-op recompute sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w1_smoke_syncs_and_noop_sends_nothing() {
    let (_dir, mut mesh, server) = start(MeshSpec::plain(100, 10, 10)).await;
    let mut cfg = config(&server, 100);
    cfg.noop = true;
    let r = load::run(&cfg, Some(&mut mesh)).await.expect("run");
    assert_clean(&r);
    let noop = r.noop.as_ref().expect("noop report");
    assert_eq!(noop.recompute_confirmed, Some(true), "{}", r.table());
    assert_eq!(noop.bytes, 0, "{}", r.table());
    server.stop().await;
}

/// A short W4: 100 Delta proxies, a few endpoint changes; every one converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w4_short_every_change_converges() {
    let (_dir, mut mesh, server) = start(MeshSpec::plain(100, 10, 10)).await;
    let mut cfg = config(&server, 100);
    cfg.protocol = Protocol::Delta;
    cfg.changes = Some(ChangePlan {
        kind: ChangeKind::Endpoint,
        count: 6,
        rate: 4.0,
    });
    let r = load::run(&cfg, Some(&mut mesh)).await.expect("run");
    assert_clean(&r);
    let c = r.change.as_ref().expect("change report");
    assert_eq!(
        (c.applied, c.converged, c.missing_acks),
        (6, 6, 0),
        "{}",
        r.table()
    );
    // Each change goes to every proxy in a response of its own or shared with the next: never
    // more responses than changes while they are written.
    assert!(c.pace.responses_per_s > 0.0, "{}", r.table());
    assert!(c.pace.changes_per_response >= 1.0, "{}", r.table());
    assert!(r.table().contains("responses/s"), "{}", r.table());
    server.stop().await;
}

/// The same over SotW, whose endpoint responses carry only the changed assignments: every
/// change converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_endpoint_changes_converge() {
    let (_dir, mut mesh, server) = start(MeshSpec::plain(100, 10, 10)).await;
    let mut cfg = config(&server, 20);
    cfg.protocol = Protocol::Sotw;
    cfg.changes = Some(ChangePlan {
        kind: ChangeKind::Endpoint,
        count: 4,
        rate: 4.0,
    });
    let r = load::run(&cfg, Some(&mut mesh)).await.expect("run");
    assert_clean(&r);
    let c = r.change.as_ref().expect("change report");
    assert_eq!(
        (c.applied, c.converged, c.missing_acks),
        (4, 4, 0),
        "{}",
        r.table()
    );
    server.stop().await;
}

/// `--decode full` against meshpilot serving a mesh with VirtualServices and DestinationRules:
/// every resource of every type decodes as its Envoy type, over SotW and Delta, and the run is
/// clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_decode_of_what_meshpilot_serves_finds_no_failure() {
    let mut spec = MeshSpec::plain(20, 3, 2);
    spec.virtual_services = 10;
    spec.destination_rules = 10;
    let (_dir, _mesh, server) = start(spec).await;
    for protocol in [Protocol::Sotw, Protocol::Delta] {
        let mut cfg = config(&server, 3);
        cfg.protocol = protocol;
        cfg.decode = Decode::Full;
        let r = load::run(&cfg, None).await.expect("run");
        assert_clean(&r);
        assert_eq!(r.decode_failures, 0, "{protocol:?}: {}", r.table());
        // Every proxy decoded at least its clusters, their endpoints, listeners and routes.
        assert!(
            r.fully_decoded_resources >= 3 * 20 * 2,
            "{protocol:?}: {}",
            r.table()
        );
        assert!(r.table().contains("full decode"), "{}", r.table());
    }
    server.stop().await;
}

/// NACKing every EDS (or every RDS) response: the NACKs are counted and the proxies never hold
/// a complete configuration (a NACKed response is not applied), whichever half is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacks_are_counted() {
    let (_dir, _mesh, server) = start(MeshSpec::plain(5, 2, 1)).await;
    for t in [XdsType::Endpoint, XdsType::Route] {
        let mut cfg = config(&server, 3);
        cfg.protocol = Protocol::Sotw;
        cfg.timeout = Duration::from_secs(2);
        cfg.nack = Some(NackRule { t, every: 1 });
        let r = load::run(&cfg, None).await.expect("run");
        assert!(r.nacks_sent >= 3, "{t:?}: {}", r.table());
        assert!(
            !r.sync.all_complete && r.sync.complete == 0,
            "{t:?}: {}",
            r.table()
        );
        assert!(!r.ok());
    }
    server.stop().await;
}

/// A change that never reaches the proxies (the file is never written) is reported as not
/// converged, with every proxy missing, and contributes no latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_update_is_not_converged() {
    let (_dir, mut mesh, server) = start(MeshSpec::plain(5, 2, 1)).await;
    let mut cfg = config(&server, 3);
    cfg.protocol = Protocol::Delta;
    cfg.timeout = Duration::from_secs(2);
    cfg.changes = Some(ChangePlan {
        kind: ChangeKind::Phantom,
        count: 1,
        rate: 1.0,
    });
    let r = load::run(&cfg, Some(&mut mesh)).await.expect("run");
    assert!(r.sync.all_complete, "{}", r.table());
    let c = r.change.as_ref().expect("change report");
    assert_eq!(
        (c.converged, c.not_converged, c.missing_acks),
        (0, 1, 3),
        "{}",
        r.table()
    );
    assert_eq!(c.all_acked_ms.count, 0);
    assert!(!r.ok());
    assert!(r.table().contains("NOT converged 1"), "{}", r.table());
    server.stop().await;
}

/// `GET path` on the debug address, as JSON (the debug server answers HTTP/1.0 on loopback).
async fn debug_json(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).expect("JSON body")
}

/// Proxies spread over three namespaces and three zones sync a mesh with namespace rules,
/// zoned endpoints and a Sidecar per namespace, and the server sees them as nine classes: every
/// (namespace, locality) pair, each locality as `region-R/zone-Z`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_spread_over_namespaces_and_zones_sync_as_distinct_classes() {
    let mut spec = MeshSpec::plain(30, 3, 3);
    spec.endpoint_kind = meshpilot_load::mesh::EndpointKind::Pods;
    spec.namespace_rules = 2;
    spec.localities = 3;
    spec.sidecars = true;
    let (_dir, _mesh, server) = start(spec).await;
    let mut cfg = config(&server, 18);
    cfg.namespaces = 3;
    cfg.localities = 3;
    // The streams stay open a while after the sync, for the server's view of them.
    cfg.hold = Duration::from_secs(3);
    let run = tokio::spawn(async move { load::run(&cfg, None).await });
    let mut classes = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let conns = debug_json(server.debug_addr, "/debug/syncz").await;
        let list = conns.as_array().cloned().unwrap_or_default();
        classes = list
            .iter()
            .map(|c| {
                let class = &c["class"];
                (
                    class["namespace"].as_str().unwrap_or("").to_string(),
                    class["locality"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        if list.len() == 18 && classes.len() == 9 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let want: std::collections::BTreeSet<(String, String)> = (0..9)
        .map(|i| {
            let (region, zone) = meshpilot_load::mesh::zone_locality(i % 3, 3);
            (format!("ns-{}", i / 3), format!("{region}/{zone}"))
        })
        .collect();
    assert_eq!(classes, want);
    let r = run.await.expect("run task").expect("run");
    assert_clean(&r);
    assert!(
        r.table().contains("namespaces 3  localities 3"),
        "{}",
        r.table()
    );
    server.stop().await;
}
