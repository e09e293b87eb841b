//! Renders the Envoy v3 bootstrap for one Istio-style proxy: its node identity and metadata,
//! ADS (SotW or Delta) for clusters and listeners, the one static cluster that reaches the
//! control plane (`xds-grpc`), and the admin listener. No routing configuration is ever static:
//! everything else arrives over ADS.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde_json::{Value, json};

use crate::config::{BootstrapArgs, InterceptionArg};
use meshpilot_model::proxy::MetadataValue;
use meshpilot_model::{Labels, Proxy, ProxyParseError};

/// Name of the static cluster through which Envoy reaches the ADS server.
pub const XDS_CLUSTER: &str = "xds-grpc";
/// Name of the static cluster through which Envoy reaches the agent's SDS (Istio's name).
pub const SDS_CLUSTER: &str = "sds-grpc";
/// The file name of the agent's SDS socket (pilot-agent's default `socket`).
const SDS_SOCKET_FILE: &str = "socket";

/// Service cluster used when the proxy has no `app` label (Istio's default).
const DEFAULT_SERVICE_CLUSTER: &str = "istio-proxy";

/// Why a bootstrap could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The node id (or the metadata derived from the flags) is not a valid Istio proxy identity.
    /// (Not a `#[source]`: the message already carries it, and `{:#}` would print it twice.)
    #[error("--node-id: {0}")]
    NodeId(ProxyParseError),
    /// `--xds-address` is not `HOST:PORT` / `IP:PORT` / `[IPv6]:PORT`.
    #[error("--xds-address {0:?}: expected HOST:PORT, e.g. meshpilot.istio-system.svc:15010")]
    XdsAddress(String),
    /// `--xds-token-file` could not be read, or is empty.
    #[error("--xds-token-file {path}: {message}")]
    Token { path: String, message: String },
}

/// The control plane's address as the bootstrap's `xds-grpc` cluster needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum XdsTarget {
    /// An IP address: a `STATIC` cluster.
    Ip(SocketAddr),
    /// A DNS name: a `STRICT_DNS` cluster.
    Dns(String, u16),
}

impl XdsTarget {
    fn parse(s: &str) -> Result<XdsTarget, BootstrapError> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(XdsTarget::Ip(addr));
        }
        let bad = || BootstrapError::XdsAddress(s.to_string());
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !host_ok || port == 0 {
            return Err(bad());
        }
        // Unbracketed IPv6 (`::1:15010`) fails `host_ok`: it is ambiguous, so it is refused.
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(XdsTarget::Ip(SocketAddr::new(ip, port)));
        }
        Ok(XdsTarget::Dns(host.to_string(), port))
    }

    fn host(&self) -> String {
        match self {
            XdsTarget::Ip(a) => a.ip().to_string(),
            XdsTarget::Dns(h, _) => h.clone(),
        }
    }

    fn port(&self) -> u16 {
        match self {
            XdsTarget::Ip(a) => a.port(),
            XdsTarget::Dns(_, p) => *p,
        }
    }

    fn cluster_type(&self) -> &'static str {
        match self {
            XdsTarget::Ip(_) => "STATIC",
            XdsTarget::Dns(..) => "STRICT_DNS",
        }
    }
}

/// Renders the complete bootstrap for `args`. The node id is validated with [`Proxy::parse`]
/// against the same metadata Envoy will send, so a bootstrap this returns is one the control
/// plane accepts.
pub fn render(args: &BootstrapArgs) -> Result<Value, BootstrapError> {
    let labels: Labels = args.labels.iter().cloned().collect();
    let interception = match args.interception {
        InterceptionArg::Redirect => "REDIRECT",
        InterceptionArg::None => "NONE",
    };
    let mut meta = BTreeMap::new();
    if let Some(ns) = &args.namespace {
        meta.insert("NAMESPACE".to_string(), MetadataValue::String(ns.clone()));
    }
    meta.insert("LABELS".to_string(), MetadataValue::Map(labels.clone()));
    meta.insert(
        "INTERCEPTION_MODE".to_string(),
        MetadataValue::String(interception.to_string()),
    );
    if args.via_agent {
        // As pilot-agent's bootstrap says it: the agent's SDS socket serves the workload
        // certificate, so the control plane may send listeners and clusters that use it.
        meta.insert(
            "WORKLOAD_IDENTITY_SOCKET_FILE".to_string(),
            MetadataValue::String(SDS_SOCKET_FILE.to_string()),
        );
    }
    let proxy = Proxy::parse(&args.node_id, &meta).map_err(BootstrapError::NodeId)?;
    let xds = XdsTarget::parse(&args.xds_address)?;

    let api_type = if args.delta { "DELTA_GRPC" } else { "GRPC" };
    let mut grpc_service = json!({ "envoy_grpc": { "cluster_name": XDS_CLUSTER } });
    if let Some(path) = &args.xds_token_file {
        let token_error = |message: String| BootstrapError::Token {
            path: path.display().to_string(),
            message,
        };
        let token = std::fs::read_to_string(path).map_err(|e| token_error(e.to_string()))?;
        let token = token.trim();
        if token.is_empty() {
            return Err(token_error("empty".to_string()));
        }
        grpc_service["initial_metadata"] =
            json!([{ "key": "authorization", "value": format!("Bearer {token}") }]);
    }
    let mut cluster = xds_cluster(&xds);
    if let Some(root) = &args.xds_root_cert {
        cluster["transport_socket"] = xds_tls(root, &args.xds_server_name);
    }
    let mut clusters = vec![cluster];
    if args.via_agent {
        // The agent holds the token and speaks TLS: Envoy talks plaintext gRPC to its sockets.
        grpc_service = json!({ "envoy_grpc": { "cluster_name": XDS_CLUSTER } });
        clusters = vec![
            pipe_cluster(XDS_CLUSTER, &args.agent_xds_socket),
            pipe_cluster(SDS_CLUSTER, &args.agent_sds_socket),
        ];
    }
    let ads_source = json!({ "ads": {}, "resource_api_version": "V3" });
    let admin = args.admin_address;

    let mut metadata = json!({
        "NAMESPACE": proxy.namespace,
        "LABELS": labels,
        "INTERCEPTION_MODE": interception,
    });
    if args.via_agent {
        metadata["WORKLOAD_IDENTITY_SOCKET_FILE"] = json!(SDS_SOCKET_FILE);
    }
    let mut node = json!({
        "id": proxy.node_id,
        "cluster": service_cluster(&labels, &proxy.namespace),
        "metadata": metadata,
    });
    if let Some(locality) = args.locality.as_deref().filter(|l| !l.is_empty()) {
        let mut parts = locality.splitn(3, '/');
        node["locality"] = json!({
            "region": parts.next().unwrap_or(""),
            "zone": parts.next().unwrap_or(""),
            "sub_zone": parts.next().unwrap_or(""),
        });
    }
    Ok(json!({
        "node": node,
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [grpc_service],
            },
            "cds_config": ads_source.clone(),
            "lds_config": ads_source,
        },
        "static_resources": {
            "clusters": clusters,
        },
        "layered_runtime": runtime_layers(),
        "admin": {
            "address": {
                "socket_address": {
                    "address": admin.ip().to_string(),
                    "port_value": admin.port(),
                },
            },
        },
    }))
}

/// The runtime as istiod's bootstrap sets it: a static layer, then the admin layer (so
/// `/runtime_modify` still works). Envoy refuses a regex whose compiled RE2 program is larger
/// than `re2.max_program_size.error_level` (100 by default), NACKing the whole route
/// configuration it is in. The source refuses regexes over 1,024 characters, as istiod does,
/// and this limit lets regexes of that length compile unless their repetition counts blow up
/// the program (forty `x{1000}` still make Envoy NACK).
fn runtime_layers() -> Value {
    json!({
        "layers": [
            {
                "name": "global config",
                "static_layer": { "re2.max_program_size.error_level": "32768" },
            },
            { "name": "admin", "admin_layer": {} },
        ],
    })
}

/// Istio's service cluster: `APP.NAMESPACE` from the `app.kubernetes.io/name` or `app` label,
/// else `istio-proxy`.
fn service_cluster(labels: &Labels, namespace: &str) -> String {
    labels
        .get("app.kubernetes.io/name")
        .or_else(|| labels.get("app"))
        .filter(|app| !app.is_empty())
        .map(|app| format!("{app}.{namespace}"))
        .unwrap_or_else(|| DEFAULT_SERVICE_CLUSTER.to_string())
}

/// The static cluster that reaches the ADS server. It must speak HTTP/2 (gRPC): without
/// `http2_protocol_options` Envoy stays PRE_INITIALIZING forever, logging nothing at info level.
fn xds_cluster(xds: &XdsTarget) -> Value {
    let mut cluster = json!({
        "name": XDS_CLUSTER,
        "type": xds.cluster_type(),
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{
                "lb_endpoints": [{
                    "endpoint": {
                        "address": {
                            "socket_address": {
                                "address": xds.host(),
                                "port_value": xds.port(),
                            },
                        },
                    },
                }],
            }],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "connection_keepalive": { "interval": "30s", "timeout": "10s" },
                    },
                },
            },
        },
    });
    if matches!(xds, XdsTarget::Dns(..)) {
        cluster["dns_lookup_family"] = json!("V4_PREFERRED");
    }
    cluster
}

/// A gRPC (HTTP/2) cluster on a Unix socket, as Istio's bootstrap reaches its agent.
fn pipe_cluster(name: &str, path: &std::path::Path) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{
                "lb_endpoints": [{
                    "endpoint": { "address": { "pipe": { "path": path.display().to_string() } } },
                }],
            }],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": { "http2_protocol_options": {} },
            },
        },
    })
}

/// TLS to the control plane's secure port: its certificate must chain to `root` and name
/// `server_name` (Istio's agent checks `istiod.istio-system.svc` the same way).
fn xds_tls(root: &std::path::Path, server_name: &str) -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": server_name,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "validation_context": {
                    "trusted_ca": { "filename": root.display().to_string() },
                    "match_typed_subject_alt_names": [{
                        "san_type": "DNS",
                        "matcher": { "exact": server_name },
                    }],
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(node_id: &str) -> BootstrapArgs {
        BootstrapArgs {
            node_id: node_id.to_string(),
            labels: vec![],
            namespace: None,
            interception: InterceptionArg::Redirect,
            locality: None,
            xds_address: "127.0.0.1:15010".to_string(),
            admin_address: "127.0.0.1:15000".parse().expect("addr"),
            delta: false,
            xds_root_cert: None,
            xds_server_name: "istiod.istio-system.svc".to_string(),
            xds_token_file: None,
            via_agent: false,
            agent_xds_socket: meshpilot_agent::XDS_SOCKET.into(),
            agent_sds_socket: meshpilot_agent::SDS_SOCKET.into(),
        }
    }

    const SIDECAR: &str = "sidecar~10.1.2.3~reviews-v1-abc.bookinfo~bookinfo.svc.cluster.local";
    const ROUTER: &str =
        "router~127.0.0.10~istio-ingressgateway-x.istio-system~istio-system.svc.cluster.local";

    #[test]
    fn sidecar_sotw_bootstrap() {
        let mut a = args(SIDECAR);
        a.labels = vec![
            ("app".into(), "reviews".into()),
            ("version".into(), "v1".into()),
        ];
        let b = render(&a).expect("renders");
        assert_eq!(b["node"]["id"], SIDECAR);
        assert_eq!(b["node"]["cluster"], "reviews.bookinfo");
        assert_eq!(b["node"]["metadata"]["NAMESPACE"], "bookinfo");
        assert_eq!(b["node"]["metadata"]["INTERCEPTION_MODE"], "REDIRECT");
        assert_eq!(b["node"]["metadata"]["LABELS"]["version"], "v1");
        assert!(b["node"].get("locality").is_none(), "no --locality, none");
        a.locality = Some("region-a/zone-1".into());
        let with_locality = render(&a).expect("renders");
        assert_eq!(
            with_locality["node"]["locality"],
            json!({"region": "region-a", "zone": "zone-1", "sub_zone": ""})
        );
        let ads = &b["dynamic_resources"]["ads_config"];
        assert_eq!(ads["api_type"], "GRPC");
        assert_eq!(ads["transport_api_version"], "V3");
        assert_eq!(ads["set_node_on_first_message_only"], true);
        assert_eq!(
            ads["grpc_services"][0]["envoy_grpc"]["cluster_name"],
            "xds-grpc"
        );
        for k in ["cds_config", "lds_config"] {
            assert_eq!(
                b["dynamic_resources"][k],
                json!({"ads": {}, "resource_api_version": "V3"})
            );
        }
        let clusters = b["static_resources"]["clusters"]
            .as_array()
            .expect("clusters");
        assert_eq!(clusters.len(), 1);
        assert_eq!(clusters[0]["type"], "STATIC");
        assert!(
            b["static_resources"].get("listeners").is_none(),
            "no static listeners"
        );
        assert_eq!(b["admin"]["address"]["socket_address"]["port_value"], 15000);
        // As istiod's bootstrap: every regex the source accepts (up to 1,024 characters)
        // compiles within Envoy's RE2 program-size limit, and the admin layer stays writable.
        let layers = &b["layered_runtime"]["layers"];
        assert_eq!(
            layers[0]["static_layer"]["re2.max_program_size.error_level"],
            "32768"
        );
        assert_eq!(layers[1]["admin_layer"], json!({}));
    }

    #[test]
    fn router_delta_none_interception_dns_xds() {
        let mut a = args(ROUTER);
        a.delta = true;
        a.interception = InterceptionArg::None;
        a.namespace = Some("gw".into());
        a.xds_address = "meshpilot.istio-system.svc:15010".into();
        let b = render(&a).expect("renders");
        assert_eq!(
            b["dynamic_resources"]["ads_config"]["api_type"],
            "DELTA_GRPC"
        );
        assert_eq!(b["node"]["cluster"], "istio-proxy");
        assert_eq!(b["node"]["metadata"]["NAMESPACE"], "gw");
        assert_eq!(b["node"]["metadata"]["INTERCEPTION_MODE"], "NONE");
        assert_eq!(b["node"]["metadata"]["LABELS"], json!({}));
        let c = &b["static_resources"]["clusters"][0];
        assert_eq!(c["type"], "STRICT_DNS");
        let sa = &c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
        assert_eq!(sa["address"], "meshpilot.istio-system.svc");
        assert_eq!(sa["port_value"], 15010);
        let opts = &c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert!(opts["explicit_http_config"]["http2_protocol_options"].is_object());
    }

    #[test]
    fn ipv6_xds_address_is_static() {
        let mut a = args(SIDECAR);
        a.xds_address = "[::1]:15010".into();
        let b = render(&a).expect("renders");
        let c = &b["static_resources"]["clusters"][0];
        assert_eq!(c["type"], "STATIC");
        assert_eq!(
            c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
                ["address"],
            "::1"
        );
    }

    #[test]
    fn bad_node_id_names_the_id() {
        let err = render(&args("gateway~1.2.3.4~x.y~y.svc.cluster.local")).expect_err("bad type");
        let msg = err.to_string();
        assert!(
            msg.contains("gateway~1.2.3.4~x.y~y.svc.cluster.local"),
            "{msg}"
        );
        let err = render(&args("nonsense")).expect_err("bad shape");
        assert!(err.to_string().contains("nonsense"));
    }

    #[test]
    fn bad_xds_addresses() {
        for bad in [
            "",
            "host",
            "host:",
            ":15010",
            "host:0",
            "host:99999",
            "a b:1",
        ] {
            let mut a = args(SIDECAR);
            a.xds_address = bad.into();
            let err = render(&a).expect_err(bad);
            assert!(matches!(err, BootstrapError::XdsAddress(_)), "{bad}: {err}");
        }
    }
}
