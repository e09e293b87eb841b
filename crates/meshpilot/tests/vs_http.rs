//! VirtualService HTTP features as a user sees them: one real `meshpilot serve`, one real Envoy
//! 1.40 ingress gateway and four backends serve every check (fault injection, retries,
//! timeouts, mirrors, redirects, rewrites, direct responses, CORS, header operations, relative
//! weights, match fields, and a route to an unknown host failing alone). The routes are
//! `tests/testdata/vs-http/routes.yaml`, one path per feature; the golden test compiles the same
//! file.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use support::{Backend, Conn, Envoy, Meshpilot, Response};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(10);
const HOST: &str = "vs.example.com";

/// A request (method, host, path, headers) and the outcome it should get.
type MatchCase = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

/// One request on a fresh connection; panics on a transport error.
async fn send(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let mut conn = Conn::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    conn.request(method, host, path, headers)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    send(addr, "GET", HOST, path, headers).await
}

/// The value of `name` in the last request `backend` saw.
fn last_header(backend: &Backend, name: &str) -> Option<String> {
    let seen = backend.recent().pop()?;
    seen.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

async fn start_gateway(server: &Meshpilot) -> (Envoy, SocketAddr) {
    support::ingress_gateway(server, WAIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_service_http_features_through_a_gateway() {
    let _envoy_bin = support::require_envoy!();
    let ips: [IpAddr; 4] = std::array::from_fn(|_| support::loopback_ip());
    let names = ["web", "canary", "mirror", "flaky"];
    let backends: Vec<Backend> = ips
        .iter()
        .zip(names)
        .map(|(ip, n)| Backend::start(*ip, 8080, n))
        .collect();
    let [web, canary, mirror, flaky] = &backends[..] else {
        unreachable!("four backends")
    };
    let pods: Vec<String> = ips
        .iter()
        .zip(names)
        .map(|(ip, n)| support::pod_yaml(&format!("{n}-1"), "default", &[("app", n)], *ip, &[]))
        .collect();
    let routes = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/vs-http/routes.yaml"),
    )
    .expect("read the vs-http fixture");
    let dir = TempDir::new().expect("temp dir");
    support::write_manifests(
        dir.path(),
        &[("routes.yaml", &routes), ("pods.yaml", &pods.join("---\n"))],
    );
    let server = Meshpilot::start(&[dir.path()]).await;
    let (envoy, addr) = start_gateway(&server).await;

    // A route to a host nobody declares fails alone (503), with a warning naming the field;
    // every other route of the VirtualService serves (all the checks below).
    assert_eq!(get(addr, "/unknown", &[]).await.status, 503);
    let configz = server
        .debug_get("/debug/configz")
        .await
        .map(|r| r.body)
        .unwrap_or_default();
    assert!(
        configz.contains("spec.http[17].route[0].destination.host")
            && configz.contains("nope.example.com"),
        "the unknown host is reported: {configz}"
    );

    // Fault injection: half of /abort answered 418 by Envoy, the other half reaches web; a
    // gRPC abort answers grpc-status 14; a delay holds the request 300 ms.
    let dist = support::distribution(addr, HOST, "/abort", &[], 400).await;
    support::assert_share(&dist, "HTTP 418", 50.0);
    support::assert_share(&dist, "web", 50.0);
    let r = get(addr, "/grpc-abort", &[("content-type", "application/grpc")]).await;
    assert_eq!(r.header("grpc-status"), Some("14"), "{r:?}");
    let t = Instant::now();
    let r = get(addr, "/delay", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "web"));
    // Envoy's timer may fire a few milliseconds early; an undelayed request takes ~1 ms.
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );

    // Retries, counted at the backend: `retryOn: "503"` retries 3 times; `attempts: 0` and
    // istiod's default policy (no HTTP status since Istio 1.24) do not retry a 503.
    for (path, tries) in [("/retry", 4), ("/no-retries", 1), ("/default-retries", 1)] {
        flaky.reset_requests();
        let r = get(addr, path, &[("x-reply-status", "503")]).await;
        assert_eq!(r.status, 503, "{path}");
        assert_eq!(flaky.requests(), tries, "{path}: requests at the backend");
    }
    // Timeouts: the route's 200 ms answers 504 long before the backend's 1 s; a per-try
    // timeout of 100 ms with 2 retries on 5xx tries three times, then 504.
    let t = Instant::now();
    let r = get(addr, "/timeout", &[("x-reply-delay-ms", "1000")]).await;
    assert_eq!(r.status, 504);
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    flaky.reset_requests();
    let r = get(addr, "/per-try", &[("x-reply-delay-ms", "500")]).await;
    assert_eq!(r.status, 504);
    assert_eq!(
        flaky.requests(),
        3,
        "per-try timeouts: tries at the backend"
    );

    // Mirrors: every request to /mirrored is copied to the mirror Service (its Host marked
    // `-shadow`), while the answer comes from web.
    mirror.reset_requests();
    let dist = support::distribution(addr, HOST, "/mirrored", &[], 20).await;
    support::assert_only(&dist, "web");
    support::wait_until("20 mirrored copies", WAIT, || async {
        mirror.requests() == 20
    })
    .await;
    assert!(
        mirror.recent().iter().all(|r| r.host.contains("-shadow")),
        "{:?}",
        mirror.recent().first()
    );

    // Redirects: status and Location (derivePort keeps the request's port; prefixRewrite
    // replaces the matched prefix).
    let r = get(addr, "/redirect", &[]).await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("https://new.example.com:80/new"));
    let r = get(addr, "/old/a/b", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("http://vs.example.com/moved/a/b")
    );

    // Rewrites seen by the backend; a direct response with a body given as bytes.
    let r = get(addr, "/rewrite/x", &[]).await;
    assert_eq!(r.body, "web");
    let seen = web.recent().pop().expect("web saw the request");
    assert_eq!(
        (seen.path.as_str(), seen.host.as_str()),
        ("/rewritten/x", "rewritten.example.com")
    );
    get(addr, "/regex/abc/def", &[]).await;
    assert_eq!(
        web.recent().pop().map(|s| s.path).as_deref(),
        Some("/def/abc")
    );
    let r = get(addr, "/direct", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (202, "hello"));

    // CORS: preflights from allowed origins (exact, prefix, regex) are answered by Envoy; one
    // from another origin gets no allow-origin header.
    for origin in [
        "https://ok.example.com",
        "https://pre.example.org",
        "https://re42.example.com",
    ] {
        let r = send(
            addr,
            "OPTIONS",
            HOST,
            "/cors",
            &[("origin", origin), ("access-control-request-method", "GET")],
        )
        .await;
        assert_eq!(r.status, 200, "{origin}: {r:?}");
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some(origin),
            "{r:?}"
        );
        assert_eq!(r.header("access-control-max-age"), Some("3600"), "{r:?}");
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        assert!(r.header("x-backend").is_none(), "answered by Envoy: {r:?}");
    }
    let refused = send(
        addr,
        "OPTIONS",
        HOST,
        "/cors",
        &[
            ("origin", "https://evil.example.com"),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert!(
        refused.header("access-control-allow-origin").is_none(),
        "{refused:?}"
    );
    let r = get(addr, "/cors", &[("origin", "https://ok.example.com")]).await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://ok.example.com")
    );
    assert_eq!(r.header("access-control-expose-headers"), Some("x-backend"));

    // Header operations at the route and the destination level, seen by the backend and the
    // client; `host` set in headers becomes the Host the backend sees.
    let r = get(
        addr,
        "/headers",
        &[("x-client-drop", "1"), ("x-route-add", "mine")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-resp-set"), Some("route"));
    assert_eq!(r.header("x-dest-resp"), Some("web-only"));
    assert!(
        r.header("x-path").is_none(),
        "removed from the response: {r:?}"
    );
    let seen = web.recent().pop().expect("web saw the request");
    let header = |n: &str| -> Vec<&str> {
        seen.headers
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(header("x-route-set"), ["route"]);
    assert_eq!(header("x-dest-set"), ["web-only"]);
    assert_eq!(
        header("x-route-add").len(),
        2,
        "added to the client's: {seen:?}"
    );
    assert!(header("x-client-drop").is_empty(), "{seen:?}");
    assert_eq!(seen.host, "via-header.example.com");

    // Relative weights 1:3, each destination with its own request header.
    let dist = support::distribution(addr, HOST, "/weights", &[], 400).await;
    support::assert_share(&dist, "web", 25.0);
    support::assert_share(&dist, "canary", 75.0);
    assert_eq!(last_header(web, "x-dest").as_deref(), Some("web"));
    assert_eq!(last_header(canary, "x-dest").as_deref(), Some("canary"));

    // Match fields: presence of a query parameter and a header, case-insensitive URI, method,
    // authority, the proxy's own labels and namespace (unless the match names gateways);
    // `withoutHeaders` matches a request without the header.
    let cases: [MatchCase; 13] = [
        ("GET", HOST, "/m/q?debug", &[], "matched"),
        ("GET", HOST, "/m/q", &[], "HTTP 404"),
        ("GET", HOST, "/M/CASE/x", &[], "matched"),
        ("GET", HOST, "/m/h", &[("x-p", "1")], "matched"),
        ("GET", HOST, "/m/h", &[], "not-blocked"),
        ("GET", HOST, "/m/h", &[("x-block", "yes")], "HTTP 404"),
        ("DELETE", HOST, "/m/method", &[], "matched"),
        ("GET", HOST, "/m/method", &[], "HTTP 404"),
        ("GET", "alt.example.com", "/m/auth", &[], "matched"),
        ("GET", HOST, "/m/auth", &[], "HTTP 404"),
        ("GET", HOST, "/m/src", &[], "matched"),
        ("GET", HOST, "/m/other-src", &[], "HTTP 404"),
        // A match naming gateways applies there whatever its source labels say, as in istiod.
        ("GET", HOST, "/m/gw", &[], "matched"),
    ];
    for (method, host, path, headers, want) in cases {
        let r = send(addr, method, host, path, headers).await;
        assert_eq!(
            support::outcome(&r),
            want,
            "{method} {host}{path} {headers:?}"
        );
    }
    envoy.assert_all_acked().await;
}
