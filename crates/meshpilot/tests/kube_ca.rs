//! The CA in Kubernetes mode, against the repository's stand-in API server (the real wire
//! protocol; no kube-apiserver runs here): callers' tokens are checked with TokenReview
//! (audience `istio-ca`), and every namespace gets the `istio-ca-root-cert` ConfigMap with the
//! mesh root, as istiod's namespace controller keeps it.

mod support;

use std::time::{Duration, Instant};

use meshpilot_ca::testing::csr_for;
use serde_json::{Value, json};
use support::Meshpilot;
use support::kubeapi::{Istio, KubeApi};
use support::mesh_ca::{create_certificate, spiffe_sans};

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

async fn wait_for_root(api: &KubeApi, ns: &str, root: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let cm = api.get("ConfigMap", ns, "istio-ca-root-cert");
        if let Some(cm) = &cm
            && cm["data"]["root-cert.pem"] == root
        {
            assert_eq!(cm["metadata"]["labels"]["istio.io/config"], "true", "{cm}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no istio-ca-root-cert with the root in {ns} (now {cm:?}): {:?}",
            api.requests()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_reviewed_by_the_api_and_every_namespace_gets_the_root() {
    let api = KubeApi::start(Istio::all(&["v1"])).await;
    for ns in ["default", "shop", "kube-public"] {
        api.apply(namespace(ns));
    }
    api.accept_token("tok-cart", "system:serviceaccount:shop:cart");
    api.accept_token("tok-user", "alice");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = api.kubeconfig(dir.path());
    let ca_dir = dir.path().join("ca");
    let secure = support::admin_addr().to_string();
    let server = Meshpilot::spawn_with_env(
        &[],
        &[
            "--kube",
            "--ca-dir",
            &ca_dir.display().to_string(),
            "--secure-xds-address",
            &secure,
        ],
        &[("KUBECONFIG", kubeconfig.as_path())],
    );
    server.wait_ready(Duration::from_secs(20)).await;
    let root = std::fs::read_to_string(ca_dir.join("root-cert.pem")).expect("root");

    let (_key, csr) = csr_for("spiffe://cluster.local/ns/x/sa/y");
    let chain = create_certificate(server.xds(), Some("tok-cart"), &csr, 3600)
        .await
        .expect("a reviewed token gets a certificate")
        .cert_chain;
    assert_eq!(
        spiffe_sans(&chain[0]),
        vec!["spiffe://cluster.local/ns/shop/sa/cart".to_string()]
    );
    for (token, why) in [
        ("tok-nobody", "token not recognised"),
        ("tok-user", "alice"),
    ] {
        let refused = create_certificate(server.xds(), Some(token), &csr, 3600)
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(refused.message().contains(why), "{}", refused.message());
    }
    assert!(
        api.requests()
            .iter()
            .any(|r| r.starts_with("POST /apis/authentication.k8s.io/v1/tokenreviews")),
        "the API server was asked"
    );

    // Every namespace but the ignored ones has the root; a new namespace gets it too.
    wait_for_root(&api, "default", &root).await;
    wait_for_root(&api, "shop", &root).await;
    api.apply(namespace("late"));
    wait_for_root(&api, "late", &root).await;
    assert!(
        api.get("ConfigMap", "kube-public", "istio-ca-root-cert")
            .is_none()
    );

    // Deleted, or edited to another root, the ConfigMap is put back (istiod's controller does
    // the same), without the namespace changing.
    api.delete("ConfigMap", "shop", "istio-ca-root-cert");
    wait_for_root(&api, "shop", &root).await;
    api.apply(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "istio-ca-root-cert", "namespace": "default"},
        "data": {"root-cert.pem": "not the mesh's root"}}));
    wait_for_root(&api, "default", &root).await;
}
