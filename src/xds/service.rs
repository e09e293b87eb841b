//! The gRPC service `envoy.service.discovery.v3.AggregatedDiscoveryService`, written out by hand
//! (instead of the generated one in `envoy-types`) so responses can be the pre-encoded
//! [`wire`](super::wire) types: requests decode as Envoy's own messages, responses encode to the
//! same bytes as Envoy's `DiscoveryResponse` / `DeltaDiscoveryResponse`.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use super::delta::DeltaStream;
use super::server::Ads;
use super::sotw::SotwStream;
use super::wire::{DeltaResponse, SotwResponse};

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

/// `StreamAggregatedResources`.
struct Sotw(Arc<Ads>);

impl StreamingService<DiscoveryRequest> for Sotw {
    type Response = SotwResponse;
    type ResponseStream = ReceiverStream<Result<SotwResponse, Status>>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<DiscoveryRequest>>) -> Self::Future {
        let ads = self.0.clone();
        Box::pin(async move { Ok(Response::new(ads.spawn::<SotwStream>(request))) })
    }
}

/// `DeltaAggregatedResources`.
struct Delta(Arc<Ads>);

impl StreamingService<DeltaDiscoveryRequest> for Delta {
    type Response = DeltaResponse;
    type ResponseStream = ReceiverStream<Result<DeltaResponse, Status>>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<DeltaDiscoveryRequest>>) -> Self::Future {
        let ads = self.0.clone();
        Box::pin(async move { Ok(Response::new(ads.spawn::<DeltaStream>(request))) })
    }
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
        let limit = Some(self.max_message);
        match req.uri().path() {
            SOTW_PATH => Box::pin(async move {
                let codec = ProstCodec::<SotwResponse, DiscoveryRequest>::default();
                let mut grpc = Grpc::new(codec).apply_max_message_size_config(limit, limit);
                Ok(grpc.streaming(Sotw(ads), req).await)
            }),
            DELTA_PATH => Box::pin(async move {
                let codec = ProstCodec::<DeltaResponse, DeltaDiscoveryRequest>::default();
                let mut grpc = Grpc::new(codec).apply_max_message_size_config(limit, limit);
                Ok(grpc.streaming(Delta(ads), req).await)
            }),
            _ => Box::pin(async move {
                Ok(Status::unimplemented(
                    "only ADS (StreamAggregatedResources, DeltaAggregatedResources) is served",
                )
                .into_http())
            }),
        }
    }
}
