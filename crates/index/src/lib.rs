//! The single writer of current model state.
//!
//! Each source's objects are held separately (a source's `reset` replaces only its own set); the
//! push engine is the only caller of the mutating methods. After a batch of changes,
//! [`Index::view`] builds an immutable [`View`]: services by host name with their endpoints
//! already resolved per port, the routing objects in Istio's precedence order, and the errors
//! found while cross-checking them (a VirtualService routing to an unknown host is left out).

mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use view::{ConfigError, Endpoint, Named, ServiceInfo, ServiceOrigin, Services, SvcPort, View};

use meshpilot_model::{Body, ConfigKey, Kind, Object};

/// Which kinds of object a batch of changes touched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub kinds: BTreeSet<Kind>,
    /// The Services (namespace, name) whose EndpointSlices or Endpoints changed, before and
    /// after the change: with [`Changes::slices_only`], only their endpoints can have moved.
    pub slice_services: BTreeSet<(String, String)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// True when only endpoints could have moved (listeners and routes need no recompute).
    pub fn endpoints_only(&self) -> bool {
        !self.kinds.is_empty() && self.kinds.iter().all(|k| k.is_endpoint_only())
    }

    /// True when nothing but EndpointSlices (or Endpoints) changed: the view can be updated
    /// for [`Changes::slice_services`] alone ([`View::with_slices_changed`]).
    pub fn slices_only(&self) -> bool {
        !self.kinds.is_empty()
            && self
                .kinds
                .iter()
                .all(|k| matches!(k, Kind::EndpointSlice | Kind::Endpoints))
    }

    /// True when nothing but routing objects changed (VirtualServices, DestinationRules,
    /// Gateways, Sidecars): services and their endpoints are as they were
    /// ([`View::with_routing_changed`]).
    pub fn routing_only(&self) -> bool {
        !self.kinds.is_empty()
            && self.kinds.iter().all(|k| {
                matches!(
                    k,
                    Kind::VirtualService | Kind::DestinationRule | Kind::Gateway | Kind::Sidecar
                )
            })
    }

    pub fn merge(&mut self, other: Changes) {
        self.kinds.extend(other.kinds);
        self.slice_services.extend(other.slice_services);
    }

    /// Records that the object at `key` changed from `old` to `new`.
    fn note(&mut self, key: &ConfigKey, old: Option<&Object>, new: Option<&Object>) {
        self.kinds.insert(key.kind);
        for o in old.into_iter().chain(new) {
            if let Body::EndpointSlice(s) | Body::Endpoints(s) = &o.body {
                self.slice_services
                    .insert((o.meta.namespace.clone(), s.service.clone()));
            }
        }
    }
}

pub use meshpilot_model::ObjectMap;

/// Current objects, per source.
#[derive(Debug, Default)]
pub struct Index {
    sources: BTreeMap<String, ObjectMap>,
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// Replaces every object of `source` with `objects` (one atomic step).
    pub fn reset(&mut self, source: &str, objects: Vec<Object>) -> Changes {
        self.reset_shared(source, objects.into_iter().map(Arc::new).collect())
    }

    /// [`Index::reset`] with objects the source shares (no copy is made).
    pub fn reset_shared(&mut self, source: &str, objects: Vec<Arc<Object>>) -> Changes {
        let new: ObjectMap = objects.into_iter().map(|o| (o.key(), o)).collect();
        let old = self.sources.insert(source.to_string(), new);
        let mut changes = Changes::default();
        let new = &self.sources[source];
        let old = old.unwrap_or_default();
        for (k, v) in new {
            let before = old.get(k).map(|o| o.as_ref());
            if before != Some(v.as_ref()) {
                changes.note(k, before, Some(v));
            }
        }
        for (k, v) in &old {
            if !new.contains_key(k) {
                changes.note(k, Some(v), None);
            }
        }
        changes
    }

    /// Adds or replaces one object.
    pub fn apply(&mut self, source: &str, object: Object) -> Changes {
        let key = object.key();
        let set = self.sources.entry(source.to_string()).or_default();
        let mut changes = Changes::default();
        if set.get(&key).map(|o| o.as_ref()) != Some(&object) {
            let object = Arc::new(object);
            let old = set.insert(key.clone(), object.clone());
            changes.note(&key, old.as_deref(), Some(&object));
        }
        changes
    }

    /// Applies part of one source's set at once (see `SourceEvent::Update`): objects equal
    /// to the held ones (same allocation or same content) change nothing.
    pub fn update(
        &mut self,
        source: &str,
        upserts: Vec<Arc<Object>>,
        deletes: &[ConfigKey],
    ) -> Changes {
        let set = self.sources.entry(source.to_string()).or_default();
        let mut changes = Changes::default();
        for key in deletes {
            if let Some(old) = set.remove(key) {
                changes.note(key, Some(&old), None);
            }
        }
        for object in upserts {
            let key = object.key();
            let same = set
                .get(&key)
                .is_some_and(|held| Arc::ptr_eq(held, &object) || **held == *object);
            if !same {
                let old = set.insert(key.clone(), object.clone());
                changes.note(&key, old.as_deref(), Some(&object));
            }
        }
        changes
    }

    /// Removes one object.
    pub fn delete(&mut self, source: &str, key: &ConfigKey) -> Changes {
        let mut changes = Changes::default();
        if let Some(set) = self.sources.get_mut(source)
            && let Some(old) = set.remove(key)
        {
            changes.note(key, Some(&old), None);
        }
        changes
    }

    /// Every current object; when two sources hold the same key, the later source name wins.
    pub fn objects(&self) -> ObjectMap {
        let mut sets = self.sources.values();
        let Some(first) = sets.next() else {
            return ObjectMap::new();
        };
        // One source (the usual case) is a copy of its map, O(1).
        sets.fold(first.clone(), |all, set| set.clone().union(all))
    }

    /// Builds the read-only view compile works from; `previous` supplies last good versions of
    /// objects that now fail cross-object checks.
    pub fn view(&self, domain: &str, previous: Option<&View>) -> View {
        View::build(self.objects(), domain, previous)
    }

    /// The view after `changes`, `previous` being the view before them: only the services
    /// whose slices changed are rebuilt when nothing else changed, none when only routing
    /// objects did; else a full build.
    pub fn view_after(&self, changes: &Changes, domain: &str, previous: &View) -> View {
        if changes.slices_only()
            && previous.domain == domain
            && let Some(view) =
                View::with_slices_changed(previous, self.objects(), &changes.slice_services)
        {
            return view;
        }
        if changes.routing_only() && previous.domain == domain {
            return View::with_routing_changed(previous, self.objects());
        }
        self.view(domain, Some(previous))
    }
}

#[cfg(test)]
mod tests;
