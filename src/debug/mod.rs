//! Read-only HTTP on `--debug-address`: readiness and health, and dumps of what the control
//! plane knows and sent (config dumps in Envoy's own JSON, the registry, the parsed inputs).
//! Every endpoint is registered in [`ENDPOINTS`] with a one-line description.

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

use crate::push::Status;
use crate::shutdown::Shutdown;
use crate::snapshot::{SnapshotCache, XdsType};
use crate::xds::Connections;

/// What the handlers read.
#[derive(Clone)]
pub struct State {
    pub cache: Arc<SnapshotCache>,
    pub connections: Arc<Connections>,
    pub status: watch::Receiver<Arc<Status>>,
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
        "resources last built for a connected proxy, in Envoy's config_dump JSON",
    ),
    (
        "/debug/syncz",
        "connected proxies with per-type sent/acked versions and NACKs",
    ),
    ("/debug/registryz", "services, ports and endpoints"),
    (
        "/debug/configz",
        "every input object as parsed, and every validation error",
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
        .route("/debug/pushz", get(pushz))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

async fn ready(AxState(s): AxState<State>) -> Response {
    if s.status.borrow().ready {
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
    let status = s.status.borrow().clone();
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
    let Some(class) = s.connections.class_of(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no connected proxy with id {id:?}"),
        );
    };
    let Some(snapshot) = s.cache.get(&class) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("proxy {id:?}: no snapshot built yet"),
        );
    };
    match snapshot.to_json(&types) {
        Ok(v) => Json(json!({"proxyID": id, "version": snapshot.version, "resources": v}))
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn syncz(AxState(s): AxState<State>) -> Json<Value> {
    Json(serde_json::to_value(s.connections.list()).unwrap_or(Value::Null))
}

async fn registryz(AxState(s): AxState<State>) -> Json<Value> {
    let status = s.status.borrow().clone();
    Json(serde_json::to_value(&status.view.services).unwrap_or(Value::Null))
}

async fn configz(AxState(s): AxState<State>) -> Json<Value> {
    let status = s.status.borrow().clone();
    let objects: Vec<&crate::model::Object> =
        status.view.objects.values().map(|o| o.as_ref()).collect();
    Json(json!({
        "objects": objects,
        "input_errors": status.input_errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        "config_errors": status.view.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        "compile_errors": status.compile_errors,
    }))
}
