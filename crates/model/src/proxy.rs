//! Who is connecting: Istio's node id (`TYPE~IP~POD.NS~NS.svc.cluster.local`) plus the node
//! metadata we read (`LABELS`, `NAMESPACE`, `INTERCEPTION_MODE`, `POD_PORTS`), and the *class
//! key* that decides which proxies can share one compiled snapshot.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use super::Labels;

/// Sidecar or gateway (Istio calls a gateway proxy a `router`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum ProxyKind {
    Sidecar,
    Router,
}

impl ProxyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyKind::Sidecar => "sidecar",
            ProxyKind::Router => "router",
        }
    }
}

/// How traffic reaches the proxy: iptables redirection (Istio's default), or none, in which case
/// every listener binds the proxy's own IP so many Envoys can share one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Interception {
    Redirect,
    None,
}

impl Interception {
    /// Parses the `INTERCEPTION_MODE` metadata value (`REDIRECT`, `TPROXY`, `NONE`), any case.
    pub fn parse(s: &str) -> Option<Interception> {
        match s.to_ascii_uppercase().as_str() {
            "REDIRECT" | "TPROXY" => Some(Interception::Redirect),
            "NONE" => Some(Interception::None),
            _ => None,
        }
    }
}

/// Why a node id or its metadata could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyParseError {
    /// The id does not have the four `~`-separated parts.
    #[error("node id {0:?} is not TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.DOMAIN")]
    Shape(String),
    /// The first part is neither `sidecar` nor `router`.
    #[error("node id {0:?}: type {1:?} is neither 'sidecar' nor 'router'")]
    Type(String, String),
    /// The second part is not an IP address.
    #[error("node id {0:?}: {1:?} is not an IP address")]
    Ip(String, String),
    /// `INTERCEPTION_MODE` has a value we do not know.
    #[error("node {0:?}: INTERCEPTION_MODE {1:?} is not REDIRECT, TPROXY or NONE")]
    Interception(String, String),
}

/// A connected proxy as compile sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Proxy {
    /// The whole node id, as Envoy sent it.
    pub node_id: String,
    pub kind: ProxyKind,
    pub ip: IpAddr,
    /// `POD.NAMESPACE`.
    pub id: String,
    pub namespace: String,
    /// The DNS domain part of the node id (`NS.svc.cluster.local`).
    pub dns_domain: String,
    pub labels: Labels,
    pub interception: Interception,
    /// The pod's container ports by name (`POD_PORTS` metadata, a JSON list of Kubernetes
    /// container ports), through which a Service's named `targetPort` resolves for inbound.
    pub pod_ports: BTreeMap<String, u16>,
    /// True when an agent beside the proxy serves it the workload certificate and mesh root
    /// over SDS (`default`, `ROOTCA` on the `sds-grpc` cluster), so its listeners may terminate
    /// mutual TLS: node metadata `ISTIO_VERSION` (pilot-agent always sends it) or
    /// `WORKLOAD_IDENTITY_SOCKET_FILE` (sent by `meshpilot bootstrap --via-agent`). A proxy
    /// without one would wait forever for those secrets.
    pub workload_certificate: bool,
    /// Where the proxy runs, `REGION/ZONE/SUBZONE` from the Envoy node's `locality` (empty
    /// when the node gives none); locality-aware load balancing orders endpoints by it.
    pub locality: String,
}

/// The node metadata keys that say an agent serves the proxy its workload certificate.
pub const WORKLOAD_CERTIFICATE_KEYS: [&str; 2] = ["ISTIO_VERSION", "WORKLOAD_IDENTITY_SOCKET_FILE"];

impl Proxy {
    /// Parses a node id and the string metadata Envoy sent with it.
    ///
    /// The namespace is `NAMESPACE` from metadata, else the first label of the DNS domain when it
    /// has the `NS.svc.…` form, else what follows the first `.` of `POD.NS`, else `default`.
    pub fn parse(
        node_id: &str,
        metadata: &BTreeMap<String, MetadataValue>,
    ) -> Result<Proxy, ProxyParseError> {
        let parts: Vec<&str> = node_id.split('~').collect();
        let [kind, ip, id, domain] = parts.as_slice() else {
            return Err(ProxyParseError::Shape(node_id.to_string()));
        };
        let kind = match *kind {
            "sidecar" => ProxyKind::Sidecar,
            "router" => ProxyKind::Router,
            other => {
                return Err(ProxyParseError::Type(
                    node_id.to_string(),
                    other.to_string(),
                ));
            }
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| ProxyParseError::Ip(node_id.to_string(), ip.to_string()))?;
        let namespace = match metadata.get("NAMESPACE") {
            Some(MetadataValue::String(ns)) if !ns.is_empty() => ns.clone(),
            _ => namespace_from(id, domain),
        };
        let labels = match metadata.get("LABELS") {
            Some(MetadataValue::Map(m)) => m.clone(),
            _ => Labels::new(),
        };
        let interception = match metadata.get("INTERCEPTION_MODE") {
            Some(MetadataValue::String(s)) => Interception::parse(s)
                .ok_or_else(|| ProxyParseError::Interception(node_id.to_string(), s.clone()))?,
            _ => Interception::Redirect,
        };
        let pod_ports = match metadata.get("POD_PORTS") {
            Some(MetadataValue::String(s)) => parse_pod_ports(s),
            _ => BTreeMap::new(),
        };
        Ok(Proxy {
            node_id: node_id.to_string(),
            kind,
            ip,
            id: id.to_string(),
            namespace,
            dns_domain: domain.to_string(),
            labels,
            interception,
            pod_ports,
            workload_certificate: WORKLOAD_CERTIFICATE_KEYS
                .iter()
                .any(|k| metadata.contains_key(*k)),
            locality: String::new(),
        })
    }

    /// Sets the proxy's locality from the Envoy node's `locality` parts, as
    /// `REGION/ZONE/SUBZONE` without trailing empty parts (`region-a/zone-1`).
    pub fn with_locality(mut self, region: &str, zone: &str, sub_zone: &str) -> Proxy {
        let mut locality = format!("{region}/{zone}/{sub_zone}");
        locality.truncate(locality.trim_end_matches('/').len());
        self.locality = locality;
        self
    }

    /// True for a sidecar whose traffic iptables redirects to it: the one kind of proxy that
    /// gets Istio's inbound listener (`virtualInbound` on 15006).
    pub fn captures_inbound(&self) -> bool {
        self.kind == ProxyKind::Sidecar && self.interception == Interception::Redirect
    }

    /// The key of the class of proxies that receive exactly the same configuration as this one.
    pub fn class_key(&self) -> ClassKey {
        ClassKey {
            kind: self.kind,
            namespace: self.namespace.clone(),
            labels: self.labels.clone(),
            interception: self.interception,
            // Listeners bind the proxy's own IP only without interception.
            bind_ip: (self.interception == Interception::None).then_some(self.ip),
            // Named target ports of its inbound listener resolve through these.
            pod_ports: if self.captures_inbound() {
                self.pod_ports.clone()
            } else {
                BTreeMap::new()
            },
            workload_certificate: self.workload_certificate,
            // Endpoint priorities and weights depend on it for clusters with locality
            // balancing; listeners, routes and clusters do not (compile keys drop it).
            locality: self.locality.clone(),
        }
    }
}

/// The named ports of `POD_PORTS` (`[{"name":"http","containerPort":8080,"protocol":"TCP"}]`).
/// A value that is not such a list gives none: a named target port then resolves through the
/// Service's endpoints instead, so a bad value costs no connection.
fn parse_pod_ports(json: &str) -> BTreeMap<String, u16> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ContainerPort {
        #[serde(default)]
        name: String,
        container_port: u16,
    }
    serde_json::from_str::<Vec<ContainerPort>>(json)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !p.name.is_empty())
        .map(|p| (p.name, p.container_port))
        .collect()
}

fn namespace_from(id: &str, domain: &str) -> String {
    let mut labels = domain.split('.');
    if let (Some(ns), Some("svc")) = (labels.next(), labels.next())
        && !ns.is_empty()
    {
        return ns.to_string();
    }
    match id.split_once('.') {
        Some((_, ns)) if !ns.is_empty() => ns.to_string(),
        _ => "default".to_string(),
    }
}

/// The subset of node metadata we read: strings and string maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataValue {
    String(String),
    Map(Labels),
    Other,
}

/// Everything that can make two proxies' configuration differ. Proxies with equal keys share one
/// compiled snapshot (and its encoded bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ClassKey {
    pub kind: ProxyKind,
    pub namespace: String,
    pub labels: Labels,
    pub interception: Interception,
    pub bind_ip: Option<IpAddr>,
    /// The pod's named container ports, for sidecars with an inbound listener (else empty).
    pub pod_ports: BTreeMap<String, u16>,
    /// Whether its inbound listener may terminate mutual TLS ([`Proxy::workload_certificate`]).
    pub workload_certificate: bool,
    /// [`Proxy::locality`] (empty for proxies that report none).
    pub locality: String,
}

impl fmt::Display for ClassKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.as_str(), self.namespace)?;
        for (k, v) in &self.labels {
            write!(f, ",{k}={v}")?;
        }
        if let Some(ip) = self.bind_ip {
            write!(f, "@{ip}")?;
        }
        for (name, port) in &self.pod_ports {
            write!(f, ";{name}:{port}")?;
        }
        if self.workload_certificate {
            f.write_str(";mtls")?;
        }
        if !self.locality.is_empty() {
            write!(f, "~{}", self.locality)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, MetadataValue)]) -> BTreeMap<String, MetadataValue> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn parses_istio_sidecar_node_id() {
        let p = Proxy::parse(
            "sidecar~10.1.2.3~reviews-v1-abc.bookinfo~bookinfo.svc.cluster.local",
            &BTreeMap::new(),
        )
        .expect("valid id");
        assert_eq!(p.kind, ProxyKind::Sidecar);
        assert_eq!(p.ip.to_string(), "10.1.2.3");
        assert_eq!(p.id, "reviews-v1-abc.bookinfo");
        assert_eq!(p.namespace, "bookinfo");
        assert_eq!(p.interception, Interception::Redirect);
        assert_eq!(p.class_key().bind_ip, None);
    }

    #[test]
    fn metadata_overrides_and_none_interception_binds_ip() {
        let mut labels = Labels::new();
        labels.insert("istio".into(), "ingressgateway".into());
        let p = Proxy::parse(
            "router~127.0.0.10~ingress.istio-system~istio-system.svc.cluster.local",
            &meta(&[
                ("NAMESPACE", MetadataValue::String("gw".into())),
                ("LABELS", MetadataValue::Map(labels.clone())),
                ("INTERCEPTION_MODE", MetadataValue::String("NONE".into())),
            ]),
        )
        .expect("valid id");
        assert_eq!(p.kind, ProxyKind::Router);
        assert_eq!(p.namespace, "gw");
        assert_eq!(p.labels, labels);
        assert_eq!(
            p.class_key().bind_ip.map(|ip| ip.to_string()),
            Some("127.0.0.10".to_string())
        );
    }

    #[test]
    fn namespace_falls_back_to_pod_id_then_default() {
        let p =
            Proxy::parse("sidecar~1.2.3.4~pod.ns1~cluster.local", &BTreeMap::new()).expect("valid");
        assert_eq!(p.namespace, "ns1");
        let p = Proxy::parse("sidecar~1.2.3.4~pod~x", &BTreeMap::new()).expect("valid");
        assert_eq!(p.namespace, "default");
    }

    #[test]
    fn pod_ports_from_metadata_only_key_redirect_sidecars() {
        let ports =
            r#"[{"name":"http","containerPort":8080,"protocol":"TCP"},{"containerPort":9}]"#;
        let md = meta(&[("POD_PORTS", MetadataValue::String(ports.into()))]);
        let p = Proxy::parse("sidecar~1.2.3.4~a.ns~ns.svc.cluster.local", &md).expect("valid");
        assert_eq!(p.pod_ports, [("http".to_string(), 8080)].into());
        assert_eq!(p.class_key().pod_ports, p.pod_ports);
        let r = Proxy::parse("router~1.2.3.4~a.ns~ns.svc.cluster.local", &md).expect("valid");
        assert!(r.class_key().pod_ports.is_empty());
        let bad = meta(&[("POD_PORTS", MetadataValue::String("nope".into()))]);
        let p = Proxy::parse("sidecar~1.2.3.4~a.ns~ns.svc.cluster.local", &bad).expect("valid");
        assert!(p.pod_ports.is_empty());
    }

    #[test]
    fn locality_joins_the_class_key() {
        let p = Proxy::parse(
            "sidecar~1.2.3.4~a.ns~ns.svc.cluster.local",
            &BTreeMap::new(),
        )
        .expect("valid");
        assert_eq!(p.class_key().locality, "");
        let there = p.clone().with_locality("r", "z", "");
        assert_eq!(there.locality, "r/z");
        assert_eq!(p.clone().with_locality("r", "", "s").locality, "r//s");
        assert_eq!(p.clone().with_locality("", "", "").locality, "");
        assert_ne!(p.class_key(), there.class_key());
        assert_eq!(there.class_key().to_string(), "sidecar/ns~r/z");
    }

    #[test]
    fn rejects_bad_ids() {
        let none = BTreeMap::new();
        assert!(matches!(
            Proxy::parse("sidecar~1.2.3.4~x", &none),
            Err(ProxyParseError::Shape(_))
        ));
        assert!(matches!(
            Proxy::parse("ingress~1.2.3.4~x.y~y.svc.cluster.local", &none),
            Err(ProxyParseError::Type(..))
        ));
        assert!(matches!(
            Proxy::parse("sidecar~not-ip~x.y~y.svc.cluster.local", &none),
            Err(ProxyParseError::Ip(..))
        ));
        assert!(matches!(
            Proxy::parse(
                "sidecar~1.2.3.4~x.y~y.svc.cluster.local",
                &meta(&[("INTERCEPTION_MODE", MetadataValue::String("bogus".into()))])
            ),
            Err(ProxyParseError::Interception(..))
        ));
    }
}
