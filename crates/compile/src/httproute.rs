//! One VirtualService's HTTP routes → Envoy routes, for one listener context (a sidecar port or
//! a gateway server port): match conditions (URI, headers, query, method, authority, scheme,
//! presence), the `port`/`gateways`/`sourceLabels`/`sourceNamespace` filters, route names,
//! weighted destinations with their header operations, redirects, direct responses, rewrites
//! and timeouts. The per-route policies (fault, CORS, retries, mirrors, header operations) are
//! translated in [`super::route_policy`]. Also which routes are catch-alls, which a gateway
//! host merged from several VirtualServices puts last.

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::config::route::v3::route_action::{
    ClusterSpecifier, HashPolicy, HostRewriteSpecifier,
};
use envoy_types::pb::envoy::config::route::v3::weighted_cluster::{ClusterWeight, cluster_weight};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, Route, RouteAction,
    RouteMatch, WeightedCluster, header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier, redirect_action, route::Action,
    route_match::PathSpecifier,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};

use super::cluster_policy;
use super::gateway_refs::names_gateway;
use super::route_policy::{self, HeaderOps, Warning};
use super::{compile_error, compile_warning, duration, names, parse_duration};
use meshpilot_index::{Named, View};
use meshpilot_model::{
    ConfigKey, DerivePort, Destination, Diagnostic, HttpMatchRequest, HttpRoute, Proxy,
    StringMatch, VirtualService, decode_base64, labels_match,
};

/// Where the routes will be served.
pub(super) struct RouteCtx<'a> {
    pub view: &'a View,
    pub vs: &'a Named<VirtualService>,
    /// The Gateway (None: sidecars, Istio's `mesh`).
    pub gateway: Option<&'a ConfigKey>,
    /// The listener port.
    pub port: u16,
    pub proxy: &'a Proxy,
    /// The routes serve a Gateway server with `tls` settings (HTTPS, or HTTP with
    /// `httpsRedirect`): as istiod's `IsTLS`, a redirect without a scheme then means https.
    pub server_tls: bool,
}

/// Istio's default retry policy for routes that do not set `retries`.
pub(super) fn default_retry_policy() -> envoy_types::pb::envoy::config::route::v3::RetryPolicy {
    route_policy::default_retry_policy()
}

/// Translates every HTTP route of the VirtualService that applies in `ctx`. A route that
/// cannot be compiled is left out with an error; a field not served as written is a warning.
pub(super) fn translate(ctx: &RouteCtx<'_>) -> (Vec<Route>, Vec<Diagnostic>) {
    let mut out = Vec::new();
    let mut diagnostics = Vec::new();
    for (i, http) in ctx.vs.spec.http.iter().enumerate() {
        let matches: Vec<&HttpMatchRequest> =
            http.matches.iter().filter(|m| applies(ctx, m)).collect();
        if !http.matches.is_empty() && matches.is_empty() {
            continue; // every match is for another port, gateway or source
        }
        let at = format!("spec.http[{i}]");
        let mut warnings: Vec<Warning> = Vec::new();
        for (k, m) in http.matches.iter().enumerate() {
            for key in m.headers.keys().chain(m.without_headers.keys()) {
                if key.starts_with("@request.auth.claims") {
                    warnings.push((
                        format!("{at}.match[{k}].headers.{key}"),
                        "JWT claim matches need RequestAuthentication, which meshpilot does not serve: this condition never matches".to_string(),
                    ));
                }
            }
        }
        let mut ops = route_policy::header_ops(
            http.headers.as_ref(),
            || format!("{at}.headers"),
            &mut warnings,
        );
        let fault = http
            .fault
            .as_ref()
            .and_then(|f| route_policy::fault(f, &format!("{at}.fault"), &mut warnings));
        let action = action(ctx, http, &at, &mut ops, &mut warnings);
        diagnostics.extend(
            warnings
                .into_iter()
                .map(|(field, message)| compile_warning(ctx.view, &ctx.vs.key, &field, message)),
        );
        let action = match action {
            Ok(a) => a,
            Err(e) => {
                diagnostics.push(*e);
                continue;
            }
        };
        let mut per_filter = std::collections::HashMap::new();
        if let Some(fault) = fault {
            per_filter.insert(
                route_policy::FAULT_FILTER.to_string(),
                super::any(route_policy::FAULT_TYPE, &fault),
            );
        }
        if let Some(c) = &http.cors_policy {
            per_filter.insert(route_policy::CORS_FILTER.to_string(), route_policy::cors(c));
        }
        let name = http.name.clone().unwrap_or_default();
        let base = Route {
            action: Some(action),
            request_headers_to_add: ops.request_add,
            request_headers_to_remove: ops.request_remove,
            response_headers_to_add: ops.response_add,
            response_headers_to_remove: ops.response_remove,
            typed_per_filter_config: per_filter,
            ..Route::default()
        };
        if matches.is_empty() {
            out.push(Route {
                name,
                r#match: Some(prefix_all()),
                ..base
            });
        } else {
            for m in matches {
                out.push(Route {
                    // istiod names a route `ROUTE.MATCH` when its match block has a name.
                    name: match m.name.as_deref().filter(|n| !n.is_empty()) {
                        Some(match_name) => format!("{name}.{match_name}"),
                        None => name.clone(),
                    },
                    r#match: Some(route_match(m)),
                    stat_prefix: m.stat_prefix.clone().unwrap_or_default(),
                    ..base.clone()
                });
            }
        }
    }
    (out, diagnostics)
}

/// True when a match condition applies to this listener, gateway and proxy.
fn applies(ctx: &RouteCtx<'_>, m: &HttpMatchRequest) -> bool {
    if let Some(p) = m.port
        && p != u32::from(ctx.port)
    {
        return false;
    }
    // As istiod decides it: a match naming gateways applies on those gateways (and `mesh`)
    // whatever its source labels and namespace say; otherwise the proxy's own labels and
    // namespace must fit.
    if !m.gateways.is_empty() {
        return match ctx.gateway {
            None => m.gateways.iter().any(|g| g == "mesh"),
            Some(gw) => names_gateway(&m.gateways, &ctx.vs.key.namespace, gw),
        };
    }
    labels_match(&m.source_labels, &ctx.proxy.labels)
        && m.source_namespace
            .as_deref()
            .is_none_or(|ns| ns.is_empty() || ns == &*ctx.proxy.namespace)
}

fn prefix_all() -> RouteMatch {
    RouteMatch {
        path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
        ..RouteMatch::default()
    }
}

/// An Envoy string matcher for an Istio StringMatch. `Any` (`{}`) matches every value.
pub(super) fn string_matcher(m: &StringMatch, ignore_case: bool) -> StringMatcher {
    let regex = |r: &str| {
        MatchPattern::SafeRegex(RegexMatcher {
            regex: r.to_string(),
            ..RegexMatcher::default()
        })
    };
    let pattern = match m {
        StringMatch::Exact(s) => MatchPattern::Exact(s.clone()),
        StringMatch::Prefix(s) => MatchPattern::Prefix(s.clone()),
        StringMatch::Regex(s) => regex(s),
        StringMatch::Any => regex(".*"),
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ignore_case,
    }
}

/// True for what istiod reads as "the header (or parameter) is present": `{}` or regex `*`.
fn presence(m: &StringMatch) -> bool {
    match m {
        StringMatch::Any => true,
        StringMatch::Regex(r) => r == "*",
        _ => false,
    }
}

/// A header matcher. For `withoutHeaders` (`invert`), a value match treats a missing header
/// as empty, so a request without the header matches, as under istiod.
fn header(name: &str, m: &StringMatch, invert: bool) -> HeaderMatcher {
    let (specifier, treat_missing_header_as_empty) = if presence(m) {
        (HeaderMatchSpecifier::PresentMatch(true), false)
    } else {
        (
            HeaderMatchSpecifier::StringMatch(string_matcher(m, false)),
            invert,
        )
    };
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(specifier),
        invert_match: invert,
        treat_missing_header_as_empty,
    }
}

fn route_match(m: &HttpMatchRequest) -> RouteMatch {
    let path_specifier = Some(match &m.uri {
        None | Some(StringMatch::Any) => PathSpecifier::Prefix("/".to_string()),
        Some(StringMatch::Exact(s)) => PathSpecifier::Path(s.clone()),
        Some(StringMatch::Prefix(s)) => PathSpecifier::Prefix(s.clone()),
        Some(StringMatch::Regex(s)) => PathSpecifier::SafeRegex(RegexMatcher {
            regex: s.clone(),
            ..RegexMatcher::default()
        }),
    });
    let mut headers: Vec<HeaderMatcher> = Vec::new();
    if let Some(x) = &m.method {
        headers.push(header(":method", x, false));
    }
    if let Some(x) = &m.authority {
        headers.push(header(":authority", x, false));
    }
    if let Some(x) = &m.scheme {
        headers.push(header(":scheme", x, false));
    }
    for (name, x) in &m.headers {
        headers.push(header(&name.to_ascii_lowercase(), x, false));
    }
    for (name, x) in &m.without_headers {
        headers.push(header(&name.to_ascii_lowercase(), x, true));
    }
    RouteMatch {
        path_specifier,
        case_sensitive: m.ignore_uri_case.then_some(BoolValue { value: false }),
        headers,
        query_parameters: m
            .query_params
            .iter()
            .map(|(name, x)| QueryParameterMatcher {
                name: name.clone(),
                query_parameter_match_specifier: Some(if presence(x) {
                    QueryParameterMatchSpecifier::PresentMatch(true)
                } else {
                    QueryParameterMatchSpecifier::StringMatch(string_matcher(x, false))
                }),
            })
            .collect(),
        ..RouteMatch::default()
    }
}

/// The route's action. `ops` are the route-level header operations: with a single
/// destination, istiod adds that destination's operations to them.
fn action(
    ctx: &RouteCtx<'_>,
    http: &HttpRoute,
    at: &str,
    ops: &mut HeaderOps,
    warnings: &mut Vec<Warning>,
) -> Result<Action, Box<Diagnostic>> {
    if let Some(r) = &http.redirect {
        let mut port = r.port.unwrap_or(0);
        if r.derive_port == Some(DerivePort::FromRequestPort) {
            // Envoy cannot copy the request's port, but these routes serve one port.
            port = u32::from(ctx.port);
        }
        // A scheme's own default port is left out of the location, as istiod's
        // `ApplyRedirect` does; without a scheme the redirect keeps the request's, which
        // istiod takes to be https on a server with TLS settings and http elsewhere.
        let scheme = r
            .scheme
            .as_deref()
            .unwrap_or(if ctx.server_tls { "https" } else { "http" });
        match (scheme, port) {
            ("http", 80) | ("https", 443) => port = 0,
            _ => {}
        }
        let path = match (&r.uri, &r.prefix_rewrite) {
            (Some(uri), _) => Some(redirect_action::PathRewriteSpecifier::PathRedirect(
                uri.clone(),
            )),
            (None, Some(prefix)) => Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(
                prefix.clone(),
            )),
            (None, None) => None,
        };
        return Ok(Action::Redirect(RedirectAction {
            host_redirect: r.authority.clone().unwrap_or_default(),
            port_redirect: port,
            path_rewrite_specifier: path,
            scheme_rewrite_specifier: r
                .scheme
                .clone()
                .map(redirect_action::SchemeRewriteSpecifier::SchemeRedirect),
            response_code: redirect_code(r.redirect_code.unwrap_or(301)) as i32,
            ..RedirectAction::default()
        }));
    }
    if let Some(d) = &http.direct_response {
        let body = d.body.as_ref().and_then(|b| match (&b.string, &b.bytes) {
            (Some(s), _) => Some(data_source::Specifier::InlineString(s.clone())),
            (None, Some(b)) => decode_base64(b).map(data_source::Specifier::InlineBytes),
            (None, None) => None,
        });
        return Ok(Action::DirectResponse(DirectResponseAction {
            status: d.status,
            body: body.map(|specifier| DataSource {
                specifier: Some(specifier),
                ..DataSource::default()
            }),
            ..DirectResponseAction::default()
        }));
    }
    // Weights are relative; with several destinations a weight of 0 (or none) gets nothing.
    let mut clusters: Vec<(String, u32, HeaderOps)> = Vec::new();
    let mut hash = None;
    for (j, d) in http.route.iter().enumerate() {
        let weight = d
            .weight
            .unwrap_or(if http.route.len() == 1 { 100 } else { 0 });
        if weight <= 0 && http.route.len() > 1 {
            continue;
        }
        let field = format!("{at}.route[{j}].destination");
        let (name, dest_hash) = cluster_for(ctx, &d.destination, &field, warnings)?;
        hash = hash.or(dest_hash);
        let dest_ops = route_policy::header_ops(
            d.headers.as_ref(),
            || format!("{at}.route[{j}].headers"),
            warnings,
        );
        clusters.push((name, u32::try_from(weight).unwrap_or(u32::MAX), dest_ops));
    }
    // istiod's precedence for the host rewrite: `rewrite.authority`, then a `host` set in the
    // route's headers, then one in the single destination's.
    let mut authority = http
        .rewrite
        .as_ref()
        .and_then(|r| r.authority.clone())
        .or(ops.authority.take());
    // As istiod: a route to one destination carries its consistent-hash policy; a weighted
    // pick is random, so weighted routes carry none.
    let mut hash_policy = Vec::new();
    let cluster_specifier = match clusters.len() {
        0 => {
            return Err(Box::new(compile_error(
                ctx.view,
                &ctx.vs.key,
                &format!("{at}.route"),
                "no destination with a positive weight".to_string(),
            )));
        }
        1 => {
            let (name, _, dest) = clusters.remove(0);
            hash_policy.extend(hash);
            ops.request_add.extend(dest.request_add);
            ops.request_remove.extend(dest.request_remove);
            ops.response_add.extend(dest.response_add);
            ops.response_remove.extend(dest.response_remove);
            authority = authority.or(dest.authority);
            ClusterSpecifier::Cluster(name)
        }
        _ => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: clusters
                .into_iter()
                .map(|(name, w, dest)| ClusterWeight {
                    name,
                    weight: Some(UInt32Value { value: w }),
                    request_headers_to_add: dest.request_add,
                    request_headers_to_remove: dest.request_remove,
                    response_headers_to_add: dest.response_add,
                    response_headers_to_remove: dest.response_remove,
                    host_rewrite_specifier: dest
                        .authority
                        .map(cluster_weight::HostRewriteSpecifier::HostRewriteLiteral),
                    ..ClusterWeight::default()
                })
                .collect(),
            ..WeightedCluster::default()
        }),
    };
    let timeout = duration(
        http.timeout
            .as_deref()
            .and_then(parse_duration)
            .unwrap_or(std::time::Duration::ZERO),
    );
    let mut mirrors = Vec::new();
    if let Some(m) = &http.mirror
        && let Some(share) =
            route_policy::mirror_share(http.mirror_percentage.as_ref(), http.mirror_percent)
    {
        let (cluster, _) = cluster_for(ctx, m, &format!("{at}.mirror"), warnings)?;
        mirrors.push(route_policy::mirror(cluster, share));
    }
    for (k, m) in http.mirrors.iter().enumerate() {
        if let Some(share) = route_policy::mirror_share(m.percentage.as_ref(), None) {
            let (cluster, _) = cluster_for(
                ctx,
                &m.destination,
                &format!("{at}.mirrors[{k}].destination"),
                warnings,
            )?;
            mirrors.push(route_policy::mirror(cluster, share));
        }
    }
    let rewrite = http.rewrite.as_ref();
    // istiod sets the deprecated `max_grpc_timeout` to the route timeout, so a gRPC client's
    // `grpc-timeout` header is honoured up to it.
    #[allow(deprecated)]
    let route_action = RouteAction {
        cluster_specifier: Some(cluster_specifier),
        timeout: Some(timeout),
        max_grpc_timeout: Some(timeout),
        retry_policy: route_policy::retry_policy(http.retries.as_ref(), !hash_policy.is_empty()),
        hash_policy,
        request_mirror_policies: mirrors,
        prefix_rewrite: rewrite.and_then(|r| r.uri.clone()).unwrap_or_default(),
        regex_rewrite: rewrite
            .and_then(|r| r.uri_regex_rewrite.as_ref())
            .map(|re| RegexMatchAndSubstitute {
                pattern: Some(RegexMatcher {
                    regex: re.pattern.clone(),
                    ..RegexMatcher::default()
                }),
                substitution: re.rewrite.clone(),
            }),
        host_rewrite_specifier: authority.map(HostRewriteSpecifier::HostRewriteLiteral),
        ..RouteAction::default()
    };
    Ok(Action::Route(route_action))
}

fn redirect_code(code: u32) -> redirect_action::RedirectResponseCode {
    use redirect_action::RedirectResponseCode as C;
    match code {
        302 => C::Found,
        303 => C::SeeOther,
        307 => C::TemporaryRedirect,
        308 => C::PermanentRedirect,
        _ => C::MovedPermanently,
    }
}

/// The cluster a destination names: `outbound|PORT|SUBSET|HOST`. The port is the one given, else
/// the service's only port, else the listener's port (as istiod chooses it). With it, the route
/// hash policy the cluster's consistent-hash load balancer needs, if it has one.
pub(super) fn cluster_for(
    ctx: &RouteCtx<'_>,
    d: &Destination,
    field: &str,
    warnings: &mut Vec<Warning>,
) -> Result<(String, Option<HashPolicy>), Box<Diagnostic>> {
    let host = ctx.view.resolve(&d.host, &ctx.vs.key.namespace);
    let err = |message: String| Box::new(compile_error(ctx.view, &ctx.vs.key, field, message));
    let Some(svc) = ctx.view.lookup(&host) else {
        // As istiod: the cluster of a host nobody declares does not exist, so Envoy answers
        // 503 for what goes there (the index has reported the host with a warning).
        let port = d.port.as_ref().map_or(u32::from(ctx.port), |p| p.number);
        let port = u16::try_from(port).map_err(|_| err(format!("port {port} is out of range")))?;
        let name = names::outbound_cluster(port, d.subset.as_deref().unwrap_or(""), &host);
        return Ok((name, None));
    };
    let port = match &d.port {
        Some(p) => u16::try_from(p.number)
            .map_err(|_| err(format!("port {} is out of range", p.number)))?,
        None if svc.ports.len() == 1 => svc.ports[0].port,
        None => {
            // istiod uses the listener's port; when the service does not have it, that
            // cluster does not exist and Envoy answers 503.
            if svc.port(ctx.port).is_none() {
                warnings.push((
                    format!("{field}.port"),
                    format!(
                        "no port given: {host} has {} ports and none is the listener's {}, so requests here get 503 (as under istiod); set port.number",
                        svc.ports.len(),
                        ctx.port
                    ),
                ));
            }
            ctx.port
        }
    };
    let hash = cluster_policy::route_hash_policy(
        ctx.view,
        &ctx.proxy.namespace,
        svc,
        port,
        d.subset.as_deref(),
    );
    let name = names::outbound_cluster(port, d.subset.as_deref().unwrap_or(""), &host);
    Ok((name, hash))
}

/// True for a route that matches every request (path `/` or any, no header or query
/// condition), as istiod tells catch-all routes apart.
fn is_catch_all(r: &Route) -> bool {
    let Some(m) = &r.r#match else {
        return false;
    };
    let any_path = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) | Some(PathSpecifier::PathSeparatedPrefix(p)) => p == "/",
        Some(PathSpecifier::SafeRegex(re)) => re.regex == "*",
        _ => false,
    };
    any_path
        && m.headers.is_empty()
        && m.query_parameters.is_empty()
        && m.dynamic_metadata.is_empty()
}

/// Moves catch-all routes behind the others, keeping each group's order: on a gateway host
/// that several VirtualServices route, one's catch-all must not hide another's paths (istiod
/// sorts a gateway virtual host's routes so).
pub(super) fn catch_alls_last(routes: &mut [Route]) {
    let first = routes.iter().position(is_catch_all);
    let later_specific = first.is_some_and(|f| routes[f..].iter().any(|r| !is_catch_all(r)));
    if later_specific {
        routes.sort_by_key(is_catch_all);
    }
}
