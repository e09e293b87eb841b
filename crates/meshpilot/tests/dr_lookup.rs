//! DestinationRules looked up per client namespace, as istiod does, seen through real Envoy
//! sidecars in three namespaces: a rule in the client's namespace applies to that client only
//! (its subset picks another backend) while clients elsewhere keep the service namespace's rule;
//! a rule exported to `.` serves its own namespace only (others fall back to the root
//! namespace's rule); a Service exported to `.` has no cluster in another namespace's Envoy.
//! Changing the rules and exports while the Envoys run moves each client as it would start.

mod support;
use support::sidecar::client_sidecar;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use support::{Backend, Conn, Meshpilot};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(10);

fn service(name: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: shop\n{annotations}\
         spec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n"
    )
}

/// A rule for `host` in `ns` whose subset `pinned` selects `version`, exported to `export_to`.
fn pinned_rule(ns: &str, name: &str, host: &str, version: &str, export_to: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  host: {host}\n  exportTo: {export_to}\n  subsets:\n  - name: pinned\n    labels: {{version: {version}}}\n"
    )
}

/// Every client's requests for `host` go to its subset `pinned`.
fn to_pinned(host: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {host}, namespace: shop}}\n\
         spec:\n  hosts: [{host}]\n  http:\n  - route:\n    - destination: {{host: {host}, subset: pinned}}\n"
    )
}

/// The backends that answered `n` requests for `host` through `addr`, each once, sorted.
async fn backends(addr: SocketAddr, host: &str, n: usize) -> Vec<String> {
    let mut conn = Conn::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut seen = Vec::new();
    for _ in 0..n {
        let r = conn
            .request("GET", host, "/", &[])
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(r.status, 200, "{host} through {addr}: {}", r.body);
        seen.push(r.header("x-backend").unwrap_or_default().to_string());
    }
    seen.sort();
    seen.dedup();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_rules_apply_per_client_namespace() {
    let _envoy_bin = support::require_envoy!();
    // (pod, app, version): two versions of `catalog` and of `cart`, and `hidden`.
    let pods = [
        ("catalog-v1", "catalog", "v1"),
        ("catalog-v2", "catalog", "v2"),
        ("cart-v1", "cart", "v1"),
        ("cart-v2", "cart", "v2"),
        ("hidden-1", "hidden", "v1"),
    ];
    let ips: Vec<IpAddr> = pods.iter().map(|_| support::loopback_ip()).collect();
    let _backends: Vec<Backend> = ips
        .iter()
        .zip(pods)
        .map(|(ip, (pod, _, _))| Backend::start(*ip, 8080, pod))
        .collect();
    let mut files: Vec<String> = ips
        .iter()
        .zip(pods)
        .map(|(ip, (pod, app, v))| {
            support::pod_yaml(pod, "shop", &[("app", app), ("version", v)], *ip, &[])
        })
        .collect();
    files.push(service("catalog", ""));
    files.push(service("cart", ""));
    files.push(service(
        "hidden",
        "  annotations: {networking.istio.io/exportTo: \".\"}\n",
    ));
    let catalog = "catalog.shop.svc.cluster.local";
    let cart = "cart.shop.svc.cluster.local";
    files.push(to_pinned(catalog));
    files.push(to_pinned(cart));
    // catalog: the service namespace's rule pins v2 for everyone, `front`'s own rule pins v1.
    files.push(pinned_rule("shop", "catalog", catalog, "v2", "['*']"));
    let front_rule = pinned_rule("front", "catalog", catalog, "v1", "['.']");
    files.push(front_rule.clone());
    // cart: the service namespace's rule (v1) is exported to `.` only; the root namespace's
    // (v2) serves everyone else.
    files.push(pinned_rule("shop", "cart", cart, "v1", "['.']"));
    files.push(pinned_rule("istio-system", "cart", cart, "v2", "['*']"));
    let dir = TempDir::new().expect("temp dir");
    support::write_manifests(dir.path(), &[("mesh.yaml", &files.join("---\n"))]);
    let server = Meshpilot::start(&[dir.path()]).await;
    let (front_envoy, front) = client_sidecar(server.xds(), "front").await;
    let (back_envoy, back) = client_sidecar(server.xds(), "back").await;
    let (shop_envoy, shop) = client_sidecar(server.xds(), "shop").await;

    assert_eq!(
        backends(front, catalog, 8).await,
        ["catalog-v1"],
        "front's own rule applies to front's client"
    );
    for (ns, addr) in [("back", back), ("shop", shop)] {
        assert_eq!(
            backends(addr, catalog, 8).await,
            ["catalog-v2"],
            "{ns} keeps the service namespace's rule"
        );
    }
    assert_eq!(
        backends(shop, cart, 8).await,
        ["cart-v1"],
        "a rule exported to `.` serves its own namespace"
    );
    for (ns, addr) in [("front", front), ("back", back)] {
        assert_eq!(
            backends(addr, cart, 8).await,
            ["cart-v2"],
            "{ns} does not see shop's private rule: the root namespace's applies"
        );
    }

    let hidden = "outbound|80||hidden.shop.svc.cluster.local";
    shop_envoy.wait_for_cluster(hidden, WAIT).await;
    for envoy in [&front_envoy, &back_envoy] {
        let clusters = support::dump::cluster_names(&envoy.config_dump().await);
        assert!(
            !clusters.iter().any(|c| c.contains("hidden.shop")),
            "a Service exported to `.` has no cluster elsewhere: {clusters:?}"
        );
        assert!(
            clusters
                .iter()
                .any(|c| c == "outbound|80||catalog.shop.svc.cluster.local")
        );
        envoy.assert_all_acked().await;
    }
    shop_envoy.assert_all_acked().await;

    // `front`'s rule deleted: its client falls back to the service namespace's rule, and a
    // Service exported to `front` too now has its cluster there.
    files.retain(|f| *f != front_rule);
    for f in &mut files {
        if f.contains("name: hidden\n") {
            *f = f.replace("exportTo: \".\"", "exportTo: \".,front\"");
        }
    }
    support::write_manifests(dir.path(), &[("mesh.yaml", &files.join("---\n"))]);
    support::eventually(
        "front follows the service namespace's rule",
        WAIT,
        || async {
            match backends(front, catalog, 4).await.as_slice() {
                [only] if only == "catalog-v2" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    front_envoy.wait_for_cluster(hidden, WAIT).await;
    let clusters = support::dump::cluster_names(&back_envoy.config_dump().await);
    assert!(
        !clusters.iter().any(|c| c.contains("hidden.shop")),
        "{clusters:?}"
    );
}
