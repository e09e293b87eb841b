//! The mesh configuration's `exportTo` defaults, filled in by the view for objects that set no
//! `exportTo` of their own.

use std::sync::Arc;

use meshpilot_model::test_helpers::*;
use meshpilot_model::{Body, ExportDefaults, Object, SourceId, exported_to};

use crate::{Index, View};

const HOST: &str = "reviews.shop.svc.cluster.local";

fn view_with(defaults: ExportDefaults, objects: Vec<Object>) -> View {
    let mut index = Index::new();
    index.reset(SourceId::Files, objects);
    let mut seed = View::default();
    seed.export_defaults = Arc::new(defaults);
    index.build_view("cluster.local", Some(&seed))
}

fn own_namespace() -> Vec<String> {
    vec![".".to_string()]
}

fn with_export(mut o: Object, export_to: &[&str]) -> Object {
    let list = export_to.iter().map(|e| e.to_string()).collect();
    match &mut o.body {
        Body::DestinationRule(dr) => dr.export_to = list,
        Body::VirtualService(vs) => vs.export_to = list,
        Body::Service(svc) => svc.export_to = list,
        _ => panic!("no exportTo"),
    }
    o
}

#[test]
fn a_destination_rule_without_export_to_takes_the_mesh_default() {
    let defaults = ExportDefaults {
        destination_rule: own_namespace(),
        ..ExportDefaults::default()
    };
    let picked = |v: &View, client: &str| {
        v.destination_rule_for(&v.services[HOST], client)
            .map(|d| d.key.name.to_string())
    };
    let v = view_with(
        defaults.clone(),
        vec![
            mk_service("shop", "reviews", &[9080]),
            mk_destination_rule("shop", "reviews", HOST, &["v1"]),
        ],
    );
    assert_eq!(picked(&v, "shop").as_deref(), Some("reviews"));
    assert_eq!(
        picked(&v, "front"),
        None,
        "exported to its own namespace only"
    );

    // Its own `exportTo` wins over the default.
    let v = view_with(
        defaults,
        vec![
            mk_service("shop", "reviews", &[9080]),
            with_export(
                mk_destination_rule("shop", "reviews", HOST, &["v1"]),
                &["*"],
            ),
        ],
    );
    assert_eq!(picked(&v, "front").as_deref(), Some("reviews"));

    // Without a default, every namespace (istiod's default).
    let v = view_with(
        ExportDefaults::default(),
        vec![
            mk_service("shop", "reviews", &[9080]),
            mk_destination_rule("shop", "reviews", HOST, &["v1"]),
        ],
    );
    assert_eq!(picked(&v, "front").as_deref(), Some("reviews"));
}

#[test]
fn services_and_virtual_services_without_export_to_take_the_mesh_default() {
    let defaults = ExportDefaults {
        service: own_namespace(),
        virtual_service: vec!["front".to_string()],
        ..ExportDefaults::default()
    };
    let vs = || {
        mk_virtual_service(
            "shop",
            "reviews",
            serde_json::json!({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}),
        )
    };
    let v = view_with(
        defaults,
        vec![
            mk_service("shop", "reviews", &[9080]),
            with_export(mk_service("shop", "ratings", &[9080]), &["*"]),
            vs(),
        ],
    );
    let reviews = &v.services[HOST];
    assert!(exported_to(&reviews.export_to, "shop", "shop"));
    assert!(!exported_to(&reviews.export_to, "shop", "front"));
    let ratings = &v.services["ratings.shop.svc.cluster.local"];
    assert!(exported_to(&ratings.export_to, "shop", "front"));
    let vs = &v.virtual_services[0];
    assert!(exported_to(&vs.spec.export_to, "shop", "front"));
    assert!(!exported_to(&vs.spec.export_to, "shop", "back"));
}
