//! The debounce as an operator sees it in `/debug/pushz`: with a long `--debounce-ms`, a single
//! file edit after a quiet period is pushed at once, while with `--debounce-leading=false` the
//! same edit waits the whole debounce (istiod's timing).
//!
//! The debounce is set long (5 s) so the difference is stark: nothing here depends on how fast
//! this machine is, only on a push arriving well inside five seconds rather than after them.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Meshpilot;
use tempfile::TempDir;

const DEBOUNCE: Duration = Duration::from_secs(5);

/// A Service `web` with one HTTP port.
fn web_service(port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\n\
         spec:\n  ports:\n  - name: http\n    port: {port}\n"
    )
}

/// Starts a server on `dir` with the long debounce and `leading` as given, and waits for it to
/// be ready.
async fn start(dir: &Path, leading: &str) -> Meshpilot {
    let debounce_ms = DEBOUNCE.as_millis().to_string();
    let max_ms = (2 * DEBOUNCE).as_millis().to_string();
    let server = Meshpilot::spawn(
        &[dir],
        &[
            "--debounce-ms",
            &debounce_ms,
            "--debounce-max-ms",
            &max_ms,
            "--debounce-leading",
            leading,
        ],
    );
    server
        .wait_ready(support::server::SERVER_READY_TIMEOUT)
        .await;
    server
}

/// The number of recomputes `/debug/pushz` reports.
async fn pushes(server: &Meshpilot) -> Result<u64, String> {
    let r = server
        .debug_get("/debug/pushz")
        .await
        .map_err(|e| format!("{e:#}"))?;
    let body: Value = serde_json::from_str(&r.body).map_err(|e| format!("{e}: {}", r.body))?;
    body["pushes"]
        .as_u64()
        .ok_or_else(|| format!("no pushes in {}", r.body))
}

async fn wait_for_pushes(server: &Meshpilot, what: &str, n: u64, timeout: Duration) {
    support::wait::eventually(what, timeout, || async {
        match pushes(server).await? {
            p if p >= n => Ok(()),
            p => Err(format!("{p} pushes")),
        }
    })
    .await
}

#[tokio::test]
async fn a_single_edit_after_a_quiet_period_is_pushed_without_waiting_the_debounce() {
    let (on_dir, off_dir) = (TempDir::new().expect("dir"), TempDir::new().expect("dir"));
    for dir in [&on_dir, &off_dir] {
        support::write_manifests(dir.path(), &[("web.yaml", &web_service(80))]);
    }
    let on = start(on_dir.path(), "true").await;
    let off = start(off_dir.path(), "false").await;
    assert_eq!(pushes(&on).await, Ok(1), "the first full sync");
    assert_eq!(pushes(&off).await, Ok(1), "the first full sync");

    // The rule needs the engine quiet (no change, no push) for --debounce-ms before the edit.
    tokio::time::sleep(DEBOUNCE + Duration::from_millis(200)).await;
    // The same edit to both: the Service's port changes.
    support::write_manifests(off_dir.path(), &[("web.yaml", &web_service(8080))]);
    let off_edited = Instant::now();
    support::write_manifests(on_dir.path(), &[("web.yaml", &web_service(8080))]);

    wait_for_pushes(
        &on,
        "the edit pushed at once, well before the 5 s debounce",
        2,
        DEBOUNCE - Duration::from_secs(1),
    )
    .await;
    assert_eq!(
        pushes(&off).await,
        Ok(1),
        "with --debounce-leading=false the same edit still waits for the debounce"
    );
    wait_for_pushes(&off, "the edit pushed after the debounce", 2, 3 * DEBOUNCE).await;
    assert!(
        off_edited.elapsed() >= DEBOUNCE,
        "pushed {:?} after the edit, before the debounce passed",
        off_edited.elapsed()
    );
}
