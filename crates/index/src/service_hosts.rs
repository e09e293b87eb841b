//! Which ServiceEntry serves a host that several declare. A view holds one service per host,
//! so meshpilot keeps istiod's choice within a namespace mesh-wide: a Kubernetes Service of
//! that name wins over every entry (no entry can squat on a Service's host), else the oldest
//! entry (then by namespace/name). Every entry left out for a host is warned on that host.

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;

use meshpilot_model::{Body, ConfigKey, Diagnostic, Kind, Object, ObjectMap, ObjectRef, Stage};

/// The ServiceEntry serving each host declared by ServiceEntries, by lower-cased host; hosts a
/// Kubernetes Service owns are not in it.
pub(crate) type HostOwners<'a> = HashMap<String, &'a ConfigKey>;

/// The owner of every ServiceEntry host in `entries`, and a warning on `spec.hosts[i]` of each
/// entry that loses host `i` to a Kubernetes Service or an older entry.
pub(crate) fn owners<'a>(
    mut entries: Vec<(&'a ConfigKey, &'a Object)>,
    objects: &ObjectMap,
    domain: &str,
) -> (HostOwners<'a>, Vec<Diagnostic>) {
    // istiod's order: oldest first (objects without a timestamp first), then namespace/name.
    entries
        .sort_by(|a, b| (a.1.meta.creation.as_str(), a.0).cmp(&(b.1.meta.creation.as_str(), b.0)));
    let mut owners = HostOwners::new();
    let mut warnings = Vec::new();
    for (key, o) in entries {
        let Body::ServiceEntry(se) = &o.body else {
            continue;
        };
        for (i, host) in se.hosts.iter().enumerate() {
            let host = host.to_ascii_lowercase();
            let winner = match kubernetes_service(&host, objects, domain) {
                Some(service) => service,
                None => match owners.get(&host) {
                    Some(&oldest) if oldest != key => oldest.clone(),
                    Some(_) => continue,
                    None => {
                        owners.insert(host, key);
                        continue;
                    }
                },
            };
            warnings.push(Diagnostic::warning(
                Stage::Conflict,
                o.meta.origin.clone(),
                ObjectRef::of(key),
                &format!("spec.hosts[{i}]"),
                format!(
                    "host {host} is served by {winner}, not by this entry: a host has one \
                     service, a Kubernetes Service's own or else the oldest ServiceEntry's \
                     (istiod's precedence), so this entry's ports and endpoints for it are \
                     ignored"
                ),
            ));
        }
    }
    (owners, warnings)
}

/// The Kubernetes Service whose host (`NAME.NAMESPACE.svc.DOMAIN`) `host` is, if it exists.
fn kubernetes_service(host: &str, objects: &ObjectMap, domain: &str) -> Option<ConfigKey> {
    let (name, namespace) = host
        .strip_suffix(domain)?
        .strip_suffix(".svc.")?
        .split_once('.')?;
    let key = ConfigKey {
        kind: Kind::Service,
        namespace: Arc::from(namespace),
        name: Arc::from(name),
    };
    objects.contains_key(&key).then_some(key)
}
