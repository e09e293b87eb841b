//! gRPC messages cut from HTTP/2 DATA frames as they arrive, without copying the frames into
//! one buffer first: used by the server for the proxies' requests and by the load tool for the
//! server's responses.
//!
//! A message is decoded straight from the frames that carried it ([`Segments`]): a field that
//! lies within one frame is a slice of it, one that spans frames is copied on its own, and
//! nothing outlives the message. A stream between messages holds nothing, and one in the middle
//! of a message holds only the bytes that have arrived — not a buffer sized for the whole message
//! at its first frame. (Both sides used such a buffer before: tonic's client and the server's
//! own request decoder. When two thousand proxies sent their 47 KB EDS requests at once, the
//! server held a full-sized buffer for each until the last frame of each had come.)

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The gRPC message prefix: the compression flag (1 byte), then the length (4 bytes,
/// big-endian).
pub const PREFIX: usize = 5;

/// Why the frames do not hold a message that can be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The compression flag is set; no `grpc-encoding` was offered or accepted.
    #[error("compressed gRPC message (no grpc-encoding was agreed)")]
    Compressed,
    /// The length prefix exceeds the limit.
    #[error("message of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// The length the prefix announces.
        len: usize,
        /// The largest accepted.
        max: usize,
    },
}

/// The DATA frames received and not yet consumed, cut into gRPC messages.
#[derive(Debug, Default)]
pub struct Frames {
    held: Segments,
    /// The length of the message whose prefix has been read.
    body: Option<usize>,
}

impl Frames {
    /// Adds a frame's bytes.
    pub fn push(&mut self, chunk: Bytes) {
        self.held.push(chunk);
    }

    /// Bytes held: of the message being received, after its prefix, and of any after it.
    pub fn held(&self) -> usize {
        self.held.remaining()
    }

    /// True when no part of a message is held: the stream ended between messages.
    pub fn is_empty(&self) -> bool {
        self.body.is_none() && self.held.remaining() == 0
    }

    /// The next complete message's bytes (without the prefix), if all of them have arrived.
    pub fn next_message(&mut self, max: usize) -> Result<Option<Segments>, FrameError> {
        let len = match self.body {
            Some(len) => len,
            None => {
                if self.held.remaining() < PREFIX {
                    return Ok(None);
                }
                if self.held.get_u8() != 0 {
                    return Err(FrameError::Compressed);
                }
                let len = self.held.get_u32() as usize;
                if len > max {
                    return Err(FrameError::TooLarge { len, max });
                }
                self.body = Some(len);
                len
            }
        };
        if self.held.remaining() < len {
            return Ok(None);
        }
        self.body = None;
        Ok(Some(self.held.split_to(len)))
    }
}

/// One message's bytes as the slices of the frames that carried it: a [`Buf`] whose
/// `copy_to_bytes` slices instead of copying when the bytes lie within one frame.
#[derive(Debug, Default)]
pub struct Segments {
    parts: VecDeque<Bytes>,
    remaining: usize,
}

impl Segments {
    /// Appends `b` (an empty one is dropped).
    pub fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.remaining += b.len();
            self.parts.push_back(b);
        }
    }

    /// The first `n` bytes (at most `remaining`), as slices of the same frames.
    fn split_to(&mut self, mut n: usize) -> Segments {
        let mut out = Segments::default();
        while n > 0 {
            let Some(front) = self.parts.front_mut() else {
                break;
            };
            if front.len() > n {
                out.push(front.split_to(n));
                break;
            }
            n -= front.len();
            if let Some(part) = self.parts.pop_front() {
                out.push(part);
            }
        }
        self.remaining -= out.remaining;
        out
    }
}

impl Buf for Segments {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map(|b| b.as_ref()).unwrap_or_default()
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advance past the end");
        self.remaining -= cnt;
        while cnt > 0 {
            let Some(front) = self.parts.front_mut() else {
                return;
            };
            if front.len() > cnt {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.parts.pop_front();
        }
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        match self.parts.front_mut() {
            Some(front) if front.len() >= len => {
                self.remaining -= len;
                let out = front.split_to(len);
                if front.is_empty() {
                    self.parts.pop_front();
                }
                out
            }
            _ => {
                assert!(len <= self.remaining, "copy_to_bytes past the end");
                let mut out = BytesMut::with_capacity(len);
                out.put(self.split_to(len));
                out.freeze()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn framed(messages: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            out.push(0);
            out.extend_from_slice(&(m.len() as u32).to_be_bytes());
            out.extend_from_slice(m);
        }
        out
    }

    /// Messages come out whole and in order however the stream is cut into frames.
    #[test]
    fn messages_are_cut_from_any_framing() {
        let a: Vec<u8> = (0..100u8).collect();
        let b = b"second".to_vec();
        let c: Vec<u8> = Vec::new();
        let wire = framed(&[&a, &b, &c, &a]);
        for size in [1, 2, 5, 7, 64, 4096] {
            let mut frames = Frames::default();
            let mut got: Vec<Vec<u8>> = Vec::new();
            for chunk in wire.chunks(size) {
                frames.push(Bytes::copy_from_slice(chunk));
                while let Some(mut body) = frames.next_message(1 << 20).expect("valid") {
                    let len = body.remaining();
                    got.push(body.copy_to_bytes(len).to_vec());
                }
            }
            assert_eq!(
                got,
                [a.clone(), b.clone(), c.clone(), a.clone()],
                "frames of {size}"
            );
            assert!(frames.is_empty(), "frames of {size}");
        }
    }

    /// A stream cut inside a message's prefix or body still holds part of it.
    #[test]
    fn a_partial_message_is_not_empty() {
        let wire = framed(&[b"abcdef"]);
        for cut in [1, PREFIX, PREFIX + 3] {
            let mut frames = Frames::default();
            frames.push(Bytes::copy_from_slice(&wire[..cut]));
            assert_eq!(frames.next_message(64).map(|m| m.is_some()), Ok(false));
            assert!(!frames.is_empty(), "cut at {cut}");
        }
    }

    #[test]
    fn an_oversized_or_compressed_message_is_an_error() {
        let mut frames = Frames::default();
        frames.push(Bytes::from(framed(&[&[0u8; 64]])));
        assert_eq!(
            frames.next_message(63).err(),
            Some(FrameError::TooLarge { len: 64, max: 63 })
        );
        let mut frames = Frames::default();
        frames.push(Bytes::from_static(&[1, 0, 0, 0, 1, 9]));
        assert_eq!(frames.next_message(64).err(), Some(FrameError::Compressed));
    }

    /// A field within one frame is a slice of that frame; one across frames is copied whole.
    #[test]
    fn segments_slice_within_a_frame_and_copy_across() {
        let first = Bytes::from_static(b"abcdef");
        let mut s = Segments::default();
        s.push(first.clone());
        s.push(Bytes::from_static(b"ghij"));
        let ab = s.copy_to_bytes(2);
        assert_eq!(&ab[..], b"ab");
        assert_eq!(ab.as_ptr(), first.as_ptr(), "a slice, not a copy");
        let across = s.copy_to_bytes(6);
        assert_eq!(&across[..], b"cdefgh");
        assert_eq!(s.remaining(), 2);
        assert_eq!(s.chunk(), b"ij");
        s.advance(2);
        assert_eq!(s.remaining(), 0);
    }

    /// A message decodes from segments as from contiguous bytes.
    #[test]
    fn prost_decodes_from_segments() {
        use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
        let req = DiscoveryRequest {
            version_info: "v".repeat(40),
            resource_names: (0..50).map(|i| format!("name-{i}")).collect(),
            type_url: "t".to_string(),
            ..Default::default()
        };
        let bytes = req.encode_to_vec();
        let mut s = Segments::default();
        for c in bytes.chunks(13) {
            s.push(Bytes::copy_from_slice(c));
        }
        assert_eq!(DiscoveryRequest::decode(s).expect("decodes"), req);
    }
}
