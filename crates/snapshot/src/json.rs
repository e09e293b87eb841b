//! Renders encoded resources as Envoy's own config-dump JSON (protobuf JSON with `@type` and
//! proto field names), through the Envoy API descriptors shipped in `envoy-types` (copied to
//! `OUT_DIR` by `build.rs`). Used by the debug endpoints and the golden-file tests.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::{Map, Value};

use super::{Snapshot, XdsType};

static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));

/// Why a resource could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The bundled descriptors could not be loaded (a build problem).
    #[error("Envoy descriptors: {0}")]
    Descriptors(String),
    /// The type is not in the descriptors.
    #[error("unknown message type {0}")]
    UnknownType(String),
    /// The bytes do not decode as that type.
    #[error("decode {0}: {1}")]
    Decode(String, String),
    /// Serialization failed.
    #[error("serialize {0}: {1}")]
    Serialize(String, String),
}

fn pool() -> Result<&'static DescriptorPool, JsonError> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(DESCRIPTORS).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| JsonError::Descriptors(e.clone()))
}

/// Renders one encoded message of the given type URL as JSON with an `@type` field.
pub fn message_json(type_url: &str, body: &[u8]) -> Result<Value, JsonError> {
    let full_name = type_url.rsplit('/').next().unwrap_or(type_url);
    let desc = pool()?
        .get_message_by_name(full_name)
        .ok_or_else(|| JsonError::UnknownType(full_name.to_string()))?;
    let msg = DynamicMessage::decode(desc, body)
        .map_err(|e| JsonError::Decode(full_name.to_string(), e.to_string()))?;
    let opts = SerializeOptions::new().use_proto_field_name(true);
    let mut ser = serde_json::Serializer::new(Vec::new());
    msg.serialize_with_options(&mut ser, &opts)
        .map_err(|e| JsonError::Serialize(full_name.to_string(), e.to_string()))?;
    let value: Value = serde_json::from_slice(&ser.into_inner())
        .map_err(|e| JsonError::Serialize(full_name.to_string(), e.to_string()))?;
    let mut out = Map::new();
    out.insert("@type".to_string(), Value::String(type_url.to_string()));
    if let Value::Object(fields) = value {
        out.extend(fields);
    }
    if type_url == XdsType::Secret.type_url() {
        redact_private_keys(&mut out);
    }
    Ok(Value::Object(out))
}

/// What a private key shows in a dump, as in Envoy's own admin output.
pub const REDACTED: &str = "[redacted]";

/// Replaces every `private_key` data source (`tls_certificate.private_key`) with
/// [`REDACTED`]: key material never leaves through a debug endpoint or a golden file.
fn redact_private_keys(fields: &mut Map<String, Value>) {
    for (name, value) in fields.iter_mut() {
        if name == "private_key" {
            *value = serde_json::json!({ "inline_string": REDACTED });
        } else if let Value::Object(inner) = value {
            redact_private_keys(inner);
        }
    }
}

impl Snapshot {
    /// Every resource of the given types as `{type: {name: json}}`, sorted by name.
    pub fn to_json(&self, types: &[XdsType]) -> Result<Value, JsonError> {
        let mut out = Map::new();
        for t in types {
            let mut items = Map::new();
            for (name, r) in &self.get(*t).items {
                items.insert(name.to_string(), message_json(t.type_url(), &r.body)?);
            }
            out.insert(t.short().to_string(), Value::Object(items));
        }
        Ok(Value::Object(out))
    }
}
