//! PeerAuthentication resolved as istiod resolves it: which mutual-TLS mode a workload's
//! sidecar accepts on each inbound port, and whether clients may speak mutual TLS to a
//! service at all.
//!
//! Three levels apply to a workload: the mesh (a selector-less policy in the root namespace,
//! `istio-system`), its namespace (a selector-less policy there) and the workload (a policy in
//! its namespace whose `selector.matchLabels` match its labels); within a level the oldest policy
//! wins (then namespace/name). Starting from PERMISSIVE, each level's mode replaces the one
//! before unless it is UNSET; the workload policy's `portLevelMtls` then sets single (target)
//! ports, UNSET there meaning the workload's mode.

use std::collections::BTreeMap;

use meshpilot_index::{Named, View};
use meshpilot_model::{Labels, MtlsMode, PeerAuthentication, labels_match};

use super::scope::ROOT_NAMESPACE;

/// The modes of one workload's inbound ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct InboundMtls {
    /// For every port the policies do not name (and for passthrough): never UNSET.
    pub workload: MtlsMode,
    /// Port-level modes, never UNSET.
    pub ports: BTreeMap<u16, MtlsMode>,
}

impl InboundMtls {
    /// The mode of connections to `port`.
    pub fn port(&self, port: u16) -> MtlsMode {
        self.ports.get(&port).copied().unwrap_or(self.workload)
    }
}

/// The selector-less policy of `namespace` (the oldest).
fn namespace_level<'v>(view: &'v View, namespace: &str) -> Option<&'v Named<PeerAuthentication>> {
    view.peer_authentications
        .iter()
        .find(|p| *p.key.namespace == *namespace && p.spec.workload_selector().is_none())
        .map(|p| &**p)
}

fn mode_of(policy: Option<&Named<PeerAuthentication>>) -> MtlsMode {
    policy
        .and_then(|p| p.spec.mtls)
        .map_or(MtlsMode::Unset, |m| m.mode)
}

/// The mode from the mesh and namespace levels alone: what istiod infers for a service (it
/// cannot tell which workload-level policy applies to a service's pods).
pub(super) fn namespace_mode(view: &View, namespace: &str) -> MtlsMode {
    let mesh = mode_of(namespace_level(view, ROOT_NAMESPACE)).or(MtlsMode::Permissive);
    if namespace == ROOT_NAMESPACE {
        return mesh;
    }
    mode_of(namespace_level(view, namespace)).or(mesh)
}

/// The modes of the inbound ports of a workload in `namespace` with `labels`.
pub(super) fn for_workload(view: &View, namespace: &str, labels: &Labels) -> InboundMtls {
    let inherited = namespace_mode(view, namespace);
    let workload_policy = view
        .peer_authentications
        .iter()
        .find(|p| {
            *p.key.namespace == *namespace
                && p.spec
                    .workload_selector()
                    .is_some_and(|sel| labels_match(sel, labels))
        })
        .map(|p| &**p);
    let workload = mode_of(workload_policy).or(inherited);
    let ports = workload_policy
        .into_iter()
        .flat_map(|p| &p.spec.port_level_mtls)
        .filter_map(|(port, m)| Some((u16::try_from(*port).ok()?, m.mode.or(workload))))
        .collect();
    InboundMtls { workload, ports }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshpilot_index::Index;
    use meshpilot_model::Object;
    use meshpilot_model::test_helpers::*;

    fn policy(ns: &str, name: &str, created: &str, spec: serde_json::Value) -> Object {
        let mut o = mk_istio("PeerAuthentication", ns, name, spec);
        o.meta.creation = created.to_string();
        o
    }

    fn view(objects: Vec<Object>) -> View {
        let mut index = Index::new();
        index.reset(meshpilot_model::SourceId::Files, objects);
        index.build_view("cluster.local", None)
    }

    #[test]
    fn permissive_without_any_policy() {
        let v = view(vec![]);
        let m = for_workload(&v, "default", &labels(&[("app", "r")]));
        assert_eq!(m.port(8080), MtlsMode::Permissive);
        assert_eq!(namespace_mode(&v, "default"), MtlsMode::Permissive);
    }

    #[test]
    fn the_most_specific_level_wins_and_unset_inherits() {
        let v = view(vec![
            policy(
                "istio-system",
                "mesh",
                "",
                serde_json::json!({"mtls": {"mode": "STRICT"}}),
            ),
            policy(
                "ns1",
                "ns",
                "",
                serde_json::json!({"mtls": {"mode": "PERMISSIVE"}}),
            ),
            policy(
                "ns2",
                "unset",
                "",
                serde_json::json!({"mtls": {"mode": "UNSET"}}),
            ),
            policy(
                "ns1",
                "web",
                "",
                serde_json::json!({
                    "selector": {"matchLabels": {"app": "web"}},
                    "mtls": {"mode": "DISABLE"},
                    "portLevelMtls": {"9000": {"mode": "STRICT"}, "9001": {"mode": "UNSET"}},
                }),
            ),
        ]);
        let web = labels(&[("app", "web")]);
        let other = labels(&[("app", "other")]);
        assert_eq!(for_workload(&v, "ns3", &other).port(80), MtlsMode::Strict);
        assert_eq!(for_workload(&v, "ns2", &other).port(80), MtlsMode::Strict);
        assert_eq!(
            for_workload(&v, "ns1", &other).port(80),
            MtlsMode::Permissive
        );
        let m = for_workload(&v, "ns1", &web);
        assert_eq!(m.port(80), MtlsMode::Disable);
        assert_eq!(m.port(9000), MtlsMode::Strict);
        assert_eq!(m.port(9001), MtlsMode::Disable);
        // A workload selector in another namespace does not apply.
        assert_eq!(for_workload(&v, "ns2", &web).port(9000), MtlsMode::Strict);
        assert_eq!(namespace_mode(&v, "ns1"), MtlsMode::Permissive);
        assert_eq!(namespace_mode(&v, "ns3"), MtlsMode::Strict);
    }

    #[test]
    fn the_oldest_policy_of_a_level_wins() {
        let v = view(vec![
            policy(
                "ns",
                "b-newer",
                "2021-01-01T00:00:00Z",
                serde_json::json!({"mtls": {"mode": "DISABLE"}}),
            ),
            policy(
                "ns",
                "z-older",
                "2020-01-01T00:00:00Z",
                serde_json::json!({"mtls": {"mode": "STRICT"}}),
            ),
        ]);
        assert_eq!(namespace_mode(&v, "ns"), MtlsMode::Strict);
    }
}
