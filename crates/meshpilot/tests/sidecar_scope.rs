//! A Sidecar's `egress[].hosts` scopes what a real sidecar Envoy 1.40 gets, as istiod's
//! SidecarScope does: under `./*` the proxy has no cluster, endpoints or listener for a TCP
//! service of another namespace, keeps those of its own namespace (and traffic to them works),
//! and keeps the cluster a VirtualService in scope routes to, even in another namespace.
//! Removing the Sidecar brings the other namespace's service back while the Envoy runs.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use support::{Envoy, Meshpilot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

const DB: &str = "outbound|9001||db.shop.svc.cluster.local";
const VAULT: &str = "outbound|9002||vault.bank.svc.cluster.local";
const LEDGER: &str = "outbound|9004||ledger.bank.svc.cluster.local";

/// A TCP backend on `addr` that writes `name` to each connection and closes it.
async fn greeter(addr: SocketAddr, name: &'static str) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let _ = conn.write_all(name.as_bytes()).await;
        }
    })
}

/// What the server at `addr` writes before closing.
async fn tcp_read(addr: SocketAddr) -> Result<String, String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut text))
        .await
        .map_err(|_| "read timed out".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    Ok(text)
}

/// Waits until a connection to `port` of the sidecar at `ip` reaches `backend`.
async fn reaches(ip: IpAddr, port: u16, backend: &str) {
    support::eventually(&format!("{ip}:{port} → {backend}"), WAIT, || async {
        match tcp_read(SocketAddr::new(ip, port)).await? {
            got if got == backend => Ok(()),
            got => Err(format!("read {got:?}")),
        }
    })
    .await;
}

fn service(name: &str, ns: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  selector: {{app: {name}}}\n  ports: [{{name: tcp, port: {port}, targetPort: {port}}}]\n"
    )
}

const SCOPE: &str = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress:
  - hosts: [./*]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_hosts_scope_a_sidecars_clusters_endpoints_and_tcp_listeners() {
    let _envoy_bin = support::require_envoy!();
    // (name, namespace, port): `front`'s VirtualService sends its connections to `ledger`.
    let backends = [
        ("db", "shop", 9001),
        ("vault", "bank", 9002),
        ("ledger", "bank", 9004),
    ];
    let ips: Vec<IpAddr> = backends.iter().map(|_| support::loopback_ip()).collect();
    let mut greeters = Vec::new();
    for ((name, _, port), ip) in backends.iter().zip(&ips) {
        greeters.push(greeter(SocketAddr::new(*ip, *port), name).await);
    }
    let mut files: Vec<String> = backends
        .iter()
        .zip(&ips)
        .flat_map(|((name, ns, port), ip)| {
            [
                service(name, ns, *port),
                support::pod_yaml(name, ns, &[("app", name)], *ip, &[]),
            ]
        })
        .collect();
    files.push(service("front", "shop", 9003));
    files.push(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: front, namespace: shop}
spec:
  hosts: [front]
  tcp:
  - route: [{destination: {host: ledger.bank.svc.cluster.local, port: {number: 9004}}}]
"
        .to_string(),
    );
    let dir = tempfile::TempDir::new().expect("temp dir");
    let with_scope = [files.clone(), vec![SCOPE.to_string()]].concat();
    support::write_manifests(dir.path(), &[("mesh.yaml", &with_scope.join("---\n"))]);
    let server = Meshpilot::start(&[dir.path()]).await;

    // A sidecar in `shop` without interception: it binds each outbound port on its own address.
    let ip = support::loopback_ip();
    let admin = support::admin_addr();
    let mut args = support::bootstrap_args(
        &support::node_id("sidecar", ip, "client", "shop"),
        server.xds(),
        admin,
    );
    args.labels = vec![("app".to_string(), "client".to_string())];
    let envoy = Envoy::start(support::render_bootstrap(&args), admin).await;
    envoy.wait_for_cluster(LEDGER, WAIT).await;
    envoy.wait_for_listener(&format!("{ip}_9003"), WAIT).await;

    // Its own namespace's service and the VirtualService's destination work.
    reaches(ip, 9001, "db").await;
    reaches(ip, 9003, "ledger").await;
    let dump = envoy.config_dump().await;
    let clusters = support::dump::cluster_names(&dump);
    let listeners = support::dump::listener_names(&dump);
    assert!(clusters.iter().any(|c| c == DB), "{clusters:?}");
    assert!(
        !clusters.iter().any(|c| c.contains(".bank.") && c != LEDGER),
        "no cluster of `bank` but the routed one: {clusters:?}"
    );
    assert!(support::dump::endpoints(&dump, VAULT).is_empty());
    assert!(!support::dump::endpoints(&dump, LEDGER).is_empty());
    assert!(
        !listeners
            .iter()
            .any(|l| l.ends_with("_9002") || l.ends_with("_9004")),
        "no listener for `bank`'s ports: {listeners:?}"
    );
    envoy.assert_all_acked().await;

    // The Sidecar removed: `bank`'s services come back while the Envoy runs.
    support::write_manifests(dir.path(), &[("mesh.yaml", &files.join("---\n"))]);
    envoy.wait_for_cluster(VAULT, WAIT).await;
    envoy.wait_for_listener(&format!("{ip}_9002"), WAIT).await;
    reaches(ip, 9002, "vault").await;
    reaches(ip, 9001, "db").await;
    reaches(ip, 9003, "ledger").await;
    envoy.assert_all_acked().await;
    drop(greeters);
}
