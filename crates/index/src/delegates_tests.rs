//! istiod's merge of root and delegate routes: which delegate routes survive, their matches
//! and settings, and what the view reports.

use serde_json::json;

use super::*;
use crate::Index;
use meshpilot_model::SourceId;
use meshpilot_model::test_helpers::*;

fn route(v: serde_json::Value) -> HttpRoute {
    serde_json::from_value(v).expect("route")
}

fn uris(r: &HttpRoute) -> Vec<String> {
    r.matches
        .iter()
        .map(|m| format!("{:?}", m.uri.as_ref().expect("uri")))
        .collect()
}

#[test]
fn delegate_matches_must_narrow_the_roots() {
    let root = route(
        json!({"name": "r", "match": [{"uri": {"prefix": "/a"}}, {"uri": {"prefix": "/b"}}],
        "timeout": "2s", "delegate": {"name": "d"}}),
    );
    // A narrower prefix and an exact path under a root prefix merge with that root match only.
    let narrower = route(
        json!({"name": "s", "match": [{"uri": {"prefix": "/a/x"}, "headers": {"u": {"exact": "1"}}}],
        "route": [{"destination": {"host": "x"}}]}),
    );
    let merged = merge_route(&root, &narrower).expect("merges");
    assert_eq!(uris(&merged), vec!["Prefix(\"/a/x\")"]);
    assert_eq!(merged.name.as_deref(), Some("r-s"));
    assert_eq!(
        merged.timeout.as_deref(),
        Some("2s"),
        "the root's timeout fills in"
    );
    assert_eq!(merged.matches[0].headers.len(), 1);

    // No match: the root's matches apply as they are.
    let any = route(json!({"route": [{"destination": {"host": "x"}}], "timeout": "5s"}));
    let merged = merge_route(&root, &any).expect("merges");
    assert_eq!(uris(&merged), vec!["Prefix(\"/a\")", "Prefix(\"/b\")"]);
    assert_eq!(
        merged.timeout.as_deref(),
        Some("5s"),
        "the delegate's own timeout wins"
    );
    assert_eq!(merged.name.as_deref(), Some("r"));

    // Only a header: combined with each root match.
    let header = route(
        json!({"match": [{"headers": {"u": {"exact": "1"}}}], "route": [{"destination": {"host": "x"}}]}),
    );
    let merged = merge_route(&root, &header).expect("merges");
    assert_eq!(uris(&merged), vec!["Prefix(\"/a\")", "Prefix(\"/b\")"]);
    assert!(merged.matches.iter().all(|m| m.headers.contains_key("u")));

    // Conflicts: a prefix outside the root's, a regex, a different ignoreUriCase, another port.
    for leaf in [
        json!({"uri": {"prefix": "/c"}}),
        json!({"uri": {"prefix": "/"}}),
        json!({"uri": {"regex": "/a.*"}}),
        json!({"uri": {"prefix": "/a"}, "ignoreUriCase": true}),
    ] {
        let sub = route(json!({"match": [leaf], "route": [{"destination": {"host": "x"}}]}));
        assert!(merge_route(&root, &sub).is_none(), "{leaf}");
    }
    // An exact root needs the same exact path.
    let exact =
        route(json!({"match": [{"uri": {"exact": "/a"}, "port": 80}], "delegate": {"name": "d"}}));
    let same = route(
        json!({"match": [{"uri": {"exact": "/a"}}], "route": [{"destination": {"host": "x"}}]}),
    );
    let merged = merge_route(&exact, &same).expect("same exact path");
    assert_eq!(merged.matches[0].port, Some(80), "the root's port fills in");
    let other_port =
        route(json!({"match": [{"port": 81}], "route": [{"destination": {"host": "x"}}]}));
    assert!(merge_route(&exact, &other_port).is_none());
    let prefix = route(
        json!({"match": [{"uri": {"prefix": "/a"}}], "route": [{"destination": {"host": "x"}}]}),
    );
    assert!(merge_route(&exact, &prefix).is_none());
}

#[test]
fn the_view_serves_roots_merged_and_reports_what_is_left_out() {
    let mut index = Index::new();
    index.reset(
        SourceId::Files,
        vec![
            mk_service("default", "web", &[80]),
            mk_service("team", "reviews", &[80]),
            mk_virtual_service("default", "root", json!({"hosts": ["web"], "http": [
                {"match": [{"uri": {"prefix": "/reviews"}}], "delegate": {"name": "reviews", "namespace": "team"}},
                {"delegate": {"name": "missing"}},
                {"delegate": {"name": "private", "namespace": "team"}},
                {"route": [{"destination": {"host": "web"}}]}]})),
            mk_virtual_service("team", "reviews", json!({"http": [
                {"match": [{"uri": {"prefix": "/reviews/v2"}}], "route": [{"destination": {"host": "reviews"}}]},
                {"match": [{"uri": {"prefix": "/ratings"}}], "route": [{"destination": {"host": "reviews"}}]},
                {"route": [{"destination": {"host": "reviews.team.svc.cluster.local"}}]}]})),
            mk_virtual_service("team", "private", json!({"exportTo": ["."], "http": [
                {"route": [{"destination": {"host": "reviews"}}]}]})),
            mk_virtual_service("team", "orphan", json!({"http": [
                {"route": [{"destination": {"host": "reviews"}}]}]})),
        ],
    );
    let view = index.build_view("cluster.local", None);
    let names: Vec<&str> = view.virtual_services.iter().map(|v| &*v.key.name).collect();
    assert_eq!(names, vec!["root"], "delegates route nothing themselves");
    let http = &view.virtual_services[0].spec.http;
    let summary: Vec<(Vec<String>, String)> = http
        .iter()
        .map(|r| {
            (
                r.matches.iter().map(|m| format!("{:?}", m.uri)).collect(),
                r.route[0].destination.host.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                vec!["Some(Prefix(\"/reviews/v2\"))".to_string()],
                "reviews".to_string()
            ),
            (
                vec!["Some(Prefix(\"/reviews\"))".to_string()],
                "reviews.team.svc.cluster.local".to_string()
            ),
            (vec![], "web".to_string()),
        ]
    );
    let reported: Vec<(String, String)> = view
        .diagnostics
        .iter()
        .map(|d| {
            (
                d.object.name.clone().unwrap_or_default(),
                d.field.clone().unwrap_or_default(),
            )
        })
        .collect();
    for expected in [
        ("root", "spec.http[0].delegate"), // /ratings is not under /reviews
        ("root", "spec.http[1].delegate"), // no such delegate
        ("root", "spec.http[2].delegate"), // not exported to default
        ("orphan", "spec.hosts"),
    ] {
        assert!(
            reported.contains(&(expected.0.to_string(), expected.1.to_string())),
            "{expected:?} in {:?}",
            view.diagnostics
        );
    }
}
