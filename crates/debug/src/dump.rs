//! `/debug/config_dump` for one proxy, in the shape of Envoy's admin `/config_dump`: a
//! `configs` list of `ClustersConfigDump`, `EndpointsConfigDump`, `ListenersConfigDump` and
//! `RoutesConfigDump` with their `dynamic_*` entries (`version_info`, the resource as protobuf
//! JSON with `@type`, `last_updated`), so it can be diffed against the proxy's own dump.
//!
//! Built from the stream's own record of what it was sent (not the class snapshot, which may
//! be newer), with per entry meshpilot's annotations: `client_status` (Envoy's field name:
//! `ACKED`, `NACKED`, `SENT` while unanswered, or `NOT_SENT` for a resource the proxy should
//! hold but was never sent), Envoy's `error_state` shape for a NACK, and `sources`, the input
//! objects behind the resource.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use meshpilot_snapshot::json::{JsonError, message_json};
use meshpilot_snapshot::{PerType, Snapshot, XdsType};
use meshpilot_xds::{ConnectionStatus, ResourceStatus, SentResource, rfc3339};

/// The admin dump type and the list key of each xDS type.
fn section_names(t: XdsType) -> (&'static str, &'static str) {
    match t {
        XdsType::Cluster => (
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "dynamic_active_clusters",
        ),
        XdsType::Endpoint => (
            "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
            "dynamic_endpoint_configs",
        ),
        XdsType::Listener => (
            "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "dynamic_listeners",
        ),
        XdsType::Route => (
            "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
            "dynamic_route_configs",
        ),
        XdsType::Secret => (
            "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
            "dynamic_active_secrets",
        ),
    }
}

/// The field that holds the resource inside an entry.
fn config_field(t: XdsType) -> &'static str {
    match t {
        XdsType::Cluster => "cluster",
        XdsType::Endpoint => "endpoint_config",
        XdsType::Listener => "listener",
        XdsType::Route => "route_config",
        // Rendered with its private key redacted (see `json::message_json`).
        XdsType::Secret => "secret",
    }
}

fn status_word(s: ResourceStatus) -> &'static str {
    match s {
        ResourceStatus::Sent => "SENT",
        ResourceStatus::Acked => "ACKED",
        ResourceStatus::Nacked => "NACKED",
        ResourceStatus::NotSent => "NOT_SENT",
    }
}

/// One entry as Envoy lays it out, plus meshpilot's annotations.
fn entry(t: XdsType, r: &SentResource, not_sent: bool) -> Result<Value, JsonError> {
    let config = message_json(t.type_url(), &r.resource.body)?;
    let mut state = Map::new();
    if !not_sent {
        state.insert("version_info".into(), json!(r.version));
    }
    state.insert(config_field(t).into(), config);
    if !not_sent {
        state.insert("last_updated".into(), json!(rfc3339(r.last_updated)));
    }
    if t == XdsType::Secret {
        // Envoy's `DynamicSecret` names its entry.
        state.insert("name".into(), json!(r.resource.name));
    }
    let mut out = if t == XdsType::Listener {
        let mut l = Map::new();
        l.insert("name".into(), json!(r.resource.name));
        l.insert("active_state".into(), Value::Object(state));
        l
    } else {
        state
    };
    let status = if not_sent {
        ResourceStatus::NotSent
    } else {
        r.status
    };
    out.insert("client_status".into(), json!(status_word(status)));
    if let (ResourceStatus::Nacked, Some(err)) = (status, &r.error) {
        out.insert(
            "error_state".into(),
            json!({
                "details": err,
                "last_update_attempt": rfc3339(r.last_updated),
                "version_info": r.version,
            }),
        );
    }
    let sources: Vec<Value> = r
        .resource
        .sources
        .iter()
        .map(|k| json!({"kind": k.kind, "namespace": k.namespace, "name": k.name}))
        .collect();
    out.insert("sources".into(), Value::Array(sources));
    Ok(Value::Object(out))
}

/// The config dump of one connection: what it was sent (`sent`, per type), and, from the class
/// snapshot, what it subscribes to but was never sent.
pub fn render(
    conn: &ConnectionStatus,
    sent: &PerType<Vec<SentResource>>,
    snapshot: Option<&Snapshot>,
    types: &[XdsType],
) -> Result<Value, JsonError> {
    let mut configs = Vec::new();
    for &t in types {
        let (type_url, list_key) = section_names(t);
        let held = sent.get(t).map(Vec::as_slice).unwrap_or_default();
        let mut items = Vec::with_capacity(held.len());
        for r in held {
            items.push(entry(t, r, false)?);
        }
        let status = conn.types.get(t);
        if let (Some(snap), Some(st)) = (snapshot, status) {
            let have: BTreeSet<&str> = held.iter().map(|r| &*r.resource.name).collect();
            let set = snap.get(t);
            let wanted: Vec<&str> = if st.wildcard {
                set.items.keys().map(|k| &**k).collect()
            } else {
                st.subscribed.iter().collect()
            };
            for name in wanted {
                if have.contains(name) {
                    continue;
                }
                if let Some(r) = set.items.get(name) {
                    let missing = SentResource {
                        resource: r.clone(),
                        version: r.version.to_string(),
                        nonce: String::new(),
                        last_updated: snap.created,
                        status: ResourceStatus::NotSent,
                        error: None,
                    };
                    items.push(entry(t, &missing, true)?);
                }
            }
        }
        let mut section = Map::new();
        section.insert("@type".into(), json!(type_url));
        if let Some(v) = status.and_then(|s| s.version_acked.clone()) {
            section.insert("version_info".into(), json!(v));
        }
        section.insert(list_key.into(), Value::Array(items));
        configs.push(Value::Object(section));
    }
    Ok(json!({ "configs": configs }))
}
