//! The agent's connection to the control plane's secure port: TLS, trusting the mesh root, the
//! server checked for the name Istio's agents check (`istiod.istio-system.svc`).

use std::io;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::AgentError;

/// Where and how to reach the secure port.
#[derive(Clone)]
pub struct Upstream {
    address: String,
    server_name: ServerName<'static>,
    connector: TlsConnector,
}

impl Upstream {
    /// `address` is `HOST:PORT`; `root_pem` the mesh's root certificate(s).
    pub fn new(address: &str, server_name: &str, root_pem: &str) -> Result<Upstream, AgentError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
            let cert = cert.map_err(|e| AgentError::Root(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| AgentError::Root(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(AgentError::Root("no certificate".to_string()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| AgentError::Root(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| AgentError::ServerName(server_name.to_string(), e.to_string()))?;
        Ok(Upstream {
            address: address.to_string(),
            server_name,
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// The name the server's certificate must carry (also the `:authority` sent).
    pub fn server_name(&self) -> String {
        self.server_name.to_str().into_owned()
    }

    /// A new TLS connection.
    pub async fn connect(&self) -> io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(&self.address).await?;
        tcp.set_nodelay(true)?;
        self.connector.connect(self.server_name.clone(), tcp).await
    }
}
