//! Watching the manifest directories: reload on change and send the file state to the push
//! engine — the whole set once as a [`SourceEvent::Reset`], then each reload's differences as one
//! [`SourceEvent::Update`] — logging each refused input once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::{Difference, InputLimits, Loaded, Loader, is_editor_temp};
use crate::{SourceEvent, SourceId};
use meshpilot_model::{Diagnostic, ObjectMap, Severity, Stage};
use tokio_util::sync::CancellationToken as Shutdown;

/// How long a file must be quiet before events that do not end a save (a creation, a write
/// not yet closed, a change of mode) become a reload: long enough to gather the events of one
/// save, short enough not to add to the push engine's debounce, which is what coalesces a
/// burst of edits into one recompute. Events that end a save (a file closed after writing, a
/// rename, a removal) reload at once. (`--debounce-ms` below this shortens it too:
/// [`run_with_settle`].)
pub const SETTLE: Duration = Duration::from_millis(10);
/// At most this many quiet periods pass between the first unsettled event and its reload,
/// however often the file keeps changing.
const SETTLE_MAX: u32 = 10;
/// How often the watched roots are checked for having been deleted, recreated or replaced
/// (an inotify watch dies with its directory). Also the poll period if watching fails.
const ROOT_CHECK: Duration = Duration::from_secs(1);

/// When the file source first syncs: the rule that keeps a restart from taking config away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FirstSync {
    /// Only once a load has no input error (every file read, parsed and converted): until
    /// then the source sends [`SourceEvent::Held`] with its errors, so nothing is served and
    /// proxies that reconnect after a restart keep what they hold. After the first sync a bad
    /// file keeps its last good objects, as always.
    #[default]
    WhenClean,
    /// At once, serving what did load (`--serve-partial-config`): what a file that cannot be
    /// read would define is missing until it is fixed.
    AtOnce,
}

/// Loads `dirs`, sends a [`SourceEvent::Reset`] once a load is clean ([`FirstSync::WhenClean`]),
/// then reloads and sends an [`SourceEvent::Update`] with what changed whenever something below
/// them changes (a reload that changes nothing sends nothing).
/// Returns on shutdown or when the receiver is gone.
pub async fn run(dirs: Vec<PathBuf>, tx: mpsc::Sender<SourceEvent>, shutdown: Shutdown) {
    run_with_settle(
        dirs,
        SETTLE,
        InputLimits::default(),
        FirstSync::default(),
        tx,
        shutdown,
    )
    .await;
}

/// [`run`] with the quiet period of file events set to `settle` (at least 1 ms), the size
/// limits on files set to `limits` and the rule for the first sync `first_sync`.
pub async fn run_with_settle(
    dirs: Vec<PathBuf>,
    settle: Duration,
    limits: InputLimits,
    first_sync: FirstSync,
    tx: mpsc::Sender<SourceEvent>,
    shutdown: Shutdown,
) {
    let span = info_span!("files", dirs = ?dirs);
    watch_loop(
        dirs,
        settle.max(Duration::from_millis(1)),
        limits,
        first_sync,
        tx,
        shutdown,
    )
    .instrument(span)
    .await;
}

async fn watch_loop(
    dirs: Vec<PathBuf>,
    settle: Duration,
    limits: InputLimits,
    first_sync: FirstSync,
    tx: mpsc::Sender<SourceEvent>,
    shutdown: Shutdown,
) {
    // Capacity 1: a pending signal already means "reload"; more would only repeat it.
    let (changed_tx, mut changed_rx) = mpsc::channel::<()>(1);
    let mut watch = DirWatch::new(&dirs, changed_tx);
    // Watches are set up before the first load, so nothing written meanwhile is missed.
    watch.sync_roots();

    let mut state = State {
        loader: Loader::with_limits(dirs, limits),
        last_sent: None,
        first_sync,
        held: None,
    };
    if !state.reload_and_send(None, &tx, &shutdown).await {
        return;
    }

    let mut tick = tokio::time::interval(ROOT_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    // When the unsettled events seen so far are due for a reload.
    let mut settle_at: Option<Instant> = None;
    loop {
        let settled = async {
            match settle_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let due = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(()) = changed_rx.recv() => true,
            _ = settled => true,
            _ = tick.tick() => false,
        };
        let reload = if due {
            match watch.take_due(settle, Instant::now()) {
                Due::Now(hint, next) => {
                    settle_at = next;
                    let roots_changed = watch.sync_roots();
                    Some(hint.filter(|_| !roots_changed))
                }
                Due::At(at) => {
                    settle_at = Some(at);
                    None
                }
                Due::Nothing => {
                    settle_at = None;
                    None
                }
            }
        } else {
            (watch.sync_roots() || watch.polling()).then_some(None)
        };
        if let Some(only) = reload
            && !state.reload_and_send(only, &tx, &shutdown).await
        {
            break;
        }
    }
    debug!("file source stopped");
}

struct State {
    loader: Loader,
    /// What the push engine holds from this source (the objects and errors of the last event),
    /// so a reload sends only what differs, and nothing when nothing does.
    last_sent: Option<Loaded>,
    first_sync: FirstSync,
    /// The errors last sent in a [`SourceEvent::Held`], while the first sync waits for a
    /// clean load.
    held: Option<Vec<Diagnostic>>,
}

/// True when a load's errors mean some input's objects are unknown: a file or directory that
/// could not be read or parsed, a document refused for its size, an object that did not
/// convert. (Warnings, such as a definition shadowed by a later file, lose nothing.)
pub(super) fn loses_inputs(errors: &[Diagnostic]) -> bool {
    errors
        .iter()
        .any(|d| d.severity == Severity::Error && d.stage == Stage::Parse)
}

/// What one reload changed against what was last sent.
pub(super) fn difference(before: &ObjectMap, after: &ObjectMap) -> Difference {
    let upserts = after
        .iter()
        .filter(|(key, object)| {
            before
                .get(*key)
                .is_none_or(|held| !Arc::ptr_eq(held, object) && **held != ***object)
        })
        .map(|(_, object)| object.clone())
        .collect();
    let deletes = before
        .keys()
        .filter(|key| !after.contains_key(*key))
        .cloned()
        .collect();
    (upserts, deletes)
}

impl State {
    /// Reloads (everything, or with `only` just the files file events named) off the async
    /// runtime and sends what changed: the whole set as a Reset the first
    /// time, then an Update with only the objects that differ. Returns false when the task
    /// should end (shutdown, or the receiver is gone).
    async fn reload_and_send(
        &mut self,
        only: Option<BTreeSet<PathBuf>>,
        tx: &mpsc::Sender<SourceEvent>,
        shutdown: &Shutdown,
    ) -> bool {
        let dirs = self.loader.dirs().to_vec();
        let placeholder = Loader::with_limits(dirs.clone(), *self.loader.limits());
        let mut loader = std::mem::replace(&mut self.loader, placeholder);
        let loaded = tokio::task::spawn_blocking(move || {
            let result = match only.and_then(|paths| loader.load_changed(&paths)) {
                Some(result) => result,
                None => (loader.load_shared(), None),
            };
            (loader, result)
        })
        .await;
        let ((objects, errors), changed) = match loaded {
            Ok((loader, result)) => {
                self.loader = loader;
                result
            }
            Err(e) => {
                // Only a bug can get here (loading does not panic on input); the previous good
                // state is lost with the panicked task, so start again from the files.
                error!(error = %e, "reloading the config directories failed");
                return true;
            }
        };
        let event = match &self.last_sent {
            None if self.first_sync == FirstSync::WhenClean && loses_inputs(&errors) => {
                if self.held.as_ref() == Some(&errors) {
                    return true;
                }
                warn!(
                    errors = errors.len(),
                    "config directories not served yet: some inputs could not be read, and \
                     serving the rest would take their config from connected proxies; \
                     fix them (see /debug/diagnosticz) or pass --serve-partial-config"
                );
                self.held = Some(errors.clone());
                let held = SourceEvent::Held {
                    source: SourceId::Files,
                    diagnostics: errors,
                };
                return send(held, tx, shutdown).await;
            }
            None => SourceEvent::Reset {
                source: SourceId::Files,
                objects: objects.values().cloned().collect(),
                diagnostics: errors.clone(),
            },
            Some((before, before_errors)) => {
                // The loader's own account when it re-read only some files (what was last sent
                // is what it loaded last); else compare every object.
                let (upserts, deletes) = changed.unwrap_or_else(|| difference(before, &objects));
                if upserts.is_empty() && deletes.is_empty() && *before_errors == errors {
                    debug!("reload changed nothing");
                    return true;
                }
                SourceEvent::Update {
                    source: SourceId::Files,
                    upserts,
                    deletes,
                    diagnostics: errors.clone(),
                }
            }
        };
        info!(
            objects = objects.len(),
            errors = errors.len(),
            "config directories loaded"
        );
        self.held = None;
        self.last_sent = Some((objects, errors));
        send(event, tx, shutdown).await
    }
}

/// Sends one event; false when the task should end (shutdown, or the receiver is gone).
async fn send(event: SourceEvent, tx: &mpsc::Sender<SourceEvent>, shutdown: &Shutdown) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        sent = tx.send(event) => {
            if sent.is_err() {
                debug!("source event receiver is gone");
            }
            sent.is_ok()
        }
    }
}

/// The notify watches on the roots. A root's watch dies when the directory is deleted or
/// replaced (e.g. renamed over), so its watch is renewed when an event says a root went away,
/// and when the root's identity changes (checked every [`ROOT_CHECK`]).
struct DirWatch {
    watcher: Option<RecommendedWatcher>,
    roots: Vec<Root>,
    /// Set by the notify thread when a root itself was removed or renamed: a directory
    /// recreated at once may reuse the inode number, so the identity check alone can miss it.
    roots_dirty: Arc<AtomicBool>,
    /// What the events since the last reload named, for a reload of only those files.
    hint: Arc<std::sync::Mutex<Hint>>,
}

/// The file events since the last reload, by path: the paths whose save has ended are read
/// at once; a path whose save is still under way waits for quiet, so reading another file
/// never catches it half written.
#[derive(Debug, Default)]
struct Hint {
    /// Only a full reload will do (events were lost, or an event named no path).
    full: bool,
    /// Paths whose save has ended: read now.
    ended: BTreeSet<PathBuf>,
    /// When the first event of `full` or `ended` came.
    ended_at: Option<Instant>,
    /// Paths with a save under way.
    unsettled: BTreeSet<PathBuf>,
    /// When the first and the last event of `unsettled` came.
    unsettled_at: Option<(Instant, Instant)>,
}

impl Hint {
    /// Records an event; true when the watch loop must be woken (the first of its kind since
    /// the loop last took them: later ones are taken with it).
    fn add(&mut self, event: &Event, now: Instant) -> bool {
        let rescan = event.need_rescan() || event.paths.is_empty();
        if rescan || ends_a_save(event) {
            self.full |= rescan;
            for path in &event.paths {
                self.unsettled.remove(path);
                self.ended.insert(path.clone());
            }
            if self.unsettled.is_empty() {
                self.unsettled_at = None;
            }
            let wake = self.ended_at.is_none();
            self.ended_at.get_or_insert(now);
            return wake;
        }
        // A path already due now stays due (its new save is read with it, as before).
        let ended = &self.ended;
        self.unsettled.extend(
            event
                .paths
                .iter()
                .filter(|path| !ended.contains(*path))
                .cloned(),
        );
        if self.unsettled.is_empty() {
            return false;
        }
        let wake = self.unsettled_at.is_none();
        let (_, last) = self.unsettled_at.get_or_insert((now, now));
        *last = now;
        wake
    }

    /// A watch error: everything must be read again, at once.
    fn fail(&mut self, now: Instant) {
        self.full = true;
        self.ended_at.get_or_insert(now);
    }

    /// When the paths with a save under way are due: after `settle` of quiet, and at most
    /// [`SETTLE_MAX`] quiet periods after the first of their events.
    fn unsettled_due(&self, settle: Duration) -> Option<Instant> {
        let (first, last) = self.unsettled_at?;
        Some((last + settle).min(first + settle * SETTLE_MAX))
    }

    /// Takes what is due for a reload at `now`.
    fn take(&mut self, settle: Duration, now: Instant) -> Due {
        if self.ended_at.take().is_some() {
            let ended = std::mem::take(&mut self.ended);
            if std::mem::take(&mut self.full) {
                self.unsettled.clear();
                self.unsettled_at = None;
                return Due::Now(None, None);
            }
            return Due::Now(Some(ended), self.unsettled_due(settle));
        }
        match self.unsettled_due(settle) {
            None => Due::Nothing,
            Some(at) if at > now => Due::At(at),
            Some(_) => {
                self.unsettled_at = None;
                Due::Now(Some(std::mem::take(&mut self.unsettled)), None)
            }
        }
    }
}

/// What the watch loop does with the events recorded so far.
#[derive(Debug, PartialEq)]
enum Due {
    /// Reload these paths, or (`None`) everything; then wait for what is left until the time
    /// given, if any.
    Now(Option<BTreeSet<PathBuf>>, Option<Instant>),
    /// Wait for quiet until then.
    At(Instant),
    /// No events.
    Nothing,
}

struct Root {
    path: PathBuf,
    /// Identity of the directory the current watch is on; `None` when not watched.
    watched: Option<RootId>,
    /// Whether a failure to watch this root was already logged.
    warned: bool,
}

impl DirWatch {
    fn new(dirs: &[PathBuf], changed: mpsc::Sender<()>) -> Self {
        // notify reports absolute paths; compare roots in that form.
        let cwd = std::env::current_dir().unwrap_or_default();
        let absolute: Vec<PathBuf> = dirs.iter().map(|d| cwd.join(d)).collect();
        let roots_dirty = Arc::new(AtomicBool::new(false));
        let dirty = roots_dirty.clone();
        let hint = Arc::new(std::sync::Mutex::new(Hint::default()));
        let hints = hint.clone();
        let root_paths = absolute.clone();
        // The callback runs on notify's own thread: it only filters, records and signals,
        // never blocks.
        let handler = move |result: notify::Result<Event>| {
            let wake = match result {
                Ok(event) => {
                    if removes_a_root(&event, &root_paths) {
                        dirty.store(true, Ordering::Release);
                    }
                    is_relevant(&event)
                        && hints
                            .lock()
                            .map_or(true, |mut h| h.add(&event, Instant::now()))
                }
                Err(e) => {
                    warn!(error = %e, "file watch error; reloading");
                    if let Ok(mut h) = hints.lock() {
                        h.fail(Instant::now());
                    }
                    true
                }
            };
            if wake {
                let _ = changed.try_send(());
            }
        };
        let watcher = match notify::recommended_watcher(handler) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "cannot watch files; polling every {ROOT_CHECK:?} instead");
                None
            }
        };
        DirWatch {
            watcher,
            roots: absolute
                .into_iter()
                .map(|path| Root {
                    path,
                    watched: None,
                    warned: false,
                })
                .collect(),
            roots_dirty,
            hint,
        }
    }

    /// Takes what the events recorded so far make due for a reload at `now` ([`Hint::take`]).
    fn take_due(&self, settle: Duration, now: Instant) -> Due {
        match self.hint.lock() {
            Ok(mut hint) => hint.take(settle, now),
            Err(_) => Due::Now(None, None),
        }
    }

    /// True when changes may go unnoticed, so the caller should reload on every tick.
    fn polling(&self) -> bool {
        self.watcher.is_none()
            || self
                .roots
                .iter()
                .any(|r| r.watched.is_none() && r.path.exists())
    }

    /// Renews the watch of every root whose directory appeared, vanished or was replaced.
    /// Returns true when any did (the caller reloads).
    fn sync_roots(&mut self) -> bool {
        let Some(watcher) = self.watcher.as_mut() else {
            return false;
        };
        let force = self.roots_dirty.swap(false, Ordering::AcqRel);
        let mut changed = false;
        for root in &mut self.roots {
            let now = root_id(&root.path);
            if !force && now == root.watched {
                continue;
            }
            changed = true;
            if root.watched.take().is_some() {
                // Usually already gone with the directory; nothing to do if so.
                let _ = watcher.unwatch(&root.path);
            }
            let Some(id) = now else {
                debug!(dir = %root.path.display(), "config directory is gone");
                continue;
            };
            match watcher.watch(&root.path, RecursiveMode::Recursive) {
                Ok(()) => {
                    debug!(dir = %root.path.display(), "watching");
                    root.watched = Some(id);
                    root.warned = false;
                }
                Err(e) if !root.warned => {
                    warn!(dir = %root.path.display(), error = %e, "cannot watch; polling it instead");
                    root.warned = true;
                }
                Err(_) => {}
            }
        }
        changed
    }
}

/// Access events are our own reads (or opens); editor temporaries come and go while typing.
fn is_relevant(event: &Event) -> bool {
    let kind_matters = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    };
    let path_matters = event.paths.is_empty()
        || event
            .paths
            .iter()
            .any(|p| !leaf_name(p).is_some_and(is_editor_temp));
    event.need_rescan() || (kind_matters && path_matters)
}

/// True for an event after which a file is complete, so it is read at once: a file closed
/// after writing, a rename, a removal, a new directory. Not for the steps of a save (a new
/// file, a write before the close, a change of mode), nor for a hidden file closed or renamed
/// away (a writer's temporary, renamed into place next): those wait for quiet.
fn ends_a_save(event: &Event) -> bool {
    let hidden = || {
        event
            .paths
            .iter()
            .all(|p| leaf_name(p).is_some_and(|n| n.starts_with('.')))
    };
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write))
        | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => !hidden(),
        EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => true,
        EventKind::Create(CreateKind::Folder) => true,
        _ => false,
    }
}

fn leaf_name(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str())
}

/// True for an event saying a root itself was removed or renamed away.
fn removes_a_root(event: &Event, roots: &[PathBuf]) -> bool {
    matches!(
        event.kind,
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
    ) && event.paths.iter().any(|p| roots.contains(p))
}

/// The identity of the directory (or file) at `path`, following symlinks.
#[cfg(unix)]
type RootId = (u64, u64);

#[cfg(unix)]
fn root_id(path: &Path) -> Option<RootId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
type RootId = ();

#[cfg(not(unix))]
fn root_id(path: &Path) -> Option<RootId> {
    path.exists().then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }

    fn paths(names: &[&str]) -> Option<BTreeSet<PathBuf>> {
        Some(names.iter().map(PathBuf::from).collect())
    }

    #[test]
    fn the_end_of_a_save_reloads_at_once_its_steps_after_quiet() {
        let settle = Duration::from_millis(10);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let write = EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any));
        let close = EventKind::Access(AccessKind::Close(AccessMode::Write));

        // A save in place: new file, writes, close. Only the close ends it.
        let mut h = Hint::default();
        assert!(h.add(
            &event(EventKind::Create(CreateKind::File), "/d/a.yaml"),
            ms(0)
        ));
        assert!(!h.add(&event(write, "/d/a.yaml"), ms(3)), "already woken");
        assert_eq!(
            h.take(settle, ms(5)),
            Due::At(ms(13)),
            "quiet after the last step"
        );
        assert!(h.add(&event(close, "/d/a.yaml"), ms(6)), "the close wakes");
        assert_eq!(h.take(settle, ms(6)), Due::Now(paths(&["/d/a.yaml"]), None));
        assert_eq!(h.take(settle, ms(30)), Due::Nothing, "taken");

        // Another file's save ending does not read one still being written.
        let mut h = Hint::default();
        assert!(h.add(&event(write, "/d/b.yaml"), ms(0)));
        assert!(h.add(&event(close, "/d/c.yaml"), ms(2)));
        assert_eq!(
            h.take(settle, ms(2)),
            Due::Now(paths(&["/d/c.yaml"]), Some(ms(10))),
            "b waits for its own quiet"
        );
        assert_eq!(
            h.take(settle, ms(10)),
            Due::Now(paths(&["/d/b.yaml"]), None)
        );

        // A writer's hidden temporary, closed, then renamed into place: the rename ends it,
        // and takes the temporary's path along.
        let mut h = Hint::default();
        assert!(h.add(&event(close, "/d/.a.yaml.tmp"), ms(0)));
        assert_eq!(
            h.take(settle, ms(1)),
            Due::At(ms(10)),
            "a hidden file's close waits"
        );
        let from = EventKind::Modify(ModifyKind::Name(RenameMode::From));
        assert!(!h.add(&event(from, "/d/.a.yaml.tmp"), ms(1)));
        let to = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert!(h.add(&event(to, "/d/a.yaml"), ms(1)));
        let both = Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::Both)))
            .add_path(PathBuf::from("/d/.a.yaml.tmp"))
            .add_path(PathBuf::from("/d/a.yaml"));
        assert!(!h.add(&both, ms(1)));
        assert_eq!(
            h.take(settle, ms(1)),
            Due::Now(paths(&["/d/.a.yaml.tmp", "/d/a.yaml"]), None)
        );

        // A file written without end is still read, after at most SETTLE_MAX quiet periods.
        let mut h = Hint::default();
        for i in 0..50 {
            h.add(&event(write, "/d/log.yaml"), ms(i * 5));
        }
        assert_eq!(h.take(settle, ms(99)), Due::At(ms(100)));

        // Removals and new directories reload at once; lost events reload everything.
        for kind in [
            EventKind::Remove(notify::event::RemoveKind::File),
            EventKind::Create(CreateKind::Folder),
        ] {
            let mut h = Hint::default();
            assert!(h.add(&event(kind, "/d/x"), ms(7)));
            assert_eq!(
                h.take(settle, ms(7)),
                Due::Now(paths(&["/d/x"]), None),
                "{kind:?}"
            );
        }
        let mut h = Hint::default();
        h.add(&event(write, "/d/b.yaml"), ms(0));
        let lost = Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert!(h.add(&lost, ms(2)));
        assert_eq!(h.take(settle, ms(2)), Due::Now(None, None));
        assert_eq!(
            h.take(settle, ms(50)),
            Due::Nothing,
            "the full reload read b too"
        );
    }
}
