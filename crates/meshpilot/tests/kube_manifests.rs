//! The in-cluster install (`manifests/install/`): every document parses into its k8s-openapi /
//! apiextensions type without losing a field (a typo'd or misplaced field would be dropped, so
//! the typed object is serialized back and compared), and the install says what the issue asks:
//! read-only RBAC on exactly the watched kinds (and on ConfigMaps in `istio-system` alone, for
//! the mesh configuration), two hardened replicas probed on 15014, a Service
//! `istiod` on 15010/15014, and structural CRDs for the seven Istio kinds.

use std::collections::BTreeSet;
use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

#[derive(Default)]
struct Install {
    namespaces: Vec<Namespace>,
    accounts: Vec<ServiceAccount>,
    roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
    namespace_roles: Vec<Role>,
    namespace_bindings: Vec<RoleBinding>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    crds: Vec<CustomResourceDefinition>,
}

/// Parses `doc` as `T` and checks that nothing was lost on the way.
fn typed<T: DeserializeOwned + Serialize>(doc: &Value, file: &str) -> T {
    let t: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{file}: {} {}: {e}", doc["kind"], doc["metadata"]["name"]));
    let back = serde_json::to_value(&t).expect("serialize");
    assert_eq!(
        &back, doc,
        "{file}: {} {} has fields its type does not know",
        doc["kind"], doc["metadata"]["name"]
    );
    t
}

fn load() -> Install {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/install");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("manifests/install")
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.sort();
    let mut install = Install::default();
    for path in files {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path).expect("read manifest");
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            match (doc["apiVersion"].as_str(), doc["kind"].as_str()) {
                (Some("v1"), Some("Namespace")) => install.namespaces.push(typed(&doc, &file)),
                (Some("v1"), Some("ServiceAccount")) => install.accounts.push(typed(&doc, &file)),
                (Some("v1"), Some("Service")) => install.services.push(typed(&doc, &file)),
                (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRole")) => {
                    install.roles.push(typed(&doc, &file))
                }
                (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRoleBinding")) => {
                    install.bindings.push(typed(&doc, &file))
                }
                (Some("rbac.authorization.k8s.io/v1"), Some("Role")) => {
                    install.namespace_roles.push(typed(&doc, &file))
                }
                (Some("rbac.authorization.k8s.io/v1"), Some("RoleBinding")) => {
                    install.namespace_bindings.push(typed(&doc, &file))
                }
                (Some("apps/v1"), Some("Deployment")) => {
                    install.deployments.push(typed(&doc, &file))
                }
                (Some("apiextensions.k8s.io/v1"), Some("CustomResourceDefinition")) => {
                    install.crds.push(typed(&doc, &file))
                }
                other => panic!("{file}: unexpected document {other:?}"),
            }
        }
    }
    install
}

#[test]
fn rbac_is_read_only_on_exactly_the_watched_kinds() {
    let install = load();
    let [role] = install.roles.as_slice() else {
        panic!("one ClusterRole expected");
    };
    let mut granted = BTreeSet::new();
    for rule in role.rules.iter().flatten() {
        let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
        assert_eq!(verbs, BTreeSet::from(["get", "list", "watch"]));
        for g in rule.api_groups.iter().flatten() {
            for r in rule.resources.iter().flatten() {
                granted.insert(format!("{g}/{r}"));
            }
        }
    }
    let watched: BTreeSet<String> = [
        "/namespaces",
        "/nodes",
        "/pods",
        "/services",
        "/secrets",
        "discovery.k8s.io/endpointslices",
        "networking.istio.io/virtualservices",
        "networking.istio.io/destinationrules",
        "networking.istio.io/gateways",
        "networking.istio.io/serviceentries",
        "networking.istio.io/workloadentries",
        "networking.istio.io/sidecars",
        "security.istio.io/peerauthentications",
        // Unserved kinds, watched only to warn about them.
        "networking.istio.io/envoyfilters",
        "networking.istio.io/workloadgroups",
        "networking.istio.io/proxyconfigs",
        "security.istio.io/authorizationpolicies",
        "security.istio.io/requestauthentications",
        "telemetry.istio.io/telemetries",
        "extensions.istio.io/wasmplugins",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    assert_eq!(granted, watched);

    let [binding] = install.bindings.as_slice() else {
        panic!("one ClusterRoleBinding expected");
    };
    assert_eq!(
        binding.role_ref.name,
        role.metadata.name.clone().unwrap_or_default()
    );
    let [account] = install.accounts.as_slice() else {
        panic!("one ServiceAccount expected");
    };
    let subject = &binding.subjects.as_ref().expect("subjects")[0];
    assert_eq!(Some(&subject.name), account.metadata.name.as_ref());
    assert_eq!(subject.namespace.as_deref(), Some("istio-system"));
    assert_eq!(install.namespaces.len(), 1);
    assert_eq!(
        install.namespaces[0].metadata.name.as_deref(),
        Some("istio-system")
    );
}

#[test]
fn the_mesh_configuration_configmap_is_readable_in_istio_system_only() {
    let install = load();
    let [role] = install.namespace_roles.as_slice() else {
        panic!("one Role expected");
    };
    assert_eq!(role.metadata.namespace.as_deref(), Some("istio-system"));
    let rules = role.rules.as_deref().unwrap_or_default();
    let [rule] = rules else {
        panic!("one rule expected: {rules:?}");
    };
    assert_eq!(rule.api_groups.as_deref(), Some(&[String::new()][..]));
    assert_eq!(
        rule.resources.as_deref(),
        Some(&["configmaps".to_string()][..])
    );
    let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
    assert_eq!(verbs, BTreeSet::from(["get", "list"]));
    let [binding] = install.namespace_bindings.as_slice() else {
        panic!("one RoleBinding expected");
    };
    assert_eq!(binding.metadata.namespace.as_deref(), Some("istio-system"));
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subject = &binding.subjects.as_ref().expect("subjects")[0];
    assert_eq!(subject.name, "meshpilot");
    assert_eq!(subject.namespace.as_deref(), Some("istio-system"));
}

#[test]
fn deployment_runs_two_hardened_probed_replicas() {
    let install = load();
    let [d] = install.deployments.as_slice() else {
        panic!("one Deployment expected");
    };
    assert_eq!(d.metadata.namespace.as_deref(), Some("istio-system"));
    let spec = &d.spec;
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some("meshpilot"));
    assert!(pod.termination_grace_period_seconds.is_some_and(|s| s > 0));
    assert_eq!(
        pod.security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root),
        Some(true)
    );
    let [c] = pod.containers.as_slice() else {
        panic!("one container expected");
    };
    let args = c.args.clone().unwrap_or_default().join(" ");
    assert!(args.starts_with("serve --kube"), "{args}");
    assert!(args.contains("--debug-address 0.0.0.0:15014"), "{args}");
    assert!(args.contains("--xds-address 0.0.0.0:15010"), "{args}");
    let sc = c
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let requests = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("resource requests");
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
    let probe = |p: Option<&k8s_openapi::api::core::v1::Probe>| {
        let get = p.and_then(|p| p.http_get.as_ref()).expect("httpGet probe");
        (get.path.clone().unwrap_or_default(), get.port.clone())
    };
    assert_eq!(
        probe(c.readiness_probe.as_ref()),
        ("/ready".to_string(), IntOrString::Int(15014))
    );
    assert_eq!(
        probe(c.liveness_probe.as_ref()),
        ("/healthz".to_string(), IntOrString::Int(15014))
    );

    // The Service `istiod` selects these pods and exposes both ports by Istio's names.
    let [svc] = install.services.as_slice() else {
        panic!("one Service expected");
    };
    assert_eq!(svc.metadata.name.as_deref(), Some("istiod"));
    let svc_spec = svc.spec.as_ref().expect("service spec");
    let ports: BTreeSet<(String, i32)> = svc_spec
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.port))
        .collect();
    assert_eq!(
        ports,
        BTreeSet::from([
            ("grpc-xds".to_string(), 15010),
            ("http-monitoring".to_string(), 15014)
        ])
    );
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone());
    let selector = svc_spec.selector.clone().unwrap_or_default();
    assert!(
        !selector.is_empty()
            && selector
                .iter()
                .all(|(k, v)| labels.as_ref().and_then(|l| l.get(k)) == Some(v)),
        "Service selector {selector:?} does not select the pods {labels:?}"
    );
}

/// Structural: every node has a `type` (or keeps unknown fields), recursively.
fn assert_structural(s: &JSONSchemaProps, path: &str) {
    assert!(
        s.type_.is_some() || s.x_kubernetes_preserve_unknown_fields == Some(true),
        "{path}: no type"
    );
    for (name, p) in s.properties.iter().flatten() {
        assert_structural(p, &format!("{path}.{name}"));
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(items)) = &s.items {
        assert_structural(items, &format!("{path}[]"));
    }
}

#[test]
fn crds_serve_the_istio_kinds_in_their_versions() {
    let install = load();
    let kinds: BTreeSet<&str> = install
        .crds
        .iter()
        .map(|c| c.spec.names.kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "DestinationRule",
            "Gateway",
            "PeerAuthentication",
            "ServiceEntry",
            "Sidecar",
            "VirtualService",
            "WorkloadEntry"
        ])
    );
    for crd in &install.crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        // PeerAuthentication is `security.istio.io`, which Istio serves in v1 and v1beta1 only.
        let (group, versions) = if crd.spec.names.kind == "PeerAuthentication" {
            ("security.istio.io", BTreeSet::from(["v1", "v1beta1"]))
        } else {
            (
                "networking.istio.io",
                BTreeSet::from(["v1", "v1alpha3", "v1beta1"]),
            )
        };
        assert_eq!(crd.spec.group, group);
        assert_eq!(name, format!("{}.{group}", crd.spec.names.plural));
        assert_eq!(crd.spec.scope, "Namespaced");
        let served: BTreeSet<&str> = crd
            .spec
            .versions
            .iter()
            .filter(|v| v.served)
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(served, versions, "{name}");
        let storage: Vec<&str> = crd
            .spec
            .versions
            .iter()
            .filter(|v| v.storage)
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(storage, ["v1"], "{name}: exactly one storage version");
        for v in &crd.spec.versions {
            let schema = v
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .unwrap_or_else(|| panic!("{name} {}: no schema", v.name));
            assert_eq!(schema.type_.as_deref(), Some("object"));
            assert_structural(schema, &format!("{name}/{}", v.name));
            assert!(
                schema
                    .properties
                    .as_ref()
                    .is_some_and(|p| p.contains_key("spec")),
                "{name}: no spec"
            );
        }
    }
}
