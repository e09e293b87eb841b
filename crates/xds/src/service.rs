//! The gRPC service `envoy.service.discovery.v3.AggregatedDiscoveryService`, written out by hand
//! (instead of the generated one in `envoy-types`): requests decode as Envoy's own messages
//! ([`Inbound`], straight from the DATA frames that carried them); responses are written as gRPC
//! frames straight from the [`wire`](super::wire) types' bytes. A full configuration is thus never
//! copied per stream — tonic's encoder would copy each message into a per-stream buffer that then
//! stays as large as the largest message for the life of the stream (about 1 MB per proxy for a
//! 1,000-service mesh) — the shared `resources` bytes go to HTTP/2 as they are. (Below HTTP/2, a
//! large response's frames pass through a short-lived pooled buffer on their way to the socket, to
//! be written in fewer, larger writes: see `coalesce`.)

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use std::collections::VecDeque;
use std::pin::Pin;

use bytes::Bytes;
use futures::task::AtomicWaker;
use http_body::Frame;
use meshpilot_transport::tls::TlsConnectInfo;
use tokio_stream::Stream;
use tonic::Status;
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::NamedService;
use tonic::transport::server::TcpConnectInfo;
use tracing::{Span, field, info_span};

use super::delta::DeltaStream;
use super::protocol::Protocol;
use super::server::Ads;
use super::sotw::SotwStream;
use super::wire::Framed;
use meshpilot_transport::inbound::Inbound;

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// The ADS gRPC service around [`Ads`].
#[derive(Clone)]
pub(crate) struct AdsService {
    ads: Arc<Ads>,
    max_message: usize,
}

impl AdsService {
    pub(crate) fn new(ads: Ads, max_message: usize) -> AdsService {
        AdsService {
            ads: Arc::new(ads),
            max_message,
        }
    }
}

impl NamedService for AdsService {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

/// The response body of one stream: each message's frames in order, then the gRPC trailers
/// (`grpc-status: 0` when the stream ends, or the error the stream ended with).
struct GrpcBody<R> {
    /// The stream's responses; `None` once it has ended.
    responses: Option<Responses<R>>,
    pending: VecDeque<Bytes>,
    /// The stream's span, entered whenever its work runs (it runs within `poll_frame`).
    span: Span,
    /// Whether the stream's work has been woken since it last ran, and the waker it runs with.
    woken: Arc<Woken>,
    waker: Waker,
}

/// The waker of a stream's work. hyper polls the body each time HTTP/2 grants it send capacity,
/// many times while a large response goes out; the work — which polls the proxy's requests,
/// the class snapshot, the shutdown signal and a timer — runs only when one of those woke it.
struct Woken {
    flag: AtomicBool,
    /// The task polling the body.
    task: AtomicWaker,
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.flag.store(true, Ordering::Release);
        self.task.wake();
    }
}

type Responses<R> = Pin<Box<dyn Stream<Item = Result<R, Status>> + Send>>;

impl<R> Drop for GrpcBody<R> {
    fn drop(&mut self) {
        self.end();
    }
}

impl<R: Framed> http_body::Body for GrpcBody<R> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        loop {
            if let Some(b) = this.pending.pop_front() {
                if b.is_empty() {
                    continue;
                }
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            let Some(responses) = this.responses.as_mut() else {
                return Poll::Ready(None);
            };
            // Registered before the flag is read, so a wake in between is not lost.
            this.woken.task.register(cx.waker());
            if !this.woken.flag.swap(false, Ordering::AcqRel) {
                return Poll::Pending;
            }
            let polled = {
                let _entered = this.span.enter();
                responses
                    .as_mut()
                    .poll_next(&mut Context::from_waker(&this.waker))
            };
            match polled {
                Poll::Ready(Some(Ok(msg))) => {
                    // A stream that has just handed on a response may have more ready: it is
                    // polled again without waiting for a wake.
                    this.woken.flag.store(true, Ordering::Relaxed);
                    this.pending.extend(msg.frames());
                }
                Poll::Ready(Some(Err(status))) => {
                    this.end();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))));
                }
                Poll::Ready(None) => {
                    this.end();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers(&Status::ok(""))))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<R> GrpcBody<R> {
    /// Drops the stream's state — its registration, its disconnect log — within its span: when
    /// it has ended, before the trailers go out, or when hyper drops the body.
    fn end(&mut self) {
        let _entered = self.span.enter();
        self.responses = None;
    }
}

fn trailers(status: &Status) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        map.insert(Status::GRPC_STATUS, (tonic::Code::Internal as i32).into());
    }
    map
}

/// Decodes the request stream and answers with the frames of its responses, made as they are
/// asked for.
fn respond<P: Protocol, B>(
    ads: &Ads,
    req: http::Request<B>,
    max_message: usize,
) -> http::Response<tonic::body::Body>
where
    P::Response: Framed,
    P::Request: prost::Message + Default,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    // Plaintext connections carry TCP's connect info, TLS ones (the secure port) TLS's.
    let tls = req.extensions().get::<TlsConnectInfo>();
    let peer = req
        .extensions()
        .get::<TcpConnectInfo>()
        .or(tls.map(|t| &t.tcp))
        .and_then(|i| i.remote_addr());
    let credentials = ads.auth.as_ref().map(|auth| {
        let header = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let certificate = tls.and_then(|t| t.client_certificate.clone());
        (auth.clone(), header, certificate)
    });
    let inbound = Inbound::<B, P::Request>::new(req.into_body(), max_message);
    let span = info_span!("xds_stream", variant = ?P::VARIANT, peer = ?peer, node = field::Empty);
    let woken = Arc::new(Woken {
        flag: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    let body = GrpcBody {
        responses: Some(Box::pin(ads.stream::<P>(inbound, peer, credentials))),
        pending: VecDeque::new(),
        span,
        waker: Waker::from(woken.clone()),
        woken,
    };
    let mut resp = http::Response::new(tonic::body::Body::new(body));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    resp
}

impl<B> Service<http::Request<B>> for AdsService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let ads = self.ads.clone();
        let max = self.max_message;
        match req.uri().path() {
            SOTW_PATH => Box::pin(async move { Ok(respond::<SotwStream, B>(&ads, req, max)) }),
            DELTA_PATH => Box::pin(async move { Ok(respond::<DeltaStream, B>(&ads, req, max)) }),
            _ => Box::pin(async move {
                Ok(Status::unimplemented(
                    "only ADS (StreamAggregatedResources, DeltaAggregatedResources) is served",
                )
                .into_http())
            }),
        }
    }
}
