//! Several VirtualServices bound to sidecars for one host: istiod serves only the oldest
//! (creation time, then namespace/name) to a sidecar that sees them all, and its analyzer reports
//! the others (IST0109). This module finds those pairs and words the warnings; compile serves the
//! oldest visible one per proxy.

use std::collections::BTreeSet;
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};

use meshpilot_model::{Diagnostic, ObjectRef, Stage, VirtualService, exported_to};

use super::view::Named;

/// True when a VirtualService applies to sidecars (no `gateways`, or `mesh` among them).
pub fn applies_to_mesh(vs: &VirtualService) -> bool {
    vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")
}

/// True when some namespace's sidecars see both VirtualServices (their `exportTo` lists meet).
fn seen_together(a: &Named<VirtualService>, b: &Named<VirtualService>) -> bool {
    let (a_ns, b_ns) = (&*a.key.namespace, &*b.key.namespace);
    let both = |ns: &str| {
        exported_to(&a.spec.export_to, a_ns, ns) && exported_to(&b.spec.export_to, b_ns, ns)
    };
    // A namespace both see is one of theirs or one a list names, unless both export to all.
    let candidates = [a_ns, b_ns].into_iter().chain(
        a.spec
            .export_to
            .iter()
            .chain(&b.spec.export_to)
            .map(String::as_str)
            .filter(|e| !matches!(*e, "*" | "." | "~")),
    );
    let everywhere = |vs: &Named<VirtualService>| {
        vs.spec.export_to.is_empty() || vs.spec.export_to.iter().any(|e| e == "*")
    };
    (everywhere(a) && everywhere(b)) || candidates.into_iter().any(both)
}

/// One warning per VirtualService that loses a host to an older one on sidecars. `ordered` is
/// the view's VirtualServices, oldest first; `resolve` turns a host as written into its FQDN.
pub fn mesh_host_conflicts(
    ordered: &[Arc<Named<VirtualService>>],
    resolve: impl Fn(&str, &str) -> String,
) -> Vec<Diagnostic> {
    let mut by_host: HashMap<String, Vec<(usize, &Named<VirtualService>)>> = HashMap::new();
    for vs in ordered.iter().filter(|vs| applies_to_mesh(&vs.spec)) {
        // A VirtualService listing one host twice does not conflict with itself.
        let mut own: BTreeSet<String> = BTreeSet::new();
        for (i, h) in vs.spec.hosts.iter().enumerate() {
            let fqdn = resolve(h, &vs.key.namespace);
            if own.insert(fqdn.clone()) {
                by_host.entry(fqdn).or_default().push((i, vs));
            }
        }
    }
    let mut out = Vec::new();
    for (host, holders) in by_host {
        for (pos, (i, vs)) in holders.iter().enumerate() {
            let Some((_, winner)) = holders[..pos].iter().find(|(_, w)| seen_together(w, vs))
            else {
                continue;
            };
            out.push(Diagnostic::warning(
                Stage::Conflict,
                vs.meta.origin.clone(),
                ObjectRef::of(&vs.key),
                &format!("spec.hosts[{i}]"),
                format!(
                    "host {host} is also routed by VirtualService {}/{}, which is older (or \
                     first by namespace/name); sidecars use that one only and ignore this one \
                     for {host}, as istiod does",
                    winner.key.namespace, winner.key.name
                ),
            ));
        }
    }
    out.sort();
    out
}
