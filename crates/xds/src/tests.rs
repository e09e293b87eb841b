//! End-to-end tests of the SotW stream (and the shared harness): the real server on
//! `127.0.0.1:0`, the generated ADS client, hand-made snapshots published through the cache.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    Address, Node, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret as TlsSecret;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

use super::{ConnectionStatus, Connections, Variant, XdsError, XdsMetrics, serve};
use meshpilot_model::{ClassKey, Proxy};
use meshpilot_snapshot::{Resource, Snapshot, SnapshotCache, XdsType};
use tokio_util::sync::CancellationToken as Shutdown;

/// Upper bound of every wait for something that should happen.
pub(super) const WAIT: Duration = Duration::from_secs(5);
/// How long to listen for a message that should not come.
pub(super) const QUIET: Duration = Duration::from_millis(300);

pub(super) const NODE: &str = "sidecar~10.0.0.1~app-1.default~default.svc.cluster.local";

pub(super) struct Harness {
    pub addr: SocketAddr,
    pub cache: Arc<SnapshotCache>,
    pub conns: Arc<Connections>,
    pub shutdown: Shutdown,
    pub builds: mpsc::UnboundedReceiver<Proxy>,
    server: JoinHandle<Result<(), XdsError>>,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(super::ServeLimits::default()).await
    }

    /// A server with `limits` instead of the defaults.
    pub async fn start_with(limits: super::ServeLimits) -> Harness {
        Harness::start_serving(limits, false).await
    }

    /// A server with `limits`, sending TLS secrets to plaintext streams when `plaintext_secrets`.
    pub async fn start_serving(limits: super::ServeLimits, plaintext_secrets: bool) -> Harness {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (cache, builds) = SnapshotCache::new();
        let conns = Arc::new(Connections::new());
        let shutdown = Shutdown::new();
        let metrics = Arc::new(XdsMetrics::new(meshpilot_telemetry::metrics()));
        let server = tokio::spawn(serve(
            listener,
            super::PortSettings {
                secure: None,
                limits,
                plaintext_secrets,
            },
            cache.clone(),
            conns.clone(),
            metrics,
            tonic::service::Routes::default(),
            shutdown.clone(),
        ));
        Harness {
            addr,
            cache,
            conns,
            shutdown,
            builds,
            server,
        }
    }

    pub async fn client(&self) -> AggregatedDiscoveryServiceClient<Channel> {
        timeout(
            WAIT,
            AggregatedDiscoveryServiceClient::connect(format!("http://{}", self.addr)),
        )
        .await
        .expect("connect in time")
        .expect("connect")
    }

    pub async fn sotw(&self) -> SotwClient {
        let (tx, rx) = mpsc::channel(16);
        let stream = timeout(
            WAIT,
            self.client()
                .await
                .stream_aggregated_resources(ReceiverStream::new(rx)),
        )
        .await
        .expect("stream in time")
        .expect("stream")
        .into_inner();
        SotwClient { tx, stream }
    }

    /// Waits until the proxy's connection is listed and returns it.
    pub async fn connection(&self, node_id: &str) -> ConnectionStatus {
        timeout(WAIT, async {
            loop {
                if let Some(c) = self.conns.by_node(node_id) {
                    return c;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("connection listed")
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let res = timeout(WAIT, self.server)
            .await
            .expect("server stops in time")
            .expect("server task");
        res.expect("server ends cleanly");
    }
}

pub(super) fn node(id: &str) -> Node {
    Node {
        id: id.to_string(),
        ..Default::default()
    }
}

pub(super) fn class() -> ClassKey {
    Proxy::parse(NODE, &BTreeMap::new())
        .expect("test node id is valid")
        .class_key()
}

pub(super) fn cluster(name: &str, timeout_s: i64) -> Resource {
    let c = Cluster {
        name: name.to_string(),
        connect_timeout: Some(PbDuration {
            seconds: timeout_s,
            nanos: 0,
        }),
        ..Default::default()
    };
    Resource::new(name, Bytes::from(c.encode_to_vec()), vec![])
}

pub(super) fn cla(name: &str, port: u32) -> Resource {
    let endpoint = LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: "10.1.0.1".to_string(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    let c = ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![endpoint],
            ..Default::default()
        }],
        ..Default::default()
    };
    Resource::new(name, Bytes::from(c.encode_to_vec()), vec![])
}

pub(super) fn listener(name: &str) -> Resource {
    let l = Listener {
        name: name.to_string(),
        ..Default::default()
    };
    Resource::new(name, Bytes::from(l.encode_to_vec()), vec![])
}

pub(super) fn route(name: &str) -> Resource {
    let r = RouteConfiguration {
        name: name.to_string(),
        ..Default::default()
    };
    Resource::new(name, Bytes::from(r.encode_to_vec()), vec![])
}

pub(super) fn snapshot(
    clusters: Vec<Resource>,
    endpoints: Vec<Resource>,
    listeners: Vec<Resource>,
    routes: Vec<Resource>,
) -> Arc<Snapshot> {
    Arc::new(
        Snapshot::new(class(), [clusters, endpoints, listeners, routes], &[]).expect("consistent"),
    )
}

pub(super) fn names_in(resp: &DiscoveryResponse, t: XdsType) -> Vec<String> {
    resp.resources
        .iter()
        .map(|any| {
            assert_eq!(any.type_url, t.type_url());
            match t {
                XdsType::Cluster => Cluster::decode(any.value.as_slice()).expect("Cluster").name,
                XdsType::Endpoint => {
                    ClusterLoadAssignment::decode(any.value.as_slice())
                        .expect("CLA")
                        .cluster_name
                }
                XdsType::Listener => {
                    Listener::decode(any.value.as_slice())
                        .expect("Listener")
                        .name
                }
                XdsType::Route => {
                    RouteConfiguration::decode(any.value.as_slice())
                        .expect("RouteConfiguration")
                        .name
                }
                XdsType::Secret => {
                    TlsSecret::decode(any.value.as_slice())
                        .expect("Secret")
                        .name
                }
            }
        })
        .collect()
}

pub(super) struct SotwClient {
    tx: mpsc::Sender<DiscoveryRequest>,
    stream: Streaming<DiscoveryResponse>,
}

impl SotwClient {
    pub async fn send(&self, req: DiscoveryRequest) {
        self.tx.send(req).await.expect("request stream open");
    }

    /// The first request of a type (with the node, as Envoy sends it on every first request).
    pub async fn initial(&self, t: XdsType, names: &[&str]) {
        let mut req = request(t, names, "", "");
        req.node = Some(node(NODE));
        self.send(req).await;
    }

    pub async fn ack(&self, resp: &DiscoveryResponse, names: &[&str]) {
        let t = XdsType::from_type_url(&resp.type_url).expect("known type");
        self.send(request(t, names, &resp.version_info, &resp.nonce))
            .await;
    }

    pub async fn recv(&mut self) -> DiscoveryResponse {
        timeout(WAIT, self.stream.message())
            .await
            .expect("a response in time")
            .expect("stream ok")
            .expect("stream open")
    }

    pub async fn expect_silence(&mut self) {
        if let Ok(msg) = timeout(QUIET, self.stream.message()).await {
            panic!("expected no message, got {msg:?}");
        }
    }
}

pub(super) fn request(t: XdsType, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.to_string(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        type_url: t.type_url().to_string(),
        response_nonce: nonce.to_string(),
        ..Default::default()
    }
}

#[tokio::test]
async fn cds_wildcard_is_answered_once_the_class_is_built() {
    let mut h = Harness::start().await;
    let mut c = h.sotw().await;
    c.initial(XdsType::Cluster, &[]).await;
    // The class is new: the cache asks for a build, and nothing is sent until it is published.
    let proxy = timeout(WAIT, h.builds.recv())
        .await
        .expect("build request in time")
        .expect("build request");
    assert_eq!(proxy.node_id, NODE);
    c.expect_silence().await;
    let snap = snapshot(
        vec![cluster("b", 1), cluster("a", 1)],
        vec![],
        vec![],
        vec![],
    );
    assert_eq!(snap.class, proxy.class_key());
    h.cache.publish(snap.clone());

    let resp = c.recv().await;
    assert_eq!(resp.type_url, XdsType::Cluster.type_url());
    assert_eq!(names_in(&resp, XdsType::Cluster), ["a", "b"]);
    assert_eq!(resp.version_info, snap.get(XdsType::Cluster).version);
    assert!(!resp.nonce.is_empty());

    let conn = h.connection(NODE).await;
    assert_eq!(conn.variant, Variant::Sotw);
    assert!(conn.peer.is_some());
    let cds = &conn.types[XdsType::Cluster];
    assert!(cds.wildcard);
    assert_eq!(
        cds.version_sent.as_deref(),
        Some(resp.version_info.as_str())
    );
    assert_eq!(cds.nonce_sent.as_deref(), Some(resp.nonce.as_str()));
    h.stop().await;
}

#[tokio::test]
async fn eds_sends_only_named_resources_and_empty_ones_for_missing_names() {
    let h = Harness::start().await;
    h.cache.publish(snapshot(
        vec![cluster("a", 1), cluster("b", 1)],
        vec![cla("a", 80), cla("b", 80)],
        vec![],
        vec![],
    ));
    let mut c = h.sotw().await;
    c.initial(XdsType::Endpoint, &["a", "missing"]).await;
    let resp = c.recv().await;
    assert_eq!(names_in(&resp, XdsType::Endpoint), ["a", "missing"]);
    let empty = ClusterLoadAssignment::decode(resp.resources[1].value.as_slice()).expect("CLA");
    assert!(empty.endpoints.is_empty());
    let full = ClusterLoadAssignment::decode(resp.resources[0].value.as_slice()).expect("CLA");
    assert_eq!(full.endpoints.len(), 1);

    // RDS the same way.
    c.send(request(XdsType::Route, &["r"], "", "")).await;
    let resp = c.recv().await;
    assert_eq!(names_in(&resp, XdsType::Route), ["r"]);
    h.stop().await;
}

#[tokio::test]
async fn ack_then_change_sends_a_new_version_and_identical_content_sends_nothing() {
    let h = Harness::start().await;
    h.cache.publish(snapshot(
        vec![cluster("a", 1)],
        vec![cla("a", 80)],
        vec![],
        vec![],
    ));
    let mut c = h.sotw().await;
    c.initial(XdsType::Cluster, &[]).await;
    let first = c.recv().await;
    c.ack(&first, &[]).await;
    c.expect_silence().await;
    let conn = h.connection(NODE).await;
    assert_eq!(
        conn.types[XdsType::Cluster].version_acked.as_deref(),
        Some(first.version_info.as_str())
    );

    // An identical republish is refused by the cache; a snapshot whose only change is in a
    // type this stream does not watch reaches the stream but sends nothing.
    assert!(!h.cache.publish(snapshot(
        vec![cluster("a", 1)],
        vec![cla("a", 80)],
        vec![],
        vec![]
    )));
    assert!(h.cache.publish(snapshot(
        vec![cluster("a", 1)],
        vec![cla("a", 81)],
        vec![],
        vec![]
    )));
    c.expect_silence().await;

    h.cache.publish(snapshot(
        vec![cluster("a", 2)],
        vec![cla("a", 81)],
        vec![],
        vec![],
    ));
    let second = c.recv().await;
    assert_ne!(second.version_info, first.version_info);
    assert_ne!(second.nonce, first.nonce);
    assert_eq!(names_in(&second, XdsType::Cluster), ["a"]);
    h.stop().await;
}

#[tokio::test]
async fn changes_are_pushed_in_cds_eds_lds_rds_order() {
    let h = Harness::start().await;
    h.cache.publish(snapshot(
        vec![cluster("a", 1)],
        vec![cla("a", 80)],
        vec![listener("l")],
        vec![route("r")],
    ));
    let mut c = h.sotw().await;
    // Subscribe in reverse order, acknowledging each.
    c.initial(XdsType::Route, &["r"]).await;
    let r = c.recv().await;
    c.ack(&r, &["r"]).await;
    c.send(request(XdsType::Listener, &[], "", "")).await;
    let l = c.recv().await;
    c.ack(&l, &[]).await;
    c.send(request(XdsType::Endpoint, &["a"], "", "")).await;
    let e = c.recv().await;
    c.ack(&e, &["a"]).await;
    c.send(request(XdsType::Cluster, &[], "", "")).await;
    let cl = c.recv().await;
    // The clusters bring their endpoints again, unchanged: a cluster Envoy re-creates from
    // this response warms only once it has them.
    let again = c.recv().await;
    assert_eq!(again.type_url, XdsType::Endpoint.type_url());
    assert_eq!(again.version_info, e.version_info);
    assert_ne!(again.nonce, e.nonce);
    c.ack(&cl, &[]).await;
    c.ack(&again, &["a"]).await;
    c.expect_silence().await;

    h.cache.publish(snapshot(
        vec![cluster("a", 2)],
        vec![cla("a", 81)],
        vec![listener("l"), listener("l2")],
        vec![route("r2"), route("r")],
    ));
    let got: Vec<String> = [c.recv().await, c.recv().await, c.recv().await]
        .iter()
        .map(|r| r.type_url.clone())
        .collect();
    // Routes did not change for the subscribed name "r": no RDS response.
    assert_eq!(
        got,
        [
            XdsType::Cluster.type_url(),
            XdsType::Endpoint.type_url(),
            XdsType::Listener.type_url()
        ]
    );
    c.expect_silence().await;
    h.stop().await;
}

#[tokio::test]
async fn nack_is_recorded_and_the_same_content_not_resent() {
    let h = Harness::start().await;
    h.cache.publish(snapshot(
        vec![cluster("a", 1)],
        vec![cla("a", 80)],
        vec![],
        vec![],
    ));
    let mut c = h.sotw().await;
    c.initial(XdsType::Cluster, &[]).await;
    let first = c.recv().await;
    let mut nack = request(XdsType::Cluster, &[], "", &first.nonce);
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "cluster a: bad connect_timeout".to_string(),
        details: vec![],
    });
    c.send(nack).await;
    c.expect_silence().await;

    let conn = h.connection(NODE).await;
    let cds = &conn.types[XdsType::Cluster];
    let recorded = cds.last_nack.as_ref().expect("NACK recorded");
    assert_eq!(recorded.message, "cluster a: bad connect_timeout");
    assert_eq!(recorded.version, first.version_info);
    assert_eq!(cds.version_acked, None);

    // A snapshot with the same (rejected) clusters sends nothing; new clusters are sent.
    h.cache.publish(snapshot(
        vec![cluster("a", 1)],
        vec![cla("a", 99)],
        vec![],
        vec![],
    ));
    c.expect_silence().await;
    h.cache.publish(snapshot(
        vec![cluster("a", 3)],
        vec![cla("a", 99)],
        vec![],
        vec![],
    ));
    let fixed = c.recv().await;
    assert_ne!(fixed.version_info, first.version_info);
    h.stop().await;
}

#[tokio::test]
async fn stale_nonce_is_ignored_and_names_with_the_newest_nonce_resubscribe() {
    let h = Harness::start().await;
    h.cache.publish(snapshot(
        vec![cluster("a", 1), cluster("b", 1)],
        vec![cla("a", 80), cla("b", 80)],
        vec![],
        vec![],
    ));
    let mut c = h.sotw().await;
    c.initial(XdsType::Endpoint, &["a"]).await;
    let first = c.recv().await;
    h.cache.publish(snapshot(
        vec![cluster("a", 1), cluster("b", 1)],
        vec![cla("a", 81), cla("b", 80)],
        vec![],
        vec![],
    ));
    let second = c.recv().await;
    assert_ne!(first.nonce, second.nonce);

    // Envoy answering the first response after we sent the second: stale, ignored, even as a
    // NACK or with other names.
    let mut stale = request(XdsType::Endpoint, &["a", "b"], "", &first.nonce);
    stale.error_detail = Some(RpcStatus {
        code: 3,
        message: "old".to_string(),
        details: vec![],
    });
    c.send(stale).await;
    c.expect_silence().await;
    let conn = h.connection(NODE).await;
    assert!(conn.types[XdsType::Endpoint].last_nack.is_none());

    // The same names with the newest nonce: a new subscription, answered.
    c.send(request(
        XdsType::Endpoint,
        &["a", "b"],
        &second.version_info,
        &second.nonce,
    ))
    .await;
    let third = c.recv().await;
    // Only the newly named assignment: the proxy keeps a's.
    assert_eq!(names_in(&third, XdsType::Endpoint), ["b"]);
    // And an ACK of that with unchanged names is only an ACK.
    c.ack(&third, &["a", "b"]).await;
    c.expect_silence().await;
    h.stop().await;
}

#[tokio::test]
async fn reconnect_with_version_and_empty_nonce_is_answered() {
    let h = Harness::start().await;
    let snap = snapshot(vec![cluster("a", 1)], vec![], vec![], vec![]);
    h.cache.publish(snap.clone());
    let mut c = h.sotw().await;
    let mut req = request(
        XdsType::Cluster,
        &[],
        &snap.get(XdsType::Cluster).version,
        "",
    );
    req.node = Some(node(NODE));
    c.send(req).await;
    let resp = c.recv().await;
    assert_eq!(names_in(&resp, XdsType::Cluster), ["a"]);
    h.stop().await;
}

#[tokio::test]
async fn bad_node_id_ends_the_stream_with_invalid_argument() {
    let h = Harness::start().await;
    let mut c = h.sotw().await;
    let mut req = request(XdsType::Cluster, &[], "", "");
    req.node = Some(node("ingress~10.0.0.1~a.b~b.svc.cluster.local"));
    c.send(req).await;
    let err = timeout(WAIT, c.stream.message())
        .await
        .expect("an answer in time")
        .expect_err("an error status");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message()
            .contains("ingress~10.0.0.1~a.b~b.svc.cluster.local"),
        "{}",
        err.message()
    );
    assert!(h.conns.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn disconnect_removes_the_connection() {
    let h = Harness::start().await;
    h.cache
        .publish(snapshot(vec![cluster("a", 1)], vec![], vec![], vec![]));
    let mut c = h.sotw().await;
    c.initial(XdsType::Cluster, &[]).await;
    c.recv().await;
    assert_eq!(h.conns.len(), 1);
    drop(c);
    timeout(WAIT, async {
        while !h.conns.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("connection removed");
    h.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let h = Harness::start().await;
    h.cache
        .publish(snapshot(vec![cluster("a", 1)], vec![], vec![], vec![]));
    let mut c = h.sotw().await;
    c.initial(XdsType::Cluster, &[]).await;
    c.recv().await;
    h.shutdown.cancel();
    let end = timeout(WAIT, c.stream.message())
        .await
        .expect("stream ends in time");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    h.stop().await;
}

/// Past `--xds-max-connections`, a new connection is closed as soon as it is accepted and
/// counted; once one closes, a new one is served again.
#[tokio::test]
async fn connections_past_the_limit_are_closed_and_counted() {
    use tokio::io::AsyncReadExt;
    let refused = meshpilot_telemetry::metrics().refused("connections");
    let h = Harness::start_with(super::ServeLimits {
        max_connections: 2,
        ..super::ServeLimits::default()
    })
    .await;
    let a = h.sotw().await;
    a.initial(XdsType::Cluster, &[]).await;
    let b = tokio::net::TcpStream::connect(h.addr)
        .await
        .expect("connect");
    // The third is accepted by the kernel, then closed by the server: EOF, no HTTP/2 preface.
    let before = refused.get();
    let mut third = tokio::net::TcpStream::connect(h.addr)
        .await
        .expect("connect");
    let mut buf = [0u8; 64];
    let read = timeout(WAIT, third.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(refused.get() > before);
    drop(b);
    // A slot is free again: a new stream is served.
    timeout(WAIT, async {
        loop {
            let mut s = tokio::net::TcpStream::connect(h.addr)
                .await
                .expect("connect");
            // Served: the server's HTTP/2 SETTINGS arrive (or nothing yet); refused: EOF.
            let open = !matches!(timeout(QUIET, s.read(&mut buf)).await, Ok(Ok(0) | Err(_)));
            if open {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("served again once a connection closed");
    drop(a);
    h.stop().await;
}

/// A request naming more resources than `--max-resource-names-per-request` ends its stream
/// with RESOURCE_EXHAUSTED naming the flag; the server goes on serving others.
#[tokio::test]
async fn a_request_with_too_many_names_ends_its_stream() {
    let h = Harness::start_with(super::ServeLimits {
        max_resource_names: 3,
        ..super::ServeLimits::default()
    })
    .await;
    let mut greedy = h.sotw().await;
    greedy
        .initial(XdsType::Endpoint, &["a", "b", "c", "d"])
        .await;
    let status = timeout(WAIT, greedy.stream.message())
        .await
        .expect("answered in time")
        .expect_err("the stream ends with a status");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("--max-resource-names-per-request")
    );
    let modest = h.sotw().await;
    modest.initial(XdsType::Endpoint, &["a", "b", "c"]).await;
    h.connection(NODE).await;
    drop(modest);
    h.stop().await;
}

/// A class snapshot with one SDS secret, `kubernetes://cert`.
fn snapshot_with_secret() -> Arc<Snapshot> {
    let secret = TlsSecret {
        name: "kubernetes://cert".to_string(),
        ..Default::default()
    };
    let secrets = meshpilot_snapshot::TypeSet::new(vec![Resource::new(
        "kubernetes://cert",
        Bytes::from(secret.encode_to_vec()),
        vec![],
    )]);
    let snap = Snapshot::new(class(), [vec![], vec![], vec![], vec![]], &[])
        .expect("consistent")
        .with_secrets(Arc::new(secrets));
    Arc::new(snap)
}

#[tokio::test]
async fn plaintext_streams_get_no_secrets_unless_allowed() {
    for allowed in [false, true] {
        let h = Harness::start_serving(super::ServeLimits::default(), allowed).await;
        h.cache.publish(snapshot_with_secret());
        let mut c = h.sotw().await;
        c.initial(XdsType::Secret, &["kubernetes://cert"]).await;
        if allowed {
            let resp = c.recv().await;
            assert_eq!(names_in(&resp, XdsType::Secret), ["kubernetes://cert"]);
        } else {
            c.expect_silence().await;
            // The stream itself goes on: other types are still answered.
            c.send(request(XdsType::Cluster, &[], "", "")).await;
            let resp = c.recv().await;
            assert_eq!(resp.type_url, XdsType::Cluster.type_url());
        }
        h.stop().await;
    }
}

/// A request larger than `--xds-max-message-bytes` ends its stream with RESOURCE_EXHAUSTED
/// naming the flag, and is counted; a request within the limit is served.
#[tokio::test]
async fn a_request_past_the_message_limit_ends_its_stream() {
    let h = Harness::start_with(super::ServeLimits {
        max_message_bytes: 2048,
        ..super::ServeLimits::default()
    })
    .await;
    let refused = meshpilot_telemetry::metrics().refused("message_size");
    let before = refused.get();
    let mut big = h.sotw().await;
    let long_name = "x".repeat(4096);
    big.initial(XdsType::Endpoint, &[long_name.as_str()]).await;
    let status = timeout(WAIT, big.stream.message())
        .await
        .expect("answered in time")
        .expect_err("the stream ends with a status");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--xds-max-message-bytes"),
        "{status:?}"
    );
    assert_eq!(refused.get(), before + 1);
    let modest = h.sotw().await;
    modest.initial(XdsType::Endpoint, &["a"]).await;
    h.connection(NODE).await;
    drop(modest);
    h.stop().await;
}

/// With one stream per connection, a second ADS stream on the same HTTP/2 connection opens only
/// once the first has ended (the client honours the server's SETTINGS).
#[tokio::test]
async fn streams_per_connection_are_limited() {
    let h = Harness::start_with(super::ServeLimits {
        max_streams_per_connection: 1,
        ..super::ServeLimits::default()
    })
    .await;
    let mut client = h.client().await;
    let (tx1, rx1) = mpsc::channel(16);
    let first = timeout(
        WAIT,
        client.stream_aggregated_resources(ReceiverStream::new(rx1)),
    )
    .await
    .expect("first stream in time")
    .expect("first stream");
    let mut second_client = client.clone();
    let (_tx2, rx2) = mpsc::channel(16);
    let second = tokio::spawn(async move {
        second_client
            .stream_aggregated_resources(ReceiverStream::new(rx2))
            .await
            .map(|_| ())
    });
    tokio::time::sleep(QUIET).await;
    assert!(
        !second.is_finished(),
        "a second stream opened beside the first"
    );
    drop(tx1);
    drop(first);
    timeout(WAIT, second)
        .await
        .expect("the second stream opens once the first ended")
        .expect("task")
        .expect("second stream");
    h.stop().await;
}

/// A proxy that subscribes and then never reads (its HTTP/2 window fills after the first large
/// response) holds up nobody: another proxy of the same class receives and acknowledges every
/// following change.
#[tokio::test]
async fn a_proxy_that_never_reads_does_not_hold_up_the_others() {
    let h = Harness::start().await;
    // About 600 KB of clusters per response: far past an HTTP/2 window.
    let version = |timeout_s: i64| {
        let clusters = (0..2_000)
            .map(|i| {
                cluster(
                    &format!("outbound|80||svc-{i:04}.{}", "x".repeat(250)),
                    timeout_s,
                )
            })
            .collect();
        snapshot(clusters, vec![], vec![], vec![])
    };
    h.cache.publish(version(1));
    let stuck = h.sotw().await;
    let mut req = request(XdsType::Cluster, &[], "", "");
    req.node = Some(node(
        "sidecar~10.0.0.2~stuck.default~default.svc.cluster.local",
    ));
    stuck.send(req).await;
    let mut reader = h.sotw().await;
    reader.initial(XdsType::Cluster, &[]).await;
    let first = reader.recv().await;
    reader.ack(&first, &[]).await;
    for t in 2..=6 {
        h.cache.publish(version(t));
        let resp = reader.recv().await;
        assert_ne!(resp.version_info, first.version_info);
        let c = Cluster::decode(resp.resources[0].value.as_slice()).expect("Cluster");
        assert_eq!(c.connect_timeout.map(|d| d.seconds), Some(t));
        reader.ack(&resp, &[]).await;
    }
    drop(stuck);
    h.stop().await;
}
