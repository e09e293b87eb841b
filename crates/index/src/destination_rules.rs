//! DestinationRules by host: which rule each service's clusters are compiled with, several rules
//! for one host merged as istiod merges them, and the warnings for what a rule asks that
//! meshpilot does not serve (the rest of the rule still serves).

use std::borrow::Cow;
use std::sync::Arc;

use foldhash::HashMap;

use meshpilot_model::{
    DestinationRule, Diagnostic, LoadBalancerSettings, ObjectRef, Stage, TrafficPolicy,
    resolve_host,
};

use super::Named;

/// `destination_rules` by resolved host: positions of exact hosts, and of wildcard hosts, so
/// finding a service's rule does not resolve every rule for every service; and the merged rule
/// of each host that several rules of one namespace name, by the position of the oldest.
#[derive(Debug, Default, Clone)]
pub(crate) struct DrIndex {
    pub exact: HashMap<String, Vec<usize>>,
    pub wildcard: Vec<(String, usize)>,
    pub merged: HashMap<usize, Arc<Named<DestinationRule>>>,
    /// Whether any rule balances by consistent hash anywhere (top level, port, subset): only
    /// then do routes need a hash policy, so route compiles skip the lookups otherwise.
    pub any_consistent_hash: bool,
}

impl DrIndex {
    /// Indexes `rules` (oldest first) and merges those of one namespace for one host, as
    /// istiod does: the subsets of all of them (a subset name already defined by an older rule
    /// is ignored) and the oldest top-level traffic policy. What a merge ignores is returned as
    /// warnings.
    pub fn new(rules: &[Arc<Named<DestinationRule>>], domain: &str) -> (DrIndex, Vec<Diagnostic>) {
        let mut index = DrIndex::default();
        let mut groups: HashMap<(String, &str), Vec<usize>> = HashMap::default();
        for (i, dr) in rules.iter().enumerate() {
            index.any_consistent_hash |= uses_consistent_hash(&dr.spec);
            let host = resolve_host(&dr.spec.host, &dr.key.namespace, domain);
            groups
                .entry((host.clone(), &*dr.key.namespace))
                .or_default()
                .push(i);
            if host.starts_with('*') {
                index.wildcard.push((host, i));
            } else {
                index.exact.entry(host).or_default().push(i);
            }
        }
        let mut warnings = Vec::new();
        for ((host, _), members) in groups {
            let [first, rest @ ..] = members.as_slice() else {
                continue;
            };
            if rest.is_empty() {
                continue;
            }
            let oldest = &rules[*first];
            let mut merged = (**oldest).clone();
            for &i in rest {
                let later = &rules[i];
                let warn = |field: &str, what: String| {
                    Diagnostic::warning(
                        Stage::Conflict,
                        later.meta.origin.clone(),
                        ObjectRef::of(&later.key),
                        field,
                        format!(
                            "{what}: {} (older) also names host {host}; the rules are merged as istiod merges them",
                            oldest.key
                        ),
                    )
                };
                for (j, subset) in later.spec.subsets.iter().enumerate() {
                    if merged.spec.subsets.iter().any(|s| s.name == subset.name) {
                        warnings.push(warn(
                            &format!("spec.subsets[{j}].name"),
                            format!(
                                "subset `{}` is ignored, an older rule defines it",
                                subset.name
                            ),
                        ));
                    } else {
                        merged.spec.subsets.push(subset.clone());
                    }
                }
                match (&merged.spec.traffic_policy, &later.spec.traffic_policy) {
                    (None, Some(p)) => merged.spec.traffic_policy = Some(p.clone()),
                    (Some(_), Some(_)) => warnings.push(warn(
                        "spec.trafficPolicy",
                        "this traffic policy is ignored, the older rule's applies".to_string(),
                    )),
                    _ => {}
                }
            }
            index.merged.insert(*first, Arc::new(merged));
        }
        warnings.sort();
        (index, warnings)
    }
}

/// Whether `dr` balances by consistent hash in any of its policies.
fn uses_consistent_hash(dr: &DestinationRule) -> bool {
    let hashed =
        |lb: Option<&LoadBalancerSettings>| lb.is_some_and(|l| l.consistent_hash.is_some());
    let policy = |p: &TrafficPolicy| {
        hashed(p.load_balancer.as_ref())
            || p.port_level_settings
                .iter()
                .any(|pl| hashed(pl.load_balancer.as_ref()))
    };
    dr.traffic_policy.as_deref().is_some_and(policy)
        || dr
            .subsets
            .iter()
            .filter_map(|s| s.traffic_policy.as_ref())
            .any(policy)
}

/// Warnings for the fields of `dr` that meshpilot reads but does not serve, each naming the
/// field and what happens instead.
pub(crate) fn unserved_fields(dr: &Named<DestinationRule>) -> Vec<Diagnostic> {
    let mut found: Vec<(String, Cow<'static, str>)> = Vec::new();
    if dr.spec.workload_selector.is_some() {
        found.push((
            "spec.workloadSelector".into(),
            "not served: the rule applies to every client, not only the selected workloads".into(),
        ));
    }
    if !dr.spec.export_to.is_empty() && !dr.spec.export_to.iter().all(|e| e == "*") {
        found.push((
            "spec.exportTo".into(),
            "not served: the rule applies in every namespace".into(),
        ));
    }
    if let Some(p) = &dr.spec.traffic_policy {
        policy_fields("spec.trafficPolicy", p, &mut found);
    }
    for (i, s) in dr.spec.subsets.iter().enumerate() {
        if let Some(p) = &s.traffic_policy {
            policy_fields(&format!("spec.subsets[{i}].trafficPolicy"), p, &mut found);
        }
    }
    found
        .into_iter()
        .map(|(field, what)| {
            Diagnostic::warning(
                Stage::Compile,
                dr.meta.origin.clone(),
                ObjectRef::of(&dr.key),
                &field,
                what,
            )
        })
        .collect()
}

fn policy_fields(at: &str, p: &TrafficPolicy, found: &mut Vec<(String, Cow<'static, str>)>) {
    // `tls` is served (origination and auto-mTLS, compile's `cluster_tls`), but a
    // `credentialName`'s Secret only to gateways (SDS of their namespace): a sidecar asks for
    // it and never gets it. Clusters are shared by every class, so this is said once per
    // view, not once per sidecar class.
    let port_level = p
        .port_level_settings
        .iter()
        .enumerate()
        .map(|(i, pl)| (format!("{at}.portLevelSettings[{i}]"), pl.tls.as_deref()));
    let credentials = std::iter::once((at.to_string(), p.tls.as_deref()))
        .chain(port_level)
        .filter_map(|(at, tls)| Some((at, tls?.credential_name.as_deref()?)));
    for (at, name) in credentials {
        found.push((
            format!("{at}.tls.credentialName"),
            format!(
                "credentialName `{name}` is not served to sidecars: their TLS to this host \
                 fails; use caCertificates/clientCertificate/privateKey files"
            )
            .into(),
        ));
    }
    let mut parts = vec![(
        at.to_string(),
        p.load_balancer.as_ref(),
        p.outlier_detection.as_ref(),
    )];
    for (i, pl) in p.port_level_settings.iter().enumerate() {
        parts.push((
            format!("{at}.portLevelSettings[{i}]"),
            pl.load_balancer.as_ref(),
            pl.outlier_detection.as_ref(),
        ));
    }
    for (at, lb, od) in parts {
        if lb.is_some_and(|l: &LoadBalancerSettings| l.locality_lb_setting.is_some()) {
            found.push((
                format!("{at}.loadBalancer.localityLbSetting"),
                "not served: endpoints carry no locality, so traffic is spread over all of them"
                    .into(),
            ));
        }
        if od.is_some_and(|o| o.consecutive_errors.is_some()) {
            found.push((
                format!("{at}.outlierDetection.consecutiveErrors"),
                "deprecated and not served: use consecutive5xxErrors or consecutiveGatewayErrors"
                    .into(),
            ));
        }
    }
}
