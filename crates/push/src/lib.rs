//! The push engine: the only writer of the index. It applies source events, debounces bursts
//! (quiet period, bounded by a maximum delay), recompiles what a change touches and publishes a
//! snapshot per proxy class — shared clusters/endpoints once per change, listeners/routes once
//! per class, and only endpoints when nothing but endpoints moved. Snapshots whose content is
//! unchanged reach no proxy (the cache compares content hashes).
//!
//! A change that arrives after a quiet period is pushed at once (see [`Debounce::leading`]);
//! only the changes that follow it wait for quiet, so a burst costs one immediate push and one
//! coalesced push.
//!
//! It is also the one owner of diagnostics: it gathers what the sources refused, the index's
//! conflicts, the reference check's and compile's findings into one sorted list, logs each once
//! ([`diagnostics`]) and publishes it with the view as the [`ServingState`] the debug endpoints
//! read.
//!
//! ```text
//! SourceEvent ─► Index ─► View ─► compile per class ─► SnapshotCache
//!      │            │        │             │
//!      └ diagnostics┴ conflicts┴ reference ┴ compile ─► log once + ServingState (debug)
//! ```

#[cfg(test)]
mod debounce_tests;
mod diagnostics;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use meshpilot_compile::{
    self as compile, ClassOutput, ClustersAndEndpoints, ClustersAndEndpointsCache, RoutesOutput,
};
use meshpilot_index::{Changes, Index, View};
use meshpilot_model::{ClassKey, Diagnostic, Proxy};
use meshpilot_snapshot::{SnapshotCache, TypeSet};
use meshpilot_source::{SourceEvent, SourceId};

use diagnostics::DiagnosticLog;
use meshpilot_telemetry::metrics;
use tokio_util::sync::CancellationToken as Shutdown;

/// What the debug endpoints read: the view being served, every current diagnostic and
/// readiness. Replaced as a whole after each recompute.
#[derive(Debug, Default)]
pub struct ServingState {
    pub view: Arc<View>,
    /// Every current diagnostic of every stage, sorted: what the sources refused, the
    /// index's conflicts, the reference check's and compile's findings.
    pub diagnostics: Vec<Diagnostic>,
    /// True once every source has synced and the first snapshots can be built.
    pub ready: bool,
    /// Number of recomputes so far.
    pub pushes: u64,
}

/// Debounce settings.
///
/// The rule, per change that reaches the engine after the first full sync:
/// - With `leading`, when the engine has been quiet for at least `quiet` — no change received
///   and no push made — and no burst is pending, the change is recomputed and published at
///   once, unless it removes objects (a delete, a source's whole set: `removes_objects`).
/// - Otherwise it joins the pending burst (starting one if there is none): the burst is pushed
///   once `quiet` passes with no further change, and at the latest `max` after its first
///   change. So a steady stream is pushed at least every `max`, and a change pushed at once
///   makes the next `quiet` a burst window: a burst of any size costs two pushes.
///
/// The first full sync is built at once whatever the settings (nothing is served before it)
/// and counts as a push. A recompute runs on the engine's own task: changes that arrive while
/// it runs wait in the event channel and, received right after it, fall within `quiet` of that
/// push, so they are debounced rather than pushed at once.
#[derive(Debug, Clone, Copy)]
pub struct Debounce {
    /// How long a burst must be quiet before it is pushed, and how long the engine must be
    /// idle for a change to be pushed at once.
    pub quiet: Duration,
    /// The longest the first change of a burst waits while changes keep coming.
    pub max: Duration,
    /// Push a change after a quiet period at once instead of waiting `quiet` for more. Off, a
    /// change always waits `quiet` (istiod's timing).
    pub leading: bool,
}

/// True for an event that can take objects away from proxies: a delete, or a source's whole
/// set (a relist or full reload). Such a change always waits for quiet, as it often is the first
/// step of a replacement — an editor renaming the old file away before writing the new one, a
/// file truncated before it is written again, `kubectl replace --force` — and pushing it at once
/// would take the object from every proxy until the rest of the replacement arrived.
fn removes_objects(event: &SourceEvent) -> bool {
    match event {
        SourceEvent::Reset { .. } => true,
        SourceEvent::Update { deletes, .. } => !deletes.is_empty(),
        SourceEvent::Held { .. } => false,
    }
}

/// A class's representative proxy and its last compiled listeners/routes (reused when only
/// endpoints change).
struct ClassState {
    proxy: Proxy,
    out: Option<Arc<ClassOutput>>,
}

pub struct PushEngine {
    cache: Arc<SnapshotCache>,
    index: Index,
    domain: String,
    debounce: Debounce,
    /// Sources that must sync before anything is served.
    expected: BTreeSet<SourceId>,
    synced: BTreeSet<SourceId>,
    /// Each source's refused inputs, as its last event listed them.
    source_diagnostics: BTreeMap<SourceId, Vec<Diagnostic>>,
    classes: HashMap<ClassKey, ClassState>,
    /// Listeners and routes compiled from the current view, by compile key (see
    /// [`compile::compile_key`]): classes differing only in labels no selector reads share one.
    compiled: HashMap<ClassKey, Arc<ClassOutput>>,
    /// Routes compiled from the current view, by routes key (see [`compile::routes_key`]):
    /// classes differing only in the address their listeners bind share one.
    compiled_routes: HashMap<ClassKey, Arc<RoutesOutput>>,
    view: Arc<View>,
    shared: ClustersAndEndpoints,
    shared_cache: ClustersAndEndpointsCache,
    /// The endpoint sets of clients of locality-aware clusters of `shared`, per client
    /// locality (`failoverPriority` labels, namespace sets), made once for all the classes
    /// that share them; emptied with each new `shared`.
    locality_endpoints: HashMap<compile::LocalityKey, Arc<TypeSet>>,
    /// What the index, the reference check and compile found at the last recompute, plus
    /// compile's findings for classes built since.
    derived_diagnostics: BTreeSet<Diagnostic>,
    log: DiagnosticLog,
    serving: watch::Sender<Arc<ServingState>>,
    pushes: u64,
    /// When the first change of the pending burst was seen (stamped on its snapshots).
    changed_at: Option<std::time::SystemTime>,
}

impl PushEngine {
    pub fn new(
        cache: Arc<SnapshotCache>,
        domain: String,
        debounce: Debounce,
        expected: BTreeSet<SourceId>,
    ) -> (PushEngine, watch::Receiver<Arc<ServingState>>) {
        let (serving, rx) = watch::channel(Arc::new(ServingState::default()));
        (
            PushEngine {
                cache,
                index: Index::new(),
                domain,
                debounce,
                expected,
                synced: BTreeSet::new(),
                source_diagnostics: BTreeMap::new(),
                classes: HashMap::new(),
                compiled: HashMap::new(),
                compiled_routes: HashMap::new(),
                view: Arc::new(View::default()),
                shared: ClustersAndEndpoints::default(),
                shared_cache: ClustersAndEndpointsCache::default(),
                locality_endpoints: HashMap::new(),
                derived_diagnostics: BTreeSet::new(),
                log: DiagnosticLog::default(),
                serving,
                pushes: 0,
                changed_at: None,
            },
            rx,
        )
    }

    fn ready(&self) -> bool {
        self.expected.is_subset(&self.synced)
    }

    /// Runs until shutdown.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<SourceEvent>,
        mut builds: mpsc::UnboundedReceiver<Proxy>,
        shutdown: Shutdown,
    ) {
        let span = info_span!("push");
        async move {
            let mut pending = Changes::default();
            let mut first_change: Option<Instant> = None;
            let mut deadline: Option<Instant> = None;
            // When the engine last received a change or finished a push: a change is pushed at
            // once only when this is at least `quiet` ago.
            let mut last_activity: Option<Instant> = None;
            loop {
                let sleep = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    ev = events.recv() => {
                        let Some(ev) = ev else { break };
                        let removes = removes_objects(&ev);
                        let was_ready = self.ready();
                        let (changes, diagnostics_changed) = self.apply(ev);
                        if !was_ready && self.ready() {
                            // First full sync: build at once, no debounce.
                            pending.merge(changes);
                            self.recompute(std::mem::take(&mut pending), true);
                            first_change = None;
                            deadline = None;
                            last_activity = Some(Instant::now());
                            continue;
                        }
                        if changes.is_empty() && !diagnostics_changed {
                            continue;
                        }
                        pending.merge(changes);
                        let now = Instant::now();
                        let quiet_before = deadline.is_none()
                            && last_activity
                                .is_none_or(|t| now.duration_since(t) >= self.debounce.quiet);
                        last_activity = Some(now);
                        if self.debounce.leading && quiet_before && !removes && self.ready() {
                            // Nothing else is in flight: waiting for more changes would only
                            // delay this one. It waited no debounce.
                            self.changed_at = Some(std::time::SystemTime::now());
                            metrics().debounce_time.observe(0.0);
                            self.recompute(std::mem::take(&mut pending), false);
                            // Measured after the recompute, so changes that queued up while it
                            // ran are debounced.
                            last_activity = Some(Instant::now());
                            continue;
                        }
                        if first_change.is_none() {
                            self.changed_at = Some(std::time::SystemTime::now());
                        }
                        let first = *first_change.get_or_insert(now);
                        deadline = Some((now + self.debounce.quiet).min(first + self.debounce.max));
                    }
                    Some(proxy) = builds.recv() => self.build_class(proxy),
                    _ = sleep => {
                        if let Some(first) = first_change {
                            metrics().debounce_time.observe(first.elapsed().as_secs_f64());
                        }
                        self.recompute(std::mem::take(&mut pending), false);
                        first_change = None;
                        deadline = None;
                        last_activity = Some(Instant::now());
                    }
                }
            }
            debug!("push engine stopped");
        }
        .instrument(span)
        .await
    }

    /// Applies one source event to the index; also says whether the source's diagnostics
    /// changed (a fix or a new mistake that changed no object still deserves a log line).
    fn apply(&mut self, ev: SourceEvent) -> (Changes, bool) {
        let (source, diagnostics, changes) = match ev {
            SourceEvent::Reset {
                source,
                objects,
                diagnostics,
            } => {
                self.synced.insert(source);
                (
                    source,
                    diagnostics,
                    self.index.reset_shared(source, objects),
                )
            }
            SourceEvent::Update {
                source,
                upserts,
                deletes,
                diagnostics,
            } => (
                source,
                diagnostics,
                self.index.update(source, upserts, &deletes),
            ),
            SourceEvent::Held {
                source,
                diagnostics,
            } => (source, diagnostics, Changes::default()),
        };
        let before = self.source_diagnostics.insert(source, diagnostics);
        let diagnostics_changed = before.as_ref() != self.source_diagnostics.get(&source);
        (changes, diagnostics_changed)
    }

    fn build_class(&mut self, proxy: Proxy) {
        // (A class already compiled under the same compile key is reused below.)
        let key = proxy.class_key();
        if self.classes.contains_key(&key) {
            return;
        }
        if !self.ready() {
            // Built with everything else at the first full sync.
            self.classes.insert(key, ClassState { proxy, out: None });
            return;
        }
        let mut found = Vec::new();
        let state = self.compile_class(proxy, &mut found);
        self.publish(&state);
        self.classes.insert(key, state);
        if !found.is_empty() {
            self.derived_diagnostics.extend(found);
            self.publish_diagnostics();
        }
    }

    /// Compiles a class, or reuses what another class of the same compile key got from the
    /// current view.
    fn compile_class(&mut self, proxy: Proxy, found: &mut Vec<Diagnostic>) -> ClassState {
        let key = compile::compile_key(&self.view, &proxy);
        let out = match self.compiled.get(&key) {
            Some(out) => out.clone(),
            None => {
                let routes_key = compile::routes_key(&self.view, &proxy);
                let routes = match self.compiled_routes.get(&routes_key) {
                    Some(routes) => routes.clone(),
                    None => {
                        let routes = Arc::new(compile::compile_routes(&self.view, &proxy));
                        found.extend(routes.errors.iter().cloned());
                        self.compiled_routes.insert(routes_key, routes.clone());
                        routes
                    }
                };
                let out = Arc::new(compile::compile_listeners(&proxy, &routes));
                self.compiled.insert(key, out.clone());
                out
            }
        };
        ClassState {
            proxy,
            out: Some(out),
        }
    }

    fn publish(&mut self, state: &ClassState) {
        let Some(out) = &state.out else {
            return;
        };
        let class = state.proxy.class_key();
        let own_endpoints = compile::locality_key(&self.shared, &state.proxy, out).map(|key| {
            self.locality_endpoints
                .entry(key)
                .or_insert_with_key(|key| compile::locality_endpoints(&self.shared, key))
                .clone()
        });
        match compile::assemble_with_endpoints(class.clone(), &self.shared, out, own_endpoints) {
            Ok(mut s) => {
                if let Some(t) = self.changed_at {
                    s.changed = t;
                }
                let version = s.version.clone();
                if self.cache.publish(Arc::new(s)) {
                    debug!(%class, %version, "published");
                }
            }
            Err(e) => warn!(%class, error = %e,
                "snapshot is inconsistent; the last good one keeps serving"),
        }
    }

    /// Sets the mesh-wide `outboundTrafficPolicy` (before the first recompute: every view
    /// built after carries it on).
    pub fn with_outbound_mode(mut self, mode: meshpilot_model::OutboundTrafficMode) -> Self {
        let mut view = View::default();
        view.outbound_mode = mode;
        view.export_defaults = self.view.export_defaults.clone();
        self.view = Arc::new(view);
        self
    }

    /// Sets the mesh-wide `exportTo` of objects that set none (MeshConfig's
    /// `default*ExportTo`), before the first recompute like [`PushEngine::with_outbound_mode`].
    pub fn with_export_defaults(mut self, defaults: meshpilot_model::ExportDefaults) -> Self {
        let mut view = View::default();
        view.outbound_mode = self.view.outbound_mode;
        view.export_defaults = Arc::new(defaults);
        self.view = Arc::new(view);
        self
    }

    fn recompute(&mut self, changes: Changes, full: bool) {
        if !self.ready() {
            // Nothing is served yet, but what a held source refused is logged and shown.
            self.publish_diagnostics();
            return;
        }
        self.pushes += 1;
        let started = std::time::Instant::now();
        for k in self.cache.remove_unused() {
            self.classes.remove(&k);
        }
        self.view = Arc::new(if full {
            self.index.build_view(&self.domain, Some(&self.view))
        } else {
            self.index
                .build_view_after(&changes, &self.domain, &self.view)
        });
        let view_done = std::time::Instant::now();
        let endpoints_only = !full && changes.endpoints_only();
        if !endpoints_only {
            self.compiled.clear();
            self.compiled_routes.clear();
        }
        match compile::compile_shared_cached(&self.view, &mut self.shared_cache) {
            Ok(shared) => {
                self.shared = shared;
                self.locality_endpoints.clear();
            }
            Err(e) => {
                // Cannot happen by construction; if it does, the last good set keeps serving.
                warn!(error = %e, "shared clusters/endpoints are inconsistent; keeping the last good ones");
                self.shared_cache = ClustersAndEndpointsCache::default();
            }
        }
        let shared_done = std::time::Instant::now();
        let mut found: Vec<Diagnostic> = self.view.diagnostics.clone();
        found.extend(self.index.conflicts());
        let keys: Vec<ClassKey> = self.classes.keys().cloned().collect();
        for key in keys {
            let Some(old) = self.classes.remove(&key) else {
                continue;
            };
            let state = if endpoints_only && old.out.is_some() {
                if let Some(out) = &old.out {
                    found.extend(out.errors.iter().cloned());
                }
                old
            } else {
                self.compile_class(old.proxy, &mut found)
            };
            self.publish(&state);
            self.classes.insert(key, state);
        }
        self.changed_at = None;
        self.derived_diagnostics = found.into_iter().collect();
        self.publish_diagnostics();
        info!(
            classes = self.classes.len(),
            clusters = self.shared.clusters.items.len(),
            endpoints_only,
            view_us = view_done.duration_since(started).as_micros() as u64,
            shared_us = shared_done.duration_since(view_done).as_micros() as u64,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "recomputed"
        );
    }

    /// Logs what changed in the diagnostics (each once when it appears, once when its
    /// input is fixed) and publishes them with the current view.
    fn publish_diagnostics(&mut self) {
        let mut all: BTreeSet<&Diagnostic> = self.derived_diagnostics.iter().collect();
        all.extend(self.source_diagnostics.values().flatten());
        self.log.update(all.iter().copied());
        let state = ServingState {
            view: self.view.clone(),
            diagnostics: all.into_iter().cloned().collect(),
            ready: self.ready(),
            pushes: self.pushes,
        };
        self.serving.send_replace(Arc::new(state));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use meshpilot_model::MetadataValue;
    use meshpilot_model::test_helpers::*;
    use meshpilot_snapshot::{Snapshot, XdsType};

    fn sidecar(ip: &str, app: &str, hash: &str) -> Proxy {
        let mut md = BTreeMap::new();
        md.insert(
            "LABELS".to_string(),
            MetadataValue::Map(labels(&[("app", app), ("pod-template-hash", hash)])),
        );
        Proxy::parse(
            &format!("sidecar~{ip}~{app}-{hash}.default~default.svc.cluster.local"),
            &md,
        )
        .expect("valid node id")
    }

    /// A synced engine whose files hold one Service, `web` on port 80.
    fn engine_serving_web() -> (Arc<SnapshotCache>, PushEngine) {
        let (cache, _builds) = SnapshotCache::new();
        let (mut engine, _status) = PushEngine::new(
            cache.clone(),
            "cluster.local".into(),
            Debounce {
                quiet: Duration::from_millis(1),
                max: Duration::from_millis(1),
                leading: true,
            },
            BTreeSet::from([SourceId::Files]),
        );
        let objects = vec![Arc::new(mk_service("default", "web", &[80]))];
        engine.apply(SourceEvent::Reset {
            source: SourceId::Files,
            objects,
            diagnostics: vec![],
        });
        engine.recompute(Changes::default(), true);
        (cache, engine)
    }

    #[test]
    fn classes_differing_only_in_unselected_labels_share_compiled_listeners() {
        let (cache, mut engine) = engine_serving_web();
        // Both selected by `web` (the same inbound side); no selector reads the hash.
        let (a, b) = (
            sidecar("10.0.0.1", "web", "a"),
            sidecar("10.0.0.2", "web", "b"),
        );
        let (_ra, _rb) = (cache.subscribe(&a), cache.subscribe(&b));
        engine.build_class(a.clone());
        engine.build_class(b.clone());
        let sa = cache.get(&a.class_key()).expect("snapshot of a");
        let sb = cache.get(&b.class_key()).expect("snapshot of b");
        assert!(Arc::ptr_eq(
            sa.set(XdsType::Listener),
            sb.set(XdsType::Listener)
        ));
        assert!(Arc::ptr_eq(sa.set(XdsType::Route), sb.set(XdsType::Route)));
        assert_eq!(engine.compiled.len(), 1, "compiled once");
    }

    /// A pod of `app` at `ip` in `locality`.
    fn pod_in(app: &str, ip: &str, locality: &str) -> Arc<meshpilot_model::Object> {
        let mut o = mk_pod("default", ip, ip, &[("app", app)]);
        if let meshpilot_model::Body::Pod(w) = &mut o.body {
            w.locality = Some(locality.to_string());
        }
        Arc::new(o)
    }

    /// Proxies in different localities share compiled listeners and, for clusters without
    /// locality balancing, the shared endpoint bytes; a cluster whose rule has outlier
    /// detection gets one assignment per client locality (its local endpoints first), and no
    /// other cluster does.
    #[test]
    fn only_locality_balanced_clusters_get_assignments_per_client_locality() {
        let (cache, mut engine) = engine_serving_web();
        let mut rule = mk_destination_rule("default", "api", "api", &[]);
        if let meshpilot_model::Body::DestinationRule(dr) = &mut rule.body {
            dr.traffic_policy = Some(Box::new(meshpilot_model::TrafficPolicy {
                outlier_detection: Some(meshpilot_model::OutlierDetection::default()),
                ..Default::default()
            }));
        }
        engine.apply(SourceEvent::Reset {
            source: SourceId::Files,
            objects: vec![
                Arc::new(mk_service("default", "web", &[80])),
                Arc::new(mk_service("default", "api", &[80])),
                pod_in("web", "10.1.0.1", "r/z1"),
                pod_in("api", "10.2.0.1", "r/z1"),
                pod_in("api", "10.2.0.2", "r/z2"),
                Arc::new(rule),
            ],
            diagnostics: vec![],
        });
        engine.recompute(Changes::default(), true);
        let at = |locality: &str| {
            let (region, zone) = locality.split_once('/').unwrap_or_default();
            sidecar("10.0.0.1", "client", "h").with_locality(region, zone, "")
        };
        let (a, b) = (at("r/z1"), at("r/z2"));
        let (_ra, _rb) = (cache.subscribe(&a), cache.subscribe(&b));
        engine.build_class(a.clone());
        engine.build_class(b.clone());
        assert_ne!(a.class_key(), b.class_key());
        let sa = cache.get(&a.class_key()).expect("snapshot of a");
        let sb = cache.get(&b.class_key()).expect("snapshot of b");
        assert!(Arc::ptr_eq(
            sa.set(XdsType::Listener),
            sb.set(XdsType::Listener)
        ));
        assert_eq!(engine.compiled.len(), 1, "listeners compiled once");
        let eds = |s: &Snapshot, name: &str| s.get(XdsType::Endpoint).items[name].clone();
        let web = "outbound|80||web.default.svc.cluster.local";
        let api = "outbound|80||api.default.svc.cluster.local";
        assert!(Arc::ptr_eq(&eds(&sa, web), &eds(&sb, web)), "shared");
        assert!(Arc::ptr_eq(
            &eds(&sa, web),
            &engine.shared.endpoints.items[web]
        ));
        assert_ne!(eds(&sa, api).body, eds(&sb, api).body, "per locality");
        // Each locality group's `region/zone` and priority.
        let priorities = |body: &[u8]| -> Vec<(String, u32)> {
            use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
            use prost::Message;
            let cla = ClusterLoadAssignment::decode(body).expect("an assignment");
            cla.endpoints
                .iter()
                .map(|g| {
                    let l = g.locality.clone().unwrap_or_default();
                    (format!("{}/{}", l.region, l.zone), g.priority)
                })
                .collect()
        };
        assert_eq!(
            priorities(&eds(&sa, api).body),
            [("r/z1".into(), 0), ("r/z2".into(), 1)]
        );
        assert_eq!(
            priorities(&eds(&sb, api).body),
            [("r/z1".into(), 1), ("r/z2".into(), 0)]
        );
    }

    #[test]
    fn proxies_binding_their_own_ip_share_routes_but_not_listeners() {
        let (cache, mut engine) = engine_serving_web();
        let none_mode = |ip: &str| {
            let mut md = BTreeMap::new();
            md.insert(
                "INTERCEPTION_MODE".to_string(),
                MetadataValue::String("NONE".into()),
            );
            Proxy::parse(
                &format!("sidecar~{ip}~app.default~default.svc.cluster.local"),
                &md,
            )
            .expect("valid node id")
        };
        let (a, b) = (none_mode("10.0.0.1"), none_mode("10.0.0.2"));
        let (_ra, _rb) = (cache.subscribe(&a), cache.subscribe(&b));
        engine.build_class(a.clone());
        engine.build_class(b.clone());
        let sa = cache.get(&a.class_key()).expect("snapshot of a");
        let sb = cache.get(&b.class_key()).expect("snapshot of b");
        assert!(Arc::ptr_eq(sa.set(XdsType::Route), sb.set(XdsType::Route)));
        let names = |s: &Snapshot| -> Vec<String> {
            s.get(XdsType::Listener)
                .items
                .keys()
                .map(|k| k.to_string())
                .collect()
        };
        assert_eq!(names(&sa), vec!["10.0.0.1_80".to_string()]);
        assert_eq!(names(&sb), vec!["10.0.0.2_80".to_string()]);
        assert_eq!(engine.compiled.len(), 2, "listeners per address");
        assert_eq!(engine.compiled_routes.len(), 1, "routes once");
    }

    /// A held source's diagnostics are shown while nothing is served; its first Reset then
    /// makes the engine ready.
    #[test]
    fn a_held_source_shows_its_diagnostics_and_is_not_synced() {
        let (cache, _builds) = SnapshotCache::new();
        let (mut engine, status) = PushEngine::new(
            cache,
            "cluster.local".into(),
            Debounce {
                quiet: Duration::from_millis(1),
                max: Duration::from_millis(1),
                leading: true,
            },
            BTreeSet::from([SourceId::Files]),
        );
        let broken = Diagnostic::error(
            meshpilot_model::Stage::Parse,
            meshpilot_model::Origin::File("r.yaml".into()),
            meshpilot_model::ObjectRef::default(),
            "",
            "invalid YAML",
        );
        let (changes, diagnostics_changed) = engine.apply(SourceEvent::Held {
            source: SourceId::Files,
            diagnostics: vec![broken.clone()],
        });
        assert!(changes.is_empty() && diagnostics_changed);
        engine.recompute(changes, false);
        let shown = status.borrow().clone();
        assert!(!shown.ready);
        assert_eq!(shown.diagnostics, [broken]);
        engine.apply(SourceEvent::Reset {
            source: SourceId::Files,
            objects: vec![Arc::new(mk_service("default", "web", &[80]))],
            diagnostics: Vec::new(),
        });
        assert!(engine.ready());
    }
}
