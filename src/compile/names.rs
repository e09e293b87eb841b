//! Istio's resource names, so existing tooling and habits apply.

use std::sync::Arc;

use crate::index::{Named, ServiceInfo};
use crate::model::DestinationRule;

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

/// The names of a service's clusters, which are also those of their assignments: per port, the
/// port's own ([`outbound_cluster`] with no subset), then one per subset of `dr`. Each is one
/// allocation, to be shared by both resources and their sets' keys.
pub fn service_clusters(svc: &ServiceInfo, dr: Option<&Named<DestinationRule>>) -> Vec<Arc<str>> {
    let subsets = dr.map_or(&[][..], |d| d.spec.subsets.as_slice());
    let mut names = Vec::with_capacity(svc.ports.len() * (1 + subsets.len()));
    let longest = subsets.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let mut buf = String::with_capacity("outbound|65535||".len() + longest + svc.hostname.len());
    for port in &svc.ports {
        let mut port_buf = itoa::Buffer::new();
        let port_text = port_buf.format(port.port);
        let subset_names = std::iter::once("").chain(subsets.iter().map(|s| s.name.as_str()));
        for subset in subset_names {
            buf.clear();
            for part in ["outbound|", port_text, "|", subset, "|", &svc.hostname] {
                buf.push_str(part);
            }
            names.push(Arc::from(buf.as_str()));
        }
    }
    names
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
