//! A control plane with its CA: `serve --ca-dir` with a JWKS of a test token issuer, the
//! secure port on its own loopback address.

use std::net::SocketAddr;
use std::path::Path;

use super::Meshpilot;

pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
pub const KID: &str = "sa-key-1";

/// `serve` with the CA; the secure port on a free loopback address (returned), plus `extra`.
pub fn serve_with_ca(
    config: &Path,
    ca_dir: &Path,
    jwks: &Path,
    extra: &[&str],
) -> (Meshpilot, SocketAddr) {
    let secure = super::admin_addr();
    let mut args = vec![
        "--ca-dir".to_string(),
        ca_dir.display().to_string(),
        "--jwks-file".to_string(),
        jwks.display().to_string(),
        "--token-issuer".to_string(),
        ISSUER.to_string(),
        "--secure-xds-address".to_string(),
        secure.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Meshpilot::spawn(&[config], &args), secure)
}
