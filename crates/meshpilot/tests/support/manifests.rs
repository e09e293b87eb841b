//! Manifests for black-box tests: writing YAML files into a config dir, Pods that put workloads
//! on loopback addresses, and the user's scenario folders.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Writes each `(relative path, contents)` under `dir`, creating folders. Each file is written
/// to a hidden temporary name and renamed into place, so a watcher never reads half a file.
pub fn write_manifests(dir: &Path, files: &[(&str, &str)]) {
    for (rel, contents) in files {
        let path = dir.join(rel);
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent.join(format!(".{file_name}.tmp"));
        std::fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        std::fs::rename(&tmp, &path)
            .unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
    }
}

/// Removes `rel` under `dir` (the manifest's objects should disappear).
pub fn remove_manifest(dir: &Path, rel: &str) {
    let path = dir.join(rel);
    std::fs::remove_file(&path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
}

/// A running, Ready Pod at `ip` with `labels`, as the source reads it. `ports` are named
/// container ports (`(name, port)`), for Services whose `targetPort` is a name.
pub fn pod_yaml(
    name: &str,
    namespace: &str,
    labels: &[(&str, &str)],
    ip: IpAddr,
    ports: &[(&str, u16)],
) -> String {
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let mut y = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: {}\n",
        q(name),
        q(namespace)
    );
    if labels.is_empty() {
        y.push_str("  labels: {}\n");
    } else {
        y.push_str("  labels:\n");
        for (k, v) in labels {
            y.push_str(&format!("    {}: {}\n", q(k), q(v)));
        }
    }
    y.push_str("spec:\n  containers:\n  - name: app\n    image: test\n");
    if !ports.is_empty() {
        y.push_str("    ports:\n");
        for (pname, port) in ports {
            y.push_str(&format!(
                "    - name: {}\n      containerPort: {port}\n      protocol: TCP\n",
                q(pname)
            ));
        }
    }
    y.push_str(&format!(
        "status:\n  phase: Running\n  podIP: {ip}\n  podIPs:\n  - ip: {ip}\n  conditions:\n  \
         - type: Ready\n    status: \"True\"\n"
    ));
    y
}

/// The repository's `manifests/`: the user's scenarios are `examples/NAME/`, their follow-up
/// edits (blue/green, new weights) `changes/`. Tests read these, so each manifest is stored once
/// and what the tests check is what the examples serve.
fn manifests_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests")
}

/// The folder of one of the user's scenarios (`01-mvc-canary`, …), `manifests/examples/NAME`.
pub fn scenario_dir(name: &str) -> PathBuf {
    let dir = manifests_root().join("examples").join(name);
    assert!(
        dir.is_dir(),
        "scenario {name:?} not found in {}",
        dir.display()
    );
    dir
}

/// Reads one file of a scenario: from its folder, or else one of the follow-up edits in
/// `manifests/changes/`.
pub fn scenario_file(name: &str, file: &str) -> String {
    let in_scenario = scenario_dir(name).join(file);
    let path = if in_scenario.is_file() {
        in_scenario
    } else {
        manifests_root().join("changes").join(file)
    };
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Copies the named files of a scenario into `dir` (same file names).
pub fn copy_scenario_files(name: &str, files: &[&str], dir: &Path) {
    let contents: Vec<(String, String)> = files
        .iter()
        .map(|f| (f.to_string(), scenario_file(name, f)))
        .collect();
    let refs: Vec<(&str, &str)> = contents
        .iter()
        .map(|(f, c)| (f.as_str(), c.as_str()))
        .collect();
    write_manifests(dir, &refs);
}
