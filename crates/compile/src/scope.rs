//! Istio's `Sidecar` egress scoping: which services (and VirtualService hosts) a sidecar sees.
//! (Its `ingress` listeners are `inbound.rs`'s.) The same scope decides which clusters and
//! endpoints the sidecar gets ([`ScopeKey`], used by `scoped_clusters.rs`).
//! The Sidecar that applies is the one in the proxy's namespace whose `workloadSelector` matches
//! its labels, else the one in its namespace without a selector, else the selector-less one in
//! the root namespace (`istio-system`); none, or one without `egress`, means everything is
//! visible (istiod's `*/*`). The same Sidecar's `outboundTrafficPolicy` decides, over the
//! mesh-wide default, what happens to traffic for hosts the registry does not know.

use std::sync::Arc;

use foldhash::HashMap;
use meshpilot_index::{Named, ServiceInfo, View, applies_to_mesh};
use meshpilot_model::host::host_matches;
use meshpilot_model::{
    ConfigKey, Destination, OutboundTrafficMode, Proxy, ProxyKind, Sidecar, VirtualService,
    exported_to, labels_match,
};

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
        Scope::of(applicable(view, proxy)?, &proxy.namespace)
    }

    /// The scope `chosen` gives the sidecars of namespace `client_ns`: `.` is their namespace,
    /// as istiod reads it (so a root-namespace Sidecar's `./*` means each client's own).
    fn of(chosen: &Named<Sidecar>, client_ns: &str) -> Option<Scope> {
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
                    "." => client_ns.to_string(),
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

    /// The ports of the egress entries that import `host` declared in `namespace`, ignoring
    /// their port (`None`: an entry without a port).
    fn importing(&self, namespace: &str, host: &str) -> impl Iterator<Item = Option<u16>> {
        self.hosts
            .iter()
            .filter(move |(ns, pattern, _)| {
                (ns == "*" || ns == namespace) && host_matches(pattern, host)
            })
            .map(|(_, _, port)| *port)
    }
}

/// A Sidecar's egress scope as the sidecars of one namespace see it: what they may reach, by
/// service hostname and port, for their clusters and endpoints. Made once per class's routes;
/// equal (same Sidecar, same client namespace) within one view, so its scoped sets are made
/// once and shared by every class it applies to.
#[derive(Debug, Clone)]
pub struct ScopeKey {
    pub sidecar: ConfigKey,
    pub namespace: Arc<str>,
    /// The service ports the sidecars reach: those the egress hosts import, and the
    /// destinations of the VirtualServices they import (as istiod adds them).
    pub reachable: Arc<HashMap<Arc<str>, Vec<u16>>>,
}

impl PartialEq for ScopeKey {
    fn eq(&self, other: &Self) -> bool {
        self.sidecar == other.sidecar && self.namespace == other.namespace
    }
}
impl Eq for ScopeKey {}
impl std::hash::Hash for ScopeKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.sidecar.hash(state);
        self.namespace.hash(state);
    }
}

impl ScopeKey {
    /// The egress scope of `proxy`, or `None` when it sees everything (a gateway, no Sidecar,
    /// or one without `egress`).
    pub(super) fn for_proxy(view: &View, proxy: &Proxy) -> Option<ScopeKey> {
        if proxy.kind != ProxyKind::Sidecar {
            return None;
        }
        let chosen = applicable(view, proxy)?;
        let scope = Scope::of(chosen, &proxy.namespace)?;
        let client = proxy.namespace.as_str();
        let mut reachable: HashMap<Arc<str>, Vec<u16>> = HashMap::default();
        let mut add = |svc: &ServiceInfo, port: u16| {
            let ports = reachable.entry(svc.hostname.clone()).or_default();
            if !ports.contains(&port) {
                ports.push(port);
            }
        };
        let seen = |svc: &ServiceInfo| exported_to(&svc.export_to, &svc.namespace, client);
        for svc in view.services.values().filter(|s| seen(s)) {
            for port in &svc.ports {
                if scope.allows(&svc.namespace, &svc.hostname, port.port) {
                    add(svc, port.port);
                }
            }
        }
        // The destinations of the VirtualServices an entry imports, on that entry's port if
        // it has one, else on the destination's port (every port when it names none).
        let imported_vs = view.virtual_services.iter().filter(|vs| {
            applies_to_mesh(&vs.spec) && exported_to(&vs.spec.export_to, &vs.key.namespace, client)
        });
        for vs in imported_vs {
            let ns = &*vs.key.namespace;
            let mut entry_ports: Vec<Option<u16>> = Vec::new();
            for host in &vs.spec.hosts {
                entry_ports.extend(scope.importing(ns, &view.resolve(host, ns)));
            }
            if entry_ports.is_empty() {
                continue;
            }
            for dest in destinations(&vs.spec, client) {
                let Some(svc) = view.services.get(view.resolve(&dest.host, ns).as_str()) else {
                    continue;
                };
                if !seen(svc) {
                    continue;
                }
                let wanted = dest
                    .port
                    .as_ref()
                    .and_then(|p| u16::try_from(p.number).ok());
                for port in &svc.ports {
                    let on = |entry: &Option<u16>| match entry {
                        Some(p) => *p == port.port,
                        None => wanted.is_none_or(|w| w == 0 || w == port.port),
                    };
                    if entry_ports.iter().any(on) {
                        add(svc, port.port);
                    }
                }
            }
        }
        Some(ScopeKey {
            sidecar: chosen.key.clone(),
            namespace: Arc::from(client),
            reachable: Arc::new(reachable),
        })
    }

    /// Whether the sidecars reach `host` on `port`.
    pub fn reaches(&self, host: &str, port: u16) -> bool {
        self.reachable
            .get(host)
            .is_some_and(|ports| ports.contains(&port))
    }
}

/// Every destination of a VirtualService's routes and mirrors, leaving out the HTTP routes
/// whose `sourceNamespace` matches exclude clients of `client_ns` (as istiod does).
fn destinations<'v>(
    vs: &'v VirtualService,
    client_ns: &'v str,
) -> impl Iterator<Item = &'v Destination> {
    let http = vs
        .http
        .iter()
        .filter(move |r| {
            r.matches.iter().all(|m| m.source_namespace.is_none())
                || r.matches
                    .iter()
                    .any(|m| m.source_namespace.as_deref() == Some(client_ns))
        })
        .flat_map(|r| {
            r.route
                .iter()
                .map(|d| &d.destination)
                .chain(r.mirror.iter())
                .chain(r.mirrors.iter().map(|m| &m.destination))
        });
    let tcp = vs
        .tcp
        .iter()
        .flat_map(|r| r.route.iter().map(|d| &d.destination));
    let tls = vs
        .tls
        .iter()
        .flat_map(|r| r.route.iter().map(|d| &d.destination));
    http.chain(tcp).chain(tls)
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
