//! Shared support for black-box tests: the `meshpilot serve` binary, real Envoys on distinct
//! loopback addresses, tiny HTTP backends, an HTTP client that measures traffic splits,
//! config_dump readers, manifest writers, a stand-in Kubernetes API server, and bounded waits.
//!
//! Use it from a test file with `mod support;` then e.g.
//!
//! ```text
//! let _bin = support::require_envoy!();           // SKIP locally, fail under CI=true
//! let ip = support::loopback_ip();
//! let v1 = support::Backend::start(ip, 0, "v1");
//! let envoy = support::Envoy::start(bootstrap_json, support::admin_addr()).await;
//! let dist = support::distribution(listener_addr, "host", "/", &[], 1000).await;
//! support::assert_share(&dist, "v1", 80.0);
//! envoy.assert_all_acked().await;
//! ```
//!
//! Each test binary uses only part of this module, hence `allow(dead_code)`.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod backend;
pub mod client;
pub mod dump;
pub mod envoy;
pub mod kubeapi;
pub mod manifests;
pub mod mesh_ca;
pub mod mesh_client;
pub mod net;
pub mod pod_agent;
mod pod_roles;
mod pod_tls;
pub mod pods;
mod process;
pub mod rng;
pub mod server;
pub mod sidecar;
pub mod wait;

use std::net::{IpAddr, SocketAddr};

pub use backend::{Backend, SeenRequest};
pub use client::{Conn, Response, assert_only, assert_share, distribution, get, outcome, try_get};
pub(crate) use envoy::require_envoy;
pub use envoy::{Envoy, READY_TIMEOUT, envoy_bin, validate};
pub use manifests::{
    copy_scenario_files, pod_yaml, remove_manifest, scenario_dir, scenario_file, write_manifests,
};
pub use net::{admin_addr, free_addr, free_port, loopback_ip};
pub use server::Meshpilot;
pub use wait::{eventually, eventually_status, wait_until};

use meshpilot::config::{BootstrapArgs, InterceptionArg};

/// An Istio node id: `KIND~IP~POD.NS~NS.svc.cluster.local` (`kind`: `sidecar` or `router`).
pub fn node_id(kind: &str, ip: IpAddr, pod: &str, namespace: &str) -> String {
    format!("{kind}~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local")
}

/// Bootstrap flags for a test proxy: interception `NONE` (its listeners bind its own loopback
/// IP, so many Envoys share the host), no labels, SotW. Adjust fields before rendering.
pub fn bootstrap_args(node_id: &str, xds: SocketAddr, admin: SocketAddr) -> BootstrapArgs {
    BootstrapArgs {
        node_id: node_id.to_string(),
        labels: Vec::new(),
        namespace: None,
        interception: InterceptionArg::None,
        locality: None,
        xds_address: xds.to_string(),
        admin_address: admin,
        delta: false,
        xds_root_cert: None,
        xds_server_name: "istiod.istio-system.svc".to_string(),
        xds_token_file: None,
        via_agent: false,
        agent_xds_socket: meshpilot_agent::XDS_SOCKET.into(),
        agent_sds_socket: meshpilot_agent::SDS_SOCKET.into(),
    }
}

/// An ingress gateway Envoy (`router` node in `istio-system`, labels `istio: ingressgateway`,
/// its own loopback IP) connected to `server`, once its port-80 listener is active; with the
/// address of that listener.
pub async fn ingress_gateway(
    server: &Meshpilot,
    timeout: std::time::Duration,
) -> (Envoy, std::net::SocketAddr) {
    let ip = loopback_ip();
    let admin = admin_addr();
    let mut args = bootstrap_args(
        &node_id("router", ip, "ingress", "istio-system"),
        server.xds(),
        admin,
    );
    args.labels = vec![("istio".to_string(), "ingressgateway".to_string())];
    let envoy = Envoy::start(render_bootstrap(&args), admin).await;
    envoy.wait_for_listener(&format!("{ip}_80"), timeout).await;
    (envoy, std::net::SocketAddr::new(ip, 80))
}

/// Renders a bootstrap with [`meshpilot::bootstrap::render`], panicking on error.
pub fn render_bootstrap(args: &BootstrapArgs) -> serde_json::Value {
    meshpilot::bootstrap::render(args).unwrap_or_else(|e| panic!("bootstrap: {e}"))
}

/// Standard base64, decoded (PEM bodies in tests; no dependency for it).
pub fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        acc = (acc << 6) | u32::from(val(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
