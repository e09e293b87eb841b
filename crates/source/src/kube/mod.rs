//! The Kubernetes source: kube-rs watchers on Service, EndpointSlice, Pod, Namespace, Node,
//! Secret, the six `networking.istio.io` kinds and `security.istio.io` PeerAuthentication,
//! and — for their metadata only, each object a warning of what its author loses — the Istio
//! kinds meshpilot does not serve (EnvoyFilter, WorkloadGroup, ProxyConfig, Telemetry,
//! AuthorizationPolicy, RequestAuthentication, WasmPlugin), feeding the push engine through the same [`convert`](crate::convert::convert) as the file
//! source, so a manifest means the same thing from a file or from the API server.
//!
//! Every watched kind in every scope (a `--namespaces` entry, or the whole cluster) is its own
//! [`SourceId::Kube`]: its initial list, and every relist after a `410 Gone`, is sent as one
//! atomic [`SourceEvent::Reset`] at the watcher's `InitDone` (the previous set keeps serving
//! until then, so no transiently empty config is pushed). Between lists, watch events become
//! `Update`s of one object each. The push engine serves nothing until every one of them has synced once.
//!
//! * [`discovery`] — which of `v1`/`v1beta1`/`v1alpha3` serves each Istio kind (a missing CRD
//!   or version is logged and that kind is synced as empty);
//! * [`watch`] — one watcher per kind and scope: list/relist buffering, conversion, errors;
//! * [`nodes`] — Node metadata only, projected to `topology.kubernetes.io` region/zone, which
//!   Pods carry as their locality.

mod discovery;
mod nodes;
mod watch;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{SourceEvent, SourceId};
use tokio_util::sync::CancellationToken as Shutdown;

pub use kube::Client;
pub use meshpilot_model::KubeKind;

/// Why the Kubernetes source could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither a kubeconfig context nor the in-cluster service account is available.
    #[error("no Kubernetes configuration (kubeconfig context or in-cluster service account)")]
    Config(#[from] kube::config::InferConfigError),
    /// The configuration was found but a client cannot be built from it (e.g. bad TLS files).
    #[error("cannot build a Kubernetes client")]
    Client(#[source] kube::Error),
    /// The mesh configuration's ConfigMap cannot be listed.
    #[error("cannot read ConfigMap {MESH_CONFIGMAP_NAMESPACE}/{MESH_CONFIGMAP}")]
    MeshConfigMap(#[source] kube::Error),
    /// The mesh configuration's ConfigMap holds a bad `mesh` key.
    #[error(transparent)]
    MeshConfig(#[from] crate::mesh_config::MeshConfigError),
}

/// Where istiod finds its mesh configuration in a cluster: the `mesh` key of this ConfigMap.
pub const MESH_CONFIGMAP: &str = "istio";
pub const MESH_CONFIGMAP_NAMESPACE: &str = meshpilot_model::ROOT_NAMESPACE;
const MESH_CONFIGMAP_KEY: &str = "mesh";
/// How many times the ConfigMap is asked for before the start fails.
const MESH_CONFIGMAP_TRIES: u32 = 5;

/// The mesh configuration from the `mesh` key of ConfigMap `istio-system/istio`, read once;
/// `None` when there is no such ConfigMap or key (istiod's defaults).
pub async fn mesh_config(client: &Client) -> Result<Option<crate::mesh_config::MeshConfig>, Error> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), MESH_CONFIGMAP_NAMESPACE);
    // A list by name rather than a get: with no such ConfigMap it is an empty list, not an
    // error to tell apart from the others.
    let params =
        kube::api::ListParams::default().fields(&format!("metadata.name={MESH_CONFIGMAP}"));
    // A few tries: one failed request at start (an API server restarting) should not stop
    // the start, but a server that keeps failing should.
    let mut tries = 1;
    let list = loop {
        match api.list(&params).await {
            Ok(list) => break list,
            // An install whose role predates this read keeps running on istiod's defaults,
            // told how to get its mesh configuration read.
            Err(kube::Error::Api(status)) if status.code == 403 => {
                warn!(
                    "cannot read ConfigMap {MESH_CONFIGMAP_NAMESPACE}/{MESH_CONFIGMAP} (forbidden): \
                     the mesh defaults apply; grant `list` on configmaps in \
                     {MESH_CONFIGMAP_NAMESPACE} (manifests/install/20-rbac.yaml) or pass --mesh-config"
                );
                return Ok(None);
            }
            Err(e) if tries < MESH_CONFIGMAP_TRIES => {
                warn!(error = %e, "reading ConfigMap {MESH_CONFIGMAP_NAMESPACE}/{MESH_CONFIGMAP}; trying again");
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(Error::MeshConfigMap(e)),
        }
    };
    let Some(text) = list
        .items
        .iter()
        .find(|cm| cm.metadata.name.as_deref() == Some(MESH_CONFIGMAP))
        .and_then(|cm| cm.data.as_ref()?.get(MESH_CONFIGMAP_KEY))
    else {
        return Ok(None);
    };
    let origin =
        format!("ConfigMap {MESH_CONFIGMAP_NAMESPACE}/{MESH_CONFIGMAP} key {MESH_CONFIGMAP_KEY}");
    Ok(Some(crate::mesh_config::parse(text, &origin)?))
}

/// Builds a client from the current kubeconfig context (`KUBECONFIG`, else `~/.kube/config`),
/// else from the in-cluster service account. Reads local files only: no request is made.
pub async fn client() -> Result<Client, Error> {
    let config = kube::Config::infer().await?;
    info!(server = %config.cluster_url, "kubernetes API server");
    Client::try_from(config).map_err(Error::Client)
}

/// The scopes a kind is watched in: one per `--namespaces` entry for namespaced kinds, else the
/// whole cluster (`None`).
/// What the Kubernetes source watches.
#[derive(Debug, Clone, Default)]
pub struct KubeConfig {
    /// Namespaces to watch namespaced kinds in; empty means all.
    pub namespaces: Vec<String>,
}

fn scopes(kind: KubeKind, cfg: &KubeConfig) -> Vec<(u16, Option<String>)> {
    if !kind.is_namespaced() || cfg.namespaces.is_empty() {
        return vec![(0, None)];
    }
    cfg.namespaces
        .iter()
        .enumerate()
        .map(|(i, ns)| (u16::try_from(i).unwrap_or(u16::MAX), Some(ns.clone())))
        .collect()
}

/// Every source the Kubernetes source will sync: the push engine serves nothing before all of
/// them have sent their first [`SourceEvent::Reset`] (kinds the server lacks send an empty one).
pub fn expected_sources(cfg: &KubeConfig) -> Vec<SourceId> {
    KubeKind::ALL
        .into_iter()
        .flat_map(|kind| {
            scopes(kind, cfg)
                .into_iter()
                .map(move |(scope, _)| SourceId::Kube { kind, scope })
        })
        .collect()
}

/// Discovers the Istio kinds, then watches every kind until shutdown.
pub async fn run(
    client: Client,
    cfg: KubeConfig,
    tx: mpsc::Sender<SourceEvent>,
    shutdown: Shutdown,
) {
    let span = info_span!("kube", namespaces = ?cfg.namespaces);
    run_inner(client, cfg, tx, shutdown).instrument(span).await;
}

async fn run_inner(
    client: Client,
    cfg: KubeConfig,
    tx: mpsc::Sender<SourceEvent>,
    shutdown: Shutdown,
) {
    // A discovery request can hang as long as the client's timeouts allow: never past shutdown.
    let resolved = tokio::select! {
        _ = shutdown.cancelled() => None,
        r = discovery::resolve(&client, &shutdown) => r,
    };
    let Some(resources) = resolved else {
        return;
    };
    let localities = nodes::Localities::default();
    let mut tasks = JoinSet::new();
    for kind in KubeKind::ALL {
        for (scope, namespace) in scopes(kind, &cfg) {
            let source = SourceId::Kube { kind, scope };
            let Some(resource) = resources.get(&kind) else {
                // Not served: nothing of this kind exists, which is a complete (empty) list.
                let empty = SourceEvent::Reset {
                    source,
                    objects: Vec::new(),
                    diagnostics: Vec::new(),
                };
                if tx.send(empty).await.is_err() {
                    return;
                }
                continue;
            };
            let span = info_span!(
                "watch",
                kind = kind.as_str(),
                namespace = namespace.as_deref().unwrap_or("*")
            );
            if kind == KubeKind::Node {
                tasks.spawn(
                    nodes::run(
                        client.clone(),
                        source,
                        localities.clone(),
                        tx.clone(),
                        shutdown.clone(),
                    )
                    .instrument(span),
                );
                continue;
            }
            let w = watch::Watch {
                source,
                kind,
                resource: resource.clone(),
                namespace,
                localities: (kind == KubeKind::Pod).then(|| localities.clone()),
            };
            tasks.spawn(
                watch::run(client.clone(), w, tx.clone(), shutdown.clone()).instrument(span),
            );
        }
    }
    drop(tx);
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            warn!(error = %e, "a kubernetes watch task failed");
        }
    }
    debug!("kubernetes source stopped");
}
