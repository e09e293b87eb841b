//! Encoding benchmarks: snapshot assembly (content hashes and consistency check), and what the
//! xDS server does per stream for one push of a whole type: the naive way (wrap every resource
//! in `Any`, a copy of its bytes, and encode Envoy's DiscoveryResponse) against what the server
//! does (write the set's shared, pre-encoded `resources` field plus version and nonce).

mod common;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::google::protobuf::Any;
use meshpilot_snapshot::{Snapshot, XdsType};
use meshpilot_xds::wire::{SotwResponse, sotw_resources};
use prost::Message;

/// The SotW response of type `t` as the server builds it for one stream.
fn response(snap: &Snapshot, t: XdsType) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: snap.get(t).version.clone(),
        resources: snap
            .get(t)
            .items
            .values()
            .map(|r| Any {
                type_url: t.type_url().to_string(),
                value: r.body.to_vec(),
            })
            .collect(),
        type_url: t.type_url().to_string(),
        nonce: "1".to_string(),
        ..Default::default()
    }
}

fn encode(c: &mut Criterion) {
    for services in [10_000, 1_000] {
        let services = services / common::scale();
        let dir = tempfile::tempdir().expect("tempdir");
        let (_mesh, index) = common::index(dir.path(), services, 10);
        let view = common::view(&index);
        let proxy = common::proxy();
        let shared = meshpilot_compile::compile_shared(&view).expect("consistent");
        let class = meshpilot_compile::compile_class(&view, &proxy);
        let snap =
            meshpilot_compile::assemble(proxy.class_key(), &shared, &class).expect("consistent");
        let mut g = c.benchmark_group(format!("encode/{services}x10"));
        g.sample_size(10).measurement_time(Duration::from_secs(5));
        g.bench_function("assemble_snapshot", |b| {
            b.iter(|| {
                meshpilot_compile::assemble(proxy.class_key(), &shared, &class).expect("consistent")
            })
        });
        for t in [XdsType::Cluster, XdsType::Endpoint] {
            let bytes = response(&snap, t).encoded_len();
            g.bench_function(format!("sotw_{t}_naive_{}KiB", bytes / 1024), |b| {
                b.iter(|| response(&snap, t).encode_to_vec())
            });
            g.bench_function(format!("sotw_{t}_shared_{}KiB", bytes / 1024), |b| {
                b.iter(|| {
                    SotwResponse {
                        version_info: snap.get(t).version.clone(),
                        resources: sotw_resources(t, snap.get(t)),
                        count: snap.get(t).items.len(),
                        type_url: t.type_url().to_string(),
                        nonce: "1".to_string(),
                    }
                    .encode_to_vec()
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, encode);
criterion_main!(benches);
