//! The mesh configuration (Istio's MeshConfig, as istiod reads it from its `--meshConfig` file
//! or from the `mesh` key of ConfigMap `istio-system/istio`) → the mesh-wide settings
//! meshpilot serves: `outboundTrafficPolicy.mode` and the `exportTo` defaults
//! (`defaultServiceExportTo`, `defaultVirtualServiceExportTo`,
//! `defaultDestinationRuleExportTo`). Every other field present is reported as not read, so
//! that none is dropped silently; a field of the wrong type or an invalid value is an error
//! naming the origin and the field.

use std::path::Path;

use serde_json::{Map, Value};

use meshpilot_model::{ExportDefaults, OutboundTrafficMode, ROOT_NAMESPACE};

use crate::convert::export_to;

/// What meshpilot serves of one mesh configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshConfig {
    /// `outboundTrafficPolicy.mode`, when set.
    pub outbound_mode: Option<OutboundTrafficMode>,
    /// The `default*ExportTo` lists (empty when unset: every namespace).
    pub export_defaults: ExportDefaults,
    /// The fields present that meshpilot does not read, as paths (`meshConfig.enableTracing`),
    /// in key order.
    pub unread: Vec<String>,
}

impl MeshConfig {
    /// One warning per field not read, as the log and the docs word it.
    pub fn unread_warnings(&self) -> impl Iterator<Item = String> + '_ {
        self.unread
            .iter()
            .map(|path| format!("{path} is not read by meshpilot: ignored"))
    }
}

/// Why a mesh configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MeshConfigError {
    /// The file cannot be read.
    #[error("mesh config {origin}: cannot read it: {error}")]
    Read {
        origin: String,
        error: std::io::Error,
    },
    /// The text is not YAML.
    #[error("mesh config {origin}: not valid YAML: {message}")]
    Yaml { origin: String, message: String },
    /// A field has the wrong type or an invalid value.
    #[error("mesh config {origin}: {field}: {message}")]
    Field {
        origin: String,
        field: String,
        message: String,
    },
}

/// The prefix of every field path, as Istio's documentation names MeshConfig's fields.
const ROOT: &str = "meshConfig";

/// Reads and checks the MeshConfig YAML file at `path`.
pub fn read_file(path: &Path) -> Result<MeshConfig, MeshConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| MeshConfigError::Read {
        origin: origin.clone(),
        error,
    })?;
    parse(&text, &origin)
}

/// Checks MeshConfig YAML `text` read from `origin` (a file path, or the ConfigMap's name).
/// An empty text is the default mesh configuration.
pub fn parse(text: &str, origin: &str) -> Result<MeshConfig, MeshConfigError> {
    let doc: Value = serde_saphyr::from_str(text).map_err(|e| MeshConfigError::Yaml {
        origin: origin.to_string(),
        message: e.to_string(),
    })?;
    let field_error = |field: &str, message: String| MeshConfigError::Field {
        origin: origin.to_string(),
        field: field.to_string(),
        message,
    };
    let map = match &doc {
        Value::Null => return Ok(MeshConfig::default()),
        Value::Object(map) => map,
        other => {
            return Err(field_error(
                ROOT,
                format!(
                    "expected a mapping of MeshConfig fields, found {}",
                    type_of(other)
                ),
            ));
        }
    };
    let mut config = MeshConfig::default();
    for (key, value) in map {
        let path = format!("{ROOT}.{key}");
        let list = |target: &mut Vec<String>| -> Result<(), MeshConfigError> {
            let read = export_list(value).map_err(|m| field_error(&path, m))?;
            if let Some((i, message)) = export_to::first_problem(&read) {
                return Err(field_error(&format!("{path}[{i}]"), message));
            }
            // `*` alone is what an empty list already means: kept empty, the view has nothing
            // to fill in.
            if read != ["*"] {
                *target = read;
            }
            Ok(())
        };
        match key.as_str() {
            "defaultServiceExportTo" => list(&mut config.export_defaults.service)?,
            "defaultVirtualServiceExportTo" => list(&mut config.export_defaults.virtual_service)?,
            "defaultDestinationRuleExportTo" => list(&mut config.export_defaults.destination_rule)?,
            "outboundTrafficPolicy" => {
                config.outbound_mode = outbound_policy(value, &path, &mut config.unread)
                    .map_err(|(f, m)| field_error(&f, m))?;
            }
            // meshpilot's root namespace is istiod's default; the same value asks for nothing
            // new.
            "rootNamespace" if value.as_str() == Some(ROOT_NAMESPACE) => {}
            _ if value.is_null() => {}
            _ => config.unread.push(path),
        }
    }
    Ok(config)
}

/// An `exportTo` list: a sequence of strings (null is unset).
fn export_list(value: &Value) -> Result<Vec<String>, String> {
    let wrong = |v: &Value| format!("expected a list of strings, found {}", type_of(v));
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| wrong(v)))
            .collect(),
        other => Err(wrong(other)),
    }
}

/// `outboundTrafficPolicy`: its `mode`; its other fields are noted in `unread`.
fn outbound_policy(
    value: &Value,
    path: &str,
    unread: &mut Vec<String>,
) -> Result<Option<OutboundTrafficMode>, (String, String)> {
    let map: &Map<String, Value> = match value {
        Value::Null => return Ok(None),
        Value::Object(map) => map,
        other => {
            return Err((
                path.to_string(),
                format!("expected a mapping, found {}", type_of(other)),
            ));
        }
    };
    let mut mode = None;
    for (key, value) in map {
        let at = format!("{path}.{key}");
        match (key.as_str(), value) {
            ("mode", Value::Null) => {}
            ("mode", Value::String(s)) => {
                mode = Some(OutboundTrafficMode::parse(s).ok_or_else(|| {
                    (
                        at.clone(),
                        format!("`{s}` is not ALLOW_ANY or REGISTRY_ONLY"),
                    )
                })?);
            }
            ("mode", other) => {
                return Err((
                    at,
                    format!(
                        "expected ALLOW_ANY or REGISTRY_ONLY, found {}",
                        type_of(other)
                    ),
                ));
            }
            (_, Value::Null) => {}
            _ => unread.push(at),
        }
    }
    Ok(mode)
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn served_fields_are_read_and_the_others_reported() {
        let config = parse(
            "enableTracing: true\n\
             defaultServiceExportTo: [\".\"]\n\
             defaultVirtualServiceExportTo: [\"shop\", \"front\"]\n\
             defaultDestinationRuleExportTo: [\"~\"]\n\
             outboundTrafficPolicy: {mode: REGISTRY_ONLY, egressProxy: {host: egress}}\n\
             rootNamespace: istio-system\n\
             accessLogFile: /dev/stdout\n",
            "mesh.yaml",
        )
        .expect("valid");
        assert_eq!(
            config.outbound_mode,
            Some(OutboundTrafficMode::RegistryOnly)
        );
        assert_eq!(
            config.export_defaults,
            ExportDefaults {
                service: list(&["."]),
                virtual_service: list(&["shop", "front"]),
                destination_rule: list(&["~"]),
            }
        );
        assert_eq!(
            config.unread_warnings().collect::<Vec<_>>(),
            [
                "meshConfig.accessLogFile is not read by meshpilot: ignored",
                "meshConfig.enableTracing is not read by meshpilot: ignored",
                "meshConfig.outboundTrafficPolicy.egressProxy is not read by meshpilot: ignored",
            ]
        );
    }

    #[test]
    fn every_namespace_is_the_default_mesh() {
        let config = parse(
            "defaultServiceExportTo: [\"*\"]\ndefaultVirtualServiceExportTo: []\n",
            "mesh.yaml",
        )
        .expect("valid");
        assert_eq!(config, MeshConfig::default());
    }

    #[test]
    fn an_empty_file_is_the_default_mesh() {
        assert_eq!(
            parse("", "mesh.yaml").expect("valid"),
            MeshConfig::default()
        );
        assert_eq!(
            parse("# nothing\n", "mesh.yaml").expect("valid"),
            MeshConfig::default()
        );
    }

    #[test]
    fn errors_name_the_origin_and_the_field() {
        let error = |text: &str| {
            parse(text, "/etc/mesh.yaml")
                .expect_err("refused")
                .to_string()
        };
        assert_eq!(
            error("defaultServiceExportTo: \".\"\n"),
            "mesh config /etc/mesh.yaml: meshConfig.defaultServiceExportTo: expected a list of \
             strings, found a string"
        );
        assert_eq!(
            error("defaultVirtualServiceExportTo: [\".\", \"Shop\"]\n"),
            "mesh config /etc/mesh.yaml: meshConfig.defaultVirtualServiceExportTo[1]: `Shop` is \
             not `*`, `.`, `~` or a namespace name (lowercase letters, digits and `-`, at most 63)"
        );
        assert_eq!(
            error("defaultDestinationRuleExportTo: [\"*\", \".\"]\n"),
            "mesh config /etc/mesh.yaml: meshConfig.defaultDestinationRuleExportTo[0]: `*` must \
             be the only entry of exportTo (it has 2)"
        );
        assert_eq!(
            error("outboundTrafficPolicy: {mode: DENY}\n"),
            "mesh config /etc/mesh.yaml: meshConfig.outboundTrafficPolicy.mode: `DENY` is not \
             ALLOW_ANY or REGISTRY_ONLY"
        );
        assert_eq!(
            error("- a\n"),
            "mesh config /etc/mesh.yaml: meshConfig: expected a mapping of MeshConfig fields, \
             found a list"
        );
        assert!(
            error("defaultServiceExportTo: [\n")
                .starts_with("mesh config /etc/mesh.yaml: not valid YAML"),
        );
    }
}
