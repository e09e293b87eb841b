//! The load tool against an in-process server: a W1 smoke run and a short W4 over Delta and
//! SotW (correctness only, no timing assertions), and the tool's own guarantees — a NACK is
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
