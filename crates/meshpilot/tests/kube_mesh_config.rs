//! `serve --kube` reads the mesh configuration where istiod finds it in a cluster, the `mesh`
//! key of ConfigMap `istio-system/istio` (stand-in API server, `support::kubeapi`): its
//! `exportTo` defaults reach the registry (`/debug/registryz`), its unread fields are warned
//! about, and a bad one stops the start naming the ConfigMap and the field.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::kubeapi::{Istio, KubeApi};
use support::{Meshpilot, eventually};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(15);

fn mesh_configmap(mesh: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "istio", "namespace": "istio-system"},
        "data": {"mesh": mesh}})
}

fn spawn(api: &KubeApi, dir: &TempDir) -> Meshpilot {
    let kubeconfig = api.kubeconfig(dir.path());
    Meshpilot::spawn_with_env(&[], &["--kube"], &[("KUBECONFIG", kubeconfig.as_path())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_istio_configmap_sets_the_export_defaults() {
    let api = KubeApi::start(Istio::all(&["v1"])).await;
    api.apply(mesh_configmap(
        "defaultServiceExportTo: [\".\"]\nenableTracing: true\n",
    ));
    api.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": 80}], "clusterIP": "10.96.0.10"}}));
    let dir = TempDir::new().expect("temp dir");
    let server = spawn(&api, &dir);
    server.wait_ready(WAIT).await;
    let export_to = eventually("reviews in the registry", WAIT, || async {
        let registry = server.debug_json("/debug/registryz").await?;
        registry
            .get("reviews.shop.svc.cluster.local")
            .map(|svc| svc["export_to"].clone())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    assert_eq!(
        export_to,
        json!(["."]),
        "the mesh default for a Service without exportTo"
    );
    assert!(
        server
            .logs()
            .contains("meshConfig.enableTracing is not read by meshpilot: ignored"),
        "{}",
        server.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_istio_configmap_stops_the_start() {
    let api = KubeApi::start(Istio::all(&["v1"])).await;
    api.apply(mesh_configmap("outboundTrafficPolicy: {mode: DENY}\n"));
    let dir = TempDir::new().expect("temp dir");
    let server = spawn(&api, &dir);
    let status = eventually("meshpilot exits", WAIT, || async {
        server.exited().ok_or_else(|| "still running".to_string())
    })
    .await;
    assert!(!status.success());
    let logs = server.logs();
    assert!(
        logs.contains(
            "mesh config ConfigMap istio-system/istio key mesh: \
             meshConfig.outboundTrafficPolicy.mode: `DENY` is not ALLOW_ANY or REGISTRY_ONLY"
        ),
        "{logs}"
    );
}
