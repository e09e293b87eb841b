//! Unit tests of the mesh generator: the files it writes read back as the objects it meant, and
//! each mutator rewrites its file and names what a proxy should then see.

use super::*;

fn spec() -> MeshSpec {
    MeshSpec {
        services: 4,
        endpoints: 2,
        namespaces: 2,
        virtual_services: 2,
        destination_rules: 1,
        endpoint_kind: EndpointKind::Pods,
        namespace_rules: 0,
        localities: 0,
        sidecars: false,
    }
}

#[test]
fn writes_every_object_and_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = Mesh::new(spec(), dir.path());
    mesh.write().expect("write");
    let (objects, errors) = meshpilot_source::files::load_dirs(&[dir.path().to_path_buf()]);
    assert!(errors.is_empty(), "{errors:?}");
    // 2 namespaces + 4 services + 8 pods + 1 DR + 2 VS.
    assert_eq!(objects.len(), 17, "{objects:#?}");
    let again = Mesh::open(dir.path()).expect("open");
    assert_eq!(again.spec, spec());
}

#[test]
fn mutators_rewrite_files_and_name_what_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mesh = Mesh::new(spec(), dir.path());
    mesh.write().expect("write");
    let svc0 = dir.path().join("ns-0/svc-0.yaml");
    let before = std::fs::read_to_string(&svc0).expect("read");

    let p = mesh.plan(ChangeKind::Endpoint).expect("plan");
    let Expect::Endpoint { cla, ip } = &p.expect else {
        panic!("{:?}", p.expect)
    };
    assert_eq!(cla, "outbound|80||svc-0.ns-0.svc.cluster.local");
    mesh.apply(&p).expect("apply");
    let after = std::fs::read_to_string(&svc0).expect("read");
    assert!(after.contains(ip.as_str()) && !before.contains(ip.as_str()));

    let p = mesh.plan(ChangeKind::Weight).expect("plan");
    assert!(
        matches!(&p.expect, Expect::Weight { cluster, .. } if cluster == "outbound|80|v1|svc-0.ns-0.svc.cluster.local"),
        "{:?}",
        p.expect
    );
    mesh.apply(&p).expect("apply");

    let p = mesh.plan(ChangeKind::AddService).expect("plan");
    mesh.apply(&p).expect("apply");
    let p = mesh.plan(ChangeKind::RemoveService).expect("plan");
    mesh.apply(&p).expect("apply");
    assert!(matches!(p.expect, Expect::ClusterAbsent { .. }));

    let phantom = mesh.plan(ChangeKind::Phantom).expect("plan");
    mesh.apply(&phantom).expect("apply writes nothing");

    mesh.touch_noop().expect("noop");
    mesh.restore().expect("restore");
    assert_eq!(std::fs::read_to_string(&svc0).expect("read"), before);
    let (_, errors) = meshpilot_source::files::load_dirs(&[dir.path().to_path_buf()]);
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn zones_span_one_region_or_two() {
    assert_eq!(zone_locality(0, 1), ("region-0".into(), "zone-0".into()));
    let three: Vec<(String, String)> = (0..3).map(|z| zone_locality(z, 3)).collect();
    assert_eq!(
        three,
        [
            ("region-0".to_string(), "zone-0".to_string()),
            ("region-0".to_string(), "zone-1".to_string()),
            ("region-1".to_string(), "zone-2".to_string()),
        ]
    );
}

fn scoped_spec() -> MeshSpec {
    MeshSpec {
        services: 6,
        endpoints: 3,
        namespaces: 3,
        virtual_services: 0,
        destination_rules: 1,
        endpoint_kind: EndpointKind::Pods,
        namespace_rules: 2,
        localities: 3,
        sidecars: true,
    }
}

/// Namespace rules, localities and Sidecars read back as the objects the server sees, with no
/// diagnostic.
#[test]
fn namespace_rules_localities_and_sidecars_read_back() {
    use meshpilot_model::Body;
    let dir = tempfile::tempdir().expect("tempdir");
    Mesh::new(scoped_spec(), dir.path()).write().expect("write");
    let (objects, diagnostics) = meshpilot_source::files::load_dirs(&[dir.path().to_path_buf()]);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");

    // Every service's Pods cover the three zones, in two regions.
    for i in 0..6 {
        let zones: BTreeSet<Option<&str>> = objects
            .iter()
            .filter_map(|o| match &o.body {
                Body::Pod(w) if w.labels.get("app") == Some(&format!("svc-{i}")) => {
                    Some(w.locality.as_deref())
                }
                _ => None,
            })
            .collect();
        let want: BTreeSet<Option<&str>> = [
            Some("region-0/zone-0"),
            Some("region-0/zone-1"),
            Some("region-1/zone-2"),
        ]
        .into();
        assert_eq!(zones, want, "svc-{i}");
    }

    let rules: Vec<(&str, &meshpilot_model::DestinationRule)> = objects
        .iter()
        .filter_map(|o| match &o.body {
            Body::DestinationRule(r) => Some((o.meta.namespace.as_str(), r)),
            _ => None,
        })
        .collect();
    // Each service's own rule has outlier detection (svc-0 keeps its subsets too).
    let own: Vec<_> = rules
        .iter()
        .filter(|(_, r)| !r.host.contains('.'))
        .collect();
    assert_eq!(own.len(), 6, "{own:#?}");
    assert!(own.iter().all(|(_, r)| {
        r.traffic_policy
            .as_ref()
            .is_some_and(|p| p.outlier_detection.is_some())
    }));
    assert!(
        own.iter()
            .any(|(_, r)| r.host == "svc-0" && r.subsets.len() == 2)
    );
    // ns-0 and ns-1 (not ns-2) have rules of their own for the next namespace's services,
    // visible to themselves only.
    let mut namespace_rules: Vec<(&str, &str)> = rules
        .iter()
        .filter(|(_, r)| r.host.contains('.'))
        .inspect(|(_, r)| {
            assert_eq!(r.export_to, ["."]);
            assert!(r.traffic_policy.as_ref().is_some_and(|p| {
                p.load_balancer
                    .as_ref()
                    .is_some_and(|lb| lb.simple == Some(meshpilot_model::SimpleLb::RoundRobin))
            }));
        })
        .map(|(ns, r)| (*ns, r.host.as_str()))
        .collect();
    namespace_rules.sort();
    assert_eq!(
        namespace_rules,
        [
            ("ns-0", "svc-1.ns-1.svc.cluster.local"),
            ("ns-0", "svc-4.ns-1.svc.cluster.local"),
            ("ns-1", "svc-2.ns-2.svc.cluster.local"),
            ("ns-1", "svc-5.ns-2.svc.cluster.local"),
        ]
    );

    // One Sidecar per namespace, scoped to itself, the next namespace and istio-system.
    let mut sidecars: Vec<(&str, Vec<&str>)> = objects
        .iter()
        .filter_map(|o| match &o.body {
            Body::Sidecar(s) => Some((
                o.meta.namespace.as_str(),
                s.egress[0].hosts.iter().map(String::as_str).collect(),
            )),
            _ => None,
        })
        .collect();
    sidecars.sort();
    assert_eq!(
        sidecars,
        [
            ("ns-0", vec!["./*", "ns-1/*", "istio-system/*"]),
            ("ns-1", vec!["./*", "ns-2/*", "istio-system/*"]),
            ("ns-2", vec!["./*", "ns-0/*", "istio-system/*"]),
        ]
    );
}

/// With localities an added service gets an outlier-detection rule, and restoring the mesh
/// removes it with the service.
#[test]
fn restore_removes_an_added_services_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mesh = Mesh::new(scoped_spec(), dir.path());
    mesh.write().expect("write");
    let p = mesh.plan(ChangeKind::AddService).expect("plan");
    mesh.apply(&p).expect("apply");
    let added: Vec<PathBuf> = std::fs::read_dir(dir.path().join("ns-0"))
        .expect("read dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("added-"))
        .collect();
    assert_eq!(added.len(), 2, "service and rule: {added:?}");
    mesh.restore().expect("restore");
    assert!(added.iter().all(|p| !p.exists()), "{added:?}");
}

#[test]
fn localities_with_endpoint_slices_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = MeshSpec {
        endpoint_kind: EndpointKind::Slices,
        ..scoped_spec()
    };
    let err = Mesh::new(spec, dir.path()).write().expect_err("refused");
    assert!(err.to_string().contains("--endpoint-kind pods"), "{err}");
}
