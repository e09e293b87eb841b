//! `serve --kube` against a stand-in API server (`support::kubeapi`: a test server speaking the
//! list/watch wire protocol to the real kube-rs client in the real binary, pointed at it by a
//! generated kubeconfig). What a user sees is checked through a real Envoy gateway with real
//! backends, and through the debug endpoints (`/ready`, `/debug/registryz`, `/debug/configz`).
//! A PeerAuthentication applied through the API is checked on a sidecar in a pod, behind
//! `meshpilot agent` with a certificate from the CA (tokens reviewed by the API server).

mod support;

support::pods::pod_helper!();

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use support::kubeapi::{Istio, KubeApi};
use support::{Backend, Envoy, Meshpilot, eventually};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(15);

/// A test API server and the kubeconfig pointing at it.
struct Cluster {
    api: KubeApi,
    dir: TempDir,
}

impl Cluster {
    async fn start(istio: Istio) -> Cluster {
        let api = KubeApi::start(istio).await;
        let dir = TempDir::new().expect("temp dir");
        api.kubeconfig(dir.path());
        Cluster { api, dir }
    }

    /// `meshpilot serve --kube EXTRA…` with `KUBECONFIG` set; does not wait for readiness.
    fn spawn(&self, extra: &[&str]) -> Meshpilot {
        let kubeconfig = self.dir.path().join("kubeconfig");
        let mut args = vec!["--kube"];
        args.extend_from_slice(extra);
        Meshpilot::spawn_with_env(&[], &args, &[("KUBECONFIG", kubeconfig.as_path())])
    }

    async fn serve(&self, extra: &[&str]) -> Meshpilot {
        let server = self.spawn(extra);
        server.wait_ready(WAIT).await;
        server
    }
}

fn service(ns: &str, name: &str, port: u16, selector: Option<&str>) -> Value {
    let mut svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [{"name": "http", "port": port}], "clusterIP": "10.96.0.10"}});
    if let Some(app) = selector {
        svc["spec"]["selector"] = json!({ "app": app });
    }
    svc
}

fn pod(ns: &str, name: &str, app: &str, ip: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "test"}]},
        "status": {"phase": "Running", "podIP": ip,
                   "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn virtual_service(ns: &str, name: &str, host: &str, weight: i64) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"hosts": [host], "http": [{"route": [{"destination": {"host": host}, "weight": weight}]}]}})
}

/// The server's log without terminal colour codes.
fn logs_of(server: &Meshpilot) -> String {
    let raw = server.logs();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip `ESC [ … m`.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn json_of(server: &Meshpilot, path: &str) -> Result<Value, String> {
    let r = server.debug_get(path).await.map_err(|e| format!("{e:#}"))?;
    if r.status != 200 {
        return Err(format!("{path}: HTTP {}", r.status));
    }
    serde_json::from_str(&r.body).map_err(|e| format!("{path}: {e}"))
}

/// `address` of every endpoint of `host:port` in `/debug/registryz`; `None` if the host is
/// not there.
fn registry_endpoints(registry: &Value, host: &str, port: u16) -> Option<Vec<String>> {
    let svc = registry.get(host)?;
    Some(
        svc["endpoints"][port.to_string()]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["address"].as_str().map(str::to_string))
            .collect(),
    )
}

fn hosts(registry: &Value) -> BTreeSet<String> {
    registry
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Waits until `/debug/registryz` satisfies `pred`; returns it.
async fn wait_registry(server: &Meshpilot, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    eventually(what, WAIT, || async {
        let reg = json_of(server, "/debug/registryz").await?;
        if pred(&reg) {
            Ok(reg)
        } else {
            Err(format!("registry hosts: {:?}", hosts(&reg)))
        }
    })
    .await
}

async fn gateway(server: &Meshpilot) -> (Envoy, SocketAddr) {
    support::ingress_gateway(server, WAIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_objects_reach_envoy_and_follow_changes() {
    let _envoy_bin = support::require_envoy!();
    let (ip1, ip2) = (support::loopback_ip(), support::loopback_ip());
    let _v1 = Backend::start(ip1, 8080, "V1");
    let _v2 = Backend::start(ip2, 8080, "V2");
    // The manifests say v1alpha3; the server serves all three versions and meshpilot picks v1.
    let k = Cluster::start(Istio::all(&["v1", "v1beta1", "v1alpha3"])).await;
    for file in ["app.yaml", "destination-rule.yaml", "istio-gateway.yaml"] {
        k.api
            .apply_yaml(&support::scenario_file("01-mvc-canary", file));
    }
    let labels = |v| [("app", "mvc-service"), ("version", v)];
    k.api.apply_yaml(&support::pod_yaml(
        "mvc-v1",
        "default",
        &labels("v1"),
        ip1,
        &[],
    ));
    k.api.apply_yaml(&support::pod_yaml(
        "mvc-v2",
        "default",
        &labels("v2"),
        ip2,
        &[],
    ));
    let server = k.serve(&[]).await;
    let (envoy, addr) = gateway(&server).await;

    let dist = support::distribution(addr, "mvc.example.com", "/service", &[], 400).await;
    support::assert_share(&dist, "V1", 80.0);
    support::assert_share(&dist, "V2", 20.0);

    // A changed VirtualService (blue/green: everything to v2) reaches the gateway.
    k.api.apply_yaml(&support::scenario_file(
        "01-mvc-canary",
        "istio-gateway-bluegreen.yaml",
    ));
    eventually("all traffic to v2", WAIT, || async {
        let d = support::distribution(addr, "mvc.example.com", "/service", &[], 20).await;
        if d.keys().eq(["V2"].iter()) {
            Ok(())
        } else {
            Err(format!("{d:?}"))
        }
    })
    .await;

    // A deleted Pod leaves EDS: subset v2 has no endpoint left, so requests get 503.
    k.api.delete("Pod", "default", "mvc-v2");
    let v2_cluster = "outbound|8080|v2|mvc-service.default.svc.cluster.local";
    envoy
        .wait_for_dump("v2 endpoints gone", WAIT, |d| {
            support::dump::endpoints(d, v2_cluster).is_empty()
        })
        .await;
    let d = support::distribution(addr, "mvc.example.com", "/service", &[], 10).await;
    support::assert_only(&d, "HTTP 503");

    // A deleted VirtualService leaves the routes: 404.
    k.api.delete("VirtualService", "default", "service-gateway");
    eventually("no route for /service", WAIT, || async {
        let d = support::distribution(addr, "mvc.example.com", "/service", &[], 5).await;
        if d.keys().eq(["HTTP 404"].iter()) {
            Ok(())
        } else {
            Err(format!("{d:?}"))
        }
    })
    .await;
    envoy.assert_all_acked().await;
    let logs = logs_of(&server);
    assert!(
        logs.contains("kind=\"VirtualService\" api_version=networking.istio.io/v1\n"),
        "expected v1 to be chosen:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_waits_for_every_kind_and_a_cluster_without_istio_is_served() {
    let k = Cluster::start(Istio::none()).await;
    k.api.apply(service("default", "a", 80, Some("a")));
    k.api.apply(pod("default", "a-1", "a", "10.1.0.1", "n1"));
    k.api.hold_lists("endpointslices");
    let server = k.spawn(&[]);
    eventually(
        "every other kind watched, EndpointSlices listing",
        WAIT,
        || async {
            let pending: Vec<&str> = ["namespaces", "nodes", "services", "pods"]
                .into_iter()
                .filter(|p| k.api.watch_count(p) == 0)
                .collect();
            if pending.is_empty() && k.api.list_count("endpointslices") > 0 {
                Ok(())
            } else {
                Err(format!("not yet watching {pending:?}"))
            }
        },
    )
    .await;
    let r = server.debug_get("/ready").await.expect("GET /ready");
    assert_eq!(
        r.status, 503,
        "ready before EndpointSlices synced: {}",
        r.body
    );

    k.api.release_lists("endpointslices");
    server.wait_ready(WAIT).await;
    let reg = json_of(&server, "/debug/registryz")
        .await
        .expect("registryz");
    assert_eq!(
        registry_endpoints(&reg, "a.default.svc.cluster.local", 80),
        Some(vec!["10.1.0.1".to_string()])
    );
    assert!(
        logs_of(&server).contains("does not serve networking.istio.io"),
        "{}",
        logs_of(&server)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relist_after_410_replaces_each_kind_without_loss_or_duplicates() {
    // Only v1beta1, and no Sidecar CRD: the other kinds are watched.
    let mut istio = Istio::all(&["v1beta1"]);
    istio.kinds.retain(|k| *k != "Sidecar");
    let k = Cluster::start(istio).await;
    k.api.apply(service("default", "a", 80, Some("a")));
    k.api.apply(service("default", "b", 80, Some("b")));
    k.api.apply(pod("default", "a-1", "a", "10.1.0.1", "n1"));
    k.api.apply(pod("default", "b-1", "b", "10.1.0.2", "n1"));
    let server = k.serve(&[]).await;
    wait_registry(&server, "a and b", |r| {
        registry_endpoints(r, "a.default.svc.cluster.local", 80).is_some()
            && registry_endpoints(r, "b.default.svc.cluster.local", 80).is_some()
    })
    .await;

    // Changes the watches never see, then the history is compacted: every watch gets 410.
    let service_lists = k.api.list_count("services");
    k.api.freeze_watches();
    k.api.delete("Service", "default", "a");
    k.api.apply(service("default", "c", 80, Some("c")));
    k.api.apply(pod("default", "c-1", "c", "10.1.0.3", "n1"));
    k.api.apply(pod("default", "b-1", "b", "10.1.0.20", "n1"));
    k.api.hold_lists("services");
    k.api.compact_and_drop();
    eventually("services relisting", WAIT, || async {
        if k.api.list_count("services") > service_lists {
            Ok(())
        } else {
            Err("no new services list".to_string())
        }
    })
    .await;
    // While the Service relist is in flight, the previous Services keep serving.
    let reg = json_of(&server, "/debug/registryz")
        .await
        .expect("registryz");
    let before: BTreeSet<String> = hosts(&reg);
    assert!(
        before.contains("a.default.svc.cluster.local")
            && before.contains("b.default.svc.cluster.local"),
        "services dropped during a relist: {before:?}"
    );

    k.api.release_lists("services");
    let reg = wait_registry(&server, "exactly b and c after the relist", |r| {
        hosts(r)
            == BTreeSet::from([
                "b.default.svc.cluster.local".to_string(),
                "c.default.svc.cluster.local".to_string(),
            ])
            && registry_endpoints(r, "b.default.svc.cluster.local", 80)
                == Some(vec!["10.1.0.20".to_string()])
    })
    .await;
    assert_eq!(
        registry_endpoints(&reg, "c.default.svc.cluster.local", 80),
        Some(vec!["10.1.0.3".to_string()])
    );
    let logs = logs_of(&server);
    assert!(logs.contains("relisting"), "no 410 seen:\n{logs}");
    assert!(
        logs.contains("serves no Sidecar"),
        "missing CRD not reported:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_and_api_errors_lose_nothing() {
    let k = Cluster::start(Istio::all(&["v1"])).await;
    k.api.apply(service("default", "a", 80, Some("a")));
    let server = k.serve(&[]).await;
    let lists_before = k.api.list_count("services");

    k.api.drop_connections();
    k.api.apply(service("default", "d", 80, Some("d")));
    wait_registry(&server, "d after a dropped connection", |r| {
        registry_endpoints(r, "d.default.svc.cluster.local", 80).is_some()
    })
    .await;
    eprintln!(
        "services lists before/after the drop: {lists_before}/{}",
        k.api.list_count("services")
    );

    k.api.fail_next(5);
    k.api.drop_connections();
    k.api.apply(service("default", "e", 80, Some("e")));
    k.api.delete("Service", "default", "a");
    wait_registry(&server, "e, and a gone, after API errors", |r| {
        hosts(r)
            == BTreeSet::from([
                "d.default.svc.cluster.local".to_string(),
                "e.default.svc.cluster.local".to_string(),
            ])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_bad_objects_namespaces_and_node_locality() {
    let k = Cluster::start(Istio::all(&["v1"])).await;
    k.api.apply(
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1",
        "labels": {"topology.kubernetes.io/region": "r1", "topology.kubernetes.io/zone": "z1"}},
        "status": {"images": [{"names": ["a-big-image-list"], "sizeBytes": 1}]}}),
    );
    for ns in ["shop", "other"] {
        k.api
            .apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    k.api.apply(service("shop", "web", 80, None));
    let slice = |ready1: bool, ready2: bool| {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-abc", "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.2.0.1"], "conditions": {"ready": ready1}, "nodeName": "n1"},
                {"addresses": ["10.2.0.2"], "conditions": {"ready": ready2}, "nodeName": "n1"}]})
    };
    k.api.apply(slice(true, false));
    k.api.apply(service("shop", "api", 80, Some("api")));
    k.api.apply(pod("shop", "api-1", "api", "10.2.1.1", "n1"));
    k.api.apply(service("other", "x", 80, Some("x")));
    k.api.apply(virtual_service("shop", "good", "web", 100));
    k.api.apply(virtual_service("shop", "bad", "web", -120));
    let server = k.serve(&["--namespaces", "shop"]).await;

    let reg = wait_registry(&server, "shop services", |r| {
        registry_endpoints(r, "web.shop.svc.cluster.local", 80).is_some()
            && registry_endpoints(r, "api.shop.svc.cluster.local", 80).is_some()
    })
    .await;
    // Only the ready endpoint of the slice; nothing from namespace `other`.
    assert_eq!(
        registry_endpoints(&reg, "web.shop.svc.cluster.local", 80),
        Some(vec!["10.2.0.1".to_string()])
    );
    assert!(!hosts(&reg).contains("x.other.svc.cluster.local"));
    // The Pod carries its Node's locality.
    let api_eps = &reg["api.shop.svc.cluster.local"]["endpoints"]["80"];
    assert_eq!(api_eps[0]["locality"], "r1/z1", "{api_eps}");
    // Relabelled into another zone, the Node moves its Pods' endpoints with it.
    k.api.apply(
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1",
        "labels": {"topology.kubernetes.io/region": "r1", "topology.kubernetes.io/zone": "z2"}}}),
    );
    wait_registry(&server, "the Pod's endpoint in its Node's new zone", |r| {
        r["api.shop.svc.cluster.local"]["endpoints"]["80"][0]["locality"] == "r1/z2"
    })
    .await;

    // Namespaced kinds were requested in `shop` only; Nodes as metadata only.
    for r in k.api.requests() {
        let collection = r.split('?').next().unwrap_or("");
        if collection.ends_with("/nodes") {
            assert!(r.ends_with("[metadata-only]"), "{r}");
        } else if !collection.ends_with("/namespaces") && r.contains("watch") {
            assert!(collection.contains("/namespaces/shop/"), "{r}");
        }
    }

    // The bad VirtualService is named with its field, and the good one still serves.
    let configz = json_of(&server, "/debug/configz").await.expect("configz");
    let errors = parse_diagnostics(&configz);
    assert!(
        errors.iter().any(|d| d["object"]
            == serde_json::json!({"kind": "VirtualService", "namespace": "shop", "name": "bad"})
            && d["field"] == "spec.http[0].route[0].weight"),
        "{errors:?}"
    );
    assert!(
        server
            .logs()
            .contains("VirtualService shop/bad: field spec.http[0].route[0].weight"),
        "{}",
        logs_of(&server)
    );
    let names: Vec<String> = configz["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["key"]["kind"] == "VirtualService")
        .filter_map(|o| o["key"]["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(names, ["good"], "{}", configz["objects"]);

    // Endpoint conditions flip: the not-ready one leaves, the ready one joins.
    k.api.apply(slice(false, true));
    wait_registry(&server, "slice conditions followed", |r| {
        registry_endpoints(r, "web.shop.svc.cluster.local", 80)
            == Some(vec!["10.2.0.2".to_string()])
    })
    .await;

    // Fixing the bad object clears its error.
    k.api.apply(virtual_service("shop", "bad", "web", 100));
    eventually("input error cleared", WAIT, || async {
        let c = json_of(&server, "/debug/configz").await?;
        let errors = parse_diagnostics(&c);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("{errors:?}"))
        }
    })
    .await;
}

/// The diagnostics `/debug/configz` lists for refused input (stage `parse`).
fn parse_diagnostics(configz: &serde_json::Value) -> Vec<serde_json::Value> {
    configz["diagnostics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["stage"] == "parse")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_secrets_are_watched_redacted_and_bad_ones_named() {
    let k = Cluster::start(Istio::all(&["v1"])).await;
    let key =
        rcgen::generate_simple_self_signed(vec!["a.example.com".to_string()]).expect("certificate");
    let (cert, private) = (key.cert.pem(), key.signing_key.serialize_pem());
    let secret = |name: &str, crt: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": "istio-system"},
            "stringData": {"tls.crt": crt, "tls.key": private}})
    };
    k.api.apply(secret("good", &cert));
    k.api.apply(json!({"apiVersion": "v1", "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "token", "namespace": "istio-system"},
        "data": {"token": "dG9rZW4="}}));
    let server = k.serve(&[]).await;
    // A Secret applied after the first list arrives through the watch.
    k.api.apply(secret("bad", "not a certificate"));
    let configz = eventually("the bad Secret diagnosed", WAIT, || async {
        let c = json_of(&server, "/debug/configz").await?;
        if parse_diagnostics(&c).is_empty() {
            Err(c.to_string())
        } else {
            Ok(c)
        }
    })
    .await;
    let errors = parse_diagnostics(&configz);
    assert!(
        errors.iter().any(|d| d["object"]
            == json!({"kind": "Secret", "namespace": "istio-system", "name": "bad"})
            && d["field"] == "stringData.tls.crt"),
        "{errors:?}"
    );
    let secrets: Vec<String> = configz["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["key"]["kind"] == "Secret")
        .filter_map(|o| o["key"]["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(secrets, ["good"], "only TLS Secrets are kept");
    let text = configz.to_string();
    // Neither the key nor the certificate shows: a line of either's base64 body is not there.
    let key_line = private.lines().nth(1).expect("key body");
    let cert_line = cert.lines().nth(1).expect("cert body");
    for marker in [key_line, cert_line] {
        let at = text.find(marker).map(|i| &text[i.saturating_sub(300)..i]);
        assert!(at.is_none(), "{marker} in configz after: {at:?}");
    }
    assert!(text.contains("redacted"), "{text}");
    assert!(!logs_of(&server).contains(key_line));
}

/// The `filter_chain_match.transport_protocol` of each `virtualInbound` chain for `port`
/// (`""` where the chain matches any transport).
fn inbound_transports(dump: &Value, port: u16) -> Vec<String> {
    let listeners = support::dump::section(dump, "ListenersConfigDump");
    listeners
        .and_then(|s| s["dynamic_listeners"].as_array())
        .into_iter()
        .flatten()
        .map(|l| &l["active_state"]["listener"])
        .filter(|l| l["name"] == "virtualInbound")
        .flat_map(|l| l["filter_chains"].as_array().into_iter().flatten())
        .filter(|c| c["filter_chain_match"]["destination_port"] == port)
        .map(|c| {
            c["filter_chain_match"]["transport_protocol"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_authentication_from_the_api_makes_a_sidecar_strict() {
    let _envoy_bin = support::require_envoy!();
    let net = support::pods::require_pods!();
    let web = net.pod("web");
    let plain = net.pod("plain");
    web.capture();
    let k = Cluster::start(Istio::all(&["v1"])).await;
    k.api
        .apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}));
    k.api.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.21", "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}));
    k.api.apply(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": web.name(), "namespace": "default",
                     "labels": {"app": "web", "security.istio.io/tlsMode": "istio"}},
        "spec": {"serviceAccountName": "web", "containers": [{"name": "app", "image": "test"}]},
        "status": {"phase": "Running", "podIP": web.ip().to_string(),
                   "conditions": [{"type": "Ready", "status": "True"}]}}));
    k.api
        .accept_token("tok-web", "system:serviceaccount:default:web");
    let ca_dir = k.dir.path().join("ca");
    let secure = support::admin_addr();
    let server = k
        .serve(&[
            "--ca-dir",
            &ca_dir.display().to_string(),
            "--secure-xds-address",
            &secure.to_string(),
        ])
        .await;
    let token_file = k.dir.path().join("token-web");
    std::fs::write(&token_file, "tok-web").expect("token");
    let root = ca_dir.join("root-cert.pem");
    let identity = support::pod_agent::AgentIdentity {
        secure,
        root_cert: &root,
        token_file: &token_file,
        namespace: "default",
        service_account: "web",
        cert_ttl_seconds: None,
    };
    let _app = web.start_http_app(8080, "app-web");
    let labels = [("app", "web"), ("security.istio.io/tlsMode", "istio")];
    let (envoy, _agent) = web
        .start_sidecar_via_agent(&k.dir.path().join("pods"), &identity, &labels)
        .await;

    // No policy: PERMISSIVE, so port 8080 has mutual-TLS chains beside plaintext ones, and a
    // pod without a sidecar reaches the app in plaintext.
    let permissive = envoy
        .wait_for_dump("mutual TLS and plaintext chains on 8080", WAIT, |d| {
            let t = inbound_transports(d, 8080);
            t.iter().any(|t| t == "tls") && t.iter().any(|t| t != "tls")
        })
        .await;
    let app = SocketAddr::new(web.ip(), 8080);
    let r = plain
        .http_get(app, "web", "/")
        .expect("plaintext while PERMISSIVE");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), Some("app-web"), "{r:?}");

    // STRICT through the API: the plaintext chains leave the sidecar, and plaintext is refused.
    k.api.apply(
        json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "default"},
        "spec": {"mtls": {"mode": "STRICT"}}}),
    );
    let strict = envoy
        .wait_for_dump("only mutual-TLS chains on 8080", WAIT, |d| {
            let t = inbound_transports(d, 8080);
            !t.is_empty() && t.iter().all(|t| t == "tls")
        })
        .await;
    assert_ne!(
        inbound_transports(&permissive, 8080),
        inbound_transports(&strict, 8080)
    );
    let refused = plain.http_get(app, "web", "/");
    assert!(
        !matches!(&refused, Ok(r) if r.status == 200),
        "plaintext to a STRICT pod got through: {refused:?}"
    );
    envoy.assert_all_acked().await;
    let logs = logs_of(&server);
    assert!(
        logs.contains("kind=\"PeerAuthentication\" api_version=security.istio.io/v1\n"),
        "expected security.istio.io/v1 to be watched:\n{logs}"
    );
}

/// The diagnostics `/debug/configz` lists about objects of `kind`.
fn diagnostics_about(configz: &Value, kind: &str) -> Vec<Value> {
    configz["diagnostics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["object"]["kind"] == kind)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unserved_istio_kinds_are_watched_and_warned_about() {
    // Istio's CRDs are installed, but nothing of them but Telemetry exists yet: readiness does
    // not wait for kinds whose groups are empty, and (below) a cluster without the
    // telemetry/extensions groups at all still gets ready.
    let k = Cluster::start(Istio::all(&["v1"])).await;
    k.api.apply(service("default", "a", 80, Some("a")));
    k.api.apply(
        json!({"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
        "metadata": {"name": "mesh-default", "namespace": "istio-system"},
        "spec": {"accessLogging": [{"providers": [{"name": "envoy"}]}]}}),
    );
    let server = k.serve(&[]).await;
    let configz = json_of(&server, "/debug/configz").await.expect("configz");
    let telemetry = diagnostics_about(&configz, "Telemetry");
    assert_eq!(telemetry.len(), 1, "{configz}");
    assert_eq!(telemetry[0]["severity"], "warning", "{telemetry:?}");
    assert_eq!(telemetry[0]["object"]["name"], "mesh-default");

    // An AuthorizationPolicy applied through the API: a warning saying it is not enforced.
    k.api.apply(
        json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny-all", "namespace": "default"}, "spec": {}}),
    );
    let warned = eventually("the AuthorizationPolicy's warning", WAIT, || async {
        let c = json_of(&server, "/debug/configz").await?;
        match diagnostics_about(&c, "AuthorizationPolicy").as_slice() {
            [d] => Ok(d.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(warned["severity"], "warning", "{warned}");
    assert_eq!(
        warned["object"],
        json!({"kind": "AuthorizationPolicy", "namespace": "default", "name": "deny-all"})
    );
    let message = warned["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("requests it would deny are allowed"),
        "{message}"
    );
    // Only metadata was asked for: the specs of kinds meshpilot ignores are never fetched.
    for r in k.api.requests() {
        if r.contains("/authorizationpolicies") || r.contains("/telemetries") {
            assert!(r.ends_with("[metadata-only]"), "{r}");
        }
    }
    let logs = logs_of(&server);
    assert!(
        logs.contains("AuthorizationPolicy default/deny-all"),
        "{logs}"
    );

    // Deleting it takes the warning back.
    k.api.delete("AuthorizationPolicy", "default", "deny-all");
    eventually("the warning gone", WAIT, || async {
        let c = json_of(&server, "/debug/configz").await?;
        let left = diagnostics_about(&c, "AuthorizationPolicy");
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
    drop(server);

    // Without Istio's optional groups (only the routing and security CRDs), readiness comes.
    let mut istio = Istio::all(&["v1"]);
    istio
        .kinds
        .retain(|k| !matches!(*k, "Telemetry" | "WasmPlugin"));
    let bare = Cluster::start(istio).await;
    let server = bare.serve(&[]).await;
    assert!(
        logs_of(&server).contains("does not serve telemetry.istio.io"),
        "{}",
        logs_of(&server)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_name_and_headless_services_from_the_api() {
    let k = Cluster::start(Istio::all(&["v1"])).await;
    k.api.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "ext", "namespace": "default"},
        "spec": {"type": "ExternalName", "externalName": "db.example.com",
                 "ports": [{"name": "tcp", "port": 5432}]}}));
    k.api.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"clusterIP": "None", "selector": {"app": "db"},
                 "ports": [{"name": "tcp", "port": 5432}]}}));
    k.api.apply(pod("default", "db-0", "db", "10.1.0.7", "n1"));
    let server = k.serve(&[]).await;
    let reg = wait_registry(&server, "both services", |r| {
        registry_endpoints(r, "ext.default.svc.cluster.local", 5432).is_some()
            && registry_endpoints(r, "db.default.svc.cluster.local", 5432).is_some()
    })
    .await;
    // The external name is the ExternalName Service's one endpoint, on its own port.
    assert_eq!(
        registry_endpoints(&reg, "ext.default.svc.cluster.local", 5432),
        Some(vec!["db.example.com".to_string()])
    );
    // The headless one keeps its pods as endpoints (each reached by its own address, as
    // istiod passes such connections through), with no warning.
    assert_eq!(
        registry_endpoints(&reg, "db.default.svc.cluster.local", 5432),
        Some(vec!["10.1.0.7".to_string()])
    );
    let configz = json_of(&server, "/debug/configz").await.expect("configz");
    let warned: Vec<Value> = diagnostics_about(&configz, "Service")
        .into_iter()
        .filter(|d| d["field"] == "spec.clusterIP")
        .collect();
    assert!(warned.is_empty(), "{configz}");
}
