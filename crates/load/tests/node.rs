//! What the simulated proxies tell the server about themselves: `meshpilot-load run
//! --interception none` makes each proxy a sidecar without interception, whose listeners bind
//! its own address (seen in the server's debug output); and every stream's first request
//! carries the node a real Envoy 1.40 sends (seen by a stand-in ADS server).

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::{get_json, load_tool, start, wait_synced};
use meshpilot_load::mesh::MeshSpec;
use serde_json::Value;

/// Every `socket_address.address` in a JSON document.
fn socket_addresses(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(a) = m.get("socket_address").and_then(|s| s["address"].as_str()) {
                out.insert(a.to_string());
            }
            m.values().for_each(|v| socket_addresses(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| socket_addresses(v, out)),
        _ => {}
    }
}

/// The addresses the listeners sent to `node_id` bind.
async fn listener_addresses(debug: SocketAddr, node_id: &str) -> BTreeSet<String> {
    let dump = get_json(
        debug,
        &format!("/debug/config_dump?proxyID={node_id}&types=lds"),
    )
    .await;
    let mut out = BTreeSet::new();
    socket_addresses(&dump, &mut out);
    out
}

/// Three proxies with `--interception none`: each announces its own IP, gets a class of its
/// own, and is served listeners bound to that IP only — three distinct listener addresses.
/// (With the default, redirect, they share one class and bind 0.0.0.0.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_mode_proxies_are_served_listeners_on_their_own_addresses() {
    let (_dir, server) = start(MeshSpec::plain(5, 2, 1)).await;
    let debug = server.debug_addr;

    let tool = load_tool(&server, &["--proxies", "3", "--interception", "none"], 30);
    let entries = wait_synced(debug, 3).await;
    let mut per_proxy = Vec::new();
    for p in &entries {
        let id = p["node_id"].as_str().expect("node id");
        per_proxy.push((id.to_string(), listener_addresses(debug, id).await));
    }
    drop(tool);
    let mut all = BTreeSet::new();
    for (id, addresses) in &per_proxy {
        let ip = id.split('~').nth(1).expect("IP in the node id");
        assert!(ip.starts_with("10."), "{id}");
        assert_eq!(
            addresses.iter().collect::<Vec<_>>(),
            [ip],
            "{id}'s listeners bind its own IP only: {per_proxy:?}"
        );
        all.extend(addresses.iter().cloned());
    }
    assert_eq!(
        all.len(),
        3,
        "three distinct listener addresses: {per_proxy:?}"
    );
    let classes: BTreeSet<String> = entries.iter().map(|p| p["class"].to_string()).collect();
    assert_eq!(classes.len(), 3, "a class per proxy: {entries:?}");

    // The default, for contrast: the same three proxies share one class and its listeners.
    common::wait_gone(debug).await;
    let tool = load_tool(&server, &["--proxies", "3"], 30);
    let entries = wait_synced(debug, 3).await;
    let mut all = BTreeSet::new();
    for p in &entries {
        let id = p["node_id"].as_str().expect("node id");
        all.extend(listener_addresses(debug, id).await);
    }
    drop(tool);
    assert_eq!(
        all.into_iter().collect::<Vec<_>>(),
        ["0.0.0.0"],
        "redirect-mode listeners"
    );
    server.stop().await;
}

/// A stand-in ADS server for one stream: records every request message (undecoded) and answers
/// the first with one empty CDS response, so that the proxy ACKs and asks for listeners.
async fn fake_ads_server(
    listener: tokio::net::TcpListener,
    delta: bool,
) -> Result<Vec<bytes::Bytes>, String> {
    use bytes::{Buf, BufMut, BytesMut};
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse,
    };
    use prost::Message;
    let cds = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
    let mut conn = h2::server::handshake(tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (request, mut respond) = conn
        .accept()
        .await
        .ok_or("no stream")?
        .map_err(|e| e.to_string())?;
    // The connection is driven in the background while this stream is read.
    tokio::spawn(async move { while conn.accept().await.is_some() {} });
    let mut body = request.into_body();
    let (mut buf, mut messages, mut send) = (BytesMut::new(), Vec::new(), None);
    // Until the load tool ends the stream (it aborts it at the end of its run).
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.put_slice(&chunk);
        while buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() < 5 + len {
                break;
            }
            buf.advance(5);
            messages.push(buf.split_to(len).freeze());
        }
        if send.is_none() && !messages.is_empty() {
            let response = http::Response::builder()
                .header("content-type", "application/grpc")
                .body(())
                .map_err(|e| e.to_string())?;
            let mut stream = respond
                .send_response(response, false)
                .map_err(|e| e.to_string())?;
            let msg = if delta {
                DeltaDiscoveryResponse {
                    system_version_info: "1".into(),
                    type_url: cds.into(),
                    nonce: "n1".into(),
                    ..Default::default()
                }
                .encode_to_vec()
            } else {
                DiscoveryResponse {
                    version_info: "1".into(),
                    type_url: cds.into(),
                    nonce: "n1".into(),
                    ..Default::default()
                }
                .encode_to_vec()
            };
            let mut frame = BytesMut::new();
            frame.put_u8(0);
            frame.put_u32(msg.len() as u32);
            frame.put_slice(&msg);
            stream
                .send_data(frame.freeze(), false)
                .map_err(|e| e.to_string())?;
            send = Some(stream);
        }
    }
    Ok(messages)
}

/// The nodes of the requests a simulated proxy sent to the stand-in server, in order.
async fn nodes_sent(
    protocol: meshpilot_load::Protocol,
) -> Vec<Option<envoy_types::pb::envoy::config::core::v3::Node>> {
    use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
    use prost::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let delta = protocol == meshpilot_load::Protocol::Delta;
    let server = tokio::spawn(fake_ads_server(listener, delta));
    let mut cfg = meshpilot_load::LoadConfig::new(addr, 1);
    cfg.protocol = protocol;
    cfg.interception = meshpilot_load::Interception::None;
    cfg.timeout = Duration::from_secs(1);
    let r = meshpilot_load::run(&cfg, None).await.expect("run");
    assert!(!r.sync.all_complete, "the stand-in serves no listeners");
    let messages = server.await.expect("join").expect("the stand-in server");
    messages
        .iter()
        .map(|m| {
            if delta {
                DeltaDiscoveryRequest::decode(&m[..]).expect("request").node
            } else {
                DiscoveryRequest::decode(&m[..]).expect("request").node
            }
        })
        .collect()
}

/// The first request of a stream carries the whole node a real Envoy 1.40 sends — the proxy's
/// id and metadata, and Envoy's user agent, build version and extension list — and the
/// requests after it (the CDS ACK, the LDS subscription) carry none, as Envoy's do with
/// `set_node_on_first_message_only`. SotW and Delta.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_request_carries_envoys_full_node_and_later_ones_none() {
    use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
    let envoy = meshpilot_load::envoy_node::EnvoyNode::embedded().expect("embedded node");
    for protocol in [
        meshpilot_load::Protocol::Sotw,
        meshpilot_load::Protocol::Delta,
    ] {
        let nodes = nodes_sent(protocol).await;
        assert!(
            nodes.len() >= 3,
            "{protocol:?}: first, ACK, LDS: {}",
            nodes.len()
        );
        let first = nodes[0].as_ref().expect("the first request has a node");
        assert_eq!(
            first.id,
            "sidecar~10.0.0.1~load-0.ns-0~ns-0.svc.cluster.local"
        );
        let meta = first.metadata.as_ref().expect("metadata");
        assert!(meta.fields.contains_key("INTERCEPTION_MODE"), "{meta:?}");
        assert_eq!(first.user_agent_name, "envoy");
        let Some(UserAgentVersionType::UserAgentBuildVersion(b)) = &first.user_agent_version_type
        else {
            panic!("{protocol:?}: no build version");
        };
        let v = b.version.expect("version");
        assert_eq!((v.major_number, v.minor_number, v.patch), (1, 40, 0));
        assert!(first.extensions.len() >= 100, "{}", first.extensions.len());
        assert_eq!(first.extensions, envoy.node().extensions);
        assert_eq!(first.client_features, envoy.node().client_features);
        assert!(
            nodes[1..].iter().all(Option::is_none),
            "{protocol:?}: later requests carry no node"
        );
    }
}
