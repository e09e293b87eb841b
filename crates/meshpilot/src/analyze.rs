//! `meshpilot analyze DIR…`: what `serve` would report about a directory of manifests, without
//! serving it — for CI pipelines and pre-commit checks, as `istioctl analyze` is used.
//!
//! It runs the server's own stages: the file source's parsing and conversion (with its default
//! size limits), the index's reference check and conflicts, and compile for a representative
//! proxy of each kind the inputs imply — a sidecar in every namespace that has objects, and a
//! gateway proxy for every Gateway (its selector's labels, in its namespace). Findings carry
//! Istio's message code where Istio has one for the same finding. The exit status is 0 when
//! nothing reached `--failure-threshold`, else 79 (istioctl analyze's).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::json;

use meshpilot_index::Index;
use meshpilot_model::proxy::MetadataValue;
use meshpilot_model::{Diagnostic, Proxy, Severity, SourceId, Stage};

/// istioctl analyze's exit status when it found problems at or above the threshold.
pub const FOUND_ISSUES_EXIT: u8 = 79;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Threshold {
    Error,
    Warning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct AnalyzeArgs {
    /// Directories of Kubernetes/Istio manifests (read recursively, as `serve --config-dir`).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// The lowest severity that fails the run (exit status 79).
    #[arg(long, value_enum, default_value = "error")]
    pub failure_threshold: Threshold,
    /// `text` (one line per finding) or `json`.
    #[arg(long, short, value_enum, default_value = "text")]
    pub output: Output,
    /// DNS domain of the cluster, as `serve --domain`.
    #[arg(long, default_value = "cluster.local")]
    pub domain: String,
}

/// Istio's message code for a finding, where Istio reports the same thing.
pub fn istio_code(d: &Diagnostic) -> Option<&'static str> {
    match d.stage {
        // ReferencedResourceNotFound: a route or rule names a host nobody declares.
        Stage::Reference => Some("IST0101"),
        // SchemaValidationError: an Istio object whose fields do not validate.
        Stage::Parse if d.object.kind.as_deref().is_some_and(is_istio_kind) => Some("IST0106"),
        // ConflictingMeshGatewayVirtualServiceHosts: a VirtualService sidecars ignore for a
        // host an older one routes (a definition shadowed by another source names `serving`).
        Stage::Conflict
            if d.serving.is_none() && d.object.kind.as_deref() == Some("VirtualService") =>
        {
            Some("IST0109")
        }
        _ => None,
    }
}

fn is_istio_kind(kind: &str) -> bool {
    matches!(
        kind,
        "VirtualService"
            | "DestinationRule"
            | "Gateway"
            | "ServiceEntry"
            | "Sidecar"
            | "WorkloadEntry"
            | "PeerAuthentication"
    )
}

/// Every finding for `dirs`, sorted and without repeats.
pub fn analyze(dirs: &[PathBuf], domain: &str) -> Vec<Diagnostic> {
    let (objects, mut found) = meshpilot_source::files::load_dirs(dirs);
    let mut index = Index::new();
    index.reset(SourceId::Files, objects);
    let view = index.build_view(domain, None);
    found.extend(view.diagnostics.iter().cloned());
    found.extend(index.conflicts());
    for proxy in representative_proxies(&view, domain) {
        found.extend(meshpilot_compile::compile_class(&view, &proxy).errors);
    }
    let unique: BTreeSet<Diagnostic> = found.into_iter().collect();
    unique.into_iter().collect()
}

/// A sidecar per namespace with objects, and a gateway proxy per Gateway.
fn representative_proxies(view: &meshpilot_index::View, domain: &str) -> Vec<Proxy> {
    let mut namespaces: BTreeSet<String> = view
        .objects
        .keys()
        .map(|k| k.namespace.to_string())
        .filter(|ns| !ns.is_empty())
        .collect();
    namespaces.insert("default".to_string());
    let mut proxies = Vec::new();
    for (i, ns) in namespaces.iter().enumerate() {
        let node = format!(
            "sidecar~10.255.0.{}~analyze.{ns}~{ns}.svc.{domain}",
            i % 250 + 1
        );
        if let Ok(p) = Proxy::parse(&node, &BTreeMap::new()) {
            proxies.push(p);
        }
    }
    for (i, gw) in view.gateways.iter().enumerate() {
        let ns = gw.key.namespace.to_string();
        let mut md = BTreeMap::new();
        md.insert(
            "LABELS".to_string(),
            MetadataValue::Map(gw.spec.selector.clone()),
        );
        md.insert("NAMESPACE".to_string(), MetadataValue::String(ns.clone()));
        let node = format!(
            "router~10.254.0.{}~{}-gateway.{ns}~{ns}.svc.{domain}",
            i % 250 + 1,
            gw.key.name
        );
        if let Ok(p) = Proxy::parse(&node, &md) {
            proxies.push(p);
        }
    }
    proxies
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Error => "Error",
        Severity::Warning => "Warning",
    }
}

/// The report as printed, and whether the run fails.
pub fn report(args: &AnalyzeArgs, found: &[Diagnostic]) -> (String, bool) {
    let fails = found.iter().any(|d| match args.failure_threshold {
        Threshold::Error => d.severity == Severity::Error,
        Threshold::Warning => true,
    });
    let text = match args.output {
        Output::Json => {
            let items: Vec<_> = found
                .iter()
                .map(|d| {
                    json!({
                        "code": istio_code(d),
                        "level": severity_word(d.severity),
                        "stage": d.stage,
                        "origin": d.origin.to_string(),
                        "object": d.object.to_string(),
                        "field": d.field,
                        "message": d.message,
                    })
                })
                .collect();
            format!(
                "{}\n",
                serde_json::to_string_pretty(&items).unwrap_or_default()
            )
        }
        Output::Text if found.is_empty() => "✔ No validation issues found.\n".to_string(),
        Output::Text => {
            let mut out = String::new();
            for d in found {
                let code = istio_code(d).unwrap_or("-");
                let object = if d.object.is_unknown() {
                    String::new()
                } else {
                    format!(" ({})", d.object)
                };
                let field = d
                    .field
                    .as_deref()
                    .map(|f| format!(" {f}:"))
                    .unwrap_or_default();
                out.push_str(&format!(
                    "{} [{code}]{object} {}:{field} {}\n",
                    severity_word(d.severity),
                    d.origin,
                    d.message
                ));
            }
            out
        }
    };
    (text, fails)
}
