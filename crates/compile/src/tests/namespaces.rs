//! Clusters per client namespace: a namespace's own DestinationRules, rules' `exportTo`, and
//! services exported to some namespaces only.

use super::*;
use meshpilot_model::Body;

fn sidecar_in(ns: &str) -> Proxy {
    proxy(
        &format!("sidecar~127.0.0.20~client.{ns}~{ns}.svc.cluster.local"),
        &[("app", "client")],
        true,
    )
}

fn exported(mut o: Object, to: &[&str]) -> Object {
    let to: Vec<String> = to.iter().map(|s| s.to_string()).collect();
    match &mut o.body {
        Body::Service(s) => s.export_to = to,
        Body::DestinationRule(d) => d.export_to = to,
        _ => unreachable!("only services and rules are exported here"),
    }
    o
}

/// `reviews` and `ratings` in `shop`, with pods of versions v1 and v2.
fn mesh() -> Vec<Object> {
    vec![
        mk_service("shop", "reviews", &[9080]),
        mk_service("shop", "ratings", &[9080]),
        mk_pod(
            "shop",
            "r1",
            "10.0.0.1",
            &[("app", "reviews"), ("version", "v1")],
        ),
        mk_pod(
            "shop",
            "r2",
            "10.0.0.2",
            &[("app", "reviews"), ("version", "v2")],
        ),
    ]
}

/// The names of the clusters and assignments clients in each of `namespaces` get.
fn names_per_namespace(
    objects: Vec<Object>,
    namespaces: &[&str],
) -> Vec<(Vec<String>, Vec<String>)> {
    let mut index = Index::new();
    index.reset(meshpilot_model::SourceId::Files, objects);
    let view = index.build_view("cluster.local", None);
    let shared = compile_shared(&view).expect("consistent shared set");
    namespaces
        .iter()
        .map(|ns| {
            let p = sidecar_in(ns);
            let snap = assemble(p.class_key(), &shared, &compile_class(&view, &p))
                .expect("consistent snapshot");
            let names = |t| {
                snap.get(t)
                    .items
                    .keys()
                    .filter(|n| n.starts_with("outbound|"))
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
            };
            (names(XdsType::Cluster), names(XdsType::Endpoint))
        })
        .collect()
}

const V1: &str = "outbound|9080|v1|reviews.shop.svc.cluster.local";
const V2: &str = "outbound|9080|v2|reviews.shop.svc.cluster.local";
const RATINGS: &str = "outbound|9080||ratings.shop.svc.cluster.local";

#[test]
fn a_namespaces_own_rule_makes_its_own_clusters_only() {
    let mut objects = mesh();
    objects.push(mk_destination_rule(
        "front",
        "mine",
        "reviews.shop.svc.cluster.local",
        &["v1"],
    ));
    objects.push(mk_destination_rule("shop", "theirs", "reviews", &["v2"]));
    let got = names_per_namespace(objects, &["front", "back", "shop"]);
    let (front, back, shop) = (&got[0], &got[1], &got[2]);
    assert!(front.0.iter().any(|n| n == V1), "{front:?}");
    assert!(!front.0.iter().any(|n| n == V2), "{front:?}");
    assert!(
        front.1.iter().any(|n| n == V1),
        "the subset's assignment: {front:?}"
    );
    for other in [back, shop] {
        assert!(other.0.iter().any(|n| n == V2), "{other:?}");
        assert!(!other.0.iter().any(|n| n == V1), "{other:?}");
        assert!(!other.1.iter().any(|n| n == V1), "{other:?}");
    }
    // Hosts no rule of `front` names stay as everyone has them.
    assert!(front.0.iter().any(|n| n == RATINGS));
}

#[test]
fn a_rule_exported_to_its_namespace_serves_no_other() {
    let mut objects = mesh();
    objects.push(exported(
        mk_destination_rule("shop", "private", "reviews", &["v1"]),
        &["."],
    ));
    let got = names_per_namespace(objects, &["shop", "front"]);
    assert!(got[0].0.iter().any(|n| n == V1), "{:?}", got[0]);
    assert!(!got[1].0.iter().any(|n| n == V1), "{:?}", got[1]);
}

#[test]
fn a_service_exported_to_its_namespace_has_no_cluster_elsewhere() {
    let mut objects = mesh();
    objects[1] = exported(mk_service("shop", "ratings", &[9080]), &["."]);
    objects.push(exported(mk_service("shop", "listed", &[80]), &["front"]));
    let listed = "outbound|80||listed.shop.svc.cluster.local";
    let got = names_per_namespace(objects, &["shop", "front", "back"]);
    let has = |i: usize, name: &str| got[i].0.iter().any(|n| n == name);
    assert!(has(0, RATINGS) && !has(0, listed), "{:?}", got[0]);
    assert!(!has(1, RATINGS) && has(1, listed), "{:?}", got[1]);
    assert!(!has(2, RATINGS) && !has(2, listed), "{:?}", got[2]);
    assert!(got[1].1.iter().any(|n| n == listed), "its assignment too");
    assert!(!got[2].1.iter().any(|n| n == RATINGS));
}

/// Rounds through the cache give each namespace the sets of a compile from scratch, reuse the
/// previous sets when nothing changed, and leave namespaces with nothing of their own on the
/// shared sets.
#[test]
fn cached_namespace_sets_equal_a_compile_from_scratch() {
    let base = || {
        let mut o = mesh();
        o.push(mk_destination_rule(
            "front",
            "mine",
            "reviews.shop.svc.cluster.local",
            &["v1"],
        ));
        o
    };
    let mut cache = ClustersAndEndpointsCache::default();
    let mut index = Index::new();
    let mut view: Option<meshpilot_index::View> = None;
    let mut round = |objects: Vec<Object>| {
        index.reset(meshpilot_model::SourceId::Files, objects);
        let v = index.build_view("cluster.local", view.as_ref());
        let got = compile_shared_cached(&v, &mut cache).expect("consistent");
        let fresh = compile_shared(&v).expect("consistent");
        let mut namespaces: Vec<&String> = got.by_namespace.keys().collect();
        namespaces.sort();
        let mut expected: Vec<&String> = fresh.by_namespace.keys().collect();
        expected.sort();
        assert_eq!(namespaces, expected);
        for ns in namespaces {
            assert_eq!(*got.for_namespace(ns).0, *fresh.for_namespace(ns).0, "{ns}");
            assert_eq!(*got.for_namespace(ns).1, *fresh.for_namespace(ns).1, "{ns}");
        }
        view = Some(v);
        got
    };
    let first = round(base());
    let same = round(base());
    assert!(Arc::ptr_eq(&first.by_namespace, &same.by_namespace));
    assert!(Arc::ptr_eq(same.for_namespace("back").0, &same.clusters));
    // An endpoint added to the host `front` has its own clusters for.
    let mut more = base();
    more.push(mk_pod(
        "shop",
        "r3",
        "10.0.0.3",
        &[("app", "reviews"), ("version", "v1")],
    ));
    let got = round(more);
    assert_ne!(
        got.for_namespace("front").1.version,
        same.for_namespace("front").1.version
    );
    // A service newly exported to `back` alone makes `back` a namespace of its own.
    let mut hidden = base();
    hidden.push(exported(mk_service("shop", "only-back", &[80]), &["back"]));
    let got = round(hidden);
    let name = "outbound|80||only-back.shop.svc.cluster.local";
    assert!(got.for_namespace("back").0.items.contains_key(name));
    assert!(!got.for_namespace("front").0.items.contains_key(name));
    assert!(!got.clusters.items.contains_key(name));
    // The rule gone: `front` sees what everyone sees.
    let got = round(mesh());
    assert!(Arc::ptr_eq(got.for_namespace("front").0, &got.clusters));
}
