//! Which Gateway a VirtualService names and which of a Gateway server's hosts it may bind to,
//! as istiod reads them: gateway references (`ns/name`, short and deprecated FQDN names) and
//! server hosts qualified by namespace (`ns/host`, `./host`, `*/host`).

use super::compile_warning;
use meshpilot_index::{Named, View};
use meshpilot_model::host::hosts_intersect;
use meshpilot_model::{ConfigKey, Diagnostic, Gateway};

/// Strips the `ns/` part of a Gateway server host (`./host`, `*/host`, `ns/host`): the name a
/// TLS client sends, whichever namespace's VirtualServices may route it.
pub(super) fn server_host(h: &str) -> &str {
    h.rsplit_once('/').map(|(_, host)| host).unwrap_or(h)
}

/// The host part of Gateway server host `h` when a VirtualService of namespace `vs_ns` may
/// bind to it, as istiod reads `ns/host`: `*/` admits any namespace, `./` the Gateway's own
/// (`gw_ns`), `ns/` that namespace only, and no `ns/` part any namespace.
pub(super) fn server_host_for<'h>(h: &'h str, gw_ns: &str, vs_ns: &str) -> Option<&'h str> {
    match h.split_once('/') {
        None => Some(h),
        Some((ns, host)) => {
            (ns == "*" || ns == vs_ns || (ns == "." && vs_ns == gw_ns)).then_some(host)
        }
    }
}

/// The (namespace, name) of the Gateway a VirtualService of namespace `vs_ns` names with `g`,
/// resolved as istiod resolves it: `ns/name` (`./name`: the VirtualService's namespace), a
/// short `name` in the VirtualService's namespace, and the deprecated `name.ns` and
/// `name.ns.svc.cluster.local` forms in namespace `ns`.
fn gateway_ref<'a>(g: &'a str, vs_ns: &'a str) -> (&'a str, &'a str) {
    if let Some((ns, name)) = g.split_once('/') {
        return (if ns == "." { vs_ns } else { ns }, name);
    }
    match g.split_once('.') {
        None => (vs_ns, g),
        Some((name, rest)) => (rest.split_once('.').map_or(rest, |(ns, _)| ns), name),
    }
}

/// True when a VirtualService's `gateways` list names this Gateway.
pub(super) fn names_gateway(list: &[String], vs_ns: &str, gw: &ConfigKey) -> bool {
    list.iter()
        .any(|g| g != "mesh" && gateway_ref(g, vs_ns) == (&*gw.namespace, &*gw.name))
}

/// Warns about each VirtualService bound to `gw` whose hosts meet a server host of the
/// Gateway only through hosts whose `ns/` part leaves the VirtualService's namespace out: its
/// routes are not served there (what istiod's analyzer reports as a host not found in the
/// Gateway).
pub(super) fn warn_unadmitted(view: &View, gw: &Named<Gateway>, errors: &mut Vec<Diagnostic>) {
    let gw_ns = &*gw.key.namespace;
    for vs in &view.virtual_services {
        let vs_ns = &*vs.key.namespace;
        if !names_gateway(&vs.spec.gateways, vs_ns, &gw.key) {
            continue;
        }
        let servers = || gw.spec.servers.iter().flat_map(|s| s.hosts.iter());
        let meets = |admitted: bool| {
            vs.spec.hosts.iter().any(|vh| {
                let vh = view.resolve(vh, vs_ns);
                servers().any(|h| {
                    let host = if admitted {
                        server_host_for(h, gw_ns, vs_ns)
                    } else {
                        Some(server_host(h))
                    };
                    host.is_some_and(|sh| hosts_intersect(sh, &vh))
                })
            })
        };
        if meets(false) && !meets(true) {
            errors.push(compile_warning(
                view,
                &vs.key,
                "spec.gateways",
                format!(
                    "Gateway {gw_ns}/{} admits the hosts of this VirtualService only from other \
                     namespaces (its servers' hosts name them as `ns/host`), not from namespace \
                     {vs_ns}; its routes are not served on that gateway",
                    gw.key.name
                ),
            ));
        }
    }
}
