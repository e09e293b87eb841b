//! Istio's `Sidecar` egress scoping: which services (and VirtualService hosts) a sidecar sees.
//! (Its `ingress` listeners are `inbound.rs`'s.)
//! The Sidecar that applies is the one in the proxy's namespace whose `workloadSelector` matches
//! its labels, else the one in its namespace without a selector, else the selector-less one in
//! the root namespace (`istio-system`); none, or one without `egress`, means everything is
//! visible (istiod's `*/*`). The same Sidecar's `outboundTrafficPolicy` decides, over the
//! mesh-wide default, what happens to traffic for hosts the registry does not know.

use std::sync::Arc;

use meshpilot_index::{Named, View};
use meshpilot_model::host::host_matches;
use meshpilot_model::{OutboundTrafficMode, Proxy, Sidecar, labels_match};

/// Istio's root namespace, whose selector-less Sidecar is the mesh-wide default.
pub(super) use meshpilot_model::ROOT_NAMESPACE;

/// The Sidecar that applies to `proxy` (see the module docs), if any.
pub(super) fn applicable<'v>(view: &'v View, proxy: &Proxy) -> Option<&'v Named<Sidecar>> {
    fn in_ns<'a>(view: &'a View, ns: &str) -> impl Iterator<Item = &'a Arc<Named<Sidecar>>> {
        view.sidecars
            .iter()
            .filter(move |s| *s.key.namespace == *ns)
    }
    let chosen = in_ns(view, &proxy.namespace)
        .find(|s| {
            s.spec
                .workload_selector
                .as_ref()
                .is_some_and(|sel| labels_match(&sel.labels, &proxy.labels))
        })
        .or_else(|| in_ns(view, &proxy.namespace).find(|s| s.spec.workload_selector.is_none()))
        .or_else(|| in_ns(view, ROOT_NAMESPACE).find(|s| s.spec.workload_selector.is_none()))?;
    Some(chosen)
}

/// The `outboundTrafficPolicy` that applies to `proxy`: its Sidecar's, else the mesh's.
pub(super) fn outbound_mode(view: &View, proxy: &Proxy) -> OutboundTrafficMode {
    applicable(view, proxy)
        .and_then(|s| s.spec.outbound_mode())
        .unwrap_or(view.outbound_mode)
}

/// The egress hosts a sidecar may reach; `None` when no Sidecar applies or it lists no
/// `egress` (everything is visible).
pub(super) struct Scope {
    /// (namespace pattern, host pattern, port) — namespace `*` for any; port `None` for all.
    hosts: Vec<(String, String, Option<u16>)>,
}

impl Scope {
    pub fn for_proxy(view: &View, proxy: &Proxy) -> Option<Scope> {
        let chosen = applicable(view, proxy)?;
        if chosen.spec.egress.is_empty() {
            return None;
        }
        let mut hosts = Vec::new();
        for egress in &chosen.spec.egress {
            let port = egress
                .port
                .as_ref()
                .and_then(|p| u16::try_from(p.number).ok())
                .filter(|p| *p != 0);
            for h in &egress.hosts {
                let (ns, host) = h.split_once('/').unwrap_or(("*", h.as_str()));
                let ns = match ns {
                    "." => chosen.key.namespace.to_string(),
                    "~" => continue,
                    other => other.to_string(),
                };
                hosts.push((ns, host.to_ascii_lowercase(), port));
            }
        }
        Some(Scope { hosts })
    }

    /// True when a host declared in `namespace` may be reached on `port`.
    pub fn allows(&self, namespace: &str, host: &str, port: u16) -> bool {
        self.hosts.iter().any(|(ns, pattern, p)| {
            (ns == "*" || ns == namespace)
                && p.is_none_or(|p| p == port)
                && host_matches(pattern, host)
        })
    }
}

/// Whether a service host is visible (no Sidecar: everything is).
pub(super) fn visible(scope: Option<&Scope>, namespace: &str, host: &str, port: u16) -> bool {
    scope.is_none_or(|s| s.allows(namespace, host, port))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use meshpilot_index::Index;
    use meshpilot_model::proxy::MetadataValue;
    use meshpilot_model::test_helpers::*;
    use meshpilot_model::{Object, SourceId};

    fn view_of(objects: Vec<Object>) -> View {
        let mut index = Index::new();
        index.reset(SourceId::Files, objects);
        index.build_view("cluster.local", None)
    }

    fn proxy_in(ns: &str, app: &str) -> Proxy {
        let mut md = BTreeMap::new();
        md.insert(
            "LABELS".to_string(),
            MetadataValue::Map(labels(&[("app", app)])),
        );
        let id = format!("sidecar~10.0.0.1~{app}-0.{ns}~{ns}.svc.cluster.local");
        Proxy::parse(&id, &md).expect("valid node id")
    }

    fn chosen(view: &View, ns: &str, app: &str) -> Option<String> {
        applicable(view, &proxy_in(ns, app)).map(|s| format!("{}/{}", s.key.namespace, s.key.name))
    }

    #[test]
    fn the_selecting_sidecar_then_the_namespaces_then_the_root_namespaces() {
        let egress = json!([{"hosts": ["./*"]}]);
        let view = view_of(vec![
            mk_istio(
                "Sidecar",
                "a",
                "for-web",
                json!({"workloadSelector": {"labels": {"app": "web"}}, "egress": egress}),
            ),
            mk_istio("Sidecar", "a", "default", json!({"egress": egress})),
            mk_istio("Sidecar", ROOT_NAMESPACE, "mesh", json!({"egress": egress})),
            mk_istio(
                "Sidecar",
                ROOT_NAMESPACE,
                "selecting",
                json!({"workloadSelector": {"labels": {"app": "api"}}, "egress": egress}),
            ),
        ]);
        assert_eq!(chosen(&view, "a", "web").as_deref(), Some("a/for-web"));
        assert_eq!(chosen(&view, "a", "api").as_deref(), Some("a/default"));
        // A root-namespace Sidecar with a selector applies to no other namespace.
        assert_eq!(
            chosen(&view, "b", "api").as_deref(),
            Some("istio-system/mesh")
        );
        let without_root = view_of(vec![mk_istio(
            "Sidecar",
            "a",
            "default",
            json!({"egress": egress}),
        )]);
        assert_eq!(chosen(&without_root, "b", "web"), None);
    }
}
