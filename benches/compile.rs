//! Compile benchmarks: a full compile (view build, shared clusters/endpoints, one class's
//! listeners/routes) for 10,000 services × 10 endpoints (W3) and 1,000 × 10 (W4/W5), and the
//! work an endpoint-only change costs (what the push engine does today: rebuild the view and
//! the shared resources, reuse the class output).

mod common;

use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use meshpilot::compile;
use meshpilot::mesh::ChangeKind;

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
            b.iter(|| compile::compile_shared(&view).expect("consistent"))
        });
        g.bench_function("class", |b| {
            b.iter(|| compile::compile_class(&view, &proxy))
        });
        g.bench_function("full", |b| {
            b.iter(|| {
                let view = common::view(&index);
                let shared = compile::compile_shared(&view).expect("consistent");
                let class = compile::compile_class(&view, &proxy);
                compile::assemble(proxy.class_key(), &shared, &class).expect("consistent")
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
    let class = compile::compile_class(&view, &proxy);
    // The push engine keeps this cache between rounds: unchanged services are not re-encoded.
    let mut cache = compile::SharedCache::default();
    compile::compile_shared_cached(&view, &mut cache).expect("consistent");
    let mut g = c.benchmark_group(format!("incremental/{services}x10"));
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    // One endpoint replaced: the file is rewritten and reloaded outside the measurement; the
    // measured part is what the push engine runs for an endpoint-only change.
    g.bench_function("one_endpoint", |b| {
        b.iter_batched(
            || {
                let p = mesh.plan(ChangeKind::Endpoint).expect("plan");
                mesh.apply(&p).expect("apply");
                let (objects, _) = meshpilot::source::files::load_dirs(&[dir.path().to_path_buf()]);
                objects
            },
            |objects| {
                index.reset("files", objects);
                let view = common::view(&index);
                let shared = compile::compile_shared_cached(&view, &mut cache).expect("consistent");
                compile::assemble(proxy.class_key(), &shared, &class).expect("consistent")
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, full, incremental);
criterion_main!(benches);
