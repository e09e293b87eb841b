//! Istio's resource names, so existing tooling and habits apply.

/// `outbound|PORT|SUBSET|HOST` (subset empty for the whole service).
pub fn outbound_cluster(port: u16, subset: &str, host: &str) -> String {
    [
        "outbound|",
        itoa::Buffer::new().format(port),
        "|",
        subset,
        "|",
        host,
    ]
    .concat()
}

/// Route configuration of a sidecar's outbound HTTP listener on `port`: the port number.
pub fn sidecar_route(port: u16) -> String {
    port.to_string()
}

/// Route configuration of a gateway's HTTP server on `port`.
pub fn gateway_route(port: u16) -> String {
    ["http.", itoa::Buffer::new().format(port)].concat()
}

/// Listener name: `ADDRESS_PORT` (`0.0.0.0_80`, or the proxy's IP without interception).
pub fn listener(address: &str, port: u16) -> String {
    [address, "_", itoa::Buffer::new().format(port)].concat()
}

/// `HOST:PORT`, the name of a virtual host.
pub fn host_port(host: &str, port: u16) -> String {
    [host, ":", itoa::Buffer::new().format(port)].concat()
}

/// Istio's catch-all clusters.
pub const BLACKHOLE: &str = "BlackHoleCluster";
pub const PASSTHROUGH: &str = "PassthroughCluster";
pub const VIRTUAL_OUTBOUND: &str = "virtualOutbound";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_istios() {
        assert_eq!(
            outbound_cluster(9080, "", "reviews.default.svc.cluster.local"),
            "outbound|9080||reviews.default.svc.cluster.local"
        );
        assert_eq!(
            outbound_cluster(80, "v2", "a.b.svc.cluster.local"),
            "outbound|80|v2|a.b.svc.cluster.local"
        );
        assert_eq!(gateway_route(8443), "http.8443");
        assert_eq!(listener("0.0.0.0", 65535), "0.0.0.0_65535");
        assert_eq!(host_port("x.example.com", 0), "x.example.com:0");
        assert_eq!(sidecar_route(80), "80");
    }
}
