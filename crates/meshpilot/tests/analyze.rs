//! `meshpilot analyze DIR`, the real binary: what it prints, its exit status for CI pipelines,
//! and that it reports what `serve` itself reports for the same directory.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::Meshpilot;

fn analyze(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshpilot"))
        .arg("analyze")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run meshpilot analyze: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

const BAD: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: nope.example.com}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken, namespace: default}
spec:
  hosts: [x]
  http:
  - route:
    - destination: {host: x}
      weight: -5
"#;

const UNKNOWN_HOST_ONLY: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: nope.example.com}
"#;

fn dir_with(file: &str, text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(file), text).expect("write");
    dir
}

#[test]
fn the_examples_are_clean_and_exit_zero() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/examples");
    let (code, out) = analyze(&[&examples.display().to_string()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No validation issues found"), "{out}");
}

#[test]
fn findings_name_the_file_object_field_and_istio_code_and_fail_the_run() {
    let dir = dir_with("bad.yaml", BAD);
    let path = dir.path().display().to_string();
    let (code, out) = analyze(&[&path]);
    assert_eq!(code, 79, "{out}");
    let weight = out
        .lines()
        .find(|l| l.contains("weight -5"))
        .unwrap_or_else(|| panic!("the weight error: {out}"));
    assert!(weight.starts_with("Error [IST0106] (VirtualService default/broken)"));
    assert!(weight.contains("bad.yaml") && weight.contains("spec.http[0].route[0].weight"));
    let host = out
        .lines()
        .find(|l| l.contains("nope.example.com"))
        .unwrap_or_else(|| panic!("the unknown host: {out}"));
    assert!(host.starts_with("Warning [IST0101] (VirtualService default/reviews)"));

    // A warning alone passes by default and fails with --failure-threshold warning.
    let warn_only = dir_with("vs.yaml", UNKNOWN_HOST_ONLY);
    let path = warn_only.path().display().to_string();
    assert_eq!(analyze(&[&path]).0, 0);
    assert_eq!(analyze(&[&path, "--failure-threshold", "warning"]).0, 79);
}

/// The same directory served: `/debug/diagnosticz` lists what `analyze` printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_reports_what_serve_reports() {
    let dir = dir_with("bad.yaml", BAD);
    let path = dir.path().display().to_string();
    let (_, out) = analyze(&[&path, "-o", "json"]);
    let analyzed: Value = serde_json::from_str(&out).expect("JSON output");
    let key = |v: &Value| {
        (
            v["origin"].as_str().unwrap_or_default().to_string(),
            v["field"].as_str().unwrap_or_default().to_string(),
            v["message"].as_str().unwrap_or_default().to_string(),
        )
    };
    let from_analyze: BTreeSet<_> = analyzed
        .as_array()
        .expect("array")
        .iter()
        .map(key)
        .collect();

    let server = Meshpilot::spawn(&[dir.path()], &["--serve-partial-config"]);
    server.wait_ready(Duration::from_secs(20)).await;
    let body = server
        .debug_get("/debug/diagnosticz")
        .await
        .expect("diagnosticz")
        .body;
    let served: Value = serde_json::from_str(&body).expect("diagnosticz JSON");
    let list = served
        .as_array()
        .or_else(|| served["diagnostics"].as_array())
        .unwrap_or_else(|| panic!("a list of diagnostics: {body}"));
    let origin = |v: &Value| match &v["origin"] {
        Value::Object(m) => m
            .get("file")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        other => other.as_str().unwrap_or_default().to_string(),
    };
    let from_serve: BTreeSet<_> = list
        .iter()
        .map(|v| {
            (
                origin(v),
                v["field"].as_str().unwrap_or_default().to_string(),
                v["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(from_analyze, from_serve);
    assert_eq!(from_analyze.len(), 2, "{from_analyze:?}");
}

const TWO_FOR_ONE_HOST: &str = r#"apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a-newer, namespace: default, creationTimestamp: "2024-06-01T00:00:00Z"}
spec:
  hosts: [web]
  http:
  - route:
    - destination: {host: web}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: z-older, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  hosts: [web]
  http:
  - route:
    - destination: {host: web}
"#;

/// Two VirtualServices for one host on sidecars: the younger is reported as ignored, naming the
/// one that routes the host, by `analyze` (IST0109) and by the running server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ignored_virtual_service_for_a_host_is_reported_as_ist0109() {
    let dir = dir_with("vs.yaml", TWO_FOR_ONE_HOST);
    let path = dir.path().display().to_string();
    let (code, out) = analyze(&[&path]);
    assert_eq!(code, 0, "a warning: {out}");
    let line = out
        .lines()
        .find(|l| l.contains("IST0109"))
        .unwrap_or_else(|| panic!("an IST0109 finding: {out}"));
    assert!(
        line.starts_with("Warning [IST0109] (VirtualService default/a-newer")
            && line.contains("default/z-older"),
        "{line}"
    );
    assert_eq!(out.matches("IST0109").count(), 1, "{out}");

    let server = Meshpilot::spawn(&[dir.path()], &[]);
    server.wait_ready(Duration::from_secs(20)).await;
    let body = server
        .debug_get("/debug/diagnosticz")
        .await
        .expect("diagnosticz")
        .body;
    assert!(
        body.contains("a-newer")
            && body.contains("default/z-older")
            && body.contains("spec.hosts[0]"),
        "{body}"
    );
}
