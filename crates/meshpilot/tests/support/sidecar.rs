//! A sidecar Envoy on its own loopback address (no interception), as the routing tests start
//! it, and a one-request probe that says who answered.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Conn, Envoy};

/// How long a sidecar's first listener may take to arrive.
const LISTENER_WAIT: Duration = Duration::from_secs(10);

/// A sidecar `client` in namespace `ns` (label `app: client`) connected to the server at
/// `xds`, once its outbound listener on port 80 is there; with the address to send requests to.
pub async fn client_sidecar(xds: SocketAddr, ns: &str) -> (Envoy, SocketAddr) {
    let ip = super::loopback_ip();
    let admin = super::admin_addr();
    let mut args = super::bootstrap_args(&super::node_id("sidecar", ip, "client", ns), xds, admin);
    args.labels = vec![("app".to_string(), "client".to_string())];
    let envoy = Envoy::start(super::render_bootstrap(&args), admin).await;
    envoy
        .wait_for_listener(&format!("{ip}_80"), LISTENER_WAIT)
        .await;
    (envoy, SocketAddr::new(ip, 80))
}

/// One `GET /` for `host` through `addr`: the status and the backend that answered (its
/// `x-backend` header, empty when none did).
pub async fn status_and_backend(addr: SocketAddr, host: &str) -> (u16, String) {
    let mut conn = Conn::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let r = conn
        .request("GET", host, "/", &[])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let served_by = r.header("x-backend").unwrap_or_default().to_string();
    (r.status, served_by)
}
