//! Which API resource serves each watched kind. The core kinds are fixed (`v1`,
//! `discovery.k8s.io/v1`); each Istio kind is looked up in its group (`networking.istio.io`,
//! `security.istio.io`, `telemetry.istio.io` or `extensions.istio.io`), preferring `v1`, then
//! `v1beta1`, `v1alpha3`, `v1alpha1`. A missing group, kind or version is logged and the
//! kind left out (it then syncs as empty, so a missing CRD never holds readiness back); only
//! transport/API failures are retried.
//!
//! Uses `/apis` + `/apis/GROUP/VERSION` (kube's `discovery::group`), which works
//! on every server; aggregated discovery is avoided on purpose (it reports zero groups, without
//! an error, against servers older than 1.26).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use kube::core::ApiResource;
use kube::discovery::{ApiGroup, verbs};
use kube::error::DiscoveryError;
use tracing::{info, warn};

use super::{Client, KubeKind};
use tokio_util::sync::CancellationToken as Shutdown;

/// Every Istio API group a watched kind lives in.
const ISTIO_GROUPS: [&str; 4] = [
    "networking.istio.io",
    "security.istio.io",
    "telemetry.istio.io",
    "extensions.istio.io",
];
/// Istio versions in order of preference (they share one schema; `v1alpha1` is the only
/// version of WasmPlugin and the oldest of Telemetry).
const ISTIO_VERSIONS: [&str; 4] = ["v1", "v1beta1", "v1alpha3", "v1alpha1"];
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Resolves every watched kind the server serves. Retries (with backoff) while the API server
/// cannot be reached; `None` on shutdown.
pub(super) async fn resolve(
    client: &Client,
    shutdown: &Shutdown,
) -> Option<BTreeMap<KubeKind, ApiResource>> {
    let mut resources = BTreeMap::from([
        (
            KubeKind::Namespace,
            ApiResource::erase::<core::Namespace>(&()),
        ),
        (KubeKind::Node, ApiResource::erase::<core::Node>(&())),
        (KubeKind::Service, ApiResource::erase::<core::Service>(&())),
        (
            KubeKind::EndpointSlice,
            ApiResource::erase::<discovery::EndpointSlice>(&()),
        ),
        (KubeKind::Pod, ApiResource::erase::<core::Pod>(&())),
        (KubeKind::Secret, ApiResource::erase::<core::Secret>(&())),
    ]);
    for group_name in ISTIO_GROUPS {
        let group = discover_group(client, group_name, shutdown).await?;
        let kinds = KubeKind::ALL
            .into_iter()
            .filter(|k| k.istio_group() == Some(group_name));
        let Some(group) = group else {
            let (unserved, served): (Vec<KubeKind>, Vec<KubeKind>) =
                kinds.partition(|k| k.is_unserved());
            if served.is_empty() {
                // Only kinds meshpilot would merely warn about live here: nothing is lost.
                let names: Vec<&str> = unserved.into_iter().map(KubeKind::as_str).collect();
                info!(
                    "the API server does not serve {group_name}: {} not watched",
                    names.join(", ")
                );
                continue;
            }
            let names: Vec<&str> = served.into_iter().map(KubeKind::as_str).collect();
            warn!(
                "the API server does not serve {group_name} (Istio CRDs not installed?): {} \
                 not watched; install manifests/install/10-crds.yaml and restart to serve them",
                names.join(", ")
            );
            continue;
        };
        for kind in kinds {
            let found = ISTIO_VERSIONS.iter().find_map(|v| {
                group
                    .versioned_resources(v)
                    .into_iter()
                    .find(|(ar, caps)| {
                        ar.kind == kind.as_str()
                            && caps.supports_operation(verbs::LIST)
                            && caps.supports_operation(verbs::WATCH)
                    })
                    .map(|(ar, _)| ar)
            });
            match found {
                Some(ar) => {
                    info!(kind = kind.as_str(), api_version = %ar.api_version, "watching");
                    resources.insert(kind, ar);
                }
                // No CRD for a kind meshpilot only warns about: nothing of it can exist.
                None if kind.is_unserved() => info!(
                    kind = kind.as_str(),
                    "{group_name} serves no {}: not watched",
                    kind.as_str()
                ),
                None => warn!(
                    kind = kind.as_str(),
                    "{group_name} serves no {} in v1, v1beta1, v1alpha3 or v1alpha1 (CRD missing?): not watched",
                    kind.as_str()
                ),
            }
        }
    }
    Some(resources)
}

/// One API group's discovery, retried (with backoff) while the API server cannot be reached:
/// `Some(None)` when the server does not serve the group, `None` on shutdown.
async fn discover_group(
    client: &Client,
    name: &str,
    shutdown: &Shutdown,
) -> Option<Option<ApiGroup>> {
    let mut delay = RETRY_MIN;
    loop {
        match kube::discovery::group(client, name).await {
            Ok(group) => return Some(Some(group)),
            Err(kube::Error::Discovery(DiscoveryError::MissingApiGroup(_))) => return Some(None),
            Err(e) => {
                warn!(error = %e, retry_in = ?delay, "API discovery of {name} failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
}
