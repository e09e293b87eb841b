//! `security.istio.io` kinds — PeerAuthentication: read the spec and check what Istio's
//! validation checks (port-level settings need a selector, ports in range); and a
//! DestinationRule's client `tls` settings.

use serde_json::Value;

use super::Ctx;
use meshpilot_model::{ClientTlsSettings, Diagnostic, PeerAuthentication};

pub(super) fn peer_authentication(doc: Value, ctx: &Ctx) -> Result<PeerAuthentication, Diagnostic> {
    let pa: PeerAuthentication = ctx.spec(doc)?;
    if !pa.port_level_mtls.is_empty() && pa.workload_selector().is_none() {
        return Err(ctx.err(
            "spec.portLevelMtls",
            "portLevelMtls needs a workload selector (spec.selector.matchLabels): a port means \
             nothing for a whole namespace",
        ));
    }
    for port in pa.port_level_mtls.keys() {
        ctx.port(&format!("spec.portLevelMtls.{port}"), (*port).into())?;
    }
    Ok(pa)
}

/// Checks a DestinationRule `tls` setting at `at`: a known mode; MUTUAL names a client
/// certificate and key (files) or a `credentialName`.
pub(super) fn client_tls(
    ctx: &Ctx,
    at: &str,
    tls: Option<&ClientTlsSettings>,
) -> Result<(), Diagnostic> {
    let Some(tls) = tls else {
        return Ok(());
    };
    match tls.mode.as_deref().unwrap_or("DISABLE") {
        "DISABLE" | "SIMPLE" | "ISTIO_MUTUAL" => Ok(()),
        "MUTUAL"
            if tls.credential_name.is_some()
                || (tls.client_certificate.is_some() && tls.private_key.is_some()) =>
        {
            Ok(())
        }
        "MUTUAL" => Err(ctx.err(
            &format!("{at}.clientCertificate"),
            "MUTUAL needs clientCertificate and privateKey (files on the proxy) or credentialName",
        )),
        other => Err(ctx.err(
            &format!("{at}.mode"),
            format!("tls mode `{other}` is not DISABLE, SIMPLE, MUTUAL or ISTIO_MUTUAL"),
        )),
    }
}
