//! Istio's resource names, so existing tooling and habits apply.

use std::sync::Arc;

use meshpilot_index::{Named, ServiceInfo};
use meshpilot_model::{DestinationRule, Subset};

/// `outbound|PORT|SUBSET|HOST` (subset empty for the whole service).
pub fn outbound_cluster(port: u16, subset: &str, host: &str) -> String {
    let mut name = String::with_capacity(OUTBOUND_PARTS_LEN + subset.len() + host.len());
    push_outbound_cluster(&mut name, port, subset, host);
    name
}

/// The host and port an [`outbound_cluster`] name was made from; `None` for any other name.
pub(crate) fn outbound_host_port(cluster: &str) -> Option<(&str, u16)> {
    let mut parts = cluster.splitn(4, '|');
    if parts.next()? != "outbound" {
        return None;
    }
    let port = parts.next()?.parse().ok()?;
    let _subset = parts.next()?;
    Some((parts.next()?, port))
}

/// The longest `outbound_cluster` name less its subset and host.
const OUTBOUND_PARTS_LEN: usize = "outbound|65535||".len();

fn push_outbound_cluster(buf: &mut String, port: u16, subset: &str, host: &str) {
    for part in [
        "outbound|",
        itoa::Buffer::new().format(port),
        "|",
        subset,
        "|",
        host,
    ] {
        buf.push_str(part);
    }
}

/// One cluster of a service (and its assignment, of the same name).
pub struct ServiceCluster<'a> {
    pub port: u16,
    /// The DestinationRule subset, or `None` for the port's own cluster.
    pub subset: Option<&'a Subset>,
    /// [`outbound_cluster`]'s name, one allocation shared by both resources and their sets'
    /// keys.
    pub name: Arc<str>,
}

impl ServiceCluster<'_> {
    /// The subset's name, empty for the port's own cluster.
    pub fn subset_name(&self) -> &str {
        self.subset.map_or("", |s| s.name.as_str())
    }
}

/// A service's clusters, which are also its assignments: per port, the port's own, then one per
/// subset of `dr`.
pub fn service_clusters<'a>(
    svc: &ServiceInfo,
    dr: Option<&'a Named<DestinationRule>>,
) -> Vec<ServiceCluster<'a>> {
    let subsets = dr.map_or(&[][..], |d| d.spec.subsets.as_slice());
    let mut out = Vec::with_capacity(svc.ports.len() * (1 + subsets.len()));
    let longest = subsets.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let mut buf = String::with_capacity(OUTBOUND_PARTS_LEN + longest + svc.hostname.len());
    for port in &svc.ports {
        for subset in std::iter::once(None).chain(subsets.iter().map(Some)) {
            buf.clear();
            let subset_name = subset.map_or("", |s| s.name.as_str());
            push_outbound_cluster(&mut buf, port.port, subset_name, &svc.hostname);
            out.push(ServiceCluster {
                port: port.port,
                subset,
                name: Arc::from(buf.as_str()),
            });
        }
    }
    out
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
/// The inbound capture listener on 15006, and its passthrough chain.
pub const VIRTUAL_INBOUND: &str = "virtualInbound";
pub const VIRTUAL_INBOUND_CATCHALL_HTTP: &str = "virtualInbound-catchall-http";
pub const VIRTUAL_INBOUND_BLACKHOLE: &str = "virtualInbound-blackhole";
/// Where inbound connections to a port no Service declares go.
pub const INBOUND_PASSTHROUGH: &str = "InboundPassthroughCluster";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_outbound_service_clusters_name_a_service_port() {
        assert_eq!(
            outbound_host_port("outbound|9080|v1|reviews.default.svc.cluster.local"),
            Some(("reviews.default.svc.cluster.local", 9080))
        );
        assert_eq!(outbound_host_port("outbound|80||a.b"), Some(("a.b", 80)));
        assert_eq!(outbound_host_port("PassthroughCluster"), None);
        assert_eq!(outbound_host_port("inbound|8080||"), None);
    }

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
