//! TLS inside a pod (see `pods.rs`): an app that completes a handshake with its own
//! certificate and then names itself, and a client that opens TLS with a chosen SNI, checks the
//! certificate against a root, and reports what the app wrote. Proxies between them that route
//! by SNI never decrypt, so a verified handshake shows the connection reached the app holding
//! that name.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::pods::{Pod, PodApp};

/// How long a TLS client in a pod waits to connect, finish the handshake, or read.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

impl Pod {
    /// A TLS app on the pod IP serving `chain_pem` with `key_pem`: after each handshake it
    /// writes `NAME PEER\n` and closes.
    pub fn start_tls_app(&self, port: u16, name: &str, chain_pem: &str, key_pem: &str) -> PodApp {
        self.start_app_with(
            "tls-app",
            self.ip(),
            port,
            name,
            &[
                ("MESHPILOT_POD_CERT", chain_pem.to_string()),
                ("MESHPILOT_POD_KEY", key_pem.to_string()),
            ],
        )
    }

    /// Opens TLS from inside the pod to `target` with SNI `sni`, verifying the server's
    /// certificate for `sni` against `root_pem`; what the server wrote before closing. An error
    /// when the connection, the handshake or the certificate check fails.
    pub fn tls_read(
        &self,
        target: SocketAddr,
        sni: &str,
        root_pem: &str,
    ) -> Result<String, String> {
        let out = self.run_client(
            "tls-read",
            &[
                ("MESHPILOT_POD_TARGET", target.to_string()),
                ("MESHPILOT_POD_HOST", sni.to_string()),
                ("MESHPILOT_POD_ROOT", root_pem.to_string()),
            ],
        )?;
        serde_json::from_str::<String>(&out).map_err(|e| format!("{e}: {out}"))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn env_addr(name: &str) -> SocketAddr {
    env(name)
        .parse()
        .unwrap_or_else(|e| panic!("{name}: not IP:PORT: {e}"))
}

/// Serves the TLS app role until killed.
async fn tls_app(addr: SocketAddr, name: String, mark_ready: &dyn Fn()) {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(env("MESHPILOT_POD_CERT").as_bytes())
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("tls app: certificate chain: {e}"));
    let key = PrivateKeyDer::from_pem_slice(env("MESHPILOT_POD_KEY").as_bytes())
        .unwrap_or_else(|e| panic!("tls app: key: {e}"));
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .unwrap_or_else(|e| panic!("tls app: server config: {e}"));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("tls app: bind {addr}: {e}"));
    mark_ready();
    while let Ok((conn, peer)) = listener.accept().await {
        let (acceptor, name) = (acceptor.clone(), name.clone());
        tokio::spawn(async move {
            if let Ok(mut tls) = acceptor.accept(conn).await {
                let _ = tls.write_all(format!("{name} {peer}\n").as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        });
    }
}

/// The TLS client role: see [`Pod::tls_read`].
async fn tls_read(target: SocketAddr, sni: &str, root_pem: &str) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        let c = c.map_err(|e| format!("root: {e}"))?;
        roots.add(c).map_err(|e| format!("root: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::time::timeout(CLIENT_TIMEOUT, tokio::net::TcpStream::connect(target))
        .await
        .map_err(|_| format!("connect {target}: timed out"))?
        .map_err(|e| format!("connect {target}: {e}"))?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let handshake = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp);
    let mut tls = tokio::time::timeout(CLIENT_TIMEOUT, handshake)
        .await
        .map_err(|_| format!("TLS to {target} as {sni}: handshake timed out"))?
        .map_err(|e| format!("TLS to {target} as {sni}: {e}"))?;
    let mut text = String::new();
    // The app may close without close_notify; what arrived before counts.
    let _ = tokio::time::timeout(CLIENT_TIMEOUT, tls.read_to_string(&mut text)).await;
    Ok(text)
}

/// Runs `role` if it is one of this module's; false otherwise. `mark_ready` tells the test an
/// app listens.
pub(super) fn run(role: &str, mark_ready: &dyn Fn()) -> bool {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"))
    };
    match role {
        "tls-app" => {
            let addr = env_addr("MESHPILOT_POD_ADDR");
            runtime().block_on(tls_app(addr, env("MESHPILOT_POD_NAME"), mark_ready));
        }
        "tls-read" => {
            let got = runtime().block_on(tls_read(
                env_addr("MESHPILOT_POD_TARGET"),
                &env("MESHPILOT_POD_HOST"),
                &env("MESHPILOT_POD_ROOT"),
            ));
            match got {
                Ok(text) => println!("POD-RESULT {}", Value::from(text)),
                Err(e) => println!("POD-ERROR {e}"),
            }
        }
        _ => return false,
    }
    true
}
