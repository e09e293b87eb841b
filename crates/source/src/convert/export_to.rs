//! `exportTo` lists (VirtualService, DestinationRule, ServiceEntry, the Service annotation
//! `networking.istio.io/exportTo`, and the mesh configuration's defaults) checked as istiod
//! checks them: each entry `*`, `.`, `~` or a namespace name; `~` and `*` only alone.

use meshpilot_model::Diagnostic;

use super::Ctx;

/// Checks an `exportTo` list found at `field`.
pub(super) fn check(ctx: &Ctx, field: &str, list: &[String]) -> Result<(), Diagnostic> {
    match first_problem(list) {
        Some((i, message)) => Err(ctx.err(&format!("{field}[{i}]"), message)),
        None => Ok(()),
    }
}

/// The first entry of `list` istiod would refuse: its index and why.
pub(crate) fn first_problem(list: &[String]) -> Option<(usize, String)> {
    for (i, e) in list.iter().enumerate() {
        match e.as_str() {
            "*" | "~" if list.len() > 1 => {
                return Some((
                    i,
                    format!(
                        "`{e}` must be the only entry of exportTo (it has {})",
                        list.len()
                    ),
                ));
            }
            "*" | "~" | "." => {}
            ns if is_dns_label(ns) => {}
            other => {
                return Some((
                    i,
                    format!(
                        "`{other}` is not `*`, `.`, `~` or a namespace name (lowercase letters, digits and `-`, at most 63)"
                    ),
                ));
            }
        }
    }
    None
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}
