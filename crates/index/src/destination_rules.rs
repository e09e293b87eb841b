//! DestinationRules by client namespace and host: which rule a client's clusters for a service
//! are compiled with (istiod's lookup: the client's namespace, then the service's, then the root
//! namespace, each honouring `exportTo`), several rules of one namespace for one host merged as
//! istiod merges them, and the warnings for what a rule asks that meshpilot does not serve (the
//! rest of the rule still serves).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Arc;

use foldhash::HashMap;

use meshpilot_model::{
    DestinationRule, Diagnostic, LoadBalancerSettings, ObjectRef, ROOT_NAMESPACE, Stage,
    TrafficPolicy, host::host_matches, resolve_host,
};

use super::Named;

/// The rules of one namespace that one lookup step searches, by resolved host: each entry is
/// the rule merged from every rule of that namespace (in this pool) naming the host.
#[derive(Debug, Default, Clone)]
struct Pool {
    exact: HashMap<String, usize>,
    /// (host, entry), most specific (longest) host first.
    wildcard: Vec<(String, usize)>,
}

/// One merged rule and the namespaces it is exported to (the union of its members' lists; an
/// empty set is every namespace).
#[derive(Debug, Clone)]
struct Entry {
    rule: Arc<Named<DestinationRule>>,
    export_to: Vec<String>,
}

impl Entry {
    fn exported_to(&self, client: Option<&str>) -> bool {
        self.export_to.is_empty()
            || self
                .export_to
                .iter()
                .any(|e| e == "*" || Some(e.as_str()) == client)
    }
}

impl Pool {
    /// istiod's most specific host match: the exact host, else the longest wildcard covering it.
    fn find(&self, host: &str) -> Option<usize> {
        self.exact.get(host).copied().or_else(|| {
            self.wildcard
                .iter()
                .find(|(h, _)| host_matches(h, host))
                .map(|&(_, i)| i)
        })
    }
}

/// `destination_rules` arranged for istiod's lookup per client namespace.
#[derive(Debug, Default, Clone)]
pub(crate) struct DrIndex {
    entries: Vec<Entry>,
    /// Per namespace, its rules visible to its own clients (exported to `*`, `.` or itself):
    /// what a client looks in first.
    local: HashMap<String, Pool>,
    /// Per namespace, its rules exported beyond it (anything but `.`/its own name alone):
    /// what clients of other namespaces find in a service's namespace or the root namespace.
    exported: HashMap<String, Pool>,
    /// The root namespace's rules exported to it alone: the first look of its own clients.
    root_local: Pool,
    /// Namespaces whose clients may see a rule other clients do not: those holding a rule and
    /// those a rule's `exportTo` names. Every other namespace gets the same rule for a host.
    pub distinct_namespaces: BTreeSet<String>,
    /// Whether any rule balances by consistent hash anywhere (top level, port, subset): only
    /// then do routes need a hash policy, so route compiles skip the lookups otherwise.
    pub any_consistent_hash: bool,
}

/// Which pools a rule of namespace `ns` exported to `export_to` joins: (its namespace's own
/// clients see it, other namespaces may). A rule with a workload selector stays in its
/// namespace, as in istiod.
fn pools_of(dr: &DestinationRule, ns: &str) -> (bool, bool) {
    if dr.workload_selector.is_some() {
        return (true, false);
    }
    let e = &dr.export_to;
    let local = e.is_empty() || e.iter().any(|x| x == "*" || x == "." || x == ns);
    let private_only = e.len() == 1 && (e[0] == "." || e[0] == ns);
    (local, !private_only)
}

impl DrIndex {
    /// Indexes `rules` (oldest first) and merges those of one namespace for one host, as
    /// istiod does: the subsets of all of them (a subset name already defined by an older rule
    /// is ignored) and the oldest top-level traffic policy. What a merge ignores is returned as
    /// warnings.
    pub fn new(rules: &[Arc<Named<DestinationRule>>], domain: &str) -> (DrIndex, Vec<Diagnostic>) {
        let mut index = DrIndex::default();
        // (pool: 0 local, 1 exported, 2 root local; namespace, host) → members, oldest first.
        type Group<'r> = (u8, &'r str, String);
        let mut groups: Vec<(Group, Vec<usize>)> = Vec::new();
        let mut group_of: HashMap<Group, usize> = HashMap::default();
        for (i, dr) in rules.iter().enumerate() {
            index.any_consistent_hash |= uses_consistent_hash(&dr.spec);
            let ns = &*dr.key.namespace;
            index.distinct_namespaces.insert(ns.to_string());
            index.distinct_namespaces.extend(
                dr.spec
                    .export_to
                    .iter()
                    .filter(|e| !matches!(e.as_str(), "*" | "." | "~"))
                    .cloned(),
            );
            let host = resolve_host(&dr.spec.host, ns, domain);
            let (local, exported) = pools_of(&dr.spec, ns);
            let mut join = |pool: u8| {
                let key = (pool, ns, host.clone());
                let g = *group_of.entry(key.clone()).or_insert_with(|| {
                    groups.push((key, Vec::new()));
                    groups.len() - 1
                });
                groups[g].1.push(i);
            };
            if local && ns != ROOT_NAMESPACE {
                join(0);
            }
            if exported {
                join(1);
            } else if ns == ROOT_NAMESPACE {
                join(2);
            }
        }
        let mut warnings = Vec::new();
        for ((pool, ns, host), members) in groups {
            let (rule, export_to) = merge(rules, &members, &host, &mut warnings);
            let entry = index.entries.len();
            index.entries.push(Entry { rule, export_to });
            let pool = match pool {
                0 => index.local.entry(ns.to_string()).or_default(),
                1 => index.exported.entry(ns.to_string()).or_default(),
                _ => &mut index.root_local,
            };
            if host.starts_with('*') {
                pool.wildcard.push((host, entry));
            } else {
                pool.exact.insert(host, entry);
            }
        }
        for pool in index
            .local
            .values_mut()
            .chain(index.exported.values_mut())
            .chain(std::iter::once(&mut index.root_local))
        {
            // Longest first; among equals, the oldest (entries follow the rules' order).
            pool.wildcard
                .sort_by(|(a, i), (b, j)| b.len().cmp(&a.len()).then(i.cmp(j)));
        }
        warnings.sort();
        warnings.dedup();
        (index, warnings)
    }

    /// The rule for `host` of a service in `service_ns`, for clients in `client` (`None`: a
    /// namespace in no [`distinct_namespaces`](Self::distinct_namespaces)), as istiod looks it
    /// up: the client's namespace first (the root namespace's own clients only see its private
    /// rules there), then the service's namespace, then the root namespace, each rule only if
    /// exported to the client.
    pub fn lookup(
        &self,
        host: &str,
        service_ns: &str,
        client: Option<&str>,
    ) -> Option<&Arc<Named<DestinationRule>>> {
        let own = match client {
            Some(ROOT_NAMESPACE) => Some(&self.root_local),
            Some(ns) => self.local.get(ns),
            None => None,
        };
        if let Some(i) = own.and_then(|p| p.find(host)) {
            return Some(&self.entries[i].rule);
        }
        [service_ns, ROOT_NAMESPACE]
            .into_iter()
            .filter_map(|ns| self.exported.get(ns)?.find(host))
            .map(|i| &self.entries[i])
            .find(|e| e.exported_to(client))
            .map(|e| &e.rule)
    }
}

/// The rule merged from `members` (positions in `rules`, oldest first) naming `host`, and the
/// union of their `exportTo` lists; warnings for what the merge ignores.
fn merge(
    rules: &[Arc<Named<DestinationRule>>],
    members: &[usize],
    host: &str,
    warnings: &mut Vec<Diagnostic>,
) -> (Arc<Named<DestinationRule>>, Vec<String>) {
    let oldest = &rules[members[0]];
    let mut export_to: Vec<String> = Vec::new();
    let mut every = false;
    for &i in members {
        let e = &rules[i].spec.export_to;
        every |= e.is_empty();
        for x in e {
            // `.` is the owner's own namespace, by name, so lists of one namespace compare.
            let x = if x == "." {
                &*rules[i].key.namespace
            } else {
                x
            };
            if !export_to.iter().any(|y| y == x) {
                export_to.push(x.to_string());
            }
        }
    }
    if every {
        export_to.clear();
    }
    let [_, rest @ ..] = members else {
        return (oldest.clone(), export_to);
    };
    if rest.is_empty() {
        return (oldest.clone(), export_to);
    }
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
    (Arc::new(merged), export_to)
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
    let selects = dr.spec.workload_selector.is_some();
    if selects {
        found.push((
            "spec.workloadSelector".into(),
            "not served: the rule applies to every client in its namespace (as istiod, it is \
             not exported), not only the selected workloads"
                .into(),
        ));
    }
    if let Some(p) = &dr.spec.traffic_policy {
        policy_fields("spec.trafficPolicy", p, selects, &mut found);
    }
    for (i, s) in dr.spec.subsets.iter().enumerate() {
        if let Some(p) = &s.traffic_policy {
            policy_fields(
                &format!("spec.subsets[{i}].trafficPolicy"),
                p,
                selects,
                &mut found,
            );
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

/// `selects_workloads`: the rule has a `workloadSelector`.
fn policy_fields(
    at: &str,
    p: &TrafficPolicy,
    selects_workloads: bool,
    found: &mut Vec<(String, Cow<'static, str>)>,
) {
    // `tls` is served (origination and auto-mTLS, compile's `cluster_tls`), a
    // `credentialName`'s Secret only to gateways (SDS of their namespace). A sidecar gets the
    // cluster of a SIMPLE/MUTUAL setting naming one without TLS, as istiod sends it, unless the
    // rule has a `workloadSelector` (istiod then has the selected sidecars fetch the Secret,
    // which meshpilot does not serve them). Clusters are shared by every class, so this is
    // said once per view, not once per sidecar class.
    let port_level = p
        .port_level_settings
        .iter()
        .enumerate()
        .map(|(i, pl)| (format!("{at}.portLevelSettings[{i}]"), pl.tls.as_deref()));
    let credentials = std::iter::once((at.to_string(), p.tls.as_deref()))
        .chain(port_level)
        .filter_map(|(at, tls)| Some((at, tls?)))
        .filter_map(|(at, tls)| Some((at, tls, tls.credential_name.as_deref()?)));
    for (at, tls, name) in credentials {
        let message = if !matches!(tls.mode.as_deref(), Some("SIMPLE" | "MUTUAL")) {
            format!("credentialName `{name}` is read only with mode SIMPLE or MUTUAL: ignored")
        } else if tls.withheld_from_sidecars() && !selects_workloads {
            format!(
                "credentialName `{name}` is for gateways: sidecars get this traffic without \
                 TLS, in plaintext, as istiod sends it to them (only a rule with a \
                 workloadSelector gives them the Secret); for TLS from sidecars use \
                 caCertificates/clientCertificate/privateKey files"
            )
        } else {
            format!(
                "credentialName `{name}` is not served to sidecars: their TLS to this host \
                 fails; use caCertificates/clientCertificate/privateKey files"
            )
        };
        found.push((format!("{at}.tls.credentialName"), message.into()));
    }
    // (`loadBalancer` with `localityLbSetting`, `connectionPool`, `tunnel` and `proxyProtocol`
    // are served.)
    let mut parts = vec![(at.to_string(), p.outlier_detection.as_ref())];
    for (i, pl) in p.port_level_settings.iter().enumerate() {
        parts.push((
            format!("{at}.portLevelSettings[{i}]"),
            pl.outlier_detection.as_ref(),
        ));
    }
    for (at, od) in parts {
        if od.is_some_and(|o| o.consecutive_errors.is_some()) {
            found.push((
                format!("{at}.outlierDetection.consecutiveErrors"),
                "deprecated and not served: use consecutive5xxErrors or consecutiveGatewayErrors"
                    .into(),
            ));
        }
    }
}

#[cfg(test)]
#[path = "destination_rules_tests.rs"]
mod tests;
