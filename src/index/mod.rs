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

pub use view::{ConfigError, Endpoint, Named, ServiceInfo, ServiceOrigin, SvcPort, View};

use crate::model::{ConfigKey, Kind, Object};

/// Which kinds of object a batch of changes touched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub kinds: BTreeSet<Kind>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// True when only endpoints could have moved (listeners and routes need no recompute).
    pub fn endpoints_only(&self) -> bool {
        !self.kinds.is_empty() && self.kinds.iter().all(|k| k.is_endpoint_only())
    }

    pub fn merge(&mut self, other: Changes) {
        self.kinds.extend(other.kinds);
    }
}

/// Current objects, per source.
#[derive(Debug, Default)]
pub struct Index {
    sources: BTreeMap<String, BTreeMap<ConfigKey, Arc<Object>>>,
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// Replaces every object of `source` with `objects` (one atomic step).
    pub fn reset(&mut self, source: &str, objects: Vec<Object>) -> Changes {
        let new: BTreeMap<ConfigKey, Arc<Object>> = objects
            .into_iter()
            .map(|o| (o.key(), Arc::new(o)))
            .collect();
        let old = self.sources.insert(source.to_string(), new);
        let mut changes = Changes::default();
        let new = &self.sources[source];
        let old = old.unwrap_or_default();
        for (k, v) in new {
            if old.get(k).map(|o| o.as_ref()) != Some(v.as_ref()) {
                changes.kinds.insert(k.kind);
            }
        }
        for k in old.keys() {
            if !new.contains_key(k) {
                changes.kinds.insert(k.kind);
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
            changes.kinds.insert(key.kind);
            set.insert(key, Arc::new(object));
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
            if set.remove(key).is_some() {
                changes.kinds.insert(key.kind);
            }
        }
        for object in upserts {
            let key = object.key();
            let same = set
                .get(&key)
                .is_some_and(|held| Arc::ptr_eq(held, &object) || **held == *object);
            if !same {
                changes.kinds.insert(key.kind);
                set.insert(key, object);
            }
        }
        changes
    }

    /// Removes one object.
    pub fn delete(&mut self, source: &str, key: &ConfigKey) -> Changes {
        let mut changes = Changes::default();
        if let Some(set) = self.sources.get_mut(source)
            && set.remove(key).is_some()
        {
            changes.kinds.insert(key.kind);
        }
        changes
    }

    /// Every current object; when two sources hold the same key, the later source name wins.
    pub fn objects(&self) -> BTreeMap<ConfigKey, Arc<Object>> {
        let mut all = BTreeMap::new();
        for set in self.sources.values() {
            for (k, v) in set {
                all.insert(k.clone(), v.clone());
            }
        }
        all
    }

    /// Builds the read-only view compile works from; `previous` supplies last good versions of
    /// objects that now fail cross-object checks.
    pub fn view(&self, domain: &str, previous: Option<&View>) -> View {
        View::build(self.objects(), domain, previous)
    }
}

#[cfg(test)]
mod tests;
