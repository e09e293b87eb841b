//! Istio kinds other than VirtualService and DestinationRule — Gateway, ServiceEntry,
//! WorkloadEntry, Sidecar: read the spec and check what Istio's validation checks.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

use super::Ctx;
use meshpilot_model::Diagnostic;
use meshpilot_model::{Gateway, Resolution, Server, ServiceEntry, Sidecar, WorkloadEntry};

type Result<T = ()> = std::result::Result<T, Diagnostic>;

pub(super) fn gateway(doc: Value, ctx: &Ctx) -> Result<Gateway> {
    let gw: Gateway = ctx.spec(doc)?;
    if gw.servers.is_empty() {
        return Err(ctx.err("spec.servers", "a Gateway needs at least one server"));
    }
    for (i, server) in gw.servers.iter().enumerate() {
        let at = format!("spec.servers[{i}]");
        if server.port.number == 0 {
            return Err(ctx.err(
                &format!("{at}.port.number"),
                "a server needs a port (port.number)",
            ));
        }
        ctx.port(&format!("{at}.port.number"), server.port.number.into())?;
        if let Some(target) = server.port.target_port {
            ctx.port(&format!("{at}.port.targetPort"), target.into())?;
        }
        if server.hosts.is_empty() {
            return Err(ctx.err(&format!("{at}.hosts"), "a server needs at least one host"));
        }
        for (j, host) in server.hosts.iter().enumerate() {
            if host.trim().is_empty() {
                return Err(ctx.err(&format!("{at}.hosts[{j}]"), "host must not be empty"));
            }
        }
        // istiod names each server's listener ports by `port.name`, so it must be set and
        // unique.
        if server.port.name.is_empty() {
            return Err(ctx.err(&format!("{at}.port.name"), "a server port needs a name"));
        }
        if let Some(j) = gw.servers[..i]
            .iter()
            .position(|s| s.port.name == server.port.name)
        {
            return Err(ctx.err(
                &format!("{at}.port.name"),
                format!(
                    "port name `{}` is also spec.servers[{j}]'s: server port names must be unique",
                    server.port.name
                ),
            ));
        }
        server_tls(ctx, &at, server)?;
    }
    Ok(gw)
}

/// istiod's rule for a server's `tls` by its port's protocol: HTTPS and TLS need it; a
/// plain-text HTTP port takes it only to redirect to HTTPS (mode absent or a passthrough mode,
/// no certificate), and other plain-text ports not at all. Serving the port in plain text
/// while the user asked for TLS would be silent, so the Gateway is refused.
fn server_tls(ctx: &Ctx, at: &str, server: &Server) -> Result {
    let protocol = server.port.protocol.to_ascii_uppercase();
    let tls_port = matches!(protocol.as_str(), "HTTPS" | "TLS");
    // An empty protocol is served as HTTP.
    let http_port = matches!(
        protocol.as_str(),
        "" | "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" | "HTTP_PROXY"
    );
    let field = format!("{at}.tls");
    match &server.tls {
        None if tls_port => Err(ctx.err(
            &field,
            format!("a {protocol} server needs tls settings (tls.mode and its certificates)"),
        )),
        Some(_) if !tls_port && !http_port => Err(ctx.err(
            &field,
            format!(
                "a {protocol} server is plain text and takes no tls settings; use protocol TLS \
                 or HTTPS to serve TLS"
            ),
        )),
        Some(tls) if http_port => {
            let passthrough = tls.mode.as_deref().is_none_or(|m| {
                m.eq_ignore_ascii_case("PASSTHROUGH") || m.eq_ignore_ascii_case("AUTO_PASSTHROUGH")
            });
            let certificates = [
                &tls.server_certificate,
                &tls.private_key,
                &tls.ca_certificates,
            ]
            .iter()
            .any(|c| c.as_deref().is_some_and(|c| !c.is_empty()));
            if passthrough && !certificates {
                return Ok(());
            }
            let plain = if protocol.is_empty() {
                "HTTP"
            } else {
                &protocol
            };
            Err(ctx.err(
                &field,
                format!(
                    "a {plain} server is plain text: its tls may only set httpsRedirect (no \
                     mode, no certificates); use protocol HTTPS to terminate TLS"
                ),
            ))
        }
        _ => Ok(()),
    }
}

pub(super) fn service_entry(doc: Value, ctx: &Ctx) -> Result<ServiceEntry> {
    let se: ServiceEntry = ctx.spec(doc)?;
    if se.hosts.is_empty() {
        return Err(ctx.err("spec.hosts", "a ServiceEntry needs at least one host"));
    }
    let dns = matches!(
        se.resolution,
        Some(Resolution::Dns | Resolution::DnsRoundRobin)
    );
    for (i, host) in se.hosts.iter().enumerate() {
        let at = format!("spec.hosts[{i}]");
        if host.trim().is_empty() {
            return Err(ctx.err(&at, "host must not be empty"));
        }
        // Istio's rule: with DNS resolution and no endpoints, the hosts themselves are resolved,
        // so they must be concrete names.
        if dns && se.endpoints.is_empty() && host.contains('*') {
            return Err(ctx.err(
                &at,
                format!(
                    "wildcard host `{host}` cannot be resolved with resolution DNS; use resolution NONE or list endpoints"
                ),
            ));
        }
    }
    for (i, addr) in se.addresses.iter().enumerate() {
        if !is_ip_or_cidr(addr) {
            return Err(ctx.err(
                &format!("spec.addresses[{i}]"),
                format!("`{addr}` is not an IP address or CIDR range"),
            ));
        }
    }
    if se.ports.is_empty() {
        return Err(ctx.err("spec.ports", "a ServiceEntry needs at least one port"));
    }
    super::export_to::check(ctx, "spec.exportTo", &se.export_to)?;
    let mut numbers: BTreeMap<u32, usize> = BTreeMap::new();
    for (i, port) in se.ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        ctx.port(&format!("{at}.number"), port.number.into())?;
        if let Some(target) = port.target_port {
            ctx.port(&format!("{at}.targetPort"), target.into())?;
        }
        // istiod's validation refuses a protocol it does not know; an empty one is sniffed.
        if let Some(protocol) = port.protocol.as_deref().filter(|p| !p.is_empty())
            && meshpilot_model::Protocol::parse(protocol).is_none()
        {
            return Err(ctx.err(
                &format!("{at}.protocol"),
                format!(
                    "unsupported protocol `{protocol}` (HTTP, HTTP2, HTTP_PROXY, GRPC, GRPC-WEB, \
                     HTTPS, TLS, TCP, MONGO, MYSQL, REDIS, THRIFT or UDP)"
                ),
            ));
        }
        if let Some(first) = numbers.insert(port.number, i) {
            return Err(ctx.err(
                &format!("{at}.number"),
                format!(
                    "port {} is listed twice (also spec.ports[{first}])",
                    port.number
                ),
            ));
        }
    }
    // istiod's validation: endpoints come from one place, and a LOGICAL_DNS cluster resolves
    // one name.
    if se.workload_selector.is_some() && !se.endpoints.is_empty() {
        return Err(ctx.err(
            "spec.workloadSelector",
            "a ServiceEntry takes only one of workloadSelector and endpoints",
        ));
    }
    if se.resolution == Some(Resolution::DnsRoundRobin) && se.endpoints.len() > 1 {
        return Err(ctx.err(
            "spec.endpoints",
            "resolution DNS_ROUND_ROBIN takes at most one endpoint (use DNS for several)",
        ));
    }
    let must_be_ip = se.resolution == Some(Resolution::Static);
    for (i, endpoint) in se.endpoints.iter().enumerate() {
        workload_entry_spec(ctx, &format!("spec.endpoints[{i}]."), endpoint, must_be_ip)?;
    }
    service_entry_istiod_rules(ctx, &se)?;
    Ok(se)
}

/// The rest of istiod's ServiceEntry rules, each of which meshpilot would otherwise serve
/// differently from what the entry says (ignoring its endpoints or addresses, or a port).
fn service_entry_istiod_rules(ctx: &Ctx, se: &ServiceEntry) -> Result {
    if let Some(i) = se.hosts.iter().position(|h| h == "*") {
        return Err(ctx.err(
            &format!("spec.hosts[{i}]"),
            "host `*` is not allowed: a ServiceEntry names the hosts it adds",
        ));
    }
    let resolution = se.resolution.unwrap_or(Resolution::None);
    if let Some(i) = se.addresses.iter().position(|a| a.contains('/'))
        && !matches!(resolution, Resolution::None | Resolution::Static)
    {
        return Err(ctx.err(
            &format!("spec.addresses[{i}]"),
            "CIDR addresses are allowed only with resolution NONE or STATIC",
        ));
    }
    // Resolution NONE (also when absent) forwards to the address the client asked for: the
    // endpoints would never be used.
    if resolution == Resolution::None && !se.endpoints.is_empty() {
        return Err(ctx.err(
            "spec.endpoints",
            "resolution NONE (the default) uses no endpoints; use STATIC or DNS to send traffic to them",
        ));
    }
    for (i, port) in se.ports.iter().enumerate() {
        let at = format!("spec.ports[{i}].name");
        if !super::is_dns_label(&port.name) {
            return Err(ctx.err(
                &at,
                format!(
                    "port name {:?} must be set and be lower-case letters, digits and `-` (at most 63)",
                    port.name
                ),
            ));
        }
        if let Some(first) = se.ports[..i].iter().position(|p| p.name == port.name) {
            return Err(ctx.err(
                &at,
                format!(
                    "port name `{}` is listed twice (also spec.ports[{first}])",
                    port.name
                ),
            ));
        }
    }
    for (i, endpoint) in se.endpoints.iter().enumerate() {
        for name in endpoint.ports.keys() {
            if !se.ports.iter().any(|p| &p.name == name) {
                return Err(ctx.err(
                    &format!("spec.endpoints[{i}].ports.{name}"),
                    format!("`{name}` is not the name of one of spec.ports"),
                ));
            }
        }
    }
    Ok(())
}

pub(super) fn workload_entry(doc: Value, ctx: &Ctx) -> Result<WorkloadEntry> {
    let we: WorkloadEntry = ctx.spec(doc)?;
    workload_entry_spec(ctx, "spec.", &we, false)?;
    Ok(we)
}

/// Checks a WorkloadEntry spec (standalone, or a ServiceEntry endpoint); `at` is the field
/// prefix including its trailing dot.
fn workload_entry_spec(ctx: &Ctx, at: &str, we: &WorkloadEntry, must_be_ip: bool) -> Result {
    if we.address.trim().is_empty() {
        return Err(ctx.err(&format!("{at}address"), "address is required"));
    }
    if must_be_ip && !we.address.starts_with("unix://") && we.address.parse::<IpAddr>().is_err() {
        return Err(ctx.err(
            &format!("{at}address"),
            format!(
                "`{}` is not an IP address, as resolution STATIC requires",
                we.address
            ),
        ));
    }
    for (name, port) in &we.ports {
        ctx.port(&format!("{at}ports.{name}"), (*port).into())?;
    }
    Ok(())
}

pub(super) fn sidecar(doc: Value, ctx: &Ctx) -> Result<Sidecar> {
    let sc: Sidecar = ctx.spec(doc)?;
    for (i, listener) in sc.ingress.iter().enumerate() {
        let at = format!("spec.ingress[{i}]");
        ctx.port(&format!("{at}.port.number"), listener.port.number.into())?;
        if let Some(endpoint) = &listener.default_endpoint
            && !valid_default_endpoint(endpoint)
        {
            return Err(ctx.err(
                &format!("{at}.defaultEndpoint"),
                format!(
                    "defaultEndpoint `{endpoint}` must be 127.0.0.1:PORT, 0.0.0.0:PORT, [::1]:PORT, \
                     [::]:PORT or unix:///path"
                ),
            ));
        }
    }
    for (i, listener) in sc.egress.iter().enumerate() {
        let at = format!("spec.egress[{i}]");
        if let Some(port) = &listener.port {
            ctx.port(&format!("{at}.port.number"), port.number.into())?;
        }
        if listener.hosts.is_empty() {
            return Err(ctx.err(
                &format!("{at}.hosts"),
                "an egress listener needs at least one host",
            ));
        }
        for (j, host) in listener.hosts.iter().enumerate() {
            if !host
                .split_once('/')
                .is_some_and(|(ns, h)| !ns.is_empty() && !h.is_empty())
            {
                return Err(ctx.err(
                    &format!("{at}.hosts[{j}]"),
                    format!("egress host `{host}` must have the form namespace/host (e.g. `./*`)"),
                ));
            }
        }
    }
    if let Some(policy) = &sc.outbound_traffic_policy
        && let Some(mode) = &policy.mode
        && mode
            .as_str()
            .and_then(meshpilot_model::OutboundTrafficMode::parse)
            .is_none()
    {
        return Err(ctx.err(
            "spec.outboundTrafficPolicy.mode",
            format!("mode {mode} must be ALLOW_ANY or REGISTRY_ONLY"),
        ));
    }
    Ok(sc)
}

/// Istio's forms of a Sidecar ingress `defaultEndpoint`.
fn valid_default_endpoint(s: &str) -> bool {
    if let Some(path) = s.strip_prefix("unix://") {
        return !path.is_empty();
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    matches!(host, "127.0.0.1" | "0.0.0.0" | "[::1]" | "[::]")
        && port.parse::<u16>().is_ok_and(|p| p != 0)
}

pub(super) fn is_ip_or_cidr(s: &str) -> bool {
    match s.split_once('/') {
        None => s.parse::<IpAddr>().is_ok(),
        Some((ip, len)) => match (ip.parse::<IpAddr>(), len.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(l)) => l <= 32,
            (Ok(IpAddr::V6(_)), Ok(l)) => l <= 128,
            _ => false,
        },
    }
}
