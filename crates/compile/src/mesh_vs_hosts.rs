//! Which VirtualService routes a service on sidecars, by its hosts: an exact host first, else
//! the most specific wildcard host that covers the service (`*.ns.svc.cluster.local`,
//! `*.example.com`), as istiod's sidecar routes attach them (its most-specific-wildcard index and
//! `separateVSHostsAndServices`). A wildcard host that covers no service the proxy sees is a
//! virtual host of its own instead. TCP and TLS routes bind every VirtualService whose host
//! meets the service, in that same order of precedence (istiod's `getConfigsForHost`).

use std::collections::BTreeSet;

use foldhash::{HashMap, HashMapExt};

use super::scope::{Scope, visible};
use meshpilot_index::{Named, View};
use meshpilot_model::host::host_matches;
use meshpilot_model::{Proxy, VirtualService, exported_to};

/// The sidecar VirtualServices of one proxy, by the (resolved) hosts they name.
pub(super) struct MeshVsHosts<'a> {
    /// Exact hosts: the oldest VirtualService naming each.
    exact: HashMap<&'a str, [&'a Named<VirtualService>; 1]>,
    /// Wildcard hosts other than `*`, the longest (most specific) first; for one host the
    /// oldest VirtualService comes first and is the one used.
    wildcard: Vec<(&'a str, [&'a Named<VirtualService>; 1])>,
}

impl<'a> MeshVsHosts<'a> {
    /// `hosts` are the resolved hosts of the VirtualServices the proxy sees, oldest
    /// VirtualService first (the oldest wins a host several name, as on istiod's sidecars).
    /// `*` is left out: istiod refuses it on VirtualServices bound to sidecars.
    pub(super) fn new(hosts: &'a [(String, &'a Named<VirtualService>)]) -> MeshVsHosts<'a> {
        let mut exact: HashMap<&str, [&Named<VirtualService>; 1]> = HashMap::new();
        let mut wildcard: Vec<(&str, [&Named<VirtualService>; 1])> = Vec::new();
        for (h, vs) in hosts {
            if h == "*" {
                continue;
            }
            if h.starts_with('*') {
                if !wildcard.iter().any(|(w, _)| w == h) {
                    wildcard.push((h.as_str(), [*vs]));
                }
            } else {
                exact.entry(h.as_str()).or_insert([*vs]);
            }
        }
        // Stable: equal lengths keep their first-seen order.
        wildcard.sort_by_key(|(h, _)| std::cmp::Reverse(h.len()));
        MeshVsHosts { exact, wildcard }
    }

    /// The VirtualService routing `hostname` (empty when none does): the one naming it exactly,
    /// else the one whose wildcard host covering it is the longest. An exact host and a
    /// wildcard meeting on one service is no conflict under istiod: the exact one routes it.
    pub(super) fn for_service(&self, hostname: &str) -> &[&'a Named<VirtualService>] {
        if let Some(vs) = self.exact.get(hostname) {
            return vs;
        }
        self.wildcard
            .iter()
            .find(|(w, _)| host_matches(w, hostname))
            .map(|(_, vs)| vs.as_slice())
            .unwrap_or(&[])
    }

    /// Every VirtualService whose host meets `hostname`, as istiod binds a sidecar's TCP and
    /// TLS routes (`getConfigsForHost`: all of them, wildcards included), in the order of
    /// [`MeshVsHosts::for_service`]: the one naming it exactly, then those whose wildcard
    /// covers it, the most specific first, so where two routes have the same match the more
    /// specific host's wins. For a wildcard `hostname` (a ServiceEntry's `*.example.com`) the
    /// hosts it covers meet it too, as in istiod; they come last, by name. Each
    /// VirtualService once.
    pub(super) fn covering(&self, hostname: &str) -> Vec<&'a Named<VirtualService>> {
        let mut out: Vec<&'a Named<VirtualService>> = Vec::new();
        let mut add = |vs: &'a Named<VirtualService>| {
            if !out.iter().any(|o| std::ptr::eq(*o, vs)) {
                out.push(vs);
            }
        };
        if let Some([vs]) = self.exact.get(hostname) {
            add(vs);
        }
        for (_, [vs]) in (self.wildcard.iter()).filter(|(w, _)| host_matches(w, hostname)) {
            add(vs);
        }
        if hostname.starts_with('*') {
            let mut under: Vec<(&str, &'a Named<VirtualService>)> = (self.exact.iter())
                .map(|(h, [vs])| (*h, *vs))
                .chain(self.wildcard.iter().map(|(h, [vs])| (*h, *vs)))
                .filter(|(h, _)| *h != hostname && host_matches(hostname, h))
                .collect();
            under.sort_by_key(|(h, _)| *h);
            for (_, vs) in under {
                add(vs);
            }
        }
        out
    }
}

/// Whether a VirtualService host that names no service is a virtual host of its own: not `*`
/// (istiod refuses it on sidecars), not a service's host, and not a wildcard covering a service
/// the proxy sees (such a host attaches to those services, even where a more specific host
/// routes them, as in istiod).
pub(super) fn stands_alone(host: &str, view: &View, proxy: &Proxy, scope: Option<&Scope>) -> bool {
    if host == "*" || view.services.contains_key(host) {
        return false;
    }
    !host.starts_with('*')
        || !view.services.values().any(|s| {
            host_matches(host, &s.hostname)
                && exported_to(&s.export_to, &s.namespace, &proxy.namespace)
                && (s.ports.iter()).any(|p| visible(scope, &s.namespace, &s.hostname, p.port))
        })
}

/// The ports a VirtualService host of its own is served on: those its HTTP matches name, else
/// port 80 (istiod's port for hosts outside the registry).
pub(super) fn own_host_ports(vs: &VirtualService) -> BTreeSet<u16> {
    let mut ports: BTreeSet<u16> = (vs.http.iter())
        .flat_map(|r| r.matches.iter().filter_map(|m| m.port))
        .filter_map(|p| u16::try_from(p).ok())
        .collect();
    if ports.is_empty() {
        ports.insert(80);
    }
    ports
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshpilot_model::{ConfigKey, Kind, Meta};

    fn vs(name: &str) -> Named<VirtualService> {
        Named {
            key: ConfigKey::new(Kind::VirtualService, "default", name),
            meta: Meta::default(),
            spec: VirtualService::default(),
        }
    }

    /// The exact host wins over any wildcard; among wildcards the longest; for one wildcard
    /// the oldest; `*` binds nothing.
    #[test]
    fn the_most_specific_host_routes_a_service() {
        let (all, shop, old, newer, exact) =
            (vs("all"), vs("shop"), vs("old"), vs("newer"), vs("exact"));
        let hosts = vec![
            ("*".to_string(), &all),
            ("*.example.com".to_string(), &old),
            ("*.shop.example.com".to_string(), &shop),
            ("*.example.com".to_string(), &newer),
            ("pay.shop.example.com".to_string(), &exact),
        ];
        let index = MeshVsHosts::new(&hosts);
        let name = |h: &str| index.for_service(h).first().map(|v| v.key.name.to_string());
        assert_eq!(name("pay.shop.example.com").as_deref(), Some("exact"));
        assert_eq!(name("cart.shop.example.com").as_deref(), Some("shop"));
        assert_eq!(name("a.example.com").as_deref(), Some("old"));
        assert_eq!(name("*.example.com").as_deref(), Some("old"));
        assert_eq!(name("example.com"), None);
        assert_eq!(name("other.org"), None);
    }

    /// TCP and TLS routes take every VirtualService meeting the host, the most specific
    /// first; a wildcard service also meets the hosts it covers; `*` binds nothing.
    #[test]
    fn every_host_meeting_a_service_binds_its_layer4_routes() {
        let (all, shop, old, newer, exact) =
            (vs("all"), vs("shop"), vs("old"), vs("newer"), vs("exact"));
        let hosts = vec![
            ("*".to_string(), &all),
            ("*.example.com".to_string(), &old),
            ("*.shop.example.com".to_string(), &shop),
            ("*.example.com".to_string(), &newer),
            ("pay.shop.example.com".to_string(), &exact),
            ("cart.shop.example.com".to_string(), &shop),
        ];
        let index = MeshVsHosts::new(&hosts);
        let names = |h: &str| {
            (index.covering(h).iter())
                .map(|v| v.key.name.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names("pay.shop.example.com"), ["exact", "shop", "old"]);
        assert_eq!(names("cart.shop.example.com"), ["shop", "old"]);
        assert_eq!(names("a.example.com"), ["old"]);
        assert_eq!(names("*.example.com"), ["old", "shop", "exact"]);
        assert!(names("other.org").is_empty());
    }
}
