//! State-of-the-world endpoint and route responses carry only what the proxy does not hold,
//! checked on the state machine alone (see [`machine_tests`](super::machine_tests)): Envoy keeps
//! a subscribed resource that a later response leaves out, so only a first request or a
//! reconnect gets everything, and the registry is still told the complete set the proxy holds.

use std::sync::Arc;

use prost::Message;

use super::machine_tests::{
    Event, Recorder, decoded, mesh, only, request, sent, sotw, strings, version,
};
use super::protocol::Protocol;
use super::tests::{cla, cluster, listener, names_in, route, snapshot};
use meshpilot_snapshot::{Snapshot, XdsType};

const EDS: XdsType = XdsType::Endpoint;

const LDS: XdsType = XdsType::Listener;
const RDS: XdsType = XdsType::Route;

/// One listener and two route configurations; `host` is the one virtual host of `r2`.
fn routes(host: &str) -> Arc<Snapshot> {
    use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
    let r2 = RouteConfiguration {
        name: "r2".to_string(),
        virtual_hosts: vec![VirtualHost {
            name: host.to_string(),
            domains: vec![host.to_string()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let r2 = meshpilot_snapshot::Resource::new("r2", r2.encode_to_vec().into(), vec![]);
    snapshot(vec![], vec![], vec![listener("l")], vec![route("r1"), r2])
}

/// A stream that took `snap`'s listeners and asked for route configurations `r1` and `r2`, and
/// the answer to that request.
fn subscribed_to_routes(
    snap: &Arc<Snapshot>,
) -> (
    super::sotw::SotwStream,
    Recorder,
    Vec<super::wire::SotwResponse>,
) {
    let (mut stream, mut events) = (sotw(), Recorder::default());
    stream.on_request(request(LDS, &[], "", ""), Some(snap), &mut events);
    let out = stream.on_request(request(RDS, &["r1", "r2"], "", ""), Some(snap), &mut events);
    (stream, events, out)
}

#[test]
fn sotw_route_change_sends_only_that_route_configuration() {
    let (first, second) = (routes("x.example"), routes("y.example"));
    let (mut stream, mut events, out) = subscribed_to_routes(&first);
    assert_eq!(only(out).2, ["r1", "r2"], "a first request gets everything");
    events.take();

    let out = stream.on_snapshot(&second, &mut events);
    let (v, nonce, names) = only(out);
    assert_eq!(names, ["r2"], "listeners unchanged, r1 unchanged: only r2");
    assert_eq!(v, version(&second, RDS));
    assert_eq!(events.take(), [sent(RDS, &v, &nonce, &["r1", "r2"])]);
}

#[test]
fn sotw_reconnect_after_partial_responses_gets_everything() {
    let (first, second) = (mesh(80), mesh(81));
    let (mut stream, mut events) = (sotw(), Recorder::default());
    stream.on_request(request(EDS, &["a", "b"], "", ""), Some(&first), &mut events);
    assert_eq!(only(stream.on_snapshot(&second, &mut events)).2, ["b"]);

    // A new stream from the same Envoy, which names the version it holds and no nonce.
    let (mut again, mut events) = (sotw(), Recorder::default());
    let req = request(EDS, &["a", "b"], &version(&second, EDS), "");
    let (v, _, names) = only(again.on_request(req, Some(&second), &mut events));
    assert_eq!((v, names), (version(&second, EDS), strings(&["a", "b"])));
}

#[test]
fn sotw_endpoints_gone_from_the_snapshot_while_subscribed_go_out_empty() {
    let first = mesh(80);
    let without_b = snapshot(
        vec![cluster("a", 1), cluster("b", 1)],
        vec![cla("a", 80)],
        vec![],
        vec![],
    );
    let (mut stream, mut events) = (sotw(), Recorder::default());
    stream.on_request(request(EDS, &["a", "b"], "", ""), Some(&first), &mut events);
    events.take();

    // Envoy would keep b's old endpoints if b were left out: an empty assignment clears them.
    let out = stream.on_snapshot(&without_b, &mut events);
    assert_eq!(out.len(), 1);
    let d = decoded(&out[0]);
    assert_eq!(names_in(&d, EDS), ["b"]);
    let cla = envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(
        d.resources[0].value.as_slice(),
    )
    .expect("decodes");
    assert!(cla.endpoints.is_empty(), "{cla:?}");
    assert!(matches!(
        events.take().as_slice(),
        [Event::Sent { holds, .. }] if holds == &strings(&["a", "b"])
    ));
}

#[test]
fn an_ack_naming_the_subscription_in_another_order_is_no_new_subscription() {
    let first = routes("x.example");
    let (mut stream, mut events, out) = subscribed_to_routes(&first);
    let (v, nonce, _) = only(out);
    events.take();
    // The same names reordered (and one repeated): an ACK, nothing to send.
    let out = stream.on_request(
        request(RDS, &["r2", "r1", "r2"], &v, &nonce),
        Some(&first),
        &mut events,
    );
    assert!(out.is_empty(), "{out:?}");
    assert!(
        !events
            .take()
            .iter()
            .any(|e| matches!(e, Event::Subscribed { .. })),
        "no new subscription"
    );
    // A name dropped after that is a new subscription again.
    let out = stream.on_request(request(RDS, &["r1"], &v, &nonce), Some(&first), &mut events);
    assert!(
        events
            .take()
            .iter()
            .any(|e| matches!(e, Event::Subscribed { .. })),
        "names changed: {out:?}"
    );
}

#[test]
fn a_subscription_emptied_by_envoy_is_an_unsubscribe_and_gets_no_response() {
    let (first, second) = (routes("x.example"), routes("y.example"));
    let (mut stream, mut events, out) = subscribed_to_routes(&first);
    let (v, nonce, _) = only(out);
    // Envoy removed its listeners: its next RDS request names nothing.
    let out = stream.on_request(request(RDS, &[], &v, &nonce), Some(&first), &mut events);
    assert!(out.is_empty(), "an unsubscribe is not answered: {out:?}");
    // Nor is a new snapshot pushed to it.
    let out = stream.on_snapshot(&second, &mut events);
    assert!(
        out.iter().all(|r| decoded(r).type_url != RDS.type_url()),
        "{out:?}"
    );
}
