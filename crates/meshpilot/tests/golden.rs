//! Golden files: each scenario's manifests (plus `manifests/examples/workloads.yaml` for its
//! Pods) compiled for an ingress gateway, a sidecar and an egress gateway, rendered as Envoy
//! JSON and compared with `tests/testdata/golden/NAME.json`. `UPDATE_GOLDEN=1` rewrites them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use meshpilot_index::Index;
use meshpilot_model::{MetadataValue, Proxy};
use meshpilot_snapshot::XdsType;
use meshpilot_source::files::load_dirs;
use serde_json::{Value, json};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One file of a scenario, from `manifests/examples/NAME/` or, for a follow-up edit,
/// `manifests/changes/`: the tests read the examples' own copy.
fn scenario(name: &str, file: &str) -> String {
    let manifests = repo().join("../../manifests");
    let in_scenario = manifests.join("examples").join(name).join(file);
    let p = if in_scenario.is_file() {
        in_scenario
    } else {
        manifests.join("changes").join(file)
    };
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// `base` with its document that defines `kind`+`name` replaced by `replacement`.
fn replace_doc(base: &str, name: &str, replacement: &str) -> String {
    base.split("\n---\n")
        .map(|d| {
            if d.contains("kind: VirtualService") && d.contains(&format!("name: {name}\n")) {
                replacement.to_string()
            } else {
                d.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

fn proxy(id: &str, labels: &[(&str, &str)]) -> Proxy {
    let mut md = BTreeMap::new();
    md.insert(
        "LABELS".to_string(),
        MetadataValue::Map(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
    );
    md.insert(
        "INTERCEPTION_MODE".to_string(),
        MetadataValue::String("NONE".into()),
    );
    Proxy::parse(id, &md).expect("valid node id")
}

fn compile_case(files: &[(&str, String)]) -> Value {
    compile_case_reporting(files, false)
}

/// [`compile_case`]; with `report`, the diagnostics (view and compile, as text) are part of
/// the output instead of failing the test.
fn compile_case_reporting(files: &[(&str, String)], report: bool) -> Value {
    let mut reported: Vec<String> = Vec::new();
    let dir = tempfile::TempDir::new().expect("temp dir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write manifest");
    }
    std::fs::copy(
        repo().join("../../manifests/examples/workloads.yaml"),
        dir.path().join("workloads.yaml"),
    )
    .expect("copy workloads");
    let (objects, errors) = load_dirs(&[dir.path().to_path_buf()]);
    assert!(errors.is_empty(), "manifests load cleanly: {errors:?}");
    let mut index = Index::new();
    index.reset(meshpilot_model::SourceId::Files, objects);
    let view = index.build_view("cluster.local", None);
    if report {
        reported.extend(view.diagnostics.iter().map(without_origin));
    } else {
        assert!(view.diagnostics.is_empty(), "{:?}", view.diagnostics);
    }
    let shared = meshpilot_compile::compile_shared(&view).expect("consistent shared set");
    let proxies = [
        (
            "ingress",
            proxy(
                "router~127.0.0.10~ingress.istio-system~istio-system.svc.cluster.local",
                &[("istio", "ingressgateway")],
            ),
        ),
        (
            "egress",
            proxy(
                "router~127.0.0.11~egress.istio-system~istio-system.svc.cluster.local",
                &[("istio", "egressgateway")],
            ),
        ),
        (
            "sidecar",
            proxy(
                "sidecar~127.0.0.20~client.default~default.svc.cluster.local",
                &[("app", "client")],
            ),
        ),
    ];
    let mut out = serde_json::Map::new();
    let mut first = true;
    for (name, p) in proxies {
        let class = meshpilot_compile::compile_class(&view, &p);
        if report {
            reported.extend(
                class
                    .errors
                    .iter()
                    .map(|d| format!("{name}: {}", without_origin(d))),
            );
        } else {
            assert!(class.errors.is_empty(), "{name}: {:?}", class.errors);
        }
        let snap = meshpilot_compile::assemble(p.class_key(), &shared, &class).expect("consistent");
        if first {
            out.insert(
                "shared".into(),
                snap.to_json(&[XdsType::Cluster, XdsType::Endpoint])
                    .expect("json"),
            );
            first = false;
        }
        out.insert(
            name.into(),
            snap.to_json(&[XdsType::Listener, XdsType::Route])
                .expect("json"),
        );
    }
    if report {
        out.insert("diagnostics".into(), json!(reported));
    }
    Value::Object(out)
}

/// A diagnostic as text without its origin (a temporary directory's path).
fn without_origin(d: &meshpilot_model::Diagnostic) -> String {
    format!(
        "{:?}: {}: field {}: {}",
        d.severity,
        d.object,
        d.field.as_deref().unwrap_or(""),
        d.message
    )
}

fn check(name: &str, actual: Value) {
    let path: PathBuf = repo()
        .join("tests/testdata/golden")
        .join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(&actual).expect("json") + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, &text).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    if expected != text {
        let exp: Value = serde_json::from_str(&expected).unwrap_or(json!(null));
        panic!(
            "{name}: compiled output differs from {} (UPDATE_GOLDEN=1 refreshes it).\nfirst difference: {}",
            path.display(),
            first_difference(&exp, &actual, "")
        );
    }
}

fn first_difference(a: &Value, b: &Value, at: &str) -> String {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                let (va, vb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                if va != vb {
                    return first_difference(va, vb, &format!("{at}/{k}"));
                }
            }
            format!("{at}: ?")
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                if va != vb {
                    return first_difference(va, vb, &format!("{at}[{i}]"));
                }
            }
            format!("{at}: ?")
        }
        _ => format!("{at}: golden {a} vs now {b}"),
    }
}

#[test]
fn golden_01_mvc_canary_and_blue_green() {
    let canary = scenario("01-mvc-canary", "istio-gateway.yaml");
    let base = |gw: String| {
        vec![
            ("app.yaml", scenario("01-mvc-canary", "app.yaml")),
            (
                "destination-rule.yaml",
                scenario("01-mvc-canary", "destination-rule.yaml"),
            ),
            ("istio-gateway.yaml", gw),
        ]
    };
    check("01-mvc-canary", compile_case(&base(canary.clone())));
    let flipped = replace_doc(
        &canary,
        "service-gateway",
        &scenario("01-mvc-canary", "istio-gateway-bluegreen.yaml"),
    );
    check("01-mvc-blue-green", compile_case(&base(flipped)));
}

#[test]
fn golden_02_host_split() {
    check(
        "02-host-split",
        compile_case(&[
            ("gateway.yaml", scenario("02-host-split", "gateway.yaml")),
            (
                "revisions.yaml",
                scenario("02-host-split", "revisions.yaml"),
            ),
            (
                "virtualservice.yaml",
                scenario("02-host-split", "virtualservice.yaml"),
            ),
        ]),
    );
}

#[test]
fn golden_03_bookinfo_mesh_and_egress() {
    let reviews = scenario("03-bookinfo", "reviews-v1.yaml");
    let files = |r: String| {
        vec![
            ("services.yaml", scenario("03-bookinfo", "services.yaml")),
            ("gateway.yaml", scenario("03-bookinfo", "gateway.yaml")),
            ("egress.yaml", scenario("03-bookinfo", "egress.yaml")),
            ("reviews.yaml", r),
        ]
    };
    check("03-bookinfo", compile_case(&files(reviews.clone())));
    let mixed = replace_doc(
        &reviews,
        "reviews",
        &scenario("03-bookinfo", "reviews-50-10-40.yaml"),
    );
    check("03-bookinfo-reviews-50-10-40", compile_case(&files(mixed)));
}

#[test]
fn golden_04_header_canary_and_weights() {
    let routing = scenario("04-header-canary", "routing.yaml");
    let files = |r: String| {
        vec![
            ("app.yaml", scenario("04-header-canary", "app.yaml")),
            ("routing.yaml", r),
        ]
    };
    check("04-header-canary", compile_case(&files(routing.clone())));
    let weighted = replace_doc(
        &routing,
        "website-virtual-service",
        &scenario("04-header-canary", "weights-20-80.yaml"),
    );
    check("04-weights-20-80", compile_case(&files(weighted)));
}

/// VirtualService HTTP features (fault, retries, timeouts, mirrors, redirects, rewrites, CORS,
/// header operations, relative weights, match fields and route names) as the ingress gateway's
/// routes, with the warning for the route to an unknown host.
#[test]
fn golden_05_vs_http() {
    let routes = std::fs::read_to_string(repo().join("tests/testdata/vs-http/routes.yaml"))
        .expect("read the vs-http fixture");
    check(
        "05-vs-http",
        compile_case_reporting(&[("routes.yaml", routes)], true),
    );
}

/// DestinationRule traffic policies: the clusters (load balancers, circuit breakers, HTTP
/// options, outlier detection, port-level and subset policies, rules merged for one host) and
/// the route hash policies of `tests/testdata/dr-policy/rules.yaml`, the file the behaviour
/// test (`dr_policy.rs`) serves, with the warnings for what is not served.
#[test]
fn golden_06_destination_rules() {
    let rules = std::fs::read_to_string(repo().join("tests/testdata/dr-policy/rules.yaml"))
        .expect("read the dr-policy fixture");
    check(
        "06-destination-rules",
        compile_case_reporting(&[("rules.yaml", rules)], true),
    );
}

/// ServiceEntry resolutions as cluster shapes (NONE: original destination; STATIC: EDS; DNS:
/// STRICT_DNS on the hosts or the endpoints' names; DNS_ROUND_ROBIN: LOGICAL_DNS), and the
/// endpoints of `endpoints[].ports`, `targetPort` and a `workloadSelector` choosing
/// WorkloadEntries and a Pod, from `tests/testdata/service-entries/entries.yaml`.
#[test]
fn golden_07_service_entries() {
    check(
        "07-service-entries",
        service_entry_case("service-entries/entries.yaml"),
    );
}

/// Istio mutual TLS to ServiceEntries: a MESH_INTERNAL entry's cluster matches mutual TLS to
/// the WorkloadEntry that names a service account (verifying its SPIFFE id and the entry's
/// `subjectAltNames`), a MESH_EXTERNAL one never does, from
/// `tests/testdata/service-entries/mesh-identity.yaml`.
#[test]
fn golden_07_service_entry_mesh_identity() {
    check(
        "07-service-entry-mesh-identity",
        service_entry_case("service-entries/mesh-identity.yaml"),
    );
}

/// The clusters and endpoints of the `*.example.com` hosts compiled from `fixture` (under
/// `tests/testdata/`), with the diagnostics.
fn service_entry_case(fixture: &str) -> Value {
    let entries = std::fs::read_to_string(repo().join("tests/testdata").join(fixture))
        .expect("read the service-entries fixture");
    let all = compile_case_reporting(&[("entries.yaml", entries)], true);
    // The entries' clusters and endpoints, not the scenario workloads' ones.
    let mut out = serde_json::Map::new();
    for kind in ["cds", "eds"] {
        let only: serde_json::Map<String, Value> = all["shared"][kind]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(name, _)| name.contains(".example.com"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        out.insert(kind.into(), Value::Object(only));
    }
    out.insert("diagnostics".into(), all["diagnostics"].clone());
    Value::Object(out)
}

/// The inbound listener and the inbound clusters compiled for a REDIRECT sidecar
/// (`reviews-1`, labels `app=reviews`, `POD_PORTS` `grpc=9443`) from `manifests`.
fn compile_inbound(manifests: &str) -> Value {
    compile_inbound_for(manifests, false)
}

/// [`compile_inbound`]; with `agent`, the sidecar has the agent's SDS (it may terminate mutual
/// TLS) and the output adds the outbound cluster and endpoints of `reviews` port 80.
fn compile_inbound_for(manifests: &str, agent: bool) -> Value {
    let dir = tempfile::TempDir::new().expect("temp dir");
    std::fs::write(dir.path().join("inbound.yaml"), manifests).expect("write manifest");
    let (objects, errors) = load_dirs(&[dir.path().to_path_buf()]);
    assert!(errors.is_empty(), "manifests load cleanly: {errors:?}");
    let mut index = Index::new();
    index.reset(meshpilot_model::SourceId::Files, objects);
    let view = index.build_view("cluster.local", None);
    let shared = meshpilot_compile::compile_shared(&view).expect("consistent shared set");
    let mut md = BTreeMap::new();
    md.insert(
        "LABELS".to_string(),
        MetadataValue::Map([("app".to_string(), "reviews".to_string())].into()),
    );
    md.insert(
        "POD_PORTS".to_string(),
        MetadataValue::String(r#"[{"name":"grpc","containerPort":9443,"protocol":"TCP"}]"#.into()),
    );
    if agent {
        md.insert(
            "WORKLOAD_IDENTITY_SOCKET_FILE".to_string(),
            MetadataValue::String("socket".into()),
        );
    }
    let p = Proxy::parse(
        "sidecar~127.0.0.30~reviews-1.default~default.svc.cluster.local",
        &md,
    )
    .expect("valid node id");
    let class = meshpilot_compile::compile_class(&view, &p);
    assert!(class.errors.is_empty(), "{:?}", class.errors);
    let snap = meshpilot_compile::assemble(p.class_key(), &shared, &class).expect("consistent");
    let all = snap
        .to_json(&[XdsType::Cluster, XdsType::Endpoint, XdsType::Listener])
        .expect("json");
    const REVIEWS_80: &str = "outbound|80||reviews.default.svc.cluster.local";
    let only = |section: &str, keep: &dyn Fn(&str) -> bool| -> Value {
        let items = all[section].as_object().expect("section");
        Value::Object(
            items
                .iter()
                .filter(|(name, _)| keep(name))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    };
    let mut out = json!({
        "lds": only("lds", &|n| n == "virtualInbound"),
        "cds": only("cds", &|n| n.starts_with("inbound|") || n == "InboundPassthroughCluster"),
    });
    if agent {
        out["outbound_cds"] = only("cds", &|n| n == REVIEWS_80);
        out["outbound_eds"] = only("eds", &|n| n == REVIEWS_80);
    }
    out
}

const INBOUND_SERVICES: &str = r#"apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: tcp-db, port: 3306, targetPort: 3306}
  - {name: web, port: 7070, targetPort: 7070}
  - {name: grpc-api, port: 9090, targetPort: grpc}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-1, namespace: default, labels: {app: reviews}}
spec:
  containers:
  - name: app
    ports: [{name: grpc, containerPort: 9443}]
status: {phase: Running, podIP: 127.0.0.30, conditions: [{type: Ready, status: "True"}]}
"#;

/// A sidecar in Istio's REDIRECT layout selected by Services: its `virtualInbound` listener
/// and its own clusters (`inbound|PORT||`, `InboundPassthroughCluster`), for an HTTP port
/// (targetPort 80 → 8080), a TCP port, a port of unknown protocol (HTTP and TCP chains told
/// apart by http_inspector) and a named targetPort resolved through `POD_PORTS`.
#[test]
fn golden_inbound_redirect_sidecar() {
    check(
        "inbound-redirect-sidecar",
        compile_inbound(INBOUND_SERVICES),
    );
}

/// The same pod with a Sidecar whose `ingress` listeners replace the Services' ports: one to
/// loopback (a STATIC cluster), one to the pod IP on another port, one to a unix socket, one to
/// where the connection was sent.
#[test]
fn golden_inbound_sidecar_ingress() {
    let sidecar = r#"---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews, namespace: default}
spec:
  workloadSelector: {labels: {app: reviews}}
  ingress:
  - {port: {number: 9080, protocol: HTTP, name: http}, defaultEndpoint: "127.0.0.1:8080"}
  - {port: {number: 9081, protocol: TCP, name: tcp}, defaultEndpoint: "0.0.0.0:8081"}
  - {port: {number: 9082, protocol: GRPC, name: grpc}, defaultEndpoint: "unix:///var/run/app.sock"}
  - {port: {number: 9083, protocol: HTTP, name: plain}}
"#;
    check(
        "inbound-sidecar-ingress",
        compile_inbound(&format!("{INBOUND_SERVICES}{sidecar}")),
    );
}

/// The same pod injected (label `security.istio.io/tlsMode: istio`, service account `reviews`)
/// with the agent's SDS, under PeerAuthentication: the namespace STRICT, the workload's 3306
/// PERMISSIVE and 7070 DISABLE. Its inbound chains per mode, and the outbound cluster of its
/// Service with auto-mTLS (`transport_socket_matches`, SNI, the SPIFFE SAN) and the endpoint's
/// `tlsMode` metadata.
#[test]
fn golden_inbound_mtls() {
    let injected = INBOUND_SERVICES
        .replace(
            "labels: {app: reviews}}",
            "labels: {app: reviews, security.istio.io/tlsMode: istio}}",
        )
        .replace(
            "spec:\n  containers:",
            "spec:\n  serviceAccountName: reviews\n  containers:",
        );
    let policies = r#"---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  portLevelMtls:
    3306: {mode: PERMISSIVE}
    7070: {mode: DISABLE}
"#;
    let out = compile_inbound_for(&format!("{injected}{policies}"), true);
    assert!(
        out["outbound_cds"]
            .to_string()
            .contains("spiffe://cluster.local/ns/default/sa/reviews"),
        "{out}"
    );
    check("inbound-mtls", out);
}

/// The listeners and routes compiled from `manifests` for the proxy `id` with `labels` in
/// Istio's REDIRECT layout (its own inbound side left out).
fn compile_outbound(manifests: &str, id: &str, labels: &[(&str, &str)]) -> Value {
    let dir = tempfile::TempDir::new().expect("temp dir");
    std::fs::write(dir.path().join("outbound.yaml"), manifests).expect("write manifest");
    let (objects, errors) = load_dirs(&[dir.path().to_path_buf()]);
    assert!(errors.is_empty(), "manifests load cleanly: {errors:?}");
    let mut index = Index::new();
    index.reset(meshpilot_model::SourceId::Files, objects);
    let view = index.build_view("cluster.local", None);
    let shared = meshpilot_compile::compile_shared(&view).expect("consistent shared set");
    let mut md = BTreeMap::new();
    md.insert(
        "LABELS".to_string(),
        MetadataValue::Map(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
    );
    let p = Proxy::parse(id, &md).expect("valid node id");
    let class = meshpilot_compile::compile_class(&view, &p);
    assert!(class.errors.is_empty(), "{:?}", class.errors);
    let snap = meshpilot_compile::assemble(p.class_key(), &shared, &class).expect("consistent");
    let mut all = snap
        .to_json(&[XdsType::Listener, XdsType::Route])
        .expect("json");
    if let Some(lds) = all["lds"].as_object_mut() {
        lds.remove("virtualInbound");
    }
    all
}

/// A REDIRECT sidecar's outbound layer-4 listeners (a `VIP_PORT` listener per TCP/TLS
/// service, VirtualService `tcp` and `tls` routes as filter chains, `virtualOutbound`) and its
/// HTTP route configuration's `allow_any` catch-all; and a gateway's TCP and TLS PASSTHROUGH
/// servers.
#[test]
fn golden_outbound_layer4() {
    let manifests = std::fs::read_to_string(repo().join("tests/testdata/outbound/layer4.yaml"))
        .expect("read the outbound fixture");
    check(
        "outbound-layer4-sidecar",
        compile_outbound(
            &manifests,
            "sidecar~10.0.0.5~client-1.default~default.svc.cluster.local",
            &[("app", "client")],
        ),
    );
    check(
        "outbound-layer4-gateway",
        compile_outbound(
            &manifests,
            "router~10.0.0.6~ingress-1.istio-system~istio-system.svc.cluster.local",
            &[("istio", "ingressgateway")],
        ),
    );
}
