//! Istio's resource names, so existing tooling and habits apply.

/// `outbound|PORT|SUBSET|HOST` (subset empty for the whole service).
pub fn outbound_cluster(port: u16, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

/// Route configuration of a sidecar's outbound HTTP listener on `port`: the port number.
pub fn sidecar_route(port: u16) -> String {
    port.to_string()
}

/// Route configuration of a gateway's HTTP server on `port`.
pub fn gateway_route(port: u16) -> String {
    format!("http.{port}")
}

/// Listener name: `ADDRESS_PORT` (`0.0.0.0_80`, or the proxy's IP without interception).
pub fn listener(address: &str, port: u16) -> String {
    format!("{address}_{port}")
}

/// Istio's catch-all clusters.
pub const BLACKHOLE: &str = "BlackHoleCluster";
pub const PASSTHROUGH: &str = "PassthroughCluster";
pub const VIRTUAL_OUTBOUND: &str = "virtualOutbound";
