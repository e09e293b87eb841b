//! The manifests of a generated mesh, as YAML text (names and addresses are generated, never
//! user input, so plain formatting is safe).

use std::fmt::Write;

use super::{EndpointKind, SERVICE_PORT, TARGET_PORT};

pub(super) fn namespace(name: &str) -> String {
    format!("---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

/// A Service and its endpoints: Pods labelled `app`/`version` (and `topology.istio.io/locality`
/// where `localities` gives one, `REGION.ZONE`), or one EndpointSlice.
pub(super) fn service(
    name: &str,
    ns: &str,
    ips: &[String],
    localities: &[Option<String>],
    kind: EndpointKind,
) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  \
         selector:\n    app: {name}\n  ports:\n  - name: http\n    port: {SERVICE_PORT}\n    \
         targetPort: {TARGET_PORT}\n"
    );
    match kind {
        EndpointKind::Pods => {
            for (j, ip) in ips.iter().enumerate() {
                let version = if j % 2 == 0 { "v1" } else { "v2" };
                let locality = match localities.get(j) {
                    Some(Some(l)) => format!("    topology.istio.io/locality: {l}\n"),
                    _ => String::new(),
                };
                let _ = write!(
                    y,
                    "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}-{j}\n  \
                     namespace: {ns}\n  labels:\n    app: {name}\n    version: {version}\n\
                     {locality}spec:\n  containers:\n  - name: app\n    image: app\n    ports:\n    \
                     - name: http\n      containerPort: {TARGET_PORT}\n\
                     status:\n  phase: Running\n  podIP: {ip}\n  conditions:\n  \
                     - type: Ready\n    status: \"True\"\n"
                );
            }
        }
        EndpointKind::Slices => {
            let _ = write!(
                y,
                "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  \
                 name: {name}-1\n  namespace: {ns}\n  labels:\n    \
                 kubernetes.io/service-name: {name}\naddressType: IPv4\nports:\n- name: http\n  \
                 port: {TARGET_PORT}\n  protocol: TCP\nendpoints:\n"
            );
            for ip in ips {
                let _ = write!(
                    y,
                    "- addresses: [\"{ip}\"]\n  conditions:\n    ready: true\n"
                );
            }
        }
    }
    y
}

/// A service's DestinationRule: subsets v1/v2 (by the `version` label) when `subsets`, outlier
/// detection when `outlier` (which makes its clusters balance by locality).
pub(super) fn destination_rule(name: &str, ns: &str, subsets: bool, outlier: bool) -> String {
    let mut y = format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {name}\n  \
         namespace: {ns}\nspec:\n  host: {name}\n"
    );
    if outlier {
        y.push_str(
            "  trafficPolicy:\n    outlierDetection:\n      consecutive5xxErrors: 5\n      \
             interval: 10s\n      baseEjectionTime: 30s\n",
        );
    }
    if subsets {
        y.push_str(
            "  subsets:\n  - name: v1\n    labels:\n      version: v1\n  - name: v2\n    \
             labels:\n      version: v2\n",
        );
    }
    y
}

/// Namespace `ns`'s own DestinationRules for `hosts` (of another namespace): seen by its clients
/// only (`exportTo: ["."]`), with `ROUND_ROBIN` rather than the default `LEAST_REQUEST`, so its
/// clients' clusters for those hosts differ from everyone else's.
pub(super) fn namespace_rules(ns: &str, hosts: &[String]) -> String {
    let mut y = String::new();
    for (k, host) in hosts.iter().enumerate() {
        let _ = write!(
            y,
            "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  \
             name: own-{k}\n  namespace: {ns}\nspec:\n  host: {host}\n  exportTo: [\".\"]\n  \
             trafficPolicy:\n    loadBalancer:\n      simple: ROUND_ROBIN\n"
        );
    }
    y
}

/// The default Sidecar of namespace `ns`: its proxies reach their own namespace, `next` (the
/// namespace whose services `ns`'s own DestinationRules cover) and `istio-system` only.
pub(super) fn sidecar(ns: &str, next: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: default\n  \
         namespace: {ns}\nspec:\n  egress:\n  - hosts: [\"./*\", \"{next}/*\", \"istio-system/*\"]\n"
    )
}

/// A VirtualService for `name` splitting traffic `weight`/`100 - weight`: across subsets v1/v2
/// when the service has a DestinationRule, else between the service and `other`.
pub(super) fn virtual_service(
    name: &str,
    ns: &str,
    subsets: bool,
    other: &str,
    weight: u32,
) -> String {
    let (a, b) = if subsets {
        (
            format!("host: {name}\n        subset: v1"),
            format!("host: {name}\n        subset: v2"),
        )
    } else {
        (format!("host: {name}"), format!("host: {other}"))
    };
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n  \
         namespace: {ns}\nspec:\n  hosts:\n  - {name}\n  http:\n  - route:\n    - destination:\n        \
         {a}\n      weight: {weight}\n    - destination:\n        {b}\n      weight: {}\n",
        100 - weight
    )
}
