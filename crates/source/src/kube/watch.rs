//! One kube-runtime watcher for one kind in one scope, turned into [`SourceEvent`]s.
//!
//! The watcher's protocol (kube-rs `watcher::Event`) maps one to one:
//!
//! ```text
//! Init ──► InitApply(obj)* ──► InitDone ──► Apply(obj) | Delete(obj) ...   (then Init again
//! (start    (convert, buffer)  (one atomic         (one Update each:        after 410 Gone)
//!  buffer)                      Reset of the kind)  one upsert or delete)
//! ```
//!
//! Nothing is cleared at `Init`: the previous set serves until the new list is complete, so a
//! relist never pushes a transiently empty config. A dropped connection resumes the watch from
//! the last resourceVersion (no relist); API errors are retried with kube-rs's default
//! backoff (0.8 s doubling to 30 s). Objects are converted as they arrive and only the
//! projected model objects are kept (a Pod is reduced to a workload, never stored whole).
//! The Istio kinds meshpilot does not serve are watched for their metadata only: each object
//! present is a warning, which its delete takes back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, DynamicObject, PartialObjectMeta};
use kube::core::{ApiResource, TypeMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::nodes::Localities;
use super::{Client, KubeKind};
use crate::convert::{convert_noting, object_key};
use crate::{SourceEvent, SourceId};
use meshpilot_model::{Body, ConfigKey, Diagnostic, Object, Origin};
use tokio_util::sync::CancellationToken as Shutdown;

/// What one watcher watches.
pub(super) struct Watch {
    pub source: SourceId,
    pub kind: KubeKind,
    pub resource: ApiResource,
    /// `None`: every namespace (or a cluster-scoped kind).
    pub namespace: Option<String>,
    /// For Pods: node localities (the Pod watch starts after the Nodes have synced).
    pub localities: Option<Localities>,
}

/// Watches until shutdown or until the push engine is gone.
pub(super) async fn run(
    client: Client,
    w: Watch,
    tx: mpsc::Sender<SourceEvent>,
    shutdown: Shutdown,
) {
    if let Some(localities) = &w.localities {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = localities.synced() => {}
        }
    }
    let mut stream = if w.kind.is_unserved() {
        // Names are all a warning needs: never fetch (or hold) the specs.
        let api: Api<PartialObjectMeta<DynamicObject>> = match &w.namespace {
            Some(ns) => Api::namespaced_with(client, ns, &w.resource),
            None => Api::all_with(client, &w.resource),
        };
        kube::runtime::watcher(api, watcher::Config::default())
            .map(|event| event.map(metadata_event))
            .default_backoff()
            .boxed()
    } else {
        let api: Api<DynamicObject> = match &w.namespace {
            Some(ns) => Api::namespaced_with(client, ns, &w.resource),
            None => Api::all_with(client, &w.resource),
        };
        watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed()
    };
    let mut state = State::new(&w);
    // Pods only: told when a Node's locality changes.
    let mut node_changes = w.localities.as_ref().map(Localities::changes);
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            event = stream.next() => Some(event),
            // `w` holds the sender, so this never fails while the watch runs.
            Ok(()) = async {
                match node_changes.as_mut() {
                    Some(rx) => rx.changed().await,
                    None => std::future::pending().await,
                }
            } => None,
        };
        let out = match event {
            None => state.relocate(),
            Some(None) => break,
            Some(Some(Ok(event))) => state.handle(event),
            Some(Some(Err(e))) => {
                log_watch_error(&e);
                Vec::new()
            }
        };
        for ev in out {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                sent = tx.send(ev) => if sent.is_err() {
                    debug!("source event receiver is gone");
                    return;
                },
            }
        }
    }
    debug!("watch stopped");
}

fn watcher(
    api: Api<DynamicObject>,
    cfg: watcher::Config,
) -> impl futures::Stream<Item = watcher::Result<Event<DynamicObject>>> + Send {
    kube::runtime::watcher(api, cfg)
}

/// A metadata-only watch event as the object it stands for, with an empty body.
fn metadata_event(event: Event<PartialObjectMeta<DynamicObject>>) -> Event<DynamicObject> {
    let object = |meta: PartialObjectMeta<DynamicObject>| DynamicObject {
        types: None,
        metadata: meta.metadata,
        data: serde_json::Value::Object(serde_json::Map::new()),
    };
    match event {
        Event::Init => Event::Init,
        Event::InitApply(m) => Event::InitApply(object(m)),
        Event::InitDone => Event::InitDone,
        Event::Apply(m) => Event::Apply(object(m)),
        Event::Delete(m) => Event::Delete(object(m)),
    }
}

fn log_watch_error(e: &watcher::Error) {
    match e {
        watcher::Error::WatchError(status) if status.code == 410 => {
            info!("resourceVersion expired (410 Gone): relisting");
        }
        other => warn!(error = %other, "watch failed; retrying with backoff"),
    }
}

/// The per-watcher state between events.
struct State<'a> {
    w: &'a Watch,
    type_meta: TypeMeta,
    /// Currently refused objects, by namespace/name, reported with each event.
    errors: BTreeMap<(String, String), Diagnostic>,
    /// The warnings of the serving objects (fields meshpilot does not read), by namespace/name,
    /// reported with each event while the object serves.
    warnings: BTreeMap<(String, String), Vec<Diagnostic>>,
    /// Objects and errors gathered since `Init`, until `InitDone`.
    listing: Option<Listing>,
    /// The served Pods whose locality is their Node's (they have no locality label of their
    /// own): re-sent when that Node's locality changes ([`State::relocate`]). The same
    /// allocations as were sent, so keeping them costs a key each.
    node_pods: BTreeMap<ConfigKey, Arc<Object>>,
}

#[derive(Default)]
struct Listing {
    objects: Vec<Object>,
    /// Which of `objects` take their locality from their Node.
    node_pods: BTreeSet<ConfigKey>,
    errors: BTreeMap<(String, String), Diagnostic>,
    warnings: BTreeMap<(String, String), Vec<Diagnostic>>,
}

/// The outcome of converting one watched object.
#[allow(
    clippy::large_enum_variant,
    reason = "short-lived, one per watch event; boxing would only add an allocation"
)]
enum Converted {
    /// The object, its warnings (empty for most), and whether it is a Pod whose locality is
    /// its Node's.
    Ok(Object, Vec<Diagnostic>, bool),
    /// A kind/version the model does not take (not expected from a resolved resource).
    Skip,
    Err((String, String), Diagnostic),
}

impl<'a> State<'a> {
    fn new(w: &'a Watch) -> Self {
        State {
            w,
            type_meta: TypeMeta {
                api_version: w.resource.api_version.clone(),
                kind: w.resource.kind.clone(),
            },
            errors: BTreeMap::new(),
            warnings: BTreeMap::new(),
            listing: None,
            node_pods: BTreeMap::new(),
        }
    }

    /// The Pods whose Node's locality is no longer the one they were sent with, sent again
    /// with the new one (one update; none when no Pod moved).
    fn relocate(&mut self) -> Vec<SourceEvent> {
        let Some(localities) = &self.w.localities else {
            return Vec::new();
        };
        let mut upserts = Vec::new();
        for o in self.node_pods.values_mut() {
            let Body::Pod(w) = &o.body else {
                continue;
            };
            let now = w.node.as_deref().and_then(|n| localities.get(n));
            if now == w.locality {
                continue;
            }
            let mut moved = Object::clone(o);
            if let Body::Pod(w) = &mut moved.body {
                w.locality = now;
            }
            *o = Arc::new(moved);
            upserts.push(o.clone());
        }
        if upserts.is_empty() {
            return Vec::new();
        }
        debug!(
            pods = upserts.len(),
            "re-sending Pods whose Node's locality changed"
        );
        vec![SourceEvent::Update {
            source: self.w.source,
            upserts,
            deletes: Vec::new(),
            diagnostics: self.diagnostics(),
        }]
    }

    /// The source events one watcher event becomes.
    fn handle(&mut self, event: Event<DynamicObject>) -> Vec<SourceEvent> {
        let source = self.w.source;
        match event {
            Event::Init => {
                debug!("listing");
                self.listing = Some(Listing::default());
                Vec::new()
            }
            Event::InitApply(obj) => {
                let converted = self.convert(obj);
                let listing = self.listing.get_or_insert_with(Listing::default);
                match converted {
                    Converted::Ok(o, warnings, from_node) => {
                        if !warnings.is_empty() {
                            let id = (o.meta.namespace.clone(), o.meta.name.clone());
                            listing.warnings.insert(id, warnings);
                        }
                        if from_node {
                            listing.node_pods.insert(o.key());
                        }
                        listing.objects.push(o);
                    }
                    Converted::Err(id, e) => {
                        listing.errors.insert(id, e);
                    }
                    Converted::Skip => {}
                }
                Vec::new()
            }
            Event::InitDone => {
                let listing = self.listing.take().unwrap_or_default();
                info!(
                    objects = listing.objects.len(),
                    errors = listing.errors.len(),
                    "listed"
                );
                self.errors = listing.errors;
                self.warnings = listing.warnings;
                let objects: Vec<Arc<Object>> = listing.objects.into_iter().map(Arc::new).collect();
                // (Only Pod watches have any: the other kinds make no keys here.)
                self.node_pods = if listing.node_pods.is_empty() {
                    BTreeMap::new()
                } else {
                    objects
                        .iter()
                        .map(|o| (o.key(), o))
                        .filter(|(key, _)| listing.node_pods.contains(key))
                        .map(|(key, o)| (key, o.clone()))
                        .collect()
                };
                vec![SourceEvent::Reset {
                    source,
                    objects,
                    diagnostics: self.diagnostics(),
                }]
            }
            Event::Apply(obj) => match self.convert(obj) {
                Converted::Ok(o, warnings, from_node) => {
                    let id = (o.meta.namespace.clone(), o.meta.name.clone());
                    self.errors.remove(&id);
                    if warnings.is_empty() {
                        self.warnings.remove(&id);
                    } else {
                        self.warnings.insert(id, warnings);
                    }
                    let o = Arc::new(o);
                    if from_node {
                        self.node_pods.insert(o.key(), o.clone());
                    } else if !self.node_pods.is_empty() {
                        self.node_pods.remove(&o.key());
                    }
                    vec![SourceEvent::Update {
                        source,
                        upserts: vec![o],
                        deletes: Vec::new(),
                        diagnostics: self.diagnostics(),
                    }]
                }
                // The previous good version (if any) keeps serving.
                Converted::Err(id, e) => {
                    if self.errors.get(&id) == Some(&e) {
                        return Vec::new();
                    }
                    self.errors.insert(id, e);
                    vec![SourceEvent::Update {
                        source,
                        upserts: Vec::new(),
                        deletes: Vec::new(),
                        diagnostics: self.diagnostics(),
                    }]
                }
                Converted::Skip => Vec::new(),
            },
            Event::Delete(obj) => {
                let id = (
                    obj.metadata.namespace.clone().unwrap_or_default(),
                    obj.metadata.name.clone().unwrap_or_default(),
                );
                let Some(key) = self.key(obj) else {
                    // An object that was never served (an unserved kind, or one always
                    // refused) leaves only its diagnostic behind: take it back.
                    if self.errors.remove(&id).is_none() {
                        return Vec::new();
                    }
                    return vec![SourceEvent::Update {
                        source,
                        upserts: Vec::new(),
                        deletes: Vec::new(),
                        diagnostics: self.diagnostics(),
                    }];
                };
                let id = (key.namespace.to_string(), key.name.to_string());
                self.errors.remove(&id);
                self.warnings.remove(&id);
                self.node_pods.remove(&key);
                vec![SourceEvent::Update {
                    source,
                    upserts: Vec::new(),
                    deletes: vec![key],
                    diagnostics: self.diagnostics(),
                }]
            }
        }
    }

    /// The source's current refused objects and the warnings of its serving ones, as every
    /// event reports them.
    fn diagnostics(&self) -> Vec<Diagnostic> {
        self.errors
            .values()
            .chain(self.warnings.values().flatten())
            .cloned()
            .collect()
    }

    /// The JSON document of a watched object, as a manifest would have it.
    fn document(&self, mut obj: DynamicObject) -> serde_json::Value {
        // List items carry no apiVersion/kind; the resource they were listed from says it.
        obj.types = Some(self.type_meta.clone());
        obj.metadata.managed_fields = None;
        serde_json::to_value(obj).unwrap_or_default()
    }

    fn convert(&self, obj: DynamicObject) -> Converted {
        let id = (
            obj.metadata.namespace.clone().unwrap_or_default(),
            obj.metadata.name.clone().unwrap_or_default(),
        );
        let origin = Origin::Kubernetes { kind: self.w.kind };
        let mut warnings = Vec::new();
        match convert_noting(self.document(obj), &origin, &mut warnings) {
            Ok(Some(mut o)) => {
                let mut from_node = false;
                if let (Body::Pod(w), Some(localities)) = (&mut o.body, &self.w.localities) {
                    // A locality label on the Pod wins over its Node's (istiod's order).
                    if w.locality.is_none()
                        && let Some(node) = w.node.as_deref()
                    {
                        w.locality = localities.get(node);
                        from_node = true;
                    }
                }
                Converted::Ok(o, warnings, from_node)
            }
            Ok(None) => {
                debug!(
                    kind = self.w.kind.as_str(),
                    "skipped an object of a kind the model does not take"
                );
                Converted::Skip
            }
            Err(e) => {
                debug!(error = %e, "refused object");
                Converted::Err(id, e)
            }
        }
    }

    fn key(&self, obj: DynamicObject) -> Option<ConfigKey> {
        object_key(&self.document(obj))
    }
}

#[cfg(test)]
mod tests;
