//! The debug endpoints against a real Envoy 1.40: `/debug/config_dump` equals, resource for
//! resource, what the gateway's own admin `/config_dump` holds (SotW and Delta); a route that
//! Envoy rejects (NACK) shows up in `/debug/syncz`, `/debug/config_dump` and `/metrics` with the
//! input object behind it, and is logged once.

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{Envoy, Meshpilot};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(10);

/// The mvc canary scenario (gateway on port 80) with two pods.
fn write_canary(dir: &Path) {
    let pods = format!(
        "{}---\n{}",
        support::pod_yaml(
            "mvc-v1",
            "default",
            &[("app", "mvc-service"), ("version", "v1")],
            "10.1.0.1".parse().expect("ip"),
            &[]
        ),
        support::pod_yaml(
            "mvc-v2",
            "default",
            &[("app", "mvc-service"), ("version", "v2")],
            "10.1.0.2".parse().expect("ip"),
            &[]
        ),
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
    support::write_manifests(dir, &refs);
}

/// An ingress gateway Envoy (interception NONE on its own loopback IP); returns it and its id.
async fn gateway(server: &Meshpilot, delta: bool) -> (Envoy, String, IpAddr) {
    let ip = support::loopback_ip();
    let admin = support::admin_addr();
    let id = support::node_id(
        "router",
        ip,
        &format!("gw-{}", ip.to_string().replace('.', "-")),
        "istio-system",
    );
    let mut args = support::bootstrap_args(&id, server.xds(), admin);
    args.labels = vec![("istio".into(), "ingressgateway".into())];
    args.delta = delta;
    let envoy = Envoy::start(support::render_bootstrap(&args), admin).await;
    envoy.wait_for_listener(&format!("{ip}_80"), WAIT).await;
    (envoy, id, ip)
}

async fn get_json(server: &Meshpilot, path: &str) -> Value {
    let r = server
        .debug_get(path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
}

/// The syncz entry of a node id.
async fn syncz_of(server: &Meshpilot, id: &str) -> Value {
    let all = get_json(server, "/debug/syncz").await;
    all.as_array()
        .into_iter()
        .flatten()
        .find(|p| p["node_id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until every type the proxy asked for is SYNCED.
async fn wait_synced(server: &Meshpilot, id: &str) -> Value {
    support::eventually(&format!("{id} SYNCED on every type"), WAIT, || async {
        let p = syncz_of(server, id).await;
        let types = p["types"].as_object().cloned().unwrap_or_default();
        if types.len() == 4 && types.values().all(|t| t["status"] == "SYNCED") {
            Ok(p)
        } else {
            Err(p.to_string())
        }
    })
    .await
}

fn section<'a>(dump: &'a Value, suffix: &str) -> &'a Value {
    support::dump::section(dump, suffix).unwrap_or(&Value::Null)
}

/// `name → (version_info, resource JSON)` of one dynamic section; `state` is the object inside
/// each entry that holds `version_info` and the resource (`active_state` for listeners).
fn by_name(
    dump: &Value,
    suffix: &str,
    list: &str,
    state: Option<&str>,
    field: &str,
) -> BTreeMap<String, (Value, Value)> {
    section(dump, suffix)[list]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let s = state.map(|k| &e[k]).unwrap_or(e);
            let res = s[field].clone();
            let name = res["name"]
                .as_str()
                .or_else(|| res["cluster_name"].as_str())
                .unwrap_or("")
                .to_string();
            (name, (s["version_info"].clone(), res))
        })
        .collect()
}

/// Asserts that meshpilot's config dump of a proxy (`ours`) holds what Envoy's own (`theirs`)
/// does: the same clusters, listeners and route configurations with the same content and
/// `version_info`, and for every assignment we sent, the same endpoint addresses in Envoy.
fn assert_dumps_agree(theirs: &Value, ours: &Value) {
    for (what, suffix, list, state, field) in [
        (
            "clusters",
            "ClustersConfigDump",
            "dynamic_active_clusters",
            None,
            "cluster",
        ),
        (
            "listeners",
            "ListenersConfigDump",
            "dynamic_listeners",
            Some("active_state"),
            "listener",
        ),
        (
            "routes",
            "RoutesConfigDump",
            "dynamic_route_configs",
            None,
            "route_config",
        ),
    ] {
        let t = by_name(theirs, suffix, list, state, field);
        let o = by_name(ours, suffix, list, state, field);
        assert!(!t.is_empty(), "envoy has no {what}");
        assert_eq!(
            t.keys().collect::<Vec<_>>(),
            o.keys().collect::<Vec<_>>(),
            "{what}: names differ"
        );
        for (name, (tv, tr)) in &t {
            let (ov, or) = &o[name];
            assert_eq!(tr, or, "{what} {name}: content differs");
            assert_eq!(tv, ov, "{what} {name}: version_info differs");
        }
    }
    // Endpoints: every assignment we sent, with the same addresses in Envoy. Envoy renders
    // EDS from its host set (adding defaults such as health status and weight 1) and also lists
    // the inline assignments of its STATIC clusters, so the addresses are what is compared.
    let t = by_name(
        theirs,
        "EndpointsConfigDump",
        "dynamic_endpoint_configs",
        None,
        "endpoint_config",
    );
    let o = by_name(
        ours,
        "EndpointsConfigDump",
        "dynamic_endpoint_configs",
        None,
        "endpoint_config",
    );
    for name in o.keys() {
        assert!(t.contains_key(name), "envoy lacks endpoints of {name}");
        assert_eq!(
            support::dump::endpoints(theirs, name),
            support::dump::endpoints(ours, name),
            "endpoints of {name} differ"
        );
    }
}

async fn config_dump_equals_envoys(delta: bool) {
    let _bin = support::require_envoy!();
    let dir = TempDir::new().expect("temp dir");
    write_canary(dir.path());
    let server = Meshpilot::start(&[dir.path()]).await;
    let (envoy, id, _) = gateway(&server, delta).await;
    let status = wait_synced(&server, &id).await;
    assert_eq!(status["variant"], if delta { "Delta" } else { "Sotw" });
    assert_eq!(status["type"], "Router");

    let theirs = envoy.config_dump().await;
    let ours = get_json(&server, &format!("/debug/config_dump?proxyID={id}")).await;
    assert_dumps_agree(&theirs, &ours);
    // Every entry we sent was ACKED, names its input objects, and carries a timestamp.
    for s in ours["configs"].as_array().expect("configs") {
        for list in [
            "dynamic_active_clusters",
            "dynamic_endpoint_configs",
            "dynamic_listeners",
            "dynamic_route_configs",
        ] {
            for e in s[list].as_array().into_iter().flatten() {
                assert_eq!(e["client_status"], "ACKED", "{e}");
                let state = if list == "dynamic_listeners" {
                    &e["active_state"]
                } else {
                    e
                };
                assert!(
                    state["last_updated"]
                        .as_str()
                        .is_some_and(|t| t.ends_with('Z'))
                );
            }
        }
    }
    let routes = by_name(
        &ours,
        "RoutesConfigDump",
        "dynamic_route_configs",
        None,
        "route_config",
    );
    assert!(routes.contains_key("http.80"), "{routes:?}");
    let rc = &section(&ours, "RoutesConfigDump")["dynamic_route_configs"][0];
    assert!(
        rc["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|k| k["kind"] == "VirtualService" && k["name"] == "service-gateway"),
        "{rc}"
    );
    let o = by_name(
        &ours,
        "EndpointsConfigDump",
        "dynamic_endpoint_configs",
        None,
        "endpoint_config",
    );
    assert_eq!(o.len(), 3, "{o:?}");

    // `types=` narrows the dump; an unknown proxy is a 404 naming it.
    let only = get_json(
        &server,
        &format!("/debug/config_dump?proxyID={id}&types=lds"),
    )
    .await;
    assert_eq!(only["configs"].as_array().map(Vec::len), Some(1));
    let missing = server
        .debug_get("/debug/config_dump?proxyID=nobody")
        .await
        .expect("answer");
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("nobody"), "{}", missing.body);

    // Metrics under istiod's names.
    let metrics = server.debug_get("/metrics").await.expect("metrics");
    assert_eq!(metrics.status, 200);
    for line in [
        "pilot_xds{type=\"router\"} 1",
        "pilot_services 1",
        "pilot_virt_services 1",
    ] {
        assert!(metrics.body.contains(line), "{line} in:\n{}", metrics.body);
    }
    for name in [
        "pilot_xds_pushes{type=\"cds\"}",
        "pilot_xds_pushes{type=\"rds\"}",
        "pilot_xds_push_time_bucket",
        "pilot_proxy_convergence_time_count",
        "pilot_xds_config_size_bytes_bucket",
        "pilot_debounce_time_count",
        "pilot_total_xds_rejects",
        "pilot_xds_cds_reject 0",
    ] {
        assert!(metrics.body.contains(name), "{name} in:\n{}", metrics.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_dump_equals_envoys_own_sotw() {
    config_dump_equals_envoys(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_dump_equals_envoys_own_delta() {
    config_dump_equals_envoys(true).await;
}

/// SotW sends a changed endpoint assignment alone: Envoy keeps every other cluster's endpoints
/// (they are in its subscription but not in the response), and meshpilot's dump of what the
/// proxy holds still equals Envoy's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_new_pod_reaches_envoy_and_every_other_cluster_keeps_its_endpoints() {
    let _bin = support::require_envoy!();
    let dir = TempDir::new().expect("temp dir");
    write_canary(dir.path());
    let server = Meshpilot::start(&[dir.path()]).await;
    let (envoy, id, _) = gateway(&server, false).await;
    wait_synced(&server, &id).await;
    let ours = get_json(&server, &format!("/debug/config_dump?proxyID={id}")).await;
    let before: BTreeMap<String, Vec<String>> = by_name(
        &ours,
        "EndpointsConfigDump",
        "dynamic_endpoint_configs",
        None,
        "endpoint_config",
    )
    .into_keys()
    .map(|name| {
        let endpoints = support::dump::endpoints(&ours, &name);
        (name, endpoints)
    })
    .collect();
    assert_eq!(before.len(), 3, "{before:?}");
    assert!(before.values().all(|e| !e.is_empty()), "{before:?}");
    let v1 = before
        .keys()
        .find(|name| name.contains("|v1|"))
        .expect("the v1 subset's cluster");
    // Envoy counts each endpoint update a cluster receives, changed or not.
    let v1_updates = format!("cluster.{v1}.update_success");
    let v1_updated = envoy.stat(&v1_updates).await;
    assert!(
        v1_updated.is_some_and(|n| n > 0),
        "{v1_updates}: {v1_updated:?}"
    );

    // One more v2 pod: the service's assignment and its v2 subset's change, v1's does not.
    let pod = support::pod_yaml(
        "mvc-v2-b",
        "default",
        &[("app", "mvc-service"), ("version", "v2")],
        "10.1.0.3".parse().expect("ip"),
        &[],
    );
    support::write_manifests(dir.path(), &[("more-pods.yaml", &pod)]);
    let theirs = envoy
        .wait_for_dump("the new pod's endpoint in Envoy", WAIT, |d| {
            before
                .keys()
                .filter(|name| {
                    support::dump::endpoints(d, name)
                        .iter()
                        .any(|e| e.starts_with("10.1.0.3:"))
                })
                .count()
                == 2
        })
        .await;
    for (name, held) in &before {
        let now = support::dump::endpoints(&theirs, name);
        for e in held {
            assert!(now.contains(e), "{name} lost {e}: {now:?}");
        }
    }
    assert_eq!(support::dump::endpoints(&theirs, v1), before[v1]);
    assert_eq!(
        envoy.stat(&v1_updates).await,
        v1_updated,
        "the v1 subset's endpoints, unchanged, were not sent again"
    );

    wait_synced(&server, &id).await;
    let theirs = envoy.config_dump().await;
    let ours = get_json(&server, &format!("/debug/config_dump?proxyID={id}")).await;
    assert_dumps_agree(&theirs, &ours);
}

/// A VirtualService whose URI regex the source accepts (under 1,024 characters, valid syntax)
/// but Envoy's RE2 refuses: forty `x{1000}` compile to a program of some 40,000 instructions,
/// over the limit of 32,768 the bootstrap sets (as istiod's does).
const BAD_REGEX_VS: &str = r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: bad-regex
spec:
  hosts:
  - bad.example.com
  gateways:
  - service-gateway
  http:
  - match:
    - uri:
        regex: "/x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}x{1000}"
    route:
    - destination:
        host: mvc-service
        subset: v1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_names_the_resource_and_its_source_object() {
    let _bin = support::require_envoy!();
    let dir = TempDir::new().expect("temp dir");
    write_canary(dir.path());
    let server = Meshpilot::start(&[dir.path()]).await;
    let (sotw, sotw_id, _) = gateway(&server, false).await;
    let (_delta, delta_id, _) = gateway(&server, true).await;
    wait_synced(&server, &sotw_id).await;
    wait_synced(&server, &delta_id).await;

    support::write_manifests(dir.path(), &[("bad.yaml", BAD_REGEX_VS)]);
    for id in [&sotw_id, &delta_id] {
        let rds = support::eventually(&format!("{id}: RDS in ERROR"), WAIT, || async {
            let p = syncz_of(&server, id).await;
            let rds = p["types"]["Route"].clone();
            if rds["status"] == "ERROR" {
                Ok(rds)
            } else {
                Err(p.to_string())
            }
        })
        .await;
        let nack = &rds["last_nack"];
        let message = nack["message"].as_str().expect("Envoy's message");
        assert!(message.contains("RE2"), "{message}");
        let blamed = nack["resources"].as_array().expect("resources");
        assert_eq!(blamed.len(), 1, "{nack}");
        assert_eq!(blamed[0]["name"], "http.80");
        assert!(
            blamed[0]["sources"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"] == "VirtualService"
                    && k["namespace"] == "default"
                    && k["name"] == "bad-regex"),
            "{nack}"
        );
        assert_eq!(rds["version_sent"], nack["version"]);
        assert_ne!(rds["version_acked"], rds["version_sent"]);

        let dump = get_json(
            &server,
            &format!("/debug/config_dump?proxyID={id}&types=rds"),
        )
        .await;
        let entry = section(&dump, "RoutesConfigDump")["dynamic_route_configs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["route_config"]["name"] == "http.80")
            .cloned()
            .expect("http.80 in the dump");
        assert_eq!(entry["client_status"], "NACKED", "{entry}");
        assert_eq!(entry["error_state"]["details"], message);
        assert!(
            entry["route_config"].to_string().contains("x{1000}x{1000}"),
            "{entry}"
        );
    }
    // The gateway keeps serving its last good routes.
    let theirs = sotw.config_dump().await;
    assert!(!theirs.to_string().contains("x{1000}x{1000}"));

    let metrics = server.debug_get("/metrics").await.expect("metrics").body;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(value("pilot_xds_rds_reject ") >= 2.0, "{metrics}");
    assert!(
        value("pilot_total_xds_rejects{type=\"rds\"}") >= 2.0,
        "{metrics}"
    );
    assert_eq!(value("pilot_xds_cds_reject "), 0.0, "{metrics}");

    // Two proxies rejected the same route version: one warning, naming the object.
    let logs = server.logs();
    let warned: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("NACK"))
        .collect();
    assert_eq!(warned.len(), 1, "{logs}");
    assert!(
        warned[0].contains("http.80") && warned[0].contains("VirtualService default/bad-regex"),
        "{}",
        warned[0]
    );
}

/// A debug port reachable beyond loopback needs a token for `/debug`; probes and scrapes stay
/// open; without a token file such a port is refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exposed_debug_port_requires_a_bearer_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config");
    std::fs::create_dir(&config).expect("config");
    let port = support::admin_addr().port();
    let exposed = format!("0.0.0.0:{port}");
    // `serve` on the exposed debug address; flags may follow.
    let serve = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_meshpilot"));
        cmd.args([
            "serve",
            "--xds-address",
            "127.0.0.1:0",
            "--debug-address",
            &exposed,
        ])
        .arg("--config-dir")
        .arg(&config);
        cmd
    };
    let out = serve().output().expect("run meshpilot");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--debug-token-file"), "{stderr}");

    let token = dir.path().join("debug-token");
    std::fs::write(&token, "s3cret\n").expect("token");
    let mut child = serve()
        .arg("--debug-token-file")
        .arg(&token)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start meshpilot");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match support::client::try_get(addr, "localhost", "/ready", &[]).await {
            Ok(r) if r.status == 200 => break,
            _ if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => panic!("never ready: {other:?}"),
        }
    }
    let get = |path: &'static str, auth: Option<&'static str>| async move {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        support::client::try_get(addr, "localhost", path, &headers)
            .await
            .expect("debug request")
            .status
    };
    assert_eq!(get("/debug/syncz", None).await, 401);
    assert_eq!(get("/debug/configz", Some("Bearer wrong")).await, 401);
    assert_eq!(get("/debug/syncz", Some("Bearer s3cret")).await, 200);
    assert_eq!(get("/healthz", None).await, 200);
    assert_eq!(get("/metrics", None).await, 200);
    let _ = child.kill();
    let _ = child.wait();
}
