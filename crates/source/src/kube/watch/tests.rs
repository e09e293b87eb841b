//! The watcher-event → source-event mapping: one Reset per (re)list, errors tracked per object.

use kube::api::DynamicObject;
use kube::runtime::watcher::Event;
use serde_json::json;

use super::*;
use meshpilot_model::Kind;

fn watch() -> Watch {
    Watch {
        source: SourceId::Kube {
            kind: KubeKind::VirtualService,
            scope: 0,
        },
        kind: KubeKind::VirtualService,
        resource: ApiResource {
            group: "networking.istio.io".into(),
            version: "v1".into(),
            api_version: "networking.istio.io/v1".into(),
            kind: "VirtualService".into(),
            plural: "virtualservices".into(),
        },
        namespace: None,
        localities: None,
    }
}

/// A VirtualService as a list item (no apiVersion/kind, as the API server sends them).
fn vs(name: &str, weight: i64) -> DynamicObject {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
        "spec": {"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"}, "weight": weight}]}]}
    }))
    .expect("dynamic object")
}

fn kinds(events: &[SourceEvent]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match e {
            SourceEvent::Reset { .. } => "reset",
            SourceEvent::Update { .. } => "update",
            SourceEvent::Held { .. } => "held",
        })
        .collect()
}

#[test]
fn a_list_is_one_reset_at_init_done_and_keeps_errors() {
    let w = watch();
    let mut state = State::new(&w);
    assert!(state.handle(Event::Init).is_empty());
    assert!(state.handle(Event::InitApply(vs("good", 100))).is_empty());
    assert!(state.handle(Event::InitApply(vs("bad", -120))).is_empty());
    let out = state.handle(Event::InitDone);
    let [
        SourceEvent::Reset {
            objects,
            diagnostics: errors,
            ..
        },
    ] = out.as_slice()
    else {
        panic!("expected one reset, got {:?}", kinds(&out));
    };
    assert_eq!(objects.len(), 1);
    assert_eq!(
        objects[0].key(),
        ConfigKey::new(Kind::VirtualService, "default", "good")
    );
    assert_eq!(errors.len(), 1);
    let text = errors[0].to_string();
    assert!(
        text.contains("VirtualService default/bad") && text.contains("weight"),
        "{text}"
    );
}

#[test]
fn a_bad_update_reports_an_error_and_a_fix_clears_it() {
    let w = watch();
    let mut state = State::new(&w);
    state.handle(Event::Init);
    state.handle(Event::InitDone);
    let out = state.handle(Event::Apply(vs("a", -120)));
    let [
        SourceEvent::Update {
            upserts,
            deletes,
            diagnostics,
            ..
        },
    ] = out.as_slice()
    else {
        panic!("expected one update, got {:?}", kinds(&out));
    };
    assert!(upserts.is_empty() && deletes.is_empty());
    assert_eq!(diagnostics.len(), 1, "the error is reported");
    // The same mistake again says nothing new.
    assert!(state.handle(Event::Apply(vs("a", -120))).is_empty());
    let out = state.handle(Event::Apply(vs("a", 100)));
    let [
        SourceEvent::Update {
            upserts,
            diagnostics,
            ..
        },
    ] = out.as_slice()
    else {
        panic!("expected one update, got {:?}", kinds(&out));
    };
    assert_eq!(upserts.len(), 1, "the fixed object is applied");
    assert!(diagnostics.is_empty(), "and its error cleared");
    let out = state.handle(Event::Delete(vs("a", 100)));
    let [SourceEvent::Update { deletes, .. }] = out.as_slice() else {
        panic!("expected an update, got {:?}", kinds(&out));
    };
    assert_eq!(
        deletes.as_slice(),
        [ConfigKey::new(Kind::VirtualService, "default", "a")]
    );
}

#[test]
fn an_unserved_kind_is_a_warning_that_its_delete_takes_back() {
    let w = Watch {
        source: SourceId::Kube {
            kind: KubeKind::AuthorizationPolicy,
            scope: 0,
        },
        kind: KubeKind::AuthorizationPolicy,
        resource: ApiResource {
            group: "security.istio.io".into(),
            version: "v1".into(),
            api_version: "security.istio.io/v1".into(),
            kind: "AuthorizationPolicy".into(),
            plural: "authorizationpolicies".into(),
        },
        namespace: None,
        localities: None,
    };
    // What a metadata-only watch yields: names, no spec.
    let policy = || {
        metadata_event(Event::Apply(PartialObjectMeta {
            types: None,
            metadata: kube::api::ObjectMeta {
                name: Some("deny-all".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            _phantom: std::marker::PhantomData,
        }))
    };
    let mut state = State::new(&w);
    let out = state.handle(policy());
    let [SourceEvent::Update { diagnostics, .. }] = out.as_slice() else {
        panic!("expected one update, got {:?}", kinds(&out));
    };
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(diagnostics[0].severity, meshpilot_model::Severity::Warning);
    let Event::Apply(obj) = policy() else {
        unreachable!("an apply stays an apply")
    };
    let out = state.handle(Event::Delete(obj));
    let [SourceEvent::Update { diagnostics, .. }] = out.as_slice() else {
        panic!("expected one update, got {:?}", kinds(&out));
    };
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
}

/// A field meshpilot does not read is a warning while its object serves: listed with the
/// object, gone once an update drops the field, back with it, and gone with the object.
#[test]
fn unread_fields_are_warned_while_their_object_serves() {
    let w = watch();
    let with_unread = |unread: bool| {
        let mut spec = json!({"hosts": ["a"], "tcp": [{"match": [{"port": 5432}], "route": [{"destination": {"host": "a"}}]}]});
        if unread {
            spec["tcp"][0]["match"][0]["sourceNamespace"] = json!("shop");
        }
        serde_json::from_value::<DynamicObject>(json!({
            "metadata": {"name": "db", "namespace": "default", "resourceVersion": "1"},
            "spec": spec,
        }))
        .expect("dynamic object")
    };
    let warned = |out: &[SourceEvent]| -> Vec<String> {
        let [SourceEvent::Reset { diagnostics, .. } | SourceEvent::Update { diagnostics, .. }] =
            out
        else {
            panic!("expected one event, got {:?}", kinds(out));
        };
        diagnostics
            .iter()
            .filter(|d| d.severity == meshpilot_model::Severity::Warning)
            .filter_map(|d| d.field.clone())
            .collect()
    };
    let mut state = State::new(&w);
    state.handle(Event::Init);
    state.handle(Event::InitApply(with_unread(true)));
    let out = state.handle(Event::InitDone);
    assert_eq!(warned(&out), ["spec.tcp[0].match[0].sourceNamespace"]);
    assert!(warned(&state.handle(Event::Apply(with_unread(false)))).is_empty());
    assert_eq!(
        warned(&state.handle(Event::Apply(with_unread(true)))),
        ["spec.tcp[0].match[0].sourceNamespace"]
    );
    assert!(warned(&state.handle(Event::Delete(with_unread(true)))).is_empty());
}

/// A Pod on node `n1` as a list item, with `labels`.
fn pod_on_n1(name: &str, labels: serde_json::Value) -> DynamicObject {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "1", "labels": labels},
        "spec": {"nodeName": "n1", "containers": []},
        "status": {"phase": "Running", "podIP": "10.0.0.1"}
    }))
    .expect("dynamic object")
}

/// The locality of each Pod `events` carry, by name.
fn pod_localities(events: &[SourceEvent]) -> Vec<(String, Option<String>)> {
    events
        .iter()
        .flat_map(|e| match e {
            SourceEvent::Reset { objects, .. } => objects.clone(),
            SourceEvent::Update { upserts, .. } => upserts.clone(),
            SourceEvent::Held { .. } => Vec::new(),
        })
        .filter_map(|o| match &o.body {
            Body::Pod(w) => Some((o.meta.name.clone(), w.locality.clone())),
            _ => None,
        })
        .collect()
}

/// A Node relabelled into another zone re-sends the Pods whose locality is that Node's (and
/// only those: a Pod's own locality label wins), so their endpoints move without a Pod change.
#[test]
fn a_nodes_new_locality_re_sends_the_pods_that_take_it() {
    let localities = Localities::default();
    localities.set("n1".to_string(), Some("r1/z1".to_string()));
    let w = Watch {
        source: SourceId::Kube {
            kind: KubeKind::Pod,
            scope: 0,
        },
        kind: KubeKind::Pod,
        resource: ApiResource {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: "Pod".into(),
            plural: "pods".into(),
        },
        namespace: None,
        localities: Some(localities.clone()),
    };
    let mut changes = localities.changes();
    let mut state = State::new(&w);
    state.handle(Event::Init);
    state.handle(Event::InitApply(pod_on_n1("plain", json!({"app": "web"}))));
    state.handle(Event::InitApply(pod_on_n1(
        "own",
        json!({"app": "web", "topology.istio.io/locality": "r9.z9"}),
    )));
    let listed = state.handle(Event::InitDone);
    assert_eq!(
        pod_localities(&listed),
        [
            ("plain".to_string(), Some("r1/z1".to_string())),
            ("own".to_string(), Some("r9/z9".to_string())),
        ]
    );
    // Nothing moved yet: nothing to send.
    assert!(state.relocate().is_empty());

    // A status heartbeat (same labels) tells the Pod watches nothing.
    localities.set("n1".to_string(), Some("r1/z1".to_string()));
    assert!(!changes.has_changed().expect("sender alive"));
    localities.set("n1".to_string(), Some("r2/z2".to_string()));
    assert!(changes.has_changed().expect("sender alive"));
    changes.mark_unchanged();
    let moved = state.relocate();
    assert_eq!(kinds(&moved), ["update"]);
    assert_eq!(
        pod_localities(&moved),
        [("plain".to_string(), Some("r2/z2".to_string()))]
    );
    assert!(state.relocate().is_empty(), "sent once");

    // A Node gone (or unlabelled) leaves its Pods without a locality.
    localities.set("n1".to_string(), None);
    assert_eq!(
        pod_localities(&state.relocate()),
        [("plain".to_string(), None)]
    );
    // A deleted Pod is not re-sent.
    state.handle(Event::Delete(pod_on_n1("plain", json!({}))));
    localities.set("n1".to_string(), Some("r3/z3".to_string()));
    assert!(state.relocate().is_empty());
}
