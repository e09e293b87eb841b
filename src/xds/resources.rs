//! What a stream receives for one type, computed from a snapshot and a subscription: resource
//! lookup (with the empty stand-ins for missing EDS/RDS names), `Any` wrapping, nonces.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use crate::snapshot::{Resource, Snapshot, XdsType, content_hash};

/// The resource a stream gets for `name`.
///
/// A missing EDS or RDS name still gets an answer, an empty `ClusterLoadAssignment` /
/// `RouteConfiguration` of that name: the xDS protocol doc ("Knowing when a requested resource
/// does not exist") leaves a missing by-name resource unanswered, and Envoy would then hold the
/// cluster or listener warming until `initial_fetch_timeout`. Istio answers the same way.
/// A missing CDS or LDS name has no stand-in (`None`).
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
        XdsType::Cluster | XdsType::Listener => return None,
    };
    Some(Resource::new(name, Bytes::from(body), Vec::new()))
}

/// Wraps an encoded resource for the wire (the body is already the message's encoding).
pub(crate) fn to_any(t: XdsType, r: &Resource) -> Any {
    Any {
        type_url: t.type_url().to_string(),
        value: r.body.to_vec(),
    }
}

/// The complete set of one type that a SotW stream receives.
#[derive(Debug)]
pub(crate) struct SotwView {
    /// Content hash over the (name, version) pairs, the response's `version_info`.
    pub version: String,
    pub resources: Vec<Arc<Resource>>,
}

/// What a SotW stream receives for a type: every resource for the wildcard types (CDS, LDS),
/// exactly the subscribed names for EDS and RDS.
pub(crate) fn sotw_view(snap: &Snapshot, t: XdsType, names: &BTreeSet<String>) -> SotwView {
    if t.is_wildcard() {
        let set = snap.get(t);
        // `TypeSet::version` is the same content hash over the same (name, version) pairs.
        return SotwView {
            version: set.version.clone(),
            resources: set.items.values().cloned().collect(),
        };
    }
    let resources: Vec<Arc<Resource>> = names.iter().filter_map(|n| lookup(snap, t, n)).collect();
    let mut parts: Vec<&[u8]> = Vec::with_capacity(resources.len() * 2);
    for r in &resources {
        parts.push(r.name.as_bytes());
        parts.push(r.version.as_bytes());
    }
    SotwView {
        version: content_hash(&parts),
        resources,
    }
}

/// Nonces of one stream: a counter, unique within the stream across all types.
#[derive(Debug, Default)]
pub(crate) struct Nonces(u64);

impl Nonces {
    pub(crate) fn next(&mut self) -> String {
        self.0 += 1;
        self.0.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClassKey, Interception, ProxyKind};

    fn snap(endpoints: Vec<Resource>) -> Snapshot {
        let class = ClassKey {
            kind: ProxyKind::Sidecar,
            namespace: "default".into(),
            labels: Default::default(),
            interception: Interception::Redirect,
            bind_ip: None,
        };
        Snapshot::new(class, [vec![], endpoints, vec![], vec![]], &[]).expect("consistent")
    }

    #[test]
    fn wildcard_view_version_equals_typeset_version() {
        let s = snap(vec![]);
        let v = sotw_view(&s, XdsType::Cluster, &BTreeSet::new());
        assert_eq!(v.version, s.get(XdsType::Cluster).version);
        assert!(v.resources.is_empty());
    }

    #[test]
    fn named_view_stands_in_for_missing_names() {
        let s = snap(vec![Resource::new("a", Bytes::from_static(b"x"), vec![])]);
        let names: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        let v = sotw_view(&s, XdsType::Endpoint, &names);
        assert_eq!(v.resources.len(), 2);
        let cla = ClusterLoadAssignment::decode(v.resources[1].body.clone()).expect("decodes");
        assert_eq!(cla.cluster_name, "b");
        // Same subscription, same content: same version.
        assert_eq!(v.version, sotw_view(&s, XdsType::Endpoint, &names).version);
        assert!(lookup(&s, XdsType::Cluster, "missing").is_none());
    }
}
