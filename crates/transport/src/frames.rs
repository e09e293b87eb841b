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
//!
//! Frames under [`SMALL_FRAME`] are copied together into one piece instead: held each as a
//! slice, a message sent in thousands of tiny frames would cost a queue entry per frame and
//! keep alive the read buffers they arrived in, many times the bytes themselves.

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

/// Frames shorter than this are copied into a piece shared with their neighbours; longer ones
/// (Envoy's large requests come in 16 KiB frames) are held as slices of what h2 read.
pub const SMALL_FRAME: usize = 4 * 1024;

/// Bytes of small frames gathered before they become a piece of their own.
const GATHER: usize = 16 * 1024;

/// Queue entries kept between messages; a longer queue (a message of many pieces) is released.
const KEEP_PIECES: usize = 16;

/// The DATA frames received and not yet consumed, cut into gRPC messages.
#[derive(Debug, Default)]
pub struct Frames {
    received: Segments,
    /// Small frames' bytes, after those of `received`.
    small: BytesMut,
    /// The length of the message whose prefix has been read.
    body: Option<usize>,
}

impl Frames {
    /// Adds a frame's bytes.
    pub fn push(&mut self, chunk: Bytes) {
        if chunk.len() < SMALL_FRAME {
            self.small.extend_from_slice(&chunk);
            if self.small.len() >= GATHER {
                self.gathered();
            }
        } else {
            self.gathered();
            self.received.push(chunk);
        }
    }

    /// Moves the gathered small frames' bytes into `received`, as one piece.
    fn gathered(&mut self) {
        if !self.small.is_empty() {
            self.received.push(self.small.split().freeze());
        }
    }

    /// Bytes held: of the message being received, after its prefix, and of any after it.
    pub fn buffered_len(&self) -> usize {
        self.received.remaining() + self.small.len()
    }

    /// True when no part of a message is held: the stream ended between messages.
    pub fn is_empty(&self) -> bool {
        self.body.is_none() && self.buffered_len() == 0
    }

    /// The next complete message's bytes (without the prefix), if all of them have arrived.
    ///
    /// After an error the stream cannot be framed any further: the prefix is consumed.
    pub fn next_message(&mut self, max: usize) -> Result<Option<Segments>, FrameError> {
        let len = match self.body {
            Some(len) => len,
            None => {
                if self.buffered_len() < PREFIX {
                    return Ok(None);
                }
                self.gathered();
                if self.received.get_u8() != 0 {
                    return Err(FrameError::Compressed);
                }
                let len = self.received.get_u32() as usize;
                if len > max {
                    return Err(FrameError::TooLarge { len, max });
                }
                self.body = Some(len);
                len
            }
        };
        if self.buffered_len() < len {
            return Ok(None);
        }
        self.gathered();
        self.body = None;
        let message = self.received.split_to(len);
        if self.received.parts.capacity() > KEEP_PIECES && self.received.parts.len() <= KEEP_PIECES
        {
            self.received.parts.shrink_to(KEEP_PIECES);
        }
        Ok(Some(message))
    }

    /// The pieces held, in order (for tests).
    #[cfg(test)]
    pub fn pieces(&self) -> &VecDeque<Bytes> {
        &self.received.parts
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
                // HTTP/2 allows empty DATA frames.
                frames.push(Bytes::new());
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

    /// A message sent as many tiny frames is held as a few pieces, not one per frame, and the
    /// queue of pieces does not stay long after it.
    #[test]
    fn tiny_frames_are_gathered_into_few_pieces() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let wire = framed(&[&body]);
        let mut frames = Frames::default();
        for b in &wire[..wire.len() - 1] {
            frames.push(Bytes::copy_from_slice(std::slice::from_ref(b)));
            assert!(matches!(frames.next_message(1 << 20), Ok(None)));
        }
        assert_eq!(frames.buffered_len(), body.len() - 1);
        assert!(
            frames.pieces().len() <= body.len() / GATHER + 2,
            "{} pieces",
            frames.pieces().len()
        );
        frames.push(Bytes::copy_from_slice(&wire[wire.len() - 1..]));
        let mut got = frames.next_message(1 << 20).expect("valid").expect("whole");
        assert_eq!(got.copy_to_bytes(body.len()), body);
        assert!(frames.is_empty());
    }

    /// The queue of a message of many large frames is released once the message is out.
    #[test]
    fn a_long_queue_is_released_after_its_message() {
        let body = vec![3u8; 100 * SMALL_FRAME];
        let wire = Bytes::from(framed(&[&body]));
        let mut frames = Frames::default();
        for at in (0..wire.len()).step_by(SMALL_FRAME) {
            frames.push(wire.slice(at..(at + SMALL_FRAME).min(wire.len())));
        }
        assert!(frames.pieces().len() > KEEP_PIECES);
        let got = frames.next_message(1 << 20).expect("valid").expect("whole");
        assert_eq!(got.remaining(), body.len());
        assert!(frames.pieces().capacity() <= KEEP_PIECES);
    }

    /// A large frame is held as a slice of the bytes h2 read, not copied.
    #[test]
    fn large_frames_are_held_as_slices() {
        let body = vec![7u8; 3 * SMALL_FRAME];
        let wire = Bytes::from(framed(&[&body]));
        let first = wire.slice(..2 * SMALL_FRAME);
        let mut frames = Frames::default();
        frames.push(first.clone());
        assert!(matches!(frames.next_message(1 << 20), Ok(None)));
        let piece = frames.pieces().front().expect("held");
        assert_eq!(
            piece.as_ptr(),
            first[PREFIX..].as_ptr(),
            "a slice, not a copy"
        );
        frames.push(wire.slice(2 * SMALL_FRAME..));
        let mut got = frames.next_message(1 << 20).expect("valid").expect("whole");
        assert_eq!(got.copy_to_bytes(body.len()), body);
    }

    #[test]
    fn a_message_of_exactly_the_limit_is_accepted() {
        let mut frames = Frames::default();
        frames.push(Bytes::from(framed(&[&[1u8; 64]])));
        let got = frames.next_message(64).expect("valid").expect("whole");
        assert_eq!(got.remaining(), 64);
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
