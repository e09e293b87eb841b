//! The manifests of a generated mesh, as YAML text (names and addresses are generated, never
//! user input, so plain formatting is safe).

use std::fmt::Write;

use super::{EndpointKind, SERVICE_PORT, TARGET_PORT};

pub(super) fn namespace(name: &str) -> String {
    format!("---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

/// A Service and its endpoints: Pods labelled `app`/`version`, or one EndpointSlice.
pub(super) fn service(name: &str, ns: &str, ips: &[String], kind: EndpointKind) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  \
         selector:\n    app: {name}\n  ports:\n  - name: http\n    port: {SERVICE_PORT}\n    \
         targetPort: {TARGET_PORT}\n"
    );
    match kind {
        EndpointKind::Pods => {
            for (j, ip) in ips.iter().enumerate() {
                let version = if j % 2 == 0 { "v1" } else { "v2" };
                let _ = write!(
                    y,
                    "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}-{j}\n  \
                     namespace: {ns}\n  labels:\n    app: {name}\n    version: {version}\n\
                     spec:\n  containers:\n  - name: app\n    image: app\n    ports:\n    \
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

pub(super) fn destination_rule(name: &str, ns: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {name}\n  \
         namespace: {ns}\nspec:\n  host: {name}\n  subsets:\n  - name: v1\n    labels:\n      \
         version: v1\n  - name: v2\n    labels:\n      version: v2\n"
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
