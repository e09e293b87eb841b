//! The push engine: the only writer of the index. It applies source events, debounces bursts
//! (quiet period, bounded by a maximum delay), recompiles what a change touches and publishes a
//! snapshot per proxy class — shared clusters/endpoints once per change, listeners/routes once
//! per class, and only endpoints when nothing but endpoints moved. Snapshots whose content is
//! unchanged reach no proxy (the cache compares content hashes).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use meshpilot_compile::{
    self as compile, ClassOutput, ClustersAndEndpoints, ClustersAndEndpointsCache,
};
use meshpilot_index::{Changes, Index, View};
use meshpilot_model::{ClassKey, Proxy};
use meshpilot_snapshot::SnapshotCache;
use meshpilot_source::{InputError, SourceEvent, SourceId};
use meshpilot_telemetry::metrics;
use tokio_util::sync::CancellationToken as Shutdown;

/// What the debug endpoints read: the current view and every known error.
#[derive(Debug, Default)]
pub struct Status {
    pub view: Arc<View>,
    pub input_errors: Vec<InputError>,
    pub compile_errors: Vec<String>,
    /// True once every source has synced and the first snapshots can be built.
    pub ready: bool,
    /// Number of recomputes so far.
    pub pushes: u64,
}

/// Debounce settings.
#[derive(Debug, Clone, Copy)]
pub struct Debounce {
    pub quiet: Duration,
    pub max: Duration,
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
    input_errors: HashMap<SourceId, Vec<InputError>>,
    classes: HashMap<ClassKey, ClassState>,
    /// Listeners and routes compiled from the current view, by compile key (see
    /// [`compile::compile_key`]): classes differing only in labels no selector reads share one.
    compiled: HashMap<ClassKey, Arc<ClassOutput>>,
    view: Arc<View>,
    shared: ClustersAndEndpoints,
    shared_cache: ClustersAndEndpointsCache,
    logged: BTreeSet<String>,
    status: watch::Sender<Arc<Status>>,
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
    ) -> (PushEngine, watch::Receiver<Arc<Status>>) {
        let (status, rx) = watch::channel(Arc::new(Status::default()));
        (
            PushEngine {
                cache,
                index: Index::new(),
                domain,
                debounce,
                expected,
                synced: BTreeSet::new(),
                input_errors: HashMap::new(),
                classes: HashMap::new(),
                compiled: HashMap::new(),
                view: Arc::new(View::default()),
                shared: ClustersAndEndpoints::default(),
                shared_cache: ClustersAndEndpointsCache::default(),
                logged: BTreeSet::new(),
                status,
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
                        let was_ready = self.ready();
                        let changes = self.apply(ev);
                        if !was_ready && self.ready() {
                            // First full sync: build at once, no debounce.
                            pending.merge(changes);
                            self.recompute(std::mem::take(&mut pending), true);
                            first_change = None;
                            deadline = None;
                            continue;
                        }
                        if changes.is_empty() && !self.errors_changed() {
                            continue;
                        }
                        pending.merge(changes);
                        let now = Instant::now();
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
                    }
                }
            }
            debug!("push engine stopped");
        }
        .instrument(span)
        .await
    }

    fn apply(&mut self, ev: SourceEvent) -> Changes {
        match ev {
            SourceEvent::Reset {
                source,
                objects,
                errors,
            } => {
                self.synced.insert(source);
                self.input_errors.insert(source, errors);
                self.index.reset_shared(&source.to_string(), objects)
            }
            SourceEvent::Update {
                source,
                upserts,
                deletes,
                errors,
            } => {
                self.input_errors.insert(source, errors);
                self.index.update(&source.to_string(), upserts, &deletes)
            }
            SourceEvent::Apply { source, object } => self.index.apply(&source.to_string(), *object),
            SourceEvent::Delete { source, key } => self.index.delete(&source.to_string(), &key),
            SourceEvent::Errors { source, errors } => {
                self.input_errors.insert(source, errors);
                Changes::default()
            }
        }
    }

    /// True when the set of input errors differs from what was last logged (a fix or a new
    /// mistake that did not change any object still deserves a log line).
    fn errors_changed(&self) -> bool {
        let now: BTreeSet<String> = self
            .input_errors
            .values()
            .flatten()
            .map(|e| e.to_string())
            .collect();
        let logged_inputs: BTreeSet<String> = self
            .logged
            .iter()
            .filter(|l| l.starts_with("input:"))
            .map(|l| l.trim_start_matches("input:").to_string())
            .collect();
        now != logged_inputs
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
        let mut errors = Vec::new();
        let state = self.compile_class(proxy, &mut errors);
        self.publish(&state);
        self.classes.insert(key, state);
        self.add_errors(errors);
    }

    /// Compiles a class, or reuses what another class of the same compile key got from the
    /// current view.
    fn compile_class(&mut self, proxy: Proxy, errors: &mut Vec<String>) -> ClassState {
        let key = compile::compile_key(&self.view, &proxy);
        let out = match self.compiled.get(&key) {
            Some(out) => out.clone(),
            None => {
                let out = Arc::new(compile::compile_class(&self.view, &proxy));
                errors.extend(out.errors.iter().map(|e| format!("compile:{e}")));
                self.compiled.insert(key, out.clone());
                out
            }
        };
        ClassState {
            proxy,
            out: Some(out),
        }
    }

    fn publish(&self, state: &ClassState) {
        let Some(out) = &state.out else {
            return;
        };
        let class = state.proxy.class_key();
        match compile::assemble(class.clone(), &self.shared, out) {
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

    fn recompute(&mut self, changes: Changes, full: bool) {
        if !self.ready() {
            return;
        }
        self.pushes += 1;
        let started = std::time::Instant::now();
        for k in self.cache.remove_unused() {
            self.classes.remove(&k);
        }
        self.view = Arc::new(if full {
            self.index.view(&self.domain, Some(&self.view))
        } else {
            self.index.view_after(&changes, &self.domain, &self.view)
        });
        let view_done = std::time::Instant::now();
        let endpoints_only = !full && changes.endpoints_only();
        if !endpoints_only {
            self.compiled.clear();
        }
        match compile::compile_shared_cached(&self.view, &mut self.shared_cache) {
            Ok(shared) => self.shared = shared,
            Err(e) => {
                // Cannot happen by construction; if it does, the last good set keeps serving.
                warn!(error = %e, "shared clusters/endpoints are inconsistent; keeping the last good ones");
                self.shared_cache = ClustersAndEndpointsCache::default();
            }
        }
        let shared_done = std::time::Instant::now();
        let mut errors: Vec<String> = self
            .view
            .errors
            .iter()
            .map(|e| format!("config:{e}"))
            .collect();
        let keys: Vec<ClassKey> = self.classes.keys().cloned().collect();
        for key in keys {
            let Some(old) = self.classes.remove(&key) else {
                continue;
            };
            let state = if endpoints_only && old.out.is_some() {
                if let Some(out) = &old.out {
                    errors.extend(out.errors.iter().map(|e| format!("compile:{e}")));
                }
                old
            } else {
                self.compile_class(old.proxy, &mut errors)
            };
            self.publish(&state);
            self.classes.insert(key, state);
        }
        self.changed_at = None;
        self.log_errors(errors);
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

    /// Adds errors found outside a full recompute (a new class): logs the new ones, resolves
    /// nothing.
    fn add_errors(&mut self, errors: Vec<String>) {
        let mut all: Vec<String> = self
            .logged
            .iter()
            .filter(|e| !e.starts_with("input:"))
            .cloned()
            .collect();
        all.extend(errors);
        self.log_errors(all);
    }

    /// Logs each error once when it appears and once when it is gone.
    fn log_errors(&mut self, errors: Vec<String>) {
        let mut now: BTreeSet<String> = errors.into_iter().collect();
        for e in self.input_errors.values().flatten() {
            now.insert(format!("input:{e}"));
        }
        // Compile errors are per class: keep those of classes not recompiled this round.
        for e in now.difference(&self.logged) {
            warn!("{}", e.split_once(':').map(|(_, m)| m).unwrap_or(e));
        }
        for e in self.logged.difference(&now) {
            info!(
                "resolved: {}",
                e.split_once(':').map(|(_, m)| m).unwrap_or(e)
            );
        }
        self.logged = now;
        let status = Status {
            view: self.view.clone(),
            input_errors: self.input_errors.values().flatten().cloned().collect(),
            compile_errors: self
                .logged
                .iter()
                .filter(|e| !e.starts_with("input:"))
                .cloned()
                .collect(),
            ready: self.ready(),
            pushes: self.pushes,
        };
        self.status.send_replace(Arc::new(status));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use meshpilot_model::MetadataValue;
    use meshpilot_model::test_helpers::*;
    use meshpilot_snapshot::XdsType;

    fn sidecar(ip: &str, app: &str) -> Proxy {
        let mut md = BTreeMap::new();
        md.insert(
            "LABELS".to_string(),
            MetadataValue::Map(labels(&[("app", app)])),
        );
        Proxy::parse(
            &format!("sidecar~{ip}~{app}.default~default.svc.cluster.local"),
            &md,
        )
        .expect("valid node id")
    }

    #[test]
    fn classes_differing_only_in_unselected_labels_share_compiled_listeners() {
        let (cache, _builds) = SnapshotCache::new();
        let (mut engine, _status) = PushEngine::new(
            cache.clone(),
            "cluster.local".into(),
            Debounce {
                quiet: Duration::from_millis(1),
                max: Duration::from_millis(1),
            },
            BTreeSet::from([SourceId::Files]),
        );
        let objects = vec![Arc::new(mk_service("default", "web", &[80]))];
        engine.apply(SourceEvent::Reset {
            source: SourceId::Files,
            objects,
            errors: vec![],
        });
        engine.recompute(Changes::default(), true);
        let (a, b) = (sidecar("10.0.0.1", "a"), sidecar("10.0.0.2", "b"));
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
}
