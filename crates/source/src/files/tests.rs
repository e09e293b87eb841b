//! Tests for the file source: directory walking, multi-document YAML, JSON Lists, keeping the
//! previous good state after bad edits, and the watcher sending what an edit changed.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::{SourceEvent, SourceId};
use meshpilot_model::{Body, Kind};
use tokio_util::sync::CancellationToken as Shutdown;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir");
    }
    fs::write(&path, text).expect("write");
    path
}

fn names(objects: &[Object]) -> Vec<String> {
    objects.iter().map(|o| o.key().to_string()).collect()
}

fn weights(objects: &[Object], name: &str) -> Vec<Option<i64>> {
    let vs = objects
        .iter()
        .find_map(|o| match &o.body {
            Body::VirtualService(vs) if o.meta.name == name => Some(vs),
            _ => None,
        })
        .expect("virtual service present");
    vs.http[0].route.iter().map(|d| d.weight).collect()
}

const SERVICE_A: &str =
    "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80, name: http}]}\n";

fn split_vs(name: &str, w1: &str, w2: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: [a]\n  http:\n  - route:\n    - {{destination: {{host: a, subset: v1}}, weight: {w1}}}\n    - {{destination: {{host: a, subset: v2}}, weight: {w2}}}\n"
    )
}

#[test]
fn loads_scenarios_recursively_and_skips_hidden_and_temp_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write(
        d,
        "mvc/app.yaml",
        include_str!("../../../../manifests/examples/01-mvc-canary/app.yaml"),
    );
    write(
        d,
        "mvc/gateway.yml",
        include_str!("../../../../manifests/examples/01-mvc-canary/istio-gateway.yaml"),
    );
    write(
        d,
        "mvc/dr.yaml",
        include_str!("../../../../manifests/examples/01-mvc-canary/destination-rule.yaml"),
    );
    write(
        d,
        "workloads.yaml",
        include_str!("../testdata/workloads.yaml"),
    );
    // None of these is read: each holds a Service that would show up.
    write(d, ".hidden.yaml", SERVICE_A);
    write(d, ".git/x.yaml", SERVICE_A);
    write(d, "app.yaml~", SERVICE_A);
    write(d, "notes.txt", SERVICE_A);
    write(d, "#app.yaml#", SERVICE_A);

    let (objects, errors) = load_dirs(&[d.to_path_buf()]);
    assert!(errors.is_empty(), "{errors:?}");
    let names = names(&objects);
    assert_eq!(objects.len(), 11, "{names:?}");
    assert!(names.contains(&"Service default/mvc-service".to_string()));
    assert!(!names.contains(&"Service default/a".to_string()));
    assert!(objects.iter().all(|o| {
        o.meta
            .origin
            .to_string()
            .starts_with(&d.display().to_string())
    }));
}

#[test]
fn multi_document_yaml_with_comments_and_empty_documents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "# leading comment\n---\n{SERVICE_A}---\n# only a comment\n---\n---\n{}",
        split_vs("r", "50", "50")
    );
    write(dir.path(), "all.yaml", &yaml);
    let (objects, errors) = load_dirs(&[dir.path().to_path_buf()]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        names(&objects),
        ["Service default/a", "VirtualService default/r"]
    );
}

#[test]
fn json_object_and_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "one.json",
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "one"}, "spec": {"ports": [{"port": 80}]}}"#,
    );
    write(
        dir.path(),
        "list.json",
        r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "two", "namespace": "x"}},
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "skipped"}},
            {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "gw"},
             "spec": {"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}}
        ]}"#,
    );
    let (objects, errors) = load_dirs(&[dir.path().to_path_buf()]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        names(&objects),
        ["Service default/one", "Service x/two", "Gateway default/gw"]
    );
}

#[test]
fn duplicate_definitions_the_later_path_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "a.yaml", &split_vs("r", "50", "50"));
    write(dir.path(), "b.yaml", &split_vs("r", "20", "80"));
    let (objects, errors) = load_dirs(&[dir.path().to_path_buf()]);
    assert_eq!(weights(&objects, "r"), [Some(20), Some(80)]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let shown = errors[0].to_string();
    assert!(
        shown.contains("a.yaml") && shown.contains("b.yaml"),
        "{shown}"
    );
}

#[test]
fn malformed_yaml_keeps_the_files_previous_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "routes.yaml", &split_vs("r", "80", "20"));
    write(dir.path(), "svc.yaml", SERVICE_A);
    let mut loader = Loader::new(vec![dir.path().to_path_buf()]);
    let (objects, errors) = loader.load();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(objects.len(), 2);

    fs::write(&file, "kind: VirtualService\nspec: [unclosed\n  hosts: {").expect("write");
    fs::write(dir.path().join("svc.yaml"), "").expect("write");
    let (objects, errors) = loader.load();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].origin, Origin::File(file.display().to_string()));
    assert!(errors[0].message.contains("line"), "{}", errors[0]);
    // The broken file keeps its objects; the emptied file's Service is gone.
    assert_eq!(names(&objects), ["VirtualService default/r"]);
    assert_eq!(weights(&objects, "r"), [Some(80), Some(20)]);

    // Fixed: the new content is taken.
    fs::write(&file, split_vs("r", "30", "70")).expect("write");
    let (objects, errors) = loader.load();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(weights(&objects, "r"), [Some(30), Some(70)]);
}

#[test]
fn a_bad_object_keeps_its_previous_version_while_its_neighbour_updates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let both = |w_r: (&str, &str), w_s: (&str, &str)| {
        format!(
            "{}---\n{}",
            split_vs("r", w_r.0, w_r.1),
            split_vs("s", w_s.0, w_s.1)
        )
    };
    let file = write(dir.path(), "routes.yaml", &both(("80", "20"), ("50", "50")));
    let mut loader = Loader::new(vec![dir.path().to_path_buf()]);
    let (_, errors) = loader.load();
    assert!(errors.is_empty(), "{errors:?}");

    // r gets a negative weight (refused), s legitimately changes.
    fs::write(&file, both(("-90", "20"), ("10", "90"))).expect("write");
    let (objects, errors) = loader.load();
    assert_eq!(
        weights(&objects, "r"),
        [Some(80), Some(20)],
        "previous r kept"
    );
    assert_eq!(weights(&objects, "s"), [Some(10), Some(90)], "s updated");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].object.name.as_deref(), Some("r"));
    assert_eq!(
        errors[0].field.as_deref(),
        Some("spec.http[0].route[0].weight")
    );

    // A bad object never seen before is left out.
    let extra = format!(
        "{}---\n{}",
        both(("80", "20"), ("10", "90")),
        split_vs("t", "1", "-1")
    );
    fs::write(&file, extra).expect("write");
    let (objects, errors) = loader.load();
    assert_eq!(
        names(&objects),
        ["VirtualService default/r", "VirtualService default/s"]
    );
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].object.name.as_deref(), Some("t"));
}

#[test]
fn removed_files_and_directories_take_their_objects_along() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = dir.path().join("sub");
    write(&sub, "svc.yaml", SERVICE_A);
    let keep = write(dir.path(), "r.yaml", &split_vs("r", "50", "50"));
    let mut loader = Loader::new(vec![dir.path().to_path_buf(), sub.clone()]);
    let (objects, errors) = loader.load();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        objects.len(),
        2,
        "a file under two listed dirs is read once"
    );

    fs::remove_dir_all(&sub).expect("rm");
    let (objects, errors) = loader.load();
    assert_eq!(names(&objects), ["VirtualService default/r"]);
    assert_eq!(errors.len(), 1, "the missing dir is reported: {errors:?}");
    assert!(errors[0].message.contains("does not exist"));

    fs::remove_file(keep).expect("rm");
    let (objects, _) = loader.load();
    assert!(objects.is_empty());
}

#[test]
fn invalid_json_and_non_mapping_documents_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "bad.json", "{\"kind\": ");
    write(dir.path(), "scalar.yaml", "just text\n");
    let (objects, errors) = load_dirs(&[dir.path().to_path_buf()]);
    assert!(objects.is_empty());
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].message.contains("invalid JSON"), "{}", errors[0]);
    assert!(errors[1].message.contains("mapping"), "{}", errors[1]);
}

fn values(m: &ObjectMap) -> Vec<Object> {
    m.values().map(|o| Object::clone(o)).collect()
}

/// A difference with its lists in key order, to compare.
fn sorted((mut upserts, mut deletes): Difference) -> (Vec<ConfigKey>, Vec<ConfigKey>) {
    upserts.sort_by_key(|o| o.key());
    deletes.sort();
    (upserts.iter().map(|o| o.key()).collect(), deletes)
}

/// The loader's own account of a partial reload is what comparing every object finds: an edit,
/// an object moving between files in one batch, a removed file; and where a key is defined in
/// two files (before or after), it gives none and the full merge decides, as before.
#[test]
fn a_partial_reload_reports_what_comparing_every_object_finds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("canonical");
    let a = write(&root, "a.yaml", &split_vs("r", "80", "20"));
    let b = write(&root, "b.yaml", SERVICE_A);
    let c = write(&root, "c.yaml", &split_vs("s", "50", "50"));
    let mut loader = Loader::new(vec![root.clone()]);
    let (mut before, _) = loader.load_shared();
    let key = |name: &str| {
        values(&before)
            .iter()
            .map(Object::key)
            .find(|k| *k.name == *name)
            .expect("key")
    };
    let (r, svc, s) = (key("r"), key("a"), key("s"));
    let d = root.join("d.yaml");
    let e = root.join("e.yaml");

    // (files written, paths named, the loader's difference expected: upserts, deletes)
    type Step<'a> = (
        Vec<(&'a Path, String)>,
        Vec<&'a Path>,
        Option<(Vec<&'a ConfigKey>, Vec<&'a ConfigKey>)>,
    );
    let steps: Vec<Step> = vec![
        // An edit.
        (
            vec![(&a, split_vs("r", "10", "90"))],
            vec![&a],
            Some((vec![&r], vec![])),
        ),
        // `s` moves from c.yaml to d.yaml in one batch: replaced (new origin), not deleted.
        (
            vec![(&c, String::new()), (&d, split_vs("s", "50", "50"))],
            vec![&c, &d],
            Some((vec![&s], vec![])),
        ),
        // A removed file.
        (vec![], vec![&b], Some((vec![], vec![&svc]))),
        // `r` defined a second time, in a later path: the full merge decides (e.yaml wins).
        (vec![(&e, split_vs("r", "30", "70"))], vec![&e], None),
        // ... and again when the second definition goes.
        (vec![(&e, String::new())], vec![&e], None),
        // Back to one definition: an edit is worked out from the file again.
        (
            vec![(&a, split_vs("r", "40", "60"))],
            vec![&a],
            Some((vec![&r], vec![])),
        ),
    ];
    for (i, (writes, named, want)) in steps.into_iter().enumerate() {
        for (path, text) in &writes {
            fs::write(path, text).expect("write");
        }
        if i == 2 {
            fs::remove_file(&b).expect("rm");
        }
        let paths = named.iter().map(|p| p.to_path_buf()).collect();
        let ((after, errors), got) = loader.load_changed(&paths).expect("partial");
        let compared = super::watch::difference(&before, &after);
        match want {
            Some((upserts, deletes)) => {
                let got = sorted(got.expect("a difference"));
                let want: (Vec<ConfigKey>, Vec<ConfigKey>) = (
                    upserts.into_iter().cloned().collect(),
                    deletes.into_iter().cloned().collect(),
                );
                assert_eq!(got, want, "step {i}");
                assert_eq!(sorted(compared), want, "step {i}: comparing every object");
            }
            None => assert!(got.is_none(), "step {i}: the full merge decides"),
        }
        // Whatever the path taken, the result is a full load's.
        let mut fresh = Loader::new(vec![root.clone()]);
        let (full, full_errors) = fresh.load_shared();
        assert_eq!(values(&after), values(&full), "step {i}");
        assert_eq!(errors, full_errors, "step {i}");
        before = after;
    }
    assert_eq!(weights(&values(&before), "r"), [Some(40), Some(60)]);
}

#[test]
fn load_changed_rereads_only_the_named_files_and_agrees_with_a_full_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("canonical");
    let vs = write(&root, "routes/r.yaml", &split_vs("r", "80", "20"));
    let svc = write(&root, "svc.yaml", SERVICE_A);
    let mut loader = Loader::new(vec![root.clone()]);
    assert!(
        loader.load_changed(&[vs.clone()].into()).is_none(),
        "no partial load before the first full one"
    );
    let (before, _) = loader.load_shared();

    // An edit: only that file's object is new; the Service is the same allocation.
    fs::write(&vs, split_vs("r", "10", "90")).expect("write");
    let ((after, errors), _) = loader.load_changed(&[vs.clone()].into()).expect("partial");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(weights(&values(&after), "r"), [Some(10), Some(90)]);
    let key = |o: &Object| o.key();
    let svc_key = key(&values(&before)[0]);
    assert!(
        Arc::ptr_eq(&before[&svc_key], &after[&svc_key]),
        "untouched file not re-read"
    );

    // A bad edit keeps the previous good version and names the field, as a full load does.
    fs::write(&vs, split_vs("r", "10", "ninety")).expect("write");
    let ((partial, partial_errors), _) =
        loader.load_changed(&[vs.clone()].into()).expect("partial");
    // (A full load by the same loader: same previous good versions, same errors.)
    let (full, full_errors) = loader.load_shared();
    assert_eq!(weights(&values(&partial), "r"), [Some(10), Some(90)]);
    assert_eq!(partial_errors.len(), 1, "{partial_errors:?}");
    assert!(
        partial_errors[0].to_string().contains("weight"),
        "{}",
        partial_errors[0]
    );
    assert_eq!(full_errors, partial_errors);
    assert_eq!(
        full.keys().collect::<Vec<_>>(),
        partial.keys().collect::<Vec<_>>()
    );

    // A new file, a removed file, and a path that is not a manifest.
    let extra = write(&root, "extra.yaml", &split_vs("s", "50", "50"));
    fs::remove_file(&svc).expect("rm");
    let notes = write(&root, "notes.txt", "not yaml");
    let ((now, _), _) = loader
        .load_changed(&[extra, svc, notes].into())
        .expect("partial");
    let names: Vec<String> = now.keys().map(|k| k.name.to_string()).collect();
    assert_eq!(names, ["r", "s"]);

    // Directories, hidden paths (ConfigMap `..data` swaps) and roots need a full load.
    fs::create_dir_all(root.join("more")).expect("mkdir");
    std::os::unix::fs::symlink(root.join("more"), root.join("..data")).expect("symlink");
    for path in [root.join("more"), root.join("..data"), root.clone()] {
        assert!(
            loader.load_changed(&[path.clone()].into()).is_none(),
            "{} needs a full load",
            path.display()
        );
    }
    // A removed directory that held manifests, too.
    fs::remove_dir_all(root.join("routes")).expect("rm");
    assert!(loader.load_changed(&[root.join("routes")].into()).is_none());
    let (full, _) = loader.load_shared();
    assert_eq!(full.keys().map(|k| &*k.name).collect::<Vec<_>>(), ["s"]);
}

/// What the push engine would hold from the file source: a Reset replaces it, an Update
/// patches it.
#[derive(Default)]
struct Downstream {
    objects: BTreeMap<ConfigKey, Object>,
    events: Vec<&'static str>,
    /// Keys the last Update carried (upserts, then deletes).
    last_update: Vec<String>,
}

/// Waits for the next event and returns the objects downstream holds (in key order) and errors after it.
async fn next_state(
    rx: &mut mpsc::Receiver<SourceEvent>,
    downstream: &mut Downstream,
) -> (Vec<Object>, Vec<Diagnostic>) {
    let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event within the timeout")
        .expect("channel open");
    let errors = match event {
        SourceEvent::Reset {
            source: SourceId::Files,
            objects,
            diagnostics: errors,
        } => {
            downstream.events.push("reset");
            downstream.objects = objects
                .into_iter()
                .map(|o| (o.key(), Object::clone(&o)))
                .collect();
            errors
        }
        SourceEvent::Update {
            source: SourceId::Files,
            upserts,
            deletes,
            diagnostics: errors,
        } => {
            downstream.events.push("update");
            downstream.last_update = upserts.iter().map(|o| o.key().to_string()).collect();
            downstream
                .last_update
                .extend(deletes.iter().map(|k| format!("-{k}")));
            assert!(
                !upserts.is_empty() || !deletes.is_empty() || !errors.is_empty(),
                "an Update that changes nothing is not sent"
            );
            for key in deletes {
                assert!(
                    downstream.objects.remove(&key).is_some(),
                    "deleted {key} was held"
                );
            }
            for o in upserts {
                assert_ne!(
                    downstream.objects.get(&o.key()),
                    Some(&*o),
                    "upsert of an unchanged object"
                );
                downstream.objects.insert(o.key(), Object::clone(&o));
            }
            errors
        }
        other => panic!("unexpected event {other:?}"),
    };
    (downstream.objects.values().cloned().collect(), errors)
}

#[tokio::test]
async fn run_sends_only_what_an_edit_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "r.yaml", &split_vs("r", "80", "20"));
    write(dir.path(), "svc.yaml", SERVICE_A);
    let (tx, mut rx) = mpsc::channel(8);
    let shutdown = Shutdown::new();
    let task = tokio::spawn(run(vec![dir.path().to_path_buf()], tx, shutdown.clone()));
    let mut downstream = Downstream::default();

    let (objects, errors) = next_state(&mut rx, &mut downstream).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(weights(&objects, "r"), [Some(80), Some(20)]);

    // Editors often write a temporary file and rename it over the original.
    let tmp = dir.path().join(".r.yaml.tmp");
    fs::write(&tmp, split_vs("r", "0", "100")).expect("write");
    fs::rename(&tmp, &file).expect("rename");
    let (objects, _) = next_state(&mut rx, &mut downstream).await;
    assert_eq!(weights(&objects, "r"), [Some(0), Some(100)]);
    assert_eq!(objects.len(), 2, "the untouched Service is still held");
    assert_eq!(downstream.events, ["reset", "update"]);
    assert_eq!(
        downstream.last_update.len(),
        1,
        "{:?}",
        downstream.last_update
    );
    assert!(
        downstream.last_update[0].contains("VirtualService"),
        "{:?}",
        downstream.last_update
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run stops on shutdown")
        .expect("run does not panic");
}

#[tokio::test]
async fn run_reads_a_file_that_appears_without_being_written() {
    // A hard link makes a complete file appear with one creation event: no write, no close,
    // no rename. It is read once the directory has been quiet for the settle period.
    let dir = tempfile::tempdir().expect("tempdir");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "svc.yaml", SERVICE_A);
    let original = write(elsewhere.path(), "r.yaml", &split_vs("r", "30", "70"));
    let (tx, mut rx) = mpsc::channel(8);
    let shutdown = Shutdown::new();
    let task = tokio::spawn(run(vec![dir.path().to_path_buf()], tx, shutdown.clone()));
    let mut downstream = Downstream::default();
    let (objects, _) = next_state(&mut rx, &mut downstream).await;
    assert_eq!(objects.len(), 1);

    fs::hard_link(&original, dir.path().join("r.yaml")).expect("link");
    let (objects, errors) = next_state(&mut rx, &mut downstream).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(weights(&objects, "r"), [Some(30), Some(70)]);
    assert_eq!(downstream.events, ["reset", "update"]);

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}

#[tokio::test]
async fn run_survives_the_directory_being_deleted_and_recreated() {
    let parent = tempfile::tempdir().expect("tempdir");
    let dir = parent.path().join("config");
    write(&dir, "svc.yaml", SERVICE_A);
    let (tx, mut rx) = mpsc::channel(8);
    let shutdown = Shutdown::new();
    let task = tokio::spawn(run(vec![dir.clone()], tx, shutdown.clone()));
    let mut downstream = Downstream::default();
    let (objects, _) = next_state(&mut rx, &mut downstream).await;
    assert_eq!(objects.len(), 1);

    fs::remove_dir_all(&dir).expect("rm");
    let (objects, errors) = next_state(&mut rx, &mut downstream).await;
    assert!(objects.is_empty());
    assert_eq!(errors.len(), 1);

    write(&dir, "r.yaml", &split_vs("r", "50", "50"));
    let (objects, errors) = loop {
        // Creating the directory and then the file may be seen as two changes.
        let (objects, errors) = next_state(&mut rx, &mut downstream).await;
        if !objects.is_empty() {
            break (objects, errors);
        }
    };
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(objects[0].kind(), Kind::VirtualService);

    // And it is watched again: a later edit is seen.
    fs::write(dir.join("r.yaml"), split_vs("r", "10", "90")).expect("write");
    let (objects, _) = next_state(&mut rx, &mut downstream).await;
    assert_eq!(weights(&objects, "r"), [Some(10), Some(90)]);

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}

/// At start-up, a directory with a file that does not parse is held back — the push engine gets
/// its diagnostics, not a set lacking that file's objects — until the file is fixed; with
/// [`FirstSync::AtOnce`] what loaded is sent at once.
#[tokio::test]
async fn run_holds_a_start_with_broken_input_until_it_loads_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "svc.yaml", SERVICE_A);
    let broken = write(dir.path(), "r.yaml", "kind: [");
    let (tx, mut rx) = mpsc::channel(8);
    let shutdown = Shutdown::new();
    let dirs = vec![dir.path().to_path_buf()];
    let task = tokio::spawn(run(dirs.clone(), tx, shutdown.clone()));
    match recv_event(&mut rx).await {
        SourceEvent::Held {
            source: SourceId::Files,
            diagnostics,
        } => {
            assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
            assert!(diagnostics[0].origin.to_string().ends_with("r.yaml"));
        }
        other => panic!("expected Held, got {other:?}"),
    }
    // Nothing else while the file stays broken.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err()
    );
    fs::write(&broken, split_vs("r", "80", "20")).expect("fix");
    match recv_event(&mut rx).await {
        SourceEvent::Reset {
            objects,
            diagnostics,
            ..
        } => {
            assert!(diagnostics.is_empty(), "{diagnostics:?}");
            assert_eq!(objects.len(), 2, "both files served once clean");
        }
        other => panic!("expected Reset, got {other:?}"),
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;

    // Served at once, without the broken file's objects, when asked to.
    fs::write(&broken, "kind: [").expect("break");
    let (tx, mut rx) = mpsc::channel(8);
    let shutdown = Shutdown::new();
    let task = tokio::spawn(run_with_settle(
        dirs,
        SETTLE,
        InputLimits::default(),
        FirstSync::AtOnce,
        tx,
        shutdown.clone(),
    ));
    match recv_event(&mut rx).await {
        SourceEvent::Reset {
            objects,
            diagnostics,
            ..
        } => {
            assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
            assert_eq!(objects.len(), 1, "only the Service");
        }
        other => panic!("expected Reset, got {other:?}"),
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}

async fn recv_event(rx: &mut mpsc::Receiver<SourceEvent>) -> SourceEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event within the timeout")
        .expect("channel open")
}
