//! The simulated proxies' gRPC client: bidirectional ADS streams on `h2`, with the gRPC framing
//! done here.
//!
//! tonic's client copies every DATA frame into one contiguous buffer per stream before decoding
//! a message, and that buffer keeps the capacity of the largest message the stream has seen
//! (megabytes per proxy when a thousand proxies sync a 1,000-service mesh). The load tool shares two cores with the server, so that copy and the
//! page faults of a thousand such buffers were a large part of its cost. Here a message is
//! decoded straight from the DATA frames as `h2` delivers them ([`Frames`]): a resource that lies
//! within one frame is a slice of it, one that spans frames is copied on its own, and nothing
//! outlives the message.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::config::core::v3::Node;
use prost::Message;

use super::wire::Received;
use meshpilot_transport::frames::{Frames, PREFIX};
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Envoy's defaults are 256 MiB; large enough that a 2 MB response is not paced by window
/// updates. (The frame size stays HTTP/2's default 16 KiB, which Envoy does not raise.)
const STREAM_WINDOW: u32 = 16 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;

/// How long one TCP connect may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How much one read from the socket takes at most. h2 reads into a buffer of about one frame
/// (16 KiB, often half that): a 310 KB route configuration took ~38 `recvfrom`s per proxy. Envoy
/// reserves up to eight 16 KiB slices (128 KiB) for each read of a socket.
const READ_BUFFER: usize = 64 * 1024;

/// One HTTP/2 connection to the server; cloned handles share it. The connection's task ends
/// with the last handle.
#[derive(Clone)]
pub struct Conn {
    send: h2::client::SendRequest<Bytes>,
    authority: String,
    _task: Arc<AbortOnDrop>,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Opens a connection (TCP_NODELAY, Envoy-sized flow-control windows).
pub async fn connect(addr: SocketAddr) -> Result<Conn, String> {
    // As tonic's client did: a connect the server's full accept queue leaves hanging is
    // given up after a while (and retried by the caller).
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect {addr}: timed out after {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_nodelay(true)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (send, connection) = h2::client::Builder::new()
        // As Envoy (and hyper) do: no server push.
        .enable_push(false)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake::<_, Bytes>(BufReader::with_capacity(READ_BUFFER, tcp))
        .await
        .map_err(|e| format!("HTTP/2 handshake with {addr}: {e}"))?;
    let task = tokio::spawn(async move {
        // Ends when the server closes the connection or the last handle is dropped.
        let _ = connection.await;
    });
    Ok(Conn {
        send,
        authority: addr.to_string(),
        _task: Arc::new(AbortOnDrop(task)),
    })
}

/// The sending half of a stream: each request is one gRPC message.
pub struct Requests {
    send: h2::SendStream<Bytes>,
}

impl Requests {
    /// Queues a request (h2 buffers it until the flow-control window allows).
    pub fn send<M: Message>(&mut self, msg: &M) -> Result<(), String> {
        self.send_with_names::<M, &str>(msg, &[])
    }

    /// Queues `msg` with repeated string fields `(field number, names)` added to it: the
    /// resource names of a subscription or an ACK, taken from the names a proxy shares with
    /// the others rather than copied into a `String` each (a thousand per EDS request).
    pub fn send_with_names<M: Message, S: AsRef<str>>(
        &mut self,
        msg: &M,
        names: &[(u32, &[S])],
    ) -> Result<(), String> {
        let frame = request_frame(msg, names)?;
        self.send
            .send_data(frame, false)
            .map_err(|e| format!("request stream closed: {e}"))
    }
}

/// One gRPC frame: `msg`'s fields, then each name as an entry of its repeated string field.
/// Protobuf lets the entries of a repeated field come anywhere in a message, after the others
/// included, so this decodes as the message with those names in its fields.
fn request_frame<M: Message, S: AsRef<str>>(
    msg: &M,
    names: &[(u32, &[S])],
) -> Result<Bytes, String> {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
    let entry = |tag: u32, n: &S| {
        let n = n.as_ref().len();
        key_len(tag) + encoded_len_varint(n as u64) + n
    };
    let extra: usize = names
        .iter()
        .map(|(tag, ns)| ns.iter().map(|n| entry(*tag, n)).sum::<usize>())
        .sum();
    let len = msg.encoded_len() + extra;
    let mut buf = BytesMut::with_capacity(PREFIX + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).map_err(|_| "request too large".to_string())?);
    msg.encode_raw(&mut buf);
    for (tag, ns) in names {
        for n in *ns {
            let n = n.as_ref().as_bytes();
            encode_key(*tag, WireType::LengthDelimited, &mut buf);
            encode_varint(n.len() as u64, &mut buf);
            buf.put_slice(n);
        }
    }
    Ok(buf.freeze())
}

/// The first request of a stream, framed: `msg` (whose node is left empty) with the node made of
/// `own` (the proxy's id, cluster and metadata) followed by `shared` (the Envoy-wide fields,
/// encoded once for every proxy), as field `node_tag` of the request. `shared` holds only fields
/// numbered after `own`'s, so the node is encoded in field-number order, as Envoy writes it.
pub fn first_request_frame<M: Message>(
    msg: &M,
    node_tag: u32,
    own: &Node,
    shared: &[u8],
) -> Result<Bytes, String> {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
    let node_len = own.encoded_len() + shared.len();
    let len =
        key_len(node_tag) + encoded_len_varint(node_len as u64) + node_len + msg.encoded_len();
    let mut buf = BytesMut::with_capacity(PREFIX + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).map_err(|_| "request too large".to_string())?);
    encode_key(node_tag, WireType::LengthDelimited, &mut buf);
    encode_varint(node_len as u64, &mut buf);
    own.encode_raw(&mut buf);
    buf.put_slice(shared);
    msg.encode_raw(&mut buf);
    Ok(buf.freeze())
}

/// The receiving half of a stream: DATA frames in, decoded messages out.
pub struct Responses {
    recv: h2::RecvStream,
    frames: Frames,
    max_message: usize,
}

impl Responses {
    /// The next message; `Ok(None)` when the server ended the stream with status OK.
    pub async fn message<M: Message + Default>(&mut self) -> Result<Option<Received<M>>, String> {
        loop {
            let next = self.frames.next_message(self.max_message);
            if let Some(body) = next.map_err(|e| e.to_string())? {
                let bytes = body.remaining();
                let message = M::decode(body).map_err(|e| format!("undecodable response: {e}"))?;
                return Ok(Some(Received { bytes, message }));
            }
            match self.recv.data().await {
                Some(Ok(chunk)) => {
                    // The window is given back as soon as the bytes are ours, as tonic does.
                    let _ = self.recv.flow_control().release_capacity(chunk.len());
                    self.frames.push(chunk);
                }
                Some(Err(e)) => return Err(e.to_string()),
                None => {
                    let trailers = self.recv.trailers().await.map_err(|e| e.to_string())?;
                    return match trailers.as_ref().and_then(status_of) {
                        Some(s) => Err(s),
                        None => Ok(None),
                    };
                }
            }
        }
    }
}

/// The error a `grpc-status` (and `grpc-message`) header reports; `None` for OK or no status.
fn status_of(headers: &http::HeaderMap) -> Option<String> {
    let code = headers.get("grpc-status")?.to_str().ok()?;
    if code == "0" {
        return None;
    }
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or_default();
    Some(format!("status {code}: {message}"))
}

/// Opens a bidirectional stream on `path`, sends `first` (a framed request, see
/// [`first_request_frame`]) and waits for the response headers.
pub async fn open(
    conn: &Conn,
    path: &str,
    first: Bytes,
    max_message: usize,
) -> Result<(Requests, Responses), String> {
    let mut send = conn
        .send
        .clone()
        .ready()
        .await
        .map_err(|e| format!("connection not ready: {e}"))?;
    let request = http::Request::post(format!("http://{}{path}", conn.authority))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .map_err(|e| e.to_string())?;
    let (response, stream) = send
        .send_request(request, false)
        .map_err(|e| e.to_string())?;
    let mut requests = Requests { send: stream };
    requests
        .send
        .send_data(first, false)
        .map_err(|e| format!("request stream closed: {e}"))?;
    let response = response.await.map_err(|e| e.to_string())?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("HTTP status {}", response.status()));
    }
    // A "trailers-only" response carries its error status in the headers.
    if let Some(s) = status_of(response.headers()) {
        return Err(s);
    }
    Ok((
        requests,
        Responses {
            recv: response.into_body(),
            frames: Frames::default(),
            max_message,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request framed with its names added decodes as the same request built with them.
    #[test]
    fn names_added_to_a_request_decode_as_its_fields() {
        use envoy_types::pb::envoy::service::discovery::v3::{
            DeltaDiscoveryRequest, DiscoveryRequest,
        };
        let sub: Vec<Arc<str>> = vec!["outbound|80||a".into(), "outbound|80||b".into()];
        let unsub: Vec<Arc<str>> = vec!["outbound|80||c".into()];
        let delta = DeltaDiscoveryRequest {
            type_url: "t".into(),
            response_nonce: "7".into(),
            ..Default::default()
        };
        let frame = request_frame(&delta, &[(3, &sub[..]), (4, &unsub[..])]).expect("frames");
        assert_eq!(frame[0], 0);
        assert_eq!(
            u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize,
            frame.len() - PREFIX
        );
        let got = DeltaDiscoveryRequest::decode(&frame[PREFIX..]).expect("decodes");
        assert_eq!(
            got,
            DeltaDiscoveryRequest {
                resource_names_subscribe: vec!["outbound|80||a".into(), "outbound|80||b".into()],
                resource_names_unsubscribe: vec!["outbound|80||c".into()],
                ..delta
            }
        );
        let sotw = DiscoveryRequest {
            version_info: "v1".into(),
            type_url: "t".into(),
            ..Default::default()
        };
        let frame = request_frame(&sotw, &[(3, &sub[..])]).expect("frames");
        let got = DiscoveryRequest::decode(&frame[PREFIX..]).expect("decodes");
        assert_eq!(got.resource_names, ["outbound|80||a", "outbound|80||b"]);
        assert_eq!(got.version_info, "v1");
        let plain = request_frame::<_, &str>(&sotw, &[]).expect("frames");
        assert_eq!(&plain[PREFIX..], sotw.encode_to_vec().as_slice());
    }

    /// The first request, with the proxy's own node fields and the shared Envoy-wide ones
    /// spliced in, decodes as the request built with the whole node, and is byte for byte its
    /// encoding (the fields are in the order prost, like Envoy, writes them).
    #[test]
    fn a_first_request_carries_the_whole_node() {
        use envoy_types::pb::envoy::config::core::v3::Extension;
        use envoy_types::pb::envoy::service::discovery::v3::{
            DeltaDiscoveryRequest, DiscoveryRequest,
        };
        let shared = Node {
            user_agent_name: "envoy".into(),
            extensions: vec![Extension {
                name: "envoy.filters.http.router".into(),
                category: "envoy.filters.http".into(),
                ..Default::default()
            }],
            client_features: vec!["f".into()],
            ..Default::default()
        };
        let own = Node {
            id: "sidecar~10.0.0.1~a.ns~ns.svc.cluster.local".into(),
            cluster: "c".into(),
            locality: Some(envoy_types::pb::envoy::config::core::v3::Locality {
                region: "region-0".into(),
                zone: "zone-1".into(),
                sub_zone: String::new(),
            }),
            ..Default::default()
        };
        let whole = Node {
            id: own.id.clone(),
            cluster: own.cluster.clone(),
            locality: own.locality.clone(),
            ..shared.clone()
        };
        let sotw = DiscoveryRequest {
            type_url: "t".into(),
            ..Default::default()
        };
        let frame = first_request_frame(&sotw, 2, &own, &shared.encode_to_vec()).expect("frames");
        let with_node = DiscoveryRequest {
            node: Some(whole.clone()),
            ..sotw
        };
        assert_eq!(
            DiscoveryRequest::decode(&frame[PREFIX..]),
            Ok(with_node.clone())
        );
        let delta = DeltaDiscoveryRequest {
            type_url: "t".into(),
            ..Default::default()
        };
        let frame = first_request_frame(&delta, 1, &own, &shared.encode_to_vec()).expect("frames");
        let with_node = DeltaDiscoveryRequest {
            node: Some(whole),
            ..delta
        };
        assert_eq!(&frame[PREFIX..], with_node.encode_to_vec().as_slice());
    }
}
