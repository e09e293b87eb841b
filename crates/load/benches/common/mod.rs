//! Shared set-up of the criterion benches: a generated mesh loaded into an index, the way the
//! server loads it (file source → index → view), plus the load tool's proxy.
//!
//! Under `cargo test` (no `--bench` argument) the benches run once each as a smoke check, so
//! sizes are divided by [`scale`] there to keep the test suite fast.

use std::collections::BTreeMap;
use std::path::Path;

use meshpilot_index::{Index, View};
use meshpilot_load::mesh::{Mesh, MeshSpec};
use meshpilot_model::Proxy;
use meshpilot_model::proxy::MetadataValue;

/// 1 under `cargo bench`, 100 under `cargo test`.
pub fn scale() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        1
    } else {
        100
    }
}

/// `services` × `endpoints` (EndpointSlices, 10 namespaces), loaded into an index.
pub fn index(dir: &Path, services: usize, endpoints: usize) -> (Mesh, Index) {
    let mesh = Mesh::new(MeshSpec::plain(services, endpoints, 10), dir);
    mesh.write().expect("write mesh");
    let (objects, errors) = meshpilot_source::files::load_dirs(&[dir.to_path_buf()]);
    assert!(errors.is_empty(), "{errors:?}");
    let mut index = Index::new();
    index.reset(meshpilot_model::SourceId::Files, objects);
    (mesh, index)
}

pub fn view(index: &Index) -> View {
    index.build_view("cluster.local", None)
}

/// A sidecar in `ns-0`, as the load tool connects it.
pub fn proxy() -> Proxy {
    let meta: BTreeMap<String, MetadataValue> = [(
        "NAMESPACE".to_string(),
        MetadataValue::String("ns-0".to_string()),
    )]
    .into();
    Proxy::parse(
        &meshpilot_load::node_id(0, "ns-0", meshpilot_load::Interception::Redirect),
        &meta,
    )
    .expect("node id")
}
