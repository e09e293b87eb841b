//! Nothing lost under churn: a seeded random sequence of adds, edits and deletes (Services with
//! their Pods, VirtualServices, DestinationRules, ServiceEntries) written into the served
//! directory — or, in the second test, applied to and deleted from the stand-in Kubernetes API
//! server (`support::kubeapi`, the real wire protocol; no real cluster), with EndpointSlices —
//! while real Envoys connect, leave and come back; then every connected Envoy must hold exactly
//! what a freshly started meshpilot computes for it from the final input — the same resources
//! with the same content-hash versions, as the server's dump and as Envoy's own.
//!
//! `CHURN_SEED` and `CHURN_STEPS` (default 40) tune it; the seed is printed on failure, and both
//! servers' dumps, configz and the churned server's log are written to the temp directory
//! (`churn-*.json`, `churn-server.log`, `churn-steps.txt`).
//!

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use support::kubeapi::{Istio, KubeApi};
use support::rng::Rng;
use support::{Envoy, Meshpilot};

const WAIT: Duration = Duration::from_secs(20);
const SERVICES: usize = 4;

/// What the directory holds, per service: its pods (by index), a VirtualService's weight for
/// v1, a DestinationRule's subsets and policy; and the ServiceEntries.
#[derive(Default)]
struct Mesh {
    present: [bool; SERVICES],
    pods: [Vec<u8>; SERVICES],
    vs_weight: [Option<u32>; SERVICES],
    dr: [Option<u32>; SERVICES],
    entries: BTreeMap<u8, u8>,
}

/// The Service and its Pods; with `slice`, also the EndpointSlice the Kubernetes endpoint
/// controller would keep for them (meshpilot reads endpoints from slices in `--kube` mode).
fn service_file(i: usize, pods: &[u8], slice: bool) -> String {
    let mut text = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: default}}\n\
         spec:\n  selector: {{app: svc-{i}}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n"
    );
    for p in pods {
        let version = if p % 2 == 0 { "v1" } else { "v2" };
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: svc-{i}-{p}\n  namespace: default\n  \
             labels: {{app: svc-{i}, version: {version}}}\nspec:\n  containers: [{{name: app, image: app}}]\n\
             status:\n  phase: Running\n  podIP: 10.9.{i}.{}\n  conditions: [{{type: Ready, status: \"True\"}}]\n",
            u32::from(*p) + 1
        ));
    }
    if slice {
        text.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-{i}-slice\n  \
             namespace: default\n  labels: {{kubernetes.io/service-name: svc-{i}}}\naddressType: IPv4\n\
             ports: [{{name: http, port: 8080}}]\nendpoints:\n"
        ));
        if pods.is_empty() {
            text.push_str("  []\n");
        }
        for p in pods {
            text.push_str(&format!(
                "  - addresses: [10.9.{i}.{}]\n    conditions: {{ready: true}}\n    \
                 targetRef: {{kind: Pod, name: svc-{i}-{p}, namespace: default}}\n",
                u32::from(*p) + 1
            ));
        }
    }
    text
}

fn vs_file(i: usize, w: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs-{i}, namespace: default}}\n\
         spec:\n  hosts: [svc-{i}, \"svc-{i}.example.com\"]\n  gateways: [mesh, istio-system/gw]\n  http:\n  - route:\n\
         \x20   - destination: {{host: svc-{i}, subset: v1}}\n      weight: {w}\n\
         \x20   - destination: {{host: svc-{i}, subset: v2}}\n      weight: {}\n",
        100 - w
    )
}

fn dr_file(i: usize, max: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: dr-{i}, namespace: default}}\n\
         spec:\n  host: svc-{i}\n  trafficPolicy:\n    connectionPool: {{tcp: {{maxConnections: {max}}}}}\n\
         \x20 subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n"
    )
}

fn se_file(j: u8, port: u8) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: se-{j}, namespace: default}}\n\
         spec:\n  hosts: [ext-{j}.example.net]\n  ports: [{{number: {}, name: http, protocol: HTTP}}]\n\
         \x20 resolution: STATIC\n  endpoints: [{{address: 10.8.0.{}}}]\n",
        7000 + u32::from(port),
        u32::from(j) + 1
    )
}

const GATEWAY: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*/*.example.com"]
"#;

/// Where the churn is written: files in a served directory, or objects in the stand-in API
/// server (each "file" applied as its documents; what a file no longer holds is deleted).
enum Input {
    Dir(tempfile::TempDir),
    Kube {
        api: KubeApi,
        kubeconfig: PathBuf,
        _dir: tempfile::TempDir,
        /// Per file name, the (kind, namespace, name) of the objects it last held.
        written: BTreeMap<String, BTreeSet<(String, String, String)>>,
    },
}

impl Input {
    async fn dir() -> Input {
        Input::Dir(tempfile::tempdir().expect("tempdir"))
    }

    async fn kube() -> Input {
        let api = KubeApi::start(Istio::all(&["v1"])).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = api.kubeconfig(dir.path());
        Input::Kube {
            api,
            kubeconfig,
            _dir: dir,
            written: BTreeMap::new(),
        }
    }

    fn slices(&self) -> bool {
        matches!(self, Input::Kube { .. })
    }

    fn write(&mut self, name: &str, text: Option<String>) {
        match self {
            Input::Dir(dir) => {
                let path = dir.path().join(name);
                match text {
                    Some(t) => {
                        let tmp = dir.path().join(format!(".{name}.tmp"));
                        std::fs::write(&tmp, t).expect("write");
                        std::fs::rename(&tmp, &path).expect("rename");
                    }
                    None => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            Input::Kube { api, written, .. } => {
                let docs: Vec<Value> = match &text {
                    Some(t) => serde_saphyr::from_multiple(t).expect("test YAML"),
                    None => Vec::new(),
                };
                let now: BTreeSet<(String, String, String)> = docs
                    .iter()
                    .map(|d| {
                        let field = |v: &Value| v.as_str().unwrap_or("default").to_string();
                        (
                            field(&d["kind"]),
                            field(&d["metadata"]["namespace"]),
                            field(&d["metadata"]["name"]),
                        )
                    })
                    .collect();
                let before = written.insert(name.to_string(), now.clone());
                for (kind, ns, obj) in before.unwrap_or_default().difference(&now) {
                    api.delete(kind, ns, obj);
                }
                for doc in docs {
                    assert!(api.apply(doc), "the stand-in API serves every churned kind");
                }
            }
        }
    }

    async fn serve(&self) -> Meshpilot {
        match self {
            Input::Dir(dir) => Meshpilot::start(&[dir.path()]).await,
            Input::Kube { kubeconfig, .. } => {
                let server = Meshpilot::spawn_with_env(
                    &[],
                    &["--kube"],
                    &[("KUBECONFIG", kubeconfig.as_path())],
                );
                server.wait_ready(WAIT).await;
                server
            }
        }
    }
}

/// One random change to the mesh, written to its file; returns the file and what it now holds,
/// for the step log written on failure.
fn step(rng: &mut Rng, mesh: &mut Mesh, input: &mut Input) -> String {
    let slices = input.slices();
    let i = rng.below(SERVICES);
    match rng.below(6) {
        0 => {
            mesh.present[i] = !mesh.present[i];
            let text = mesh.present[i].then(|| service_file(i, &mesh.pods[i], slices));
            input.write(&format!("svc-{i}.yaml"), text);
            format!("svc-{i}: present {}", mesh.present[i])
        }
        1 | 2 => {
            let p = rng.below(6) as u8;
            if let Some(at) = mesh.pods[i].iter().position(|x| *x == p) {
                mesh.pods[i].remove(at);
            } else {
                mesh.pods[i].push(p);
            }
            if mesh.present[i] {
                input.write(
                    &format!("svc-{i}.yaml"),
                    Some(service_file(i, &mesh.pods[i], slices)),
                );
            }
            format!(
                "svc-{i}: pods {:?} (present {})",
                mesh.pods[i], mesh.present[i]
            )
        }
        3 => {
            mesh.vs_weight[i] = match mesh.vs_weight[i] {
                Some(_) if rng.below(3) == 0 => None,
                _ => Some(rng.below(101) as u32),
            };
            input.write(
                &format!("vs-{i}.yaml"),
                mesh.vs_weight[i].map(|w| vs_file(i, w)),
            );
            format!("vs-{i}: weight {:?}", mesh.vs_weight[i])
        }
        4 => {
            mesh.dr[i] = match mesh.dr[i] {
                Some(_) if rng.below(3) == 0 => None,
                _ => Some(1 + rng.below(200) as u32),
            };
            input.write(&format!("dr-{i}.yaml"), mesh.dr[i].map(|m| dr_file(i, m)));
            format!("dr-{i}: max connections {:?}", mesh.dr[i])
        }
        _ => {
            let j = rng.below(3) as u8;
            let text = if mesh.entries.remove(&j).is_some() {
                None
            } else {
                let port = rng.below(3) as u8;
                mesh.entries.insert(j, port);
                Some(se_file(j, port))
            };
            let what = format!("se-{j}: port {:?}", mesh.entries.get(&j));
            input.write(&format!("se-{j}.yaml"), text);
            what
        }
    }
}

/// A proxy of the test: its node id, labels, namespace and protocol.
struct Node {
    id: String,
    labels: Vec<(String, String)>,
    delta: bool,
}

fn nodes() -> Vec<Node> {
    let node = |kind: &str, ns: &str, pod: &str, label: (&str, &str), delta: bool| Node {
        id: support::node_id(kind, support::loopback_ip(), pod, ns),
        labels: vec![(label.0.to_string(), label.1.to_string())],
        delta,
    };
    vec![
        node(
            "router",
            "istio-system",
            "gw-1",
            ("istio", "ingressgateway"),
            false,
        ),
        node("sidecar", "default", "client-1", ("app", "client"), true),
        node("sidecar", "default", "client-2", ("app", "client"), false),
    ]
}

async fn connect(server: &Meshpilot, node: &Node) -> Envoy {
    let admin = support::admin_addr();
    let mut args = support::bootstrap_args(&node.id, server.xds(), admin);
    args.labels = node.labels.clone();
    args.delta = node.delta;
    Envoy::start(support::render_bootstrap(&args), admin).await
}

/// What a server sent `id`, per xDS type: the resources as they are, without the per-resource
/// version and send time (those say *when* a resource last changed, which differs between a
/// server that saw the churn and one that did not), and each type's version (a content hash:
/// equal versions, equal sets).
async fn sent_to(server: &Meshpilot, id: &str) -> Value {
    let mut dump = server
        .debug_json(&format!("/debug/config_dump?proxyID={id}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    canonical(&mut dump, 0);
    dump
}

/// The input objects a server serves (configz's objects, each with its body), by key.
async fn served_objects(server: &Meshpilot) -> BTreeMap<String, Value> {
    let cz = server
        .debug_json("/debug/configz")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    cz["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| (o["key"].to_string(), o["object"]["body"].clone()))
        .collect()
}

/// What an Envoy holds: its dynamic clusters, listeners, routes and endpoints, canonical as
/// [`sent_to`] but without any version (its static cluster to the control plane differs by
/// address and is left out).
async fn held_by(envoy: &Envoy) -> Value {
    let dump = envoy.config_dump().await;
    let mut out = serde_json::Map::new();
    for section in [
        "ClustersConfigDump",
        "ListenersConfigDump",
        "RoutesConfigDump",
        "EndpointsConfigDump",
    ] {
        let mut s = support::dump::section(&dump, section)
            .cloned()
            .unwrap_or(Value::Null);
        if let Some(listeners) = s["dynamic_listeners"].as_array_mut() {
            // A listener Envoy is still draining after its removal is not configuration it
            // holds; Envoy takes minutes to let it go.
            for l in listeners.iter_mut() {
                if let Value::Object(m) = l {
                    m.remove("draining_state");
                }
            }
            listeners
                .retain(|l| l.get("active_state").is_some() || l.get("warming_state").is_some());
        }
        if let Value::Object(m) = &mut s {
            m.remove("static_clusters");
            m.remove("static_listeners");
            m.remove("static_route_configs");
            m.remove("static_endpoint_configs");
        }
        // Every version out: a Delta stream's `system_version_info` says when Envoy last took
        // a response, not what it holds; the content itself is compared, and the server-side
        // comparison already checks each type's content-hash version.
        canonical(&mut s, 2);
        out.insert(section.to_string(), s);
    }
    Value::Object(out)
}

/// An empty route configuration or endpoint assignment (only its name).
fn is_stand_in(entry: &Value) -> bool {
    let only = |v: &Value, name: &str| {
        v.as_object()
            .is_some_and(|m| m.keys().all(|k| k == "@type" || k == name))
    };
    only(&entry["route_config"], "name") || only(&entry["endpoint_config"], "cluster_name")
}

/// Removes send times everywhere and versions below a type's top level; sorts arrays of
/// resources by their JSON so order does not matter. Also the input objects the server
/// attributes a resource to (`sources`): for a resource whose bytes did not change, the server
/// keeps the attribution of when it was last sent (known and left: the churned server may list
/// fewer VirtualServices behind an unchanged listener than a fresh one).
fn canonical(v: &mut Value, depth: usize) {
    match v {
        Value::Object(map) => {
            map.remove("last_updated");
            map.remove("sources");
            if depth > 1 {
                map.remove("version_info");
            }
            for child in map.values_mut() {
                canonical(child, depth + 1);
            }
        }
        Value::Array(items) => {
            // An empty stand-in for a name Envoy still asks for (a listener it is draining
            // holds its route configuration name) is answered as the protocol requires, by a
            // server that saw the listener go; a fresh server was never asked.
            items.retain(|i| !is_stand_in(i));
            for child in items.iter_mut() {
                canonical(child, depth + 1);
            }
            items.sort_by_key(|i| i.to_string());
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_random_churn_every_proxy_holds_what_a_fresh_server_computes() {
    let _bin = support::require_envoy!();
    churn(Input::dir().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_random_churn_through_the_kubernetes_api_every_proxy_holds_what_a_fresh_server_computes()
 {
    let _bin = support::require_envoy!();
    churn(Input::kube().await).await;
}

async fn churn(mut input: Input) {
    let seed: u64 = std::env::var("CHURN_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x636875726e);
    let steps: usize = std::env::var("CHURN_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let mut mesh = Mesh::default();
    for i in 0..SERVICES {
        mesh.present[i] = true;
        mesh.pods[i] = vec![0, 1];
        let text = service_file(i, &mesh.pods[i], input.slices());
        input.write(&format!("svc-{i}.yaml"), Some(text));
    }
    input.write("gw.yaml", Some(GATEWAY.to_string()));
    let server = input.serve().await;
    let nodes = nodes();
    // The gateway and one sidecar from the start; the other sidecar joins half way; the first
    // sidecar leaves a third of the way and comes back at two thirds.
    let mut envoys: Vec<Option<Envoy>> = vec![
        Some(connect(&server, &nodes[0]).await),
        Some(connect(&server, &nodes[1]).await),
        None,
    ];
    let mut rng = Rng::new(seed);
    let mut log = Vec::with_capacity(steps);
    for s in 0..steps {
        log.push(step(&mut rng, &mut mesh, &mut input));
        if s == steps / 3 {
            envoys[1] = None;
        }
        if s == steps / 2 {
            envoys[2] = Some(connect(&server, &nodes[2]).await);
        }
        if s == 2 * steps / 3 {
            envoys[1] = Some(connect(&server, &nodes[1]).await);
        }
        tokio::time::sleep(Duration::from_millis(rng.below(150) as u64)).await;
    }
    // A proxy shows SYNCED while the last writes still wait out the debounce, so first wait
    // until the churned server serves the same input objects as a fresh one read from the final
    // files (configz is published after that input's snapshots), then for every proxy to sync.
    let fresh = input.serve().await;
    let final_input = served_objects(&fresh).await;
    support::eventually(
        "the churned server serves the final files",
        WAIT,
        || async {
            let now = served_objects(&server).await;
            if now == final_input {
                Ok(())
            } else {
                Err(format!(
                    "{} objects served, {} in the files",
                    now.len(),
                    final_input.len()
                ))
            }
        },
    )
    .await;
    for node in &nodes {
        server.wait_synced(&node.id, 1, WAIT).await;
    }

    for (node, envoy) in nodes.iter().zip(&envoys) {
        let envoy = envoy.as_ref().expect("connected at the end");
        envoy.assert_all_acked().await;
        let held = held_by(envoy).await;
        let sent = sent_to(&server, &node.id).await;
        let twin = connect(&fresh, node).await;
        fresh.wait_synced(&node.id, 1, WAIT).await;
        let fresh_sent = sent_to(&fresh, &node.id).await;
        let fresh_held = held_by(&twin).await;
        assert!(
            sent["configs"].as_array().is_some_and(|c| !c.is_empty()),
            "{}: nothing sent",
            node.id
        );
        // The churn reached the data plane: every pod of a present Service is an endpoint.
        let text = fresh_sent.to_string();
        for i in (0..SERVICES).filter(|i| mesh.present[*i]) {
            for p in &mesh.pods[i] {
                let ip = format!("\"10.9.{i}.{}\"", u32::from(*p) + 1);
                assert!(text.contains(&ip), "{}: endpoint {ip} missing", node.id);
            }
        }
        if sent != fresh_sent || held != fresh_held {
            let out = std::env::temp_dir();
            let _ = std::fs::write(out.join("churn-server.log"), server.logs());
            let _ = std::fs::write(out.join("churn-steps.txt"), log.join("\n"));
            let cz = server
                .debug_json("/debug/configz")
                .await
                .unwrap_or_default();
            let _ = std::fs::write(
                out.join("churn-configz.json"),
                serde_json::to_string_pretty(&cz).unwrap_or_default(),
            );
            let cz = fresh.debug_json("/debug/configz").await.unwrap_or_default();
            let _ = std::fs::write(
                out.join("churn-fresh-configz.json"),
                serde_json::to_string_pretty(&cz).unwrap_or_default(),
            );
            for (name, v) in [
                ("churn-sent", &sent),
                ("churn-fresh", &fresh_sent),
                ("churn-held", &held),
                ("churn-fresh-held", &fresh_held),
            ] {
                let _ = std::fs::write(
                    out.join(format!("{name}.json")),
                    serde_json::to_string_pretty(v).unwrap_or_default(),
                );
            }
        }
        assert_eq!(
            sent, fresh_sent,
            "{} (CHURN_SEED={seed}): what the churned server sent differs from a fresh server's",
            node.id
        );
        assert_eq!(
            held, fresh_held,
            "{} (CHURN_SEED={seed}): the Envoy holds other config than a fresh server's Envoy",
            node.id
        );
    }
}
