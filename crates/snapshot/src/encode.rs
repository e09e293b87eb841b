//! Protobuf field encoding for bytes written without building a prost message: compile's
//! ClusterLoadAssignments and xds's response frames. Same bytes as prost's for these fields.

use bytes::BufMut;
use prost::encoding::{WireType, encode_varint, encoded_len_varint, key_len};

/// The size of a length-delimited field `tag` whose body is `len` bytes: key, length, body.
pub fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// The key and length of a length-delimited field `tag`; its `len` bytes of body follow.
pub fn put_delimited_header(tag: u32, len: usize, buf: &mut impl BufMut) {
    put_key(tag, WireType::LengthDelimited, buf);
    put_uvarint(len as u64, buf);
}

/// A string field (proto3: nothing when empty).
pub fn put_string(tag: u32, value: &str, buf: &mut impl BufMut) {
    if !value.is_empty() {
        put_delimited_header(tag, value.len(), buf);
        buf.put_slice(value.as_bytes());
    }
}

/// The size [`put_string`] writes.
pub fn string_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        delimited_len(tag, value.len())
    }
}

/// A varint field `tag`, written whatever its value (as prost writes a `oneof` member).
pub fn put_varint(tag: u32, value: u64, buf: &mut impl BufMut) {
    put_key(tag, WireType::Varint, buf);
    put_uvarint(value, buf);
}

/// The size [`put_varint`] writes.
pub fn varint_len(tag: u32, value: u64) -> usize {
    key_len(tag) + encoded_len_varint(value)
}

/// A field's key, as prost's `encode_key` writes it.
fn put_key(tag: u32, wire_type: WireType, buf: &mut impl BufMut) {
    put_uvarint((u64::from(tag) << 3) | wire_type as u64, buf);
}

/// A varint, as prost's `encode_varint` writes it, with the one-byte case (every key written
/// here, and most lengths) inline instead of a call per byte.
#[inline]
fn put_uvarint(value: u64, buf: &mut impl BufMut) {
    if value < 0x80 {
        buf.put_u8(value as u8);
    } else {
        encode_varint(value, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::encoding::encode_key;

    #[test]
    fn fields_are_the_bytes_prost_writes() {
        for tag in [1, 2, 15, 16, 2047, 2048, (1 << 29) - 1] {
            for value in [
                0,
                1,
                127,
                128,
                300,
                16_383,
                16_384,
                u64::from(u32::MAX),
                u64::MAX,
            ] {
                let mut want = Vec::new();
                encode_key(tag, WireType::Varint, &mut want);
                encode_varint(value, &mut want);
                let mut got = Vec::new();
                put_varint(tag, value, &mut got);
                assert_eq!(got, want, "varint field {tag} = {value}");
                assert_eq!(got.len(), varint_len(tag, value));

                let len = usize::try_from(value.min(1 << 40)).unwrap_or(usize::MAX);
                let mut want = Vec::new();
                encode_key(tag, WireType::LengthDelimited, &mut want);
                encode_varint(len as u64, &mut want);
                let mut got = Vec::new();
                put_delimited_header(tag, len, &mut got);
                assert_eq!(got, want, "header of field {tag}, {len} bytes");
            }
        }
    }
}
