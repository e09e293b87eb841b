//! Converts one parsed manifest document into a validated model [`Object`]. Shared by every
//! source, so a manifest means the same thing from a file or from the API server.
//!
//! Kubernetes kinds are read with k8s-openapi types and projected to what compile needs
//! ([`k8s`]); Istio `networking.istio.io` specs are read into the model's serde types and checked
//! ([`istio`], [`virtual_service`]), `security.istio.io` PeerAuthentication likewise
//! ([`security`]). Every refusal is a [`Diagnostic`] (stage `Parse`) naming
//! origin, kind, namespace/name and the offending field path (e.g.
//! `spec.http[0].route[1].weight`). An Istio spec field the model does not keep is a warning
//! naming its path ([`unread`]); the object still serves.

// `Diagnostic` is the one error shape of every stage (shared with the kube source, the push
// engine and the debug endpoints); it is only built on the cold path, so its size costs
// nothing worth boxing.
#![allow(clippy::result_large_err)]

mod destination_rule;
pub(crate) mod export_to;
mod http_strings;
mod istio;
mod k8s;
mod locality_lb;
mod secret;
mod security;
mod unread;
mod virtual_service;

#[cfg(test)]
mod destination_rule_tests;
#[cfg(test)]
mod refusals_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod unread_tests;
#[cfg(test)]
mod virtual_service_tests;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::{debug, warn};

use meshpilot_model::{
    Body, ConfigKey, Diagnostic, Kind, Labels, Meta, Object, ObjectRef, Origin, Stage,
};

/// The API group of the Istio routing kinds.
const ISTIO_GROUP: &str = "networking.istio.io";
/// The API group of Istio's security kinds, and its versions we read.
const SECURITY_GROUP: &str = "security.istio.io";
const SECURITY_VERSIONS: [&str; 2] = ["v1beta1", "v1"];
/// Istio versions that share one schema.
const ISTIO_VERSIONS: [&str; 3] = ["v1alpha3", "v1beta1", "v1"];

/// Converts one manifest document (already parsed from YAML or JSON) into a model object.
///
/// Returns `Ok(None)` for empty documents, for kinds the control plane does not use
/// (Deployment, ConfigMap, …) and for a known kind under an apiVersion we do not serve (logged
/// at warn). Every validation failure is a [`Diagnostic`] carrying `origin` and, as far as they
/// could be read, kind, namespace, name and field path.
///
/// Warnings about an object that still converts (fields it sets that meshpilot does not read)
/// are left out: sources use [`convert_noting`] to keep them.
pub fn convert(doc: Value, origin: &Origin) -> Result<Option<Object>, Diagnostic> {
    convert_noting(doc, origin, &mut Vec::new())
}

/// [`convert`], adding to `warnings` one warning per field of an Istio spec that meshpilot
/// does not read (`spec.trafficPolicy.tls.caCrl is not read by meshpilot: ignored`).
pub fn convert_noting(
    doc: Value,
    origin: &Origin,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Option<Object>, Diagnostic> {
    let map = match &doc {
        Value::Null => return Ok(None),
        Value::Object(map) if map.is_empty() => return Ok(None),
        Value::Object(map) => map,
        other => {
            return Err(Diagnostic::error(
                Stage::Parse,
                origin.clone(),
                ObjectRef::default(),
                "",
                format!(
                    "a manifest must be a mapping with apiVersion and kind, found {}",
                    json_type(other)
                ),
            ));
        }
    };
    let loose = LooseHead::read(&doc);
    let bare = Ctx {
        origin,
        kind: loose.kind.unwrap_or(""),
        namespace: loose.namespace,
        name: loose.name,
    };
    let Some(kind_str) = map.get("kind").and_then(Value::as_str) else {
        return Err(bare.err("kind", "missing `kind` (a string such as `Service`)"));
    };
    let Some(api_version) = map.get("apiVersion").and_then(Value::as_str) else {
        return Err(bare.err("apiVersion", "missing `apiVersion` (a string such as `v1`)"));
    };
    let kind = match kind_for(api_version, kind_str) {
        Served::Yes(kind) => kind,
        Served::NotOurs => {
            debug!(%origin, api_version, kind = kind_str, name = ?loose.name, "skipping a kind the control plane does not use");
            return Ok(None);
        }
        Served::WrongVersion(expected) => {
            warn!(%origin, kind = kind_str, name = ?loose.name, "skipping {kind_str} with apiVersion `{api_version}`: only {expected} is served");
            return Ok(None);
        }
        Served::Ignored(consequence) => {
            let mut warning = bare.err(
                "kind",
                format!("{kind_str} is an Istio kind meshpilot does not serve: {consequence}"),
            );
            warning.severity = meshpilot_model::Severity::Warning;
            return Err(warning);
        }
    };

    // Until the metadata is read strictly, errors name the object as well as it can be read.
    let loose_namespace = namespace_of(kind, loose.namespace);
    let head_ctx = Ctx {
        origin,
        kind: kind.as_str(),
        namespace: Some(&loose_namespace),
        name: loose.name,
    };
    let head: Head =
        serde_path_to_error::deserialize(&doc).map_err(|e| path_error(&head_ctx, &e))?;
    let meta = head.metadata.unwrap_or_default();
    let name = match meta.name {
        Some(name) if !name.is_empty() => name,
        _ => return Err(head_ctx.err("metadata.name", "metadata.name is required")),
    };
    let namespace = namespace_of(kind, meta.namespace.as_deref());
    let ctx = Ctx {
        origin,
        kind: kind.as_str(),
        namespace: Some(&namespace),
        name: Some(&name),
    };

    // Kept (cold path: once per converted object) to compare with what the model read.
    let input_spec = is_istio_spec(kind)
        .then(|| doc.get("spec").cloned())
        .flatten();
    let body = match kind {
        Kind::Namespace => k8s::namespace(doc, &ctx)?,
        Kind::Service => Body::Service(k8s::service(doc, &ctx)?),
        Kind::Pod => Body::Pod(k8s::pod(doc, &ctx)?),
        Kind::Endpoints => Body::Endpoints(k8s::endpoints(doc, &ctx, &name)?),
        Kind::EndpointSlice => Body::EndpointSlice(k8s::endpoint_slice(doc, &ctx)?),
        Kind::VirtualService => Body::VirtualService(virtual_service::convert(doc, &ctx)?),
        Kind::DestinationRule => Body::DestinationRule(destination_rule::convert(doc, &ctx)?),
        Kind::Gateway => Body::Gateway(istio::gateway(doc, &ctx)?),
        Kind::ServiceEntry => Body::ServiceEntry(istio::service_entry(doc, &ctx)?),
        Kind::WorkloadEntry => Body::WorkloadEntry(istio::workload_entry(doc, &ctx)?),
        Kind::Sidecar => Body::Sidecar(istio::sidecar(doc, &ctx)?),
        Kind::Secret => match secret::convert(doc, &ctx)? {
            Some(tls) => Body::Secret(tls),
            // Service-account tokens, registry credentials and the like: not ours.
            None => return Ok(None),
        },
        Kind::PeerAuthentication => {
            Body::PeerAuthentication(security::peer_authentication(doc, &ctx)?)
        }
    };
    if let (Some(input), Some(model)) = (&input_spec, model_spec(&body)) {
        for path in unread::unread_paths(input, &model, "spec") {
            let mut warning = ctx.err(&path, format!("`{path}` is not read by meshpilot: ignored"));
            warning.severity = meshpilot_model::Severity::Warning;
            warnings.push(warning);
        }
    }
    Ok(Some(Object {
        meta: Meta {
            name,
            namespace,
            labels: meta.labels.unwrap_or_default(),
            origin: origin.clone(),
            creation: meta.creation_timestamp.unwrap_or_default(),
        },
        body,
    }))
}

/// The identity of a manifest when it can be read without converting it: a served kind with a
/// non-empty string `metadata.name`. Lets a caller keep the previous good version of an object
/// whose new version fails [`convert`].
pub fn object_key(doc: &Value) -> Option<ConfigKey> {
    let kind_str = doc.get("kind")?.as_str()?;
    let api_version = doc.get("apiVersion")?.as_str()?;
    let Served::Yes(kind) = kind_for(api_version, kind_str) else {
        return None;
    };
    let loose = LooseHead::read(doc);
    let name = loose.name.filter(|n| !n.is_empty())?;
    Some(ConfigKey::new(
        kind,
        namespace_of(kind, loose.namespace),
        name,
    ))
}

pub use meshpilot_model::parse_duration;

/// The kinds whose `spec` is read into the model's own serde types, so that the fields it does
/// not keep can be found by comparing it with the input.
fn is_istio_spec(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::VirtualService
            | Kind::DestinationRule
            | Kind::Gateway
            | Kind::ServiceEntry
            | Kind::WorkloadEntry
            | Kind::Sidecar
            | Kind::PeerAuthentication
    )
}

/// The spec the model kept, serialized as the input would write it.
fn model_spec(body: &Body) -> Option<Value> {
    let spec = match body {
        Body::VirtualService(vs) => serde_json::to_value(vs),
        Body::DestinationRule(dr) => serde_json::to_value(dr),
        Body::Gateway(gw) => serde_json::to_value(gw),
        Body::ServiceEntry(se) => serde_json::to_value(se),
        Body::WorkloadEntry(we) => serde_json::to_value(we),
        Body::Sidecar(sc) => serde_json::to_value(sc),
        Body::PeerAuthentication(pa) => serde_json::to_value(pa),
        _ => return None,
    };
    spec.ok()
}

// ---------------------------------------------------------------------------------------------
// Shared helpers for the per-kind converters.

/// What an error needs to name the object being converted.
pub(super) struct Ctx<'a> {
    origin: &'a Origin,
    kind: &'a str,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
}

impl Ctx<'_> {
    /// An error about `field` (a path such as `spec.hosts`; empty for the whole object).
    fn err(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        let object = ObjectRef {
            kind: (!self.kind.is_empty()).then(|| self.kind.to_string()),
            namespace: self.namespace.map(str::to_string),
            name: self.name.map(str::to_string),
        };
        Diagnostic::error(Stage::Parse, self.origin.clone(), object, field, message)
    }

    /// Deserializes the whole document into `T`, naming the failing field path on error.
    fn deserialize<T: DeserializeOwned>(&self, doc: Value) -> Result<T, Diagnostic> {
        serde_path_to_error::deserialize(doc).map_err(|e| path_error(self, &e))
    }

    /// Deserializes the document's `spec` (absent meaning the default) into `T`.
    fn spec<T: DeserializeOwned + Default>(&self, doc: Value) -> Result<T, Diagnostic> {
        #[derive(Deserialize)]
        struct WithSpec<T: Default> {
            #[serde(default)]
            spec: T,
        }
        let with: WithSpec<T> = self.deserialize(doc)?;
        Ok(with.spec)
    }

    /// Checks a port number is in 1–65535 and narrows it.
    fn port(&self, field: &str, n: i64) -> Result<u16, Diagnostic> {
        match u16::try_from(n) {
            Ok(p) if p != 0 => Ok(p),
            _ => Err(self.err(field, format!("port {n} is out of range (1-65535)"))),
        }
    }

    /// Checks a duration string parses (see [`parse_duration`]).
    fn duration(&self, field: &str, value: Option<&str>) -> Result<(), Diagnostic> {
        match value {
            Some(v) if parse_duration(v).is_none() => Err(self.err(
                field,
                format!("invalid duration `{v}` (expected e.g. `10s`, `1.5s`, `500ms`, `1m`)"),
            )),
            _ => Ok(()),
        }
    }
}

/// An RFC 1123 label (lower-case letters, digits and `-`, at most 63, `-` not at either end):
/// what a namespace name and a ServiceEntry port name are.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn path_error<E: std::fmt::Display>(ctx: &Ctx, e: &serde_path_to_error::Error<E>) -> Diagnostic {
    let path = e.path().to_string();
    let field = if path == "." { "" } else { path.as_str() };
    ctx.err(field, e.inner().to_string())
}

/// The fields every manifest shares, read strictly (type errors name the field).
#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    metadata: Option<HeadMeta>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct HeadMeta {
    name: Option<String>,
    namespace: Option<String>,
    labels: Option<Labels>,
    creation_timestamp: Option<String>,
}

/// Kind, namespace and name read leniently, for naming an object in errors before (or
/// whether or not) it deserializes.
struct LooseHead<'a> {
    kind: Option<&'a str>,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
}

impl<'a> LooseHead<'a> {
    fn read(doc: &'a Value) -> Self {
        let meta = doc.get("metadata");
        LooseHead {
            kind: doc.get("kind").and_then(Value::as_str),
            namespace: meta
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str),
            name: meta.and_then(|m| m.get("name")).and_then(Value::as_str),
        }
    }
}

/// `default` when absent or empty; always empty for cluster-scoped kinds.
fn namespace_of(kind: Kind, namespace: Option<&str>) -> String {
    match (kind, namespace) {
        (Kind::Namespace, _) => String::new(),
        (_, Some(ns)) if !ns.is_empty() => ns.to_string(),
        _ => "default".to_string(),
    }
}

enum Served {
    Yes(Kind),
    /// A kind we do not use at all.
    NotOurs,
    /// A kind we use, under an apiVersion we do not serve; carries what we do serve.
    WrongVersion(&'static str),
    /// An Istio kind istiod acts on and meshpilot does not: a warning (not a silent skip), with
    /// what the user loses.
    Ignored(&'static str),
}

/// Istio kinds istiod acts on that meshpilot ignores, by API group, with what ignoring them
/// means for the user's traffic.
const NOT_SERVED: &[(&str, &str, &str)] = &[
    (
        "networking.istio.io",
        "EnvoyFilter",
        "its patches are not applied to any proxy",
    ),
    (
        "networking.istio.io",
        "WorkloadGroup",
        "workloads do not auto-register from it; write WorkloadEntries instead",
    ),
    (
        "networking.istio.io",
        "ProxyConfig",
        "its proxy settings (concurrency, environment, image) are not applied",
    ),
    (
        "telemetry.istio.io",
        "Telemetry",
        "its metrics, tracing and access-log settings are not applied",
    ),
    (
        "security.istio.io",
        "AuthorizationPolicy",
        "no proxy enforces it, so requests it would deny are allowed",
    ),
    (
        "security.istio.io",
        "RequestAuthentication",
        "no proxy validates the JWTs it describes",
    ),
    (
        "extensions.istio.io",
        "WasmPlugin",
        "its plugin is not loaded into any proxy",
    ),
];

fn kind_for(api_version: &str, kind: &str) -> Served {
    let (expected, model_kind) = match kind {
        "Service" => ("v1", Kind::Service),
        "Pod" => ("v1", Kind::Pod),
        "Namespace" => ("v1", Kind::Namespace),
        "Secret" => ("v1", Kind::Secret),
        "Endpoints" => ("v1", Kind::Endpoints),
        "EndpointSlice" => ("discovery.k8s.io/v1", Kind::EndpointSlice),
        "VirtualService" | "DestinationRule" | "Gateway" | "ServiceEntry" | "WorkloadEntry"
        | "Sidecar" => {
            let model_kind = match kind {
                "VirtualService" => Kind::VirtualService,
                "DestinationRule" => Kind::DestinationRule,
                "Gateway" => Kind::Gateway,
                "ServiceEntry" => Kind::ServiceEntry,
                "WorkloadEntry" => Kind::WorkloadEntry,
                _ => Kind::Sidecar,
            };
            let served = api_version
                .split_once('/')
                .is_some_and(|(g, v)| g == ISTIO_GROUP && ISTIO_VERSIONS.contains(&v));
            return if served {
                Served::Yes(model_kind)
            } else {
                Served::WrongVersion("networking.istio.io/v1, v1beta1 or v1alpha3")
            };
        }
        "PeerAuthentication" => {
            let served = api_version
                .split_once('/')
                .is_some_and(|(g, v)| g == SECURITY_GROUP && SECURITY_VERSIONS.contains(&v));
            return if served {
                Served::Yes(Kind::PeerAuthentication)
            } else {
                Served::WrongVersion("security.istio.io/v1 or v1beta1")
            };
        }
        _ => {
            let group = api_version.split_once('/').map_or("", |(g, _)| g);
            return NOT_SERVED
                .iter()
                .find(|(g, k, _)| *g == group && *k == kind)
                .map_or(Served::NotOurs, |(_, _, consequence)| {
                    Served::Ignored(consequence)
                });
        }
    };
    if api_version == expected {
        Served::Yes(model_kind)
    } else {
        Served::WrongVersion(expected)
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}
