//! `meshpilot agent`: what Istio's pilot-agent does for Envoy that matters to the mesh, so a stock
//! Envoy gets a workload identity. It keeps a certificate for the pod's service account from the
//! control plane's CA ([`certs`]), serves it and the mesh root to Envoy over SDS on a Unix socket
//! ([`sds`]), and proxies Envoy's ADS from another Unix socket to the secure port with the pod's
//! token ([`proxy`]). Socket paths, secret names and the CA protocol are Istio's, so Envoy's
//! bootstrap looks as an istio-proxy's does.

pub mod certs;
pub mod proxy;
pub mod sds;
pub mod tls;

use std::path::{Path, PathBuf};
use std::time::Duration;

use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryServiceServer;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use certs::{Credentials, RenewalPolicy, Workload};

/// Istio's socket paths, relative to the proxy's working directory.
pub const XDS_SOCKET: &str = "./etc/istio/proxy/XDS";
pub const SDS_SOCKET: &str = "./var/run/secrets/workload-spiffe-uds/socket";

/// Why the agent could not start or could not get a certificate.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("root certificate: {0}")]
    Root(String),
    #[error("--server-name {0:?}: {1}")]
    ServerName(String, String),
    #[error("token file {path}: {message}")]
    Token { path: String, message: String },
    #[error("certificate signing request: {0}")]
    Csr(String),
    #[error("CA: {0}")]
    Ca(String),
    #[error("socket {path}: {message}")]
    Socket { path: String, message: String },
}

/// What the agent runs with.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The control plane's secure port, `HOST:PORT` (CA and ADS).
    pub address: String,
    /// The name its certificate must carry.
    pub server_name: String,
    pub root_cert: PathBuf,
    pub token_file: PathBuf,
    pub workload: Workload,
    pub cert_ttl: Duration,
    /// When the certificate is renewed.
    pub renewal: RenewalPolicy,
    pub xds_socket: PathBuf,
    pub sds_socket: PathBuf,
}

fn bind(path: &Path) -> Result<UnixListener, AgentError> {
    let err = |message: String| AgentError::Socket {
        path: path.display().to_string(),
        message,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    // A socket left by an earlier run would refuse the bind.
    if path.exists() {
        std::fs::remove_file(path).map_err(|e| err(e.to_string()))?;
    }
    UnixListener::bind(path).map_err(|e| err(e.to_string()))
}

/// Runs the agent until `shutdown`. Fails at once when the root or sockets are unusable; a CA
/// that cannot be reached is retried.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let root = std::fs::read_to_string(&config.root_cert)
        .map_err(|e| AgentError::Root(format!("{}: {e}", config.root_cert.display())))?;
    let upstream = tls::Upstream::new(&config.address, &config.server_name, &root)?;
    let xds = bind(&config.xds_socket)?;
    let sds = bind(&config.sds_socket)?;
    let (tx, rx) = watch::channel(None);
    info!(
        identity = %config.workload.spiffe_id(),
        control_plane = %config.address,
        xds = %config.xds_socket.display(),
        sds = %config.sds_socket.display(),
        "agent started"
    );
    let certs = certs::keep_fresh(
        upstream.clone(),
        config.workload.clone(),
        config.token_file.clone(),
        config.cert_ttl,
        config.renewal,
        tx,
        shutdown.clone(),
    );
    let ads = proxy::serve(xds, upstream, config.token_file.clone(), shutdown.clone());
    let sds_server = tonic::transport::Server::builder()
        .add_service(SecretDiscoveryServiceServer::new(sds::SecretServer::new(
            rx,
        )))
        .serve_with_incoming_shutdown(UnixListenerStream::new(sds), shutdown.cancelled_owned());
    let (_, _, sds_result) = tokio::join!(certs, ads, sds_server);
    sds_result.map_err(|e| AgentError::Socket {
        path: config.sds_socket.display().to_string(),
        message: e.to_string(),
    })
}
