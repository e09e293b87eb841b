//! VirtualService: read the spec and check it the way Istio's validation does (hosts, one
//! action per HTTP route, weights, destinations, regexes, durations, ports).

use serde_json::Value;

use super::Ctx;
use meshpilot_model::Diagnostic;
use meshpilot_model::{
    CorsPolicy, Destination, HttpMatchRequest, HttpRoute, L4Match, Percent, RouteDestination,
    StringMatch, VirtualService,
};

type Result<T = ()> = std::result::Result<T, Diagnostic>;

pub(super) fn convert(doc: Value, ctx: &Ctx) -> Result<VirtualService> {
    let vs: VirtualService = ctx.spec(doc)?;
    validate(ctx, &vs)?;
    Ok(vs)
}

fn validate(ctx: &Ctx, vs: &VirtualService) -> Result {
    if vs.hosts.is_empty() {
        return Err(ctx.err("spec.hosts", "a VirtualService needs at least one host"));
    }
    for (i, host) in vs.hosts.iter().enumerate() {
        if host.trim().is_empty() {
            return Err(ctx.err(&format!("spec.hosts[{i}]"), "host must not be empty"));
        }
    }
    for (i, route) in vs.http.iter().enumerate() {
        http_route(ctx, &format!("spec.http[{i}]"), route)?;
    }
    for (i, route) in vs.tcp.iter().enumerate() {
        l4_route(
            ctx,
            &format!("spec.tcp[{i}]"),
            &route.matches,
            &route.route,
            false,
        )?;
    }
    for (i, route) in vs.tls.iter().enumerate() {
        l4_route(
            ctx,
            &format!("spec.tls[{i}]"),
            &route.matches,
            &route.route,
            true,
        )?;
    }
    Ok(())
}

fn http_route(ctx: &Ctx, at: &str, r: &HttpRoute) -> Result {
    let actions: Vec<&str> = [
        (!r.route.is_empty()).then_some("route"),
        r.redirect.is_some().then_some("redirect"),
        r.direct_response.is_some().then_some("directResponse"),
    ]
    .into_iter()
    .flatten()
    .collect();
    match actions.as_slice() {
        [_] => {}
        [] => {
            return Err(ctx.err(
                at,
                "an HTTP route needs one of route, redirect or directResponse",
            ));
        }
        several => {
            return Err(ctx.err(
                at,
                format!(
                    "an HTTP route may have only one of route, redirect or directResponse, found {}",
                    several.join(" and ")
                ),
            ));
        }
    }
    for (k, m) in r.matches.iter().enumerate() {
        http_match(ctx, &format!("{at}.match[{k}]"), m)?;
    }
    let dests: Vec<_> = r.route.iter().map(|d| (&d.destination, d.weight)).collect();
    weighted_destinations(ctx, at, &dests)?;
    if let Some(redirect) = &r.redirect {
        if let Some(port) = redirect.port {
            ctx.port(&format!("{at}.redirect.port"), port.into())?;
        }
        if let Some(code) = redirect.redirect_code
            && ![301, 302, 303, 307, 308].contains(&code)
        {
            return Err(ctx.err(
                &format!("{at}.redirect.redirectCode"),
                format!("redirect code {code} is not one of 301, 302, 303, 307, 308"),
            ));
        }
    }
    if let Some(direct) = &r.direct_response {
        http_status(ctx, &format!("{at}.directResponse.status"), direct.status)?;
    }
    ctx.duration(&format!("{at}.timeout"), r.timeout.as_deref())?;
    if let Some(retries) = &r.retries {
        if retries.attempts < 0 {
            return Err(ctx.err(
                &format!("{at}.retries.attempts"),
                format!("attempts {} must not be negative", retries.attempts),
            ));
        }
        ctx.duration(
            &format!("{at}.retries.perTryTimeout"),
            retries.per_try_timeout.as_deref(),
        )?;
    }
    if let Some(fault) = &r.fault {
        if let Some(delay) = &fault.delay {
            let field = format!("{at}.fault.delay.fixedDelay");
            match &delay.fixed_delay {
                None => return Err(ctx.err(&field, "a fault delay needs fixedDelay")),
                Some(d) => ctx.duration(&field, Some(d))?,
            }
            percent(
                ctx,
                &format!("{at}.fault.delay.percentage"),
                delay.percentage.as_ref(),
            )?;
        }
        if let Some(abort) = &fault.abort {
            if let Some(status) = abort.http_status {
                http_status(ctx, &format!("{at}.fault.abort.httpStatus"), status)?;
            }
            percent(
                ctx,
                &format!("{at}.fault.abort.percentage"),
                abort.percentage.as_ref(),
            )?;
        }
    }
    if let Some(mirror) = &r.mirror {
        destination(ctx, &format!("{at}.mirror"), mirror)?;
    }
    percent(
        ctx,
        &format!("{at}.mirrorPercentage"),
        r.mirror_percentage.as_ref(),
    )?;
    if let Some(cors) = &r.cors_policy {
        cors_policy(ctx, &format!("{at}.corsPolicy"), cors)?;
    }
    Ok(())
}

fn http_match(ctx: &Ctx, at: &str, m: &HttpMatchRequest) -> Result {
    let singles = [
        ("uri", &m.uri),
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ];
    for (name, sm) in singles {
        if let Some(sm) = sm {
            string_match(ctx, &format!("{at}.{name}"), sm)?;
        }
    }
    let maps = [
        ("headers", &m.headers),
        ("queryParams", &m.query_params),
        ("withoutHeaders", &m.without_headers),
    ];
    for (name, map) in maps {
        for (key, sm) in map {
            string_match(ctx, &format!("{at}.{name}.{key}"), sm)?;
        }
    }
    if let Some(port) = m.port {
        ctx.port(&format!("{at}.port"), port.into())?;
    }
    Ok(())
}

fn l4_route(
    ctx: &Ctx,
    at: &str,
    matches: &[L4Match],
    route: &[RouteDestination],
    tls: bool,
) -> Result {
    for (k, m) in matches.iter().enumerate() {
        if let Some(port) = m.port {
            ctx.port(&format!("{at}.match[{k}].port"), port.into())?;
        }
        if tls && m.sni_hosts.is_empty() {
            return Err(ctx.err(
                &format!("{at}.match[{k}].sniHosts"),
                "a TLS match needs at least one SNI host",
            ));
        }
    }
    if route.is_empty() {
        return Err(ctx.err(
            &format!("{at}.route"),
            "a route needs at least one destination",
        ));
    }
    let dests: Vec<_> = route.iter().map(|d| (&d.destination, d.weight)).collect();
    weighted_destinations(ctx, at, &dests)
}

/// Istio's weight rule: each weight in 0–100 and, with more than one destination, a total of
/// exactly 100 (an omitted weight counts as 0). A single destination may omit its weight.
fn weighted_destinations(ctx: &Ctx, at: &str, dests: &[(&Destination, Option<i64>)]) -> Result {
    let mut total: i64 = 0;
    for (j, (dest, weight)) in dests.iter().enumerate() {
        destination(ctx, &format!("{at}.route[{j}].destination"), dest)?;
        if let Some(w) = *weight {
            if !(0..=100).contains(&w) {
                return Err(ctx.err(
                    &format!("{at}.route[{j}].weight"),
                    format!("weight {w} is out of range (0-100)"),
                ));
            }
            total += w;
        }
    }
    if dests.len() > 1 && total != 100 {
        return Err(ctx.err(
            &format!("{at}.route"),
            format!(
                "weights of the {} destinations sum to {total}; they must sum to 100",
                dests.len()
            ),
        ));
    }
    Ok(())
}

fn destination(ctx: &Ctx, at: &str, d: &Destination) -> Result {
    if d.host.trim().is_empty() {
        return Err(ctx.err(&format!("{at}.host"), "destination host is required"));
    }
    if let Some(port) = &d.port {
        ctx.port(&format!("{at}.port.number"), port.number.into())?;
    }
    if d.subset.as_deref().is_some_and(str::is_empty) {
        return Err(ctx.err(&format!("{at}.subset"), "subset must not be empty"));
    }
    Ok(())
}

fn cors_policy(ctx: &Ctx, at: &str, cors: &CorsPolicy) -> Result {
    for (k, origin) in cors.allow_origins.iter().enumerate() {
        string_match(ctx, &format!("{at}.allowOrigins[{k}]"), origin)?;
    }
    ctx.duration(&format!("{at}.maxAge"), cors.max_age.as_deref())
}

/// A regex must compile with the `regex` crate, whose syntax is close to RE2's (what Envoy uses).
pub(super) fn string_match(ctx: &Ctx, at: &str, m: &StringMatch) -> Result {
    let StringMatch::Regex(re) = m else {
        return Ok(());
    };
    regex::Regex::new(re).map(drop).map_err(|e| {
        let text = e.to_string();
        // The crate's message repeats the pattern with a caret; keep its last line, the reason.
        let reason = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().trim_start_matches("error: ").to_string())
            .unwrap_or(text);
        ctx.err(
            &format!("{at}.regex"),
            format!("invalid regex `{re}`: {reason}"),
        )
    })
}

fn http_status(ctx: &Ctx, at: &str, status: u32) -> Result {
    if (200..=599).contains(&status) {
        Ok(())
    } else {
        Err(ctx.err(
            at,
            format!("HTTP status {status} is out of range (200-599)"),
        ))
    }
}

fn percent(ctx: &Ctx, at: &str, p: Option<&Percent>) -> Result {
    match p {
        Some(p) if !(0.0..=100.0).contains(&p.value) => Err(ctx.err(
            &format!("{at}.value"),
            format!("percentage {} is out of range (0-100)", p.value),
        )),
        _ => Ok(()),
    }
}
