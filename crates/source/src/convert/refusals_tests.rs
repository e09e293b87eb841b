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

fn gateway(servers: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: g, namespace: istio-system}}\nspec:\n  servers:\n{servers}"
    )
}

/// A plain-text server asked for TLS, an HTTPS server without tls, and port names missing or
/// repeated are refused as istiod refuses them, naming the server's field.
#[test]
fn gateway_servers_istiod_refuses_are_refused() {
    let cases: [(&str, &str, &str); 7] = [
        (
            "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n    tls: {mode: SIMPLE, credentialName: c}\n",
            "spec.servers[0].tls",
            "plain text",
        ),
        (
            "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n    tls: {httpsRedirect: true, serverCertificate: /c.pem}\n",
            "spec.servers[0].tls",
            "only set httpsRedirect",
        ),
        (
            "  - port: {number: 8080, name: grpc, protocol: GRPC}\n    hosts: ['*']\n    tls: {mode: MUTUAL}\n",
            "spec.servers[0].tls",
            "plain text",
        ),
        (
            "  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: ['*']\n    tls: {httpsRedirect: true}\n",
            "spec.servers[0].tls",
            "takes no tls settings",
        ),
        (
            "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ['*']\n",
            "spec.servers[0].tls",
            "needs tls settings",
        ),
        (
            "  - port: {number: 80, protocol: HTTP}\n    hosts: ['*']\n",
            "spec.servers[0].port.name",
            "needs a name",
        ),
        (
            "  - port: {number: 80, name: web, protocol: HTTP}\n    hosts: [a.example.com]\n  - port: {number: 8080, name: web, protocol: HTTP}\n    hosts: [b.example.com]\n",
            "spec.servers[1].port.name",
            "also spec.servers[0]'s",
        ),
    ];
    for (servers, field, says) in cases {
        assert_error(
            &error(&gateway(servers)),
            "Gateway",
            "istio-system/g",
            field,
            says,
        );
    }
}

/// What istiod accepts converts: `httpsRedirect` alone (or with a passthrough mode) on HTTP,
/// a TLS server whose tls sets no mode (PASSTHROUGH), GRPC-WEB, unique port names.
#[test]
fn gateway_servers_istiod_accepts_convert() {
    one(&gateway(concat!(
        "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n    tls: {httpsRedirect: true}\n",
        "  - port: {number: 81, name: http2, protocol: HTTP2}\n    hosts: ['*']\n    tls: {httpsRedirect: true, mode: PASSTHROUGH}\n",
        "  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: ['*']\n    tls: {}\n",
        "  - port: {number: 8443, name: https, protocol: HTTPS}\n    hosts: ['*']\n    tls: {mode: SIMPLE, credentialName: c}\n",
        "  - port: {number: 8080, name: grpc-web, protocol: GRPC-WEB}\n    hosts: ['*']\n",
        "  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: ['*']\n",
    )));
}

/// Route actions that conflict, redirects that loop, header operations Envoy refuses or that
/// set the authority twice, a bad source namespace and overlapping hosts are refused as istiod
/// refuses them, naming the field.
#[test]
fn virtual_service_routes_istiod_refuses_are_refused() {
    let route = "    route: [{destination: {host: a}}]\n";
    let routed: [(&str, &str, &str); 9] = [
        (
            "  - rewrite: {}\n",
            "spec.http[0].rewrite",
            "at least one of uri, uriRegexRewrite and authority",
        ),
        (
            "  - rewrite: {authority: b.example.com}\n    headers: {request: {set: {host: c.example.com}}}\n",
            "spec.http[0].headers.request.set.host",
            "already set by spec.http[0].rewrite.authority",
        ),
        (
            "  - headers: {request: {set: {\":authority\": b}, add: {Host: c}}}\n",
            "spec.http[0].headers.request.add.Host",
            "can be set only once",
        ),
        (
            "  - headers: {request: {set: {x-a: \"one\\r\\ntwo\"}}}\n",
            "spec.http[0].headers.request.set.x-a",
            "control character",
        ),
        (
            "  - headers: {response: {add: {x-a: \"100%\"}}}\n",
            "spec.http[0].headers.response.add.x-a",
            "unescaped `%`",
        ),
        (
            "  - headers: {response: {set: {host: b}}}\n",
            "spec.http[0].headers.response.set.host",
            "Host header",
        ),
        (
            "  - headers: {request: {remove: [\":path\"]}}\n",
            "spec.http[0].headers.request.remove[0]",
            "cannot be changed",
        ),
        (
            "  - match: [{headers: {\"x bad\": {exact: a}}}]\n",
            "spec.http[0].match[0].headers.x bad",
            "not a valid header name",
        ),
        (
            "  - match: [{sourceNamespace: Prod_1}]\n",
            "spec.http[0].match[0].sourceNamespace",
            "not a namespace name",
        ),
    ];
    for (http, field, says) in routed {
        let e = error(&vs(&format!("{http}{route}")));
        assert_error(&e, "VirtualService", "prod/vs", field, says);
    }
    let answered: [(&str, &str, &str); 7] = [
        (
            "  - redirect: {uri: /b}\n    rewrite: {uri: /c}\n",
            "spec.http[0].rewrite",
            "with a redirect takes no rewrite",
        ),
        (
            "  - directResponse: {status: 503}\n    fault: {abort: {httpStatus: 500}}\n",
            "spec.http[0].fault",
            "with a directResponse takes no fault",
        ),
        (
            "  - redirect: {redirectCode: 302}\n",
            "spec.http[0].redirect",
            "in a loop",
        ),
        (
            "  - match: [{uri: {exact: /a}}]\n    redirect: {prefixRewrite: /b}\n",
            "spec.http[0].redirect.prefixRewrite",
            "spec.http[0].match[0].uri is not a prefix match",
        ),
        (
            "  - redirect: {scheme: ftp}\n",
            "spec.http[0].redirect.scheme",
            "must be http or https",
        ),
        (
            "  - directResponse: {status: 200}\n    corsPolicy: {allowOrigins: [{exact: a}], allowHeaders: [\"x a\"]}\n",
            "spec.http[0].corsPolicy.allowHeaders[0]",
            "not a valid header name",
        ),
        (
            "  - directResponse: {status: 200}\n    headers: {request: {set: {x-a: \"%START_TIME%%\"}}}\n",
            "spec.http[0].headers.request.set.x-a",
            "unescaped `%`",
        ),
    ];
    for (http, field, says) in answered {
        assert_error(&error(&vs(http)), "VirtualService", "prod/vs", field, says);
    }
    let whole = |spec: &str| {
        error(&format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs, namespace: prod}}\nspec: {spec}\n"
        ))
    };
    assert_error(
        &whole(
            "{hosts: [a.example.com, \"*.example.com\"], http: [{route: [{destination: {host: a}}]}]}",
        ),
        "VirtualService",
        "prod/vs",
        "spec.hosts[1]",
        "overlaps spec.hosts[0]",
    );
    // istiod's validateSniHost: a TLS route takes only names its hosts claim.
    assert_error(
        &whole(
            "{hosts: [api, \"*.example.com\"], tls: [{match: [{sniHosts: [a.example.com, v2.api.example.org]}], route: [{destination: {host: a}}]}]}",
        ),
        "VirtualService",
        "prod/vs",
        "spec.tls[0].match[0].sniHosts[1]",
        "SNI host `v2.api.example.org` is not within any of the VirtualService's hosts",
    );
}

/// What istiod accepts converts: a redirect changing only the port, `prefixRewrite` under a
/// prefix match, an authority set once (by rewrite or by header), Envoy's `%VARIABLE%` and
/// `%%` in header values, JWT-claim and pseudo-header matches, a wildcard host with a TLS route.
#[test]
fn virtual_service_routes_istiod_accepts_convert() {
    one(&vs(concat!(
        "  - match: [{uri: {prefix: /old}, sourceNamespace: team-a}]\n",
        "    redirect: {prefixRewrite: /new}\n",
        "  - redirect: {port: 8443}\n",
        "  - match: [{headers: {\"@request.auth.claims.group\": {exact: a}, \":method\": {exact: GET}}}]\n",
        "    rewrite: {authority: b.example.com}\n",
        "    headers:\n",
        "      request: {set: {x-start: \"%START_TIME%\", x-pct: \"100%%\"}, remove: [x-b]}\n",
        "      response: {add: {x-c: \"tab\\there\"}}\n",
        "    corsPolicy: {allowOrigins: [{exact: a}], allowHeaders: [\"*\", x-a], exposeHeaders: [x-b]}\n",
        "    route: [{destination: {host: a}, headers: {request: {add: {\":authority\": c}}}}]\n",
        "  - headers: {request: {set: {host: d.example.com}}}\n",
        "    route: [{destination: {host: a}}]\n",
    )));
    one(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: prod}\nspec:\n  hosts: [\"*.example.com\", other.org]\n  tls: [{match: [{sniHosts: [a.example.com, other.org]}], route: [{destination: {host: a}}]}]\n",
    );
}

fn service_entry(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: se, namespace: prod}}\nspec: {spec}\n"
    )
}

/// A ServiceEntry istiod refuses is refused, naming the field: host `*`, endpoints meshpilot
/// would ignore (resolution NONE, also by default), CIDR addresses with DNS, port names
/// missing, invalid or repeated, and endpoint ports that name no port of the entry.
#[test]
fn service_entries_istiod_refuses_are_refused() {
    let cases: [(&str, &str, &str); 8] = [
        (
            "{hosts: ['*'], ports: [{number: 80, name: http}]}",
            "spec.hosts[0]",
            "host `*` is not allowed",
        ),
        (
            "{hosts: [a.com], ports: [{number: 80, name: http}], resolution: NONE, endpoints: [{address: 1.1.1.1}]}",
            "spec.endpoints",
            "uses no endpoints",
        ),
        (
            "{hosts: [a.com], ports: [{number: 80, name: http}], endpoints: [{address: 1.1.1.1}]}",
            "spec.endpoints",
            "resolution NONE (the default)",
        ),
        (
            "{hosts: [a.com], addresses: [10.0.0.0/24], ports: [{number: 80, name: http}], resolution: DNS}",
            "spec.addresses[0]",
            "only with resolution NONE or STATIC",
        ),
        (
            "{hosts: [a.com], ports: [{number: 80}]}",
            "spec.ports[0].name",
            "must be set",
        ),
        (
            "{hosts: [a.com], ports: [{number: 80, name: Web_1}]}",
            "spec.ports[0].name",
            "lower-case letters",
        ),
        (
            "{hosts: [a.com], ports: [{number: 80, name: web}, {number: 81, name: web}]}",
            "spec.ports[1].name",
            "listed twice (also spec.ports[0])",
        ),
        (
            "{hosts: [a.com], ports: [{number: 80, name: web}], resolution: STATIC, endpoints: [{address: 1.1.1.1, ports: {http: 8080}}]}",
            "spec.endpoints[0].ports.http",
            "not the name of one of spec.ports",
        ),
    ];
    for (spec, field, says) in cases {
        assert_error(
            &error(&service_entry(spec)),
            "ServiceEntry",
            "prod/se",
            field,
            says,
        );
    }
}

/// What istiod accepts converts: CIDR addresses with NONE or STATIC, endpoints with STATIC or
/// DNS whose ports name the entry's ports, NONE without endpoints.
#[test]
fn service_entries_istiod_accepts_convert() {
    for spec in [
        "{hosts: [a.com], addresses: [10.0.0.0/24], ports: [{number: 80, name: http}]}",
        "{hosts: [a.com], addresses: [10.0.0.0/24], ports: [{number: 80, name: http}, {number: 443, name: https-1}], resolution: STATIC, endpoints: [{address: 10.0.0.1, ports: {https-1: 8443}}]}",
        "{hosts: [a.com], ports: [{number: 80, name: http}], resolution: DNS, endpoints: [{address: b.com, ports: {http: 8080}}]}",
        "{hosts: ['*.a.com'], ports: [{number: 80, name: http}], resolution: NONE}",
    ] {
        one(&service_entry(spec));
    }
}

/// No manifest of the user's scenarios is refused by these rules.
#[test]
fn every_example_manifest_converts() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/examples");
    let mut checked = 0;
    for dir in std::fs::read_dir(&root).expect("examples folder").flatten() {
        for file in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = file.path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("example reads");
            let docs: Vec<serde_json::Value> =
                serde_saphyr::from_multiple(&text).expect("example parses");
            for doc in docs {
                if let Err(e) = super::convert(doc, &super::tests::origin()) {
                    panic!("{}: {e}", path.display());
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 10, "found the examples ({checked} documents)");
}
