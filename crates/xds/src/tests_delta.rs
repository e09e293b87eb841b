//! End-to-end tests of the Delta stream, on the harness of [`super::tests`].

use std::collections::HashMap;

use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::Variant;
use super::tests::{Harness, NODE, QUIET, WAIT, cla, cluster, node, snapshot};
use meshpilot_snapshot::XdsType;

struct DeltaClient {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    stream: Streaming<DeltaDiscoveryResponse>,
}

impl DeltaClient {
    async fn open(h: &Harness) -> DeltaClient {
        let (tx, rx) = mpsc::channel(16);
        let stream = timeout(
            WAIT,
            h.client()
                .await
                .delta_aggregated_resources(ReceiverStream::new(rx)),
        )
        .await
        .expect("stream in time")
        .expect("stream")
        .into_inner();
        DeltaClient { tx, stream }
    }

    async fn send(&self, req: DeltaDiscoveryRequest) {
        self.tx.send(req).await.expect("request stream open");
    }

    async fn recv(&mut self) -> DeltaDiscoveryResponse {
        timeout(WAIT, self.stream.message())
            .await
            .expect("a response in time")
            .expect("stream ok")
            .expect("stream open")
    }

    async fn expect_silence(&mut self) {
        if let Ok(msg) = timeout(QUIET, self.stream.message()).await {
            panic!("expected no message, got {msg:?}");
        }
    }

    async fn nack(&self, resp: &DeltaDiscoveryResponse, message: &str) {
        self.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: message.to_string(),
                details: vec![],
            }),
            ..Default::default()
        })
        .await;
    }

    async fn ack(&self, resp: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        })
        .await;
    }
}

fn subscribe(t: XdsType, names: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: t.type_url().to_string(),
        resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
}

fn first(t: XdsType, names: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(node(NODE)),
        ..subscribe(t, names)
    }
}

fn names(resp: &DeltaDiscoveryResponse) -> Vec<&str> {
    resp.resources.iter().map(|r| r.name.as_str()).collect()
}

#[tokio::test]
async fn wildcard_cds_then_only_changes_and_removals() {
    let h = Harness::start().await;
    let snap = snapshot(
        vec![cluster("a", 1), cluster("b", 1)],
        vec![],
        vec![],
        vec![],
    );
    h.cache.publish(snap.clone());
    let mut c = DeltaClient::open(&h).await;
    c.send(first(XdsType::Cluster, &[])).await;
    let resp = c.recv().await;
    assert_eq!(names(&resp), ["a", "b"]);
    assert_eq!(resp.system_version_info, snap.version);
    for r in &resp.resources {
        let any = r.resource.as_ref().expect("resource body");
        assert_eq!(any.type_url, XdsType::Cluster.type_url());
        assert_eq!(
            r.version,
            snap.get(XdsType::Cluster).items[r.name.as_str()].version
        );
    }
    assert!(resp.removed_resources.is_empty());
    c.ack(&resp).await;
    c.expect_silence().await;
    let conn = h.connection(NODE).await;
    assert_eq!(conn.variant, Variant::Delta);
    assert!(conn.types[XdsType::Cluster].wildcard);
    assert_eq!(
        conn.types[XdsType::Cluster].version_acked.as_deref(),
        Some(snap.version.as_str())
    );

    // a changes, b stays, c is new: only a and c are sent.
    h.cache.publish(snapshot(
        vec![cluster("a", 2), cluster("b", 1), cluster("c", 1)],
        vec![],
        vec![],
        vec![],
    ));
    let resp = c.recv().await;
    assert_eq!(names(&resp), ["a", "c"]);
    assert!(resp.removed_resources.is_empty());
    c.ack(&resp).await;

    // b is deleted: only its removal is sent.
    h.cache.publish(snapshot(
        vec![cluster("a", 2), cluster("c", 1)],
        vec![],
        vec![],
        vec![],
    ));
    let resp = c.recv().await;
    assert!(resp.resources.is_empty());
    assert_eq!(resp.removed_resources, ["b"]);
    c.ack(&resp).await;

    // An endpoint-only change sends nothing on this CDS-only stream.
    h.cache.publish(snapshot(
        vec![cluster("a", 2), cluster("c", 1)],
        vec![cla("a", 80)],
        vec![],
        vec![],
    ));
    c.expect_silence().await;
    h.stop().await;
}

#[tokio::test]
async fn eds_names_missing_names_and_unsubscribe() {
    let h = Harness::start().await;
    h.cache.publish(snapshot(
        vec![cluster("a", 1), cluster("b", 1)],
        vec![cla("a", 80), cla("b", 80)],
        vec![],
        vec![],
    ));
    let mut c = DeltaClient::open(&h).await;
    c.send(first(XdsType::Endpoint, &["a", "missing"])).await;
    let resp = c.recv().await;
    assert_eq!(names(&resp), ["a", "missing"]);
    let empty = ClusterLoadAssignment::decode(
        resp.resources[1]
            .resource
            .as_ref()
            .expect("body")
            .value
            .as_slice(),
    )
    .expect("CLA");
    assert_eq!(empty.cluster_name, "missing");
    assert!(empty.endpoints.is_empty());
    c.ack(&resp).await;
    c.expect_silence().await;

    // Subscribing to b sends only b.
    c.send(subscribe(XdsType::Endpoint, &["b"])).await;
    let resp = c.recv().await;
    assert_eq!(names(&resp), ["b"]);
    c.ack(&resp).await;

    // Unsubscribing from b removes it; later changes to b are not sent.
    c.send(DeltaDiscoveryRequest {
        type_url: XdsType::Endpoint.type_url().to_string(),
        resource_names_unsubscribe: vec!["b".to_string()],
        ..Default::default()
    })
    .await;
    let resp = c.recv().await;
    assert!(resp.resources.is_empty());
    assert_eq!(resp.removed_resources, ["b"]);
    c.ack(&resp).await;
    h.cache.publish(snapshot(
        vec![cluster("a", 1), cluster("b", 1)],
        vec![cla("a", 80), cla("b", 81)],
        vec![],
        vec![],
    ));
    c.expect_silence().await;
    let conn = h.connection(NODE).await;
    let eds = &conn.types[XdsType::Endpoint];
    assert!(!eds.wildcard);
    assert_eq!(eds.subscribed.iter().collect::<Vec<_>>(), ["a", "missing"]);
    h.stop().await;
}

#[tokio::test]
async fn initial_resource_versions_are_not_resent() {
    let h = Harness::start().await;
    let snap = snapshot(
        vec![cluster("a", 1), cluster("b", 2)],
        vec![],
        vec![],
        vec![],
    );
    h.cache.publish(snap.clone());
    let held = |name: &str| snap.get(XdsType::Cluster).items[name].version.to_string();

    // Reconnect holding a (current), b (old) and gone (deleted meanwhile).
    let mut c = DeltaClient::open(&h).await;
    let mut req = first(XdsType::Cluster, &[]);
    req.initial_resource_versions = HashMap::from([
        ("a".to_string(), held("a")),
        ("b".to_string(), "0000000000000000".to_string()),
        ("gone".to_string(), "0000000000000001".to_string()),
    ]);
    c.send(req).await;
    let resp = c.recv().await;
    assert_eq!(names(&resp), ["b"]);
    assert_eq!(resp.removed_resources, ["gone"]);

    // Holding everything current: the first request is still answered, with nothing in it.
    let mut c2 = DeltaClient::open(&h).await;
    let mut req = first(XdsType::Cluster, &[]);
    req.initial_resource_versions =
        HashMap::from([("a".to_string(), held("a")), ("b".to_string(), held("b"))]);
    c2.send(req).await;
    let resp = c2.recv().await;
    assert!(resp.resources.is_empty(), "{resp:?}");
    assert!(resp.removed_resources.is_empty());
    c2.ack(&resp).await;
    c2.expect_silence().await;
    h.stop().await;
}

#[tokio::test]
async fn delta_nack_is_recorded_and_not_resent() {
    let h = Harness::start().await;
    h.cache
        .publish(snapshot(vec![cluster("a", 1)], vec![], vec![], vec![]));
    let mut c = DeltaClient::open(&h).await;
    c.send(first(XdsType::Cluster, &[])).await;
    let resp = c.recv().await;
    c.nack(&resp, "cluster a rejected").await;
    c.expect_silence().await;
    let conn = h.connection(NODE).await;
    let nack = conn.types[XdsType::Cluster]
        .last_nack
        .clone()
        .expect("NACK recorded");
    assert_eq!(nack.message, "cluster a rejected");
    assert_eq!(nack.version, resp.system_version_info);

    // A snapshot with a new cluster sends just that one, not the rejected one again.
    h.cache.publish(snapshot(
        vec![cluster("a", 1), cluster("z", 1)],
        vec![],
        vec![],
        vec![],
    ));
    let resp = c.recv().await;
    assert_eq!(names(&resp), ["z"]);
    h.stop().await;
}

/// A cluster whose encoding is about `kib` KiB (a long alt_stat_name pads it).
fn big_cluster(name: &str, kib: usize) -> meshpilot_snapshot::Resource {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    let c = Cluster {
        name: name.to_string(),
        alt_stat_name: "x".repeat(kib * 1024),
        ..Default::default()
    };
    meshpilot_snapshot::Resource::new(name, bytes::Bytes::from(c.encode_to_vec()), vec![])
}

#[tokio::test]
async fn large_differences_are_split_below_four_mib_and_acked_by_the_last_nonce() {
    let h = Harness::start().await;
    // Six clusters of 1 MiB each: 6 MiB in all, more than one 4 MiB message.
    let clusters: Vec<_> = (0..6)
        .map(|i| big_cluster(&format!("c{i}"), 1024))
        .collect();
    h.cache.publish(snapshot(clusters, vec![], vec![], vec![]));
    let mut c = DeltaClient::open(&h).await;
    c.send(first(XdsType::Cluster, &[])).await;
    let mut got: Vec<String> = Vec::new();
    let mut responses = Vec::new();
    while got.len() < 6 {
        let resp = c.recv().await;
        assert!(
            resp.encoded_len() <= 4 * 1024 * 1024,
            "a response of {} bytes",
            resp.encoded_len()
        );
        got.extend(resp.resources.iter().map(|r| r.name.clone()));
        responses.push(resp);
    }
    assert!(
        responses.len() >= 2,
        "split into {} responses",
        responses.len()
    );
    got.sort();
    assert_eq!(got, ["c0", "c1", "c2", "c3", "c4", "c5"]);
    // ACKing the earlier nonces is stale; the last one syncs the type.
    for r in &responses {
        c.ack(r).await;
    }
    c.expect_silence().await;
    let conn = h.connection(NODE).await;
    assert_eq!(
        conn.types[XdsType::Cluster].status,
        super::SyncStatus::Synced
    );
    h.stop().await;
}

/// A new proxy naming exactly the snapshot's EDS names (in its own order, one twice) gets them
/// all, is shown subscribed to them, then gets only what changes, and can still unsubscribe one.
#[tokio::test]
async fn subscribing_to_every_name_of_the_snapshot_then_changes_and_unsubscribe() {
    let h = Harness::start().await;
    h.cache.publish(snapshot(
        vec![cluster("a", 1), cluster("b", 1), cluster("c", 1)],
        vec![cla("a", 80), cla("b", 80), cla("c", 80)],
        vec![],
        vec![],
    ));
    let mut c = DeltaClient::open(&h).await;
    c.send(first(XdsType::Endpoint, &["c", "a", "b", "a"]))
        .await;
    let resp = c.recv().await;
    let mut got = names(&resp);
    got.sort_unstable();
    assert_eq!(got, ["a", "b", "c"]);
    c.ack(&resp).await;
    let conn = h.connection(NODE).await;
    let eds = &conn.types[XdsType::Endpoint];
    assert_eq!(eds.subscribed.iter().collect::<Vec<_>>(), ["a", "b", "c"]);

    h.cache.publish(snapshot(
        vec![cluster("a", 1), cluster("b", 1), cluster("c", 1)],
        vec![cla("a", 80), cla("b", 81), cla("c", 80)],
        vec![],
        vec![],
    ));
    let resp = c.recv().await;
    assert_eq!(names(&resp), ["b"]);
    c.ack(&resp).await;

    c.send(DeltaDiscoveryRequest {
        type_url: XdsType::Endpoint.type_url().to_string(),
        resource_names_unsubscribe: vec!["a".to_string()],
        ..Default::default()
    })
    .await;
    let resp = c.recv().await;
    assert_eq!(resp.removed_resources, ["a"]);
    c.ack(&resp).await;
    let conn = h.connection(NODE).await;
    let eds = &conn.types[XdsType::Endpoint];
    assert_eq!(eds.subscribed.iter().collect::<Vec<_>>(), ["b", "c"]);
    h.stop().await;
}

/// While Envoy has not answered a response, later changes of its type wait; the answer brings
/// one response with everything that changed meanwhile, in the newest version.
#[tokio::test]
async fn changes_wait_for_the_answer_and_then_go_out_together() {
    let h = Harness::start().await;
    h.cache.publish(snapshot(
        vec![cluster("a", 1), cluster("b", 1)],
        vec![],
        vec![],
        vec![],
    ));
    let mut c = DeltaClient::open(&h).await;
    c.send(first(XdsType::Cluster, &[])).await;
    let resp = c.recv().await;
    assert_eq!(names(&resp), ["a", "b"]);

    // Not answered yet: two changes, nothing sent.
    h.cache.publish(snapshot(
        vec![cluster("a", 2), cluster("b", 1)],
        vec![],
        vec![],
        vec![],
    ));
    let newest = snapshot(
        vec![cluster("a", 2), cluster("b", 2), cluster("c", 1)],
        vec![],
        vec![],
        vec![],
    );
    h.cache.publish(newest.clone());
    c.expect_silence().await;

    c.ack(&resp).await;
    let resp = c.recv().await;
    assert_eq!(names(&resp), ["a", "b", "c"]);
    assert_eq!(resp.system_version_info, newest.version);
    c.ack(&resp).await;
    c.expect_silence().await;
    let conn = h.connection(NODE).await;
    assert_eq!(
        conn.types[XdsType::Cluster].version_acked.as_deref(),
        Some(newest.version.as_str())
    );
    h.stop().await;
}

/// A NACK is an answer too: what changed since goes out after it.
#[tokio::test]
async fn a_nack_releases_the_waiting_change() {
    let h = Harness::start().await;
    h.cache
        .publish(snapshot(vec![cluster("a", 1)], vec![], vec![], vec![]));
    let mut c = DeltaClient::open(&h).await;
    c.send(first(XdsType::Cluster, &[])).await;
    let resp = c.recv().await;
    h.cache.publish(snapshot(
        vec![cluster("a", 1), cluster("z", 1)],
        vec![],
        vec![],
        vec![],
    ));
    c.expect_silence().await;
    c.nack(&resp, "cluster a rejected").await;
    let resp = c.recv().await;
    assert_eq!(names(&resp), ["z"]);
    h.stop().await;
}

/// Types after a waiting one wait with it, so that Envoy never gets endpoints (or routes) ahead
/// of the clusters (or listeners) of the same change; a type with nothing waiting before it does
/// not wait.
#[tokio::test]
async fn later_types_wait_behind_an_unanswered_cluster_response() {
    let h = Harness::start().await;
    h.cache.publish(snapshot(
        vec![cluster("a", 1)],
        vec![cla("a", 80)],
        vec![],
        vec![],
    ));
    let mut c = DeltaClient::open(&h).await;
    c.send(first(XdsType::Cluster, &[])).await;
    let cds = c.recv().await;
    c.ack(&cds).await;
    c.send(subscribe(XdsType::Endpoint, &["a"])).await;
    let eds = c.recv().await;
    assert_eq!(names(&eds), ["a"]);
    c.ack(&eds).await;
    c.expect_silence().await;

    // Endpoints alone change: sent at once (their last response is answered).
    h.cache.publish(snapshot(
        vec![cluster("a", 1)],
        vec![cla("a", 81)],
        vec![],
        vec![],
    ));
    let eds = c.recv().await;
    assert_eq!(eds.type_url, XdsType::Endpoint.type_url());
    c.ack(&eds).await;

    // A new cluster b: CDS is sent and left unanswered.
    h.cache.publish(snapshot(
        vec![cluster("a", 1), cluster("b", 1)],
        vec![cla("a", 81)],
        vec![],
        vec![],
    ));
    let cds = c.recv().await;
    assert_eq!(names(&cds), ["b"]);
    // Then cluster c and new endpoints of a: neither goes out before the CDS answer.
    h.cache.publish(snapshot(
        vec![cluster("a", 1), cluster("b", 1), cluster("c", 1)],
        vec![cla("a", 82)],
        vec![],
        vec![],
    ));
    c.expect_silence().await;
    c.ack(&cds).await;
    let first_out = c.recv().await;
    assert_eq!(first_out.type_url, XdsType::Cluster.type_url());
    assert_eq!(names(&first_out), ["c"]);
    let second_out = c.recv().await;
    assert_eq!(second_out.type_url, XdsType::Endpoint.type_url());
    assert_eq!(names(&second_out), ["a"]);
    h.stop().await;
}
