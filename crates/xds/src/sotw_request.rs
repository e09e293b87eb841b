//! A State of the World request as the server reads it: Envoy's `DiscoveryRequest`, except that
//! the resource names are kept as the bytes they arrived in, with a digest of them.
//!
//! Every SotW acknowledgement repeats the stream's whole subscription — an EDS ACK names every
//! cluster, 1,000 names for 1,000 services — and almost always the same one. Decoding each name
//! into its own `String` made a thousand allocations per ACK per proxy, most of the server's
//! CPU for an endpoint change pushed to 1,000 SotW proxies. Here the names are copied once into
//! one buffer and hashed; the state machine compares the digest with the subscription's and
//! reads the names only when it differs.

use bytes::{Buf, BufMut};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::encoding::{
    DecodeContext, WireType, check_wire_type, decode_varint, encode_key, encode_varint,
    encoded_len_varint, key_len, message, skip_field, string,
};
use prost::{DecodeError, Message};

/// `envoy.service.discovery.v3.DiscoveryRequest`, names kept raw (see the module docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SotwRequest {
    pub version_info: String,
    pub node: Option<Node>,
    /// Each name as a little-endian `u32` length and its bytes, in request order.
    names: Vec<u8>,
    name_count: usize,
    pub type_url: String,
    pub response_nonce: String,
    pub error_detail: Option<RpcStatus>,
}

impl SotwRequest {
    /// The requested names, in request order. A name that is not UTF-8 (Envoy never sends one)
    /// is read lossily.
    pub fn resource_names(&self) -> impl Iterator<Item = std::borrow::Cow<'_, str>> + '_ {
        RawNames(&self.names).map(String::from_utf8_lossy)
    }

    pub fn name_count(&self) -> usize {
        self.name_count
    }

    /// A digest of the names in request order: equal digests, equal name lists (barring a
    /// 64-bit collision, which at worst keeps a subscription one ACK longer than it should).
    pub fn names_digest(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&self.names)
    }

    fn push_name(&mut self, name: &[u8]) {
        let len = u32::try_from(name.len()).unwrap_or(u32::MAX);
        self.names.extend_from_slice(&len.to_le_bytes());
        self.names.extend_from_slice(name);
        self.name_count += 1;
    }
}

/// A decode error of our own (prost offers no stable constructor; its `DecodeError::new` is the
/// one every hand-written `merge_field` uses).
#[allow(deprecated)]
fn decode_error(message: &'static str) -> DecodeError {
    DecodeError::new(message)
}

struct RawNames<'a>(&'a [u8]);

impl<'a> Iterator for RawNames<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.0.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let (name, rest) = rest.split_at_checked(len)?;
        self.0 = rest;
        Some(name)
    }
}

impl From<DiscoveryRequest> for SotwRequest {
    fn from(r: DiscoveryRequest) -> SotwRequest {
        let mut out = SotwRequest {
            version_info: r.version_info,
            node: r.node,
            type_url: r.type_url,
            response_nonce: r.response_nonce,
            error_detail: r.error_detail,
            ..SotwRequest::default()
        };
        for n in &r.resource_names {
            out.push_name(n.as_bytes());
        }
        out
    }
}

impl Message for SotwRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.version_info.is_empty() {
            string::encode(1, &self.version_info, buf);
        }
        if let Some(node) = &self.node {
            message::encode(2, node, buf);
        }
        for name in RawNames(&self.names) {
            encode_key(3, WireType::LengthDelimited, buf);
            encode_varint(name.len() as u64, buf);
            buf.put_slice(name);
        }
        if !self.type_url.is_empty() {
            string::encode(4, &self.type_url, buf);
        }
        if !self.response_nonce.is_empty() {
            string::encode(5, &self.response_nonce, buf);
        }
        if let Some(e) = &self.error_detail {
            message::encode(6, e, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => string::merge(wire_type, &mut self.version_info, buf, ctx),
            2 => message::merge(
                wire_type,
                self.node.get_or_insert_with(Node::default),
                buf,
                ctx,
            ),
            3 => {
                check_wire_type(WireType::LengthDelimited, wire_type)?;
                let len = usize::try_from(decode_varint(buf)?)
                    .map_err(|_| decode_error("resource name length overflows"))?;
                if len > buf.remaining() {
                    return Err(decode_error("buffer underflow"));
                }
                let len32 = u32::try_from(len).map_err(|_| decode_error("name too long"))?;
                self.names.extend_from_slice(&len32.to_le_bytes());
                let mut left = len;
                while left > 0 {
                    let chunk = buf.chunk();
                    let take = chunk.len().min(left);
                    self.names.extend_from_slice(&chunk[..take]);
                    buf.advance(take);
                    left -= take;
                }
                self.name_count += 1;
                Ok(())
            }
            4 => string::merge(wire_type, &mut self.type_url, buf, ctx),
            5 => string::merge(wire_type, &mut self.response_nonce, buf, ctx),
            6 => message::merge(
                wire_type,
                self.error_detail.get_or_insert_with(RpcStatus::default),
                buf,
                ctx,
            ),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let mut len = 0;
        if !self.version_info.is_empty() {
            len += string::encoded_len(1, &self.version_info);
        }
        if let Some(node) = &self.node {
            len += message::encoded_len(2, node);
        }
        for name in RawNames(&self.names) {
            len += key_len(3) + encoded_len_varint(name.len() as u64) + name.len();
        }
        if !self.type_url.is_empty() {
            len += string::encoded_len(4, &self.type_url);
        }
        if !self.response_nonce.is_empty() {
            len += string::encoded_len(5, &self.response_nonce);
        }
        if let Some(e) = &self.error_detail {
            len += message::encoded_len(6, e);
        }
        len
    }

    fn clear(&mut self) {
        *self = SotwRequest::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envoy_request(names: &[&str]) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: "v1".into(),
            node: Some(Node {
                id: "sidecar~1.2.3.4~a.b~b.svc.cluster.local".into(),
                ..Node::default()
            }),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            type_url: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment".into(),
            response_nonce: "7".into(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: "bad".into(),
                ..RpcStatus::default()
            }),
            ..DiscoveryRequest::default()
        }
    }

    #[test]
    fn decodes_what_envoy_encodes_and_encodes_it_back_byte_for_byte() {
        let original = envoy_request(&["outbound|80||a", "outbound|80||b", ""]);
        let bytes = original.encode_to_vec();
        let lean = SotwRequest::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(lean.version_info, "v1");
        assert_eq!(lean.response_nonce, "7");
        assert_eq!(lean.type_url, original.type_url);
        assert_eq!(lean.error_detail, original.error_detail);
        assert_eq!(lean.node, original.node);
        let names: Vec<String> = lean.resource_names().map(|n| n.into_owned()).collect();
        assert_eq!(names, original.resource_names);
        assert_eq!(lean.name_count(), 3);
        assert_eq!(lean.encode_to_vec(), bytes);
        assert_eq!(lean.encoded_len(), bytes.len());
        assert_eq!(SotwRequest::from(original), lean);
    }

    #[test]
    fn the_digest_follows_the_names_and_their_order() {
        let digest = |names: &[&str]| SotwRequest::from(envoy_request(names)).names_digest();
        assert_eq!(digest(&["a", "b"]), digest(&["a", "b"]));
        assert_ne!(digest(&["a", "b"]), digest(&["b", "a"]));
        assert_ne!(digest(&["ab"]), digest(&["a", "b"]));
        assert_ne!(digest(&["a"]), digest(&["a", "b"]));
    }

    #[test]
    fn a_truncated_name_is_a_decode_error() {
        let mut bytes = envoy_request(&["outbound|80||a"]).encode_to_vec();
        // Cut inside the first name: the length says more than remains.
        let cut = bytes
            .windows(b"outbound".len())
            .position(|w| w == b"outbound")
            .expect("name present")
            + 3;
        bytes.truncate(cut);
        assert!(SotwRequest::decode(bytes.as_slice()).is_err());
    }
}
