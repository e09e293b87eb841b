//! DestinationRule `localityLbSetting`: what istiod's validation refuses, naming the field
//! (`spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to`).

use meshpilot_model::{Diagnostic, LocalityLbSetting};

use super::Ctx;

type Result<T = ()> = std::result::Result<T, Diagnostic>;

/// The topology labels `failoverPriority` may not use beside `failover` (they would order
/// regions twice).
const TOPOLOGY_LABELS: [&str; 3] = [
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

/// Checks `lb` (at `at`, the `localityLbSetting` field) as istiod's `ValidateLocalityLbSetting`.
pub(super) fn check(ctx: &Ctx, at: &str, lb: &LocalityLbSetting) -> Result {
    if !lb.distribute.is_empty() && !lb.failover.is_empty() {
        return Err(ctx.err(
            at,
            "`distribute` and `failover` are alternatives: set one of them",
        ));
    }
    if !lb.failover.is_empty() {
        for (i, label) in lb.failover_priority.iter().enumerate() {
            if TOPOLOGY_LABELS.contains(&label.as_str()) {
                return Err(ctx.err(
                    &format!("{at}.failoverPriority[{i}]"),
                    format!("topology label `{label}` cannot be used with `failover`"),
                ));
            }
        }
    }
    for (i, d) in lb.distribute.iter().enumerate() {
        let at = format!("{at}.distribute[{i}]");
        let mut total = 0u32;
        for (locality, weight) in &d.to {
            if !(1..=100).contains(weight) {
                return Err(ctx.err(
                    &format!("{at}.to"),
                    format!("weight {weight} of `{locality}` is out of range (1-100)"),
                ));
            }
            total += weight;
        }
        if total != 100 {
            return Err(ctx.err(
                &format!("{at}.to"),
                format!("the weights add up to {total}, not 100"),
            ));
        }
        localities(ctx, &format!("{at}.to"), d.to.keys().map(String::as_str))?;
    }
    localities(
        ctx,
        &format!("{at}.distribute"),
        lb.distribute.iter().map(|d| d.from.as_str()),
    )?;
    for (i, f) in lb.failover.iter().enumerate() {
        let at = format!("{at}.failover[{i}]");
        if f.from == f.to {
            return Err(ctx.err(&at, "`from` and `to` must be different regions"));
        }
        if f.from.contains('/') || f.to.contains('/') {
            return Err(ctx.err(&at, "failover names regions only (no `/`)"));
        }
        if f.from.contains('*') || f.to.contains('*') {
            return Err(ctx.err(&at, "failover regions cannot hold the `*` wildcard"));
        }
    }
    Ok(())
}

/// istiod's `validateLocalities`: each locality is `REGION[/ZONE[/SUBZONE]]` with no empty
/// part and at most one `*`, at the end; no two of them overlap (one covering the other).
fn localities<'a>(ctx: &Ctx, at: &str, all: impl Iterator<Item = &'a str>) -> Result {
    let mut seen: Vec<Vec<&str>> = Vec::new();
    for locality in all {
        let stars = locality.matches('*').count();
        if stars > 1 || (stars == 1 && !locality.ends_with('*')) {
            return Err(ctx.err(
                at,
                format!("locality `{locality}`: at most one `*`, at the end"),
            ));
        }
        let mut parts: Vec<&str> = locality.split('/').collect();
        if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(ctx.err(
                at,
                format!("locality `{locality}` must be REGION[/ZONE[/SUBZONE]] with no empty part"),
            ));
        }
        // A trailing `*` covers everything below the parts before it.
        if parts.last() == Some(&"*") {
            parts.pop();
        }
        if seen
            .iter()
            .any(|s| s.starts_with(&parts) || parts.starts_with(s))
        {
            return Err(ctx.err(
                at,
                format!("locality `{locality}` overlaps one named before"),
            ));
        }
        seen.push(parts);
    }
    Ok(())
}
