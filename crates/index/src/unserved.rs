//! Warnings for ServiceEntry and Sidecar fields the model reads but meshpilot does not act on
//! as istiod does, each naming the field and what meshpilot does instead (the rest of the
//! object still serves). They reach `/debug/configz` with the view's other diagnostics.

use std::net::IpAddr;

use meshpilot_model::{Diagnostic, Object, ObjectRef, ServiceEntry, Sidecar, Stage};

/// The VIP of a ServiceEntry: its first address that is one IP (`/32`, `/128` or none), with
/// its index in `spec.addresses`. Its TCP ports get a listener of their own there.
pub(crate) fn service_entry_vip(se: &ServiceEntry) -> Option<(usize, IpAddr)> {
    se.addresses.iter().enumerate().find_map(|(i, a)| {
        let ip = a
            .strip_suffix("/32")
            .or_else(|| a.strip_suffix("/128"))
            .unwrap_or(a)
            .parse::<IpAddr>()
            .ok()?;
        Some((i, ip))
    })
}

/// One warning per address of `se` other than its VIP: istiod gives each address (a CIDR
/// too) a listener for the entry's TCP ports, meshpilot only the VIP.
pub(crate) fn service_entry_addresses(o: &Object, se: &ServiceEntry) -> Vec<Diagnostic> {
    let vip = service_entry_vip(se);
    se.addresses
        .iter()
        .enumerate()
        .filter(|(i, _)| vip.is_none_or(|(v, _)| v != *i))
        .map(|(i, address)| {
            let instead = match vip {
                Some((v, ip)) => format!("only spec.addresses[{v}] ({ip}) is the entry's VIP"),
                None => "the entry has no VIP (no address is a single IP)".to_string(),
            };
            warning(
                o,
                &format!("spec.addresses[{i}]"),
                format!(
                    "address `{address}` is not served: {instead}, so its TCP ports get no \
                     listener at `{address}` (HTTP ports are matched by host name and unaffected)"
                ),
            )
        })
        .collect()
}

/// One warning per Sidecar field meshpilot reads differently from istiod.
pub(crate) fn sidecar_fields(o: &Object, sc: &Sidecar) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (i, listener) in sc.ingress.iter().enumerate() {
        if let Some(bind) = &listener.bind {
            out.push(warning(
                o,
                &format!("spec.ingress[{i}].bind"),
                format!(
                    "bind `{bind}` is ignored: the port is served on the inbound capture \
                     listener (15006) for whatever address iptables redirected, not on a \
                     listener bound to `{bind}`"
                ),
            ));
        }
        // DEFAULT and IPTABLES are what meshpilot serves: only NONE differs.
        if let Some(mode) = listener
            .capture_mode
            .as_deref()
            .filter(|m| !m.eq_ignore_ascii_case("DEFAULT") && !m.eq_ignore_ascii_case("IPTABLES"))
        {
            out.push(warning(
                o,
                &format!("spec.ingress[{i}].captureMode"),
                format!(
                    "captureMode `{mode}` is ignored: inbound traffic is expected redirected by \
                     iptables to 15006 (as with IPTABLES); no listener is bound on the port \
                     itself"
                ),
            ));
        }
    }
    for (i, listener) in sc.egress.iter().enumerate() {
        if let Some(bind) = &listener.bind {
            out.push(warning(
                o,
                &format!("spec.egress[{i}].bind"),
                format!(
                    "bind `{bind}` is ignored: outbound listeners stay on 0.0.0.0 (or the \
                     service VIP) for traffic iptables redirects, none is bound to `{bind}`"
                ),
            ));
        }
        if let Some(port) = &listener.port {
            out.push(warning(
                o,
                &format!("spec.egress[{i}].port"),
                format!(
                    "port {} only limits the hosts of this egress listener to that port: no \
                     listener is created for it (istiod creates one), so the hosts are reached \
                     on port {} only if a service declares it",
                    port.number, port.number
                ),
            ));
        }
    }
    out
}

fn warning(o: &Object, field: &str, message: String) -> Diagnostic {
    Diagnostic::warning(
        Stage::Compile,
        o.meta.origin.clone(),
        ObjectRef::of(&o.key()),
        field,
        message,
    )
}
