//! VirtualService: read the spec and check it the way Istio's validation does (hosts that do
//! not overlap, one action per HTTP route and nothing beside a redirect
//! or direct response that would never apply, redirects that change the URL, relative weights,
//! destinations, string matches and header operations (through `http_strings`), durations,
//! ports, fault, retry, mirror, CORS and rewrite fields), and the shape of delegation (a
//! delegate has no hosts, gateways or layer-4 routes; a delegating route has no action of its
//! own).

use serde_json::Value;

use super::Ctx;
use super::http_strings::{self, EmptyPrefix, string_match};
use meshpilot_model::Diagnostic;
use meshpilot_model::host::{host_matches, hosts_intersect};
use meshpilot_model::{
    CorsPolicy, Destination, Headers, HttpFault, HttpMatchRequest, HttpRedirect, HttpRetry,
    HttpRewrite, HttpRoute, L4Match, Percent, RouteDestination, StringMatch, VirtualService,
    decode_base64, grpc_status_code,
};

/// Envoy's `retry_on` conditions (HTTP and gRPC) that Istio's validation accepts; any other
/// token of `retryOn` must be an HTTP status code.
const RETRY_ON: [&str; 16] = [
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

type Result<T = ()> = std::result::Result<T, Diagnostic>;

pub(super) fn convert(doc: Value, ctx: &Ctx) -> Result<VirtualService> {
    let vs: VirtualService = ctx.spec(doc)?;
    validate(ctx, &vs)?;
    Ok(vs)
}

fn validate(ctx: &Ctx, vs: &VirtualService) -> Result {
    if vs.hosts.is_empty() {
        // Without hosts a VirtualService is a delegate: only a root's `delegate` uses it, so
        // what binds it (gateways) or routes outside HTTP is the root's, as istiod validates.
        let refuse = |field: &str, what: &str| {
            ctx.err(
                field,
                format!("a delegate VirtualService (one without hosts) must have no {what}"),
            )
        };
        if !vs.gateways.is_empty() {
            return Err(refuse("spec.gateways", "gateways: its root's apply"));
        }
        if !vs.tcp.is_empty() {
            return Err(refuse("spec.tcp", "tcp routes"));
        }
        if !vs.tls.is_empty() {
            return Err(refuse("spec.tls", "tls routes"));
        }
        if let Some(i) = vs.http.iter().position(|r| r.delegate.is_some()) {
            return Err(ctx.err(
                &format!("spec.http[{i}].delegate"),
                "delegation applies only to a root VirtualService (one with hosts); a delegate cannot delegate again",
            ));
        }
    }
    // istiod refuses two hosts that overlap (one matches the other): which VirtualService
    // part serves a request would be ambiguous.
    for (j, host) in vs.hosts.iter().enumerate() {
        if let Some(i) = vs.hosts[..j].iter().position(|h| hosts_intersect(h, host)) {
            return Err(ctx.err(
                &format!("spec.hosts[{j}]"),
                format!(
                    "host `{host}` overlaps spec.hosts[{i}] `{}`: hosts must not repeat",
                    vs.hosts[i]
                ),
            ));
        }
    }
    super::export_to::check(ctx, "spec.exportTo", &vs.export_to)?;
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
        sni_within_hosts(ctx, &format!("spec.tls[{i}]"), &route.matches, &vs.hosts)?;
    }
    Ok(())
}

/// istiod's `validateSniHost`: each SNI name must be within one of the VirtualService's hosts
/// (equal, or covered by a wildcard host), so a `tls` route never takes names its hosts do not
/// claim. An IP address is not a name and is left to the proxy, as istiod only warns on it.
fn sni_within_hosts(ctx: &Ctx, at: &str, matches: &[L4Match], hosts: &[String]) -> Result {
    for (k, m) in matches.iter().enumerate() {
        for (j, sni) in m.sni_hosts.iter().enumerate() {
            if sni.parse::<std::net::IpAddr>().is_ok() || hosts.iter().any(|h| host_matches(h, sni))
            {
                continue;
            }
            return Err(ctx.err(
                &format!("{at}.match[{k}].sniHosts[{j}]"),
                format!(
                    "SNI host `{sni}` is not within any of the VirtualService's hosts [{}]: add it to spec.hosts",
                    hosts.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn http_route(ctx: &Ctx, at: &str, r: &HttpRoute) -> Result {
    if let Some(d) = &r.delegate {
        if d.name.trim().is_empty() {
            return Err(ctx.err(&format!("{at}.delegate.name"), "a delegate needs a name"));
        }
        // The delegate's routes replace this one, so it may carry no action of its own.
        for (set, what) in [
            (!r.route.is_empty(), "route"),
            (r.redirect.is_some(), "redirect"),
            (r.direct_response.is_some(), "directResponse"),
        ] {
            if set {
                return Err(ctx.err(
                    &format!("{at}.{what}"),
                    format!("an HTTP route may not have both {what} and delegate"),
                ));
            }
        }
    }
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
        [] if r.delegate.is_some() => {}
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
    action_conflicts(ctx, at, r)?;
    for (k, m) in r.matches.iter().enumerate() {
        http_match(ctx, &format!("{at}.match[{k}]"), m)?;
    }
    if let Some(headers) = &r.headers {
        http_strings::header_operations(ctx, &format!("{at}.headers"), headers)?;
        authority_set_once(ctx, at, r.rewrite.as_ref(), headers)?;
    }
    for (j, d) in r.route.iter().enumerate() {
        if let Some(headers) = &d.headers {
            http_strings::header_operations(ctx, &format!("{at}.route[{j}].headers"), headers)?;
        }
    }
    let dests: Vec<_> = r.route.iter().map(|d| (&d.destination, d.weight)).collect();
    weighted_destinations(ctx, at, &dests)?;
    if let Some(redirect) = &r.redirect {
        if let Some(port) = redirect.port {
            ctx.port(&format!("{at}.redirect.port"), port.into())?;
            if redirect.derive_port.is_some() {
                return Err(ctx.err(
                    &format!("{at}.redirect"),
                    "a redirect takes only one of port and derivePort",
                ));
            }
        }
        if let Some(code) = redirect.redirect_code
            && ![301, 302, 303, 307, 308].contains(&code)
        {
            return Err(ctx.err(
                &format!("{at}.redirect.redirectCode"),
                format!("redirect code {code} is not one of 301, 302, 303, 307, 308"),
            ));
        }
        if redirect.uri.is_some() && redirect.prefix_rewrite.is_some() {
            return Err(ctx.err(
                &format!("{at}.redirect"),
                "a redirect takes only one of uri and prefixRewrite",
            ));
        }
        redirect_target(ctx, at, redirect, &r.matches)?;
    }
    if let Some(direct) = &r.direct_response {
        http_status(ctx, &format!("{at}.directResponse.status"), direct.status)?;
        if let Some(body) = &direct.body {
            let field = format!("{at}.directResponse.body");
            match (&body.string, &body.bytes) {
                (Some(_), Some(_)) => {
                    return Err(ctx.err(&field, "a body takes only one of string and bytes"));
                }
                (None, Some(b)) if decode_base64(b).is_none() => {
                    return Err(ctx.err(
                        &format!("{field}.bytes"),
                        "bytes must be base64, as protobuf bytes are written in YAML and JSON",
                    ));
                }
                _ => {}
            }
        }
    }
    if let Some(rewrite) = &r.rewrite
        && [&rewrite.uri, &rewrite.authority]
            .iter()
            .all(|v| v.as_deref().is_none_or(str::is_empty))
        && rewrite.uri_regex_rewrite.is_none()
    {
        return Err(ctx.err(
            &format!("{at}.rewrite"),
            "a rewrite needs at least one of uri, uriRegexRewrite and authority",
        ));
    }
    if let Some(rewrite) = &r.rewrite
        && let Some(re) = &rewrite.uri_regex_rewrite
    {
        if rewrite.uri.is_some() {
            return Err(ctx.err(
                &format!("{at}.rewrite"),
                "a rewrite takes only one of uri and uriRegexRewrite",
            ));
        }
        let field = format!("{at}.rewrite.uriRegexRewrite");
        if re.pattern.is_empty() || re.rewrite.is_empty() {
            let which = if re.pattern.is_empty() {
                "match"
            } else {
                "rewrite"
            };
            return Err(ctx.err(
                &format!("{field}.{which}"),
                "uriRegexRewrite needs both match and rewrite",
            ));
        }
        // Named as a StringMatch's regex is, as the field has always been named.
        http_strings::regex(ctx, &format!("{field}.match.regex"), &re.pattern)?;
    }
    ctx.duration(&format!("{at}.timeout"), r.timeout.as_deref())?;
    if let Some(retries) = &r.retries {
        retry(ctx, &format!("{at}.retries"), retries)?;
    }
    if let Some(f) = &r.fault {
        fault(ctx, &format!("{at}.fault"), f)?;
    }
    if let Some(mirror) = &r.mirror {
        destination(ctx, &format!("{at}.mirror"), mirror)?;
        if !r.mirrors.is_empty() {
            return Err(ctx.err(
                &format!("{at}.mirrors"),
                "a route takes only one of mirror and mirrors",
            ));
        }
    }
    percent(
        ctx,
        &format!("{at}.mirrorPercentage"),
        r.mirror_percentage.as_ref(),
    )?;
    if let Some(p) = r.mirror_percent
        && p > 100
    {
        return Err(ctx.err(
            &format!("{at}.mirrorPercent"),
            format!("percentage {p} is out of range (0-100)"),
        ));
    }
    for (k, m) in r.mirrors.iter().enumerate() {
        destination(
            ctx,
            &format!("{at}.mirrors[{k}].destination"),
            &m.destination,
        )?;
        percent(
            ctx,
            &format!("{at}.mirrors[{k}].percentage"),
            m.percentage.as_ref(),
        )?;
    }
    if let Some(cors) = &r.cors_policy {
        cors_policy(ctx, &format!("{at}.corsPolicy"), cors)?;
    }
    Ok(())
}

/// A redirect or a direct response answers the request itself: a rewrite or a fault on the
/// same route would never apply, and istiod refuses the route.
fn action_conflicts(ctx: &Ctx, at: &str, r: &HttpRoute) -> Result {
    let answer = if r.redirect.is_some() {
        "redirect"
    } else if r.direct_response.is_some() {
        "directResponse"
    } else {
        return Ok(());
    };
    for (set, what) in [
        (r.rewrite.is_some(), "rewrite"),
        (r.fault.is_some(), "fault"),
    ] {
        if set {
            return Err(ctx.err(
                &format!("{at}.{what}"),
                format!("an HTTP route with a {answer} takes no {what}: it would never apply"),
            ));
        }
    }
    Ok(())
}

/// A redirect must change something (else it answers every request with a redirect to the
/// same URL, forever); `prefixRewrite` needs prefix URI matches (the prefix it replaces); the
/// scheme is `http` or `https`.
fn redirect_target(
    ctx: &Ctx,
    at: &str,
    redirect: &HttpRedirect,
    matches: &[HttpMatchRequest],
) -> Result {
    let set = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.is_empty());
    if !set(&redirect.uri)
        && !set(&redirect.prefix_rewrite)
        && !set(&redirect.authority)
        && !set(&redirect.scheme)
        && redirect.port.is_none()
        && redirect.derive_port.is_none()
    {
        return Err(ctx.err(
            &format!("{at}.redirect"),
            "a redirect must set uri, prefixRewrite, authority, scheme or a port: else it \
             redirects to the same URL, in a loop",
        ));
    }
    if set(&redirect.prefix_rewrite)
        && let Some(k) = matches.iter().position(|m| {
            m.uri
                .as_ref()
                .is_some_and(|u| !matches!(u, StringMatch::Prefix(_)))
        })
    {
        return Err(ctx.err(
            &format!("{at}.redirect.prefixRewrite"),
            format!(
                "prefixRewrite replaces the matched prefix, but {at}.match[{k}].uri is not a \
                 prefix match"
            ),
        ));
    }
    if let Some(scheme) = redirect.scheme.as_deref().filter(|s| !s.is_empty())
        && scheme != "http"
        && scheme != "https"
    {
        return Err(ctx.err(
            &format!("{at}.redirect.scheme"),
            format!("redirect scheme {scheme:?} must be http or https"),
        ));
    }
    Ok(())
}

/// The request's authority is set in one place only: `rewrite.authority` or one `host` /
/// `:authority` header among the route's request `set` and `add`, as istiod requires.
fn authority_set_once(
    ctx: &Ctx,
    at: &str,
    rewrite: Option<&HttpRewrite>,
    headers: &Headers,
) -> Result {
    let Some(request) = &headers.request else {
        return Ok(());
    };
    let mut current = rewrite
        .and_then(|r| r.authority.as_deref())
        .filter(|a| !a.is_empty())
        .map(|_| format!("{at}.rewrite.authority"));
    for (verb, map) in [("set", &request.set), ("add", &request.add)] {
        for name in map.keys().filter(|n| http_strings::is_authority_header(n)) {
            let field = format!("{at}.headers.request.{verb}.{name}");
            if let Some(first) = &current {
                return Err(ctx.err(
                    &field,
                    format!("the authority is already set by {first}: it can be set only once"),
                ));
            }
            current = Some(field);
        }
    }
    Ok(())
}

fn retry(ctx: &Ctx, at: &str, retries: &HttpRetry) -> Result {
    if retries.attempts < 0 {
        return Err(ctx.err(
            &format!("{at}.attempts"),
            format!("attempts {} must not be negative", retries.attempts),
        ));
    }
    if retries.attempts == 0
        && (retries.per_try_timeout.is_some()
            || retries.retry_on.as_deref().is_some_and(|s| !s.is_empty())
            || retries.retry_remote_localities.is_some())
    {
        return Err(ctx.err(
            at,
            "attempts 0 turns retries off: perTryTimeout, retryOn and retryRemoteLocalities would do nothing",
        ));
    }
    ctx.duration(
        &format!("{at}.perTryTimeout"),
        retries.per_try_timeout.as_deref(),
    )?;
    ctx.duration(&format!("{at}.backoff"), retries.backoff.as_deref())?;
    for token in retries.retry_on.iter().flat_map(|s| s.split(',')) {
        let token = token.trim();
        let status = token.parse::<u32>().ok();
        if RETRY_ON.contains(&token) || status.is_some_and(|s| (100..=599).contains(&s)) {
            continue;
        }
        return Err(ctx.err(
            &format!("{at}.retryOn"),
            format!(
                "{token:?} is neither an HTTP status code nor a retry condition ({})",
                RETRY_ON.join(", ")
            ),
        ));
    }
    Ok(())
}

fn fault(ctx: &Ctx, at: &str, fault: &HttpFault) -> Result {
    if fault.delay.is_none() && fault.abort.is_none() {
        return Err(ctx.err(at, "a fault needs an abort, a delay or both"));
    }
    if let Some(delay) = &fault.delay {
        // Like istiod: exponential delays are refused; a delay of neither kind is accepted and
        // does nothing (compile warns).
        if delay.exponential_delay.is_some() {
            return Err(ctx.err(
                &format!("{at}.delay.exponentialDelay"),
                "exponential delays are not supported (istiod refuses them too); use fixedDelay",
            ));
        }
        ctx.duration(
            &format!("{at}.delay.fixedDelay"),
            delay.fixed_delay.as_deref(),
        )?;
        percent(
            ctx,
            &format!("{at}.delay.percentage"),
            delay.percentage.as_ref(),
        )?;
        if let Some(p) = delay.percent
            && !(0..=100).contains(&p)
        {
            return Err(ctx.err(
                &format!("{at}.delay.percent"),
                format!("percentage {p} is out of range (0-100)"),
            ));
        }
    }
    if let Some(abort) = &fault.abort {
        let kinds = [
            abort.http_status.is_some(),
            abort.grpc_status.is_some(),
            abort.http2_error.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return Err(ctx.err(
                &format!("{at}.abort"),
                "a fault abort takes only one of httpStatus, grpcStatus and http2Error",
            ));
        }
        if abort.http2_error.is_some() {
            return Err(ctx.err(
                &format!("{at}.abort.http2Error"),
                "HTTP/2 error aborts are not supported (istiod refuses them too); use httpStatus or grpcStatus",
            ));
        }
        if let Some(status) = abort.http_status {
            http_status(ctx, &format!("{at}.abort.httpStatus"), status)?;
        }
        if let Some(name) = &abort.grpc_status
            && grpc_status_code(name).is_none()
        {
            return Err(ctx.err(
                &format!("{at}.abort.grpcStatus"),
                format!("{name:?} is not a gRPC status name (e.g. UNAVAILABLE, NOT_FOUND)"),
            ));
        }
        percent(
            ctx,
            &format!("{at}.abort.percentage"),
            abort.percentage.as_ref(),
        )?;
    }
    Ok(())
}

fn http_match(ctx: &Ctx, at: &str, m: &HttpMatchRequest) -> Result {
    // An empty URI prefix matches every path; Envoy's other string matchers take no empty
    // prefix (istiod checks the same).
    let singles = [
        ("uri", &m.uri, EmptyPrefix::Allowed),
        ("scheme", &m.scheme, EmptyPrefix::Refused),
        ("method", &m.method, EmptyPrefix::Refused),
        ("authority", &m.authority, EmptyPrefix::Refused),
    ];
    for (name, sm, empty_prefix) in singles {
        if let Some(sm) = sm {
            string_match(ctx, &format!("{at}.{name}"), sm, empty_prefix)?;
        }
    }
    let maps = [
        ("headers", &m.headers),
        ("queryParams", &m.query_params),
        ("withoutHeaders", &m.without_headers),
    ];
    for (name, map) in maps {
        for (key, sm) in map {
            let field = format!("{at}.{name}.{key}");
            if name != "queryParams" {
                http_strings::match_header_name(ctx, &field, key)?;
            }
            // Istio reads a regex of `*` on a header or query parameter as "present".
            if matches!(sm, StringMatch::Regex(re) if re == "*") {
                continue;
            }
            string_match(ctx, &field, sm, EmptyPrefix::Refused)?;
        }
    }
    if let Some(port) = m.port {
        ctx.port(&format!("{at}.port"), port.into())?;
    }
    if let Some(ns) = m.source_namespace.as_deref().filter(|ns| !ns.is_empty())
        && !super::is_dns_label(ns)
    {
        return Err(ctx.err(
            &format!("{at}.sourceNamespace"),
            format!(
                "{ns:?} is not a namespace name (lower-case letters, digits and `-`, at most 63)"
            ),
        ));
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
        for (j, subnet) in m.destination_subnets.iter().enumerate() {
            if !super::istio::is_ip_or_cidr(subnet) {
                return Err(ctx.err(
                    &format!("{at}.match[{k}].destinationSubnets[{j}]"),
                    format!("`{subnet}` is not an IP address or CIDR range"),
                ));
            }
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

/// Istio's weight rule (since 1.15): weights are relative, so each must be at least 0 and,
/// with more than one destination, some must be above 0. A single destination may omit its
/// weight.
fn weighted_destinations(ctx: &Ctx, at: &str, dests: &[(&Destination, Option<i64>)]) -> Result {
    let mut total: i64 = 0;
    for (j, (dest, weight)) in dests.iter().enumerate() {
        destination(ctx, &format!("{at}.route[{j}].destination"), dest)?;
        if let Some(w) = *weight {
            if !(0..=i64::from(u32::MAX)).contains(&w) {
                return Err(ctx.err(
                    &format!("{at}.route[{j}].weight"),
                    format!("weight {w} must not be negative"),
                ));
            }
            total = total.saturating_add(w);
        }
    }
    if dests.len() > 1 && total == 0 {
        return Err(ctx.err(
            &format!("{at}.route"),
            format!(
                "the weights of the {} destinations are all 0: no destination would get traffic",
                dests.len()
            ),
        ));
    }
    if total > i64::from(u32::MAX) {
        return Err(ctx.err(
            &format!("{at}.route"),
            format!("the weights sum to {total}, more than Envoy accepts (4294967295)"),
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
        let field = format!("{at}.allowOrigins[{k}]");
        if *origin == StringMatch::Any {
            return Err(ctx.err(&field, "an origin needs one of exact, prefix or regex"));
        }
        if let StringMatch::Exact(v) = origin
            && v.is_empty()
        {
            return Err(ctx.err(&format!("{field}.exact"), "an origin must not be empty"));
        }
        string_match(ctx, &field, origin, EmptyPrefix::Refused)?;
    }
    for (name, list) in [
        ("allowHeaders", &cors.allow_headers),
        ("exposeHeaders", &cors.expose_headers),
    ] {
        for (k, header) in list.iter().enumerate() {
            http_strings::cors_header_name(ctx, &format!("{at}.{name}[{k}]"), header)?;
        }
    }
    const METHODS: [&str; 10] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
    ];
    for (k, m) in cors.allow_methods.iter().enumerate() {
        if !METHODS.contains(&m.as_str()) {
            return Err(ctx.err(
                &format!("{at}.allowMethods[{k}]"),
                format!("{m:?} is not an HTTP method ({})", METHODS.join(", ")),
            ));
        }
    }
    if let Some(u) = &cors.unmatched_preflights
        && !["FORWARD", "IGNORE", "UNSPECIFIED"].contains(&u.as_str())
    {
        return Err(ctx.err(
            &format!("{at}.unmatchedPreflights"),
            format!("{u:?} is not one of FORWARD, IGNORE"),
        ));
    }
    ctx.duration(&format!("{at}.maxAge"), cors.max_age.as_deref())
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
