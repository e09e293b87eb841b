//! Gateway HTTPS servers: `tls.mode` SIMPLE, MUTUAL and ISTIO_MUTUAL terminate TLS at the
//! gateway. Each such
//! server becomes one filter chain of its port's listener, matched by SNI (`server_names` from
//! its hosts), with a `DownstreamTlsContext` and an HTTP connection manager over a route
//! configuration of its own, `https.PORT.NAME.GATEWAY.NAMESPACE`, as istiod names it.
//! Certificates come from `credentialName` (SDS over the ADS stream: `kubernetes://NAME`, and
//! `kubernetes://NAME-cacert` to check client certificates) or from files on the proxy
//! (`serverCertificate`, `privateKey`, `caCertificates`). ISTIO_MUTUAL serves the gateway's own
//! workload certificate and requires a client certificate the mesh root signed (SDS `default`
//! and `ROOTCA` from the gateway's agent), so only a gateway behind an agent
//! ([`Proxy::workload_certificate`]) serves it. PASSTHROUGH is `tcproute`'s.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, TransportSocket, data_source::Specifier, transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, filter::ConfigType,
};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds, http_connection_manager::CodecType,
    http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    TlsCertificate, TlsParameters,
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    tls_parameters::TlsProtocol,
};
use envoy_types::pb::google::protobuf::BoolValue;

use super::clusters::ads;
use super::endpoints::socket_address;
use super::gateway_refs::server_host;
use super::routes::{GatewayHost, PlannedRoutes, RoutePlan, add_gateway_hosts, bind_server_hosts};
use super::{any, compile_error, compile_warning, inbound, names, resource, secrets, tls};
use meshpilot_index::{Named, View};
use meshpilot_model::{ConfigKey, Gateway, Proxy, ServerTls};
use meshpilot_snapshot::{Reference, Resource, XdsType};

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const DOWNSTREAM_TLS: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const TLS_INSPECTOR: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
/// What a gateway offers in ALPN on its HTTPS servers.
const ALPN: [&str; 2] = ["h2", "http/1.1"];

/// The HTTPS servers of a gateway proxy: per port, one chain per server, and their routes.
#[derive(Debug, Clone, Default)]
pub struct HttpsPlan {
    ports: BTreeMap<u16, Vec<TlsChain>>,
    routes: Vec<PlannedRoutes>,
}

impl HttpsPlan {
    pub(super) fn routes_mut(&mut self) -> impl Iterator<Item = &mut PlannedRoutes> {
        self.routes.iter_mut()
    }

    /// The route configurations of the HTTPS servers.
    pub(super) fn build_routes(&mut self) -> Vec<Resource> {
        std::mem::take(&mut self.routes)
            .into_iter()
            .map(PlannedRoutes::into_resource)
            .collect()
    }

    /// What the listeners need (the chains, without the routes' bodies).
    pub(super) fn chains(&self) -> BTreeMap<u16, Vec<TlsChain>> {
        self.ports.clone()
    }

    /// True when `port` has an HTTPS server.
    pub(super) fn serves(&self, port: u16) -> bool {
        self.ports.contains_key(&port)
    }
}

/// One HTTPS server's filter chain.
#[derive(Debug, Clone)]
pub(super) struct TlsChain {
    /// SNI names (empty: any).
    server_names: Vec<String>,
    tls: DownstreamTlsContext,
    route_config: String,
    gateway: ConfigKey,
}

/// Plans server `si` of `gw` when it is an HTTPS server this module serves (`tls.mode`
/// SIMPLE, MUTUAL or ISTIO_MUTUAL); returns false for any other server (left to the caller). A server
/// that cannot be served is reported and skipped (true).
pub(super) fn plan_server(
    view: &View,
    proxy: &Proxy,
    gw: &Named<Gateway>,
    si: usize,
    port: u16,
    plan: &mut RoutePlan,
) -> bool {
    let server = &gw.spec.servers[si];
    let protocol = server.port.protocol.to_ascii_uppercase();
    let mode = server
        .tls
        .as_ref()
        .and_then(|t| t.mode.as_deref())
        .unwrap_or("")
        .to_ascii_uppercase();
    if protocol != "HTTPS" || !matches!(mode.as_str(), "SIMPLE" | "MUTUAL" | "ISTIO_MUTUAL") {
        return false;
    }
    let Some(tls) = &server.tls else {
        return false;
    };
    let at = format!("spec.servers[{si}]");
    let error = |field: &str, message: String| {
        compile_error(view, &gw.key, &format!("{at}.{field}"), message)
    };
    if plan.http.contains_key(&port) {
        plan.errors.push(error(
            "port.number",
            format!("port {port} already serves plain HTTP on this gateway; HTTPS server skipped"),
        ));
        return true;
    }
    let tls_context = match downstream_tls(view, proxy, tls, &mode) {
        Ok((ctx, warnings)) => {
            for (field, message) in warnings {
                plan.errors.push(compile_warning(
                    view,
                    &gw.key,
                    &format!("{at}.{field}"),
                    message,
                ));
            }
            ctx
        }
        Err((field, message)) => {
            plan.errors.push(error(&field, message));
            return true;
        }
    };
    // Envoy refuses two chains with the same match: a host served already on this port stays
    // with its first server.
    let chains = plan.https.ports.entry(port).or_default();
    let taken: BTreeSet<&str> = chains
        .iter()
        .flat_map(|c| c.server_names.iter().map(String::as_str))
        .collect();
    let any_taken = chains.iter().any(|c| c.server_names.is_empty());
    let wanted: Vec<&str> = server.hosts.iter().map(|h| server_host(h)).collect();
    // A `*` host makes a catch-all chain (no SNI match); more specific chains still win.
    let catch_all = wanted.contains(&"*");
    let server_names: Vec<String> = if catch_all {
        Vec::new()
    } else {
        wanted
            .iter()
            .filter(|h| !taken.contains(**h))
            .map(|h| h.to_string())
            .collect()
    };
    if (catch_all && any_taken) || (!catch_all && server_names.is_empty()) {
        plan.errors.push(error(
            "hosts",
            format!("every host of this server is already served over HTTPS on port {port}; server skipped"),
        ));
        return true;
    }
    // istiod's name (`gatewayRDSRouteName`): the server's port number and port name, then the
    // Gateway; `servers[].name` plays no part, so tools that parse the name find the port.
    let mut route_config = format!(
        "https.{}.{}.{}.{}",
        server.port.number, server.port.name, gw.key.name, gw.key.namespace
    );
    if plan.https.routes.iter().any(|r| r.name == route_config) {
        // Two HTTPS servers of one Gateway with the same port name (istiod's validation refuses
        // that Gateway): each keeps routes of its own rather than one losing its hosts.
        route_config = format!("{route_config}.{si}");
    }
    let mut routes = PlannedRoutes::new(route_config.clone());
    routes.added_sources.push(gw.key.clone());
    let mut hosts: Vec<GatewayHost> = Vec::new();
    bind_server_hosts(
        view,
        proxy,
        gw,
        si,
        port,
        false,
        &mut hosts,
        &mut plan.errors,
    );
    add_gateway_hosts(&mut routes, hosts, port);
    chains.push(TlsChain {
        server_names,
        tls: tls_context,
        route_config,
        gateway: gw.key.clone(),
    });
    plan.https.routes.push(routes);
    true
}

/// A problem with a field of `tls` (its path under the server, and what to do).
type TlsError = (String, String);

/// The TLS context of a server of `mode` (upper case), with warnings (a missing Secret: the
/// listener waits for it).
fn downstream_tls(
    view: &View,
    proxy: &Proxy,
    tls: &ServerTls,
    mode: &str,
) -> Result<(DownstreamTlsContext, Vec<TlsError>), TlsError> {
    if mode == "ISTIO_MUTUAL" {
        return istio_mutual(proxy, tls).map(|ctx| (ctx, Vec::new()));
    }
    let mutual = mode == "MUTUAL";
    let mut warnings = Vec::new();
    let mut common = CommonTlsContext {
        tls_params: Some(tls_params(tls)?),
        alpn_protocols: ALPN.iter().map(|s| s.to_string()).collect(),
        ..CommonTlsContext::default()
    };
    let credential = tls.credential_name.as_deref().filter(|c| !c.is_empty());
    let sans = tls::written_san_matchers(&tls.subject_alt_names);
    let validation = match credential {
        Some(name) => {
            common.tls_certificate_sds_secret_configs = vec![sds(secrets::certificate_name(name))];
            if !secrets::has_certificate(view, &proxy.namespace, name) {
                warnings.push((
                    "tls.credentialName".to_string(),
                    format!(
                        "no Secret {name:?} with tls.crt and tls.key in namespace {:?} (the \
                         gateway proxy's); its listener waits for it",
                        proxy.namespace
                    ),
                ));
            }
            if mutual && !secrets::has_ca(view, &proxy.namespace, name) {
                warnings.push((
                    "tls.credentialName".to_string(),
                    format!(
                        "MUTUAL needs a CA: no ca.crt in Secret {name:?} nor a Secret \
                         \"{name}-cacert\" in namespace {:?}; its listener waits for it",
                        proxy.namespace
                    ),
                ));
            }
            mutual.then(|| {
                let sds = sds(secrets::ca_name(name));
                if sans.is_empty() {
                    ValidationContextType::ValidationContextSdsSecretConfig(sds)
                } else {
                    ValidationContextType::CombinedValidationContext(
                        CombinedCertificateValidationContext {
                            default_validation_context: Some(CertificateValidationContext {
                                match_typed_subject_alt_names: sans.clone(),
                                ..CertificateValidationContext::default()
                            }),
                            validation_context_sds_secret_config: Some(sds),
                            ..CombinedCertificateValidationContext::default()
                        },
                    )
                }
            })
        }
        None => {
            let (Some(cert), Some(key)) = (
                tls.server_certificate.as_deref().filter(|s| !s.is_empty()),
                tls.private_key.as_deref().filter(|s| !s.is_empty()),
            ) else {
                return Err((
                    "tls.credentialName".to_string(),
                    "SIMPLE and MUTUAL need credentialName, or serverCertificate and privateKey; \
                     server skipped"
                        .to_string(),
                ));
            };
            common.tls_certificates = vec![TlsCertificate {
                certificate_chain: Some(file(cert)),
                private_key: Some(file(key)),
                ..TlsCertificate::default()
            }];
            if mutual {
                let Some(ca) = tls.ca_certificates.as_deref().filter(|s| !s.is_empty()) else {
                    return Err((
                        "tls.caCertificates".to_string(),
                        "MUTUAL with file certificates needs caCertificates; server skipped"
                            .to_string(),
                    ));
                };
                Some(ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: Some(file(ca)),
                        match_typed_subject_alt_names: sans,
                        ..CertificateValidationContext::default()
                    },
                ))
            } else {
                None
            }
        }
    };
    common.validation_context_type = validation;
    Ok((
        DownstreamTlsContext {
            common_tls_context: Some(common),
            require_client_certificate: mutual.then_some(BoolValue { value: true }),
            ..DownstreamTlsContext::default()
        },
        warnings,
    ))
}

/// An ISTIO_MUTUAL server's context; refused for a gateway without an agent, whose Envoy
/// has no `sds-grpc` to ask for the workload certificate.
fn istio_mutual(proxy: &Proxy, tls: &ServerTls) -> Result<DownstreamTlsContext, TlsError> {
    if !proxy.workload_certificate {
        return Err((
            "tls.mode".to_string(),
            "ISTIO_MUTUAL serves the gateway's workload certificate, which only a gateway \
             behind an agent has (node metadata ISTIO_VERSION or WORKLOAD_IDENTITY_SOCKET_FILE, \
             as `meshpilot bootstrap --via-agent` writes); server skipped"
                .to_string(),
        ));
    }
    let common = tls::gateway_istio_mutual(
        tls_params(tls)?,
        &ALPN,
        tls::written_san_matchers(&tls.subject_alt_names),
    );
    Ok(DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(BoolValue { value: true }),
        ..DownstreamTlsContext::default()
    })
}

fn tls_params(tls: &ServerTls) -> Result<TlsParameters, TlsError> {
    let version = |field: &str, v: Option<&str>| -> Result<i32, TlsError> {
        Ok(
            match v.unwrap_or("TLS_AUTO").to_ascii_uppercase().as_str() {
                "TLS_AUTO" | "" => TlsProtocol::TlsAuto,
                "TLSV1_0" => TlsProtocol::TlSv10,
                "TLSV1_1" => TlsProtocol::TlSv11,
                "TLSV1_2" => TlsProtocol::TlSv12,
                "TLSV1_3" => TlsProtocol::TlSv13,
                other => {
                    return Err((
                        format!("tls.{field}"),
                        format!(
                            "unknown TLS version {other:?} (TLS_AUTO, TLSV1_0, TLSV1_1, TLSV1_2, \
                         TLSV1_3); server skipped"
                        ),
                    ));
                }
            } as i32,
        )
    };
    let min = version("minProtocolVersion", tls.min_protocol_version.as_deref())?;
    let max = version("maxProtocolVersion", tls.max_protocol_version.as_deref())?;
    if min != 0 && max != 0 && min > max {
        return Err((
            "tls.minProtocolVersion".to_string(),
            "minProtocolVersion is above maxProtocolVersion; server skipped".to_string(),
        ));
    }
    Ok(TlsParameters {
        tls_minimum_protocol_version: min,
        tls_maximum_protocol_version: max,
        cipher_suites: tls.cipher_suites.clone(),
        ..TlsParameters::default()
    })
}

fn sds(name: String) -> SdsSecretConfig {
    SdsSecretConfig {
        name,
        sds_config: Some(ads()),
    }
}

fn file(path: &str) -> DataSource {
    DataSource {
        specifier: Some(Specifier::Filename(path.to_string())),
        ..DataSource::default()
    }
}

/// The HTTPS listeners of a gateway bound to `address`: one per server port (binding the port
/// `bound` maps it to), a TLS chain per server,
/// `tls_inspector` reading the SNI the chains match on.
pub(super) fn listeners(
    address: &str,
    chains: &BTreeMap<u16, Vec<TlsChain>>,
    bound: impl Fn(u16) -> u16,
    out: &mut Vec<Resource>,
    refs: &mut Vec<Reference>,
) {
    for (port, chains) in chains {
        if chains.is_empty() {
            continue;
        }
        let port = bound(*port);
        let name = names::listener(address, port);
        let mut sources: Vec<ConfigKey> = Vec::new();
        let filter_chains = chains
            .iter()
            .map(|c| {
                refs.push(Reference {
                    from_type: XdsType::Listener,
                    from: name.clone(),
                    to_type: XdsType::Route,
                    to: c.route_config.clone(),
                });
                if !sources.contains(&c.gateway) {
                    sources.push(c.gateway.clone());
                }
                chain(c)
            })
            .collect();
        let listener = Listener {
            name: name.clone(),
            address: Some(socket_address(address, port)),
            filter_chains,
            listener_filters: vec![inbound::listener_filter(
                "envoy.filters.listener.tls_inspector",
                TLS_INSPECTOR,
                &TlsInspector::default(),
                None,
            )],
            ..Listener::default()
        };
        out.push(resource(&name, &listener, sources));
    }
}

fn chain(c: &TlsChain) -> FilterChain {
    let hcm = HttpConnectionManager {
        stat_prefix: c.route_config.clone(),
        codec_type: CodecType::Auto as i32,
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: c.route_config.clone(),
        })),
        http_filters: super::route_policy::http_filters(),
        use_remote_address: Some(BoolValue { value: true }),
        ..HttpConnectionManager::default()
    };
    FilterChain {
        filter_chain_match: (!c.server_names.is_empty()).then(|| FilterChainMatch {
            server_names: c.server_names.clone(),
            ..FilterChainMatch::default()
        }),
        filters: vec![Filter {
            name: "envoy.filters.network.http_connection_manager".to_string(),
            config_type: Some(ConfigType::TypedConfig(any(HCM, &hcm))),
        }],
        transport_socket: Some(TransportSocket {
            name: "envoy.transport_sockets.tls".to_string(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(any(
                DOWNSTREAM_TLS,
                &c.tls,
            ))),
        }),
        ..FilterChain::default()
    }
}
