//! Unit tests of the services and endpoints ServiceEntries and WorkloadEntries give a view,
//! and of how VirtualService `tcp`/`tls` routes to unknown hosts are reported.

use serde_json::json;

use meshpilot_model::{Body, Kind};

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

/// A ServiceEntry for `host` with one port and one static endpoint, created at `created`.
fn entry_for(ns: &str, name: &str, host: &str, address: &str, created: &str) -> Object {
    let mut o = mk_istio(
        "ServiceEntry",
        ns,
        name,
        json!({"hosts": ["other.example.com", host], "ports": [{"number": 80, "name": "http"}],
               "resolution": "STATIC", "endpoints": [{"address": address}]}),
    );
    o.meta.creation = created.to_string();
    o
}

/// The conflict warnings of `v` as (object, field, message).
fn conflicts(v: &View) -> Vec<(String, String, String)> {
    v.diagnostics
        .iter()
        .filter(|d| d.stage == meshpilot_model::Stage::Conflict)
        .map(|d| {
            (
                d.object.name.clone().unwrap_or_default(),
                d.field.clone().unwrap_or_default(),
                d.message.clone(),
            )
        })
        .collect()
}

/// Several ServiceEntries for one host: the oldest serves it, whatever the namespace/name
/// order, and each newer one is warned on that host, naming the one that serves it.
#[test]
fn the_oldest_service_entry_serves_a_shared_host_and_the_others_are_warned() {
    let v = view_of(vec![
        entry_for(
            "a",
            "newer",
            "api.example.com",
            "10.1.0.1",
            "2024-02-01T00:00:00Z",
        ),
        entry_for(
            "b",
            "oldest",
            "api.example.com",
            "10.1.0.2",
            "2024-01-01T00:00:00Z",
        ),
        entry_for(
            "c",
            "newest",
            "api.example.com",
            "10.1.0.3",
            "2024-03-01T00:00:00Z",
        ),
    ]);
    let svc = v.lookup("api.example.com").expect("host served");
    assert_eq!(&*svc.name, "oldest");
    assert_eq!(svc.endpoints[&80][0].address.as_str(), "10.1.0.2");
    let mut warned = conflicts(&v);
    warned.sort();
    let names: Vec<(&str, &str)> = warned
        .iter()
        .map(|(n, f, _)| (n.as_str(), f.as_str()))
        .collect();
    // Both hosts of each newer entry lose to the oldest one.
    assert_eq!(
        names,
        [
            ("newer", "spec.hosts[0]"),
            ("newer", "spec.hosts[1]"),
            ("newest", "spec.hosts[0]"),
            ("newest", "spec.hosts[1]"),
        ]
    );
    assert!(
        warned.iter().all(|(_, _, m)| m.contains("b/oldest")),
        "{warned:?}"
    );
}

/// A ServiceEntry cannot take a Kubernetes Service's host, even when older: the Service
/// serves it and the entry is warned on that host.
#[test]
fn a_kubernetes_service_wins_its_host_over_a_service_entry() {
    let mut service = mk_service("default", "reviews", &[80]);
    service.meta.creation = "2024-06-01T00:00:00Z".to_string();
    let host = "reviews.default.svc.cluster.local";
    let v = view_of(vec![
        service,
        entry_for("other", "squat", host, "10.1.0.9", "2024-01-01T00:00:00Z"),
    ]);
    let svc = v.lookup(host).expect("host served");
    assert_eq!(svc.key.kind, Kind::Service);
    let warned = conflicts(&v);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert_eq!(
        (warned[0].0.as_str(), warned[0].1.as_str()),
        ("squat", "spec.hosts[1]")
    );
    assert!(warned[0].2.contains("default/reviews"), "{warned:?}");
    assert_eq!(
        &*v.lookup("other.example.com").expect("its other host").name,
        "squat"
    );
}

/// As under istiod, a `tcp` or `tls` route to a host nobody declares fails only the
/// connections it carries: the VirtualService serves, with a warning naming the field.
#[test]
fn virtual_service_to_unknown_tcp_or_tls_host_serves_with_a_warning() {
    let v = view_of(vec![
        mk_service("default", "reviews", &[9080]),
        mk_virtual_service(
            "default",
            "partly",
            json!({"hosts": ["reviews"],
                   "tcp": [{"route": [{"destination": {"host": "nope"}}]},
                           {"route": [{"destination": {"host": "reviews"}}]}],
                   "tls": [{"match": [{"sniHosts": ["reviews"]}],
                            "route": [{"destination": {"host": "gone"}}]}]}),
        ),
    ]);
    let names: Vec<&str> = v.virtual_services.iter().map(|vs| &*vs.key.name).collect();
    assert_eq!(names, vec!["partly"]);
    assert_eq!(v.diagnostics.len(), 2, "{:?}", v.diagnostics);
    assert!(
        v.diagnostics
            .iter()
            .all(|d| d.severity == meshpilot_model::Severity::Warning)
    );
    let msgs: Vec<String> = v.diagnostics.iter().map(|d| d.to_string()).collect();
    let tcp = msgs
        .iter()
        .find(|m| m.contains("spec.tcp[0].route[0].destination.host"))
        .expect("the tcp route is warned");
    assert!(tcp.contains("VirtualService default/partly"), "{tcp}");
    assert!(tcp.contains("nope.default.svc.cluster.local"), "{tcp}");
    assert!(
        tcp.contains("the rest of the VirtualService serves"),
        "{tcp}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("spec.tls[0].route[0].destination.host")
                && m.contains("gone.default.svc.cluster.local")),
        "{msgs:?}"
    );
}

/// An edit that points a VirtualService's `tcp` route at a host nobody declares serves the
/// edit (its other routes work), with a warning, rather than the previous version.
#[test]
fn an_edit_to_an_unknown_tcp_host_serves_the_edit_with_a_warning() {
    let mut index = Index::new();
    let good = mk_virtual_service(
        "default",
        "vs",
        json!({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}),
    );
    let edit = mk_virtual_service(
        "default",
        "vs",
        json!({"hosts": ["reviews"], "tcp": [{"route": [{"destination": {"host": "nope"}}]}]}),
    );
    index.reset(
        SourceId::Files,
        vec![mk_service("default", "reviews", &[9080]), good],
    );
    let v1 = index.build_view("cluster.local", None);
    index.reset(
        SourceId::Files,
        vec![mk_service("default", "reviews", &[9080]), edit.clone()],
    );
    let v2 = index.build_view("cluster.local", Some(&v1));
    assert_eq!(v2.virtual_services.len(), 1);
    let Body::VirtualService(spec) = &edit.body else {
        panic!("a VirtualService")
    };
    assert_eq!(&v2.virtual_services[0].spec, spec);
    assert_eq!(
        v2.diagnostics[0].severity,
        meshpilot_model::Severity::Warning
    );
}
