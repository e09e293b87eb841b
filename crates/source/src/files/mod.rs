//! The file source: reads every manifest below the configured directories into model objects,
//! keeping the previous good version of whatever is currently broken ([`Loader`]), and watches
//! the directories for changes ([`run`]).
//!
//! Bad input costs nothing else: a file that cannot be read or parsed keeps the objects it gave
//! last time; an object that fails conversion keeps its previous good version (same kind,
//! namespace and name) when there is one; everything else is unaffected.

mod parse;
mod watch;

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod limits_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tracing::debug;

pub use parse::InputLimits;
pub use watch::{FirstSync, SETTLE, run, run_with_settle};

use super::convert::{convert_noting, object_key};
use meshpilot_model::{
    ConfigKey, Diagnostic, Object, ObjectMap, ObjectRef, Origin, Severity, Stage,
};

/// How deep directories (and directory symlinks) are followed; guards against symlink loops
/// where directory identities are not available.
const MAX_DEPTH: usize = 32;
/// `errno` of a path with too many levels of symbolic links (a symlink loop), on Linux and
/// the BSDs alike.
#[cfg(target_os = "linux")]
const ELOOP: i32 = 40;
#[cfg(not(target_os = "linux"))]
const ELOOP: i32 = 62;

/// Loads every manifest below `dirs` once. See [`Loader`] for the rules.
pub fn load_dirs(dirs: &[PathBuf]) -> (Vec<Object>, Vec<Diagnostic>) {
    Loader::new(dirs.to_vec()).load()
}

/// Reads the manifest directories, remembering the last good state so that a reload after a
/// bad edit keeps what was working.
///
/// Files: `*.yaml`, `*.yml` (multi-document) and `*.json` (one object), recursively, in path
/// order; hidden files and directories and editor temporaries are skipped. A document of kind
/// `List` contributes its `items`. When two documents define the same kind/namespace/name, the
/// one in the later path (or later in the same file) wins and the other is reported: the order
/// in which `kubectl apply -f DIR` would apply them, so the definition that would end up in a
/// cluster is the one served, and it stays so while the files do not move.
#[derive(Debug, Default)]
pub struct Loader {
    dirs: Vec<PathBuf>,
    /// The size limits on each file (the `serve` flags).
    limits: InputLimits,
    /// Objects each file gave on the last load (including kept previous versions), by key;
    /// reused wholesale when the file can no longer be read or parsed.
    /// Objects are shared (`Arc`): an unchanged file's objects are the same allocations from
    /// load to load, so the watcher finds what changed by pointer before comparing content.
    by_file: BTreeMap<PathBuf, BTreeMap<ConfigKey, Arc<Object>>>,
    /// The merged result of the last load: where an object's previous good version is found
    /// when it has moved to another file.
    current: ObjectMap,
    /// Keys more than one file defines (the later path wins, see `merge`); usually none.
    duplicated: HashSet<ConfigKey>,
    /// The "also defined in" errors of the last merge.
    merge_errors: Vec<Diagnostic>,
    /// Each file's stamp (length, modification time, inode) and the errors it gave at the last
    /// load: a file whose stamp is unchanged is not read or parsed again, so an edit to one file
    /// of a large mesh costs one file's parse, not the whole directory's.
    stamps: BTreeMap<PathBuf, (Stamp, Vec<Diagnostic>)>,
    /// Errors about the directories themselves at the last full load (missing, unreadable).
    listing_errors: Vec<Diagnostic>,
    /// `dirs` made absolute, to map the paths of file events back to `dirs`.
    absolute: Vec<PathBuf>,
}

/// The objects of a load by key, shared with the loader, and every refused input.
pub type Loaded = (ObjectMap, Vec<Diagnostic>);

/// A file a partial load re-read: its objects before (`None`: it had none), and its path.
type Reread = (Option<BTreeMap<ConfigKey, Arc<Object>>>, PathBuf);

/// What a load changed: objects added or replaced (by content), keys gone.
pub type Difference = (Vec<Arc<Object>>, Vec<ConfigKey>);

/// A file event's path, as the loader sees it.
enum Changed {
    /// A manifest file below a root, as a path under `dirs`.
    File(PathBuf),
    /// Not a manifest the walk would read (an editor's temporary, another extension).
    Ignored,
    /// Something only a full load handles (a directory, a symlink, a root, a hidden path).
    NeedsFull,
}

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

fn stamp_of(path: &Path) -> Option<Stamp> {
    let meta = fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode,
    })
}

impl Loader {
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Loader::with_limits(dirs, InputLimits::default())
    }

    /// A loader refusing files (or documents) past `limits`.
    pub fn with_limits(dirs: Vec<PathBuf>, limits: InputLimits) -> Self {
        let cwd = std::env::current_dir().unwrap_or_default();
        Loader {
            absolute: dirs.iter().map(|d| cwd.join(d)).collect(),
            dirs,
            limits,
            ..Loader::default()
        }
    }

    /// The size limits this loader applies.
    pub fn limits(&self) -> &InputLimits {
        &self.limits
    }

    /// The directories this loader reads.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Reads everything again. Returns the current objects (sorted by key) and every refused
    /// input (objects whose previous version is kept are in the first list, their errors in the
    /// second).
    pub fn load(&mut self) -> (Vec<Object>, Vec<Diagnostic>) {
        let (objects, errors) = self.load_shared();
        (objects.values().map(|o| Object::clone(o)).collect(), errors)
    }

    /// [`Loader::load`] with the objects shared with the loader, by key: objects of files whose
    /// stamp is unchanged are the very allocations the previous load returned.
    pub fn load_shared(&mut self) -> Loaded {
        let mut errors = Vec::new();
        let listing = list_files(&self.dirs, &mut errors);
        self.listing_errors = errors.clone();

        let mut by_file: BTreeMap<PathBuf, BTreeMap<ConfigKey, Arc<Object>>> = BTreeMap::new();
        // A directory that exists but cannot be listed keeps what its files gave last time.
        for (path, objects) in &self.by_file {
            if listing.unreadable.iter().any(|d| path.starts_with(d)) {
                by_file.insert(path.clone(), objects.clone());
            }
        }
        let mut stamps = BTreeMap::new();
        for path in listing.files {
            let stamp = stamp_of(&path);
            if let (Some(now), Some((then, file_errors)), Some(previous)) =
                (stamp, self.stamps.get(&path), self.by_file.get(&path))
                && now == *then
            {
                // Unchanged since the last load: same objects, same errors.
                errors.extend(file_errors.iter().cloned());
                by_file.insert(path.clone(), previous.clone());
                stamps.insert(path, (now, file_errors.clone()));
                continue;
            }
            let (objects, file_errors) = self.read_file(&path);
            if let Some(objects) = objects {
                by_file.insert(path.clone(), objects);
            }
            errors.extend(file_errors.iter().cloned());
            if let Some(now) = stamp {
                stamps.insert(path, (now, file_errors));
            }
        }
        self.stamps = stamps;
        self.by_file = by_file;
        let merged = self.merge(&mut errors);
        (merged, errors)
    }

    /// Re-reads only the files named by file events (absolute paths), keeping every other file's
    /// objects as they are: an edit to one file of a large mesh costs one `stat` and one parse,
    /// not a walk of the directories. With the load, what it changed against the previous one
    /// when the re-read files alone tell (no key they touch is defined in two files; else the
    /// results are to be compared). Returns `None`, having changed nothing, when the events
    /// need a full [`Loader::load_shared`] (directories, symlinks, hidden paths, a root, or no
    /// load yet).
    pub fn load_changed(
        &mut self,
        paths: &BTreeSet<PathBuf>,
    ) -> Option<(Loaded, Option<Difference>)> {
        if self.stamps.is_empty() && self.by_file.is_empty() {
            return None;
        }
        let mut files = Vec::new();
        for p in paths {
            match self.classify(p) {
                Changed::File(path) => files.push(path),
                Changed::Ignored => {}
                Changed::NeedsFull => return None,
            }
        }
        let mut reread: Vec<Reread> = Vec::new();
        for path in files {
            match stamp_of(&path) {
                None => {
                    // Gone (or unreadable): its objects go with it.
                    reread.push((self.by_file.remove(&path), path.clone()));
                    self.stamps.remove(&path);
                }
                Some(now) => {
                    if self.stamps.get(&path).is_some_and(|(then, _)| *then == now)
                        && self.by_file.contains_key(&path)
                    {
                        continue;
                    }
                    let (objects, file_errors) = self.read_file(&path);
                    let before = match objects {
                        Some(objects) => self.by_file.insert(path.clone(), objects),
                        None => self.by_file.remove(&path),
                    };
                    reread.push((before, path.clone()));
                    self.stamps.insert(path, (now, file_errors));
                }
            }
        }
        let mut errors = self.listing_errors.clone();
        for (_, file_errors) in self.stamps.values() {
            errors.extend(file_errors.iter().cloned());
        }
        match self.apply_reread(&reread) {
            Some(difference) => {
                errors.extend(self.merge_errors.iter().cloned());
                Some(((self.current.clone(), errors), Some(difference)))
            }
            None => {
                let merged = self.merge(&mut errors);
                Some(((merged, errors), None))
            }
        }
    }

    /// Brings `current` up to date with re-read files (their objects before, by path; the
    /// new ones are in `by_file`) without merging every file again, and returns what changed.
    /// `None`, having changed nothing, when a key they touch is defined in more than one file
    /// before or after: which definition wins, and the errors about the others, then need a
    /// full merge.
    fn apply_reread(&mut self, reread: &[Reread]) -> Option<Difference> {
        let empty = BTreeMap::new();
        let before = |i: usize| reread[i].0.as_ref().unwrap_or(&empty);
        let after = |i: usize| self.by_file.get(&reread[i].1).unwrap_or(&empty);
        let gone: BTreeSet<&ConfigKey> = (0..reread.len()).flat_map(|i| before(i).keys()).collect();
        let mut came: BTreeMap<&ConfigKey, &Arc<Object>> = BTreeMap::new();
        // Defined twice: before (by a file re-read and another), or now (by two re-read files,
        // or by a re-read file and one that was not, which `current` still holds it from).
        let mut shared = gone.iter().any(|k| self.duplicated.contains(*k));
        for (key, object) in (0..reread.len()).flat_map(after) {
            shared |= came.insert(key, object).is_some()
                || (!gone.contains(key) && self.current.contains_key(key));
        }
        if shared {
            return None;
        }
        let mut upserts = Vec::new();
        let mut deletes = Vec::new();
        let mut current = self.current.clone();
        for key in gone.into_iter().filter(|k| !came.contains_key(*k)) {
            if current.remove(key).is_some() {
                deletes.push(key.clone());
            }
        }
        for (key, object) in came {
            let same = current
                .get(key)
                .is_some_and(|held| Arc::ptr_eq(held, object) || **held == **object);
            if !same {
                current.insert(key.clone(), object.clone());
                upserts.push(object.clone());
            }
        }
        self.current = current;
        Some((upserts, deletes))
    }

    /// What a file event's path means for [`Loader::load_changed`].
    fn classify(&self, absolute: &Path) -> Changed {
        let Some((dir, rel)) = self
            .dirs
            .iter()
            .zip(&self.absolute)
            .find_map(|(dir, abs)| Some((dir, absolute.strip_prefix(abs).ok()?)))
        else {
            return Changed::NeedsFull;
        };
        let names: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
        let Some(names) = names else {
            return Changed::NeedsFull;
        };
        let Some((file, parents)) = names.split_last() else {
            return Changed::NeedsFull; // the root itself
        };
        if parents.len() > MAX_DEPTH || parents.iter().any(|n| is_hidden_or_temp(n)) {
            return Changed::NeedsFull;
        }
        let path = dir.join(rel);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => {
                if is_hidden_or_temp(file) || !is_manifest_name(file) {
                    Changed::Ignored
                } else {
                    Changed::File(path)
                }
            }
            Ok(_) => Changed::NeedsFull,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if self.by_file.contains_key(&path) || self.stamps.contains_key(&path) {
                    Changed::File(path)
                } else if self
                    .by_file
                    .range(path.clone()..)
                    .next()
                    .is_some_and(|(k, _)| k.starts_with(&path))
                {
                    // (A directory's files sort right after it: paths order by component.)
                    Changed::NeedsFull // a directory with manifests went away
                } else {
                    Changed::Ignored
                }
            }
            Err(_) => Changed::NeedsFull,
        }
    }

    /// Reads one file: its objects (the previous ones when it cannot be read or parsed; `None`
    /// when it vanished) and its errors.
    fn read_file(
        &self,
        path: &Path,
    ) -> (Option<BTreeMap<ConfigKey, Arc<Object>>>, Vec<Diagnostic>) {
        let mut file_errors = Vec::new();
        let objects = match parse::read_documents(path, &self.limits) {
            Ok(None) => None, // removed while we were listing
            Ok(Some(docs)) => {
                let refused = !docs.refused.is_empty();
                file_errors.extend(docs.refused);
                let mut objects = self.convert_documents(path, docs.docs, &mut file_errors);
                if refused {
                    self.keep_previous_of_refused(path, &mut objects);
                }
                Some(objects)
            }
            Err(e) => {
                file_errors.push(e);
                self.by_file.get(path).cloned()
            }
        };
        (objects, file_errors)
    }

    /// A document refused for its size cannot say which object it defines: every object the
    /// file served before that its other documents no longer define keeps serving, so the
    /// refused document's previous good version does. (An object deleted from the file in the
    /// same edit stays until the refused document is fixed.)
    fn keep_previous_of_refused(
        &self,
        path: &Path,
        objects: &mut BTreeMap<ConfigKey, Arc<Object>>,
    ) {
        for (key, previous) in self.by_file.get(path).into_iter().flatten() {
            if !objects.contains_key(key) {
                debug!(%key, "keeping the previous good version beside a refused document");
                objects.insert(key.clone(), previous.clone());
            }
        }
    }

    /// Every file's objects merged by key (the later path wins, the loser is reported); also
    /// becomes the `current` state previous good versions are looked up in.
    fn merge(&mut self, errors: &mut Vec<Diagnostic>) -> ObjectMap {
        let mut merged = ObjectMap::new();
        let mut duplicated = HashSet::new();
        let mut merge_errors = Vec::new();
        for objects in self.by_file.values() {
            for (key, object) in objects {
                if let Some(earlier) = merged.insert(key.clone(), object.clone()) {
                    duplicated.insert(key.clone());
                    merge_errors.push(Diagnostic::conflict(
                        key,
                        earlier.meta.origin.clone(),
                        object.meta.origin.clone(),
                        "within the files, the later path serves",
                    ));
                }
            }
        }
        errors.extend(merge_errors.iter().cloned());
        self.merge_errors = merge_errors;
        self.duplicated = duplicated;
        self.current = merged.clone();
        merged
    }

    /// Converts one file's documents; a failing document falls back to its previous version.
    fn convert_documents(
        &self,
        path: &Path,
        docs: Vec<Value>,
        errors: &mut Vec<Diagnostic>,
    ) -> BTreeMap<ConfigKey, Arc<Object>> {
        let origin = Origin::File(path.display().to_string());
        let mut objects: BTreeMap<ConfigKey, Arc<Object>> = BTreeMap::new();
        for doc in expand_lists(docs, &origin, errors) {
            let key = object_key(&doc);
            let object = match convert_noting(doc, &origin, errors) {
                Ok(Some(object)) => Arc::new(object),
                Ok(None) => continue,
                Err(e) => {
                    errors.push(e);
                    let previous = key.and_then(|key| {
                        self.by_file
                            .get(path)
                            .and_then(|objects| objects.get(&key))
                            .or_else(|| self.current.get(&key))
                    });
                    match previous {
                        Some(previous) => {
                            debug!(key = %previous.key(), "keeping the previous good version");
                            previous.clone()
                        }
                        None => continue,
                    }
                }
            };
            let key = object.key();
            if let Some(earlier) = objects.insert(key.clone(), object) {
                let mut shadowed = Diagnostic::conflict(
                    &key,
                    earlier.meta.origin.clone(),
                    origin.clone(),
                    "within one file, the later document serves",
                );
                shadowed.message = format!("defined again later in {origin}, which serves");
                errors.push(shadowed);
            }
        }
        objects
    }
}

/// An error about a whole file or directory.
fn file_error(path: &Path, message: impl Into<String>) -> Diagnostic {
    Diagnostic::error(
        Stage::Parse,
        Origin::File(path.display().to_string()),
        ObjectRef::default(),
        "",
        message,
    )
}

struct Listing {
    /// Manifest files, sorted and de-duplicated.
    files: Vec<PathBuf>,
    /// Directories that exist but could not be read.
    unreadable: Vec<PathBuf>,
}

fn list_files(dirs: &[PathBuf], errors: &mut Vec<Diagnostic>) -> Listing {
    let mut listing = Listing {
        files: Vec::new(),
        unreadable: Vec::new(),
    };
    for dir in dirs {
        match fs::metadata(dir) {
            Ok(meta) if meta.is_file() => listing.files.push(dir.clone()),
            Ok(_) => walk(dir, 0, &mut listing, errors),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                errors.push(file_error(dir, "config directory does not exist"));
            }
            Err(e) => {
                errors.push(file_error(
                    dir,
                    format!("cannot read config directory: {e}"),
                ));
                listing.unreadable.push(dir.clone());
            }
        }
    }
    listing.files.sort();
    listing.files.dedup();
    listing
}

/// The identity of a directory (device, inode), to notice a symlink that leads back to one of
/// the directories being walked.
#[cfg(unix)]
fn dir_id(meta: &fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn dir_id(_: &fs::Metadata) -> Option<(u64, u64)> {
    None
}

fn walk(dir: &Path, depth: usize, listing: &mut Listing, errors: &mut Vec<Diagnostic>) {
    let mut ancestors = Vec::new();
    if let Some(id) = fs::metadata(dir).ok().as_ref().and_then(dir_id) {
        ancestors.push(id);
    }
    walk_below(dir, depth, &mut ancestors, listing, errors);
}

/// Walks `dir`, whose own identity and its ancestors' are `ancestors`.
fn walk_below(
    dir: &Path,
    depth: usize,
    ancestors: &mut Vec<(u64, u64)>,
    listing: &mut Listing,
    errors: &mut Vec<Diagnostic>,
) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            errors.push(file_error(dir, format!("cannot read directory: {e}")));
            listing.unreadable.push(dir.to_path_buf());
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                errors.push(file_error(dir, format!("cannot read directory: {e}")));
                listing.unreadable.push(dir.to_path_buf());
                continue;
            }
        };
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            debug!(path = %entry.path().display(), "skipping a file name that is not UTF-8");
            continue;
        };
        if is_hidden_or_temp(name) {
            continue;
        }
        let path = entry.path();
        // `fs::metadata` follows symlinks (ConfigMap volumes are symlinks into `..data`).
        let meta = match fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                debug!(path = %path.display(), "skipping a dangling symlink or vanished file");
                continue;
            }
            Err(e) => {
                // A symlink loop (ELOOP) or a path that cannot be looked up: a manifest that
                // cannot be read, not one that is absent.
                if is_manifest_name(name) {
                    let why = if e.raw_os_error() == Some(ELOOP) {
                        "a symlink loop".to_string()
                    } else {
                        e.to_string()
                    };
                    errors.push(file_error(&path, format!("cannot read file: {why}")));
                } else {
                    debug!(path = %path.display(), error = %e, "skipping an entry that cannot be looked up");
                }
                continue;
            }
        };
        if meta.is_dir() {
            if is_manifest_name(name) {
                errors.push(Diagnostic {
                    severity: Severity::Warning,
                    ..file_error(
                        &path,
                        "is a directory, not a manifest file (a volume mounted where a file was \
                         meant?); the files inside it are read as a directory's",
                    )
                })
            }
            let id = dir_id(&meta);
            if id.is_some_and(|id| ancestors.contains(&id)) {
                errors.push(Diagnostic {
                    severity: Severity::Warning,
                    ..file_error(
                        &path,
                        "a symlink loop: leads back to a directory above it, which is read once",
                    )
                });
            } else if depth < MAX_DEPTH {
                ancestors.extend(id);
                walk_below(&path, depth + 1, ancestors, listing, errors);
                if id.is_some() {
                    ancestors.pop();
                }
            } else {
                errors.push(file_error(
                    &path,
                    format!("directories nested deeper than {MAX_DEPTH} levels (a symlink loop?) are not read"),
                ));
            }
        } else if meta.is_file() && is_manifest_name(name) {
            listing.files.push(path);
        }
    }
}

/// Hidden names and the temporaries editors leave beside the file being edited.
pub(super) fn is_hidden_or_temp(name: &str) -> bool {
    name.starts_with('.') || is_editor_temp(name)
}

/// Editor temporaries: `foo~`, `#foo#`, `.#foo`, `*.swp`/`*.swx`, vim's `4913` probe.
pub(super) fn is_editor_temp(name: &str) -> bool {
    name.ends_with('~')
        || name.starts_with('#')
        || name.starts_with(".#")
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name == "4913"
}

fn is_manifest_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml") || lower.ends_with(".json")
}

/// Replaces each `List` document (`kind: List`, or a typed `…List` with `items`) by its items.
fn expand_lists(docs: Vec<Value>, origin: &Origin, errors: &mut Vec<Diagnostic>) -> Vec<Value> {
    let mut out = Vec::with_capacity(docs.len());
    for doc in docs {
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let is_list = kind == "List" || (kind.ends_with("List") && doc.get("items").is_some());
        if !is_list {
            out.push(doc);
            continue;
        }
        match doc {
            Value::Object(mut map) => match map.remove("items") {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => out.extend(items),
                Some(_) => errors.push(Diagnostic::error(
                    Stage::Parse,
                    origin.clone(),
                    ObjectRef {
                        kind: Some(kind),
                        ..ObjectRef::default()
                    },
                    "items",
                    "a List's items must be a list",
                )),
            },
            other => out.push(other),
        }
    }
    out
}
