//! One VirtualService's HTTP routes → Envoy routes, for one listener context (a sidecar port or
//! a gateway server port): match conditions (URI, headers, query, method, authority, scheme),
//! the `port`/`gateways`/`sourceLabels`/`sourceNamespace` filters, weighted destinations,
//! redirects, direct responses, rewrites, timeouts, retries, mirrors and header operations.

use envoy_types::pb::envoy::config::core::v3::{DataSource, RuntimeFractionalPercent, data_source};
use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::route_action::{
    ClusterSpecifier, RequestMirrorPolicy,
};
use envoy_types::pb::envoy::config::route::v3::weighted_cluster::ClusterWeight;
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route,
    RouteAction, RouteMatch, WeightedCluster, header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier, redirect_action, route::Action,
    route_match::PathSpecifier,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};

use super::routes::names_gateway;
use super::{compile_error, duration, names, parse_duration};
use meshpilot_index::{Named, View};
use meshpilot_model::{
    ConfigKey, Destination, Diagnostic, HeaderOperations, HttpMatchRequest, HttpRoute, Proxy,
    StringMatch, VirtualService, labels_match,
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
}

/// Istio's default retry policy for routes that do not set `retries`.
pub(super) fn default_retry_policy() -> RetryPolicy {
    RetryPolicy {
        retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
            .to_string(),
        num_retries: Some(UInt32Value { value: 2 }),
        retriable_status_codes: vec![503],
        ..RetryPolicy::default()
    }
}

/// Translates every HTTP route of the VirtualService that applies in `ctx`.
pub(super) fn translate(ctx: &RouteCtx<'_>) -> (Vec<Route>, Vec<Diagnostic>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, http) in ctx.vs.spec.http.iter().enumerate() {
        let matches: Vec<&HttpMatchRequest> =
            http.matches.iter().filter(|m| applies(ctx, m)).collect();
        if !http.matches.is_empty() && matches.is_empty() {
            continue; // every match is for another port, gateway or source
        }
        let action = match action(ctx, http, i) {
            Ok(a) => a,
            Err(e) => {
                errors.push(*e);
                continue;
            }
        };
        let name = http.name.clone().unwrap_or_default();
        let base = Route {
            name,
            action: Some(action),
            request_headers_to_add: header_adds(
                http.headers.as_ref().and_then(|h| h.request.as_ref()),
            ),
            request_headers_to_remove: header_removes(
                http.headers.as_ref().and_then(|h| h.request.as_ref()),
            ),
            response_headers_to_add: header_adds(
                http.headers.as_ref().and_then(|h| h.response.as_ref()),
            ),
            response_headers_to_remove: header_removes(
                http.headers.as_ref().and_then(|h| h.response.as_ref()),
            ),
            ..Route::default()
        };
        if matches.is_empty() {
            out.push(Route {
                r#match: Some(prefix_all()),
                ..base
            });
        } else {
            for m in matches {
                out.push(Route {
                    r#match: Some(route_match(m)),
                    ..base.clone()
                });
            }
        }
    }
    (out, errors)
}

/// True when a match condition applies to this listener, gateway and proxy.
fn applies(ctx: &RouteCtx<'_>, m: &HttpMatchRequest) -> bool {
    if let Some(p) = m.port
        && p != u32::from(ctx.port)
    {
        return false;
    }
    if !m.gateways.is_empty() {
        let ok = match ctx.gateway {
            None => m.gateways.iter().any(|g| g == "mesh"),
            Some(gw) => names_gateway(&m.gateways, &ctx.vs.key.namespace, gw),
        };
        if !ok {
            return false;
        }
    }
    if !labels_match(&m.source_labels, &ctx.proxy.labels) {
        return false;
    }
    if let Some(ns) = &m.source_namespace
        && ns != &ctx.proxy.namespace
    {
        return false;
    }
    true
}

fn prefix_all() -> RouteMatch {
    RouteMatch {
        path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
        ..RouteMatch::default()
    }
}

fn string_matcher(m: &StringMatch, ignore_case: bool) -> StringMatcher {
    let pattern = match m {
        StringMatch::Exact(s) => MatchPattern::Exact(s.clone()),
        StringMatch::Prefix(s) => MatchPattern::Prefix(s.clone()),
        StringMatch::Regex(s) => MatchPattern::SafeRegex(RegexMatcher {
            regex: s.clone(),
            ..RegexMatcher::default()
        }),
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ignore_case,
    }
}

fn header(name: &str, m: &StringMatch, invert: bool) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(string_matcher(m, false))),
        invert_match: invert,
        ..HeaderMatcher::default()
    }
}

fn route_match(m: &HttpMatchRequest) -> RouteMatch {
    let path_specifier = Some(match &m.uri {
        None => PathSpecifier::Prefix("/".to_string()),
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
                query_parameter_match_specifier: Some(QueryParameterMatchSpecifier::StringMatch(
                    string_matcher(x, false),
                )),
            })
            .collect(),
        ..RouteMatch::default()
    }
}

fn action(ctx: &RouteCtx<'_>, http: &HttpRoute, i: usize) -> Result<Action, Box<Diagnostic>> {
    if let Some(r) = &http.redirect {
        return Ok(Action::Redirect(RedirectAction {
            host_redirect: r.authority.clone().unwrap_or_default(),
            port_redirect: r.port.unwrap_or(0),
            path_rewrite_specifier: r
                .uri
                .clone()
                .map(redirect_action::PathRewriteSpecifier::PathRedirect),
            scheme_rewrite_specifier: r
                .scheme
                .clone()
                .map(redirect_action::SchemeRewriteSpecifier::SchemeRedirect),
            response_code: redirect_code(r.redirect_code.unwrap_or(301)) as i32,
            ..RedirectAction::default()
        }));
    }
    if let Some(d) = &http.direct_response {
        return Ok(Action::DirectResponse(DirectResponseAction {
            status: d.status,
            body: d
                .body
                .as_ref()
                .and_then(|b| b.string.clone())
                .map(|s| DataSource {
                    specifier: Some(data_source::Specifier::InlineString(s)),
                    ..DataSource::default()
                }),
            ..DirectResponseAction::default()
        }));
    }
    let mut clusters = Vec::new();
    for (j, d) in http.route.iter().enumerate() {
        let weight = d
            .weight
            .unwrap_or(if http.route.len() == 1 { 100 } else { 0 });
        if weight <= 0 && http.route.len() > 1 {
            continue;
        }
        let field = format!("spec.http[{i}].route[{j}].destination");
        let name = cluster_for(ctx, &d.destination, &field)?;
        clusters.push((name, u32::try_from(weight).unwrap_or(0)));
    }
    let cluster_specifier = match clusters.as_slice() {
        [] => {
            return Err(Box::new(compile_error(
                ctx.view,
                &ctx.vs.key,
                &format!("spec.http[{i}].route"),
                "no destination with a positive weight".to_string(),
            )));
        }
        [(name, _)] => ClusterSpecifier::Cluster(name.clone()),
        many => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: many
                .iter()
                .map(|(name, w)| ClusterWeight {
                    name: name.clone(),
                    weight: Some(UInt32Value { value: *w }),
                    ..ClusterWeight::default()
                })
                .collect(),
            ..WeightedCluster::default()
        }),
    };
    let timeout = http
        .timeout
        .as_deref()
        .and_then(parse_duration)
        .unwrap_or(std::time::Duration::ZERO);
    let retry_policy = match &http.retries {
        None => Some(default_retry_policy()),
        Some(r) if r.attempts <= 0 => None,
        Some(r) => Some(RetryPolicy {
            retry_on: r.retry_on.clone().unwrap_or_else(|| {
                "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
                    .to_string()
            }),
            num_retries: Some(UInt32Value {
                value: u32::try_from(r.attempts).unwrap_or(0),
            }),
            per_try_timeout: r
                .per_try_timeout
                .as_deref()
                .and_then(parse_duration)
                .map(duration),
            retriable_status_codes: vec![503],
            ..RetryPolicy::default()
        }),
    };
    let mut mirrors = Vec::new();
    if let Some(m) = &http.mirror {
        let cluster = cluster_for(ctx, m, &format!("spec.http[{i}].mirror"))?;
        let pct = http
            .mirror_percentage
            .as_ref()
            .map(|p| p.value)
            .unwrap_or(100.0);
        mirrors.push(RequestMirrorPolicy {
            cluster,
            runtime_fraction: Some(RuntimeFractionalPercent {
                default_value: Some(FractionalPercent {
                    numerator: (pct.clamp(0.0, 100.0) * 10_000.0) as u32,
                    denominator: fractional_percent::DenominatorType::Million as i32,
                }),
                ..RuntimeFractionalPercent::default()
            }),
            ..RequestMirrorPolicy::default()
        });
    }
    let rewrite = http.rewrite.as_ref();
    Ok(Action::Route(RouteAction {
        cluster_specifier: Some(cluster_specifier),
        timeout: Some(duration(timeout)),
        retry_policy,
        request_mirror_policies: mirrors,
        prefix_rewrite: rewrite.and_then(|r| r.uri.clone()).unwrap_or_default(),
        host_rewrite_specifier: rewrite.and_then(|r| r.authority.clone()).map(
            envoy_types::pb::envoy::config::route::v3::route_action::HostRewriteSpecifier::HostRewriteLiteral,
        ),
        ..RouteAction::default()
    }))
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
/// the service's only port, else the listener's port when the service has it.
fn cluster_for(
    ctx: &RouteCtx<'_>,
    d: &Destination,
    field: &str,
) -> Result<String, Box<Diagnostic>> {
    let host = ctx.view.resolve(&d.host, &ctx.vs.key.namespace);
    let err = |message: String| Box::new(compile_error(ctx.view, &ctx.vs.key, field, message));
    let svc = ctx
        .view
        .lookup(&host)
        .ok_or_else(|| err(format!("host {host} is not a known service")))?;
    let port = match &d.port {
        Some(p) => u16::try_from(p.number)
            .map_err(|_| err(format!("port {} is out of range", p.number)))?,
        None if svc.ports.len() == 1 => svc.ports[0].port,
        None if svc.port(ctx.port).is_some() => ctx.port,
        None => {
            return Err(err(format!(
                "port must be set: {host} has {} ports and none is {}",
                svc.ports.len(),
                ctx.port
            )));
        }
    };
    Ok(names::outbound_cluster(
        port,
        d.subset.as_deref().unwrap_or(""),
        &host,
    ))
}

fn header_adds(ops: Option<&HeaderOperations>) -> Vec<HeaderValueOption> {
    let Some(ops) = ops else {
        return Vec::new();
    };
    let set = ops
        .set
        .iter()
        .map(|(k, v)| (k, v, HeaderAppendAction::OverwriteIfExistsOrAdd));
    let add = ops
        .add
        .iter()
        .map(|(k, v)| (k, v, HeaderAppendAction::AppendIfExistsOrAdd));
    set.chain(add)
        .map(|(k, v, action)| HeaderValueOption {
            header: Some(HeaderValue {
                key: k.clone(),
                value: v.clone(),
                ..HeaderValue::default()
            }),
            append_action: action as i32,
            ..HeaderValueOption::default()
        })
        .collect()
}

fn header_removes(ops: Option<&HeaderOperations>) -> Vec<String> {
    ops.map(|o| o.remove.clone()).unwrap_or_default()
}
