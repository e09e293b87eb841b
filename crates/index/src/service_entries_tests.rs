//! Unit tests of the services and endpoints ServiceEntries and WorkloadEntries give a view,
//! and of how VirtualService `tcp`/`tls` routes to unknown hosts are reported.

use serde_json::json;

use super::*;
use meshpilot_model::test_helpers::*;

fn view_of(objects: Vec<Object>) -> View {
    let mut index = Index::new();
    index.reset(SourceId::Files, objects);
    index.build_view("cluster.local", None)
}

/// A WorkloadEntry with metadata labels `meta` over its spec.
fn entry_with_meta(name: &str, spec: serde_json::Value, meta: &[(&str, &str)]) -> Object {
    let mut o = mk_istio("WorkloadEntry", "default", name, spec);
    o.meta.labels = labels(meta);
    o
}

/// The ServiceEntry `ext` selecting `app: vm` workloads on port 80.
fn selecting_service_entry() -> Object {
    mk_istio(
        "ServiceEntry",
        "default",
        "ext",
        json!({"hosts": ["vm.example.com"], "ports": [{"number": 80, "name": "http"}],
               "resolution": "STATIC", "workloadSelector": {"labels": {"app": "vm"}}}),
    )
}

/// As istiod's `ConvertWorkloadEntry`: the metadata labels join the spec's and win over them,
/// so a selector or a subset on a metadata label finds the entry.
#[test]
fn workload_entry_metadata_labels_join_and_win_over_spec_labels() {
    let v = view_of(vec![
        selecting_service_entry(),
        entry_with_meta(
            "vm-1",
            json!({"address": "10.9.0.1", "labels": {"app": "vm", "version": "spec"}}),
            &[("version", "v2"), ("team", "a")],
        ),
    ]);
    let eps = &v.lookup("vm.example.com").expect("SE host").endpoints[&80];
    assert_eq!(eps.len(), 1, "{eps:?}");
    let subset = labels(&[("version", "v2"), ("team", "a")]);
    assert!(eps[0].selected_by(&subset), "{:?}", eps[0].labels);
    assert!(!eps[0].selected_by(&labels(&[("version", "spec")])));
}

/// An entry whose spec has labels is still selected by a label only its metadata carries.
#[test]
fn a_selector_on_a_metadata_label_selects_an_entry_with_spec_labels() {
    let v = view_of(vec![
        selecting_service_entry(),
        entry_with_meta(
            "vm-1",
            json!({"address": "10.9.0.1", "labels": {"tier": "backend"}}),
            &[("app", "vm")],
        ),
    ]);
    let eps = &v.lookup("vm.example.com").expect("SE host").endpoints[&80];
    assert_eq!(
        eps.iter().map(|e| e.address.as_str()).collect::<Vec<_>>(),
        ["10.9.0.1"]
    );
}

/// Without `spec.locality` an entry's locality comes from its `topology.istio.io/locality`
/// (else `istio-locality`) label, `.` standing for `/`; `spec.locality` wins when set. The
/// same holds for a ServiceEntry's inline endpoints.
#[test]
fn workload_entry_locality_falls_back_to_the_locality_label() {
    let v = view_of(vec![
        selecting_service_entry(),
        entry_with_meta(
            "labelled",
            json!({"address": "10.9.0.1", "labels": {"app": "vm"}}),
            &[("topology.istio.io/locality", "r1.z1.s1")],
        ),
        entry_with_meta(
            "legacy",
            json!({"address": "10.9.0.2", "labels": {"app": "vm", "istio-locality": "r2.z2"}}),
            &[],
        ),
        entry_with_meta(
            "spec",
            json!({"address": "10.9.0.3", "labels": {"app": "vm"}, "locality": "r3/z3"}),
            &[("topology.istio.io/locality", "r9.z9")],
        ),
        mk_istio(
            "ServiceEntry",
            "default",
            "inline",
            json!({"hosts": ["inline.example.com"], "ports": [{"number": 80, "name": "http"}],
                   "resolution": "STATIC", "endpoints": [
                       {"address": "10.8.0.1", "labels": {"istio-locality": "r4.z4"}}]}),
        ),
    ]);
    let localities = |host: &str| {
        v.lookup(host).expect("SE host").endpoints[&80]
            .iter()
            .map(|e| {
                (
                    e.address.to_string(),
                    e.locality.clone().unwrap_or_default(),
                )
            })
            .collect::<Vec<_>>()
    };
    let mut vm = localities("vm.example.com");
    vm.sort();
    assert_eq!(
        vm,
        [
            ("10.9.0.1".to_string(), "r1/z1/s1".to_string()),
            ("10.9.0.2".to_string(), "r2/z2".to_string()),
            ("10.9.0.3".to_string(), "r3/z3".to_string()),
        ]
    );
    assert_eq!(
        localities("inline.example.com"),
        [("10.8.0.1".to_string(), "r4/z4".to_string())]
    );
}
