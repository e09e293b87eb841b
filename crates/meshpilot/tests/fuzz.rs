//! A bounded mutation fuzzer on the stable toolchain: the repository's own manifests (the
//! examples, the change sets, the test fixtures) mutated byte- and token-wise, then read, checked
//! and compiled exactly as the server does — file source, index, shared and per-class compile.
//! Every input must end in objects or diagnostics that name the file, never a panic.
//!
//! `FUZZ_ITERATIONS` (default 2,000, what CI runs: a few seconds) and `FUZZ_SEED` (default fixed, so a CI failure
//! reproduces) tune it; a failing input is written beside the report for replay.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod support;

use meshpilot_index::Index;
use meshpilot_model::proxy::MetadataValue;
use meshpilot_model::{Origin, Proxy, SourceId};
use support::rng::Rng;

/// Tokens that YAML, Kubernetes and Istio parsing treat specially.
const DICTIONARY: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ": ",
    "- ",
    "\n",
    "\n  ",
    "'",
    "\"",
    "&a ",
    "*a",
    "!!binary ",
    "---\n",
    "null",
    "~",
    "-1",
    "0",
    "99999999999999999999999",
    "1e400",
    "0.0.0.0/33",
    "::1",
    "*",
    "*.",
    "${X}",
    "\t",
    "\u{0}",
    "\u{feff}",
    "kind: VirtualService\n",
    "apiVersion: v1\n",
    "weight: ",
    "port: ",
    "number: 70000",
    "host: ",
    "hosts: []",
    "subset: ",
    "regex: \"(\"",
    "http: [{}]",
];

fn seeds() -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    let mut dirs = vec![
        root.join("../../manifests/examples"),
        root.join("../../manifests/changes"),
        root.join("tests/testdata"),
    ];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path
                .extension()
                .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
                && let Ok(bytes) = std::fs::read(&path)
                && bytes.len() < 256 * 1024
            {
                out.push((path, bytes));
            }
        }
    }
    out.sort();
    out
}

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let end = (at + 1 + rng.below(32)).min(v.len());
                v.drain(at.min(end)..end);
            }
            2 => {
                let end = (at + rng.below(64)).min(v.len());
                let chunk = v[at.min(end)..end].to_vec();
                let to = rng.below(v.len() + 1);
                v.splice(to..to, chunk);
            }
            3 => {
                let token = DICTIONARY[rng.below(DICTIONARY.len())].as_bytes();
                v.splice(at..at, token.iter().copied());
            }
            4 if !other.is_empty() => {
                // Splice a piece of another seed in.
                let from = rng.below(other.len());
                let end = (from + rng.below(200)).min(other.len());
                v.splice(at..at, other[from..end].iter().copied());
            }
            _ => {
                let token = DICTIONARY[rng.below(DICTIONARY.len())].as_bytes();
                let end = (at + token.len()).min(v.len());
                v.splice(at..end, token.iter().copied());
            }
        }
    }
    v
}

/// Reads, indexes and compiles `dir` as the server would; returns (objects, diagnostics) and
/// checks that every diagnostic of a file names a file of `dir`.
fn run_pipeline(dir: &Path) -> (usize, usize) {
    let (objects, diagnostics) = meshpilot_source::files::load_dirs(&[dir.to_path_buf()]);
    for d in &diagnostics {
        if let Origin::File(f) = &d.origin {
            assert!(
                f.starts_with(&*dir.to_string_lossy()),
                "{d} names no file of the input"
            );
        }
    }
    let count = objects.len();
    let mut index = Index::new();
    index.reset(SourceId::Files, objects);
    let view = index.build_view("cluster.local", None);
    let _ = meshpilot_compile::compile_shared(&view);
    let mut proxies = vec![Proxy::parse(
        "sidecar~10.1.0.1~a.default~default.svc.cluster.local",
        &BTreeMap::new(),
    )];
    for gw in &view.gateways {
        let mut md = BTreeMap::new();
        md.insert(
            "LABELS".to_string(),
            MetadataValue::Map(gw.spec.selector.clone()),
        );
        proxies.push(Proxy::parse(
            &format!(
                "router~10.2.0.1~gw.{ns}~{ns}.svc.cluster.local",
                ns = gw.key.namespace
            ),
            &md,
        ));
    }
    for p in proxies.into_iter().flatten() {
        let _ = meshpilot_compile::compile_class(&view, &p);
    }
    (count, diagnostics.len() + view.diagnostics.len())
}

#[test]
fn mutated_manifests_end_in_objects_or_named_diagnostics_never_a_panic() {
    let iterations: usize = std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6d65_7368_7069_6c74);
    let seeds = seeds();
    assert!(seeds.len() >= 5, "seed corpus found: {}", seeds.len());
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.yaml");
    let (mut loaded, mut refused) = (0usize, 0usize);
    for i in 0..iterations {
        let (_, base) = &seeds[rng.below(seeds.len())];
        let (_, other) = &seeds[rng.below(seeds.len())];
        let bytes = mutate(&mut rng, base, other);
        std::fs::write(&input, &bytes).expect("write input");
        let outcome = std::panic::catch_unwind(|| run_pipeline(dir.path()));
        match outcome {
            Ok((objects, diagnostics)) => {
                loaded += usize::from(objects > 0);
                refused += usize::from(diagnostics > 0);
            }
            Err(_) => {
                let keep = std::env::temp_dir().join(format!("meshpilot-fuzz-{seed}-{i}.yaml"));
                let _ = std::fs::write(&keep, &bytes);
                panic!("iteration {i} (FUZZ_SEED={seed}) panicked; input kept at {keep:?}");
            }
        }
    }
    eprintln!("fuzz: {iterations} inputs, {loaded} served objects, {refused} had diagnostics");
    // The mutations must exercise both paths, or the fuzzer tests nothing.
    assert!(
        loaded > 0 && refused > 0,
        "{loaded} loaded, {refused} refused"
    );
}
