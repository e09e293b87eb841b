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
