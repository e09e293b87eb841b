//! Tests for the VirtualService HTTP route fields: what meshpilot refuses names the field and
//! says why; what istiod accepts converts.

use super::tests::{assert_error, error, one, vs};

/// Each VirtualService HTTP field meshpilot refuses names the field and says why.
#[test]
fn http_route_field_errors_name_the_field() {
    let route = "    route: [{destination: {host: a}}]\n";
    let cases: [(&str, &str, &str); 15] = [
        (
            "  - delegate: {name: reviews, namespace: nsA}\n",
            "spec.http[0].route",
            "both route and delegate",
        ),
        (
            "  - fault: {abort: {httpStatus: 500, grpcStatus: UNAVAILABLE, percentage: {value: 5}}}\n",
            "spec.http[0].fault.abort",
            "only one of httpStatus, grpcStatus and http2Error",
        ),
        (
            "  - fault: {abort: {http2Error: CANCEL}}\n",
            "spec.http[0].fault.abort.http2Error",
            "not supported",
        ),
        (
            "  - fault: {delay: {exponentialDelay: 1s}}\n",
            "spec.http[0].fault.delay.exponentialDelay",
            "not supported",
        ),
        (
            "  - fault: {}\n",
            "spec.http[0].fault",
            "an abort, a delay or both",
        ),
        (
            "  - retries: {attempts: 0, perTryTimeout: 1s}\n",
            "spec.http[0].retries",
            "attempts 0 turns retries off",
        ),
        (
            "  - corsPolicy: {allowOrigins: [{exact: a}], allowMethods: [GET, FETCH]}\n",
            "spec.http[0].corsPolicy.allowMethods[1]",
            "not an HTTP method",
        ),
        (
            "  - fault: {abort: {grpcStatus: NOPE}}\n",
            "spec.http[0].fault.abort.grpcStatus",
            "gRPC status",
        ),
        (
            "  - retries: {attempts: 2, retryOn: \"5xx,sometimes\"}\n",
            "spec.http[0].retries.retryOn",
            "\"sometimes\"",
        ),
        (
            "  - retries: {attempts: 2, backoff: soon}\n",
            "spec.http[0].retries.backoff",
            "invalid duration",
        ),
        (
            "  - mirror: {host: b}\n    mirrors: [{destination: {host: c}}]\n",
            "spec.http[0].mirrors",
            "only one of mirror and mirrors",
        ),
        (
            "  - rewrite: {uri: /x, uriRegexRewrite: {match: \"^/a\", rewrite: /b}}\n",
            "spec.http[0].rewrite",
            "only one of uri and uriRegexRewrite",
        ),
        (
            "  - rewrite: {uriRegexRewrite: {match: \"(\", rewrite: /b}}\n",
            "spec.http[0].rewrite.uriRegexRewrite.match.regex",
            "invalid regex",
        ),
        (
            "  - corsPolicy: {allowOrigins: [{}]}\n",
            "spec.http[0].corsPolicy.allowOrigins[0]",
            "needs one of exact, prefix or regex",
        ),
        (
            "  - mirrors: [{destination: {host: c}, percentage: {value: 120}}]\n",
            "spec.http[0].mirrors[0].percentage.value",
            "out of range",
        ),
    ];
    for (http, field, says) in cases {
        let e = error(&vs(&format!("{http}{route}")));
        assert_error(&e, "VirtualService", "prod/vs", field, says);
    }
    let redirects: [(&str, &str, &str); 3] = [
        (
            "  - redirect: {port: 8080, derivePort: FROM_REQUEST_PORT}\n",
            "spec.http[0].redirect",
            "only one of port and derivePort",
        ),
        (
            "  - redirect: {uri: /a, prefixRewrite: /b}\n",
            "spec.http[0].redirect",
            "only one of uri and prefixRewrite",
        ),
        (
            "  - directResponse: {status: 200, body: {bytes: \"not base64!\"}}\n",
            "spec.http[0].directResponse.body.bytes",
            "base64",
        ),
    ];
    for (http, field, says) in redirects {
        assert_error(&error(&vs(http)), "VirtualService", "prod/vs", field, says);
    }
}

/// What istiod accepts, meshpilot accepts: presence matches (`{}` and regex `*`), gRPC aborts,
/// status codes in `retryOn`, several mirrors, a regex rewrite and a body in bytes.
#[test]
fn http_route_fields_istiod_accepts_convert() {
    one(&vs(concat!(
        "  - match:\n",
        "    - headers: {x-any: {}, x-star: {regex: \"*\"}}\n",
        "      withoutHeaders: {x-absent: {}}\n",
        "      queryParams: {debug: {}}\n",
        "      name: m1\n",
        "    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 10}}, delay: {percent: 5, fixedDelay: 1s}}\n",
        "    retries: {attempts: 3, retryOn: \"503,connect-failure\", backoff: 25ms, retryRemoteLocalities: true}\n",
        "    mirrors: [{destination: {host: b}, percentage: {value: 10}}, {destination: {host: c}}]\n",
        "    rewrite: {uriRegexRewrite: {match: \"^/a/(.*)\", rewrite: \"/\\\\1\"}}\n",
        "    route: [{destination: {host: a}}]\n",
        "  - directResponse: {status: 200, body: {bytes: aGVsbG8=}}\n",
        "  - match: [{uri: {prefix: /reviews}}]\n",
        "    timeout: 2s\n",
        "    delegate: {name: reviews, namespace: nsA}\n",
    )));
}
