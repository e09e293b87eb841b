//! The layer table of ARCHITECTURE.md, checked against the workspace: every dependency edge
//! between meshpilot's crates (normal, build and dev) must be one the table allows, and every
//! crate of the workspace must be in the table. Cargo already refuses cycles; this refuses an
//! edge that runs up the layers, or sideways where the table says no.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// Each crate and the meshpilot crates it may depend on. ARCHITECTURE.md shows the same table;
/// `architecture_md_shows_the_layer_table` fails when the two differ.
const LAYERS: &[(&str, &[&str])] = &[
    ("meshpilot-model", &[]),
    ("meshpilot-telemetry", &[]),
    ("meshpilot-transport", &[]),
    ("meshpilot-source", &["meshpilot-model"]),
    ("meshpilot-index", &["meshpilot-model"]),
    ("meshpilot-snapshot", &["meshpilot-model"]),
    ("meshpilot-ca", &["meshpilot-telemetry"]),
    ("meshpilot-agent", &["meshpilot-ca"]),
    (
        "meshpilot-compile",
        &["meshpilot-model", "meshpilot-index", "meshpilot-snapshot"],
    ),
    (
        "meshpilot-xds",
        &[
            "meshpilot-model",
            "meshpilot-snapshot",
            "meshpilot-transport",
            "meshpilot-telemetry",
        ],
    ),
    (
        "meshpilot-push",
        &[
            "meshpilot-model",
            "meshpilot-source",
            "meshpilot-index",
            "meshpilot-compile",
            "meshpilot-snapshot",
            "meshpilot-telemetry",
        ],
    ),
    (
        "meshpilot-debug",
        &[
            "meshpilot-model",
            "meshpilot-source",
            "meshpilot-snapshot",
            "meshpilot-push",
            "meshpilot-xds",
            "meshpilot-telemetry",
        ],
    ),
    (
        "meshpilot",
        &[
            "meshpilot-model",
            "meshpilot-telemetry",
            "meshpilot-source",
            "meshpilot-index",
            "meshpilot-snapshot",
            "meshpilot-compile",
            "meshpilot-xds",
            "meshpilot-push",
            "meshpilot-debug",
            "meshpilot-ca",
            "meshpilot-transport",
            "meshpilot-agent",
        ],
    ),
    (
        "meshpilot-load",
        &[
            "meshpilot",
            "meshpilot-model",
            "meshpilot-source",
            "meshpilot-index",
            "meshpilot-snapshot",
            "meshpilot-compile",
            "meshpilot-transport",
            "meshpilot-xds",
            "meshpilot-telemetry",
        ],
    ),
];

/// The workspace's crates and, for each, the workspace crates it names in any dependency table.
fn workspace_edges() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(&root)
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let members: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().expect("name").to_string())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .map(|d| d["name"].as_str().expect("dependency name").to_string())
                .filter(|d| members.contains(d))
                .collect();
            (p["name"].as_str().expect("name").to_string(), deps)
        })
        .collect()
}

#[test]
fn every_edge_between_crates_is_one_the_layer_table_allows() {
    let table: BTreeMap<&str, BTreeSet<&str>> = LAYERS
        .iter()
        .map(|(c, deps)| (*c, deps.iter().copied().collect()))
        .collect();
    let edges = workspace_edges();
    let mut wrong = Vec::new();
    for (krate, deps) in &edges {
        let Some(allowed) = table.get(krate.as_str()) else {
            wrong.push(format!(
                "{krate} is not in the layer table: add it (and to ARCHITECTURE.md)"
            ));
            continue;
        };
        for dep in deps {
            if !allowed.contains(dep.as_str()) {
                wrong.push(format!("{krate} → {dep} is not allowed by the layer table"));
            }
        }
    }
    for krate in table.keys() {
        if !edges.contains_key(*krate) {
            wrong.push(format!(
                "{krate} is in the layer table but not in the workspace"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_server_crate_depends_on_the_load_tool() {
    for (krate, deps) in workspace_edges() {
        assert!(
            krate == "meshpilot-load" || !deps.contains("meshpilot-load"),
            "{krate} depends on meshpilot-load"
        );
    }
}

/// The crate map of ARCHITECTURE.md: each row's crate (first cell, `meshpilot-…` in backticks)
/// and the crates it may depend on (last cell, short names such as `model, index`, or `—`).
fn architecture_md_table() -> BTreeMap<String, BTreeSet<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ARCHITECTURE.md");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .filter(|line| line.starts_with("| `meshpilot"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let krate = cells[0].split('`').nth(1).expect("crate name in backticks");
            let deps = cells[cells.len() - 1]
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty() && *d != "—")
                .map(|d| match d {
                    "meshpilot" => d.to_string(),
                    _ => format!("meshpilot-{d}"),
                })
                .collect();
            (krate.to_string(), deps)
        })
        .collect()
}

#[test]
fn architecture_md_shows_the_layer_table() {
    let table: BTreeMap<String, BTreeSet<String>> = LAYERS
        .iter()
        .map(|(c, deps)| {
            let deps = deps.iter().map(|d| d.to_string()).collect();
            (c.to_string(), deps)
        })
        .collect();
    assert_eq!(
        architecture_md_table(),
        table,
        "ARCHITECTURE.md's crate map and the table in this file differ: change both together"
    );
}
