//! The per-route policies of a VirtualService HTTP route, translated as istiod translates them:
//! fault injection and CORS (per-route configuration of the HTTP filters every HTTP listener
//! carries, see [`http_filters`]), retries, mirrors and header operations. Each returns what
//! Envoy gets plus, for anything it cannot serve as written, a warning naming the field.

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, RuntimeFractionalPercent,
    header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::retry_policy::{
    RetryBackOff, RetryHostPredicate, RetryPriority, retry_host_predicate, retry_priority,
};
use envoy_types::pb::envoy::config::route::v3::{RetryPolicy, route_action::RequestMirrorPolicy};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{
    FaultDelay, fault_delay::FaultDelaySecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::{Cors, CorsPolicy as EnvoyCors};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort::ErrorType,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent};
use envoy_types::pb::google::protobuf::{Any, BoolValue, UInt32Value};

use super::{any, duration, parse_duration};
use meshpilot_model::{
    CorsPolicy, HeaderOperations, Headers, HttpFault as IstioFault, HttpRetry, Percent,
    StringMatch, grpc_status_code,
};

/// The HTTP filter names routes refer to in `typed_per_filter_config`.
pub(super) const CORS_FILTER: &str = "envoy.filters.http.cors";
pub(super) const FAULT_FILTER: &str = "envoy.filters.http.fault";
const ROUTER_FILTER: &str = "envoy.filters.http.router";

const CORS_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors";
const CORS_POLICY_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy";
pub(super) const FAULT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";
const ROUTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const PREVIOUS_HOSTS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";
const PREVIOUS_PRIORITIES_TYPE: &str = "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig";

/// Istio's default `retryOn` conditions.
const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

/// A field not served as written: (its field path, what happens instead and why).
pub(super) type Warning = (String, String);

/// The HTTP filters of every HTTP connection manager, in istiod's order: fault injection,
/// CORS, then the router. Fault and CORS do nothing on a route without their per-route
/// configuration.
pub(super) fn http_filters() -> Vec<HttpFilter> {
    let filter = |name: &str, config: Any| HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..HttpFilter::default()
    };
    vec![
        filter(FAULT_FILTER, any(FAULT_TYPE, &HttpFault::default())),
        filter(CORS_FILTER, any(CORS_TYPE, &Cors::default())),
        filter(ROUTER_FILTER, any(ROUTER_TYPE, &Router::default())),
    ]
}

/// Istio's retry policy for routes that do not set `retries` (Istio 1.24 and later): two
/// retries on connection failures, refused streams and gRPC `unavailable`/`cancelled` (no HTTP
/// status), each to a host not tried yet.
pub(super) fn default_retry_policy() -> RetryPolicy {
    RetryPolicy {
        retry_on: DEFAULT_RETRY_ON.to_string(),
        num_retries: Some(UInt32Value { value: 2 }),
        retry_host_predicate: vec![previous_hosts()],
        host_selection_retry_max_attempts: 5,
        ..RetryPolicy::default()
    }
}

fn previous_hosts() -> RetryHostPredicate {
    RetryHostPredicate {
        name: "envoy.retry_host_predicates.previous_hosts".to_string(),
        config_type: Some(retry_host_predicate::ConfigType::TypedConfig(any(
            PREVIOUS_HOSTS_TYPE,
            &PreviousHostsPredicate::default(),
        ))),
    }
}

/// A route's retry policy: the default, none (`attempts: 0`), or the default overridden field
/// by field. `retryOn` integers become retriable status codes (and `retriable-status-codes`
/// is added to the conditions), as istiod splits them. A route with a consistent-hash policy
/// (`hashed`) retries on the same host unless `retryIgnorePreviousHosts` says otherwise, as
/// istiod sets it: another host would break the stickiness.
pub(super) fn retry_policy(retries: Option<&HttpRetry>, hashed: bool) -> Option<RetryPolicy> {
    let mut policy = retry_policy_unhashed(retries)?;
    if hashed && retries.and_then(|r| r.retry_ignore_previous_hosts) != Some(true) {
        policy.retry_host_predicate.clear();
    }
    Some(policy)
}

fn retry_policy_unhashed(retries: Option<&HttpRetry>) -> Option<RetryPolicy> {
    let Some(r) = retries else {
        return Some(default_retry_policy());
    };
    if r.attempts <= 0 {
        return None;
    }
    let mut policy = default_retry_policy();
    policy.num_retries = Some(UInt32Value {
        value: u32::try_from(r.attempts).unwrap_or(u32::MAX),
    });
    if let Some(on) = r.retry_on.as_deref().filter(|s| !s.trim().is_empty()) {
        let mut conditions: Vec<&str> = Vec::new();
        let mut codes: Vec<u32> = Vec::new();
        for token in on.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match token.parse::<u32>() {
                Ok(code) => codes.push(code),
                Err(_) => conditions.push(token),
            }
        }
        if !codes.is_empty() && !conditions.contains(&"retriable-status-codes") {
            conditions.push("retriable-status-codes");
        }
        policy.retry_on = conditions.join(",");
        policy.retriable_status_codes = codes;
    }
    policy.per_try_timeout = r
        .per_try_timeout
        .as_deref()
        .and_then(parse_duration)
        .map(duration);
    if r.retry_remote_localities == Some(true) {
        policy.retry_priority = Some(RetryPriority {
            name: "envoy.retry_priorities.previous_priorities".to_string(),
            config_type: Some(retry_priority::ConfigType::TypedConfig(any(
                PREVIOUS_PRIORITIES_TYPE,
                &PreviousPrioritiesConfig {
                    update_frequency: 2,
                },
            ))),
        });
    }
    if r.retry_ignore_previous_hosts == Some(false) {
        policy.retry_host_predicate.clear();
    }
    if let Some(base) = r.backoff.as_deref().and_then(parse_duration) {
        policy.retry_back_off = Some(RetryBackOff {
            base_interval: Some(duration(base)),
            ..RetryBackOff::default()
        });
    }
    Some(policy)
}

/// `value` percent of requests, as a fraction per million (Istio's `Percent` allows
/// fractions such as 0.1).
pub(super) fn percent_per_million(value: f64) -> FractionalPercent {
    FractionalPercent {
        numerator: (value.clamp(0.0, 100.0) * 10_000.0) as u32,
        denominator: fractional_percent::DenominatorType::Million as i32,
    }
}

fn whole_percent(value: u32) -> FractionalPercent {
    FractionalPercent {
        numerator: value.min(100),
        denominator: fractional_percent::DenominatorType::Hundred as i32,
    }
}

/// The fault filter's per-route configuration, or `None` when nothing is left to inject.
/// Like istiod, an absent percentage stays absent, which Envoy reads as 0 %: a warning says so.
pub(super) fn fault(f: &IstioFault, at: &str, warnings: &mut Vec<Warning>) -> Option<HttpFault> {
    let mut out = HttpFault::default();
    if let Some(d) = &f.delay {
        let percentage = match (&d.percentage, d.percent) {
            (Some(p), _) => Some(percent_per_million(p.value)),
            (None, Some(p)) => Some(whole_percent(u32::try_from(p).unwrap_or(0))),
            (None, None) => {
                warnings.push((
                    format!("{at}.delay.percentage"),
                    "no percentage: as under istiod, the delay applies to no request (set percentage.value: 100 for all)".to_string(),
                ));
                // istiod writes the absent percentage as 0 of 100.
                Some(whole_percent(0))
            }
        };
        match d.fixed_delay.as_deref().and_then(parse_duration) {
            Some(fixed) => {
                out.delay = Some(FaultDelay {
                    percentage,
                    fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(duration(fixed))),
                });
            }
            None => warnings.push((
                format!("{at}.delay"),
                "the delay has no fixedDelay: as under istiod, no delay is injected".to_string(),
            )),
        }
    }
    if let Some(a) = &f.abort {
        let error_type = match (&a.http_status, &a.grpc_status) {
            (Some(status), _) => Some(ErrorType::HttpStatus(*status)),
            (None, Some(name)) => grpc_status_code(name).map(ErrorType::GrpcStatus),
            (None, None) => {
                warnings.push((
                    format!("{at}.abort"),
                    "the abort has no httpStatus or grpcStatus: as under istiod, nothing is injected"
                        .to_string(),
                ));
                None
            }
        };
        if error_type.is_some() {
            if a.percentage.is_none() {
                warnings.push((
                    format!("{at}.abort.percentage"),
                    "no percentage: as under istiod, the abort applies to no request (set percentage.value: 100 for all)".to_string(),
                ));
            }
            out.abort = Some(FaultAbort {
                percentage: a.percentage.as_ref().map(|p| percent_per_million(p.value)),
                error_type,
                ..FaultAbort::default()
            });
        }
    }
    (out.delay.is_some() || out.abort.is_some()).then_some(out)
}

/// The CORS filter's per-route policy. `allowOrigins` (or the deprecated exact `allowOrigin`)
/// become origin matchers; lists are joined with commas; `maxAge` is whole seconds; a
/// preflight from an origin not allowed is forwarded upstream unless `unmatchedPreflights` is
/// `IGNORE`.
pub(super) fn cors(c: &CorsPolicy) -> Any {
    let origins: Vec<_> = if c.allow_origins.is_empty() {
        c.allow_origin
            .iter()
            .map(|o| super::httproute::string_matcher(&StringMatch::Exact(o.clone()), false))
            .collect()
    } else {
        c.allow_origins
            .iter()
            .map(|o| super::httproute::string_matcher(o, false))
            .collect()
    };
    let policy = EnvoyCors {
        allow_origin_string_match: origins,
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c
            .max_age
            .as_deref()
            .and_then(parse_duration)
            .map(|d| d.as_secs().to_string())
            .unwrap_or_default(),
        allow_credentials: c.allow_credentials.map(|value| BoolValue { value }),
        filter_enabled: Some(RuntimeFractionalPercent {
            default_value: Some(whole_percent(100)),
            ..RuntimeFractionalPercent::default()
        }),
        forward_not_matching_preflights: Some(BoolValue {
            value: c.unmatched_preflights.as_deref() != Some("IGNORE"),
        }),
        ..EnvoyCors::default()
    };
    any(CORS_POLICY_TYPE, &policy)
}

/// One mirror policy: copies of `share` of requests to `cluster` (istiod leaves the copies out
/// of tracing decisions).
pub(super) fn mirror(cluster: String, share: FractionalPercent) -> RequestMirrorPolicy {
    RequestMirrorPolicy {
        cluster,
        runtime_fraction: Some(RuntimeFractionalPercent {
            default_value: Some(share),
            ..RuntimeFractionalPercent::default()
        }),
        trace_sampled: Some(BoolValue { value: false }),
        ..RequestMirrorPolicy::default()
    }
}

/// The share of requests `mirror` copies: `mirrorPercentage`, else the deprecated
/// `mirrorPercent`, else all; `None` for an explicit 0 (no mirror at all, as istiod).
pub(super) fn mirror_share(
    percentage: Option<&Percent>,
    percent: Option<u32>,
) -> Option<FractionalPercent> {
    match (percentage, percent) {
        (Some(p), _) => (p.value > 0.0).then(|| percent_per_million(p.value)),
        (None, Some(p)) => (p > 0).then(|| whole_percent(p)),
        (None, None) => Some(whole_percent(100)),
    }
}

/// Header operations at one level (route or destination), as Envoy takes them.
#[derive(Debug, Default)]
pub(super) struct HeaderOps {
    pub request_add: Vec<HeaderValueOption>,
    pub request_remove: Vec<String>,
    pub response_add: Vec<HeaderValueOption>,
    pub response_remove: Vec<String>,
    /// A request `host`/`:authority` set or added: Envoy may not modify that header, so, as
    /// istiod does, it becomes the route's (or the destination's) host rewrite.
    pub authority: Option<String>,
}

/// Translates `headers` (at the field path `at` returns). Pseudo-headers (`:`-prefixed) and `host` cannot
/// be modified in Envoy (a route doing so is refused, and with it the whole route
/// configuration): apart from the request authority above, they are left out with a warning.
pub(super) fn header_ops(
    headers: Option<&Headers>,
    at: impl FnOnce() -> String,
    warnings: &mut Vec<Warning>,
) -> HeaderOps {
    let mut out = HeaderOps::default();
    let Some(h) = headers else {
        return out;
    };
    // The field path is written out only for routes that have header operations.
    let at = at();
    if let Some(req) = &h.request {
        out.request_add = adds(
            req,
            &format!("{at}.request"),
            true,
            &mut out.authority,
            warnings,
        );
        out.request_remove = removes(req, &format!("{at}.request"), warnings);
    }
    if let Some(resp) = &h.response {
        let mut ignored = None;
        out.response_add = adds(
            resp,
            &format!("{at}.response"),
            false,
            &mut ignored,
            warnings,
        );
        out.response_remove = removes(resp, &format!("{at}.response"), warnings);
    }
    out
}

fn protected(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

fn adds(
    ops: &HeaderOperations,
    at: &str,
    request: bool,
    authority: &mut Option<String>,
    warnings: &mut Vec<Warning>,
) -> Vec<HeaderValueOption> {
    let set = ops
        .set
        .iter()
        .map(|(k, v)| ("set", k, v, HeaderAppendAction::OverwriteIfExistsOrAdd));
    let add = ops
        .add
        .iter()
        .map(|(k, v)| ("add", k, v, HeaderAppendAction::AppendIfExistsOrAdd));
    let mut out = Vec::new();
    for (op, k, v, action) in set.chain(add) {
        let lower = k.to_ascii_lowercase();
        if request && (lower == "host" || lower == ":authority") {
            *authority = Some(v.clone());
            continue;
        }
        if protected(&lower) {
            warnings.push((
                format!("{at}.{op}.{k}"),
                format!("Envoy does not let routes modify {k:?}; this header operation is left out, as istiod leaves it out"),
            ));
            continue;
        }
        out.push(HeaderValueOption {
            header: Some(HeaderValue {
                key: k.clone(),
                value: v.clone(),
                ..HeaderValue::default()
            }),
            append_action: action as i32,
            ..HeaderValueOption::default()
        });
    }
    out
}

fn removes(ops: &HeaderOperations, at: &str, warnings: &mut Vec<Warning>) -> Vec<String> {
    let mut out = Vec::new();
    for k in &ops.remove {
        if protected(k) {
            warnings.push((
                format!("{at}.remove"),
                format!("Envoy does not let routes remove {k:?}; it is left out, as istiod leaves it out"),
            ));
        } else {
            out.push(k.clone());
        }
    }
    out
}
