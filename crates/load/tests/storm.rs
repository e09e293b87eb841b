//! A connection storm against an in-process server: 2,000 proxies open their ADS streams at
//! the same instant, as they do when a control plane restarts under a large mesh. With the
//! listen backlog sized for storms (`--xds-listen-backlog`, 4096), every stream opens on the
//! first try — none is reset or has to be retried — and every proxy syncs.

use std::time::Duration;

use meshpilot::app::Server;
use meshpilot::config::ServeConfig;
use meshpilot_load::mesh::{Mesh, MeshSpec};
use meshpilot_load::{self as load, LoadConfig};

const PROXIES: usize = 2_000;

/// `TcpExt: ListenOverflows` from /proc/net/netstat: connections the kernel dropped because an
/// accept queue was full (on this host, any listener).
fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?.split_whitespace();
    let values = lines.next()?.split_whitespace();
    names
        .zip(values)
        .find(|(n, _)| *n == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_streams_opened_at_once_all_sync_with_no_reset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = Mesh::new(MeshSpec::plain(20, 5, 5), dir.path());
    mesh.write().expect("write mesh");
    let server = Server::start(ServeConfig::for_dirs(vec![dir.path().to_path_buf()]))
        .await
        .expect("start server");
    let overflows_before = listen_overflows();
    let mut cfg = LoadConfig::new(server.xds_addr, PROXIES);
    cfg.debug_address = Some(server.debug_addr);
    cfg.connect_over = Duration::ZERO;
    cfg.timeout = Duration::from_secs(60);
    let r = load::run(&cfg, None).await.expect("run");
    let overflows_after = listen_overflows();
    let t = r.table();
    eprintln!("{t}");
    eprintln!(
        "listen overflows on this host during the storm: {overflows_before:?} → {overflows_after:?}"
    );
    // The host's overflow counter is printed, not asserted: other tests and processes share
    // it. (With a backlog of 16 instead, this run retried 1,690 of the 2,000 opens.)
    assert!(r.sync.all_complete, "{t}");
    assert_eq!(r.failed_streams, 0, "{t}");
    assert_eq!(
        r.open_retries, 0,
        "a stream was reset or refused as it opened: {t}"
    );
    server.stop().await;
}
