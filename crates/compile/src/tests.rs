use std::collections::BTreeMap;

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use meshpilot_index::Index;
use meshpilot_model::proxy::MetadataValue;
use meshpilot_model::test_helpers::*;
use meshpilot_model::{Diagnostic, Object, Proxy};
use meshpilot_snapshot::XdsType;

fn proxy(id: &str, labels_: &[(&str, &str)], none: bool) -> Proxy {
    let mut md = BTreeMap::new();
    md.insert("LABELS".to_string(), MetadataValue::Map(labels(labels_)));
    if none {
        md.insert(
            "INTERCEPTION_MODE".to_string(),
            MetadataValue::String("NONE".into()),
        );
    }
    Proxy::parse(id, &md).expect("valid node id")
}

fn gateway_proxy() -> Proxy {
    proxy(
        "router~127.0.0.10~ingress.istio-system~istio-system.svc.cluster.local",
        &[("istio", "ingressgateway")],
        true,
    )
}

fn sidecar_proxy() -> Proxy {
    proxy(
        "sidecar~127.0.0.20~client.default~default.svc.cluster.local",
        &[("app", "client")],
        true,
    )
}

/// Compiles for `proxy` and renders every resource as Envoy JSON.
fn compile_json(objects: Vec<Object>, proxy: &Proxy) -> (Value, Vec<Diagnostic>) {
    let mut index = Index::new();
    index.reset(meshpilot_model::SourceId::Files, objects);
    let view = index.build_view("cluster.local", None);
    let shared = compile_shared(&view).expect("consistent shared set");
    let out = compile_class(&view, proxy);
    let snap = assemble(proxy.class_key(), &shared, &out).expect("consistent snapshot");
    (snap.to_json(&XdsType::ALL).expect("renders"), out.errors)
}

fn canary() -> Vec<Object> {
    vec![
        mk_service("default", "mvc-service", &[8080]),
        mk_pod(
            "default",
            "v1",
            "127.0.1.1",
            &[("app", "mvc-service"), ("version", "v1")],
        ),
        mk_pod(
            "default",
            "v2",
            "127.0.1.2",
            &[("app", "mvc-service"), ("version", "v2")],
        ),
        mk_destination_rule("default", "mvc-service", "mvc-service", &["v1", "v2"]),
        mk_istio(
            "Gateway",
            "default",
            "service-gateway",
            json!({"selector": {"istio": "ingressgateway"}, "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}),
        ),
        mk_virtual_service(
            "default",
            "service-gateway",
            json!({"hosts": ["*"], "gateways": ["service-gateway"], "http": [{
            "match": [{"uri": {"exact": "/service"}}],
            "route": [
                {"destination": {"host": "mvc-service", "subset": "v1"}, "weight": 80},
                {"destination": {"host": "mvc-service", "subset": "v2"}, "weight": 20}
            ]}]}),
        ),
    ]
}

#[test]
fn gateway_canary_compiles_to_weighted_route_on_bound_listener() {
    let (j, errors) = compile_json(canary(), &gateway_proxy());
    assert!(errors.is_empty(), "{errors:?}");
    let l = &j["lds"]["127.0.0.10_80"];
    assert_eq!(l["address"]["socket_address"]["address"], "127.0.0.10");
    assert_eq!(l["address"]["socket_address"]["port_value"], 80);
    let hcm = &l["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(hcm["rds"]["route_config_name"], "http.80");
    let vh = &j["rds"]["http.80"]["virtual_hosts"][0];
    assert_eq!(vh["domains"], json!(["*"]));
    let route = &vh["routes"][0];
    assert_eq!(route["match"]["path"], "/service");
    let clusters = &route["route"]["weighted_clusters"]["clusters"];
    assert_eq!(
        clusters[0]["name"],
        "outbound|8080|v1|mvc-service.default.svc.cluster.local"
    );
    assert_eq!(clusters[0]["weight"], 80);
    assert_eq!(
        clusters[1]["name"],
        "outbound|8080|v2|mvc-service.default.svc.cluster.local"
    );
    assert_eq!(clusters[1]["weight"], 20);
    assert_eq!(vh["routes"].as_array().map(Vec::len), Some(1));
}

#[test]
fn subsets_select_endpoints_by_label() {
    let (j, _) = compile_json(canary(), &gateway_proxy());
    let eds = &j["eds"];
    let addr = |name: &str| -> Vec<String> {
        eds[name]["endpoints"][0]["lb_endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                e["endpoint"]["address"]["socket_address"]["address"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    let host = "mvc-service.default.svc.cluster.local";
    assert_eq!(addr(&format!("outbound|8080|v1|{host}")), vec!["127.0.1.1"]);
    assert_eq!(addr(&format!("outbound|8080|v2|{host}")), vec!["127.0.1.2"]);
    assert_eq!(
        addr(&format!("outbound|8080||{host}")),
        vec!["127.0.1.1", "127.0.1.2"]
    );
    let c = &j["cds"][format!("outbound|8080|v1|{host}").as_str()];
    assert_eq!(c["type"], "EDS");
    assert_eq!(
        c["eds_cluster_config"]["service_name"],
        format!("outbound|8080|v1|{host}")
    );
}

#[test]
fn gateway_without_matching_selector_gets_no_listener() {
    let p = proxy(
        "router~127.0.0.11~egress.istio-system~istio-system.svc.cluster.local",
        &[("istio", "egressgateway")],
        true,
    );
    let (j, _) = compile_json(canary(), &p);
    assert_eq!(j["lds"], json!({}));
}

#[test]
fn sidecar_gets_service_vhosts_with_istio_domains_and_mesh_virtual_service() {
    let mut objects = vec![
        mk_service("default", "reviews", &[9080]),
        mk_service("default", "ratings", &[9080]),
        mk_destination_rule("default", "reviews", "reviews", &["v1", "v2"]),
        mk_virtual_service(
            "default",
            "reviews",
            json!({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]}),
        ),
    ];
    objects.push(mk_pod(
        "default",
        "r1",
        "127.0.2.1",
        &[("app", "reviews"), ("version", "v1")],
    ));
    let (j, errors) = compile_json(objects, &sidecar_proxy());
    assert!(errors.is_empty(), "{errors:?}");
    let rc = &j["rds"]["9080"];
    let vhosts = rc["virtual_hosts"].as_array().expect("vhosts");
    let reviews = vhosts
        .iter()
        .find(|v| v["name"] == "reviews.default.svc.cluster.local:9080")
        .expect("reviews vhost");
    let domains: Vec<&str> = reviews["domains"]
        .as_array()
        .expect("d")
        .iter()
        .filter_map(|d| d.as_str())
        .collect();
    for d in [
        "reviews.default.svc.cluster.local",
        "reviews",
        "reviews.default",
        "reviews.default.svc",
    ] {
        assert!(domains.contains(&d), "{d} missing from {domains:?}");
    }
    // As istiod: no `:PORT` forms, the port is ignored in host matching instead.
    assert!(domains.iter().all(|d| !d.contains(':')), "{domains:?}");
    assert_eq!(rc["ignore_port_in_host_matching"], true);
    assert_eq!(
        reviews["routes"][0]["route"]["cluster"],
        "outbound|9080|v1|reviews.default.svc.cluster.local"
    );
    let ratings = vhosts
        .iter()
        .find(|v| v["name"] == "ratings.default.svc.cluster.local:9080")
        .expect("ratings vhost");
    assert_eq!(ratings["routes"][0]["match"]["prefix"], "/");
    assert_eq!(
        ratings["routes"][0]["route"]["cluster"],
        "outbound|9080||ratings.default.svc.cluster.local"
    );
    let l = &j["lds"]["127.0.0.20_9080"];
    assert_eq!(
        l["filter_chains"][0]["filters"][0]["typed_config"]["rds"]["route_config_name"],
        "9080"
    );
}

#[test]
fn short_names_only_in_the_proxy_namespace() {
    let objects = vec![mk_service("other", "svc", &[80])];
    let (j, _) = compile_json(objects, &sidecar_proxy());
    let domains = &j["rds"]["80"]["virtual_hosts"][0]["domains"];
    let domains: Vec<&str> = domains
        .as_array()
        .expect("d")
        .iter()
        .filter_map(|d| d.as_str())
        .collect();
    assert!(!domains.contains(&"svc"), "{domains:?}");
    assert!(domains.contains(&"svc.other"), "{domains:?}");
}

#[test]
fn header_match_and_port_filter() {
    let objects = vec![
        mk_service("default", "website", &[80]),
        mk_istio(
            "Gateway",
            "default",
            "gw",
            json!({"selector": {"istio": "ingressgateway"}, "servers": [{"port": {"number": 80, "protocol": "HTTP"}, "hosts": ["*"]}]}),
        ),
        mk_virtual_service(
            "default",
            "vs",
            json!({"hosts": ["*"], "gateways": ["gw"], "http": [
                {"match": [{"headers": {"qa": {"exact": "canary-test"}}}], "route": [{"destination": {"host": "website", "subset": "version-2"}}]},
                {"match": [{"port": 8080}], "route": [{"destination": {"host": "website"}}]},
                {"route": [{"destination": {"host": "website", "subset": "version-1"}}]}
            ]}),
        ),
    ];
    let (j, _) = compile_json(objects, &gateway_proxy());
    let routes = &j["rds"]["http.80"]["virtual_hosts"][0]["routes"];
    assert_eq!(routes.as_array().map(Vec::len), Some(2), "{routes:#}");
    assert_eq!(routes[0]["match"]["headers"][0]["name"], "qa");
    assert_eq!(
        routes[0]["match"]["headers"][0]["string_match"]["exact"],
        "canary-test"
    );
    assert_eq!(
        routes[0]["route"]["cluster"],
        "outbound|80|version-2|website.default.svc.cluster.local"
    );
    assert_eq!(routes[1]["match"]["prefix"], "/");
    assert_eq!(
        routes[1]["route"]["cluster"],
        "outbound|80|version-1|website.default.svc.cluster.local"
    );
}

#[test]
fn egress_through_egress_gateway() {
    let objects = vec![
        mk_istio(
            "ServiceEntry",
            "default",
            "cnn",
            json!({"hosts": ["edition.cnn.com"], "ports": [{"number": 80, "name": "http-port", "protocol": "HTTP"}, {"number": 443, "name": "https", "protocol": "HTTPS"}], "resolution": "DNS"}),
        ),
        mk_service("istio-system", "istio-egressgateway", &[80]),
        mk_istio(
            "Gateway",
            "default",
            "istio-egressgateway",
            json!({"selector": {"istio": "egressgateway"}, "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["edition.cnn.com"]}]}),
        ),
        mk_istio(
            "DestinationRule",
            "default",
            "egressgateway-for-cnn",
            json!({"host": "istio-egressgateway.istio-system.svc.cluster.local", "subsets": [{"name": "cnn"}]}),
        ),
        mk_virtual_service(
            "default",
            "direct-cnn",
            json!({"hosts": ["edition.cnn.com"], "gateways": ["istio-egressgateway", "mesh"], "http": [
                {"match": [{"gateways": ["mesh"], "port": 80}], "route": [{"destination": {"host": "istio-egressgateway.istio-system.svc.cluster.local", "subset": "cnn", "port": {"number": 80}}, "weight": 100}]},
                {"match": [{"gateways": ["istio-egressgateway"], "port": 80}], "route": [{"destination": {"host": "edition.cnn.com", "port": {"number": 80}}, "weight": 100}]}
            ]}),
        ),
    ];
    let (side, errors) = compile_json(objects.clone(), &sidecar_proxy());
    assert!(errors.is_empty(), "{errors:?}");
    let vh = side["rds"]["80"]["virtual_hosts"]
        .as_array()
        .expect("vhosts")
        .iter()
        .find(|v| v["name"] == "edition.cnn.com:80")
        .cloned()
        .expect("cnn vhost");
    assert_eq!(vh["routes"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        vh["routes"][0]["route"]["cluster"],
        "outbound|80|cnn|istio-egressgateway.istio-system.svc.cluster.local"
    );
    // HTTPS port: a TCP listener.
    assert!(side["lds"]["127.0.0.20_443"].is_object());

    let egress = proxy(
        "router~127.0.0.30~egress.istio-system~istio-system.svc.cluster.local",
        &[("istio", "egressgateway")],
        true,
    );
    let (eg, errors) = compile_json(objects, &egress);
    assert!(errors.is_empty(), "{errors:?}");
    let vh = &eg["rds"]["http.80"]["virtual_hosts"][0];
    assert_eq!(vh["domains"], json!(["edition.cnn.com"]));
    assert_eq!(eg["rds"]["http.80"]["ignore_port_in_host_matching"], true);
    assert_eq!(
        vh["routes"][0]["route"]["cluster"],
        "outbound|80||edition.cnn.com"
    );
    let c = &eg["cds"]["outbound|80||edition.cnn.com"];
    assert_eq!(c["type"], "STRICT_DNS");
    assert_eq!(
        c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
            ["address"],
        "edition.cnn.com"
    );
}

#[test]
fn several_virtual_services_on_one_gateway_host_merge() {
    let mut objects = canary();
    objects.push(mk_service("default", "productpage", &[9080]));
    objects.push(mk_istio("Gateway", "default", "bookinfo-gateway", json!({"selector": {"istio": "ingressgateway"}, "servers": [{"port": {"number": 80, "protocol": "HTTP"}, "hosts": ["*"]}]})));
    objects.push(mk_virtual_service("default", "bookinfo", json!({"hosts": ["*"], "gateways": ["bookinfo-gateway"], "http": [
        {"match": [{"uri": {"exact": "/productpage"}}, {"uri": {"prefix": "/static"}}], "route": [{"destination": {"host": "productpage", "port": {"number": 9080}}}]}]})));
    let (j, errors) = compile_json(objects, &gateway_proxy());
    assert!(errors.is_empty(), "{errors:?}");
    let vhosts = j["rds"]["http.80"]["virtual_hosts"]
        .as_array()
        .expect("vhosts")
        .clone();
    assert_eq!(vhosts.len(), 1, "one '*' host, merged");
    let paths: Vec<String> = vhosts[0]["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|r| {
            format!(
                "{}{}",
                r["match"]["path"].as_str().unwrap_or(""),
                r["match"]["prefix"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(paths, vec!["/productpage", "/static", "/service"]);
}

#[test]
fn redirect_interception_uses_istio_layout() {
    let p = proxy(
        "sidecar~10.0.0.5~client.default~default.svc.cluster.local",
        &[],
        false,
    );
    let (j, _) = compile_json(vec![mk_service("default", "a", &[80])], &p);
    let l = &j["lds"]["0.0.0.0_80"];
    assert_eq!(l["bind_to_port"], false);
    assert_eq!(j["lds"]["virtualOutbound"]["use_original_dst"], true);
    assert_eq!(
        j["lds"]["virtualOutbound"]["address"]["socket_address"]["port_value"],
        15001
    );
}

#[test]
fn sidecar_resource_scopes_what_a_sidecar_sees() {
    let objects = vec![
        mk_service("default", "reviews", &[9080]),
        mk_service("default", "ratings", &[9080]),
        mk_service("other", "details", &[9080]),
        mk_service("other", "hidden", &[8080]),
        mk_istio(
            "Sidecar",
            "default",
            "client-scope",
            json!({"workloadSelector": {"labels": {"app": "client"}},
                   "egress": [{"hosts": ["./reviews.default.svc.cluster.local", "other/*"]}]}),
        ),
    ];
    let (j, _) = compile_json(objects.clone(), &sidecar_proxy());
    let names: Vec<String> = j["rds"]["9080"]["virtual_hosts"]
        .as_array()
        .expect("vhosts")
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        names,
        vec![
            "details.other.svc.cluster.local:9080",
            "reviews.default.svc.cluster.local:9080"
        ]
    );
    assert!(
        j["lds"]["127.0.0.20_8080"].is_object(),
        "other/* includes hidden:8080"
    );
    // A proxy the Sidecar does not select sees everything.
    let other = proxy(
        "sidecar~127.0.0.21~x.default~default.svc.cluster.local",
        &[("app", "x")],
        true,
    );
    let (j, _) = compile_json(objects, &other);
    assert_eq!(
        j["rds"]["9080"]["virtual_hosts"].as_array().map(Vec::len),
        Some(3)
    );
}

#[test]
fn unchanged_services_reuse_their_encoded_resources() {
    let objects = |ip: &str| {
        let mut o = canary();
        o.push(mk_service("default", "other", &[80]));
        o.push(mk_pod("default", "o1", ip, &[("app", "other")]));
        o
    };
    let mut cache = ClustersAndEndpointsCache::default();
    let mut index = Index::new();
    index.reset(meshpilot_model::SourceId::Files, objects("127.0.9.1"));
    let a =
        compile_shared_cached(&index.build_view("cluster.local", None), &mut cache).expect("ok");
    index.reset(meshpilot_model::SourceId::Files, objects("127.0.9.2"));
    let b =
        compile_shared_cached(&index.build_view("cluster.local", None), &mut cache).expect("ok");
    let mvc = "outbound|8080|v1|mvc-service.default.svc.cluster.local";
    let other = "outbound|80||other.default.svc.cluster.local";
    // The untouched service's bytes are the same allocation; the changed one is re-encoded.
    assert!(Arc::ptr_eq(
        &a.endpoints.items[mvc],
        &b.endpoints.items[mvc]
    ));
    assert!(!Arc::ptr_eq(
        &a.endpoints.items[other],
        &b.endpoints.items[other]
    ));
    assert_ne!(
        a.endpoints.items[other].version,
        b.endpoints.items[other].version
    );
    // The result equals a compile from scratch.
    let fresh = compile_shared(&index.build_view("cluster.local", None)).expect("ok");
    assert_eq!(fresh.endpoints.version, b.endpoints.version);
    assert_eq!(fresh.clusters.version, b.clusters.version);
}

#[test]
fn patched_shared_sets_equal_a_compile_from_scratch() {
    // 20 services, so that one or two changed services patch the previous sets.
    let mesh = |edit: &dyn Fn(&mut Vec<Object>)| {
        let mut o = Vec::new();
        for i in 0..20 {
            let name = format!("s{i}");
            o.push(mk_service("default", &name, &[80]));
            let ip = format!("127.0.10.{i}");
            o.push(mk_pod(
                "default",
                &format!("{name}-a"),
                &ip,
                &[("app", &name)],
            ));
        }
        edit(&mut o);
        o
    };
    let mut cache = ClustersAndEndpointsCache::default();
    let mut index = Index::new();
    let mut view = None;
    let mut round = |objects: Vec<Object>, cache: &mut ClustersAndEndpointsCache| {
        index.reset(meshpilot_model::SourceId::Files, objects);
        let v = index.build_view("cluster.local", view.as_ref());
        let got = compile_shared_cached(&v, cache).expect("consistent");
        let fresh = compile_shared(&v).expect("consistent");
        assert_eq!(*got.clusters, *fresh.clusters);
        assert_eq!(*got.endpoints, *fresh.endpoints);
        view = Some(v);
        got
    };
    let first = round(mesh(&|_| {}), &mut cache);
    // Nothing changed: the very same sets.
    let same = round(mesh(&|_| {}), &mut cache);
    assert!(Arc::ptr_eq(&first.clusters, &same.clusters));
    assert!(Arc::ptr_eq(&first.endpoints, &same.endpoints));
    // Each step against the base mesh: an endpoint added, a subset rule added, a service added,
    // one removed; with the cluster name it must show and one it must not.
    type Step = (
        &'static dyn Fn(&mut Vec<Object>),
        &'static str,
        &'static str,
    );
    let steps: [Step; 4] = [
        (
            &|o| o.push(mk_pod("default", "s3-b", "127.0.11.3", &[("app", "s3")])),
            "outbound|80||s3.default.svc.cluster.local",
            "outbound|80|v1|s4.default.svc.cluster.local",
        ),
        (
            &|o| o.push(mk_destination_rule("default", "s4", "s4", &["v1"])),
            "outbound|80|v1|s4.default.svc.cluster.local",
            "outbound|8080||new.default.svc.cluster.local",
        ),
        (
            &|o| o.push(mk_service("default", "new", &[8080])),
            "outbound|8080||new.default.svc.cluster.local",
            "outbound|80|v1|s4.default.svc.cluster.local",
        ),
        (
            &|o| o.retain(|x| x.meta.name != "s5"),
            "outbound|80||s6.default.svc.cluster.local",
            "outbound|80||s5.default.svc.cluster.local",
        ),
    ];
    let mut last = same;
    for (step, present, absent) in steps {
        let got = round(mesh(step), &mut cache);
        assert!(got.clusters.items.contains_key(present), "{present}");
        assert!(!got.clusters.items.contains_key(absent), "{absent}");
        assert_ne!(
            (&got.clusters.version, &got.endpoints.version),
            (&last.clusters.version, &last.endpoints.version)
        );
        // An untouched service keeps its encoded bytes.
        let untouched = "outbound|80||s9.default.svc.cluster.local";
        assert!(Arc::ptr_eq(
            &got.endpoints.items[untouched],
            &last.endpoints.items[untouched]
        ));
        last = got;
    }
}

#[test]
fn compile_key_keeps_only_labels_some_selector_reads() {
    // A Service without a selector: no sidecar serves it inbound, so it reads no label.
    let mut unselecting = mk_service("default", "a", &[80]);
    if let meshpilot_model::Body::Service(s) = &mut unselecting.body {
        s.selector = None;
    }
    let mut index = Index::new();
    index.reset(meshpilot_model::SourceId::Files, vec![unselecting.clone()]);
    let view = index.build_view("cluster.local", None);
    let a = proxy(
        "sidecar~10.0.0.1~a.default~default.svc.cluster.local",
        &[("app", "a"), ("pod-template-hash", "x")],
        false,
    );
    let b = proxy(
        "sidecar~10.0.0.2~b.default~default.svc.cluster.local",
        &[("app", "b")],
        false,
    );
    assert_ne!(a.class_key(), b.class_key());
    assert_eq!(compile_key(&view, &a), compile_key(&view, &b));
    // Once a Sidecar selects on `app`, the two differ.
    index.reset(
        meshpilot_model::SourceId::Files,
        vec![
            unselecting,
            mk_istio("Sidecar", "default", "s", json!({"workloadSelector": {"labels": {"app": "a"}}, "egress": [{"hosts": ["./*"]}]})),
        ],
    );
    let view = index.build_view("cluster.local", None);
    assert_ne!(compile_key(&view, &a), compile_key(&view, &b));
    assert_eq!(compile_key(&view, &a).labels, labels(&[("app", "a")]));
}

/// A sidecar that captures inbound traffic serves the ports of the Services selecting it, so
/// the labels Service selectors read are part of its compile key (and nothing else is).
#[test]
fn inbound_sidecars_differ_by_the_services_selecting_them() {
    let mut index = Index::new();
    index.reset(
        meshpilot_model::SourceId::Files,
        vec![mk_service("default", "a", &[80])],
    );
    let view = index.build_view("cluster.local", None);
    let redirect = |id: &str, l: &[(&str, &str)]| proxy(id, l, false);
    let a1 = redirect(
        "sidecar~10.0.0.1~a1.default~default.svc.cluster.local",
        &[("app", "a"), ("pod-template-hash", "x")],
    );
    let a2 = redirect(
        "sidecar~10.0.0.2~a2.default~default.svc.cluster.local",
        &[("app", "a"), ("pod-template-hash", "y")],
    );
    let b = redirect(
        "sidecar~10.0.0.3~b.default~default.svc.cluster.local",
        &[("app", "b")],
    );
    assert_eq!(compile_key(&view, &a1), compile_key(&view, &a2));
    assert_ne!(compile_key(&view, &a1), compile_key(&view, &b));
    let inbound_clusters = |p: &Proxy| -> Vec<String> {
        let out = compile_class(&view, p);
        out.clusters.items.keys().map(|k| k.to_string()).collect()
    };
    assert_eq!(
        inbound_clusters(&a1),
        ["InboundPassthroughCluster", "inbound|80||"]
    );
    assert_eq!(inbound_clusters(&b), ["InboundPassthroughCluster"]);
}

#[test]
fn an_eds_cluster_without_its_assignment_is_refused() {
    let mut index = Index::new();
    index.reset(
        meshpilot_model::SourceId::Files,
        vec![mk_service("default", "a", &[80])],
    );
    let view = index.build_view("cluster.local", None);
    let svc = view.services.values().next().expect("one service");
    let c = CachedService::compile(svc, None, Default::default());
    let without = ClustersAndEndpoints {
        clusters: Arc::new(TypeSet::from_shared(c.clusters.clone())),
        endpoints: Arc::new(TypeSet::from_shared(Vec::new())),
        ..ClustersAndEndpoints::default()
    };
    match check_shared(&without, [&c]) {
        Err(SnapshotError::Dangling { from, to_type, .. }) => {
            assert_eq!(from, "outbound|80||a.default.svc.cluster.local");
            assert_eq!(to_type, XdsType::Endpoint);
        }
        other => panic!("expected a dangling cluster, got {other:?}"),
    }
    let with = ClustersAndEndpoints {
        endpoints: Arc::new(TypeSet::from_shared(c.endpoints.clone())),
        ..without
    };
    assert_eq!(check_shared(&with, [&c]), Ok(()));
}

/// Rounds through the push engine's incremental views (slice-only changes, a routing change, a
/// service added and removed) give the sets of a compile from scratch, and a slice change
/// re-encodes only its own service.
#[test]
fn incremental_views_compile_to_the_sets_of_a_full_compile() {
    let mut objects: Vec<Object> = (0..20)
        .flat_map(|i| {
            let name = format!("s{i}");
            let ip = format!("10.0.{i}.1");
            [
                mk_service("a", &name, &[80]),
                mk_slice("a", &format!("{name}-x"), &name, &[(&ip, None, true)]),
            ]
        })
        .collect();
    let mut index = Index::new();
    index.reset(meshpilot_model::SourceId::Files, objects.clone());
    let mut view = index.build_view("cluster.local", None);
    let mut cache = ClustersAndEndpointsCache::default();
    let mut last = compile_shared_cached(&view, &mut cache).expect("consistent");
    type Step = Box<dyn Fn(&mut Vec<Object>)>;
    let steps: Vec<Step> = vec![
        // An endpoint of s3 is replaced (a slice-only change).
        Box::new(|o| o[7] = mk_slice("a", "s3-x", "s3", &[("10.9.9.9", None, true)])),
        // s4 gets a second slice.
        Box::new(|o| o.push(mk_slice("a", "s4-y", "s4", &[("10.9.9.4", None, true)]))),
        // A DestinationRule with a subset for s5 (a routing-only change: s5's clusters change).
        Box::new(|o| o.push(mk_destination_rule("a", "s5", "s5", &["v1"]))),
        // Another slice change, with that rule in place.
        Box::new(|o| o[13] = mk_slice("a", "s6-x", "s6", &[("10.9.9.6", None, false)])),
        // A service added, then one removed with its slice (full views).
        Box::new(|o| o.push(mk_service("a", "new", &[8080]))),
        Box::new(|o| o.retain(|x| x.meta.name != "s9" && x.meta.name != "s9-x")),
    ];
    for (i, step) in steps.iter().enumerate() {
        step(&mut objects);
        let changes = index.reset(meshpilot_model::SourceId::Files, objects.clone());
        let next = index.build_view_after(&changes, "cluster.local", &view);
        let got = compile_shared_cached(&next, &mut cache).expect("consistent");
        let fresh = compile_shared(&next).expect("consistent");
        assert_eq!(*got.clusters, *fresh.clusters, "step {i}");
        assert_eq!(*got.endpoints, *fresh.endpoints, "step {i}");
        if changes.slices_only() {
            let untouched = "outbound|80||s1.a.svc.cluster.local";
            assert!(
                Arc::ptr_eq(
                    &got.endpoints.items[untouched],
                    &last.endpoints.items[untouched]
                ),
                "step {i}: an untouched service keeps its encoded bytes"
            );
        }
        (view, last) = (next, got);
    }
    assert!(
        last.clusters
            .items
            .contains_key("outbound|80|v1|s5.a.svc.cluster.local")
    );
    assert!(
        last.clusters
            .items
            .contains_key("outbound|8080||new.a.svc.cluster.local")
    );
    assert!(
        !last
            .clusters
            .items
            .contains_key("outbound|80||s9.a.svc.cluster.local")
    );
    let s3 = &last.endpoints.items["outbound|80||s3.a.svc.cluster.local"];
    let cla = envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(
        s3.body.as_ref(),
    )
    .expect("a ClusterLoadAssignment");
    assert!(format!("{cla:?}").contains("\"10.9.9.9\""), "{cla:?}");
}

/// Header operations Envoy refuses (pseudo-headers, removing `host`) are left out with a
/// warning naming the field, never silently and never in a route Envoy would reject; a `host`
/// set becomes a host rewrite; a JWT claim match and a port the service lacks are warnings too.
#[test]
fn header_operations_envoy_refuses_are_warnings_not_routes() {
    let mut objects = canary();
    objects.push(mk_service("default", "two-ports", &[7000, 7001]));
    objects.push(mk_virtual_service(
        "default",
        "ops",
        json!({"hosts": ["ops.example.com"], "gateways": ["service-gateway"], "http": [{
            "match": [{"headers": {"@request.auth.claims.group": {"exact": "admin"}}}],
            "headers": {"request": {"set": {":path": "/x", "Host": "h.example.com"}, "remove": ["host"]},
                        "response": {"add": {":status": "200"}}},
            "route": [{"destination": {"host": "two-ports"}}]
        }]}),
    ));
    let (json, errors) = compile_json(objects, &gateway_proxy());
    let text = json.to_string();
    assert!(
        !text.contains("\":path\""),
        "no pseudo-header operation reaches Envoy"
    );
    assert!(
        text.contains("\"host_rewrite_literal\":\"h.example.com\""),
        "{text}"
    );
    let fields: Vec<&str> = errors.iter().filter_map(|d| d.field.as_deref()).collect();
    for field in [
        "spec.http[0].headers.request.set.:path",
        "spec.http[0].headers.request.remove",
        "spec.http[0].headers.response.add.:status",
        "spec.http[0].match[0].headers.@request.auth.claims.group",
        "spec.http[0].route[0].destination.port",
    ] {
        assert!(fields.contains(&field), "{field} in {fields:?}");
    }
    assert!(
        errors
            .iter()
            .all(|d| d.severity == meshpilot_model::Severity::Warning),
        "{errors:?}"
    );
    assert!(
        text.contains("outbound|80||two-ports.default.svc.cluster.local"),
        "{text}"
    );
}

mod gateway_hosts;
mod gateway_tls;
mod l4;
mod l4_istiod;
mod locality_ns;
mod namespaces;
mod outbound;
mod sidecar_scope;
mod vs_conflicts;
mod wildcard_entries;
mod wildcard_hosts;

/// A service no VirtualService routes still gets its consistent-hash policy on the sidecar's
/// default route (as istiod writes it), and retries stay on the hashed host (no
/// `previous_hosts` predicate); a service without one keeps the plain default route.
#[test]
fn default_routes_carry_the_consistent_hash_policy() {
    let mut rule = mk_destination_rule("default", "reviews", "reviews", &[]);
    if let meshpilot_model::Body::DestinationRule(dr) = &mut rule.body {
        dr.traffic_policy = Some(
            serde_json::from_value(
                json!({"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}}),
            )
            .expect("valid policy"),
        );
    }
    let objects = vec![
        mk_service("default", "reviews", &[9080]),
        mk_service("default", "ratings", &[9080]),
        rule,
    ];
    let (j, errors) = compile_json(objects, &sidecar_proxy());
    assert!(errors.is_empty(), "{errors:?}");
    let vhosts = j["rds"]["9080"]["virtual_hosts"]
        .as_array()
        .expect("vhosts")
        .clone();
    let route = |name: &str| {
        vhosts
            .iter()
            .find(|v| v["name"] == name)
            .map(|v| v["routes"][0]["route"].clone())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let reviews = route("reviews.default.svc.cluster.local:9080");
    assert_eq!(reviews["hash_policy"][0]["header"]["header_name"], "x-user");
    assert!(
        reviews["retry_policy"]["retry_host_predicate"].is_null(),
        "{reviews}"
    );
    let ratings = route("ratings.default.svc.cluster.local:9080");
    assert!(ratings["hash_policy"].is_null(), "{ratings}");
    assert!(
        ratings["retry_policy"]["retry_host_predicate"].is_array(),
        "{ratings}"
    );
}

/// Istio's `exportTo`: a Service annotated `.`, a VirtualService exported to `.` and a
/// ServiceEntry exported to one namespace are seen only from those namespaces; elsewhere the
/// service is unknown or routed by its default route.
#[test]
fn export_to_limits_which_namespaces_see_services_and_virtual_services() {
    let mut cart = mk_service("shop", "cart", &[9080]);
    if let meshpilot_model::Body::Service(s) = &mut cart.body {
        s.export_to = vec![".".into()];
    }
    let objects = vec![
        cart,
        mk_service("shop", "catalog", &[9080]),
        mk_virtual_service(
            "shop",
            "catalog",
            json!({"hosts": ["catalog"], "exportTo": ["."],
                   "http": [{"timeout": "7s", "route": [{"destination": {"host": "catalog"}}]}]}),
        ),
        mk_istio(
            "ServiceEntry",
            "shop",
            "payments",
            json!({"hosts": ["pay.example.com"], "exportTo": ["front"], "location": "MESH_EXTERNAL",
                   "ports": [{"number": 9080, "name": "http", "protocol": "HTTP"}],
                   "resolution": "DNS"}),
        ),
    ];
    let sidecar_in = |ns: &str| {
        proxy(
            &format!("sidecar~127.0.0.20~client.{ns}~{ns}.svc.cluster.local"),
            &[("app", "client")],
            true,
        )
    };
    let hosts = |ns: &str| -> BTreeMap<String, Value> {
        let (j, errors) = compile_json(objects.clone(), &sidecar_in(ns));
        assert!(errors.is_empty(), "{errors:?}");
        j["rds"]["9080"]["virtual_hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| Some((v["name"].as_str()?.to_string(), v["routes"][0].clone())))
            .collect()
    };
    let cart = "cart.shop.svc.cluster.local:9080";
    let catalog = "catalog.shop.svc.cluster.local:9080";
    let pay = "pay.example.com:9080";

    let shop = hosts("shop");
    assert!(shop.contains_key(cart), "{shop:?}");
    assert_eq!(
        shop[catalog]["route"]["timeout"], "7s",
        "the VirtualService applies"
    );
    assert!(!shop.contains_key(pay));

    let other = hosts("default");
    assert!(!other.contains_key(cart), "cart is exported to shop only");
    assert_eq!(
        other[catalog]["route"]["timeout"], "0s",
        "the VirtualService is exported to shop only: the service's default route"
    );
    assert!(!other.contains_key(pay));

    let front = hosts("front");
    assert!(front.contains_key(pay), "{front:?}");
}
