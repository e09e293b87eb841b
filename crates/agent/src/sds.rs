//! SDS for the local Envoy, as Istio's agent serves it on its Unix socket: state of the world
//! only (`StreamSecrets`), two names — `default` (the workload's certificate and key) and
//! `ROOTCA` (the mesh root to validate peers) — and a new response on each renewal.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryService;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use crate::certs::Credentials;

pub const DEFAULT: &str = "default";
pub const ROOTCA: &str = "ROOTCA";
const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The SDS service over the agent's current credentials.
pub struct SecretServer {
    credentials: watch::Receiver<Option<Arc<Credentials>>>,
}

impl SecretServer {
    pub fn new(credentials: watch::Receiver<Option<Arc<Credentials>>>) -> SecretServer {
        SecretServer { credentials }
    }
}

fn inline(pem: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(Specifier::InlineBytes(pem.as_bytes().to_vec())),
        ..DataSource::default()
    })
}

/// The secret `name` from `c`.
pub fn secret(name: &str, c: &Credentials) -> Option<Secret> {
    let kind = match name {
        DEFAULT => secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(&c.chain_pem),
            private_key: inline(&c.key_pem),
            ..TlsCertificate::default()
        }),
        ROOTCA => secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: inline(&c.root_pem),
            ..CertificateValidationContext::default()
        }),
        _ => return None,
    };
    Some(Secret {
        name: name.to_string(),
        r#type: Some(kind),
    })
}

fn response(names: &BTreeSet<String>, c: &Credentials, nonce: u64) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: c.version.clone(),
        resources: names
            .iter()
            .filter_map(|n| secret(n, c))
            .map(|s| Any {
                type_url: SECRET_TYPE.to_string(),
                value: s.encode_to_vec(),
            })
            .collect(),
        type_url: SECRET_TYPE.to_string(),
        nonce: nonce.to_string(),
        ..DiscoveryResponse::default()
    }
}

type Responses<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl SecretDiscoveryService for SecretServer {
    type DeltaSecretsStream =
        Responses<envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse>;
    type StreamSecretsStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn delta_secrets(
        &self,
        _request: Request<
            Streaming<envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest>,
        >,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented(
            "SDS is state of the world only (api_type: GRPC), as Istio's agent serves it",
        ))
    }

    async fn fetch_secrets(
        &self,
        _request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(Status::unimplemented("use StreamSecrets"))
    }

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let mut inbound = request.into_inner();
        let mut credentials = self.credentials.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut names: BTreeSet<String> = BTreeSet::new();
            let mut sent_version: Option<String> = None;
            let mut nonce = 0u64;
            loop {
                tokio::select! {
                    req = inbound.message() => {
                        let req = match req {
                            Ok(Some(r)) => r,
                            _ => return,
                        };
                        let asked: BTreeSet<String> = req.resource_names.into_iter().collect();
                        if let Some(bad) = asked.iter().find(|n| *n != DEFAULT && *n != ROOTCA) {
                            let _ = tx
                                .send(Err(Status::not_found(format!(
                                    "no secret {bad:?}: the agent serves {DEFAULT:?} and {ROOTCA:?}"
                                ))))
                                .await;
                            return;
                        }
                        if asked == names && sent_version.is_some() {
                            continue; // an ACK (or NACK) of what was sent
                        }
                        names = asked;
                        sent_version = None;
                    }
                    changed = credentials.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
                let current = credentials.borrow().clone();
                let Some(c) = current else {
                    continue; // answered once the first certificate arrives
                };
                if names.is_empty() || sent_version.as_deref() == Some(c.version.as_str()) {
                    continue;
                }
                nonce += 1;
                debug!(?names, version = %c.version, "sending secrets");
                if tx.send(Ok(response(&names, &c, nonce))).await.is_err() {
                    return;
                }
                sent_version = Some(c.version.clone());
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
