//! `meshpilot proxy-status` and `meshpilot proxy-config`, the real binary run against a running
//! server with a connected gateway Envoy, checked on what they print.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{Envoy, Meshpilot};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(10);

/// Runs `meshpilot ARGS…` and returns its stdout; panics with stderr when it fails.
fn meshpilot(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_meshpilot"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run meshpilot: {e}"));
    assert!(
        out.status.success(),
        "meshpilot {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The whitespace-separated cells of the line of `text` that contains `needle`.
fn row<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
        .split_whitespace()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_status_and_proxy_config_print_tables() {
    let _bin = support::require_envoy!();
    let dir = TempDir::new().expect("temp dir");
    let pod_ip = "10.1.0.1".parse().expect("ip");
    let pods = support::pod_yaml(
        "mvc-v1",
        "default",
        &[("app", "mvc-service"), ("version", "v1")],
        pod_ip,
        &[],
    );
    let files = [
        (
            "app.yaml",
            support::scenario_file("01-mvc-canary", "app.yaml"),
        ),
        (
            "destination-rule.yaml",
            support::scenario_file("01-mvc-canary", "destination-rule.yaml"),
        ),
        (
            "istio-gateway.yaml",
            support::scenario_file("01-mvc-canary", "istio-gateway.yaml"),
        ),
        ("pods.yaml", pods),
    ];
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    support::write_manifests(dir.path(), &refs);
    let server = Meshpilot::start(&[dir.path()]).await;
    let debug = server.debug().to_string();

    assert_eq!(
        meshpilot(&["proxy-status", "--debug-address", &debug]),
        "no proxies connected\n"
    );

    let ip = support::loopback_ip();
    let admin = support::admin_addr();
    let id = support::node_id("router", ip, "gw", "istio-system");
    let mut args = support::bootstrap_args(&id, server.xds(), admin);
    args.labels = vec![("istio".into(), "ingressgateway".into())];
    let envoy = Envoy::start(support::render_bootstrap(&args), admin).await;
    envoy.wait_for_listener(&format!("{ip}_80"), WAIT).await;

    let status = support::eventually("proxy-status: all SYNCED", WAIT, || async {
        let out = meshpilot(&["proxy-status", "--debug-address", &debug]);
        if out
            .lines()
            .nth(1)
            .is_some_and(|l| l.matches("SYNCED").count() == 4)
        {
            Ok(out)
        } else {
            Err(out)
        }
    })
    .await;
    eprintln!("{status}");
    assert_eq!(
        row(&status, "NAME"),
        ["NAME", "TYPE", "XDS", "CDS", "LDS", "EDS", "RDS", "ADDRESS"]
    );
    let r = row(&status, &id);
    assert_eq!(
        r[..7],
        [
            id.as_str(),
            "router",
            "SotW",
            "SYNCED",
            "SYNCED",
            "SYNCED",
            "SYNCED"
        ]
    );

    let config = |kind: &str| meshpilot(&["proxy-config", kind, &id, "--debug-address", &debug]);
    let clusters = config("clusters");
    eprintln!("{clusters}");
    assert_eq!(
        row(&clusters, "SERVICE FQDN")[..3],
        ["SERVICE", "FQDN", "PORT"]
    );
    assert!(!clusters.contains("|v1|"), "names are split into columns");
    assert_eq!(
        row(&clusters, "   v1   "),
        [
            "mvc-service.default.svc.cluster.local",
            "8080",
            "v1",
            "outbound",
            "EDS",
            "ACKED"
        ]
    );
    assert_eq!(
        row(&clusters, "BlackHoleCluster")[1..],
        ["-", "-", "-", "STATIC", "ACKED"]
    );

    let listeners = config("listeners");
    eprintln!("{listeners}");
    assert_eq!(
        row(&listeners, &format!("{ip}_80")),
        [
            &format!("{ip}_80"),
            &ip.to_string(),
            "80",
            "Route:",
            "http.80",
            "ACKED"
        ]
    );

    let routes = config("routes");
    eprintln!("{routes}");
    let r = row(&routes, "/service");
    assert_eq!(r[0], "http.80");
    assert!(
        routes.contains(
            "outbound|8080|v1|mvc-service.default.svc.cluster.local 80%, \
             outbound|8080|v2|mvc-service.default.svc.cluster.local 20%"
        ),
        "{routes}"
    );

    let endpoints = config("endpoints");
    eprintln!("{endpoints}");
    assert_eq!(
        row(&endpoints, "10.1.0.1:8080")[..3],
        ["10.1.0.1:8080", "HEALTHY", "1"]
    );

    let json = meshpilot(&[
        "proxy-config",
        "routes",
        &id,
        "-o",
        "json",
        "--debug-address",
        &debug,
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert!(
        v["configs"][0]["@type"]
            .as_str()
            .is_some_and(|t| t.ends_with("RoutesConfigDump")),
        "{json}"
    );

    // An unknown proxy: a non-zero exit naming it.
    let out = Command::new(env!("CARGO_BIN_EXE_meshpilot"))
        .args([
            "proxy-config",
            "clusters",
            "nobody",
            "--debug-address",
            &debug,
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody"));
}
