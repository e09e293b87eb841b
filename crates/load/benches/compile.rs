//! Compile benchmarks: a full compile (view build, shared clusters/endpoints, one class's
//! listeners/routes) for 10,000 services × 10 endpoints and 1,000 × 10 (the meshes of BENCHMARKS.md), and the
//! work an endpoint-only change costs: from a full view (`one_endpoint`), and as the server
//! does it (`one_endpoint_patched`: the file source's loader re-reads the changed file, the
//! index takes the changed object, the previous view and shared sets are patched, the class
//! output is reused).

mod common;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use meshpilot_load::mesh::ChangeKind;

fn full(c: &mut Criterion) {
    for (services, endpoints) in [(10_000, 10), (1_000, 10)] {
        let services = services / common::scale();
        let dir = tempfile::tempdir().expect("tempdir");
        let (_mesh, index) = common::index(dir.path(), services, endpoints);
        let view = common::view(&index);
        let proxy = common::proxy();
        let mut g = c.benchmark_group(format!("compile/{services}x{endpoints}"));
        g.sample_size(10).measurement_time(Duration::from_secs(10));
        g.bench_function("view", |b| b.iter(|| common::view(&index)));
        g.bench_function("shared", |b| {
            b.iter(|| meshpilot_compile::compile_shared(&view).expect("consistent"))
        });
        g.bench_function("class", |b| {
            b.iter(|| meshpilot_compile::compile_class(&view, &proxy))
        });
        g.bench_function("full", |b| {
            b.iter(|| {
                let view = common::view(&index);
                let shared = meshpilot_compile::compile_shared(&view).expect("consistent");
                let class = meshpilot_compile::compile_class(&view, &proxy);
                meshpilot_compile::assemble(proxy.class_key(), &shared, &class).expect("consistent")
            })
        });
        g.finish();
    }
}

fn incremental(c: &mut Criterion) {
    let services = 1_000 / common::scale();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut mesh, mut index) = common::index(dir.path(), services, 10);
    let proxy = common::proxy();
    let view = common::view(&index);
    let class = meshpilot_compile::compile_class(&view, &proxy);
    // The push engine keeps this cache between rounds: unchanged services are not re-encoded.
    let mut cache = meshpilot_compile::ClustersAndEndpointsCache::default();
    meshpilot_compile::compile_shared_cached(&view, &mut cache).expect("consistent");
    let mut g = c.benchmark_group(format!("incremental/{services}x10"));
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    // One endpoint replaced: the file is rewritten and reloaded outside the measurement; the
    // measured part is what the push engine runs for an endpoint-only change.
    g.bench_function("one_endpoint", |b| {
        b.iter_batched(
            || {
                let p = mesh.plan(ChangeKind::Endpoint).expect("plan");
                mesh.apply(&p).expect("apply");
                let (objects, _) = meshpilot_source::files::load_dirs(&[dir.path().to_path_buf()]);
                objects
            },
            |objects| {
                index.reset(meshpilot_model::SourceId::Files, objects);
                let view = common::view(&index);
                let shared = meshpilot_compile::compile_shared_cached(&view, &mut cache)
                    .expect("consistent");
                meshpilot_compile::assemble(proxy.class_key(), &shared, &class).expect("consistent")
            },
            BatchSize::PerIteration,
        )
    });
    // The server's path: the loader re-reads what changed (outside the measurement), then the
    // push engine applies it to the index and patches the previous view and shared sets.
    let mut loader = meshpilot_source::files::Loader::new(vec![dir.path().to_path_buf()]);
    let (objects, _) = loader.load_shared();
    let mut index = meshpilot_index::Index::new();
    index.reset_shared(
        meshpilot_model::SourceId::Files,
        objects.values().cloned().collect(),
    );
    let held = RefCell::new((common::view(&index), index));
    let files = manifests(dir.path());
    g.bench_function("one_endpoint_patched", |b| {
        b.iter_batched(
            || {
                let p = mesh.plan(ChangeKind::Endpoint).expect("plan");
                mesh.apply(&p).expect("apply");
                let (_, difference) = loader.load_changed(&files).expect("a partial reload");
                let (upserts, deletes) = difference.expect("what changed");
                assert_eq!((upserts.len(), deletes.len()), (1, 0), "one EndpointSlice");
                upserts
            },
            |upserts| {
                let (view, index) = &mut *held.borrow_mut();
                let changes = index.update(meshpilot_model::SourceId::Files, upserts, &[]);
                *view = index.build_view_after(&changes, "cluster.local", view);
                let shared =
                    meshpilot_compile::compile_shared_cached(view, &mut cache).expect("consistent");
                meshpilot_compile::assemble(proxy.class_key(), &shared, &class).expect("consistent")
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// Every manifest below `dir`, as absolute paths (as file events name them).
fn manifests(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.canonicalize().expect("dir")];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.insert(path);
            }
        }
    }
    out
}

criterion_group!(benches, full, incremental);
criterion_main!(benches);
