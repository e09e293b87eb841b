//! What a stream receives for one type, computed from a snapshot and a subscription: resource
//! lookup (with the empty stand-ins for missing EDS/RDS names) and the subscribed names.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use prost::Message;

use meshpilot_snapshot::{Resource, Snapshot, TypeSet, XdsType};

/// The resource a stream gets for `name`.
///
/// A missing EDS or RDS name still gets an answer, an empty `ClusterLoadAssignment` /
/// `RouteConfiguration` of that name: the xDS protocol doc ("Knowing when a requested resource
/// does not exist") leaves a missing by-name resource unanswered, and Envoy would then hold the
/// cluster or listener warming until `initial_fetch_timeout`. Istio answers the same way.
/// A missing CDS, LDS or SDS name has no stand-in (`None`).
pub(crate) fn lookup(snap: &Snapshot, t: XdsType, name: &str) -> Option<Arc<Resource>> {
    if let Some(r) = snap.get(t).items.get(name) {
        return Some(r.clone());
    }
    empty_resource(t, name).map(Arc::new)
}

/// The empty stand-in for a missing EDS or RDS name.
pub(crate) fn empty_resource(t: XdsType, name: &str) -> Option<Resource> {
    let body = match t {
        XdsType::Endpoint => ClusterLoadAssignment {
            cluster_name: name.to_string(),
            ..Default::default()
        }
        .encode_to_vec(),
        XdsType::Route => RouteConfiguration {
            name: name.to_string(),
            ..Default::default()
        }
        .encode_to_vec(),
        // A missing secret has no stand-in either: an empty one would make Envoy serve TLS
        // without a certificate; unanswered, only the listener that names it stays warming.
        XdsType::Cluster | XdsType::Listener | XdsType::Secret => return None,
    };
    Some(Resource::new(name, Bytes::from(body), Vec::new()))
}

/// The resource names a stream subscribes to (EDS and RDS, or explicit CDS/LDS names).
///
/// Envoy subscribes to exactly the EDS names of the clusters it was sent, and to exactly the
/// route names of its listeners: thousands of names per stream, the same for every stream of a
/// class. When the names are exactly those of a snapshot's set, they are held as that shared set
/// (`AllOf`), not copied per stream.
#[derive(Debug, Clone)]
pub enum Names {
    /// Exactly the names of this set.
    AllOf(Arc<TypeSet>),
    /// Any other set of names.
    Owned(BTreeSet<String>),
}

impl Default for Names {
    fn default() -> Names {
        Names::Owned(BTreeSet::new())
    }
}

impl PartialEq for Names {
    fn eq(&self, other: &Names) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Names {}

impl serde::Serialize for Names {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl Names {
    /// `names`, shared with `current` when they are exactly its names.
    pub(crate) fn new(names: BTreeSet<String>, current: Option<&Arc<TypeSet>>) -> Names {
        match current {
            Some(set) if names_of(set, names.iter()) => Names::AllOf(set.clone()),
            _ => Names::Owned(names),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Names::AllOf(set) => set.items.len(),
            Names::Owned(names) => names.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The names, sorted.
    pub fn iter(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            Names::AllOf(set) => Box::new(set.items.keys().map(|k| &**k)),
            Names::Owned(names) => Box::new(names.iter().map(String::as_str)),
        }
    }

    /// True when the names are exactly `names`.
    #[cfg(test)]
    pub(crate) fn same_as(&self, names: &BTreeSet<String>) -> bool {
        self.len() == names.len() && self.iter().eq(names.iter().map(String::as_str))
    }

    /// A copy to modify.
    pub(crate) fn to_set(&self) -> BTreeSet<String> {
        self.iter().map(str::to_string).collect()
    }

    /// True when these are exactly the names of `set` (by the names hash, no comparison).
    fn all_of(&self, set: &TypeSet) -> bool {
        matches!(self, Names::AllOf(s) if s.names_hash == set.names_hash)
    }
}

/// True when `sorted` (sorted, without duplicates) are exactly the names of `set`.
pub(crate) fn names_of<'a>(
    set: &TypeSet,
    sorted: impl ExactSizeIterator<Item = &'a String>,
) -> bool {
    set.items.len() == sorted.len()
        && set
            .items
            .keys()
            .map(|k| &**k)
            .eq(sorted.map(String::as_str))
}

/// What a stream receives for a type: every resource for a wildcard subscription, plus the named
/// ones (with empty stand-ins for missing EDS/RDS names). When that is exactly the snapshot's
/// set — the usual case — the snapshot's own `Arc` is returned: nothing is built per stream.
pub(crate) fn content_for(
    snap: &Snapshot,
    t: XdsType,
    wildcard: bool,
    names: &Names,
) -> Arc<TypeSet> {
    let set = snap.set(t);
    if (wildcard && names.is_empty()) || (!wildcard && names.all_of(set)) {
        return set.clone();
    }
    let mut items: Vec<Arc<Resource>> = if wildcard {
        set.items.values().cloned().collect()
    } else {
        Vec::new()
    };
    items.extend(names.iter().filter_map(|n| lookup(snap, t, n)));
    Arc::new(TypeSet::from_shared(items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshpilot_model::{ClassKey, Interception, ProxyKind};

    fn snap(endpoints: Vec<Resource>) -> Snapshot {
        let class = ClassKey {
            kind: ProxyKind::Sidecar,
            namespace: "default".into(),
            labels: Default::default(),
            interception: Interception::Redirect,
            bind_ip: None,
            pod_ports: Default::default(),
            workload_certificate: false,
            locality: String::new(),
        };
        Snapshot::new(class, [vec![], endpoints, vec![], vec![]], &[]).expect("consistent")
    }

    #[test]
    fn wildcard_content_is_the_snapshot_set_itself() {
        let s = snap(vec![]);
        let v = content_for(&s, XdsType::Cluster, true, &Names::default());
        assert!(Arc::ptr_eq(&v, s.set(XdsType::Cluster)));
    }

    #[test]
    fn named_content_stands_in_for_missing_names() {
        let s = snap(vec![Resource::new("a", Bytes::from_static(b"x"), vec![])]);
        let names = Names::new(["a".to_string(), "b".to_string()].into(), None);
        let v = content_for(&s, XdsType::Endpoint, false, &names);
        assert_eq!(v.items.len(), 2);
        let cla = ClusterLoadAssignment::decode(v.items["b"].body.clone()).expect("decodes");
        assert_eq!(cla.cluster_name, "b");
        // Same subscription, same content: same version.
        assert_eq!(
            v.version,
            content_for(&s, XdsType::Endpoint, false, &names).version
        );
        assert!(lookup(&s, XdsType::Cluster, "missing").is_none());
    }

    #[test]
    fn names_equal_to_a_set_share_it_and_follow_later_sets_with_the_same_names() {
        let s1 = snap(vec![Resource::new("a", Bytes::from_static(b"1"), vec![])]);
        let names = Names::new(["a".to_string()].into(), Some(s1.set(XdsType::Endpoint)));
        assert!(matches!(names, Names::AllOf(_)));
        // Endpoints changed, names did not: the new snapshot's set is served as is.
        let s2 = snap(vec![Resource::new("a", Bytes::from_static(b"2"), vec![])]);
        let v = content_for(&s2, XdsType::Endpoint, false, &names);
        assert!(Arc::ptr_eq(&v, s2.set(XdsType::Endpoint)));
        assert!(names.same_as(&["a".to_string()].into()));
    }
}
