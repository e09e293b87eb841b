//! The xDS protocol doc's rules (<https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol>)
//! checked on the state machines alone: no network, no runtime. Each test feeds requests and
//! snapshots to a stream's state, then checks the responses it returns and the protocol events
//! it reports.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;

use super::delta::{DeltaStream, DiffCache};
use super::events::{ProtocolEvent, ProtocolObserver};
use super::protocol::Protocol;
use super::sotw::SotwStream;
use super::sotw_request::SotwRequest;
use super::tests::{cla, cluster, names_in, snapshot};
use super::wire::{DeltaResponse, SotwResponse};
use meshpilot_snapshot::{Snapshot, XdsType};

const CDS: XdsType = XdsType::Cluster;
const EDS: XdsType = XdsType::Endpoint;

/// A protocol event with its borrowed parts copied, so a test can compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Event {
    Initial {
        t: XdsType,
        wildcard: bool,
    },
    Subscribed {
        t: XdsType,
        wildcard: bool,
        names: Vec<String>,
    },
    Stale {
        t: XdsType,
        nonce: String,
    },
    /// `holds`: the names the proxy holds of the type after the response.
    Sent {
        t: XdsType,
        version: String,
        nonce: String,
        holds: Vec<String>,
    },
    Acked {
        t: XdsType,
        version: String,
        nonce: String,
    },
    Nacked {
        t: XdsType,
        version: String,
        nonce: String,
        error_detail: String,
    },
}

/// Records every event in order.
#[derive(Default)]
pub(super) struct Recorder(Vec<Event>);

impl Recorder {
    pub(super) fn take(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.0)
    }
}

impl ProtocolObserver for Recorder {
    fn observe(&mut self, event: ProtocolEvent<'_>) {
        self.0.push(match event {
            ProtocolEvent::InitialRequest { t, wildcard } => Event::Initial { t, wildcard },
            ProtocolEvent::Subscribed { t, wildcard, names } => Event::Subscribed {
                t,
                wildcard,
                names: names.iter().map(str::to_string).collect(),
            },
            ProtocolEvent::StaleNonce { t, nonce } => Event::Stale {
                t,
                nonce: nonce.to_string(),
            },
            ProtocolEvent::Sent {
                t,
                version,
                nonce,
                holds,
                ..
            } => Event::Sent {
                t,
                version: version.to_string(),
                nonce: nonce.to_string(),
                holds: holds.items.keys().map(|k| k.to_string()).collect(),
            },
            ProtocolEvent::Acked {
                t, version, nonce, ..
            } => Event::Acked {
                t,
                version: version.to_string(),
                nonce: nonce.to_string(),
            },
            ProtocolEvent::Nacked {
                t,
                version,
                nonce,
                error_detail,
            } => Event::Nacked {
                t,
                version: version.to_string(),
                nonce: nonce.to_string(),
                error_detail: error_detail.to_string(),
            },
        });
    }
}

pub(super) fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

pub(super) fn sent(t: XdsType, version: &str, nonce: &str, holds: &[&str]) -> Event {
    Event::Sent {
        t,
        version: version.to_string(),
        nonce: nonce.to_string(),
        holds: strings(holds),
    }
}

/// Two clusters and their endpoints; `port` changes the endpoints of `b`.
pub(super) fn mesh(port: u32) -> Arc<Snapshot> {
    snapshot(
        vec![cluster("a", 1), cluster("b", 1)],
        vec![cla("a", 80), cla("b", port)],
        vec![],
        vec![],
    )
}

pub(super) fn version(snap: &Snapshot, t: XdsType) -> String {
    snap.set(t).version.clone()
}

// ---- State of the world ----

pub(super) fn sotw() -> SotwStream {
    SotwStream::new(SystemTime::now(), &Arc::new(DiffCache::default()))
}

pub(super) fn request(t: XdsType, names: &[&str], version: &str, nonce: &str) -> SotwRequest {
    SotwRequest::from(DiscoveryRequest {
        type_url: t.type_url().to_string(),
        resource_names: strings(names),
        version_info: version.to_string(),
        response_nonce: nonce.to_string(),
        ..Default::default()
    })
}

fn nack(t: XdsType, names: &[&str], accepted: &str, nonce: &str, msg: &str) -> SotwRequest {
    let mut req = request(t, names, accepted, nonce);
    req.error_detail = Some(RpcStatus {
        code: 3,
        message: msg.to_string(),
        ..Default::default()
    });
    req
}

pub(super) fn decoded(resp: &SotwResponse) -> DiscoveryResponse {
    DiscoveryResponse::decode(resp.encode_to_vec().as_slice()).expect("decodes")
}

/// The one response of a transition: its version, nonce and resource names.
pub(super) fn only(out: Vec<SotwResponse>) -> (String, String, Vec<String>) {
    assert_eq!(out.len(), 1, "one response: {out:?}");
    let d = decoded(&out[0]);
    let t = XdsType::from_type_url(&d.type_url).expect("known type");
    (d.version_info.clone(), d.nonce.clone(), names_in(&d, t))
}

#[test]
fn sotw_first_request_is_answered_with_the_whole_set() {
    let snap = mesh(80);
    let (mut stream, mut events) = (sotw(), Recorder::default());
    let out = stream.on_request(request(CDS, &[], "", ""), Some(&snap), &mut events);
    let v = version(&snap, CDS);
    assert_eq!(only(out), (v.clone(), "1".into(), strings(&["a", "b"])));
    assert_eq!(
        events.take(),
        [
            Event::Initial {
                t: CDS,
                wildcard: true
            },
            sent(CDS, &v, "1", &["a", "b"]),
        ]
    );
}

#[test]
fn sotw_ack_sends_nothing() {
    let snap = mesh(80);
    let (mut stream, mut events) = (sotw(), Recorder::default());
    stream.on_request(request(CDS, &[], "", ""), Some(&snap), &mut events);
    events.take();
    let v = version(&snap, CDS);
    let out = stream.on_request(request(CDS, &[], &v, "1"), Some(&snap), &mut events);
    assert!(out.is_empty());
    assert_eq!(
        events.take(),
        [Event::Acked {
            t: CDS,
            version: v,
            nonce: "1".into()
        }]
    );
}

#[test]
fn sotw_nack_is_reported_and_the_rejected_content_is_not_resent() {
    let (first, bad, fixed) = (mesh(80), mesh(81), mesh(82));
    let (mut stream, mut events) = (sotw(), Recorder::default());
    stream.on_request(request(EDS, &["a", "b"], "", ""), Some(&first), &mut events);
    let accepted = version(&first, EDS);
    stream.on_request(
        request(EDS, &["a", "b"], &accepted, "1"),
        Some(&first),
        &mut events,
    );
    let out = stream.on_snapshot(&bad, &mut events);
    assert_eq!(only(out).1, "2");
    events.take();

    // NACK: the newest nonce, error_detail set, version_info still the last accepted one.
    let req = nack(EDS, &["a", "b"], &accepted, "2", "bad endpoint b");
    let out = stream.on_request(req, Some(&bad), &mut events);
    assert!(out.is_empty(), "nothing resent after a NACK");
    assert_eq!(
        events.take(),
        [Event::Nacked {
            t: EDS,
            version: version(&bad, EDS),
            nonce: "2".into(),
            error_detail: "bad endpoint b".into(),
        }]
    );
    // The same content again (a recompute that changed nothing): still nothing.
    assert!(stream.on_snapshot(&bad, &mut events).is_empty());
    assert!(events.take().is_empty());
    // New content goes out: b's endpoints, the only ones that changed.
    let (v, nonce, names) = only(stream.on_snapshot(&fixed, &mut events));
    assert_eq!(
        (v, nonce, names),
        (version(&fixed, EDS), "3".into(), strings(&["b"]))
    );
}

#[test]
fn sotw_request_with_a_stale_nonce_is_ignored() {
    let (first, second) = (mesh(80), mesh(81));
    let (mut stream, mut events) = (sotw(), Recorder::default());
    stream.on_request(request(EDS, &["a", "b"], "", ""), Some(&first), &mut events);
    stream.on_snapshot(&second, &mut events);
    events.take();
    // An answer to response 1 arriving after response 2 went out, even with other names.
    let v1 = version(&first, EDS);
    let out = stream.on_request(request(EDS, &["a"], &v1, "1"), Some(&second), &mut events);
    assert!(out.is_empty());
    assert_eq!(
        events.take(),
        [Event::Stale {
            t: EDS,
            nonce: "1".into()
        }]
    );
}

#[test]
fn sotw_changed_names_with_the_current_nonce_are_a_new_subscription_answered_with_the_new_names() {
    let snap = mesh(80);
    let (mut stream, mut events) = (sotw(), Recorder::default());
    let out = stream.on_request(request(EDS, &["a"], "", ""), Some(&snap), &mut events);
    let (v_a, _, names) = only(out);
    assert_eq!(names, ["a"]);
    events.take();
    // Not an ACK only: the same nonce with another set of names.
    let out = stream.on_request(
        request(EDS, &["a", "b"], "ignored", "1"),
        Some(&snap),
        &mut events,
    );
    let (v, nonce, names) = only(out);
    assert_eq!(
        (nonce.as_str(), names),
        ("2", strings(&["b"])),
        "only the newly named resource: the proxy keeps a"
    );
    assert_eq!(
        v,
        version(&snap, EDS),
        "the version of the whole set held: the snapshot's own"
    );
    assert_eq!(
        events.take(),
        [
            Event::Acked {
                t: EDS,
                version: v_a,
                nonce: "1".into()
            },
            Event::Subscribed {
                t: EDS,
                wildcard: false,
                names: strings(&["a", "b"])
            },
            sent(EDS, &v, "2", &["a", "b"]),
        ]
    );
}

#[test]
fn sotw_reconnect_with_a_version_and_no_nonce_is_answered() {
    let snap = mesh(80);
    let (mut stream, mut events) = (sotw(), Recorder::default());
    // Envoy after a server restart: it already holds this very version, and sends no nonce.
    let v = version(&snap, CDS);
    let out = stream.on_request(request(CDS, &[], &v, ""), Some(&snap), &mut events);
    assert_eq!(only(out), (v.clone(), "1".into(), strings(&["a", "b"])));
    assert!(matches!(
        events.take().as_slice(),
        [Event::Initial { .. }, Event::Sent { .. }]
    ));
}

#[test]
fn sotw_new_snapshot_answers_only_the_types_whose_content_changed() {
    let (first, second) = (mesh(80), mesh(81));
    let (mut stream, mut events) = (sotw(), Recorder::default());
    stream.on_request(request(CDS, &[], "", ""), Some(&first), &mut events);
    stream.on_request(request(EDS, &["a", "b"], "", ""), Some(&first), &mut events);
    events.take();
    // Only b's endpoints changed: clusters are not sent again.
    let out = stream.on_snapshot(&second, &mut events);
    let (v, nonce, names) = only(out);
    assert_eq!(
        (v.as_str(), nonce.as_str()),
        (version(&second, EDS).as_str(), "3")
    );
    assert_eq!(
        names,
        ["b"],
        "SotW EDS: only the assignment that changed; the proxy keeps a's"
    );
    // What the proxy holds after it is still every subscribed assignment.
    assert_eq!(events.take(), [sent(EDS, &v, "3", &["a", "b"])]);
    // Nothing changed at all: nothing sent.
    assert!(stream.on_snapshot(&second, &mut events).is_empty());
    assert!(events.take().is_empty());
}

#[test]
fn sotw_request_before_the_first_snapshot_is_answered_when_it_arrives() {
    let snap = mesh(80);
    let (mut stream, mut events) = (sotw(), Recorder::default());
    assert!(
        stream
            .on_request(request(CDS, &[], "", ""), None, &mut events)
            .is_empty()
    );
    assert_eq!(
        events.take(),
        [Event::Initial {
            t: CDS,
            wildcard: true
        }]
    );
    let out = stream.on_snapshot(&snap, &mut events);
    assert_eq!(only(out).2, ["a", "b"]);
}

// ---- Delta ----

fn delta() -> DeltaStream {
    DeltaStream::new(SystemTime::now(), &Arc::new(DiffCache::default()))
}

fn delta_request(t: XdsType, subscribe: &[&str], unsubscribe: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: t.type_url().to_string(),
        resource_names_subscribe: strings(subscribe),
        resource_names_unsubscribe: strings(unsubscribe),
        ..Default::default()
    }
}

fn delta_answer(t: XdsType, nonce: &str, error: Option<&str>) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        response_nonce: nonce.to_string(),
        error_detail: error.map(|m| RpcStatus {
            code: 3,
            message: m.to_string(),
            ..Default::default()
        }),
        ..delta_request(t, &[], &[])
    }
}

/// The one response of a transition: its nonce, the names it carries, the names it removes.
fn only_delta(out: Vec<DeltaResponse>) -> (String, Vec<String>, Vec<String>) {
    assert_eq!(out.len(), 1, "one response: {out:?}");
    let d = DeltaDiscoveryResponse::decode(out[0].encode_to_vec().as_slice()).expect("decodes");
    let names = d.resources.iter().map(|r| r.name.clone()).collect();
    (d.nonce, names, d.removed_resources)
}

#[test]
fn delta_wildcard_first_request_gets_every_resource() {
    let snap = mesh(80);
    let (mut stream, mut events) = (delta(), Recorder::default());
    let out = stream.on_request(delta_request(CDS, &[], &[]), Some(&snap), &mut events);
    assert_eq!(out[0].system_version_info, snap.version);
    assert_eq!(only_delta(out), ("1".into(), strings(&["a", "b"]), vec![]));
    assert_eq!(
        events.take(),
        [
            Event::Initial {
                t: CDS,
                wildcard: true
            },
            sent(CDS, &snap.version, "1", &["a", "b"]),
        ]
    );
}

#[test]
fn delta_subscribe_sends_only_new_names_and_unsubscribe_removes() {
    let snap = mesh(80);
    let (mut stream, mut events) = (delta(), Recorder::default());
    let out = stream.on_request(delta_request(EDS, &["a"], &[]), Some(&snap), &mut events);
    assert_eq!(only_delta(out), ("1".into(), strings(&["a"]), vec![]));
    assert_eq!(
        events.take(),
        [
            Event::Initial {
                t: EDS,
                wildcard: false
            },
            Event::Subscribed {
                t: EDS,
                wildcard: false,
                names: strings(&["a"])
            },
            sent(EDS, &snap.version, "1", &["a"]),
        ]
    );
    stream.on_request(delta_answer(EDS, "1", None), Some(&snap), &mut events);
    events.take();

    let out = stream.on_request(delta_request(EDS, &["b"], &[]), Some(&snap), &mut events);
    assert_eq!(
        only_delta(out),
        ("2".into(), strings(&["b"]), vec![]),
        "a is not resent"
    );
    assert_eq!(
        events.take(),
        [
            Event::Subscribed {
                t: EDS,
                wildcard: false,
                names: strings(&["a", "b"])
            },
            sent(EDS, &snap.version, "2", &["a", "b"]),
        ]
    );

    let out = stream.on_request(delta_request(EDS, &[], &["a"]), Some(&snap), &mut events);
    assert_eq!(only_delta(out), ("3".into(), vec![], strings(&["a"])));
    assert_eq!(
        events.take(),
        [
            Event::Subscribed {
                t: EDS,
                wildcard: false,
                names: strings(&["b"])
            },
            sent(EDS, &snap.version, "3", &["b"]),
        ]
    );
}

#[test]
fn delta_subscribing_to_a_missing_cluster_answers_that_it_does_not_exist() {
    let snap = mesh(80);
    let (mut stream, mut events) = (delta(), Recorder::default());
    // CDS by name (not the wildcard): a missing cluster has no stand-in, so it is removed.
    let out = stream.on_request(
        delta_request(CDS, &["a", "nope"], &[]),
        Some(&snap),
        &mut events,
    );
    assert_eq!(
        only_delta(out),
        ("1".into(), strings(&["a"]), strings(&["nope"]))
    );
}

#[test]
fn delta_reconnect_with_initial_versions_resends_nothing_the_client_has() {
    let snap = mesh(80);
    let a = snap.set(CDS).items["a"].version.to_string();
    let (mut stream, mut events) = (delta(), Recorder::default());
    let req = DeltaDiscoveryRequest {
        initial_resource_versions: HashMap::from([
            ("a".to_string(), a),
            ("b".to_string(), "an older version".to_string()),
            ("gone".to_string(), "v".to_string()),
        ]),
        ..delta_request(CDS, &[], &[])
    };
    let out = stream.on_request(req, Some(&snap), &mut events);
    assert_eq!(
        only_delta(out),
        ("1".into(), strings(&["b"]), strings(&["gone"])),
        "a is current; b changed; gone no longer exists"
    );
    assert_eq!(events.take()[1], sent(CDS, &snap.version, "1", &["a", "b"]));
}

#[test]
fn delta_new_snapshot_sends_changes_and_removals_only() {
    let first = mesh(80);
    let fewer = snapshot(vec![cluster("a", 1)], vec![cla("a", 80)], vec![], vec![]);
    let (mut stream, mut events) = (delta(), Recorder::default());
    stream.on_request(delta_request(CDS, &[], &[]), Some(&first), &mut events);
    stream.on_request(delta_answer(CDS, "1", None), Some(&first), &mut events);
    events.take();
    let out = stream.on_snapshot(&fewer, &mut events);
    assert_eq!(only_delta(out), ("2".into(), vec![], strings(&["b"])));
    assert_eq!(events.take(), [sent(CDS, &fewer.version, "2", &["a"])]);
    assert!(stream.on_snapshot(&fewer, &mut events).is_empty());
}

#[test]
fn delta_ack_and_nack_by_nonce() {
    let (first, second, third) = (mesh(80), mesh(81), mesh(82));
    let (mut stream, mut events) = (delta(), Recorder::default());
    stream.on_request(
        delta_request(EDS, &["a", "b"], &[]),
        Some(&first),
        &mut events,
    );
    events.take();
    let out = stream.on_request(delta_answer(EDS, "1", None), Some(&first), &mut events);
    assert!(out.is_empty(), "an ACK sends nothing");
    assert_eq!(
        events.take(),
        [Event::Acked {
            t: EDS,
            version: first.version.clone(),
            nonce: "1".into()
        }]
    );

    assert_eq!(
        only_delta(stream.on_snapshot(&second, &mut events)).1,
        ["b"]
    );
    events.take();
    // An answer to an older nonce is stale: no ACK recorded.
    assert!(
        stream
            .on_request(delta_answer(EDS, "1", None), Some(&second), &mut events)
            .is_empty()
    );
    assert_eq!(
        events.take(),
        [Event::Stale {
            t: EDS,
            nonce: "1".into()
        }]
    );
    let out = stream.on_request(
        delta_answer(EDS, "2", Some("bad b")),
        Some(&second),
        &mut events,
    );
    assert!(out.is_empty(), "nothing resent after a NACK");
    assert_eq!(
        events.take(),
        [Event::Nacked {
            t: EDS,
            version: second.version.clone(),
            nonce: "2".into(),
            error_detail: "bad b".into()
        }]
    );
    assert!(stream.on_snapshot(&second, &mut events).is_empty());
    assert_eq!(only_delta(stream.on_snapshot(&third, &mut events)).1, ["b"]);
}

#[test]
fn delta_subscription_changes_apply_even_with_a_stale_nonce() {
    let (first, second) = (mesh(80), mesh(81));
    let (mut stream, mut events) = (delta(), Recorder::default());
    stream.on_request(delta_request(EDS, &["a"], &[]), Some(&first), &mut events);
    stream.on_request(delta_request(EDS, &["b"], &[]), Some(&first), &mut events);
    stream.on_request(delta_answer(EDS, "2", None), Some(&first), &mut events);
    events.take();
    let req = DeltaDiscoveryRequest {
        response_nonce: "1".into(),
        ..delta_request(EDS, &[], &["a"])
    };
    let out = stream.on_request(req, Some(&second), &mut events);
    // a is removed; b changed in the new snapshot and goes out with it.
    assert_eq!(
        only_delta(out),
        ("3".into(), strings(&["b"]), strings(&["a"]))
    );
    let got = events.take();
    assert_eq!(
        got[0],
        Event::Stale {
            t: EDS,
            nonce: "1".into()
        }
    );
    assert!(matches!(&got[1], Event::Subscribed { names, .. } if *names == ["b"]));
}

// ---- A changed cluster brings its endpoints ----

/// `mesh(80)` with cluster `b` redefined (a new connect timeout), its endpoints unchanged.
fn b_redefined() -> Arc<Snapshot> {
    snapshot(
        vec![cluster("a", 1), cluster("b", 2)],
        vec![cla("a", 80), cla("b", 80)],
        vec![],
        vec![],
    )
}

#[test]
fn sotw_changed_clusters_bring_their_endpoints_even_when_unchanged() {
    let (first, changed) = (mesh(80), b_redefined());
    assert_eq!(version(&first, EDS), version(&changed, EDS));
    let (mut stream, mut events) = (sotw(), Recorder::default());
    stream.on_request(request(CDS, &[], "", ""), Some(&first), &mut events);
    stream.on_request(
        request(CDS, &[], &version(&first, CDS), "1"),
        Some(&first),
        &mut events,
    );
    stream.on_request(request(EDS, &["a", "b"], "", ""), Some(&first), &mut events);
    stream.on_request(
        request(EDS, &["a", "b"], &version(&first, EDS), "2"),
        Some(&first),
        &mut events,
    );
    events.take();

    // Envoy re-creates `b` and keeps it warming until it has b's endpoints: they follow.
    let out = stream.on_snapshot(&changed, &mut events);
    let got: Vec<_> = out.iter().map(decoded).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].type_url, CDS.type_url());
    assert_eq!(got[1].type_url, EDS.type_url());
    assert_eq!(got[1].version_info, version(&first, EDS));
    assert_eq!(
        names_in(&got[1], EDS),
        strings(&["b"]),
        "only the endpoints of the cluster that changed"
    );
    assert_eq!(
        events.take(),
        [
            sent(CDS, &version(&changed, CDS), "3", &["a", "b"]),
            sent(EDS, &version(&changed, EDS), "4", &["a", "b"]),
        ]
    );
    // Envoy's request for the re-created cluster's endpoints carries the newest nonce and the
    // same names: an ACK, answered with nothing more.
    let out = stream.on_request(
        request(EDS, &["a", "b"], &version(&changed, EDS), "4"),
        Some(&changed),
        &mut events,
    );
    assert!(out.is_empty());
    // A snapshot that changes no cluster sends no endpoints again.
    assert!(stream.on_snapshot(&changed, &mut events).is_empty());
}

#[test]
fn sotw_cluster_answer_after_a_reconnect_brings_the_endpoints_again() {
    // Reconnected, Envoy asks for endpoints before clusters; the clusters it then re-creates
    // wait for endpoints it will only ask for under the nonce it already answered.
    let snap = mesh(80);
    let (mut stream, mut events) = (sotw(), Recorder::default());
    stream.on_request(request(EDS, &["a", "b"], "", ""), Some(&snap), &mut events);
    stream.on_request(
        request(EDS, &["a", "b"], &version(&snap, EDS), "1"),
        Some(&snap),
        &mut events,
    );
    let out = stream.on_request(request(CDS, &[], "", ""), Some(&snap), &mut events);
    let types: Vec<_> = out.iter().map(|r| decoded(r).type_url).collect();
    assert_eq!(types, [CDS.type_url(), EDS.type_url()]);
}

#[test]
fn delta_changed_clusters_bring_their_endpoints_even_when_unchanged() {
    let (first, changed) = (mesh(80), b_redefined());
    let (mut stream, mut events) = (delta(), Recorder::default());
    stream.on_request(delta_request(CDS, &[], &[]), Some(&first), &mut events);
    stream.on_request(delta_answer(CDS, "1", None), Some(&first), &mut events);
    stream.on_request(
        delta_request(EDS, &["a", "b"], &[]),
        Some(&first),
        &mut events,
    );
    stream.on_request(delta_answer(EDS, "2", None), Some(&first), &mut events);
    events.take();

    // Only `b` changed: the cluster response carries `b`, the endpoint response b's endpoints
    // (same version as the client holds), nothing of `a`.
    let out = stream.on_snapshot(&changed, &mut events);
    assert_eq!(out.len(), 2, "{out:?}");
    let decode = |r: &DeltaResponse| {
        DeltaDiscoveryResponse::decode(r.encode_to_vec().as_slice()).expect("decodes")
    };
    let (c, e) = (decode(&out[0]), decode(&out[1]));
    assert_eq!(c.type_url, CDS.type_url());
    assert_eq!(
        c.resources
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["b"]
    );
    assert_eq!(e.type_url, EDS.type_url());
    assert_eq!(
        e.resources
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["b"]
    );
    assert!(e.removed_resources.is_empty());
    // Answered, and with nothing changed since, nothing more goes out.
    stream.on_request(
        delta_answer(CDS, &c.nonce, None),
        Some(&changed),
        &mut events,
    );
    stream.on_request(
        delta_answer(EDS, &e.nonce, None),
        Some(&changed),
        &mut events,
    );
    assert!(stream.on_snapshot(&changed, &mut events).is_empty());
}
