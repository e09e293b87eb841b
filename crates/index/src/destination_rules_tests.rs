//! istiod's DestinationRule lookup per client namespace, and `exportTo`.

use meshpilot_model::test_helpers::*;
use meshpilot_model::{Body, Object, ROOT_NAMESPACE, SourceId};

use crate::{Index, View};

fn view_of(objects: Vec<Object>) -> View {
    let mut index = Index::new();
    index.reset(SourceId::Files, objects);
    index.build_view("cluster.local", None)
}

/// A rule for `host` exported to `export_to`.
fn rule(ns: &str, name: &str, host: &str, export_to: &[&str]) -> Object {
    let mut o = mk_destination_rule(ns, name, host, &["v1"]);
    if let Body::DestinationRule(dr) = &mut o.body {
        dr.export_to = export_to.iter().map(|e| e.to_string()).collect();
    }
    o
}

/// The name of the rule clients in `client` get for `reviews.shop` (`None`: other namespaces).
fn picked(v: &View, client: Option<&str>) -> Option<String> {
    let svc = &v.services["reviews.shop.svc.cluster.local"];
    match client {
        Some(ns) => v.destination_rule_for(svc, ns),
        None => v.destination_rule(svc),
    }
    .map(|d| d.key.name.to_string())
}

const HOST: &str = "reviews.shop.svc.cluster.local";

#[test]
fn the_clients_namespace_then_the_services_then_the_root() {
    let v = view_of(vec![
        mk_service("shop", "reviews", &[9080]),
        rule("front", "front-own", HOST, &[]),
        rule("shop", "shop-wide", HOST, &[]),
        rule(ROOT_NAMESPACE, "mesh", "*.svc.cluster.local", &[]),
    ]);
    assert_eq!(picked(&v, Some("front")).as_deref(), Some("front-own"));
    assert_eq!(picked(&v, Some("shop")).as_deref(), Some("shop-wide"));
    assert_eq!(picked(&v, Some("back")).as_deref(), Some("shop-wide"));
    assert_eq!(picked(&v, None).as_deref(), Some("shop-wide"));

    // Without the service namespace's rule, the root namespace's applies.
    let v = view_of(vec![
        mk_service("shop", "reviews", &[9080]),
        rule("front", "front-own", HOST, &[]),
        rule(ROOT_NAMESPACE, "mesh", "*.svc.cluster.local", &[]),
    ]);
    assert_eq!(picked(&v, Some("front")).as_deref(), Some("front-own"));
    assert_eq!(picked(&v, Some("back")).as_deref(), Some("mesh"));
    assert_eq!(picked(&v, None).as_deref(), Some("mesh"));
    assert_eq!(
        v.distinct_rule_namespaces()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        vec!["front", ROOT_NAMESPACE]
    );
}

#[test]
fn export_to_decides_who_sees_a_rule() {
    let v = view_of(vec![
        mk_service("shop", "reviews", &[9080]),
        rule("shop", "private", HOST, &["."]),
    ]);
    assert_eq!(picked(&v, Some("shop")).as_deref(), Some("private"));
    assert_eq!(picked(&v, Some("front")), None);
    assert_eq!(picked(&v, None), None);

    // A list of namespaces: those, and no other.
    let v = view_of(vec![
        mk_service("shop", "reviews", &[9080]),
        rule("shop", "listed", HOST, &["front"]),
        rule(ROOT_NAMESPACE, "mesh", HOST, &["*"]),
    ]);
    assert_eq!(picked(&v, Some("front")).as_deref(), Some("listed"));
    assert_eq!(picked(&v, Some("back")).as_deref(), Some("mesh"));
    assert_eq!(picked(&v, None).as_deref(), Some("mesh"));
    // Not exported to its own namespace: its clients fall through to the root's.
    assert_eq!(picked(&v, Some("shop")).as_deref(), Some("mesh"));

    // `~`: nobody, not even its own namespace.
    let v = view_of(vec![
        mk_service("shop", "reviews", &[9080]),
        rule("shop", "hidden", HOST, &["~"]),
    ]);
    assert_eq!(picked(&v, Some("shop")), None);
    assert_eq!(picked(&v, Some("front")), None);

    // A rule of a client's namespace exported elsewhere only is not its own.
    let v = view_of(vec![
        mk_service("shop", "reviews", &[9080]),
        rule("front", "for-back", HOST, &["back"]),
    ]);
    assert_eq!(picked(&v, Some("front")), None);
    // Only a service's or the root namespace's rules reach other namespaces.
    assert_eq!(picked(&v, Some("back")), None);
}

#[test]
fn the_root_namespaces_private_rules_serve_its_own_clients_first() {
    let v = view_of(vec![
        mk_service("shop", "reviews", &[9080]),
        rule("shop", "shop-wide", HOST, &[]),
        rule(ROOT_NAMESPACE, "mesh-private", HOST, &["."]),
    ]);
    assert_eq!(
        picked(&v, Some(ROOT_NAMESPACE)).as_deref(),
        Some("mesh-private")
    );
    assert_eq!(picked(&v, Some("front")).as_deref(), Some("shop-wide"));
}

#[test]
fn rules_of_one_namespace_merge_per_client_view() {
    let v = view_of(vec![
        mk_service("shop", "reviews", &[9080]),
        mk_destination_rule("front", "a", HOST, &["v1"]),
        mk_destination_rule("front", "b", HOST, &["v2"]),
    ]);
    let svc = &v.services[HOST];
    let merged = v.destination_rule_for(svc, "front").expect("a rule");
    let subsets: Vec<&str> = merged.spec.subsets.iter().map(|s| &*s.name).collect();
    assert_eq!(subsets, vec!["v1", "v2"]);
    assert!(v.destination_rule(svc).is_none());
    assert!(v.destination_rule_for(svc, "shop").is_none());
}
