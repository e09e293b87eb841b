//! Diagnostics as an operator sees them, against the real server (no Envoy needed): the same
//! VirtualService in two files is a conflict in `/debug/configz`, decided by the file rule (the
//! later path serves) and unchanged by edits to other files; and a bad file is logged once when
//! it appears and once when it is fixed, whatever happens in between; Sidecar and ServiceEntry
//! fields served differently from istiod are warnings naming the field; and a field meshpilot
//! does not read is a warning naming its path, and its object still serves.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::Meshpilot;
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(10);

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80}}]\n"
    )
}

/// The VirtualService `default/shop`, routing to `host`.
fn shop_routing_to(host: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: shop, namespace: default}}\nspec:\n  hosts: [shop.example.com]\n  http:\n  - route:\n    - destination: {{host: {host}}}\n"
    )
}

async fn configz(server: &Meshpilot) -> Result<Value, String> {
    let r = server
        .debug_get("/debug/configz")
        .await
        .map_err(|e| format!("{e:#}"))?;
    serde_json::from_str(&r.body).map_err(|e| format!("configz: {e}"))
}

fn has_service(configz: &Value, name: &str) -> bool {
    configz["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|o| o["key"]["kind"] == "Service" && o["key"]["name"] == name)
}

/// The destination host the served `default/shop` routes to.
fn served_shop_host(configz: &Value) -> Option<String> {
    configz["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["key"]["kind"] == "VirtualService" && o["key"]["name"] == "shop")
        .and_then(|o| {
            o["object"]["body"]["spec"]["http"][0]["route"][0]["destination"]["host"]
                .as_str()
                .map(str::to_string)
        })
}

fn conflicts(configz: &Value) -> Vec<Value> {
    configz["diagnostics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["stage"] == "conflict")
        .cloned()
        .collect()
}

/// The conflict configz must show: `a.yaml`'s definition shadowed by `b.yaml`'s, which serves.
fn assert_b_serves_and_a_is_reported(configz: &Value) {
    assert_eq!(served_shop_host(configz).as_deref(), Some("svc-b"));
    let conflicts = conflicts(configz);
    assert_eq!(conflicts.len(), 1, "{conflicts:#?}");
    let c = &conflicts[0];
    assert_eq!(c["object"]["kind"], "VirtualService", "{c}");
    assert_eq!(c["object"]["name"], "shop", "{c}");
    let file = |v: &Value| v["file"].as_str().unwrap_or_default().to_string();
    assert!(file(&c["origin"]).ends_with("a.yaml"), "{c}");
    assert!(file(&c["serving"]).ends_with("b.yaml"), "{c}");
    let shown: Vec<&Value> = configz["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["key"]["name"] == "shop")
        .flat_map(|o| o["diagnostics"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(shown, [c], "the object lists its own conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_files_defining_one_virtual_service_show_a_conflict_the_later_path_serves() {
    let dir = TempDir::new().expect("tempdir");
    let services = format!("{}---\n{}", service("svc-a"), service("svc-b"));
    support::write_manifests(
        dir.path(),
        &[
            ("services.yaml", &services),
            ("a.yaml", &shop_routing_to("svc-a")),
            ("b.yaml", &shop_routing_to("svc-b")),
        ],
    );
    let server = Meshpilot::start(&[dir.path()]).await;
    let c = configz(&server).await.expect("configz");
    assert_b_serves_and_a_is_reported(&c);

    // Edits to other files (one changed, one added) decide nothing anew.
    let more = format!("{services}---\n{}", service("svc-c"));
    support::write_manifests(dir.path(), &[("services.yaml", &more)]);
    support::write_manifests(dir.path(), &[("extra/more.yaml", &service("svc-d"))]);
    let c = support::eventually("the unrelated edits served", WAIT, || async {
        let c = configz(&server).await?;
        if has_service(&c, "svc-c") && has_service(&c, "svc-d") {
            Ok(c)
        } else {
            Err("svc-c or svc-d not served yet".to_string())
        }
    })
    .await;
    assert_b_serves_and_a_is_reported(&c);

    // A field meshpilot does not read is named, not dropped silently; the rule still serves.
    let rule = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: svc-a-tls, namespace: default}\nspec:\n  host: svc-a\n  trafficPolicy:\n    tls: {mode: SIMPLE, insecureSkipVerify: true}\n";
    support::write_manifests(dir.path(), &[("rule.yaml", rule)]);
    let c = support::eventually("the rule served", WAIT, || async {
        let c = configz(&server).await?;
        let served = c["objects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|o| o["key"]["kind"] == "DestinationRule" && o["key"]["name"] == "svc-a-tls");
        served
            .then_some(c)
            .ok_or_else(|| "rule not served yet".to_string())
    })
    .await;
    let unread: Vec<&Value> = c["diagnostics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["object"]["name"] == "svc-a-tls")
        .collect();
    assert_eq!(unread.len(), 1, "{unread:#?}");
    let d = unread[0];
    assert_eq!(d["severity"], "warning", "{d}");
    assert_eq!(
        d["field"], "spec.trafficPolicy.tls.insecureSkipVerify",
        "{d}"
    );
    assert_eq!(
        d["message"],
        "`spec.trafficPolicy.tls.insecureSkipVerify` is not read by meshpilot: ignored",
        "{d}"
    );
    assert_b_serves_and_a_is_reported(&c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_is_logged_once_when_it_appears_and_once_when_fixed() {
    let dir = TempDir::new().expect("tempdir");
    support::write_manifests(dir.path(), &[("services.yaml", &service("svc-a"))]);
    let server = Meshpilot::start(&[dir.path()]).await;

    support::write_manifests(
        dir.path(),
        &[(
            "broken.yaml",
            "kind: VirtualService\nspec: [unclosed\n  hosts: {",
        )],
    );
    support::eventually("the bad file reported", WAIT, || async {
        let c = configz(&server).await?;
        let text = c["diagnostics"].to_string();
        if text.contains("broken.yaml") {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await;
    // An unrelated change while the file is still bad.
    let services = format!("{}---\n{}", service("svc-a"), service("svc-b"));
    support::write_manifests(dir.path(), &[("services.yaml", &services)]);
    support::eventually("the unrelated change served", WAIT, || async {
        let c = configz(&server).await?;
        has_service(&c, "svc-b")
            .then_some(())
            .ok_or_else(|| "svc-b not served yet".to_string())
    })
    .await;
    // The fix.
    support::write_manifests(dir.path(), &[("broken.yaml", &service("svc-c"))]);
    support::eventually("the fix served, nothing reported", WAIT, || async {
        let c = configz(&server).await?;
        let empty = c["diagnostics"].as_array().is_some_and(Vec::is_empty);
        (empty && has_service(&c, "svc-c"))
            .then_some(())
            .ok_or_else(|| c["diagnostics"].to_string())
    })
    .await;

    let logs = server.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains("broken.yaml")).collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].contains("WARN"), "{}", lines[0]);
    assert!(
        lines[1].contains("INFO") && lines[1].contains("resolved"),
        "{}",
        lines[1]
    );
}

/// Fields meshpilot reads but serves differently from istiod are warnings an operator finds in
/// `/debug/configz`, each naming its field, while the objects still serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_and_service_entry_fields_served_differently_are_warned_in_configz() {
    let dir = TempDir::new().expect("tempdir");
    let sidecar = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: scoped, namespace: default}\nspec:\n  egress:\n  - port: {number: 9000, protocol: TCP, name: tcp}\n    bind: 127.0.0.1\n    hosts: ['./*']\n";
    let entry = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: db, namespace: default}\nspec:\n  hosts: [db.example.com]\n  addresses: [10.9.0.1, 10.10.0.0/16]\n  ports: [{number: 5432, name: tcp, protocol: TCP}]\n";
    support::write_manifests(
        dir.path(),
        &[("sidecar.yaml", sidecar), ("entry.yaml", entry)],
    );
    let server = Meshpilot::start(&[dir.path()]).await;
    let c = configz(&server).await.expect("configz");
    let mut warned: Vec<String> = c["diagnostics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["severity"] == "warning")
        .map(|d| {
            format!(
                "{} {}",
                d["object"]["name"].as_str().unwrap_or(""),
                d["field"].as_str().unwrap_or("")
            )
        })
        .collect();
    warned.sort();
    assert_eq!(
        warned,
        [
            "db spec.addresses[1]",
            "scoped spec.egress[0].bind",
            "scoped spec.egress[0].port"
        ]
    );
    // Both objects still serve.
    for (kind, name) in [("ServiceEntry", "db"), ("Sidecar", "scoped")] {
        let served = c["objects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|o| o["key"]["kind"] == kind && o["key"]["name"] == name);
        assert!(served, "{kind} {name} not served: {c}");
    }
}
