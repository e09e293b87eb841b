//! Read-only HTTP on `--debug-address`: readiness and health, dumps of what the control plane
//! knows and sent (per-proxy config dumps in Envoy's own JSON with ACK/NACK per resource, sync
//! status, the registry, the parsed inputs and their diagnostics) and Prometheus metrics. Every endpoint is registered
//! in [`ENDPOINTS`] with a one-line description.

pub mod dump;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use meshpilot_model::Kind;
use meshpilot_push::ServingState;
use meshpilot_snapshot::{SnapshotCache, XdsType};
use meshpilot_telemetry::metrics;
use meshpilot_xds::Connections;
use tokio_util::sync::CancellationToken as Shutdown;

/// What the handlers read.
#[derive(Clone)]
pub struct State {
    pub cache: Arc<SnapshotCache>,
    pub connections: Arc<Connections>,
    /// What the push engine serves: the view, the diagnostics, readiness.
    pub serving: watch::Receiver<Arc<ServingState>>,
    /// When set, every `/debug` endpoint requires `authorization: Bearer TOKEN` (the port is
    /// exposed beyond loopback). Readiness, health and metrics stay open for probes and scrapes.
    pub token: Option<Arc<str>>,
}

/// Path and one-line description of every endpoint.
pub const ENDPOINTS: &[(&str, &str)] = &[
    (
        "/ready",
        "200 once every source has synced and snapshots are built, else 503",
    ),
    ("/healthz", "200 while the process runs"),
    ("/debug", "this list"),
    (
        "/debug/config_dump?proxyID=ID[&types=cds,eds,lds,rds]",
        "what a proxy was sent, as Envoy's config_dump, with ACKED/NACKED/NOT_SENT per resource",
    ),
    (
        "/debug/syncz",
        "connected proxies: per type sent/acked version, nonce, NACK, SYNCED/STALE/ERROR",
    ),
    (
        "/debug/registryz",
        "services with their ports and endpoints (with labels)",
    ),
    (
        "/debug/configz",
        "every input object as served, with its diagnostics; then every diagnostic",
    ),
    (
        "/debug/diagnosticz",
        "every current diagnostic: refused input, conflicts, unknown hosts, compile findings",
    ),
    (
        "/metrics",
        "Prometheus metrics (istiod names: pilot_xds, ...)",
    ),
    (
        "/debug/pushz",
        "readiness and the number of recomputes so far (for load tests)",
    ),
];

/// Why the debug server stopped.
#[derive(Debug, thiserror::Error)]
pub enum DebugError {
    /// Serving the listener failed.
    #[error("debug server: {0}")]
    Serve(#[from] std::io::Error),
}

/// Serves until shutdown.
pub async fn serve(
    listener: TcpListener,
    state: State,
    shutdown: Shutdown,
) -> Result<(), DebugError> {
    let app = Router::new()
        .route("/ready", get(ready))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/debug", get(index))
        .route("/debug/config_dump", get(config_dump))
        .route("/debug/syncz", get(syncz))
        .route("/debug/registryz", get(registryz))
        .route("/debug/configz", get(configz))
        .route("/debug/diagnosticz", get(diagnosticz))
        .route("/metrics", get(prometheus))
        .route("/debug/pushz", get(pushz))
        .layer(axum::middleware::from_fn_with_state(
            state.token.clone(),
            require_token,
        ))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

/// Refuses `/debug` requests without the configured bearer token (401).
async fn require_token(
    AxState(token): AxState<Option<Arc<str>>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = token else {
        return next.run(req).await;
    };
    if !req.uri().path().starts_with("/debug") {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            "the debug endpoints need 'authorization: Bearer TOKEN' (--debug-token-file)\n",
        )
            .into_response()
    }
}

/// Equality that takes the same time wherever the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn ready(AxState(s): AxState<State>) -> Response {
    if s.serving.borrow().ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the first sync of every source\n",
        )
            .into_response()
    }
}

async fn pushz(AxState(s): AxState<State>) -> Json<Value> {
    let status = s.serving.borrow().clone();
    Json(json!({ "ready": status.ready, "pushes": status.pushes }))
}

async fn index() -> String {
    ENDPOINTS
        .iter()
        .map(|(p, d)| format!("{p:<56} {d}\n"))
        .collect()
}

#[derive(Debug, Deserialize)]
struct DumpQuery {
    #[serde(rename = "proxyID")]
    proxy_id: Option<String>,
    types: Option<String>,
}

fn error(status: StatusCode, msg: String) -> Response {
    (status, Json(json!({"error": msg}))).into_response()
}

async fn config_dump(AxState(s): AxState<State>, Query(q): Query<DumpQuery>) -> Response {
    let Some(id) = q.proxy_id else {
        return error(StatusCode::BAD_REQUEST, "proxyID is required".to_string());
    };
    let types: Vec<XdsType> = match &q.types {
        None => XdsType::ALL.to_vec(),
        Some(t) => {
            let mut out = Vec::new();
            for name in t.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                match XdsType::ALL.into_iter().find(|x| x.short() == name) {
                    Some(x) => out.push(x),
                    None => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            format!("types: {name:?} is not one of cds, eds, lds, rds"),
                        );
                    }
                }
            }
            out
        }
    };
    let Some((conn, sent)) = s.connections.sent_resources(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no connected proxy with id {id:?} (see /debug/syncz)"),
        );
    };
    let snapshot = s.cache.get(&conn.class);
    match dump::render(&conn, &sent, snapshot.as_deref(), &types) {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn syncz(AxState(s): AxState<State>) -> Json<Value> {
    Json(serde_json::to_value(s.connections.list()).unwrap_or(Value::Null))
}

async fn registryz(AxState(s): AxState<State>) -> Json<Value> {
    let status = s.serving.borrow().clone();
    Json(serde_json::to_value(&status.view.services).unwrap_or(Value::Null))
}

/// Every object the view serves, each with the diagnostics about it, then every diagnostic
/// (including those about files or objects that serve nothing), as typed JSON.
async fn configz(AxState(s): AxState<State>) -> Json<Value> {
    let serving = s.serving.borrow().clone();
    let objects: Vec<Value> = serving
        .view
        .objects
        .iter()
        .map(|(key, o)| {
            let diagnostics: Vec<_> = serving
                .diagnostics
                .iter()
                .filter(|d| d.object.is(key))
                .collect();
            json!({"key": key, "origin": o.meta.origin, "object": o, "diagnostics": diagnostics})
        })
        .collect();
    Json(json!({
        "objects": objects,
        "diagnostics": serving.diagnostics,
    }))
}

async fn diagnosticz(AxState(s): AxState<State>) -> Json<Value> {
    let serving = s.serving.borrow().clone();
    Json(json!({ "diagnostics": serving.diagnostics }))
}

async fn prometheus(AxState(s): AxState<State>) -> Response {
    let m = metrics();
    {
        // Gauges of the current view, read at scrape time rather than kept on the push path.
        let status = s.serving.borrow().clone();
        m.services.set(status.view.services.len() as i64);
        let vs = status
            .view
            .objects
            .keys()
            .filter(|k| k.kind == Kind::VirtualService)
            .count();
        m.virt_services.set(vs as i64);
    }
    match m.render() {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
