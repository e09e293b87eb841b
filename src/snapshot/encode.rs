//! Protobuf field encoding for bytes written without building a prost message: compile's
//! ClusterLoadAssignments and xds's response frames. Same bytes as prost's for these fields.

use bytes::BufMut;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

/// The size of a length-delimited field `tag` whose body is `len` bytes: key, length, body.
pub(crate) fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// The key and length of a length-delimited field `tag`; its `len` bytes of body follow.
pub(crate) fn put_delimited_header(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// A string field (proto3: nothing when empty).
pub(crate) fn put_string(tag: u32, value: &str, buf: &mut impl BufMut) {
    if !value.is_empty() {
        put_delimited_header(tag, value.len(), buf);
        buf.put_slice(value.as_bytes());
    }
}

/// The size [`put_string`] writes.
pub(crate) fn string_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        delimited_len(tag, value.len())
    }
}

/// A varint field `tag`, written whatever its value (as prost writes a `oneof` member).
pub(crate) fn put_varint(tag: u32, value: u64, buf: &mut impl BufMut) {
    encode_key(tag, WireType::Varint, buf);
    encode_varint(value, buf);
}

/// The size [`put_varint`] writes.
pub(crate) fn varint_len(tag: u32, value: u64) -> usize {
    key_len(tag) + encoded_len_varint(value)
}
