//! Tests for manifest conversion: every kind from real manifests, skipped kinds, and each
//! validation rule naming kind, namespace/name and field.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;

use super::*;
use meshpilot_model::{Protocol, Resolution, StringMatch, TargetPort, WorkloadKind};

const ORIGIN: &str = "test.yaml";

pub(super) fn origin() -> Origin {
    Origin::File(ORIGIN.to_string())
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(yaml).expect("test YAML parses")
}

/// Converts every document, dropping skipped ones; panics on an error.
fn objects(yaml: &str) -> Vec<Object> {
    docs(yaml)
        .into_iter()
        .filter_map(|d| convert(d, &origin()).expect("converts"))
        .collect()
}

pub(super) fn one(yaml: &str) -> Object {
    let mut all = objects(yaml);
    assert_eq!(all.len(), 1, "expected one object");
    all.remove(0)
}

pub(super) fn error(yaml: &str) -> Diagnostic {
    let mut all = docs(yaml);
    assert_eq!(all.len(), 1);
    convert(all.remove(0), &origin()).expect_err("expected a validation error")
}

/// Asserts an error names the object and field and says `says`.
pub(super) fn assert_error(e: &Diagnostic, kind: &str, ns_name: &str, field: &str, says: &str) {
    assert_eq!(e.origin, origin(), "{e}");
    assert_eq!(e.object.kind.as_deref(), Some(kind), "{e}");
    let (ns, name) = ns_name.split_once('/').expect("ns/name");
    assert_eq!(e.object.namespace.as_deref(), Some(ns), "{e}");
    assert_eq!(e.object.name.as_deref(), Some(name), "{e}");
    assert_eq!(e.field.as_deref(), Some(field), "{e}");
    assert!(
        e.message.contains(says),
        "message `{}` lacks `{says}`",
        e.message
    );
    let shown = e.to_string();
    assert!(shown.contains(&format!("{kind} {ns_name}")), "{shown}");
    assert!(shown.contains(field), "{shown}");
}

pub(super) fn vs(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs, namespace: prod}}\nspec:\n  hosts: [a.example.com]\n  http:\n{http}"
    )
}

// ---------------------------------------------------------------------------------------------
// Kinds

#[test]
fn scenario_service_and_skipped_deployments() {
    let all = objects(include_str!(
        "../../../../manifests/examples/01-mvc-canary/app.yaml"
    ));
    assert_eq!(all.len(), 1, "the two Deployments are skipped");
    let svc = &all[0];
    assert_eq!(
        svc.key(),
        ConfigKey::new(Kind::Service, "default", "mvc-service")
    );
    assert_eq!(svc.meta.origin, origin());
    assert_eq!(
        svc.meta.labels.get("app").map(String::as_str),
        Some("mvc-service")
    );
    let Body::Service(s) = &svc.body else {
        panic!("not a service")
    };
    assert_eq!(s.ports.len(), 1);
    assert_eq!(s.ports[0].name, "http");
    assert_eq!(s.ports[0].port, 8080);
    assert_eq!(s.ports[0].target_port, TargetPort::Number(8080));
    assert_eq!(s.ports[0].protocol, Protocol::Http);
    assert_eq!(
        s.selector
            .as_ref()
            .and_then(|l| l.get("app"))
            .map(String::as_str),
        Some("mvc-service")
    );
    assert_eq!(s.cluster_ip, None);
}

#[test]
fn scenario_flow_style_services() {
    let all = objects(include_str!(
        "../../../../manifests/examples/03-bookinfo/services.yaml"
    ));
    let names: Vec<_> = all.iter().map(|o| o.meta.name.as_str()).collect();
    assert_eq!(names, ["details", "ratings", "reviews", "productpage"]);
}

#[test]
fn scenario_gateway_virtual_service_destination_rule() {
    let all = objects(include_str!(
        "../../../../manifests/examples/01-mvc-canary/istio-gateway.yaml"
    ));
    let [gw, vs] = all.as_slice() else {
        panic!("expected Gateway and VirtualService")
    };
    let Body::Gateway(gw) = &gw.body else {
        panic!("not a gateway")
    };
    assert_eq!(gw.servers[0].port.number, 80);
    assert_eq!(
        gw.selector.get("istio").map(String::as_str),
        Some("ingressgateway")
    );
    let Body::VirtualService(vs) = &vs.body else {
        panic!("not a virtual service")
    };
    assert_eq!(vs.gateways, ["service-gateway"]);
    let route = &vs.http[0];
    assert_eq!(
        route.matches[0].uri,
        Some(StringMatch::Exact("/service".into()))
    );
    let weights: Vec<_> = route.route.iter().map(|d| d.weight).collect();
    assert_eq!(weights, [Some(80), Some(20)]);

    let dr = one(include_str!(
        "../../../../manifests/examples/01-mvc-canary/destination-rule.yaml"
    ));
    let Body::DestinationRule(dr) = &dr.body else {
        panic!("not a destination rule")
    };
    assert_eq!(dr.host, "mvc-service");
    assert_eq!(dr.subsets.len(), 2);

    let all = objects(include_str!(
        "../../../../manifests/examples/04-header-canary/routing.yaml"
    ));
    assert_eq!(all.len(), 3);
}

#[test]
fn scenario_service_entry() {
    let all = objects(include_str!(
        "../../../../manifests/examples/03-bookinfo/egress.yaml"
    ));
    assert_eq!(all.len(), 4);
    let Body::ServiceEntry(se) = &all[0].body else {
        panic!("not a service entry")
    };
    assert_eq!(se.hosts, ["edition.cnn.com"]);
    assert_eq!(se.resolution, Some(Resolution::Dns));
    assert_eq!(se.ports[1].number, 443);
}

#[test]
fn workloads_namespaces_and_endpoints() {
    let all = objects(include_str!("../testdata/workloads.yaml"));
    let kinds: Vec<_> = all.iter().map(Object::kind).collect();
    assert_eq!(
        kinds,
        [
            Kind::Namespace,
            Kind::Pod,
            Kind::Pod,
            Kind::EndpointSlice,
            Kind::Endpoints,
            Kind::WorkloadEntry,
            Kind::Sidecar
        ]
    );
    assert_eq!(all[0].key(), ConfigKey::new(Kind::Namespace, "", "shop"));

    let Body::Pod(ready) = &all[1].body else {
        panic!("not a pod")
    };
    assert_eq!(all[1].meta.creation, "2024-05-01T10:00:00Z");
    assert_eq!(ready.kind, WorkloadKind::Pod);
    assert!(ready.ready);
    assert_eq!(ready.address, "127.0.0.11");
    assert_eq!(ready.ports.get("http"), Some(&8080));
    assert_eq!(ready.ports.len(), 1, "unnamed ports are not kept");
    assert_eq!(ready.node.as_deref(), Some("node-a"));
    assert_eq!(ready.labels.get("version").map(String::as_str), Some("v1"));

    let Body::Pod(pending) = &all[2].body else {
        panic!("not a pod")
    };
    assert!(!pending.ready);
    assert_eq!(pending.address, "");

    let Body::EndpointSlice(slice) = &all[3].body else {
        panic!("not a slice")
    };
    assert_eq!(slice.service, "external");
    assert_eq!(slice.ports.len(), 1, "the UDP port is skipped");
    let e = &slice.endpoints;
    assert!(e[0].ready && e[0].serving && !e[0].terminating);
    assert_eq!(e[0].pod.as_deref(), Some("external-1"));
    assert!(!e[1].ready && !e[1].serving && e[1].terminating);
    assert!(e[2].ready && e[2].serving, "absent conditions mean ready");

    let Body::Endpoints(legacy) = &all[4].body else {
        panic!("not endpoints")
    };
    assert_eq!(legacy.service, "legacy");
    assert_eq!(legacy.ports[0].port, 80);
    assert_eq!(legacy.endpoints.len(), 2);
    assert!(legacy.endpoints[0].ready);
    assert_eq!(legacy.endpoints[0].pod.as_deref(), Some("legacy-1"));
    assert!(!legacy.endpoints[1].ready);

    let Body::WorkloadEntry(we) = &all[5].body else {
        panic!("not a workload entry")
    };
    assert_eq!(we.address, "127.0.0.21");
    assert_eq!(we.weight, Some(3));
    assert!(matches!(all[6].body, Body::Sidecar(_)));
}

#[test]
fn pod_readiness() {
    let pod = |status: &str| {
        let o = one(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec: {{containers: []}}\nstatus: {status}"
        ));
        match o.body {
            Body::Pod(w) => w.ready,
            _ => panic!("not a pod"),
        }
    };
    assert!(
        pod("{phase: Running, podIP: 10.0.0.1}"),
        "no conditions given"
    );
    assert!(!pod("{phase: Running}"), "no IP");
    assert!(!pod(
        "{phase: Running, podIP: 10.0.0.1, conditions: [{type: Ready, status: 'False'}]}"
    ));
    assert!(!pod("{phase: Succeeded, podIP: 10.0.0.1}"));
}

/// A Pod's locality comes from its labels as istiod reads them: `topology.istio.io/locality`
/// first, then `istio-locality`, with `.` for `/`; none without either.
#[test]
fn pod_locality_from_labels() {
    let locality = |labels: &str| {
        let o = one(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, labels: {labels}}}\nspec: {{containers: []}}\nstatus: {{phase: Running, podIP: 10.0.0.1}}"
        ));
        match o.body {
            Body::Pod(w) => w.locality,
            _ => panic!("not a pod"),
        }
    };
    assert_eq!(
        locality("{istio-locality: r1.z1.s1}").as_deref(),
        Some("r1/z1/s1")
    );
    assert_eq!(
        locality("{istio-locality: r1.z1, topology.istio.io/locality: r2.z2}").as_deref(),
        Some("r2/z2")
    );
    assert_eq!(locality("{app: a}"), None);
}

#[test]
fn service_ports_target_ports_and_cluster_ip() {
    let o = one(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: prod}\nspec:\n  clusterIP: 10.96.0.5\n  selector: {}\n  ports:\n  - {name: grpc-api, port: 9000, targetPort: api}\n  - {name: web, port: 80, targetPort: 8080, appProtocol: http2}\n  - {name: dns, port: 53, protocol: UDP}\n",
    );
    assert_eq!(o.key(), ConfigKey::new(Kind::Service, "prod", "s"));
    let Body::Service(s) = o.body else {
        panic!("not a service")
    };
    assert_eq!(
        s.cluster_ip,
        Some("10.96.0.5".parse::<IpAddr>().expect("ip"))
    );
    assert_eq!(s.selector, None, "an empty selector is no selector");
    assert_eq!(s.ports.len(), 2);
    assert_eq!(s.ports[0].target_port, TargetPort::Name("api".into()));
    assert_eq!(s.ports[0].protocol, Protocol::Grpc);
    assert_eq!(s.ports[1].target_port, TargetPort::Number(8080));
    assert_eq!(s.ports[1].protocol, Protocol::Http2);

    let headless =
        one("apiVersion: v1\nkind: Service\nmetadata: {name: h}\nspec: {clusterIP: None}\n");
    let Body::Service(s) = headless.body else {
        panic!("not a service")
    };
    assert_eq!(s.cluster_ip, None);
    assert!(s.headless);
}

#[test]
fn external_name_services_keep_their_name() {
    let service = |spec: &str| {
        let o = one(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: e}}\nspec: {spec}\n"
        ));
        let Body::Service(s) = o.body else {
            panic!("not a service")
        };
        s
    };
    let s = service(
        "{type: ExternalName, externalName: Db.Example.COM., ports: [{name: tcp, port: 5432}]}",
    );
    assert_eq!(s.external_name.as_deref(), Some("db.example.com"));
    assert_eq!(s.ports.len(), 1);
    // Only with the type, and only a non-empty name, as istiod reads it.
    assert_eq!(
        service("{externalName: db.example.com}").external_name,
        None
    );
    assert_eq!(service("{type: ExternalName}").external_name, None);
}

#[test]
fn skipped_and_empty_documents() {
    let skipped = [
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n",
        // a known kind under an apiVersion we do not serve
        "apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: v}\n",
        "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: e}\n",
    ];
    for yaml in skipped {
        let doc = docs(yaml).remove(0);
        assert_eq!(convert(doc, &origin()), Ok(None), "{yaml}");
    }
    assert_eq!(convert(Value::Null, &origin()), Ok(None));
    assert_eq!(convert(serde_json::json!({}), &origin()), Ok(None));
    let e = convert(serde_json::json!("text"), &origin()).expect_err("not a mapping");
    assert!(e.message.contains("mapping"), "{e}");
    let e = convert(serde_json::json!({"apiVersion": "v1"}), &origin()).expect_err("no kind");
    assert_eq!(e.field.as_deref(), Some("kind"));
}

#[test]
fn all_istio_versions_are_served() {
    for version in ["v1alpha3", "v1beta1", "v1"] {
        let o = one(&format!(
            "apiVersion: networking.istio.io/{version}\nkind: WorkloadEntry\nmetadata: {{name: w}}\nspec: {{address: 10.0.0.1}}\n"
        ));
        assert_eq!(o.kind(), Kind::WorkloadEntry);
    }
}

#[test]
fn unknown_fields_are_ignored() {
    let o = one(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d, annotations: {x: y}}\nspec: {host: h, futureField: 3, subsets: [{name: v1, extra: true}]}\n",
    );
    assert_eq!(o.kind(), Kind::DestinationRule);
}

#[test]
fn object_key_reads_identity_without_converting() {
    let doc = docs("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v, namespace: x}\nspec: {hosts: 3}\n").remove(0);
    assert_eq!(
        object_key(&doc),
        Some(ConfigKey::new(Kind::VirtualService, "x", "v"))
    );
    let doc = docs("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n").remove(0);
    assert_eq!(object_key(&doc), None);
}

// ---------------------------------------------------------------------------------------------
// Validation

#[test]
fn missing_name() {
    let e = error("apiVersion: v1\nkind: Service\nmetadata: {namespace: prod}\nspec: {}\n");
    assert_eq!(e.object.kind.as_deref(), Some("Service"));
    assert_eq!(e.object.namespace.as_deref(), Some("prod"));
    assert_eq!(e.field.as_deref(), Some("metadata.name"));
    assert!(e.message.contains("required"), "{e}");
}

#[test]
fn service_port_out_of_range_and_type_errors() {
    let e = error(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 70000}]}\n",
    );
    assert_error(
        &e,
        "Service",
        "default/s",
        "spec.ports[0].port",
        "out of range",
    );
    let e = error(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: '80'}]}\n",
    );
    assert_error(
        &e,
        "Service",
        "default/s",
        "spec.ports[0].port",
        "invalid type",
    );
}

/// A VirtualService without hosts is a delegate: istiod refuses gateways, layer-4 routes and
/// further delegation on it, and so does meshpilot; a plain one converts.
#[test]
fn a_delegate_virtual_service_is_validated_as_istiod_does() {
    let doc = |spec: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs, namespace: prod}}\nspec: {spec}\n"
        )
    };
    let route = "http: [{route: [{destination: {host: a}}]}]";
    one(&doc(&format!("{{{route}}}")));
    for (spec, field, says) in [
        (
            format!("{{gateways: [gw], {route}}}"),
            "spec.gateways",
            "must have no gateways",
        ),
        (
            "{tcp: [{route: [{destination: {host: a}}]}]}".to_string(),
            "spec.tcp",
            "must have no tcp routes",
        ),
        (
            "{http: [{delegate: {name: x}}]}".to_string(),
            "spec.http[0].delegate",
            "cannot delegate again",
        ),
    ] {
        assert_error(
            &error(&doc(&spec)),
            "VirtualService",
            "prod/vs",
            field,
            says,
        );
    }
}

#[test]
fn http_route_needs_exactly_one_action() {
    let e = error(&vs("  - match: [{uri: {prefix: /}}]\n"));
    assert_error(
        &e,
        "VirtualService",
        "prod/vs",
        "spec.http[0]",
        "needs one of route",
    );
    let e = error(&vs(
        "  - route: [{destination: {host: a}}]\n    redirect: {uri: /x}\n",
    ));
    assert_error(
        &e,
        "VirtualService",
        "prod/vs",
        "spec.http[0]",
        "route and redirect",
    );
}

#[test]
fn weights_are_relative_not_negative_and_not_all_zero() {
    let e = error(&vs(
        "  - route:\n    - {destination: {host: a}, weight: 0}\n    - {destination: {host: b}, weight: 0}\n",
    ));
    assert_error(
        &e,
        "VirtualService",
        "prod/vs",
        "spec.http[0].route",
        "all 0",
    );
    let e = error(&vs(
        "  - route:\n    - {destination: {host: a}, weight: 20}\n    - {destination: {host: b}, weight: -1}\n",
    ));
    assert_error(
        &e,
        "VirtualService",
        "prod/vs",
        "spec.http[0].route[1].weight",
        "negative",
    );
    // A single destination may omit its weight; 50/10/40, 1/1 and 150/50 are fine (relative,
    // as in Istio since 1.15).
    one(&vs("  - route: [{destination: {host: a}}]\n"));
    for (a, b, c) in [(50, 10, 40), (1, 1, 0), (150, 50, 0)] {
        one(&vs(&format!(
            "  - route:\n    - {{destination: {{host: a}}, weight: {a}}}\n    - {{destination: {{host: b}}, weight: {b}}}\n    - {{destination: {{host: c}}, weight: {c}}}\n"
        )));
    }
}

#[test]
fn weight_type_error_names_the_field() {
    let e = error(&vs(
        "  - route:\n    - {destination: {host: a}, weight: 50}\n    - {destination: {host: b}, weight: fifty}\n",
    ));
    assert_error(
        &e,
        "VirtualService",
        "prod/vs",
        "spec.http[0].route[1].weight",
        "invalid type",
    );
}

#[test]
fn destination_host_and_ports() {
    let e = error(&vs("  - route: [{destination: {host: ''}}]\n"));
    assert_error(
        &e,
        "VirtualService",
        "prod/vs",
        "spec.http[0].route[0].destination.host",
        "host is required",
    );
    let e = error(&vs(
        "  - route: [{destination: {host: a, port: {number: 0}}}]\n",
    ));
    assert_error(
        &e,
        "VirtualService",
        "prod/vs",
        "spec.http[0].route[0].destination.port.number",
        "out of range",
    );
    let e = error(&vs(
        "  - match: [{port: 99999}]\n    route: [{destination: {host: a}}]\n",
    ));
    assert_error(
        &e,
        "VirtualService",
        "prod/vs",
        "spec.http[0].match[0].port",
        "out of range",
    );
}

#[test]
fn bad_regex() {
    let e = error(&vs(
        "  - match: [{headers: {qa: {regex: 'canary(-test'}}}]\n    route: [{destination: {host: a}}]\n",
    ));
    assert_error(
        &e,
        "VirtualService",
        "prod/vs",
        "spec.http[0].match[0].headers.qa.regex",
        "invalid regex",
    );
    one(&vs(
        "  - match: [{uri: {regex: '/api/v[0-9]+/.*'}}]\n    route: [{destination: {host: a}}]\n",
    ));
}

#[test]
fn durations() {
    let e = error(&vs(
        "  - route: [{destination: {host: a}}]\n    timeout: 10 seconds\n",
    ));
    assert_error(
        &e,
        "VirtualService",
        "prod/vs",
        "spec.http[0].timeout",
        "invalid duration",
    );
    let e = error(&vs(
        "  - route: [{destination: {host: a}}]\n    retries: {attempts: 3, perTryTimeout: 2x}\n",
    ));
    assert_error(
        &e,
        "VirtualService",
        "prod/vs",
        "spec.http[0].retries.perTryTimeout",
        "invalid duration",
    );
    let e = error(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec: {host: h, trafficPolicy: {connectionPool: {tcp: {connectTimeout: fast}}}}\n",
    );
    assert_error(
        &e,
        "DestinationRule",
        "default/d",
        "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
        "invalid duration",
    );
}

#[test]
fn parse_duration_accepts_istio_forms() {
    let ms = Duration::from_millis;
    assert_eq!(parse_duration("1s"), Some(ms(1000)));
    assert_eq!(parse_duration("1.5s"), Some(ms(1500)));
    assert_eq!(parse_duration("500ms"), Some(ms(500)));
    assert_eq!(parse_duration("1m"), Some(ms(60_000)));
    assert_eq!(parse_duration("1h"), Some(ms(3_600_000)));
    assert_eq!(parse_duration("1h30m"), Some(ms(5_400_000)));
    assert_eq!(parse_duration(".5s"), Some(ms(500)));
    assert_eq!(parse_duration("250us"), Some(Duration::from_micros(250)));
    assert_eq!(parse_duration("0"), Some(Duration::ZERO));
    for bad in ["", "10", "s", "1.2.3s", "-1s", "1d", "1 s", "ms", "."] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}

#[test]
fn destination_rule_rules() {
    let dr = |spec: &str| {
        error(&format!(
            "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {{name: d, namespace: prod}}\nspec: {spec}\n"
        ))
    };
    assert_error(
        &dr("{host: ''}"),
        "DestinationRule",
        "prod/d",
        "spec.host",
        "needs a host",
    );
    assert_error(
        &dr("{host: h, subsets: [{name: ''}]}"),
        "DestinationRule",
        "prod/d",
        "spec.subsets[0].name",
        "needs a name",
    );
    assert_error(
        &dr("{host: h, subsets: [{name: v1}, {name: v1}]}"),
        "DestinationRule",
        "prod/d",
        "spec.subsets[1].name",
        "duplicate subset name `v1`",
    );
}

#[test]
fn gateway_rules() {
    let gw = |spec: &str| {
        error(&format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: g, namespace: istio-system}}\nspec: {spec}\n"
        ))
    };
    assert_error(
        &gw("{servers: []}"),
        "Gateway",
        "istio-system/g",
        "spec.servers",
        "at least one server",
    );
    assert_error(
        &gw("{servers: [{hosts: ['*']}]}"),
        "Gateway",
        "istio-system/g",
        "spec.servers[0].port.number",
        "needs a port",
    );
    assert_error(
        &gw("{servers: [{port: {number: 80, name: http, protocol: HTTP}}]}"),
        "Gateway",
        "istio-system/g",
        "spec.servers[0].hosts",
        "at least one host",
    );
    assert_error(
        &gw("{servers: [{port: {number: 65536}, hosts: ['*']}]}"),
        "Gateway",
        "istio-system/g",
        "spec.servers[0].port.number",
        "out of range",
    );
}

#[test]
fn service_entry_rules() {
    let se = |spec: &str| {
        error(&format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: se}}\nspec: {spec}\n"
        ))
    };
    assert_error(
        &se("{hosts: [], ports: [{number: 80}]}"),
        "ServiceEntry",
        "default/se",
        "spec.hosts",
        "at least one host",
    );
    assert_error(
        &se("{hosts: [a.com]}"),
        "ServiceEntry",
        "default/se",
        "spec.ports",
        "at least one port",
    );
    assert_error(
        &se(
            "{hosts: [a.com], ports: [{number: 80}], workloadSelector: {labels: {app: a}}, endpoints: [{address: 1.1.1.1}]}",
        ),
        "ServiceEntry",
        "default/se",
        "spec.workloadSelector",
        "only one of workloadSelector and endpoints",
    );
    assert_error(
        &se(
            "{hosts: [a.com], ports: [{number: 80}], resolution: DNS_ROUND_ROBIN, endpoints: [{address: a.b}, {address: c.d}]}",
        ),
        "ServiceEntry",
        "default/se",
        "spec.endpoints",
        "at most one endpoint",
    );
    assert_error(
        &se("{hosts: [a.com], ports: [{number: 0, name: http}]}"),
        "ServiceEntry",
        "default/se",
        "spec.ports[0].number",
        "out of range",
    );
    assert_error(
        &se(
            "{hosts: [a.com], ports: [{number: 80}], resolution: STATIC, endpoints: [{address: a.com}]}",
        ),
        "ServiceEntry",
        "default/se",
        "spec.endpoints[0].address",
        "not an IP address",
    );
    assert_error(
        &se("{hosts: ['*.a.com'], ports: [{number: 80}], resolution: DNS}"),
        "ServiceEntry",
        "default/se",
        "spec.hosts[0]",
        "wildcard host",
    );
    // An unknown enum value is a type error with its path.
    assert_error(
        &se("{hosts: [a.com], ports: [{number: 80}], resolution: DNSS}"),
        "ServiceEntry",
        "default/se",
        "spec.resolution",
        "unknown variant `DNSS`",
    );
}

#[test]
fn service_entry_port_protocol_must_be_known() {
    let doc = |spec: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: se}}\nspec: {spec}\n"
        )
    };
    let se = |spec: &str| error(&doc(spec));
    assert_error(
        &se("{hosts: [a.com], ports: [{number: 80, name: web, protocol: SPDY}]}"),
        "ServiceEntry",
        "default/se",
        "spec.ports[0].protocol",
        "unsupported protocol `SPDY`",
    );
    // An empty or missing protocol is sniffed, as istiod does: accepted.
    for spec in [
        "{hosts: [a.com], ports: [{number: 80, name: web}]}",
        "{hosts: [a.com], ports: [{number: 80, name: web, protocol: ''}]}",
        "{hosts: [a.com], ports: [{number: 80, name: web, protocol: grpc}]}",
    ] {
        let Body::ServiceEntry(entry) = one(&doc(spec)).body else {
            panic!("not a ServiceEntry");
        };
        assert_eq!(entry.ports.len(), 1, "{spec}");
    }
}

#[test]
fn workload_entry_and_sidecar_rules() {
    let e = error(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: w}\nspec: {labels: {app: a}}\n",
    );
    assert_error(
        &e,
        "WorkloadEntry",
        "default/w",
        "spec.address",
        "address is required",
    );
    let e = error(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s}\nspec: {egress: [{hosts: ['reviews']}]}\n",
    );
    assert_error(
        &e,
        "Sidecar",
        "default/s",
        "spec.egress[0].hosts[0]",
        "namespace/host",
    );
    let e = error(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s}\nspec: {ingress: [{port: {number: 80, protocol: HTTP}, defaultEndpoint: '10.0.0.1:8080'}]}\n",
    );
    assert_error(
        &e,
        "Sidecar",
        "default/s",
        "spec.ingress[0].defaultEndpoint",
        "127.0.0.1:PORT",
    );
    let e = error(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s}\nspec: {outboundTrafficPolicy: {mode: DENY_ALL}}\n",
    );
    assert_error(
        &e,
        "Sidecar",
        "default/s",
        "spec.outboundTrafficPolicy.mode",
        "ALLOW_ANY or REGISTRY_ONLY",
    );
    let e = error(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\nspec: {hosts: [db], tcp: [{match: [{destinationSubnets: [10.0.0.0/40]}], route: [{destination: {host: db}}]}]}\n",
    );
    assert_error(
        &e,
        "VirtualService",
        "default/v",
        "spec.tcp[0].match[0].destinationSubnets[0]",
        "not an IP address or CIDR range",
    );
}

#[test]
fn endpoint_slice_needs_its_service_label() {
    let e = error(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e}\naddressType: IPv4\nendpoints: []\n",
    );
    assert_error(
        &e,
        "EndpointSlice",
        "default/e",
        "metadata.labels.kubernetes.io/service-name",
        "kubernetes.io/service-name",
    );
}

#[test]
fn label_type_error_names_the_label() {
    let e =
        error("apiVersion: v1\nkind: Service\nmetadata: {name: s, labels: {version: {a: b}}}\n");
    assert_error(
        &e,
        "Service",
        "default/s",
        "metadata.labels.version",
        "invalid type",
    );
}

#[test]
fn peer_authentication_v1_and_v1beta1_with_levels_and_ports() {
    use meshpilot_model::MtlsMode;
    for version in ["v1", "v1beta1"] {
        let o = one(&format!(
            "apiVersion: security.istio.io/{version}\nkind: PeerAuthentication\n\
             metadata: {{name: web, namespace: prod}}\n\
             spec:\n  selector: {{matchLabels: {{app: web}}}}\n  mtls: {{mode: STRICT}}\n\
             \x20 portLevelMtls:\n    8080: {{mode: DISABLE}}\n    \"9000\": {{mode: UNSET}}\n"
        ));
        let Body::PeerAuthentication(pa) = o.body else {
            panic!("a PeerAuthentication: {o:?}");
        };
        assert_eq!(pa.mtls.map(|m| m.mode), Some(MtlsMode::Strict));
        assert_eq!(pa.port_level_mtls[&8080].mode, MtlsMode::Disable);
        assert_eq!(pa.port_level_mtls[&9000].mode, MtlsMode::Unset);
        assert_eq!(pa.workload_selector().map(|l| l.len()), Some(1));
    }
    let mesh = one(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {name: default, namespace: istio-system}\nspec: {}\n",
    );
    assert!(matches!(mesh.body, Body::PeerAuthentication(ref pa) if pa.mtls.is_none()));
}

#[test]
fn peer_authentication_errors_name_the_field() {
    let e = error(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {name: bad, namespace: prod}\nspec: {mtls: {mode: STRICTEST}}\n",
    );
    assert_eq!(e.field.as_deref(), Some("spec.mtls.mode"), "{e:?}");
    let e = error(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {name: bad, namespace: prod}\nspec: {portLevelMtls: {8080: {mode: STRICT}}}\n",
    );
    assert_eq!(e.field.as_deref(), Some("spec.portLevelMtls"), "{e:?}");
    let e = error(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {name: bad, namespace: prod}\n\
         spec: {selector: {matchLabels: {app: web}}, portLevelMtls: {0: {mode: STRICT}}}\n",
    );
    assert_eq!(e.field.as_deref(), Some("spec.portLevelMtls.0"), "{e:?}");
}

#[test]
fn destination_rule_tls_mode_and_mutual_files_are_checked() {
    let e = error(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata: {name: r, namespace: default}\n\
         spec: {host: web, trafficPolicy: {tls: {mode: MUTUAL_ISH}}}\n",
    );
    assert_eq!(
        e.field.as_deref(),
        Some("spec.trafficPolicy.tls.mode"),
        "{e:?}"
    );
    let e = error(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata: {name: r, namespace: default}\n\
         spec: {host: web, trafficPolicy: {tls: {mode: MUTUAL, caCertificates: /ca.pem}}}\n",
    );
    assert_eq!(
        e.field.as_deref(),
        Some("spec.trafficPolicy.tls.clientCertificate"),
        "{e:?}"
    );
}

#[test]
fn pods_carry_their_service_account() {
    let o = one(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\n\
         spec: {serviceAccountName: web-sa, containers: [{name: app}]}\n",
    );
    let Body::Pod(w) = o.body else {
        panic!("a Pod")
    };
    assert_eq!(w.service_account.as_deref(), Some("web-sa"));
    let o = one(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\n\
         spec: {containers: [{name: app}]}\n",
    );
    let Body::Pod(w) = o.body else {
        panic!("a Pod")
    };
    assert_eq!(w.service_account.as_deref(), Some("default"));
}

#[test]
fn istio_kinds_meshpilot_does_not_serve_are_warned_about_by_name() {
    let yaml = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
                metadata: {name: deny-all, namespace: shop}\nspec: {}\n---\n\
                apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\n\
                metadata: {name: lua, namespace: istio-system}\nspec: {}\n---\n\
                apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n";
    let results: Vec<_> = docs(yaml)
        .into_iter()
        .map(|d| convert(d, &origin()))
        .collect();
    let warning = |i: usize| match &results[i] {
        Err(d) => d.clone(),
        other => panic!("document {i}: expected a warning, got {other:?}"),
    };
    let policy = warning(0);
    assert_eq!(policy.severity, meshpilot_model::Severity::Warning);
    assert_eq!(policy.field.as_deref(), Some("kind"));
    assert_eq!(policy.object.kind.as_deref(), Some("AuthorizationPolicy"));
    assert_eq!(policy.object.namespace.as_deref(), Some("shop"));
    assert_eq!(policy.object.name.as_deref(), Some("deny-all"));
    assert!(
        policy
            .message
            .contains("requests it would deny are allowed"),
        "{}",
        policy.message
    );
    let filter = warning(1);
    assert_eq!(filter.object.name.as_deref(), Some("lua"));
    assert!(
        filter.message.contains("patches are not applied"),
        "{}",
        filter.message
    );
    // A kind Istio does not act on either is skipped without a word.
    assert!(matches!(results[2], Ok(None)), "{:?}", results[2]);
}

#[test]
fn export_to_lists_are_checked_as_istiod_checks_them() {
    let err = |yaml: &str| match convert(docs(yaml).remove(0), &origin()) {
        Err(d) => d,
        other => panic!("expected an error, got {other:?}"),
    };
    let d = err("apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
                 metadata: {name: r, namespace: shop}\n\
                 spec: {hosts: [r], exportTo: [\"*\", shop], http: [{route: [{destination: {host: r}}]}]}\n");
    assert_eq!(d.field.as_deref(), Some("spec.exportTo[0]"));
    assert!(d.message.contains("only entry"), "{}", d.message);
    let d = err(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: shop, \
                 annotations: {networking.istio.io/exportTo: \"., Bad_NS\"}}\n\
                 spec: {ports: [{port: 80}]}\n",
    );
    assert_eq!(
        d.field.as_deref(),
        Some("metadata.annotations[networking.istio.io/exportTo][1]")
    );
    let svc = one(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: shop, \
                   annotations: {networking.istio.io/exportTo: \"., front\"}}\n\
                   spec: {ports: [{port: 80}]}\n",
    );
    match svc.body {
        meshpilot_model::Body::Service(s) => assert_eq!(s.export_to, vec![".", "front"]),
        other => panic!("{other:?}"),
    }
}
