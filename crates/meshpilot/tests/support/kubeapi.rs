//! A stand-in Kubernetes API server for black-box tests of `serve --kube`. It is a test server
//! speaking the API server's wire protocol over plain HTTP/1.1 — not a real cluster — and is
//! driven by the real kube-rs client inside the meshpilot binary:
//!
//! * discovery: `/api`, `/api/v1`, `/apis`, `/apis/GROUP/VERSION` (APIVersions, APIGroupList,
//!   APIResourceList with verbs), serving `networking.istio.io` in the versions a test chooses
//!   (or not at all, as on a cluster without Istio's CRDs), and `security.istio.io`
//!   PeerAuthentication in those of them it has (`v1`, `v1beta1`), and the Istio kinds
//!   meshpilot does not serve (EnvoyFilter, AuthorizationPolicy, Telemetry, WasmPlugin, …) in
//!   their own groups and versions whenever Istio is installed;
//! * list (`limit`/`continue` paging, list `resourceVersion`) and watch (`watch=1`,
//!   `resourceVersion`, `allowWatchBookmarks`) on cluster-wide and namespaced collection paths,
//!   as JSON lines of ADDED/MODIFIED/DELETED/BOOKMARK/ERROR events; metadata-only requests
//!   (`Accept: …;as=PartialObjectMetadataList…`) get `PartialObjectMetadata`;
//! * `410 Gone` (an ERROR event with a 410 Status, as the real server sends it) for a watch from
//!   a compacted resourceVersion, abrupt connection drops, and injected 500s.
//!
//! `labelSelector` and `fieldSelector` are ignored (meshpilot sends none). Every request is
//! recorded so tests can check what was asked for.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

type Body = BoxBody<Bytes, Infallible>;

const ISTIO_GROUP: &str = "networking.istio.io";
const ISTIO_KINDS: [(&str, &str); 6] = [
    ("VirtualService", "virtualservices"),
    ("DestinationRule", "destinationrules"),
    ("Gateway", "gateways"),
    ("ServiceEntry", "serviceentries"),
    ("WorkloadEntry", "workloadentries"),
    ("Sidecar", "sidecars"),
];
/// PeerAuthentication's group, served in those of the chosen versions it exists in.
const SECURITY_GROUP: &str = "security.istio.io";
const SECURITY_VERSIONS: [&str; 2] = ["v1", "v1beta1"];
/// The Istio kinds meshpilot does not serve, as (kind, group, plural, version): each served in
/// one version of its group, as Istio's CRDs do (WasmPlugin has only `v1alpha1`).
const UNSERVED_KINDS: [(&str, &str, &str, &str); 7] = [
    ("EnvoyFilter", ISTIO_GROUP, "envoyfilters", "v1alpha3"),
    ("WorkloadGroup", ISTIO_GROUP, "workloadgroups", "v1"),
    ("ProxyConfig", ISTIO_GROUP, "proxyconfigs", "v1beta1"),
    (
        "AuthorizationPolicy",
        SECURITY_GROUP,
        "authorizationpolicies",
        "v1",
    ),
    (
        "RequestAuthentication",
        SECURITY_GROUP,
        "requestauthentications",
        "v1",
    ),
    ("Telemetry", "telemetry.istio.io", "telemetries", "v1"),
    (
        "WasmPlugin",
        "extensions.istio.io",
        "wasmplugins",
        "v1alpha1",
    ),
];

/// One served resource type.
#[derive(Clone, Debug)]
struct Res {
    group: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
}

fn core_resources() -> Vec<(Res, &'static str)> {
    let r = |group, plural, kind, namespaced| Res {
        group,
        plural,
        kind,
        namespaced,
    };
    vec![
        (r("", "namespaces", "Namespace", false), "v1"),
        (r("", "nodes", "Node", false), "v1"),
        (r("", "services", "Service", true), "v1"),
        (r("", "pods", "Pod", true), "v1"),
        (r("", "configmaps", "ConfigMap", true), "v1"),
        (r("", "secrets", "Secret", true), "v1"),
        (
            r("discovery.k8s.io", "endpointslices", "EndpointSlice", true),
            "v1",
        ),
    ]
}

/// What the test server serves of `networking.istio.io`.
#[derive(Clone, Debug)]
pub struct Istio {
    /// Served versions, e.g. `["v1"]`, `["v1beta1", "v1alpha3"]`; empty: the group is absent.
    pub versions: Vec<&'static str>,
    /// Kinds whose CRD is installed.
    pub kinds: Vec<&'static str>,
}

impl Istio {
    /// Every Istio kind in `versions` (PeerAuthentication in those of them its group has; the
    /// kinds meshpilot does not serve in their own versions).
    pub fn all(versions: &[&'static str]) -> Istio {
        let mut kinds: Vec<&'static str> = ISTIO_KINDS.iter().map(|(k, _)| *k).collect();
        kinds.push("PeerAuthentication");
        kinds.extend(UNSERVED_KINDS.iter().map(|(k, ..)| *k));
        Istio {
            versions: versions.to_vec(),
            kinds,
        }
    }

    /// No Istio CRD installed.
    pub fn none() -> Istio {
        Istio {
            versions: Vec::new(),
            kinds: Vec::new(),
        }
    }
}

struct Event {
    rv: u64,
    res: String,
    namespace: String,
    kind: &'static str,
    object: Value,
}

struct Store {
    istio: Istio,
    rv: u64,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    /// resource key (`group/plural`) → (namespace, name) → object.
    objects: BTreeMap<String, BTreeMap<(String, String), Value>>,
    events: Vec<Event>,
    /// While true, watch streams hold back new events (as if the client were disconnected).
    frozen: bool,
    /// Requests still to answer with 500.
    fail_next: usize,
    /// Collections (by plural) whose list requests hang until released.
    held: Vec<String>,
    requests: Vec<String>,
    /// Tokens a TokenReview accepts, and the user each names.
    tokens: BTreeMap<String, String>,
}

/// The running test API server. Stops when dropped.
pub struct KubeApi {
    addr: SocketAddr,
    store: Arc<Mutex<Store>>,
    /// Bumped on every change a watch stream may care about.
    tick: watch::Sender<u64>,
    /// Cancelling drops every open connection abruptly; replaced after each drop.
    conns: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl KubeApi {
    /// Starts on `127.0.0.1:0`.
    pub async fn start(istio: Istio) -> KubeApi {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind test API server: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local addr: {e}"));
        let store = Arc::new(Mutex::new(Store {
            istio,
            rv: 100,
            compacted: 0,
            objects: BTreeMap::new(),
            events: Vec::new(),
            frozen: false,
            fail_next: 0,
            held: Vec::new(),
            requests: Vec::new(),
            tokens: BTreeMap::new(),
        }));
        let (tick, _) = watch::channel(0);
        let conns = Arc::new(Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let server = Server {
            store: store.clone(),
            tick: tick.clone(),
        };
        {
            let (conns, stop) = (conns.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        _ = stop.cancelled() => break,
                        a = listener.accept() => a,
                    };
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let server = server.clone();
                    let cancel = conns.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let server = server.clone();
                            async move { Ok::<_, Infallible>(server.handle(req).await) }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc);
                        // Dropping the connection future closes the socket mid-stream.
                        tokio::select! {
                            _ = conn => {}
                            _ = cancel.cancelled() => {}
                            _ = stop.cancelled() => {}
                        }
                    });
                }
            });
        }
        KubeApi {
            addr,
            store,
            tick,
            conns,
            stop,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes a kubeconfig whose current context points at this server; returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://{}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: default\n\
             current-context: test\nusers:\n- name: test\n  user: {{}}\n",
            self.addr
        );
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write kubeconfig: {e}"));
        path
    }

    /// Creates or replaces every document of a multi-document YAML text (kinds the server does
    /// not serve, e.g. Deployments, are skipped).
    pub fn apply_yaml(&self, text: &str) {
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("test manifest YAML: {e}"));
        for doc in docs {
            if !doc.is_null() {
                self.apply(doc);
            }
        }
    }

    /// Makes TokenReview accept `token` as the user `username` (e.g.
    /// `system:serviceaccount:NS:SA`); every other token is not authenticated.
    pub fn accept_token(&self, token: &str, username: &str) {
        self.store()
            .tokens
            .insert(token.to_string(), username.to_string());
    }

    /// One object as stored (`kind` as in a manifest), if there is one.
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let store = self.store();
        let res = store
            .all_resources()
            .into_iter()
            .find(|(r, _)| r.kind == kind)
            .map(|(r, _)| r)?;
        let ns = if res.namespaced { namespace } else { "" };
        store
            .objects
            .get(&res_key(&res))?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Creates or replaces one object (ADDED or MODIFIED). Returns false when its kind is not
    /// served.
    pub fn apply(&self, obj: Value) -> bool {
        apply_to(&self.store, &self.tick, obj)
    }
}

/// [`KubeApi::apply`] on a store (also used by the server's write requests).
fn apply_to(store: &Mutex<Store>, tick: &watch::Sender<u64>, mut obj: Value) -> bool {
    {
        let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
        let api_version = obj["apiVersion"].as_str().unwrap_or("").to_string();
        let kind = obj["kind"].as_str().unwrap_or("").to_string();
        let Some(res) = store.resource_by_kind(&api_version, &kind) else {
            return false;
        };
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        assert!(!name.is_empty(), "test object without a name: {obj}");
        let namespace = if res.namespaced {
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        store.rv += 1;
        let rv = store.rv;
        let meta = &mut obj["metadata"];
        if res.namespaced {
            meta["namespace"] = json!(namespace);
        }
        meta["resourceVersion"] = json!(rv.to_string());
        meta["uid"] = json!(format!("uid-{name}-{namespace}"));
        if meta.get("creationTimestamp").is_none() {
            meta["creationTimestamp"] = json!("2024-01-01T00:00:00Z");
        }
        let key = res_key(&res);
        let existed = store
            .objects
            .entry(key.clone())
            .or_default()
            .insert((namespace.clone(), name), obj.clone())
            .is_some();
        store.events.push(Event {
            rv,
            res: key,
            namespace,
            kind: if existed { "MODIFIED" } else { "ADDED" },
            object: obj,
        });
    }
    tick.send_modify(|t| *t += 1);
    true
}

impl KubeApi {
    /// Deletes an object (DELETED). `kind` as in a manifest (`Pod`, `VirtualService`, …).
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) {
        let mut store = self.store();
        let res = store
            .all_resources()
            .into_iter()
            .find(|(r, _)| r.kind == kind)
            .map(|(r, _)| r)
            .unwrap_or_else(|| panic!("kind {kind} is not served"));
        let ns = if res.namespaced { namespace } else { "" };
        let key = res_key(&res);
        let removed = store
            .objects
            .get_mut(&key)
            .and_then(|m| m.remove(&(ns.to_string(), name.to_string())));
        let Some(mut obj) = removed else {
            panic!("delete {kind} {namespace}/{name}: no such object");
        };
        store.rv += 1;
        let rv = store.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        store.events.push(Event {
            rv,
            res: key,
            namespace: ns.to_string(),
            kind: "DELETED",
            object: obj,
        });
        drop(store);
        self.tick.send_modify(|t| *t += 1);
    }

    /// Holds back watch events from now on, as if every watch were disconnected.
    pub fn freeze_watches(&self) {
        self.store().frozen = true;
        self.tick.send_modify(|t| *t += 1);
    }

    /// Forgets the history up to now (watches from an older resourceVersion get `410 Gone`),
    /// drops every connection abruptly and lets watches run again: clients must relist.
    pub fn compact_and_drop(&self) {
        {
            let mut store = self.store();
            store.compacted = store.rv;
            store.events.clear();
            store.frozen = false;
        }
        self.drop_connections();
    }

    /// Closes every open connection (watches included) without a proper end of stream.
    pub fn drop_connections(&self) {
        let mut token = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        token.cancel();
        *token = CancellationToken::new();
        drop(token);
        self.tick.send_modify(|t| *t += 1);
    }

    /// Answers the next `n` requests with `500 Internal Server Error`.
    pub fn fail_next(&self, n: usize) {
        self.store().fail_next = n;
    }

    /// Makes list requests of `plural` (e.g. `pods`) hang until [`KubeApi::release_lists`].
    pub fn hold_lists(&self, plural: &str) {
        self.store().held.push(plural.to_string());
    }

    /// Lets held list requests of `plural` complete.
    pub fn release_lists(&self, plural: &str) {
        self.store().held.retain(|p| p != plural);
        self.tick.send_modify(|t| *t += 1);
    }

    /// Every request so far, as `METHOD path?query [metadata-only]`.
    pub fn requests(&self) -> Vec<String> {
        self.store().requests.clone()
    }

    /// Number of watch requests so far for collection paths ending in `/plural`.
    pub fn watch_count(&self, plural: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.contains(&format!("/{plural}?")) && r.contains("watch=true"))
            .count()
    }

    /// Number of list (non-watch) requests so far for collection paths ending in `/plural`.
    pub fn list_count(&self, plural: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.contains(&format!("/{plural}?")) && !r.contains("watch=true"))
            .count()
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn res_key(res: &Res) -> String {
    format!("{}/{}", res.group, res.plural)
}

impl Store {
    /// Every served (resource, version).
    fn all_resources(&self) -> Vec<(Res, &'static str)> {
        let mut out = core_resources();
        for v in &self.istio.versions {
            for (kind, plural) in ISTIO_KINDS {
                if self.istio.kinds.contains(&kind) {
                    out.push((
                        Res {
                            group: ISTIO_GROUP,
                            plural,
                            kind,
                            namespaced: true,
                        },
                        v,
                    ));
                }
            }
            if self.istio.kinds.contains(&"PeerAuthentication") && SECURITY_VERSIONS.contains(v) {
                out.push((
                    Res {
                        group: SECURITY_GROUP,
                        plural: "peerauthentications",
                        kind: "PeerAuthentication",
                        namespaced: true,
                    },
                    v,
                ));
            }
        }
        if !self.istio.versions.is_empty() {
            for (kind, group, plural, version) in UNSERVED_KINDS {
                if self.istio.kinds.contains(&kind) {
                    let res = Res {
                        group,
                        plural,
                        kind,
                        namespaced: true,
                    };
                    out.push((res, version));
                }
            }
        }
        out
    }

    fn resource_by_kind(&self, api_version: &str, kind: &str) -> Option<Res> {
        let (group, _) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.all_resources()
            .into_iter()
            .find(|(r, _)| r.kind == kind && r.group == group)
            .map(|(r, _)| r)
    }

    fn resource(&self, group: &str, version: &str, plural: &str) -> Option<Res> {
        self.all_resources()
            .into_iter()
            .find(|(r, v)| r.group == group && *v == version && r.plural == plural)
            .map(|(r, _)| r)
    }

    fn group_versions(&self, group: &str) -> Vec<&'static str> {
        let mut vs: Vec<&'static str> = self
            .all_resources()
            .into_iter()
            .filter(|(r, _)| r.group == group)
            .map(|(_, v)| v)
            .collect();
        // Keeps the first (preferred) occurrence of each version, wherever the others are.
        let mut seen = Vec::new();
        vs.retain(|v| {
            let first = !seen.contains(v);
            seen.push(*v);
            first
        });
        vs
    }
}

#[derive(Clone)]
struct Server {
    store: Arc<Mutex<Store>>,
    tick: watch::Sender<u64>,
}

/// A parsed collection request.
struct Collection {
    res: Res,
    api_version: String,
    namespace: Option<String>,
    query: BTreeMap<String, String>,
    metadata_only: bool,
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap_or_else(|e| panic!("response: {e}"))
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn not_found(path: &str) -> Response<Body> {
    json_response(
        StatusCode::NOT_FOUND,
        &status(
            404,
            "NotFound",
            &format!("the server could not find {path}"),
        ),
    )
}

fn parse_query(q: Option<&str>) -> BTreeMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.replace("%2C", ",").replace("%3D", "="))
        })
        .collect()
}

impl Server {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The writes the server takes: a TokenReview, and a server-side apply of a ConfigMap.
    /// `None` for any other request (answered as before).
    async fn write(
        &self,
        method: hyper::Method,
        path: &str,
        req: Request<Incoming>,
    ) -> Option<Response<Body>> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let review = method == hyper::Method::POST
            && segs == ["apis", "authentication.k8s.io", "v1", "tokenreviews"];
        let configmap = method == hyper::Method::PATCH
            && matches!(
                segs.as_slice(),
                ["api", "v1", "namespaces", _, "configmaps", _]
            );
        if !review && !configmap {
            return None;
        }
        let body = req.into_body().collect().await.ok()?.to_bytes();
        let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
            return Some(json_response(
                StatusCode::BAD_REQUEST,
                &status(400, "BadRequest", "body is not JSON"),
            ));
        };
        if review {
            let token = obj["spec"]["token"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let user = self.store().tokens.get(&token).cloned();
            obj["status"] = match user {
                Some(username) => json!({
                    "authenticated": true,
                    "user": { "username": username, "groups": ["system:serviceaccounts"] },
                    "audiences": obj["spec"]["audiences"].clone(),
                }),
                None => json!({ "authenticated": false, "error": "token not recognised" }),
            };
            return Some(json_response(StatusCode::CREATED, &obj));
        }
        let (ns, name) = (segs[3], segs[5]);
        obj["apiVersion"] = json!("v1");
        obj["kind"] = json!("ConfigMap");
        obj["metadata"]["namespace"] = json!(ns);
        obj["metadata"]["name"] = json!(name);
        apply_to(&self.store, &self.tick, obj.clone());
        let stored = self
            .store()
            .objects
            .get("/configmaps")
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
            .unwrap_or(obj);
        Some(json_response(StatusCode::OK, &stored))
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let req_is_not_get = req.method() != hyper::Method::GET;
        let query = req.uri().query().map(str::to_string);
        let metadata_only = req
            .headers()
            .get("accept")
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
        {
            let mut store = self.store();
            store.requests.push(format!(
                "{} {}?{}{}",
                req.method(),
                path,
                query.as_deref().unwrap_or(""),
                if metadata_only {
                    " [metadata-only]"
                } else {
                    ""
                }
            ));
            if store.fail_next > 0 {
                store.fail_next -= 1;
                return json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &status(500, "InternalError", "injected failure"),
                );
            }
        }
        if let Some(resp) = self.write(req.method().clone(), &path, req).await {
            return resp;
        }
        if req_is_not_get {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &status(405, "MethodNotAllowed", "read-only test server"),
            );
        }
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segs.as_slice() {
            ["api"] => return json_response(StatusCode::OK, &self.api_versions()),
            ["apis"] => return json_response(StatusCode::OK, &self.api_groups()),
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return not_found(&path),
        };
        if rest.is_empty() {
            return match self.resource_list(group, version) {
                Some(list) => json_response(StatusCode::OK, &list),
                None => not_found(&path),
            };
        }
        let (namespace, plural) = match rest {
            [plural] => (None, *plural),
            ["namespaces", ns, plural] => (Some(ns.to_string()), *plural),
            _ => return not_found(&path),
        };
        let Some(res) = self.store().resource(group, version, plural) else {
            return not_found(&path);
        };
        let api_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        let c = Collection {
            res,
            api_version,
            namespace,
            query: parse_query(query.as_deref()),
            metadata_only,
        };
        if matches!(c.query.get("watch").map(String::as_str), Some("true" | "1")) {
            self.watch(c)
        } else {
            let mut tick = self.tick.subscribe();
            while self.store().held.iter().any(|p| p == c.res.plural) {
                if tick.changed().await.is_err() {
                    break;
                }
            }
            self.list(&c)
        }
    }

    fn api_versions(&self) -> Value {
        json!({"kind": "APIVersions", "versions": ["v1"],
               "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]})
    }

    fn api_groups(&self) -> Value {
        let store = self.store();
        let mut groups = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for (r, _) in store.all_resources() {
            if !r.group.is_empty() && !names.contains(&r.group) {
                names.push(r.group);
            }
        }
        for g in names {
            let versions: Vec<Value> = store
                .group_versions(g)
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            let preferred = versions.first().cloned().unwrap_or(Value::Null);
            groups.push(json!({"name": g, "versions": versions, "preferredVersion": preferred}));
        }
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let store = self.store();
        let resources: Vec<Value> = store
            .all_resources()
            .into_iter()
            .filter(|(r, v)| r.group == group && *v == version)
            .map(|(r, _)| {
                json!({"name": r.plural, "singularName": r.kind.to_lowercase(),
                       "namespaced": r.namespaced, "kind": r.kind,
                       "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
            })
            .collect();
        if resources.is_empty() {
            return None;
        }
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
        )
    }

    /// An object as this request sees it: its apiVersion, or only its metadata.
    fn present(c: &Collection, obj: &Value) -> Value {
        if c.metadata_only {
            return json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                          "metadata": obj["metadata"]});
        }
        let mut obj = obj.clone();
        obj["apiVersion"] = json!(c.api_version);
        obj["kind"] = json!(c.res.kind);
        obj
    }

    fn list(&self, c: &Collection) -> Response<Body> {
        let store = self.store();
        let all: Vec<&Value> = store
            .objects
            .get(&res_key(&c.res))
            .into_iter()
            .flatten()
            .filter(|((ns, _), _)| c.namespace.as_ref().is_none_or(|want| want == ns))
            .map(|(_, o)| o)
            .collect();
        let start: usize = c
            .query
            .get("continue")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let limit: usize = c
            .query
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let end = start.saturating_add(limit).min(all.len());
        let items: Vec<Value> = all[start.min(end)..end]
            .iter()
            .map(|o| Self::present(c, o))
            .collect();
        let mut meta = json!({"resourceVersion": store.rv.to_string()});
        if end < all.len() {
            meta["continue"] = json!(end.to_string());
        }
        let (api_version, kind) = if c.metadata_only {
            (
                "meta.k8s.io/v1".to_string(),
                "PartialObjectMetadataList".to_string(),
            )
        } else {
            (c.api_version.clone(), format!("{}List", c.res.kind))
        };
        json_response(
            StatusCode::OK,
            &json!({"kind": kind, "apiVersion": api_version, "metadata": meta, "items": items}),
        )
    }

    fn watch(&self, c: Collection) -> Response<Body> {
        let from: u64 = c
            .query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .filter(|v| *v > 0)
            .unwrap_or_else(|| self.store().rv);
        let bookmarks = c
            .query
            .get("allowWatchBookmarks")
            .is_some_and(|v| v == "true");
        let timeout = c
            .query
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(1800));
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
        let server = self.clone();
        tokio::spawn(async move {
            let line = |v: Value| Ok(Frame::data(Bytes::from(format!("{v}\n"))));
            if from < server.store().compacted {
                let gone = status(410, "Expired", &format!("too old resource version: {from}"));
                let _ = tx
                    .send(line(json!({"type": "ERROR", "object": gone})))
                    .await;
                return;
            }
            let mut tick = server.tick.subscribe();
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            let mut sent = from;
            let mut idle_rounds = 0u32;
            loop {
                let batch: Vec<Value> = {
                    let store = server.store();
                    if store.frozen {
                        Vec::new()
                    } else {
                        let key = res_key(&c.res);
                        let out = store
                            .events
                            .iter()
                            .filter(|e| e.rv > sent && e.res == key)
                            .filter(|e| c.namespace.as_ref().is_none_or(|ns| *ns == e.namespace))
                            .map(
                                |e| json!({"type": e.kind, "object": Self::present(&c, &e.object)}),
                            )
                            .collect();
                        if let Some(last) = store.events.last() {
                            sent = sent.max(last.rv);
                        }
                        out
                    }
                };
                for ev in batch {
                    if tx.send(line(ev)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    _ = &mut deadline => return,
                    _ = tx.closed() => return,
                    changed = tick.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {
                        idle_rounds += 1;
                        if bookmarks && idle_rounds.is_multiple_of(2) {
                            let (api_version, kind) = if c.metadata_only {
                                ("meta.k8s.io/v1".to_string(), "PartialObjectMetadata".to_string())
                            } else {
                                (c.api_version.clone(), c.res.kind.to_string())
                            };
                            let bm = json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version,
                                            "metadata": {"resourceVersion": sent.to_string()}}});
                            if tx.send(line(bm)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(BodyExt::boxed(StreamBody::new(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            )))
            .unwrap_or_else(|e| panic!("response: {e}"))
    }
}
