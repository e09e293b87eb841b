//! The single writer of current model state.
//!
//! Each source's objects are kept apart, by [`SourceId`] (a source's `reset` replaces only its
//! own set); the push engine is the only caller of the mutating methods. After a batch of
//! changes, [`Index::build_view`] derives an immutable [`View`] — the read-only state compile
//! works from: services by host name with their endpoints already resolved per port, the
//! routing objects in Istio's precedence order, and the diagnostics found while
//! cross-checking them (a VirtualService routing to an unknown host is left out).
//!
//! ```text
//! SourceEvent ──► Index (objects per SourceId; keys several sources define) ──► View
//!                        └──► conflicts(): one Conflict diagnostic per shadowed definition
//! ```
//!
//! **Conflict rule.** When several sources define the same object (same kind, namespace and
//! name), the definition of the *greatest* [`SourceId`] serves: the Kubernetes API over the
//! files (the cluster is what every other control plane and tool reads, so a stale local
//! manifest must not shadow it), and between two Kubernetes watches of one kind, the later
//! `--namespaces` entry. Each other definition is reported by [`Index::conflicts`]. The rule
//! depends only on which sources hold the key — not on names as text, nor on which event came
//! first — so the winner does not change while the set of definitions does not. (Two files
//! defining one object are decided earlier, by the file source: the later path serves, as
//! `kubectl apply -f DIR` would leave it.)

mod delegates;
mod destination_rules;
mod service_hosts;
mod services;
mod unserved;
mod view;
mod vs_conflicts;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use view::{Endpoint, Named, ServiceInfo, ServiceOrigin, Services, SvcPort, View};
pub use vs_conflicts::applies_to_mesh;

use meshpilot_model::{Body, ConfigKey, Diagnostic, Kind, Object, SourceId};

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
    /// Gateways, Sidecars, PeerAuthentications, and the Secrets gateways serve): services and
    /// their endpoints are as they were
    /// ([`View::with_routing_changed`]).
    pub fn routing_only(&self) -> bool {
        !self.kinds.is_empty()
            && self.kinds.iter().all(|k| {
                matches!(
                    k,
                    Kind::VirtualService
                        | Kind::DestinationRule
                        | Kind::Gateway
                        | Kind::Sidecar
                        | Kind::Secret
                        | Kind::PeerAuthentication
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
    sources: BTreeMap<SourceId, ObjectMap>,
    /// Keys that more than one source defines, with every source that does (usually none).
    conflicts: BTreeMap<ConfigKey, BTreeSet<SourceId>>,
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// Replaces every object of `source` with `objects` (one atomic step).
    pub fn reset(&mut self, source: SourceId, objects: Vec<Object>) -> Changes {
        self.reset_shared(source, objects.into_iter().map(Arc::new).collect())
    }

    /// [`Index::reset`] with objects the source shares (no copy is made).
    pub fn reset_shared(&mut self, source: SourceId, objects: Vec<Arc<Object>>) -> Changes {
        let new: ObjectMap = objects.into_iter().map(|o| (o.key(), o)).collect();
        let old = self.sources.insert(source, new).unwrap_or_default();
        let mut changes = Changes::default();
        let mut appeared_or_gone = Vec::new();
        let new = &self.sources[&source];
        for (k, v) in new {
            let before = old.get(k).map(|o| o.as_ref());
            if before.is_none() {
                appeared_or_gone.push(k.clone());
            }
            if before != Some(v.as_ref()) {
                changes.note(k, before, Some(v));
            }
        }
        for (k, v) in &old {
            if !new.contains_key(k) {
                changes.note(k, Some(v), None);
                appeared_or_gone.push(k.clone());
            }
        }
        for key in appeared_or_gone {
            self.recheck_conflict(key);
        }
        changes
    }

    /// Applies part of one source's set at once (see `SourceEvent::Update`): objects equal
    /// to the current ones (same allocation or same content) change nothing.
    pub fn update(
        &mut self,
        source: SourceId,
        upserts: Vec<Arc<Object>>,
        deletes: &[ConfigKey],
    ) -> Changes {
        let set = self.sources.entry(source).or_default();
        let mut changes = Changes::default();
        let mut appeared_or_gone = Vec::new();
        for key in deletes {
            if let Some(old) = set.remove(key) {
                changes.note(key, Some(&old), None);
                appeared_or_gone.push(key.clone());
            }
        }
        for object in upserts {
            let key = object.key();
            let same = set
                .get(&key)
                .is_some_and(|current| Arc::ptr_eq(current, &object) || **current == *object);
            if !same {
                let old = set.insert(key.clone(), object.clone());
                changes.note(&key, old.as_deref(), Some(&object));
                if old.is_none() {
                    appeared_or_gone.push(key);
                }
            }
        }
        for key in appeared_or_gone {
            self.recheck_conflict(key);
        }
        changes
    }

    /// Records whether `key` (just added to or removed from some source) is now defined by
    /// more than one source.
    fn recheck_conflict(&mut self, key: ConfigKey) {
        let holders: BTreeSet<SourceId> = self
            .sources
            .iter()
            .filter(|(id, set)| id.may_hold(key.kind) && set.contains_key(&key))
            .map(|(id, _)| *id)
            .collect();
        if holders.len() > 1 {
            self.conflicts.insert(key, holders);
        } else {
            self.conflicts.remove(&key);
        }
    }

    /// One [`Stage::Conflict`](meshpilot_model::Stage::Conflict) diagnostic per definition
    /// that does not serve because another source defines the same object (see the conflict
    /// rule in the crate docs). Empty, without allocating, when there is none.
    pub fn conflicts(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for (key, holders) in &self.conflicts {
            let origin_in = |id: &SourceId| {
                self.sources
                    .get(id)
                    .and_then(|set| set.get(key))
                    .map(|o| o.meta.origin.clone())
            };
            let Some(serving_id) = holders.last() else {
                continue;
            };
            let Some(serving) = origin_in(serving_id) else {
                continue;
            };
            for shadowed_id in holders.iter().filter(|id| *id != serving_id) {
                let rule = match (shadowed_id, serving_id) {
                    (SourceId::Files, _) => "the Kubernetes API serves over the files",
                    _ => "of two watches of one kind, the later --namespaces entry serves",
                };
                if let Some(shadowed) = origin_in(shadowed_id) {
                    out.push(Diagnostic::conflict(key, shadowed, serving.clone(), rule));
                }
            }
        }
        out
    }

    /// Every current object; when several sources define the same key, the greatest
    /// [`SourceId`]'s definition serves (the conflict rule in the crate docs).
    pub fn objects(&self) -> ObjectMap {
        // Sources in ascending order; `union` keeps its receiver's entry on a shared key, so
        // each later source's definitions replace the earlier ones'.
        let mut sets = self.sources.values();
        let Some(first) = sets.next() else {
            return ObjectMap::new();
        };
        // One source (the usual case) is a copy of its map, O(1).
        sets.fold(first.clone(), |all, set| set.clone().union(all))
    }

    /// Builds the read-only view compile works from; `previous` supplies last good versions of
    /// objects that now fail cross-object checks.
    pub fn build_view(&self, domain: &str, previous: Option<&View>) -> View {
        View::build(self.objects(), domain, previous)
    }

    /// The view after `changes`, `previous` being the view before them: only the services
    /// whose slices changed are rebuilt when nothing else changed, none when only routing
    /// objects did; else a full build.
    pub fn build_view_after(&self, changes: &Changes, domain: &str, previous: &View) -> View {
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
        self.build_view(domain, Some(previous))
    }
}

#[cfg(test)]
mod export_defaults_tests;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod service_entries_tests;
