//! Responses as they go on the wire, with their `resources` field already encoded.
//!
//! A `DiscoveryResponse` for a class's full set of clusters is the same bytes for every stream of
//! the class except its nonce. Building Envoy's prost message per stream copies every resource
//! into a fresh `Any` and encodes it again; instead the set's encoded `resources` field is made
//! once (cached in the set's [`WireSlot`](meshpilot_snapshot::WireSlot), each resource's entry in its
//! own slot) and every stream writes those shared bytes plus its own version and nonce. The types
//! below encode to exactly the bytes of `envoy.service.discovery.v3.DiscoveryResponse` and
//! `DeltaDiscoveryResponse` (same field numbers), so any xDS client decodes them.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::Resource as WireResource;
use envoy_types::pb::google::protobuf::Any;
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

use meshpilot_snapshot::encode::{delimited_len, put_string, string_len};
use meshpilot_snapshot::{Resource, TypeSet, XdsType};

/// `DiscoveryResponse.resources` (and `DeltaDiscoveryResponse.resources`): field 2.
const RESOURCES: u32 = 2;

fn any(t: XdsType, r: &Resource) -> Any {
    Any {
        type_url: t.type_url().to_string(),
        value: r.body.to_vec(),
    }
}

/// One resource's entry in a SotW `resources` field (tag, length, `Any`), cached on the resource.
pub(crate) fn sotw_entry(t: XdsType, r: &Resource) -> &Bytes {
    r.sotw_wire.get_or_init(|| {
        let a = any(t, r);
        let mut buf = BytesMut::with_capacity(encoding::message::encoded_len(RESOURCES, &a));
        encoding::message::encode(RESOURCES, &a, &mut buf);
        buf.freeze()
    })
}

/// One resource's entry in a Delta `resources` field (tag, length, `Resource` with name, version
/// and `Any`), cached on the resource.
pub(crate) fn delta_entry(t: XdsType, r: &Resource) -> &Bytes {
    r.delta_wire.get_or_init(|| {
        let w = WireResource {
            name: r.name.to_string(),
            version: r.version.to_string(),
            resource: Some(any(t, r)),
            ..Default::default()
        };
        let mut buf = BytesMut::with_capacity(encoding::message::encoded_len(RESOURCES, &w));
        encoding::message::encode(RESOURCES, &w, &mut buf);
        buf.freeze()
    })
}

/// A whole set as a SotW `resources` field, cached on the set (shared by every stream sent it).
pub fn sotw_resources(t: XdsType, set: &TypeSet) -> Bytes {
    set.sotw_wire
        .get_or_init(|| sotw_resources_of(t, set.items.values().map(|r| &**r)))
        .clone()
}

/// Some resources as a SotW `resources` field: a whole set, or (EDS and RDS) only those that
/// changed.
pub(crate) fn sotw_resources_of<'a>(
    t: XdsType,
    items: impl Iterator<Item = &'a Resource>,
) -> Bytes {
    let entries: Vec<&Bytes> = items.map(|r| sotw_entry(t, r)).collect();
    let mut buf = BytesMut::with_capacity(entries.iter().map(|e| e.len()).sum());
    for e in entries {
        buf.put_slice(e);
    }
    buf.freeze()
}

/// A response written as gRPC message frames without copying its shared part: the 5-byte gRPC
/// header and the fields before `resources`, the shared `resources` bytes themselves, and the
/// fields after them. Concatenated, the three are exactly one length-prefixed gRPC message.
/// A small message is one buffer instead (the other two empty): see [`COALESCE_UP_TO`].
///
/// Implementations say which fields go before and after `resources`; their `encode_raw` is
/// those three parts in order.
pub trait Framed: Message + Sized {
    /// The `resources` field (field 2), already encoded.
    fn resources(&self) -> &Bytes;

    /// Whether other streams share the `resources` bytes.
    fn resources_shared(&self) -> bool;

    /// The fields before `resources`.
    fn put_head(&self, buf: &mut impl BufMut);

    /// The fields after `resources`.
    fn put_tail(&self, buf: &mut impl BufMut);

    fn frames(&self) -> [Bytes; 3] {
        let len = self.encoded_len();
        let mut head = BytesMut::new();
        if len <= COALESCE_UP_TO {
            head.reserve(5 + len);
            grpc_header(len, &mut head);
            self.encode_raw(&mut head);
            return [head.freeze(), Bytes::new(), Bytes::new()];
        }
        grpc_header(len, &mut head);
        self.put_head(&mut head);
        let mut tail = BytesMut::with_capacity(len - self.resources().len() - (head.len() - 5));
        self.put_tail(&mut tail);
        [head.freeze(), self.resources().clone(), tail.freeze()]
    }

    /// Bytes of this response that no other stream shares (what sending it adds to memory): all
    /// of it when its `resources` are its own or it is small enough to be copied whole.
    fn unshared_len(&self) -> usize {
        let len = self.encoded_len();
        if self.resources_shared() && len > COALESCE_UP_TO {
            len - self.resources().len()
        } else {
            len
        }
    }
}

/// The gRPC message header: not compressed, then the length as a big-endian u32.
fn grpc_header(len: usize, buf: &mut BytesMut) {
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

/// Messages up to this size (one HTTP/2 DATA frame) are written as one buffer. Each buffer
/// becomes its own DATA frame, and HTTP/2 may flush between them: as three buffers, an EDS
/// update of one cluster took three frames and two `writev`s. Copying a few KB costs less.
pub const COALESCE_UP_TO: usize = 16 * 1024 - 5;

/// A `DiscoveryResponse` (SotW) with a pre-encoded `resources` field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SotwResponse {
    pub version_info: String,
    /// Field 2, already encoded: concatenated `Any` entries.
    pub resources: Bytes,
    /// How many resources `resources` holds (for logs and metrics).
    pub count: usize,
    pub type_url: String,
    pub nonce: String,
}

impl Message for SotwResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.put_head(buf);
        buf.put_slice(&self.resources);
        self.put_tail(buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // Only ever encoded by this server; decoding skips everything.
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        string_len(1, &self.version_info)
            + self.resources.len()
            + string_len(4, &self.type_url)
            + string_len(5, &self.nonce)
    }

    fn clear(&mut self) {
        *self = SotwResponse::default();
    }
}

impl Framed for SotwResponse {
    fn resources(&self) -> &Bytes {
        &self.resources
    }

    /// The set's own cached bytes, shared by every stream sent it.
    fn resources_shared(&self) -> bool {
        true
    }

    fn put_head(&self, buf: &mut impl BufMut) {
        put_string(1, &self.version_info, buf);
    }

    fn put_tail(&self, buf: &mut impl BufMut) {
        put_string(4, &self.type_url, buf);
        put_string(5, &self.nonce, buf);
    }
}

/// A `DeltaDiscoveryResponse` with a pre-encoded `resources` field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeltaResponse {
    pub system_version_info: String,
    /// Field 2, already encoded: concatenated `Resource` entries.
    pub resources: Bytes,
    /// Whether `resources` is shared with other streams (sent the same difference).
    pub shared: bool,
    pub count: usize,
    pub type_url: String,
    pub nonce: String,
    pub removed_resources: Vec<String>,
}

impl DeltaResponse {
    /// Concatenates the entries of `changed` into the `resources` field.
    pub(crate) fn resources_of(t: XdsType, changed: &[std::sync::Arc<Resource>]) -> Bytes {
        let entries: Vec<&Bytes> = changed.iter().map(|r| delta_entry(t, r)).collect();
        let mut buf = BytesMut::with_capacity(entries.iter().map(|e| e.len()).sum());
        for e in entries {
            buf.put_slice(e);
        }
        buf.freeze()
    }
}

impl Message for DeltaResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.put_head(buf);
        buf.put_slice(&self.resources);
        self.put_tail(buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        string_len(1, &self.system_version_info)
            + self.resources.len()
            + string_len(4, &self.type_url)
            + string_len(5, &self.nonce)
            + self
                .removed_resources
                .iter()
                .map(|n| delimited_len(6, n.len()))
                .sum::<usize>()
    }

    fn clear(&mut self) {
        *self = DeltaResponse::default();
    }
}

impl Framed for DeltaResponse {
    fn resources(&self) -> &Bytes {
        &self.resources
    }

    fn resources_shared(&self) -> bool {
        self.shared
    }

    fn put_head(&self, buf: &mut impl BufMut) {
        put_string(1, &self.system_version_info, buf);
    }

    fn put_tail(&self, buf: &mut impl BufMut) {
        put_string(4, &self.type_url, buf);
        put_string(5, &self.nonce, buf);
        for name in &self.removed_resources {
            put_string(6, name, buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse,
    };

    use super::*;

    fn res(name: &str, body: &'static [u8]) -> Arc<Resource> {
        Arc::new(Resource::new(name, Bytes::from_static(body), vec![]))
    }

    #[test]
    fn sotw_response_decodes_as_envoys_discovery_response() {
        let set = TypeSet::from_shared([res("a", b"\x0a\x01a"), res("b", b"")]);
        let resp = SotwResponse {
            version_info: set.version.clone(),
            resources: sotw_resources(XdsType::Cluster, &set),
            count: 2,
            type_url: XdsType::Cluster.type_url().to_string(),
            nonce: "7".into(),
        };
        let bytes = resp.encode_to_vec();
        assert_eq!(bytes.len(), resp.encoded_len());
        let d = DiscoveryResponse::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(d.version_info, set.version);
        assert_eq!(d.nonce, "7");
        assert_eq!(d.type_url, XdsType::Cluster.type_url());
        assert_eq!(d.resources.len(), 2);
        assert_eq!(d.resources[0].value, b"\x0a\x01a");
        assert_eq!(d.resources[0].type_url, XdsType::Cluster.type_url());
        // Framed: the gRPC header plus exactly the encoded message; small, so in one buffer,
        // which this stream alone holds.
        assert_eq!(resp.unshared_len(), resp.encoded_len());
        let frames = resp.frames();
        assert!(frames[1].is_empty() && frames[2].is_empty());
        assert_eq!(frames[0][0], 0);
        assert_eq!(
            u32::from_be_bytes([frames[0][1], frames[0][2], frames[0][3], frames[0][4]]) as usize,
            bytes.len()
        );
        assert_eq!(&frames[0][5..], bytes.as_slice());
        // The set's field is made once and shared.
        assert_eq!(
            sotw_resources(XdsType::Cluster, &set).as_ptr(),
            resp.resources.as_ptr()
        );
    }

    #[test]
    fn a_large_response_shares_the_sets_bytes_instead_of_copying_them() {
        let big = Arc::new(Resource::new(
            "big",
            Bytes::from(vec![b'x'; 40_000]),
            vec![],
        ));
        let set = TypeSet::from_shared([big, res("a", b"\x0a\x01a")]);
        let resp = SotwResponse {
            version_info: set.version.clone(),
            resources: sotw_resources(XdsType::Cluster, &set),
            count: 2,
            type_url: XdsType::Cluster.type_url().to_string(),
            nonce: "8".into(),
        };
        assert!(resp.encoded_len() > COALESCE_UP_TO);
        assert_eq!(
            resp.unshared_len(),
            resp.encoded_len() - resp.resources.len()
        );
        let frames = resp.frames();
        assert_eq!(frames[1].as_ptr(), resp.resources.as_ptr());
        let joined: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        assert_eq!(
            u32::from_be_bytes([joined[1], joined[2], joined[3], joined[4]]) as usize,
            resp.encoded_len()
        );
        let d = DiscoveryResponse::decode(&joined[5..]).expect("decodes");
        assert_eq!(d.resources.len(), 2);
        assert_eq!(d.resources[1].value.len(), 40_000, "sorted by name: a, big");
        assert_eq!(d.nonce, "8");
    }

    #[test]
    fn delta_response_decodes_as_envoys_delta_response() {
        let changed = vec![res("a", b"\x0a\x01a")];
        let resp = DeltaResponse {
            system_version_info: "sv".into(),
            resources: DeltaResponse::resources_of(XdsType::Endpoint, &changed),
            shared: false,
            count: 1,
            type_url: XdsType::Endpoint.type_url().to_string(),
            nonce: "3".into(),
            removed_resources: vec!["gone".into(), "x".into()],
        };
        let bytes = resp.encode_to_vec();
        assert_eq!(bytes.len(), resp.encoded_len());
        let d = DeltaDiscoveryResponse::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(d.system_version_info, "sv");
        assert_eq!(d.nonce, "3");
        assert_eq!(d.removed_resources, ["gone", "x"]);
        assert_eq!(d.resources.len(), 1);
        assert_eq!(d.resources[0].name, "a");
        assert_eq!(d.resources[0].version, changed[0].version);
        let any = d.resources[0].resource.as_ref().expect("resource");
        assert_eq!(any.value, b"\x0a\x01a");
        let joined: Vec<u8> = resp
            .frames()
            .iter()
            .flat_map(|f| f.iter().copied())
            .collect();
        assert_eq!(&joined[5..], bytes.as_slice());
    }
}
