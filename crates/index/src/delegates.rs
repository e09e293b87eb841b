//! VirtualService delegation, merged as istiod merges it: a root VirtualService's HTTP route
//! with `delegate` is replaced by the delegate's routes (a delegate is a VirtualService without
//! hosts), each with the root route's match conditions combined into its own, and the root
//! route's settings where the delegate's route leaves them unset. A delegate route whose
//! matches conflict with the root route's (not a narrowing of them) is left out. Delegates
//! themselves route nothing and leave the view; a change to one rebuilds its roots with the
//! view.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};

use meshpilot_model::{
    ConfigKey, Diagnostic, HttpMatchRequest, HttpRoute, ObjectRef, Stage, StringMatch,
    VirtualService, exported_to,
};

use super::view::Named;

/// True for a VirtualService that only a root's `delegate` uses.
fn is_delegate(vs: &VirtualService) -> bool {
    vs.hosts.is_empty()
}

/// Replaces each root VirtualService of `ordered` (with a delegating route) by its merge with
/// its delegates, and removes the delegates. Returns what a merge left out, as warnings.
pub fn merge(ordered: &mut Vec<Arc<Named<VirtualService>>>) -> Vec<Diagnostic> {
    let any = ordered
        .iter()
        .any(|vs| is_delegate(&vs.spec) || vs.spec.http.iter().any(|r| r.delegate.is_some()));
    if !any {
        return Vec::new();
    }
    let mut delegates: HashMap<ConfigKey, (Arc<Named<VirtualService>>, bool)> = HashMap::new();
    let mut roots = Vec::with_capacity(ordered.len());
    for vs in std::mem::take(ordered) {
        if is_delegate(&vs.spec) {
            delegates.insert(vs.key.clone(), (vs, false));
        } else {
            roots.push(vs);
        }
    }
    let mut warnings = Vec::new();
    for root in roots {
        if !root.spec.http.iter().any(|r| r.delegate.is_some()) {
            ordered.push(root);
            continue;
        }
        let mut merged_http = Vec::with_capacity(root.spec.http.len());
        for (i, route) in root.spec.http.iter().enumerate() {
            let Some(d) = &route.delegate else {
                merged_http.push(route.clone());
                continue;
            };
            let ns = d.namespace.as_deref().unwrap_or(&root.key.namespace);
            let key = ConfigKey::new(meshpilot_model::Kind::VirtualService, ns, &d.name);
            let warn = |message: String| {
                Diagnostic::warning(
                    Stage::Reference,
                    root.meta.origin.clone(),
                    ObjectRef::of(&root.key),
                    &format!("spec.http[{i}].delegate"),
                    message,
                )
            };
            let Some((delegate, used)) = delegates.get_mut(&key) else {
                warnings.push(warn(format!(
                    "delegate VirtualService {ns}/{} does not exist (or has hosts, which makes it no delegate); this route is left out, as istiod does",
                    d.name
                )));
                continue;
            };
            if !exported_to(&delegate.spec.export_to, ns, &root.key.namespace) {
                warnings.push(warn(format!(
                    "delegate VirtualService {ns}/{} is not exported to namespace {}; this route is left out, as istiod does",
                    d.name, root.key.namespace
                )));
                continue;
            }
            *used = true;
            for (j, sub) in delegate.spec.http.iter().enumerate() {
                match merge_route(route, sub) {
                    Some(r) => merged_http.push(r),
                    None => warnings.push(warn(format!(
                        "the matches of route http[{j}] of delegate {ns}/{} are not within this route's matches; that route is left out, as istiod does",
                        d.name
                    ))),
                }
            }
        }
        let mut spec = root.spec.clone();
        spec.http = merged_http;
        ordered.push(Arc::new(Named {
            key: root.key.clone(),
            meta: root.meta.clone(),
            spec,
        }));
    }
    for (delegate, used) in delegates.values() {
        if !used {
            warnings.push(Diagnostic::warning(
                Stage::Reference,
                delegate.meta.origin.clone(),
                ObjectRef::of(&delegate.key),
                "spec.hosts",
                "a VirtualService without hosts is a delegate, and no root VirtualService delegates to it (in a namespace it is exported to): it routes nothing",
            ));
        }
    }
    warnings.sort();
    warnings
}

/// The delegate's route `sub` under the root's route `root`, or `None` when their matches
/// conflict. The delegate's settings win; the root's fill in what it leaves unset.
pub fn merge_route(root: &HttpRoute, sub: &HttpRoute) -> Option<HttpRoute> {
    let mut out = sub.clone();
    out.matches = merge_matches(&root.matches, &sub.matches)?;
    out.name = joined_name(root.name.as_deref(), sub.name.as_deref());
    fill(&mut out.rewrite, &root.rewrite);
    fill(&mut out.timeout, &root.timeout);
    fill(&mut out.retries, &root.retries);
    fill(&mut out.fault, &root.fault);
    fill(&mut out.mirror, &root.mirror);
    fill(&mut out.mirror_percent, &root.mirror_percent);
    fill(&mut out.mirror_percentage, &root.mirror_percentage);
    fill(&mut out.cors_policy, &root.cors_policy);
    fill(&mut out.headers, &root.headers);
    if out.mirrors.is_empty() && out.mirror.is_none() {
        out.mirrors = root.mirrors.clone();
    }
    Some(out)
}

fn fill<T: Clone>(value: &mut Option<T>, root: &Option<T>) {
    if value.is_none() {
        value.clone_from(root);
    }
}

/// istiod's names: the root's and the delegate's joined by `-`, or whichever is set.
fn joined_name(root: Option<&str>, sub: Option<&str>) -> Option<String> {
    match (root, sub) {
        (Some(r), Some(s)) if !r.is_empty() => Some(format!("{r}-{s}")),
        (r, None) | (r, Some("")) => r.map(str::to_string),
        (_, Some(s)) => Some(s.to_string()),
    }
}

/// Every delegate match must narrow at least one root match; each such pair becomes one
/// merged match. `None` when a delegate match narrows none (or nothing merges).
pub fn merge_matches(
    root: &[HttpMatchRequest],
    sub: &[HttpMatchRequest],
) -> Option<Vec<HttpMatchRequest>> {
    if root.is_empty() {
        return Some(sub.to_vec());
    }
    if sub.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for leaf in sub {
        let before = out.len();
        for r in root.iter().filter(|r| !matches_conflict(r, leaf)) {
            out.push(merge_match(r, leaf));
        }
        if out.len() == before {
            return None;
        }
    }
    Some(out)
}

/// The delegate's match with the root's conditions added where it sets none.
fn merge_match(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> HttpMatchRequest {
    let mut out = leaf.clone();
    out.name = joined_name(root.name.as_deref(), leaf.name.as_deref());
    fill(&mut out.uri, &root.uri);
    fill(&mut out.scheme, &root.scheme);
    fill(&mut out.method, &root.method);
    fill(&mut out.authority, &root.authority);
    fill(&mut out.port, &root.port);
    fill(&mut out.source_namespace, &root.source_namespace);
    for (mine, roots) in [
        (&mut out.headers, &root.headers),
        (&mut out.without_headers, &root.without_headers),
        (&mut out.query_params, &root.query_params),
    ] {
        for (k, v) in roots {
            mine.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    for (k, v) in &root.source_labels {
        out.source_labels
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    if out.gateways.is_empty() {
        out.gateways.clone_from(&root.gateways);
    }
    out
}

/// True when the delegate's match is not a narrowing of the root's (istiod's `hasConflict`).
fn matches_conflict(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
    let pairs = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if pairs
        .iter()
        .any(|(r, l)| string_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    let keyed = [
        (&root.headers, &leaf.headers),
        (&root.without_headers, &leaf.without_headers),
        (&root.query_params, &leaf.query_params),
    ];
    if keyed
        .iter()
        .any(|(r, l)| l.iter().any(|(k, lv)| string_conflict(r.get(k), Some(lv))))
    {
        return true;
    }
    root.ignore_uri_case != leaf.ignore_uri_case
        || matches!((root.port, leaf.port), (Some(a), Some(b)) if a > 0 && b > 0 && a != b)
}

/// istiod's `stringMatchConflict`: no conflict when either side is unset; a regex on either
/// side conflicts; an exact root needs the same exact leaf; a prefix root needs a leaf (exact
/// or prefix) that starts with it; anything else conflicts.
fn string_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else {
        return false;
    };
    match (root, leaf) {
        (StringMatch::Regex(_), _) | (_, StringMatch::Regex(_)) => true,
        (StringMatch::Exact(r), StringMatch::Exact(l)) => r != l,
        (StringMatch::Prefix(p), StringMatch::Prefix(l) | StringMatch::Exact(l)) => {
            !l.starts_with(p.as_str())
        }
        _ => true,
    }
}

#[cfg(test)]
#[path = "delegates_tests.rs"]
mod tests;
