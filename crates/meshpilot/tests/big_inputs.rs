//! Inputs of real size against the real server (no Envoy needed): a concatenated cluster
//! export of 20,000 documents in one file is served, and a file over a size limit set low by
//! flag is refused with a diagnostic naming the file, the limit and the flag, while another
//! file keeps serving.

mod support;

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::Meshpilot;
use tempfile::TempDir;

/// How long the first load may take: a debug build parses and converts 20,000 documents in
/// seconds. A bound for the wait, not an assertion on speed.
const LOAD_WAIT: Duration = Duration::from_secs(120);

/// `services` Services in `default`, each selecting `pods` running Pods, as one stream.
fn export(services: usize, pods: usize) -> String {
    let mut text = String::new();
    for s in 0..services {
        let _ = write!(
            text,
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{s}\n  namespace: default\nspec:\n  selector: {{app: svc-{s}}}\n  ports:\n  - {{name: http, port: 80, targetPort: 8080}}\n"
        );
        for p in 0..pods {
            let _ = write!(
                text,
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: svc-{s}-{p}\n  namespace: default\n  labels: {{app: svc-{s}}}\nspec:\n  containers: [{{name: app, image: app}}]\nstatus:\n  phase: Running\n  podIP: 10.{a}.{b}.{c}\n  conditions: [{{type: Ready, status: \"True\"}}]\n",
                a = s / 256,
                b = s % 256,
                c = p + 1
            );
        }
    }
    text
}

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80}}]\n"
    )
}

async fn configz(server: &Meshpilot) -> Value {
    // Tens of thousands of objects, from a debug build, on a machine running other tests.
    let r = server
        .debug_get_patiently("/debug/configz", LOAD_WAIT)
        .await
        .expect("configz");
    serde_json::from_str(&r.body).expect("configz JSON")
}

fn served(configz: &Value, kind: &str) -> Vec<String> {
    configz["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["key"]["kind"] == kind)
        .map(|o| o["key"]["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn a_file_of_twenty_thousand_documents_is_served() {
    let dir = TempDir::new().expect("tempdir");
    // 2,000 Services with 9 Pods each: 20,000 documents, about 4 MB.
    std::fs::write(dir.path().join("export.yaml"), export(2_000, 9)).expect("write");
    let server = Meshpilot::spawn(&[dir.path()], &[]);
    server.wait_ready(LOAD_WAIT).await;

    let configz = configz(&server).await;
    let errors = configz["diagnostics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(served(&configz, "Service").len(), 2_000);
    assert_eq!(served(&configz, "Pod").len(), 18_000);

    // The registry the compiler reads has every Service with its ready endpoints.
    let r = server
        .debug_get("/debug/registryz")
        .await
        .expect("registryz");
    for name in ["svc-0", "svc-1999"] {
        let host = format!("{name}.default.svc.cluster.local");
        assert!(r.body.contains(&host), "{host} missing from registryz");
    }
}

#[tokio::test]
async fn a_file_past_a_limit_set_by_flag_is_named_with_the_flag_and_others_serve() {
    let dir = TempDir::new().expect("tempdir");
    let three = format!("{}---\n{}---\n{}", service("a"), service("b"), service("c"));
    std::fs::write(dir.path().join("big.yaml"), three).expect("write");
    std::fs::write(dir.path().join("other.yaml"), service("d")).expect("write");
    // Served at start-up despite the refused file only with --serve-partial-config (without
    // it nothing is served until the directory loads cleanly: tests/restart.rs).
    let server = Meshpilot::spawn(
        &[dir.path()],
        &["--max-documents-per-file", "2", "--serve-partial-config"],
    );
    server
        .wait_ready(support::server::SERVER_READY_TIMEOUT)
        .await;

    let configz = configz(&server).await;
    assert_eq!(served(&configz, "Service"), ["d"]);
    let errors = configz["diagnostics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let e = &errors[0];
    assert!(
        e["origin"]["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("big.yaml")),
        "{e}"
    );
    assert_eq!(e["limit"]["limit"], "documents_per_file", "{e}");
    assert_eq!(e["limit"]["value"], 2, "{e}");
    let message = e["message"].as_str().unwrap_or_default();
    for part in [
        "3 documents",
        "limit of 2 YAML documents per file",
        "--max-documents-per-file",
        "MESHPILOT_MAX_DOCUMENTS_PER_FILE",
    ] {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
}

#[test]
fn a_nesting_limit_deeper_than_the_stack_allows_is_refused_at_start() {
    let dir = TempDir::new().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_meshpilot"))
        .arg("serve")
        .arg("--config-dir")
        .arg(dir.path())
        .env("MESHPILOT_MAX_YAML_DEPTH", "1000")
        .output()
        .expect("run meshpilot");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--max-yaml-depth 1000"), "{stderr}");
}

/// A configuration whose single responses pass gRPC's common 4 MiB message limit reaches a real
/// Envoy whole: 12,000 Services (12,000 EDS clusters) and a route configuration over 4 MiB for a
/// sidecar, accepted without a rejection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_configuration_over_four_mib_and_twelve_thousand_clusters_reach_envoy() {
    let _envoy_bin = support::require_envoy!();
    const SERVICES: usize = 12_000;
    let dir = TempDir::new().expect("temp dir");
    std::fs::write(dir.path().join("export.yaml"), export(SERVICES, 0)).expect("write export");
    let server = Meshpilot::spawn(&[dir.path()], &[]);
    server.wait_ready(LOAD_WAIT).await;

    let ip = support::loopback_ip();
    let admin = support::admin_addr();
    let node = support::node_id("sidecar", ip, "client", "default");
    let args = support::bootstrap_args(&node, server.xds(), admin);
    let envoy = support::Envoy::spawn(support::render_bootstrap(&args), admin);
    envoy.wait_ready(LOAD_WAIT).await;
    let stat = |stats: &str, suffix: &str| -> u64 {
        stats
            .lines()
            .filter(|l| l.contains(suffix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let deadline = std::time::Instant::now() + LOAD_WAIT;
    let stats = loop {
        let stats = envoy
            .admin_get("/stats?filter=(cluster_manager.active_clusters|rds.*update_)")
            .await
            .expect("stats")
            .body;
        if stat(&stats, "cluster_manager.active_clusters") > SERVICES as u64
            && stat(&stats, ".update_success") >= 1
        {
            break stats;
        }
        assert!(std::time::Instant::now() < deadline, "not synced: {stats}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(stat(&stats, ".update_rejected"), 0, "{stats}");
    let metrics = server.debug_get("/metrics").await.expect("metrics").body;
    let rds_bytes: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pilot_xds_config_size_bytes_sum{type=\"rds\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(
        rds_bytes > 4.0 * 1024.0 * 1024.0,
        "the route configuration sent is over 4 MiB: {rds_bytes} bytes"
    );
}
