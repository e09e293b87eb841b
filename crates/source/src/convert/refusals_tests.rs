//! What istiod refuses and Envoy would otherwise NACK or serve wrongly, meshpilot refuses at
//! conversion, naming the object and the field; the good variant of each converts.

use super::tests::{assert_error, error, one, vs};

/// Every empty or oversized string match is refused at its field: Envoy would NACK the whole
/// route configuration of the port.
#[test]
fn empty_and_oversized_string_matches_are_refused() {
    let route = "    route: [{destination: {host: a}}]\n";
    let long = format!("a{}", "b".repeat(1024));
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "  - match: [{uri: {regex: \"\"}}]\n".into(),
            "spec.http[0].match[0].uri.regex",
            "must not be empty",
        ),
        (
            "  - match: [{headers: {x-a: {prefix: \"\"}}}]\n".into(),
            "spec.http[0].match[0].headers.x-a.prefix",
            "must not be empty",
        ),
        (
            "  - match: [{headers: {x-a: {regex: \"\"}}}]\n".into(),
            "spec.http[0].match[0].headers.x-a.regex",
            "must not be empty",
        ),
        (
            "  - match: [{queryParams: {q: {prefix: \"\"}}}]\n".into(),
            "spec.http[0].match[0].queryParams.q.prefix",
            "must not be empty",
        ),
        (
            "  - match: [{withoutHeaders: {x-b: {regex: \"\"}}}]\n".into(),
            "spec.http[0].match[0].withoutHeaders.x-b.regex",
            "must not be empty",
        ),
        (
            "  - match: [{method: {prefix: \"\"}}]\n".into(),
            "spec.http[0].match[0].method.prefix",
            "must not be empty",
        ),
        (
            "  - match: [{authority: {regex: \"\"}}]\n".into(),
            "spec.http[0].match[0].authority.regex",
            "must not be empty",
        ),
        (
            "  - match: [{scheme: {prefix: \"\"}}]\n".into(),
            "spec.http[0].match[0].scheme.prefix",
            "must not be empty",
        ),
        (
            "  - corsPolicy: {allowOrigins: [{prefix: \"\"}]}\n".into(),
            "spec.http[0].corsPolicy.allowOrigins[0].prefix",
            "must not be empty",
        ),
        (
            "  - corsPolicy: {allowOrigins: [{exact: \"\"}]}\n".into(),
            "spec.http[0].corsPolicy.allowOrigins[0].exact",
            "must not be empty",
        ),
        (
            format!("  - match: [{{uri: {{regex: \"{long}\"}}}}]\n"),
            "spec.http[0].match[0].uri.regex",
            "1025 characters long, more than the 1024 allowed",
        ),
        (
            "  - rewrite: {uriRegexRewrite: {match: \"\", rewrite: /b}}\n".into(),
            "spec.http[0].rewrite.uriRegexRewrite.match",
            "needs both match and rewrite",
        ),
        (
            "  - rewrite: {uriRegexRewrite: {match: \"^/a\", rewrite: \"\"}}\n".into(),
            "spec.http[0].rewrite.uriRegexRewrite.rewrite",
            "needs both match and rewrite",
        ),
        (
            format!("  - rewrite: {{uriRegexRewrite: {{match: \"{long}\", rewrite: /b}}}}\n"),
            "spec.http[0].rewrite.uriRegexRewrite.match.regex",
            "more than the 1024 allowed",
        ),
    ];
    for (http, field, says) in cases {
        let e = error(&vs(&format!("{http}{route}")));
        assert_error(&e, "VirtualService", "prod/vs", field, says);
    }
}

/// What istiod accepts converts: an empty URI prefix (every path), empty exact values, a
/// regex of exactly 1,024 characters, presence matches.
#[test]
fn string_matches_istiod_accepts_convert() {
    let longest = "a".repeat(1024);
    one(&vs(&format!(
        concat!(
            "  - match:\n",
            "    - uri: {{prefix: \"\"}}\n",
            "      headers: {{x-a: {{exact: \"\"}}, x-b: {{}}, x-c: {{regex: \"{}\"}}}}\n",
            "      method: {{exact: GET}}\n",
            "      authority: {{prefix: a.}}\n",
            "    corsPolicy: {{allowOrigins: [{{prefix: \"https://\"}}, {{regex: \".*\"}}]}}\n",
            "    rewrite: {{uriRegexRewrite: {{match: \"^/a\", rewrite: /b}}}}\n",
            "    route: [{{destination: {{host: a}}}}]\n",
        ),
        longest
    )));
}
