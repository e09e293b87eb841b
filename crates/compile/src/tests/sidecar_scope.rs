//! A Sidecar's `egress` scopes the clusters and endpoints of the sidecars it applies to, as
//! istiod's `SidecarScope` does, with one scoped set shared by all its classes.

use super::*;

fn sidecar_in(ns: &str, app: &str) -> Proxy {
    proxy(
        &format!("sidecar~127.0.0.20~{app}.{ns}~{ns}.svc.cluster.local"),
        &[("app", app)],
        true,
    )
}

/// `web` and `db` in `shop`, `pay` (two ports) and `audit` in `bank`, each with a pod, and a
/// Sidecar scoping `shop`'s `client` pods to their own namespace.
fn mesh(egress: Value) -> Vec<Object> {
    vec![
        mk_service("shop", "web", &[80]),
        mk_service("shop", "db", &[5432]),
        mk_service("bank", "pay", &[80, 9000]),
        mk_service("bank", "audit", &[80]),
        mk_pod("shop", "w1", "10.0.0.1", &[("app", "web")]),
        mk_pod("shop", "d1", "10.0.0.2", &[("app", "db")]),
        mk_pod("bank", "p1", "10.0.1.1", &[("app", "pay")]),
        mk_pod("bank", "a1", "10.0.1.2", &[("app", "audit")]),
        mk_istio(
            "Sidecar",
            "shop",
            "client-scope",
            json!({"workloadSelector": {"labels": {"app": "client"}}, "egress": egress}),
        ),
    ]
}

fn names(j: &Value, t: &str) -> Vec<String> {
    j[t].as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn a_sidecars_egress_hosts_scope_its_clusters_and_endpoints() {
    let (j, _) = compile_json(
        mesh(json!([{"hosts": ["./*"]}])),
        &sidecar_in("shop", "client"),
    );
    assert_eq!(
        names(&j, "cds"),
        vec![
            "BlackHoleCluster",
            "PassthroughCluster",
            "outbound|5432||db.shop.svc.cluster.local",
            "outbound|80||web.shop.svc.cluster.local",
        ]
    );
    assert_eq!(
        names(&j, "eds"),
        vec![
            "outbound|5432||db.shop.svc.cluster.local",
            "outbound|80||web.shop.svc.cluster.local",
        ]
    );
    // A sidecar the Sidecar does not select sees every service.
    let (j, _) = compile_json(
        mesh(json!([{"hosts": ["./*"]}])),
        &sidecar_in("shop", "other"),
    );
    assert!(j["cds"]["outbound|80||pay.bank.svc.cluster.local"].is_object());
    assert!(j["eds"]["outbound|80||audit.bank.svc.cluster.local"].is_object());
}

#[test]
fn an_egress_port_keeps_only_that_port_of_the_hosts_it_imports() {
    let egress = json!([{"port": {"number": 9000, "protocol": "TCP", "name": "tcp"},
                         "hosts": ["bank/*"]}, {"hosts": ["./web.shop.svc.cluster.local"]}]);
    let (j, _) = compile_json(mesh(egress), &sidecar_in("shop", "client"));
    assert_eq!(
        names(&j, "cds"),
        vec![
            "BlackHoleCluster",
            "PassthroughCluster",
            "outbound|80||web.shop.svc.cluster.local",
            "outbound|9000||pay.bank.svc.cluster.local",
        ]
    );
}

#[test]
fn the_destinations_of_an_imported_virtual_service_stay_reachable() {
    let mut objects = mesh(json!([{"hosts": ["./*"]}]));
    // In scope (its host is `shop`'s), routing to `bank`'s `pay` on port 80 and mirroring to
    // `audit`; a VirtualService of `bank` is not imported, so its destination stays out.
    objects.push(mk_virtual_service(
        "shop",
        "web-to-pay",
        json!({"hosts": ["web"], "http": [{
            "route": [{"destination": {"host": "pay.bank.svc.cluster.local", "port": {"number": 80}}}],
            "mirror": {"host": "audit.bank.svc.cluster.local"}}]}),
    ));
    objects.push(mk_service("bank", "ledger", &[80]));
    objects.push(mk_virtual_service(
        "bank",
        "audit-to-ledger",
        json!({"hosts": ["audit"], "http": [{
            "route": [{"destination": {"host": "ledger.bank.svc.cluster.local"}}]}]}),
    ));
    let (j, errors) = compile_json(objects, &sidecar_in("shop", "client"));
    assert!(errors.is_empty(), "{errors:?}");
    let cds = names(&j, "cds");
    assert!(cds.contains(&"outbound|80||pay.bank.svc.cluster.local".to_string()));
    assert!(cds.contains(&"outbound|80||audit.bank.svc.cluster.local".to_string()));
    assert!(!cds.contains(&"outbound|9000||pay.bank.svc.cluster.local".to_string()));
    assert!(!cds.contains(&"outbound|80||ledger.bank.svc.cluster.local".to_string()));
    assert!(j["eds"]["outbound|80||pay.bank.svc.cluster.local"].is_object());
}

#[test]
fn one_scoped_set_is_shared_by_the_classes_of_a_sidecar_and_others_keep_the_common_one() {
    let mut index = Index::new();
    index.reset(
        meshpilot_model::SourceId::Files,
        mesh(json!([{"hosts": ["./*"]}])),
    );
    let view = index.build_view("cluster.local", None);
    let shared = compile_shared(&view).expect("consistent");
    let snap =
        |p: &Proxy| assemble(p.class_key(), &shared, &compile_class(&view, p)).expect("consistent");
    let a = snap(&sidecar_in("shop", "client"));
    let mut other_ip = sidecar_in("shop", "client");
    other_ip.ip = "127.0.0.21".parse().expect("address");
    let b = snap(&other_ip);
    assert!(Arc::ptr_eq(
        a.set(XdsType::Cluster),
        b.set(XdsType::Cluster)
    ));
    assert!(Arc::ptr_eq(
        a.set(XdsType::Endpoint),
        b.set(XdsType::Endpoint)
    ));
    let free = snap(&sidecar_in("shop", "other"));
    assert!(Arc::ptr_eq(free.set(XdsType::Cluster), &shared.clusters));
    assert!(Arc::ptr_eq(free.set(XdsType::Endpoint), &shared.endpoints));
}

#[test]
fn a_root_namespace_sidecars_dot_means_each_clients_own_namespace() {
    let mut objects = mesh(json!([]));
    objects.pop();
    objects.push(mk_istio(
        "Sidecar",
        "istio-system",
        "default",
        json!({"egress": [{"hosts": ["./*"]}]}),
    ));
    let (j, _) = compile_json(objects.clone(), &sidecar_in("shop", "client"));
    assert!(j["cds"]["outbound|80||web.shop.svc.cluster.local"].is_object());
    assert!(j["cds"]["outbound|80||pay.bank.svc.cluster.local"].is_null());
    let (j, _) = compile_json(objects, &sidecar_in("bank", "client"));
    assert!(j["cds"]["outbound|80||pay.bank.svc.cluster.local"].is_object());
    assert!(j["cds"]["outbound|80||web.shop.svc.cluster.local"].is_null());
}

#[test]
fn locality_ordered_endpoints_of_a_scoped_class_stay_within_its_scope() {
    let mut objects = mesh(json!([{"hosts": ["./*"]}]));
    for (ns, host) in [
        ("shop", "web.shop.svc.cluster.local"),
        ("bank", "pay.bank.svc.cluster.local"),
    ] {
        objects.push(mk_istio(
            "DestinationRule",
            ns,
            host.split('.').next().unwrap_or_default(),
            json!({"host": host, "trafficPolicy": {"outlierDetection": {"consecutive5xxErrors": 5}}}),
        ));
    }
    let mut index = Index::new();
    index.reset(meshpilot_model::SourceId::Files, objects);
    let view = index.build_view("cluster.local", None);
    let shared = compile_shared(&view).expect("consistent");
    let client = sidecar_in("shop", "client");
    let out = compile_class(&view, &client);
    let key = locality_key(&shared, &client, &out).expect("locality-aware clusters");
    let endpoints = locality_endpoints(&shared, &key);
    let snap = assemble_with_endpoints(client.class_key(), &shared, &out, Some(endpoints))
        .expect("consistent");
    let eds = &snap.get(XdsType::Endpoint).items;
    assert!(eds.contains_key("outbound|80||web.shop.svc.cluster.local"));
    assert!(!eds.contains_key("outbound|80||pay.bank.svc.cluster.local"));
}
