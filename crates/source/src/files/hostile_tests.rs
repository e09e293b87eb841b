//! Hostile entries in a config directory — a symlink loop, a file that cannot be read, a
//! directory named like a manifest, binary content — each end in a diagnostic naming the path,
//! and the directory's other files load as usual.

use std::fs;
use std::path::Path;

use super::*;

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: good}\nspec: {ports: [{port: 80, name: http}]}\n";

/// Loads `dir`: the good Service must be there, and exactly one diagnostic, about `name`,
/// which is returned.
fn load_with_one_problem(dir: &Path, name: &str) -> Diagnostic {
    fs::write(dir.join("good.yaml"), SERVICE).expect("write");
    let (objects, errors) = load_dirs(&[dir.to_path_buf()]);
    let keys: Vec<String> = objects.iter().map(|o| o.key().to_string()).collect();
    assert_eq!(keys, ["Service default/good"], "{errors:#?}");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let e = errors.into_iter().next().expect("one");
    assert!(
        matches!(&e.origin, Origin::File(f) if f.ends_with(name)),
        "{e:?} does not name {name}"
    );
    e
}

#[cfg(unix)]
#[test]
fn a_symlink_loop_between_files_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink("b.yaml", dir.path().join("a.yaml")).expect("symlink");
    std::os::unix::fs::symlink("a.yaml", dir.path().join("b.yaml")).expect("symlink");
    fs::write(dir.path().join("good.yaml"), SERVICE).expect("write");
    let (objects, errors) = load_dirs(&[dir.path().to_path_buf()]);
    assert_eq!(objects.len(), 1);
    let mut named: Vec<String> = errors
        .iter()
        .map(|e| {
            assert_eq!(e.severity, Severity::Error);
            assert!(e.message.contains("symlink loop"), "{e:?}");
            e.origin.to_string()
        })
        .collect();
    named.sort();
    assert_eq!(named.len(), 2, "{errors:#?}");
    assert!(named[0].ends_with("a.yaml") && named[1].ends_with("b.yaml"));
}

#[cfg(unix)]
#[test]
fn a_directory_symlink_back_to_its_parent_is_read_once_and_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::create_dir(dir.path().join("sub")).expect("mkdir");
    std::os::unix::fs::symlink("..", dir.path().join("sub/up")).expect("symlink");
    let e = load_with_one_problem(dir.path(), "sub/up");
    assert_eq!(e.severity, Severity::Warning);
    assert!(e.message.contains("symlink loop"), "{e:?}");
}

#[test]
fn a_file_that_cannot_be_read_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("secret.yaml");
    fs::write(&path, SERVICE.replace("good", "secret")).expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).expect("chmod");
        if fs::read(&path).is_ok() {
            // Root reads any mode: make it a file whose every read fails instead.
            fs::remove_file(&path).expect("rm");
            std::os::unix::fs::symlink("/proc/self/mem", &path).expect("symlink");
        }
    }
    let e = load_with_one_problem(dir.path(), "secret.yaml");
    assert_eq!(e.severity, Severity::Error);
    assert!(e.message.contains("cannot read file"), "{e:?}");
}

#[test]
fn a_directory_named_like_a_manifest_is_reported_and_its_files_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::create_dir(dir.path().join("x.yaml")).expect("mkdir");
    let e = load_with_one_problem(dir.path(), "x.yaml");
    assert_eq!(e.severity, Severity::Warning);
    assert!(e.message.contains("is a directory"), "{e:?}");
}

#[test]
fn binary_content_is_an_error_naming_the_file() {
    for (name, bytes) in [
        ("blob.yaml", vec![0xff, 0xfe, 0x00, 0x01, 0x80, 0x81]),
        (
            "nul.yaml",
            b"apiVersion: v1\n\x00\x01\x02kind: \x07\n".to_vec(),
        ),
        ("blob.json", vec![0x00, 0x9f, 0x92, 0x96]),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(name), bytes).expect("write");
        let e = load_with_one_problem(dir.path(), name);
        assert_eq!(e.severity, Severity::Error, "{name}");
        assert_eq!(e.stage, Stage::Parse, "{name}");
    }
}
