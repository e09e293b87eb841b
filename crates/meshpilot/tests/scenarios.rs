//! The user's scenarios (`manifests/examples/`, described in its `SCENARIOS.md`), served
//! by the real `meshpilot serve` binary from a manifests directory to real Envoy 1.40 gateways
//! and sidecars on loopback, over both SotW and Delta ADS. Backends answer with their name; the
//! tests count which backend answered.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use support::{Backend, Envoy, Meshpilot};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(10);
const N: usize = 1000;

/// A manifests directory served by a running meshpilot.
struct Mesh {
    dir: TempDir,
    server: Meshpilot,
}

impl Mesh {
    async fn start(files: &[(&str, String)]) -> Mesh {
        let dir = TempDir::new().expect("temp dir");
        let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
        support::write_manifests(dir.path(), &refs);
        let server = Meshpilot::start(&[dir.path()]).await;
        Mesh { dir, server }
    }

    fn write(&self, rel: &str, text: &str) {
        support::write_manifests(self.dir.path(), &[(rel, text)]);
    }

    /// Starts an Envoy for `kind` (`router`/`sidecar`) with labels, interception NONE.
    async fn proxy(
        &self,
        kind: &str,
        ns: &str,
        labels: &[(&str, &str)],
        delta: bool,
    ) -> (Envoy, IpAddr) {
        let ip = support::loopback_ip();
        let admin = support::admin_addr();
        let mut args = support::bootstrap_args(
            &support::node_id(
                kind,
                ip,
                &format!("{kind}-{}", ip.to_string().replace('.', "-")),
                ns,
            ),
            self.server.xds(),
            admin,
        );
        args.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        args.delta = delta;
        let envoy = Envoy::start(support::render_bootstrap(&args), admin).await;
        (envoy, ip)
    }

    async fn ingress(&self, delta: bool) -> (Envoy, IpAddr) {
        self.proxy(
            "router",
            "istio-system",
            &[("istio", "ingressgateway")],
            delta,
        )
        .await
    }
}

fn scenario(name: &str, file: &str) -> String {
    support::scenario_file(name, file)
}

/// The first document of a multi-document manifest (e.g. the Gateway before a VirtualService).
fn first_doc(text: &str) -> String {
    text.split("\n---").next().unwrap_or(text).to_string()
}

fn pod(name: &str, labels: &[(&str, &str)], ip: IpAddr) -> String {
    support::pod_yaml(name, "default", labels, ip, &[])
}

fn share_of(dist: &BTreeMap<String, usize>, name: &str) -> f64 {
    let total: usize = dist.values().sum();
    *dist.get(name).unwrap_or(&0) as f64 * 100.0 / total.max(1) as f64
}

async fn listener_up(envoy: &Envoy, ip: IpAddr, port: u16) -> SocketAddr {
    envoy.wait_for_listener(&format!("{ip}_{port}"), WAIT).await;
    SocketAddr::new(ip, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mvc_canary_then_blue_green_flip_then_delete() {
    let _envoy_bin = support::require_envoy!();
    let (ip1, ip2) = (support::loopback_ip(), support::loopback_ip());
    let _v1 = Backend::start(ip1, 8080, "Hello i'm V1!");
    let _v2 = Backend::start(ip2, 8080, "Hello i'm V2!");
    let mesh = Mesh::start(&[
        ("app.yaml", scenario("01-mvc-canary", "app.yaml")),
        (
            "destination-rule.yaml",
            scenario("01-mvc-canary", "destination-rule.yaml"),
        ),
        (
            "istio-gateway.yaml",
            scenario("01-mvc-canary", "istio-gateway.yaml"),
        ),
        (
            "pods.yaml",
            format!(
                "{}---\n{}",
                pod("mvc-v1", &[("app", "mvc-service"), ("version", "v1")], ip1),
                pod("mvc-v2", &[("app", "mvc-service"), ("version", "v2")], ip2)
            ),
        ),
    ])
    .await;
    let mut gateways = Vec::new();
    for delta in [false, true] {
        let (envoy, ip) = mesh.ingress(delta).await;
        let addr = listener_up(&envoy, ip, 80).await;
        gateways.push((envoy, addr, delta));
    }
    for (envoy, addr, delta) in &gateways {
        let dist = support::distribution(*addr, "mvc.example.com", "/service", &[], N).await;
        support::assert_share(&dist, "Hello i'm V2!", 20.0);
        support::assert_share(&dist, "Hello i'm V1!", 80.0);
        let other = support::distribution(*addr, "mvc.example.com", "/other", &[], 20).await;
        support::assert_only(&other, "HTTP 404");
        envoy.assert_all_acked().await;
        eprintln!(
            "canary via {} ok: {dist:?}",
            if *delta { "delta" } else { "sotw" }
        );
    }

    // Blue/green: re-apply the VirtualService with one destination, subset v2.
    let flipped = format!(
        "{}\n---\n{}",
        first_doc(&scenario("01-mvc-canary", "istio-gateway.yaml")),
        scenario("01-mvc-canary", "istio-gateway-bluegreen.yaml")
    );
    let written = Instant::now();
    mesh.write("istio-gateway.yaml", &flipped);
    for (_, addr, _) in &gateways {
        loop {
            let d = support::distribution(*addr, "mvc.example.com", "/service", &[], 20).await;
            if share_of(&d, "Hello i'm V2!") == 100.0 {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(2),
                "blue/green flip not complete 2 s after the write: {d:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!(
        "blue/green flip complete on both gateways {:?} after the write",
        written.elapsed()
    );
    for (envoy, addr, _) in &gateways {
        let dist = support::distribution(*addr, "mvc.example.com", "/service", &[], 200).await;
        support::assert_only(&dist, "Hello i'm V2!");
        envoy.assert_all_acked().await;
    }

    // Deleting the file removes the gateway's listener.
    support::remove_manifest(mesh.dir.path(), "istio-gateway.yaml");
    for (envoy, addr, _) in &gateways {
        let name = format!("{}_80", addr.ip());
        envoy
            .wait_for_dump("listener removed", WAIT, |d| {
                !support::dump::listener_names(d).contains(&name)
            })
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_split_across_two_services_on_different_ports() {
    let _envoy_bin = support::require_envoy!();
    let (ip1, ip2) = (support::loopback_ip(), support::loopback_ip());
    let _a = Backend::start(ip1, 8000, "hello-world v1");
    let _b = Backend::start(ip2, 80, "nginx v2");
    let mesh = Mesh::start(&[
        ("gateway.yaml", scenario("02-host-split", "gateway.yaml")),
        (
            "revisions.yaml",
            scenario("02-host-split", "revisions.yaml"),
        ),
        (
            "virtualservice.yaml",
            scenario("02-host-split", "virtualservice.yaml"),
        ),
        (
            "pods.yaml",
            format!(
                "{}---\n{}",
                pod(
                    "testsvc-v1",
                    &[
                        ("app.oam.dev/component", "testsvc"),
                        ("app.oam.dev/revision", "example-app-v1")
                    ],
                    ip1
                ),
                pod(
                    "testsvc-v2",
                    &[
                        ("app.oam.dev/component", "testsvc"),
                        ("app.oam.dev/revision", "example-app-v2")
                    ],
                    ip2
                )
            ),
        ),
    ])
    .await;
    for delta in [false, true] {
        let (envoy, ip) = mesh.ingress(delta).await;
        let addr = listener_up(&envoy, ip, 80).await;
        let dist = support::distribution(addr, "example-app.example.com", "/", &[], N).await;
        support::assert_share(&dist, "hello-world v1", 50.0);
        support::assert_share(&dist, "nginx v2", 50.0);
        let other = support::distribution(addr, "other.example.com", "/", &[], 20).await;
        support::assert_only(&other, "HTTP 404");
        envoy.assert_all_acked().await;
    }
}

fn bookinfo_pods(ips: &[IpAddr; 6]) -> String {
    [
        pod(
            "productpage-v1",
            &[("app", "productpage"), ("version", "v1")],
            ips[0],
        ),
        pod(
            "details-v1",
            &[("app", "details"), ("version", "v1")],
            ips[1],
        ),
        pod(
            "ratings-v1",
            &[("app", "ratings"), ("version", "v1")],
            ips[2],
        ),
        pod(
            "reviews-v1",
            &[("app", "reviews"), ("version", "v1")],
            ips[3],
        ),
        pod(
            "reviews-v2",
            &[("app", "reviews"), ("version", "v2")],
            ips[4],
        ),
        pod(
            "reviews-v3",
            &[("app", "reviews"), ("version", "v3")],
            ips[5],
        ),
    ]
    .join("---\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_gateway_paths_and_mesh_reviews_routing() {
    let _envoy_bin = support::require_envoy!();
    let ips: [IpAddr; 6] = std::array::from_fn(|_| support::loopback_ip());
    let names = [
        "productpage",
        "details",
        "ratings",
        "reviews-v1",
        "reviews-v2",
        "reviews-v3",
    ];
    let _backends: Vec<Backend> = ips
        .iter()
        .zip(names)
        .map(|(ip, n)| Backend::start(*ip, 9080, n))
        .collect();
    let mesh = Mesh::start(&[
        ("services.yaml", scenario("03-bookinfo", "services.yaml")),
        ("gateway.yaml", scenario("03-bookinfo", "gateway.yaml")),
        ("reviews.yaml", scenario("03-bookinfo", "reviews-v1.yaml")),
        ("pods.yaml", bookinfo_pods(&ips)),
    ])
    .await;
    for delta in [false, true] {
        let (gw, gw_ip) = mesh.ingress(delta).await;
        let addr = listener_up(&gw, gw_ip, 80).await;
        for path in [
            "/productpage",
            "/static/css/x.css",
            "/login",
            "/logout",
            "/api/v1/products/1",
        ] {
            let d = support::distribution(addr, "bookinfo.example.com", path, &[], 10).await;
            support::assert_only(&d, "productpage");
        }
        for path in ["/", "/reviews", "/productpage/x", "/loginx"] {
            let d = support::distribution(addr, "bookinfo.example.com", path, &[], 5).await;
            support::assert_only(&d, "HTTP 404");
        }
        gw.assert_all_acked().await;
    }

    // Inside the mesh: a sidecar calling reviews:9080.
    let mut sidecars = Vec::new();
    for delta in [false, true] {
        let (sc, ip) = mesh
            .proxy("sidecar", "default", &[("app", "client")], delta)
            .await;
        let addr = listener_up(&sc, ip, 9080).await;
        let d = support::distribution(addr, "reviews:9080", "/reviews/1", &[], 200).await;
        support::assert_only(&d, "reviews-v1");
        let d = support::distribution(addr, "ratings", "/", &[], 20).await;
        support::assert_only(&d, "ratings");
        sidecars.push((sc, addr));
    }
    // Then 50/10/40.
    let reviews_v1 = scenario("03-bookinfo", "reviews-v1.yaml");
    let dr = reviews_v1
        .split("\n---\n")
        .nth(1)
        .expect("DestinationRule document");
    mesh.write(
        "reviews.yaml",
        &format!(
            "{}\n---\n{dr}",
            scenario("03-bookinfo", "reviews-50-10-40.yaml")
        ),
    );
    for (sc, addr) in &sidecars {
        support::wait_until("reviews v3 appears", WAIT, || async {
            let d = support::distribution(*addr, "reviews", "/", &[], 20).await;
            d.contains_key("reviews-v3")
        })
        .await;
        let d = support::distribution(*addr, "reviews.default.svc.cluster.local:9080", "/", &[], N)
            .await;
        support::assert_share(&d, "reviews-v1", 50.0);
        support::assert_share(&d, "reviews-v2", 10.0);
        support::assert_share(&d, "reviews-v3", 40.0);
        let unknown = support::distribution(*addr, "nope.example.com", "/", &[], 5).await;
        support::assert_only(&unknown, "HTTP 404");
        sc.assert_all_acked().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_through_the_egress_gateway() {
    let _envoy_bin = support::require_envoy!();
    // "edition.cnn.com" is played by a backend on 127.0.0.1, reached by DNS through `localhost`.
    let external = Backend::start("127.0.0.1".parse().expect("ip"), 0, "cnn");
    let egress_ip = support::loopback_ip();
    let se = scenario("03-bookinfo", "egress.yaml").replacen(
        "  resolution: DNS",
        &format!("  resolution: DNS\n  endpoints:\n  - address: localhost\n    ports:\n      http-port: {}", external.port()),
        1,
    );
    let egress_svc = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: istio-egressgateway\n  namespace: istio-system\nspec:\n  selector:\n    istio: egressgateway\n  ports:\n  - name: http2\n    port: 80\n---\n{}",
        support::pod_yaml(
            "istio-egressgateway-0",
            "istio-system",
            &[("istio", "egressgateway")],
            egress_ip,
            &[]
        )
    );
    let mesh = Mesh::start(&[("egress.yaml", se), ("egressgateway.yaml", egress_svc)]).await;
    for delta in [false, true] {
        // The egress gateway proxy must sit at the pod's IP: start it there.
        let admin = support::admin_addr();
        let mut args = support::bootstrap_args(
            &support::node_id("router", egress_ip, "istio-egressgateway-0", "istio-system"),
            mesh.server.xds(),
            admin,
        );
        args.labels = vec![("istio".into(), "egressgateway".into())];
        args.delta = delta;
        let egress = Envoy::start(support::render_bootstrap(&args), admin).await;
        listener_up(&egress, egress_ip, 80).await;

        let (sc, sc_ip) = mesh
            .proxy("sidecar", "default", &[("app", "client")], delta)
            .await;
        let addr = listener_up(&sc, sc_ip, 80).await;
        let before = egress
            .stat("cluster.outbound|80||edition.cnn.com.upstream_rq_total")
            .await
            .unwrap_or(0);
        let d = support::distribution(addr, "edition.cnn.com", "/politics", &[], 20).await;
        support::assert_only(&d, "cnn");
        let after = egress
            .stat("cluster.outbound|80||edition.cnn.com.upstream_rq_total")
            .await
            .unwrap_or(0);
        assert_eq!(
            after - before,
            20,
            "every request went through the egress gateway"
        );
        let through = sc.stat("cluster.outbound|80|cnn|istio-egressgateway.istio-system.svc.cluster.local.upstream_rq_total").await.unwrap_or(0);
        assert!(
            through >= 20,
            "sidecar sent to the egress gateway subset cluster: {through}"
        );
        sc.assert_all_acked().await;
        egress.assert_all_acked().await;
        drop(egress); // frees egress_ip:80 for the next variant
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_canary_then_weights() {
    let _envoy_bin = support::require_envoy!();
    let v1_ips: Vec<IpAddr> = (0..4).map(|_| support::loopback_ip()).collect();
    let v2_ip = support::loopback_ip();
    let mut backends: Vec<Backend> = v1_ips
        .iter()
        .map(|ip| Backend::start(*ip, 80, "website-version-1"))
        .collect();
    backends.push(Backend::start(v2_ip, 80, "website-version-2"));
    let mut pods: Vec<String> = v1_ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            pod(
                &format!("website-v1-{i}"),
                &[("app", "website"), ("version", "website-version-1")],
                *ip,
            )
        })
        .collect();
    pods.push(pod(
        "website-v2",
        &[("app", "website"), ("version", "website-version-2")],
        v2_ip,
    ));
    let mesh = Mesh::start(&[
        ("app.yaml", scenario("04-header-canary", "app.yaml")),
        ("routing.yaml", scenario("04-header-canary", "routing.yaml")),
        ("pods.yaml", pods.join("---\n")),
    ])
    .await;
    let mut gateways = Vec::new();
    for delta in [false, true] {
        let (envoy, ip) = mesh.ingress(delta).await;
        let addr = listener_up(&envoy, ip, 80).await;
        let d = support::distribution(
            addr,
            "website.example.com",
            "/",
            &[("qa", "canary-test")],
            100,
        )
        .await;
        support::assert_only(&d, "website-version-2");
        let d = support::distribution(addr, "website.example.com", "/", &[], 200).await;
        support::assert_only(&d, "website-version-1");
        let d =
            support::distribution(addr, "website.example.com", "/", &[("qa", "other")], 50).await;
        support::assert_only(&d, "website-version-1");
        gateways.push((envoy, addr));
    }
    // Later: 20/80 weights.
    let routing = scenario("04-header-canary", "routing.yaml");
    let docs: Vec<&str> = routing.split("\n---\n").collect();
    mesh.write(
        "routing.yaml",
        &format!(
            "{}\n---\n{}\n---\n{}",
            docs[0],
            docs[1],
            scenario("04-header-canary", "weights-20-80.yaml")
        ),
    );
    for (envoy, addr) in &gateways {
        support::wait_until("weights applied", WAIT, || async {
            let d = support::distribution(*addr, "website.example.com", "/", &[], 50).await;
            d.contains_key("website-version-2")
        })
        .await;
        let d = support::distribution(*addr, "website.example.com", "/", &[], N).await;
        support::assert_share(&d, "website-version-2", 20.0);
        support::assert_share(&d, "website-version-1", 80.0);
        envoy.assert_all_acked().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_keeps_the_last_good_config() {
    let _envoy_bin = support::require_envoy!();
    let (ip1, ip2) = (support::loopback_ip(), support::loopback_ip());
    let _v1 = Backend::start(ip1, 8080, "v1");
    let _v2 = Backend::start(ip2, 8080, "v2");
    let canary = scenario("01-mvc-canary", "istio-gateway.yaml");
    let mesh = Mesh::start(&[
        ("app.yaml", scenario("01-mvc-canary", "app.yaml")),
        (
            "destination-rule.yaml",
            scenario("01-mvc-canary", "destination-rule.yaml"),
        ),
        ("istio-gateway.yaml", canary.clone()),
        (
            "pods.yaml",
            format!(
                "{}---\n{}",
                pod("mvc-v1", &[("app", "mvc-service"), ("version", "v1")], ip1),
                pod("mvc-v2", &[("app", "mvc-service"), ("version", "v2")], ip2)
            ),
        ),
    ])
    .await;
    let (envoy, ip) = mesh.ingress(false).await;
    let addr = listener_up(&envoy, ip, 80).await;

    // A negative weight, then malformed YAML: refused, and the last good canary keeps serving.
    let bad_weight = canary.replace("weight: 20", "weight: -20");
    let malformed = format!("{canary}\n  - : [unclosed\n");
    for (what, text, needle) in [
        ("negative weight", bad_weight, "weight"),
        ("malformed YAML", malformed, "istio-gateway.yaml"),
    ] {
        mesh.write("istio-gateway.yaml", &text);
        support::wait_until(
            &format!("{what} reported in /debug/configz"),
            WAIT,
            || async {
                let body = mesh
                    .server
                    .debug_get("/debug/configz")
                    .await
                    .map(|r| r.body)
                    .unwrap_or_default();
                body.contains(needle) && body.contains("error")
            },
        )
        .await;
        // The last good canary keeps serving.
        let dist = support::distribution(addr, "x", "/service", &[], N).await;
        support::assert_share(&dist, "v2", 20.0);
        envoy.assert_all_acked().await;
        assert!(mesh.server.exited().is_none(), "the server survived {what}");
    }
    // A destination host nobody declares fails only its share, as under istiod: a warning
    // names it, its 20 % gets 503 and the other destination keeps its 80 %.
    let unknown_host = canary.replace(
        "host: mvc-service\n        subset: v2",
        "host: nope-service\n        subset: v2",
    );
    mesh.write("istio-gateway.yaml", &unknown_host);
    support::wait_until("unknown host reported in /debug/configz", WAIT, || async {
        let body = mesh
            .server
            .debug_get("/debug/configz")
            .await
            .map(|r| r.body)
            .unwrap_or_default();
        body.contains("nope-service") && body.contains("warning")
    })
    .await;
    support::wait_until(
        "the unknown destination's share answers 503",
        WAIT,
        || async {
            let dist = support::distribution(addr, "x", "/service", &[], 40).await;
            dist.contains_key("HTTP 503") && !dist.contains_key("v2")
        },
    )
    .await;
    let dist = support::distribution(addr, "x", "/service", &[], N).await;
    support::assert_share(&dist, "v1", 80.0);
    support::assert_share(&dist, "HTTP 503", 20.0);
    envoy.assert_all_acked().await;
    let logs = mesh.server.logs();
    assert!(
        logs.contains("istio-gateway.yaml"),
        "errors name the file:\n{logs}"
    );
    assert!(!logs.contains("panicked"), "no panic:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_layout_is_accepted_by_envoy() {
    let _envoy_bin = support::require_envoy!();
    let ip = support::loopback_ip();
    let mesh = Mesh::start(&[
        ("services.yaml", scenario("03-bookinfo", "services.yaml")),
        ("reviews.yaml", scenario("03-bookinfo", "reviews-v1.yaml")),
        (
            "pods.yaml",
            pod("reviews-v1", &[("app", "reviews"), ("version", "v1")], ip),
        ),
    ])
    .await;
    let sidecar_ip = support::loopback_ip();
    let admin = support::admin_addr();
    let mut args = support::bootstrap_args(
        &support::node_id("sidecar", sidecar_ip, "client", "default"),
        mesh.server.xds(),
        admin,
    );
    args.interception = meshpilot::config::InterceptionArg::Redirect;
    let envoy = Envoy::start(support::render_bootstrap(&args), admin).await;
    let dump = envoy.wait_for_listener("virtualOutbound", WAIT).await;
    let listeners = support::dump::listener_names(&dump);
    assert!(
        listeners.contains(&"0.0.0.0_9080".to_string()),
        "{listeners:?}"
    );
    envoy.assert_all_acked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_service_entry_workload_entry_and_empty_subset() {
    let _envoy_bin = support::require_envoy!();
    let (se_ip, we_ip, pod_ip) = (
        support::loopback_ip(),
        support::loopback_ip(),
        support::loopback_ip(),
    );
    let _se = Backend::start(se_ip, 7070, "static-entry");
    let _we = Backend::start(we_ip, 9090, "vm-workload");
    let _pod = Backend::start(pod_ip, 9090, "pod-workload");
    let manifests = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: legacy
spec:
  hosts: [legacy.internal.example]
  ports: [{{number: 7070, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: "{se_ip}"}}]
---
apiVersion: v1
kind: Service
metadata:
  name: hybrid
spec:
  selector: {{app: hybrid}}
  ports: [{{name: http, port: 9090}}]
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata:
  name: vm-1
spec:
  address: "{we_ip}"
  labels: {{app: hybrid, version: vm}}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: hybrid
spec:
  host: hybrid
  subsets:
  - {{name: vm, labels: {{version: vm}}}}
  - {{name: pod, labels: {{version: pod}}}}
  - {{name: none, labels: {{version: nothing-has-this}}}}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: hybrid
spec:
  hosts: [hybrid]
  http:
  - match: [{{uri: {{prefix: /vm}}}}]
    route: [{{destination: {{host: hybrid, subset: vm}}}}]
  - match: [{{uri: {{prefix: /empty}}}}]
    route: [{{destination: {{host: hybrid, subset: none}}}}]
  - route: [{{destination: {{host: hybrid, subset: pod}}}}]
---
{}"#,
        pod(
            "hybrid-pod",
            &[("app", "hybrid"), ("version", "pod")],
            pod_ip
        )
    );
    let mesh = Mesh::start(&[("mesh.yaml", manifests)]).await;
    for delta in [false, true] {
        let (sc, ip) = mesh
            .proxy("sidecar", "default", &[("app", "client")], delta)
            .await;
        let se_addr = listener_up(&sc, ip, 7070).await;
        let d = support::distribution(se_addr, "legacy.internal.example", "/", &[], 20).await;
        support::assert_only(&d, "static-entry");
        let addr = listener_up(&sc, ip, 9090).await;
        let d = support::distribution(addr, "hybrid", "/vm/x", &[], 20).await;
        support::assert_only(&d, "vm-workload");
        let d = support::distribution(addr, "hybrid.default.svc.cluster.local", "/", &[], 20).await;
        support::assert_only(&d, "pod-workload");
        let d = support::distribution(addr, "hybrid:9090", "/empty", &[], 10).await;
        support::assert_only(&d, "HTTP 503");
        sc.assert_all_acked().await;
    }
}
