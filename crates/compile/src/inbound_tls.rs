//! The filter chains of one inbound port (or of the passthrough) under its PeerAuthentication
//! mode, as istiod composes them (`filterchain_options.go`):
//!
//! * DISABLE: the plaintext chains alone.
//! * PERMISSIVE: mutual-TLS chains (`transport_protocol: tls`, found by `tls_inspector`) beside
//!   the plaintext ones (`raw_buffer`); on TCP and unknown-protocol ports a TLS connection
//!   whose ALPN is not Istio's passes through untouched (the app's own TLS). A port declared
//!   HTTP or TCP takes every ALPN an Istio client may offer as mutual TLS (istiod's
//!   `allIstioMtlsALPNs`); a port of unknown protocol splits them between its HTTP chain
//!   (`istio-http/*`) and its TCP chain (`istio`, `istio-peer-exchange`).
//! * STRICT: the mutual-TLS chains alone; a plaintext connection matches no chain and is
//!   closed.
//!
//! HTTP-declared ports terminate mutual TLS into the HTTP connection manager; TCP ports into
//! tcp_proxy; ports of unknown protocol into HTTP when the client's ALPN says HTTP
//! (`istio-http/*`, which only istio-proxy's ALPN filter sets), else into tcp_proxy.
//! A proxy without a workload certificate ([`Proxy::workload_certificate`]) cannot terminate
//! mutual TLS: it serves plaintext, except that a STRICT port sends every connection to
//! `BlackHoleCluster` rather than accept what the policy forbids.
//!
//! [`Proxy::workload_certificate`]: meshpilot_model::Proxy::workload_certificate

use envoy_types::pb::envoy::config::listener::v3::{
    FilterChain, FilterChainMatch, ListenerFilterChainMatchPredicate,
    listener_filter_chain_match_predicate::Rule,
};
use meshpilot_model::{MtlsMode, Protocol};

use super::inbound::{http_chain, ports_predicate, tcp_chain};
use super::{names, tls};

/// One inbound port (`port` None: the passthrough) to chain.
pub(super) struct PortChains<'a> {
    /// Chain names: the HTTP one and the TCP one (they differ only for the passthrough).
    pub http_name: &'a str,
    pub tcp_name: &'a str,
    pub port: Option<u16>,
    pub protocol: Protocol,
    pub cluster: &'a str,
    /// The inline route's virtual host port (0 for the passthrough).
    pub vhost_port: u16,
}

/// Transport matches of a chain.
#[derive(Clone, Copy)]
enum Transport<'a> {
    /// Plaintext, matched as any transport (DISABLE: as before PeerAuthentication).
    Any,
    RawBuffer,
    /// TLS with one of these ALPNs (none: any), terminated as Istio mutual TLS.
    MutualTls(&'a [&'a str]),
    /// TLS with any ALPN, passed through to the app.
    TlsPassthrough,
}

impl PortChains<'_> {
    /// The chains of this port under `mode`; `can_terminate` says the proxy has its workload
    /// certificate.
    pub fn build(&self, mode: MtlsMode, can_terminate: bool) -> Vec<FilterChain> {
        match (mode, can_terminate) {
            (MtlsMode::Strict, false) => {
                vec![tcp_chain(self.tcp_name, self.port, names::BLACKHOLE)]
            }
            (MtlsMode::Disable, _) | (_, false) => self.plaintext(Transport::Any),
            (MtlsMode::Strict, true) => self.mutual_tls(false),
            (MtlsMode::Permissive | MtlsMode::Unset, true) => {
                let mut chains = self.mutual_tls(true);
                chains.extend(self.plaintext(Transport::RawBuffer));
                chains
            }
        }
    }

    fn plaintext(&self, transport: Transport<'_>) -> Vec<FilterChain> {
        match self.protocol {
            Protocol::Unknown => vec![self.http(true, transport), self.tcp(transport)],
            p if p.is_http() => vec![self.http(false, transport)],
            _ => vec![self.tcp(transport)],
        }
    }

    /// The chains that terminate mutual TLS; `permissive`: only for Istio's ALPNs, other TLS
    /// passing through (a STRICT port takes every TLS connection as mutual TLS).
    fn mutual_tls(&self, permissive: bool) -> Vec<FilterChain> {
        let any: &[&str] = &[];
        match self.protocol {
            Protocol::Unknown => {
                let mut chains = vec![
                    self.http(false, Transport::MutualTls(&tls::MTLS_HTTP_ALPNS)),
                    self.tcp(Transport::MutualTls(if permissive {
                        &tls::MTLS_TCP_ALPNS
                    } else {
                        any
                    })),
                ];
                if permissive {
                    chains.push(self.tcp(Transport::TlsPassthrough));
                }
                chains
            }
            p if p.is_http() => vec![self.http(
                false,
                Transport::MutualTls(if permissive {
                    &tls::MTLS_ALL_ALPNS
                } else {
                    any
                }),
            )],
            _ => {
                if permissive {
                    vec![
                        self.tcp(Transport::MutualTls(&tls::MTLS_ALL_ALPNS)),
                        self.tcp(Transport::TlsPassthrough),
                    ]
                } else {
                    vec![self.tcp(Transport::MutualTls(any))]
                }
            }
        }
    }

    fn http(&self, http_alpn: bool, transport: Transport<'_>) -> FilterChain {
        let chain = http_chain(
            self.http_name,
            self.port,
            http_alpn,
            self.cluster,
            self.vhost_port,
        );
        with_transport(chain, transport)
    }

    fn tcp(&self, transport: Transport<'_>) -> FilterChain {
        with_transport(tcp_chain(self.tcp_name, self.port, self.cluster), transport)
    }
}

fn with_transport(mut chain: FilterChain, transport: Transport<'_>) -> FilterChain {
    let (protocol, alpns, terminate) = match transport {
        Transport::Any => return chain,
        Transport::RawBuffer => ("raw_buffer", None, false),
        Transport::MutualTls(alpns) => ("tls", Some(alpns), true),
        Transport::TlsPassthrough => ("tls", Some(&[][..]), false),
    };
    let m = chain
        .filter_chain_match
        .get_or_insert_with(FilterChainMatch::default);
    m.transport_protocol = protocol.to_string();
    if let Some(alpns) = alpns {
        m.application_protocols = alpns.iter().map(|s| s.to_string()).collect();
    }
    if terminate {
        chain.transport_socket = Some(tls::inbound_mtls());
    }
    chain
}

/// True when `chains` match TLS (`tls_inspector` must run for them).
pub(super) fn matches_tls(chains: &[FilterChain]) -> bool {
    chains.iter().any(|c| {
        c.filter_chain_match
            .as_ref()
            .is_some_and(|m| m.transport_protocol == "tls")
    })
}

/// When `tls_inspector` stays off, so it runs only where a chain matches TLS: on the
/// `plaintext_only` ports when the passthrough has TLS chains, else everywhere but on the
/// `ports` with TLS chains; `None` when no chain matches TLS (no inspector at all).
pub(super) fn inspector_disabled(
    ports: impl Iterator<Item = u16>,
    plaintext_only: &[u16],
    passthrough_tls: bool,
) -> Option<ListenerFilterChainMatchPredicate> {
    if passthrough_tls {
        return Some(ports_predicate(plaintext_only));
    }
    let tls_ports: Vec<u16> = ports.filter(|p| !plaintext_only.contains(p)).collect();
    (!tls_ports.is_empty()).then(|| ListenerFilterChainMatchPredicate {
        rule: Some(Rule::NotMatch(Box::new(ports_predicate(&tls_ports)))),
    })
}
