//! The debounce rule as a proxy sees it, on tokio's paused clock: a change after a quiet
//! period is published at once, a burst costs two pushes, a steady stream is pushed at least
//! every maximum delay, a removal and a change right after the first full sync wait for quiet,
//! and with the rule off a change waits the quiet period.
//!
//! The clock only moves when every task waits on a timer, so the times recorded here are exact:
//! a push made at once is recorded at the instant its change was sent.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::task::JoinHandle;

use super::*;
use meshpilot_model::test_helpers::*;
use meshpilot_snapshot::{Snapshot, XdsType};

const QUIET: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_millis(1000);

/// A push engine running on its own task, one proxy subscribed to its class.
struct RunningEngine {
    events: mpsc::Sender<SourceEvent>,
    snapshot: watch::Receiver<Option<Arc<Snapshot>>>,
    /// Each recompute after the first full sync: when it happened and the engine's push count.
    pushes: Arc<Mutex<Vec<(Instant, u64)>>>,
    shutdown: Shutdown,
    engine: JoinHandle<()>,
    recorder: JoinHandle<()>,
}

impl RunningEngine {
    /// Starts an engine with `leading` as given and waits for its first full sync (one
    /// service, `web`) to reach the subscribed proxy.
    async fn start(leading: bool) -> RunningEngine {
        let (cache, builds) = SnapshotCache::new();
        let (engine, mut serving) = PushEngine::new(
            cache.clone(),
            "cluster.local".into(),
            Debounce {
                quiet: QUIET,
                max: MAX,
                leading,
            },
            BTreeSet::from([SourceId::Files]),
        );
        let proxy = Proxy::parse(
            "sidecar~10.0.0.1~client.default~default.svc.cluster.local",
            &BTreeMap::new(),
        )
        .expect("valid node id");
        let mut snapshot = cache.subscribe(&proxy);
        let (events, events_rx) = mpsc::channel(64);
        let shutdown = Shutdown::new();
        let engine = tokio::spawn(engine.run(events_rx, builds, shutdown.clone()));
        events
            .send(SourceEvent::Reset {
                source: SourceId::Files,
                objects: vec![Arc::new(mk_service("default", "web", &[80]))],
                diagnostics: vec![],
            })
            .await
            .expect("engine running");
        snapshot
            .wait_for(|s| s.is_some())
            .await
            .expect("first snapshot");
        serving
            .wait_for(|s| s.ready && s.pushes == 1)
            .await
            .expect("first full sync");
        serving.mark_unchanged();
        let pushes = Arc::new(Mutex::new(Vec::new()));
        let recorder = {
            let pushes = pushes.clone();
            tokio::spawn(async move {
                while serving.changed().await.is_ok() {
                    let count = serving.borrow_and_update().pushes;
                    pushes
                        .lock()
                        .expect("recorder lock")
                        .push((Instant::now(), count));
                }
            })
        };
        RunningEngine {
            events,
            snapshot,
            pushes,
            shutdown,
            engine,
            recorder,
        }
    }

    /// Adds a service named `name` (one change).
    async fn add_service(&self, name: &str) {
        self.events
            .send(SourceEvent::Update {
                source: SourceId::Files,
                upserts: vec![Arc::new(mk_service("default", name, &[80]))],
                deletes: vec![],
                diagnostics: vec![],
            })
            .await
            .expect("engine running");
    }

    /// Deletes the service named `name` (one change).
    async fn delete_service(&self, name: &str) {
        self.events
            .send(SourceEvent::Update {
                source: SourceId::Files,
                upserts: vec![],
                deletes: vec![mk_service("default", name, &[80]).key()],
                diagnostics: vec![],
            })
            .await
            .expect("engine running");
    }

    /// The pushes made since the first full sync, as times after `start` and push counts.
    fn pushes_since(&self, start: Instant) -> Vec<(Duration, u64)> {
        self.pushes
            .lock()
            .expect("recorder lock")
            .iter()
            .map(|(at, count)| (at.duration_since(start), *count))
            .collect()
    }

    /// Whether the subscribed proxy's snapshot holds the cluster of service `name`.
    fn has_cluster(&self, name: &str) -> bool {
        let cluster = format!("outbound|80||{name}.default.svc.cluster.local");
        self.snapshot
            .borrow()
            .as_ref()
            .is_some_and(|s| s.get(XdsType::Cluster).items.contains_key(cluster.as_str()))
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.engine.await.expect("engine ends on shutdown");
        self.recorder.await.expect("recorder ends with the engine");
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn an_isolated_change_is_published_without_waiting_the_debounce() {
    let mut engine = RunningEngine::start(true).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    engine.snapshot.mark_unchanged();
    let start = Instant::now();
    engine.add_service("a").await;
    engine.snapshot.changed().await.expect("a new snapshot");
    assert_eq!(start.elapsed(), Duration::ZERO, "published at once");
    assert!(engine.has_cluster("a"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        engine.pushes_since(start),
        vec![(ms(0), 2)],
        "one push, no second"
    );
    engine.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_burst_costs_one_push_at_once_and_one_after_the_quiet_period() {
    let engine = RunningEngine::start(true).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let start = Instant::now();
    // Ten changes 10 ms apart, all within the debounce window of the one before.
    for i in 0..10 {
        engine.add_service(&format!("burst-{i}")).await;
        tokio::time::sleep(ms(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        engine.pushes_since(start),
        // The first change at once; the other nine together, 100 ms after the last (at 90 ms).
        vec![(ms(0), 2), (ms(190), 3)],
    );
    assert!((0..10).all(|i| engine.has_cluster(&format!("burst-{i}"))));
    engine.stop().await;
}

#[tokio::test(start_paused = true)]
async fn changes_that_arrive_together_after_a_quiet_period_cost_two_pushes() {
    let engine = RunningEngine::start(true).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let start = Instant::now();
    // Queued before the engine runs again, as changes that arrive during a recompute are.
    engine.add_service("a").await;
    engine.add_service("b").await;
    engine.add_service("c").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(engine.pushes_since(start), vec![(ms(0), 2), (ms(100), 3)]);
    assert!(engine.has_cluster("a") && engine.has_cluster("b") && engine.has_cluster("c"));
    engine.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_steady_stream_is_still_pushed_within_the_maximum_delay() {
    let engine = RunningEngine::start(true).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let start = Instant::now();
    // A change every 30 ms for 2.4 s: never 100 ms of quiet until it stops.
    for i in 0..80 {
        engine.add_service(&format!("stream-{i}")).await;
        tokio::time::sleep(ms(30)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        engine.pushes_since(start),
        vec![
            // The first change, at once.
            (ms(0), 2),
            // The burst that began at 30 ms, 1 s after its first change.
            (ms(1030), 3),
            // The next began 20 ms after that push (not quiet long enough to go at once).
            (ms(2050), 4),
            // The last, 100 ms after the stream stopped (last change at 2370 ms).
            (ms(2470), 5),
        ],
    );
    engine.stop().await;
}

#[tokio::test(start_paused = true)]
async fn with_the_rule_off_every_change_waits_the_quiet_period() {
    let mut engine = RunningEngine::start(false).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    engine.snapshot.mark_unchanged();
    let start = Instant::now();
    engine.add_service("a").await;
    engine.snapshot.changed().await.expect("a new snapshot");
    assert_eq!(
        start.elapsed(),
        QUIET,
        "istiod's timing: a change waits for quiet"
    );
    assert!(engine.has_cluster("a"));

    tokio::time::sleep(Duration::from_secs(5)).await;
    let burst = Instant::now();
    for i in 0..10 {
        engine.add_service(&format!("burst-{i}")).await;
        tokio::time::sleep(ms(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        engine.pushes_since(start),
        vec![(ms(100), 2), (burst.duration_since(start) + ms(190), 3)],
        "a burst is pushed once, after the quiet period"
    );
    engine.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_removal_waits_for_quiet_so_a_replacement_never_reaches_proxies_half_done() {
    let mut engine = RunningEngine::start(true).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    engine.snapshot.mark_unchanged();
    let start = Instant::now();
    // An editor renames the file away, then writes the new one 20 ms later.
    engine.delete_service("web").await;
    tokio::time::sleep(ms(20)).await;
    engine.add_service("web").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        engine.pushes_since(start),
        vec![(ms(120), 2)],
        "one push, after the quiet period"
    );
    assert!(
        !engine.snapshot.has_changed().expect("engine running"),
        "the service never left the proxy"
    );
    assert!(engine.has_cluster("web"));

    // A removal on its own is pushed too, after the quiet period.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let removed = Instant::now();
    engine.delete_service("web").await;
    engine.snapshot.changed().await.expect("a new snapshot");
    assert_eq!(removed.elapsed(), QUIET);
    assert!(!engine.has_cluster("web"));
    engine.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_change_right_after_the_first_full_sync_is_debounced() {
    // The first full sync counts as a push: what follows at once is a burst (a relist's
    // stragglers, a watcher's first events) and waits for quiet.
    let engine = RunningEngine::start(true).await;
    let start = Instant::now();
    engine.add_service("a").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(engine.pushes_since(start), vec![(ms(100), 2)]);
    assert!(engine.has_cluster("a"));
    engine.stop().await;
}
