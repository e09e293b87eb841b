//! The request side of an ADS stream: gRPC messages decoded from the HTTP/2 request body.
//!
//! Written instead of tonic's `Streaming` for memory: tonic keeps one read buffer per stream that
//! grows to the largest request seen and never shrinks, and Envoy's requests are large once —
//! a SotW EDS request or a Delta subscription names every cluster (~47 KB at 1,000 services).
//! Here a request is decoded from the DATA frames that carried it ([`Frames`]): a stream holds
//! only the frames of a request still arriving, and nothing between requests.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::Body;
use tokio_stream::Stream;
use tonic::Status;

use crate::frames::{FrameError, Frames};

/// A stream of decoded requests of type `M` from an HTTP/2 request body.
pub struct Inbound<B, M> {
    body: Pin<Box<B>>,
    frames: Frames,
    max_message: usize,
    done: bool,
    _message: PhantomData<fn() -> M>,
}

impl<B, M> Inbound<B, M> {
    pub fn new(body: B, max_message: usize) -> Self {
        Inbound {
            body: Box::pin(body),
            frames: Frames::default(),
            max_message,
            done: false,
            _message: PhantomData,
        }
    }
}

impl<B, M> Inbound<B, M>
where
    M: prost::Message + Default,
{
    /// The next whole message among the frames received, if there is one.
    fn decode_buffered(&mut self) -> Result<Option<M>, Status> {
        let body = match self.frames.next_message(self.max_message) {
            Ok(Some(body)) => body,
            Ok(None) => return Ok(None),
            Err(e @ FrameError::Compressed) => return Err(Status::unimplemented(e.to_string())),
            Err(FrameError::TooLarge { len, max }) => {
                return Err(Status::resource_exhausted(format!(
                    "request of {len} bytes is larger than the limit of {max} bytes"
                )));
            }
        };
        M::decode(body)
            .map(Some)
            .map_err(|e| Status::internal(format!("undecodable request: {e}")))
    }
}

impl<B, M> Stream for Inbound<B, M>
where
    B: Body,
    B::Error: Into<tonic::codegen::StdError>,
    M: prost::Message + Default,
{
    type Item = Result<M, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // `Inbound` is Unpin: the body is boxed.
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.decode_buffered() {
                Ok(Some(m)) => return Poll::Ready(Some(Ok(m))),
                Ok(None) => {}
                Err(status) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(status)));
                }
            }
            match this.body.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.done = true;
                    if !this.frames.is_empty() {
                        return Poll::Ready(Some(Err(Status::internal(
                            "request stream ended inside a message",
                        ))));
                    }
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    let e: tonic::codegen::StdError = e.into();
                    return Poll::Ready(Some(Err(Status::unavailable(format!(
                        "request stream failed: {e}"
                    )))));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(mut data) = frame.into_data() {
                        // A slice of the frame when the body's data is `Bytes` (hyper's is);
                        // `Frames` copies small frames together.
                        let len = data.remaining();
                        this.frames.push(data.copy_to_bytes(len));
                    }
                    // Trailers from a client carry nothing for us.
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use http_body::Frame;
    use prost::Message;
    use tokio_stream::StreamExt;

    /// A body yielding the given chunks, then ending, or waiting for more that never come.
    struct Chunks {
        chunks: std::collections::VecDeque<Bytes>,
        then_wait: bool,
    }

    impl Chunks {
        fn ending(chunks: impl Into<std::collections::VecDeque<Bytes>>) -> Chunks {
            Chunks {
                chunks: chunks.into(),
                then_wait: false,
            }
        }

        fn waiting(chunks: impl Into<std::collections::VecDeque<Bytes>>) -> Chunks {
            Chunks {
                chunks: chunks.into(),
                then_wait: true,
            }
        }
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            let this = self.get_mut();
            match this.chunks.pop_front() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None if this.then_wait => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    fn framed(m: &DiscoveryRequest) -> Vec<u8> {
        let body = m.encode_to_vec();
        let mut out = vec![0u8];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn request(names: usize) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment".into(),
            resource_names: (0..names)
                .map(|i| format!("outbound|80||svc-{i}.ns.svc.cluster.local"))
                .collect(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn messages_split_across_frames_decode() {
        let (big, small) = (request(1000), request(1));
        let mut bytes = framed(&big);
        bytes.extend(framed(&small));
        // Cut into uneven pieces, one cut inside the second message's header.
        let cut = [3, 16_384, 16_384 + 7, bytes.len() - 4, bytes.len()];
        let mut chunks = std::collections::VecDeque::new();
        let mut from = 0;
        for to in cut {
            chunks.push_back(Bytes::copy_from_slice(&bytes[from..to]));
            from = to;
        }
        let mut inbound: Inbound<_, DiscoveryRequest> =
            Inbound::new(Chunks::ending(chunks), 1 << 20);
        assert_eq!(inbound.next().await.expect("one").expect("ok"), big);
        assert_eq!(inbound.next().await.expect("two").expect("ok"), small);
        assert!(inbound.next().await.is_none());
    }

    /// While a large request arrives, the stream holds the frames that came, as they came: not
    /// a buffer the size of the whole request, nor a copy.
    #[tokio::test]
    async fn a_request_still_arriving_holds_only_its_frames() {
        let big = request(1000);
        let bytes = Bytes::from(framed(&big));
        assert!(bytes.len() > 40_000, "{} bytes", bytes.len());
        let first = bytes.slice(..16_384);
        let mut inbound: Inbound<_, DiscoveryRequest> =
            Inbound::new(Chunks::waiting([first.clone()]), 1 << 20);
        assert!(futures::poll!(std::pin::pin!(inbound.next())).is_pending());
        assert_eq!(
            inbound.frames.buffered_len(),
            16_384 - crate::frames::PREFIX
        );
        let piece = inbound.frames.pieces().front().expect("held");
        assert_eq!(
            piece.as_ptr(),
            first[crate::frames::PREFIX..].as_ptr(),
            "a slice of the frame, not a copy"
        );
        inbound
            .body
            .as_mut()
            .get_mut()
            .chunks
            .push_back(bytes.slice(16_384..));
        assert_eq!(inbound.next().await.expect("one").expect("ok"), big);
        assert_eq!(inbound.frames.buffered_len(), 0);
    }

    #[tokio::test]
    async fn oversized_and_truncated_requests_are_errors() {
        let bytes = framed(&request(100));
        let whole = Bytes::from(bytes.clone());
        let mut inbound: Inbound<_, DiscoveryRequest> = Inbound::new(Chunks::ending([whole]), 100);
        let err = inbound.next().await.expect("item").expect_err("too big");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(inbound.next().await.is_none());

        let cut = Bytes::copy_from_slice(&bytes[..bytes.len() - 1]);
        let mut inbound: Inbound<_, DiscoveryRequest> =
            Inbound::new(Chunks::ending([cut]), 1 << 20);
        let err = inbound.next().await.expect("item").expect_err("truncated");
        assert_eq!(err.code(), tonic::Code::Internal);
    }
}
