//! A client of Istio mutual TLS from the host: presents a workload certificate (or none),
//! offers the ALPN an istio-proxy offers for HTTP/1.1, and reports the server's SPIFFE ids and
//! what came back, so a test sees who answered and whether its own certificate was taken.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// How long the client waits for the handshake or the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts any server certificate: the client under test is refused for what it lacks (its
/// own certificate), not for what it checks.
#[derive(Debug)]
pub struct AcceptAnyServer(pub std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A workload certificate chain and its key, as PEM.
pub struct Identity<'a> {
    pub chain_pem: &'a str,
    pub key_pem: &'a str,
}

/// What one request over mutual TLS saw: the server certificate's URI SANs and the raw
/// HTTP answer.
pub struct MtlsAnswer {
    pub server_sans: Vec<String>,
    pub response: String,
}

/// `GET / Host: host` over TLS to `addr` with SNI `host`, presenting `identity` when given;
/// any server certificate is accepted (its SANs are reported). `Err` when the handshake or
/// the exchange fails.
pub async fn mtls_get(
    addr: SocketAddr,
    host: &str,
    identity: Option<&Identity<'_>>,
) -> Result<MtlsAnswer, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)));
    let mut config = match identity {
        Some(id) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(id.chain_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("chain: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes())
                .map_err(|e| format!("key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = [&b"istio-http/1.1"[..], b"istio", b"http/1.1"]
        .iter()
        .map(|p| p.to_vec())
        .collect();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let exchange = async {
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let server_sans = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|der| super::mesh_ca::spiffe_sans_der(der.as_ref()))
            .unwrap_or_default();
        let request = format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok(MtlsAnswer {
            server_sans,
            response: String::from_utf8_lossy(&answer).into_owned(),
        })
    };
    tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .map_err(|_| "timed out".to_string())?
}
