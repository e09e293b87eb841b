//! `exportTo` lists (VirtualService, DestinationRule, ServiceEntry, and the Service annotation
//! `networking.istio.io/exportTo`) checked as istiod checks them: each entry `*`, `.`, `~` or a
//! namespace name; `~` and `*` only alone.

use meshpilot_model::Diagnostic;

use super::Ctx;

/// Checks an `exportTo` list found at `field`.
pub(super) fn check(ctx: &Ctx, field: &str, list: &[String]) -> Result<(), Diagnostic> {
    for (i, e) in list.iter().enumerate() {
        let at = format!("{field}[{i}]");
        match e.as_str() {
            "*" | "~" if list.len() > 1 => {
                return Err(ctx.err(
                    &at,
                    format!(
                        "`{e}` must be the only entry of exportTo (it has {})",
                        list.len()
                    ),
                ));
            }
            "*" | "~" | "." => {}
            ns if is_dns_label(ns) => {}
            other => {
                return Err(ctx.err(
                    &at,
                    format!(
                        "`{other}` is not `*`, `.`, `~` or a namespace name (lowercase letters, digits and `-`, at most 63)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}
