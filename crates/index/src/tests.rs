use serde_json::json;

use super::*;
use meshpilot_model::test_helpers::*;
use meshpilot_model::{Body, Kind, KubeKind, Origin, Stage};

/// A second source beside the files.
const OTHER: SourceId = SourceId::Kube {
    kind: KubeKind::Service,
    scope: 0,
};

fn view_of(objects: Vec<Object>) -> View {
    let mut index = Index::new();
    index.reset(SourceId::Files, objects);
    index.build_view("cluster.local", None)
}

#[test]
fn reset_reports_changed_kinds_only() {
    let mut index = Index::new();
    let c = index.reset(SourceId::Files, vec![mk_service("default", "a", &[80])]);
    assert_eq!(
        c.kinds.iter().copied().collect::<Vec<_>>(),
        vec![Kind::Service]
    );
    let c = index.reset(SourceId::Files, vec![mk_service("default", "a", &[80])]);
    assert!(c.is_empty());
    let c = index.reset(
        SourceId::Files,
        vec![
            mk_service("default", "a", &[80]),
            mk_pod("default", "p", "10.0.0.1", &[("app", "a")]),
        ],
    );
    assert!(c.endpoints_only());
    let c = index.reset(SourceId::Files, vec![]);
    assert!(c.kinds.contains(&Kind::Service) && c.kinds.contains(&Kind::Pod));
}

#[test]
fn update_patches_one_source_and_reports_what_changed() {
    let mut index = Index::new();
    let svc = Arc::new(mk_service("default", "a", &[80]));
    let pod = mk_pod("default", "p", "10.0.0.1", &[("app", "a")]);
    index.reset(SourceId::Files, vec![Object::clone(&svc), pod.clone()]);
    index.reset(OTHER, vec![mk_service("default", "b", &[80])]);
    // The same content again (a new allocation) changes nothing.
    let c = index.update(SourceId::Files, vec![Arc::new(Object::clone(&svc))], &[]);
    assert!(c.is_empty());
    // A moved pod is an endpoint-only change; the other source is untouched.
    let moved = mk_pod("default", "p", "10.0.0.2", &[("app", "a")]);
    let c = index.update(SourceId::Files, vec![Arc::new(moved)], &[]);
    assert!(c.endpoints_only(), "{c:?}");
    let v = index.build_view("cluster.local", None);
    let eps = &v.services["a.default.svc.cluster.local"].endpoints[&80];
    assert_eq!(
        eps.iter().map(|e| e.address.as_str()).collect::<Vec<_>>(),
        ["10.0.0.2"]
    );
    assert!(v.services.contains_key("b.default.svc.cluster.local"));
    // A delete removes the object and reports its kind.
    let c = index.update(SourceId::Files, vec![], &[svc.key()]);
    assert_eq!(
        c.kinds.iter().copied().collect::<Vec<_>>(),
        vec![Kind::Service]
    );
    let v = index.build_view("cluster.local", None);
    assert!(!v.services.contains_key("a.default.svc.cluster.local"));
    assert!(v.services.contains_key("b.default.svc.cluster.local"));
}

#[test]
fn pods_selected_by_service_become_endpoints() {
    let v = view_of(vec![
        mk_service("default", "reviews", &[9080]),
        mk_pod(
            "default",
            "r1",
            "10.0.0.1",
            &[("app", "reviews"), ("version", "v1")],
        ),
        mk_pod(
            "default",
            "r2",
            "10.0.0.2",
            &[("app", "reviews"), ("version", "v2")],
        ),
        mk_pod("other", "r3", "10.0.0.3", &[("app", "reviews")]),
        mk_pod("default", "x", "10.0.0.4", &[("app", "ratings")]),
    ]);
    let svc = v
        .services
        .get("reviews.default.svc.cluster.local")
        .expect("service");
    let eps = &svc.endpoints[&9080];
    let addrs: Vec<&str> = eps.iter().map(|e| e.address.as_str()).collect();
    assert_eq!(addrs, vec!["10.0.0.1", "10.0.0.2"]);
    assert!(eps[0].selected_by(&labels(&[("version", "v1")])));
    assert!(!eps[1].selected_by(&labels(&[("version", "v1")])));
}

#[test]
fn a_headless_service_keeps_its_endpoints_and_passes_connections_through_without_a_warning() {
    let mut headless = mk_service("default", "db", &[5432]);
    if let Body::Service(s) = &mut headless.body {
        s.headless = true;
    }
    let v = view_of(vec![
        headless,
        mk_service("default", "web", &[80]),
        mk_pod("default", "db-0", "10.0.0.1", &[("app", "db")]),
    ]);
    let db = &v.services["db.default.svc.cluster.local"];
    assert_eq!(db.origin, ServiceOrigin::Headless);
    assert_eq!(db.endpoints[&5432].len(), 1);
    assert_eq!(
        v.services["web.default.svc.cluster.local"].origin,
        ServiceOrigin::Kubernetes
    );
    assert!(v.diagnostics.is_empty(), "{:?}", v.diagnostics);
}

/// As under istiod, an HTTP route to a host nobody declares fails only that route: the
/// VirtualService serves, with a warning naming the field.
#[test]
fn virtual_service_to_unknown_http_host_serves_with_a_warning() {
    let v = view_of(vec![
        mk_service("default", "reviews", &[9080]),
        mk_virtual_service(
            "default",
            "partly",
            json!({"hosts": ["reviews"], "http": [
                {"match": [{"uri": {"prefix": "/nope"}}], "route": [{"destination": {"host": "nope"}}]},
                {"route": [{"destination": {"host": "reviews"}}], "mirrors": [{"destination": {"host": "gone"}}]}
            ]}),
        ),
    ]);
    assert_eq!(v.virtual_services.len(), 1);
    let msgs: Vec<String> = v.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(
        v.diagnostics
            .iter()
            .all(|d| d.severity == meshpilot_model::Severity::Warning)
    );
    assert!(
        msgs[0].contains("spec.http[0].route[0].destination.host") && msgs[0].contains("503"),
        "{msgs:?}"
    );
    assert!(
        msgs[1].contains("spec.http[1].mirrors[0].destination.host"),
        "{msgs:?}"
    );
}

#[test]
fn service_entry_hosts_and_dns_endpoints() {
    let v = view_of(vec![mk_istio(
        "ServiceEntry",
        "default",
        "cnn",
        json!({"hosts": ["edition.cnn.com"], "ports": [{"number": 80, "name": "http-port", "protocol": "HTTP"}], "resolution": "DNS"}),
    )]);
    let svc = v.lookup("edition.cnn.com").expect("SE host");
    assert_eq!(svc.endpoints[&80][0].address, "edition.cnn.com");
    assert_eq!(svc.endpoints[&80][0].port, 80);
}

#[test]
fn destination_rule_prefers_service_namespace() {
    let v = view_of(vec![
        mk_service("default", "reviews", &[9080]),
        mk_destination_rule("other", "a", "reviews.default.svc.cluster.local", &["x"]),
        mk_destination_rule("default", "b", "reviews", &["v1"]),
    ]);
    let svc = v.services["reviews.default.svc.cluster.local"].clone();
    assert_eq!(v.destination_rule(&svc).map(|d| &*d.key.name), Some("b"));

    // An exact host beats a wildcard even in the service's own namespace; among equals, the
    // first in precedence order (oldest, then namespace/name) wins; a wildcard alone applies.
    let v = view_of(vec![
        mk_service("default", "reviews", &[9080]),
        mk_service("default", "ratings", &[9080]),
        mk_destination_rule("default", "all", "*.default.svc.cluster.local", &["w"]),
        mk_destination_rule(
            "other",
            "exact",
            "reviews.default.svc.cluster.local",
            &["x"],
        ),
        mk_destination_rule(
            "other",
            "exact-2",
            "reviews.default.svc.cluster.local",
            &["y"],
        ),
    ]);
    let pick = |host: &str| {
        let svc = v.services[host].clone();
        v.destination_rule(&svc).map(|d| d.key.name.clone())
    };
    // As istiod: the service's namespace is searched before other namespaces' rules, and its
    // wildcard matches there; a rule of a third namespace applies only to that namespace's
    // clients.
    assert_eq!(
        pick("reviews.default.svc.cluster.local").as_deref(),
        Some("all")
    );
    let svc = v.services["reviews.default.svc.cluster.local"].clone();
    assert_eq!(
        v.destination_rule_for(&svc, "other")
            .map(|d| d.key.name.clone())
            .as_deref(),
        Some("exact")
    );
    assert_eq!(
        pick("ratings.default.svc.cluster.local").as_deref(),
        Some("all")
    );
}

/// The incremental view after slice-only changes must be exactly the full view.
#[test]
fn slice_changes_update_the_view_as_a_full_build_would() {
    let mut index = Index::new();
    let mut objects = vec![
        mk_service("a", "web", &[80]),
        mk_service("a", "api", &[80]),
        mk_service("b", "web", &[80]),
        mk_pod(
            "a",
            "web-1",
            "10.0.0.1",
            &[("app", "web"), ("version", "v1")],
        ),
        mk_slice("a", "web-x", "web", &[("10.0.0.1", Some("web-1"), true)]),
        mk_slice("a", "api-x", "api", &[("10.0.1.1", None, true)]),
        mk_slice("b", "web-x", "web", &[("10.0.2.1", None, true)]),
        mk_virtual_service(
            "a",
            "r",
            json!({"hosts": ["web"], "http": [{"route": [{"destination": {"host": "web"}}]}]}),
        ),
    ];
    index.reset(SourceId::Files, objects.clone());
    let mut view = index.build_view("cluster.local", None);
    type Step = Box<dyn Fn(&mut Vec<Object>)>;
    let steps: Vec<Step> = vec![
        // An endpoint becomes ready elsewhere, another is added.
        Box::new(|o| {
            o[4] = mk_slice(
                "a",
                "web-x",
                "web",
                &[("10.0.0.1", Some("web-1"), false), ("10.0.0.9", None, true)],
            )
        }),
        // A second slice for the same service.
        Box::new(|o| {
            o.push(mk_slice(
                "a",
                "web-y",
                "web",
                &[("10.0.0.7", Some("web-1"), true)],
            ))
        }),
        // A slice moves to another service, which keeps one of its own.
        Box::new(|o| {
            o[5] = mk_slice("a", "api-x", "web", &[("10.0.1.1", None, true)]);
            o.push(mk_slice("a", "api-y", "api", &[("10.0.1.2", None, false)]));
        }),
        // The last slice of a service goes: its selector takes over (full build).
        Box::new(|o| o.retain(|x| !(x.meta.namespace == "b" && x.kind() == Kind::EndpointSlice))),
    ];
    for (i, step) in steps.iter().enumerate() {
        step(&mut objects);
        let changes = index.reset(SourceId::Files, objects.clone());
        assert!(changes.slices_only(), "step {i}: {changes:?}");
        let incremental = index.build_view_after(&changes, "cluster.local", &view);
        let full = index.build_view("cluster.local", Some(&view));
        if i < 3 {
            // Incremental indeed: a service the change did not touch is the previous one.
            let other = "web.b.svc.cluster.local";
            assert!(
                Arc::ptr_eq(&incremental.services[other], &view.services[other]),
                "step {i}"
            );
        }
        assert_eq!(incremental.services, full.services, "step {i}");
        assert_eq!(incremental.diagnostics, full.diagnostics, "step {i}");
        assert_eq!(
            incremental.virtual_services, full.virtual_services,
            "step {i}"
        );
        view = incremental;
    }
    let web = &view.services["web.a.svc.cluster.local"].endpoints[&80];
    let addrs: Vec<&str> = web.iter().map(|e| e.address.as_str()).collect();
    assert_eq!(addrs, ["10.0.0.7", "10.0.0.9", "10.0.1.1"]);
    assert_eq!(web[0].labels, labels(&[("app", "web"), ("version", "v1")]));
    assert!(view.services["api.a.svc.cluster.local"].endpoints[&80].is_empty());
}

/// After changes to routing objects alone the view keeps the previous services (the same
/// allocations) and is otherwise what a full build gives.
#[test]
fn routing_changes_keep_the_services_and_agree_with_a_full_build() {
    let mut index = Index::new();
    let vs = |weight: i64| {
        mk_virtual_service(
            "a",
            "r",
            json!({"hosts": ["web"], "http": [{"route": [
                {"destination": {"host": "web", "subset": "v1"}, "weight": weight},
                {"destination": {"host": "web", "subset": "v2"}, "weight": 100 - weight}]}]}),
        )
    };
    let mut objects = vec![
        mk_service("a", "web", &[80]),
        mk_pod(
            "a",
            "web-1",
            "10.0.0.1",
            &[("app", "web"), ("version", "v1")],
        ),
        vs(80),
    ];
    index.reset(SourceId::Files, objects.clone());
    let mut view = index.build_view("cluster.local", None);
    type Step = Box<dyn Fn(&mut Vec<Object>)>;
    let steps: Vec<Step> = vec![
        // A weight edit.
        Box::new(move |o| o[2] = vs(30)),
        // A DestinationRule appears: its subsets name the VirtualService's.
        Box::new(|o| o.push(mk_destination_rule("a", "web", "web", &["v1", "v2"]))),
        // The VirtualService now names a host nothing serves in a TCP route: it serves,
        // with a warning.
        Box::new(|o| {
            o[2] = mk_virtual_service(
                "a",
                "r",
                json!({"hosts": ["web"], "tcp": [{"route": [{"destination": {"host": "nope"}}]}]}),
            )
        }),
    ];
    for (i, step) in steps.iter().enumerate() {
        step(&mut objects);
        let changes = index.reset(SourceId::Files, objects.clone());
        assert!(changes.routing_only(), "step {i}: {changes:?}");
        let incremental = index.build_view_after(&changes, "cluster.local", &view);
        let full = index.build_view("cluster.local", Some(&view));
        let web = "web.a.svc.cluster.local";
        assert!(
            Arc::ptr_eq(&incremental.services[web], &view.services[web]),
            "step {i}: the service is the previous one"
        );
        if i == 2 {
            // The DestinationRule did not change: the view holds the same entry, not a copy.
            assert!(Arc::ptr_eq(
                &incremental.destination_rules[0],
                &view.destination_rules[0]
            ));
        }
        assert_eq!(
            serde_json::to_value(&incremental).expect("json"),
            serde_json::to_value(&full).expect("json"),
            "step {i}"
        );
        view = incremental;
    }
    assert_eq!(view.destination_rules.len(), 1);
    assert!(
        view.diagnostics[0]
            .message
            .contains("the rest of the VirtualService serves")
    );
    // A Service change is not a routing change: the next view is built in full.
    objects.push(mk_service("a", "api", &[80]));
    let changes = index.reset(SourceId::Files, objects);
    assert!(!changes.routing_only());
    let next = index.build_view_after(&changes, "cluster.local", &view);
    assert!(next.services.contains_key("api.a.svc.cluster.local"));
}

/// A VirtualService routing to `host`, as defined at `origin`.
fn vs_from(origin: Origin, host: &str) -> Object {
    let mut vs = mk_virtual_service(
        "default",
        "vs",
        json!({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": host}}]}]}),
    );
    vs.meta.origin = origin;
    vs
}

const API_VS: SourceId = SourceId::Kube {
    kind: KubeKind::VirtualService,
    scope: 0,
};

fn served_host(index: &Index) -> String {
    let key = ConfigKey::new(Kind::VirtualService, "default", "vs");
    match &index.objects()[&key].body {
        Body::VirtualService(vs) => vs.http[0].route[0].destination.host.clone(),
        other => panic!("not a VirtualService: {other:?}"),
    }
}

#[test]
fn the_api_serves_over_a_file_defining_the_same_object_whatever_the_order() {
    let file = Origin::File("routes/vs.yaml".into());
    let api = Origin::Kubernetes {
        kind: KubeKind::VirtualService,
    };
    let from_file = || vs_from(file.clone(), "from-file");
    let from_api = || vs_from(api.clone(), "from-api");
    let mut file_first = Index::new();
    file_first.reset(SourceId::Files, vec![from_file()]);
    file_first.reset(API_VS, vec![from_api()]);
    let mut api_first = Index::new();
    api_first.reset(API_VS, vec![from_api()]);
    api_first.reset(SourceId::Files, vec![from_file()]);
    for index in [&file_first, &api_first] {
        assert_eq!(served_host(index), "from-api");
        let conflicts = index.conflicts();
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        assert_eq!(conflicts[0].stage, Stage::Conflict);
        assert_eq!(conflicts[0].origin, file, "the shadowed definition");
        assert_eq!(conflicts[0].serving.as_ref(), Some(&api));
        assert_eq!(conflicts[0].object.name.as_deref(), Some("vs"));
    }
}

#[test]
fn a_conflict_holds_across_unrelated_edits_and_ends_when_one_definition_goes() {
    let mut index = Index::new();
    let api = Origin::Kubernetes {
        kind: KubeKind::VirtualService,
    };
    index.reset(API_VS, vec![vs_from(api, "from-api")]);
    let file_vs = Arc::new(vs_from(Origin::File("vs.yaml".into()), "from-file"));
    index.reset_shared(SourceId::Files, vec![file_vs.clone()]);
    // An unrelated file edit, then an edit of the shadowed definition itself.
    index.update(
        SourceId::Files,
        vec![Arc::new(mk_service("default", "reviews", &[9080]))],
        &[],
    );
    index.update(
        SourceId::Files,
        vec![Arc::new(vs_from(Origin::File("vs.yaml".into()), "edited"))],
        &[],
    );
    assert_eq!(served_host(&index), "from-api", "never flaps to the file");
    assert_eq!(index.conflicts().len(), 1);
    // The API's definition goes: the file's serves, and nothing conflicts any more.
    index.update(API_VS, vec![], &[file_vs.key()]);
    assert_eq!(served_host(&index), "edited");
    assert!(index.conflicts().is_empty());
}

/// A rule with `policy` (Istio's JSON) as its top-level traffic policy.
fn with_policy(mut o: Object, policy: serde_json::Value) -> Object {
    if let Body::DestinationRule(dr) = &mut o.body {
        dr.traffic_policy = Some(serde_json::from_value(policy).expect("valid traffic policy"));
    }
    o
}

/// Several rules of one namespace for one host merge as istiod merges them: every subset (the
/// older rule keeps a name both define), the oldest top-level policy, and a warning naming each
/// part left out; a rule in another namespace stays apart.
#[test]
fn destination_rules_for_one_host_merge() {
    let v = view_of(vec![
        mk_service("default", "reviews", &[9080]),
        mk_destination_rule("default", "a", "reviews", &["v1", "v2"]),
        with_policy(
            mk_destination_rule("default", "b", "reviews", &["v2", "v3"]),
            json!({"loadBalancer": {"simple": "RANDOM"}}),
        ),
        with_policy(
            mk_destination_rule("default", "c", "reviews", &[]),
            json!({"loadBalancer": {"simple": "ROUND_ROBIN"}}),
        ),
        mk_destination_rule("other", "d", "reviews.default.svc.cluster.local", &["x"]),
    ]);
    let svc = v.services["reviews.default.svc.cluster.local"].clone();
    let dr = v.destination_rule(&svc).expect("a rule");
    assert_eq!(&*dr.key.name, "a");
    let subsets: Vec<&str> = dr.spec.subsets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(subsets, ["v1", "v2", "v3"]);
    let lb = dr
        .spec
        .traffic_policy
        .as_ref()
        .and_then(|p| p.load_balancer.as_ref());
    assert_eq!(
        lb.and_then(|l| l.simple),
        Some(meshpilot_model::SimpleLb::Random)
    );
    let warned: Vec<(String, String)> = v
        .diagnostics
        .iter()
        .filter(|d| d.stage == Stage::Conflict)
        .map(|d| {
            (
                d.object.name.clone().unwrap_or_default(),
                d.field.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        warned,
        [
            ("b".to_string(), "spec.subsets[0].name".to_string()),
            ("c".to_string(), "spec.trafficPolicy".to_string()),
        ]
    );
}

/// Fields a rule sets that meshpilot does not serve are warnings naming each field (and
/// `localityLbSetting`, served, is not); the rule itself still serves.
#[test]
fn unserved_destination_rule_fields_are_warned() {
    let mut rule = with_policy(
        mk_destination_rule("default", "a", "reviews", &["v1"]),
        json!({
            "loadBalancer": {"localityLbSetting": {"enabled": true}},
            "connectionPool": {"tcp": {"idleTimeout": "1m"}},
            "tunnel": {"protocol": "CONNECT", "targetHost": "h", "targetPort": 80},
            "proxyProtocol": {"version": "V1"},
            "tls": {"mode": "ISTIO_MUTUAL"},
            "portLevelSettings": [{"port": {"number": 9080}, "outlierDetection": {"consecutiveErrors": 3}}]
        }),
    );
    if let Body::DestinationRule(dr) = &mut rule.body {
        dr.export_to = vec![".".to_string()];
        dr.workload_selector = Some(meshpilot_model::ClientWorkloadSelector::default());
    }
    let v = view_of(vec![mk_service("default", "reviews", &[9080]), rule]);
    let mut fields: Vec<String> = v
        .diagnostics
        .iter()
        .filter(|d| d.severity == meshpilot_model::Severity::Warning)
        .filter_map(|d| d.field.clone())
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            // (`exportTo` is served: the rule reaches only the namespaces it names.)
            "spec.trafficPolicy.portLevelSettings[0].outlierDetection.consecutiveErrors",
            "spec.workloadSelector",
        ]
    );
    let svc = v.services["reviews.default.svc.cluster.local"].clone();
    assert!(v.destination_rule_for(&svc, "default").is_some());
}

#[test]
fn several_mesh_virtual_services_for_one_host_report_the_ignored_ones() {
    let vs = |name: &str, created: &str, spec: serde_json::Value| {
        let mut o = mk_virtual_service("default", name, spec);
        o.meta.creation = created.to_string();
        o
    };
    let route = json!([{"route": [{"destination": {"host": "web"}}]}]);
    let v = view_of(vec![
        mk_service("default", "web", &[80]),
        vs(
            "b-newer",
            "2024-03-01T00:00:00Z",
            json!({"hosts": ["web"], "http": route}),
        ),
        vs(
            "a-newest",
            "2024-04-01T00:00:00Z",
            json!({"hosts": ["web.default.svc.cluster.local"], "http": route}),
        ),
        vs(
            "oldest",
            "2024-01-01T00:00:00Z",
            json!({"hosts": ["web"], "http": route}),
        ),
        // Bound to a gateway only: gateways merge, no conflict.
        vs(
            "edge",
            "2023-01-01T00:00:00Z",
            json!({"hosts": ["web"], "gateways": ["gw"], "http": route}),
        ),
        // Seen only in its own namespace, as is `oldest`: still a conflict there.
        vs(
            "local",
            "2024-05-01T00:00:00Z",
            json!({"hosts": ["web"], "exportTo": ["."], "http": route}),
        ),
    ]);
    let conflicts: Vec<(String, String, String)> = v
        .diagnostics
        .iter()
        .filter(|d| d.stage == Stage::Conflict)
        .map(|d| {
            let winner = d.message.split("VirtualService ").nth(1).unwrap_or("");
            (
                d.object.name.clone().unwrap_or_default(),
                d.field.clone().unwrap_or_default(),
                winner.split(',').next().unwrap_or("").to_string(),
            )
        })
        .collect();
    let expect = |name: &str| {
        (
            name.to_string(),
            "spec.hosts[0]".to_string(),
            "default/oldest".to_string(),
        )
    };
    assert_eq!(
        conflicts,
        vec![expect("a-newest"), expect("b-newer"), expect("local")]
    );
    assert!(
        v.diagnostics
            .iter()
            .all(|d| d.severity == meshpilot_model::Severity::Warning)
    );
}

#[test]
fn virtual_services_exported_to_different_namespaces_do_not_conflict() {
    let route = json!([{"route": [{"destination": {"host": "web"}}]}]);
    let mut mine = mk_virtual_service(
        "default",
        "mine",
        json!({"hosts": ["web"], "exportTo": ["."], "http": route}),
    );
    mine.meta.creation = "2024-01-01T00:00:00Z".to_string();
    let theirs = mk_virtual_service(
        "default",
        "theirs",
        json!({"hosts": ["web"], "exportTo": ["shop"], "http": route}),
    );
    let v = view_of(vec![mk_service("default", "web", &[80]), mine, theirs]);
    assert!(
        v.diagnostics.iter().all(|d| d.stage != Stage::Conflict),
        "{:?}",
        v.diagnostics
    );
}

/// An EndpointSlice endpoint takes its Pod's locality (none without a known Pod).
#[test]
fn slice_endpoints_carry_their_pods_locality() {
    let mut pod = mk_pod("a", "web-1", "10.0.0.1", &[("app", "web")]);
    if let Body::Pod(w) = &mut pod.body {
        w.locality = Some("r1/z1".to_string());
    }
    let v = view_of(vec![
        mk_service("a", "web", &[80]),
        pod,
        mk_slice(
            "a",
            "web-x",
            "web",
            &[("10.0.0.1", Some("web-1"), true), ("10.0.0.9", None, true)],
        ),
    ]);
    let svc = &v.services["web.a.svc.cluster.local"];
    let localities: Vec<Option<&str>> = svc.endpoints[&80]
        .iter()
        .map(|e| e.locality.as_deref())
        .collect();
    assert_eq!(localities, [Some("r1/z1"), None]);
}

#[test]
fn service_entry_port_without_protocol_is_sniffed_like_an_unnamed_service_port() {
    let v = view_of(vec![mk_istio(
        "ServiceEntry",
        "default",
        "ext",
        json!({"hosts": ["ext.example.com"], "ports": [
            {"number": 8080, "name": "web"},
            {"number": 5432, "name": "db", "protocol": "TCP"},
        ], "resolution": "DNS"}),
    )]);
    let svc = v.lookup("ext.example.com").expect("SE host");
    let protocol = |port: u16| {
        svc.ports
            .iter()
            .find(|p| p.port == port)
            .map(|p| p.protocol)
    };
    assert_eq!(protocol(8080), Some(meshpilot_model::Protocol::Unknown));
    assert_eq!(protocol(5432), Some(meshpilot_model::Protocol::Tcp));
}

/// A Service with EndpointSlices for its Pods and a WorkloadEntry its selector picks.
fn service_with_slice_and_workload_entry() -> Vec<Object> {
    vec![
        mk_service("default", "reviews", &[80]),
        mk_pod("default", "r1", "10.0.0.1", &[("app", "reviews")]),
        mk_slice(
            "default",
            "reviews-abc",
            "reviews",
            &[("10.0.0.1", Some("r1"), true)],
        ),
        mk_istio(
            "WorkloadEntry",
            "default",
            "vm",
            json!({"address": "10.9.0.1", "labels": {"app": "reviews"}}),
        ),
        mk_istio(
            "WorkloadEntry",
            "default",
            "other",
            json!({"address": "10.9.0.2", "labels": {"app": "ratings"}}),
        ),
    ]
}

fn endpoint_addresses(v: &View, host: &str, port: u16) -> Vec<(String, u16)> {
    v.services[host].endpoints[&port]
        .iter()
        .map(|e| (e.address.to_string(), e.port))
        .collect()
}

#[test]
fn workload_entries_selected_by_a_service_merge_with_its_slices() {
    let v = view_of(service_with_slice_and_workload_entry());
    assert_eq!(
        endpoint_addresses(&v, "reviews.default.svc.cluster.local", 80),
        vec![("10.0.0.1".to_string(), 8080), ("10.9.0.1".to_string(), 80)]
    );
}

#[test]
fn a_slice_change_keeps_the_merged_workload_entries() {
    let mut index = Index::new();
    index.reset(SourceId::Files, service_with_slice_and_workload_entry());
    let first = index.build_view("cluster.local", None);
    let mut objects = service_with_slice_and_workload_entry();
    objects[2] = mk_slice(
        "default",
        "reviews-abc",
        "reviews",
        &[("10.0.0.1", Some("r1"), true), ("10.0.0.3", None, true)],
    );
    let changes = index.reset(SourceId::Files, objects);
    assert!(changes.slices_only(), "{changes:?}");
    let next = index.build_view_after(&changes, "cluster.local", &first);
    let full = index.build_view("cluster.local", Some(&first));
    assert_eq!(next.services, full.services);
    assert_eq!(
        endpoint_addresses(&next, "reviews.default.svc.cluster.local", 80),
        vec![
            ("10.0.0.1".to_string(), 8080),
            ("10.0.0.3".to_string(), 8080),
            ("10.9.0.1".to_string(), 80)
        ]
    );
}

/// The warnings of `v` as (object name, field).
fn warned_fields(v: &View) -> Vec<(String, String)> {
    v.diagnostics
        .iter()
        .filter(|d| d.severity == meshpilot_model::Severity::Warning)
        .map(|d| {
            (
                d.object.name.clone().unwrap_or_default(),
                d.field.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn service_entry_addresses_beyond_the_vip_are_warned() {
    let v = view_of(vec![mk_istio(
        "ServiceEntry",
        "default",
        "db",
        json!({"hosts": ["db.example.com"], "addresses": ["10.8.0.0/16", "10.9.0.1", "10.9.0.2/32"],
               "ports": [{"number": 5432, "name": "tcp", "protocol": "TCP"}]}),
    )]);
    let svc = v.lookup("db.example.com").expect("SE host");
    assert_eq!(svc.cluster_ip, Some("10.9.0.1".parse().expect("ip")));
    assert_eq!(
        warned_fields(&v),
        vec![
            ("db".to_string(), "spec.addresses[0]".to_string()),
            ("db".to_string(), "spec.addresses[2]".to_string()),
        ]
    );
    let first = v
        .diagnostics
        .iter()
        .find(|d| d.field.as_deref() == Some("spec.addresses[0]"))
        .expect("warned");
    assert!(
        first.message.contains("spec.addresses[1] (10.9.0.1)"),
        "{}",
        first.message
    );
}

#[test]
fn sidecar_fields_served_differently_are_warned_and_the_sidecar_still_serves() {
    let v = view_of(vec![mk_istio(
        "Sidecar",
        "default",
        "s",
        json!({
            "ingress": [
                {"port": {"number": 9080, "protocol": "HTTP", "name": "http"},
                 "bind": "127.0.0.1", "captureMode": "NONE", "defaultEndpoint": "127.0.0.1:8080"},
                {"port": {"number": 9090, "protocol": "HTTP", "name": "h2"}, "captureMode": "IPTABLES"},
            ],
            "egress": [
                {"port": {"number": 80, "protocol": "HTTP", "name": "http"}, "bind": "127.0.0.1",
                 "hosts": ["./*"]},
                {"hosts": ["istio-system/*"]},
            ],
        }),
    )]);
    assert_eq!(v.sidecars.len(), 1);
    assert_eq!(
        warned_fields(&v),
        // Sorted, as the view's diagnostics are.
        [
            "egress[0].bind",
            "egress[0].port",
            "ingress[0].bind",
            "ingress[0].captureMode"
        ]
        .map(|f| ("s".to_string(), format!("spec.{f}")))
        .to_vec()
    );
}
