//! Tests for the warnings about spec fields meshpilot does not read: one per field, naming its
//! path, the object still converting; none for the repository's own manifests.

use std::path::Path;

use super::tests::origin;
use super::*;

/// Converts the one document of `yaml`, returning the field paths of its warnings.
fn unread(yaml: &str) -> Vec<String> {
    let doc: Value = serde_saphyr::from_str(yaml).expect("test YAML parses");
    let mut warnings = Vec::new();
    let object = convert_noting(doc, &origin(), &mut warnings).expect("converts");
    assert!(object.is_some(), "the object still serves");
    for w in &warnings {
        assert_eq!(w.severity, meshpilot_model::Severity::Warning);
        let path = w.field.as_deref().unwrap_or_default();
        assert_eq!(
            w.message,
            format!("`{path}` is not read by meshpilot: ignored")
        );
    }
    warnings.into_iter().filter_map(|w| w.field).collect()
}

#[test]
fn destination_rule_fields_not_read_are_each_named() {
    let paths = unread(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  trafficPolicy:
    tls: {mode: SIMPLE, insecureSkipVerify: true}
    loadBalancer:
      simple: ROUND_ROBIN
      zoneAwareLbSetting: {enabled: true}
"#,
    );
    assert_eq!(
        paths,
        [
            "spec.trafficPolicy.loadBalancer.zoneAwareLbSetting",
            "spec.trafficPolicy.tls.insecureSkipVerify",
        ]
    );
}

#[test]
fn gateway_fields_not_read_are_each_named() {
    let paths = unread(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    bind: 10.0.0.1
    hosts: ["shop.example.com"]
    tls:
      mode: SIMPLE
      credentialName: shop-cert
      verifyCertificateSpki: ["abc="]
"#,
    );
    assert_eq!(
        paths,
        [
            "spec.servers[0].bind",
            "spec.servers[0].tls.verifyCertificateSpki",
        ]
    );
}

#[test]
fn sidecar_egress_proxy_is_named() {
    let paths = unread(
        r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress:
  - hosts: ["./*"]
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
    egressProxy: {host: egress.example.com, port: {number: 443}}
"#,
    );
    assert_eq!(paths, ["spec.outboundTrafficPolicy.egressProxy"]);
}

#[test]
fn virtual_service_tcp_source_namespace_is_named() {
    let paths = unread(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: shop}
spec:
  hosts: [db]
  tcp:
  - match:
    - port: 5432
      sourceNamespace: shop
    route:
    - destination: {host: db}
"#,
    );
    assert_eq!(paths, ["spec.tcp[0].match[0].sourceNamespace"]);
}

#[test]
fn fields_set_to_their_empty_value_are_not_reported() {
    let paths = unread(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  exportTo: []
  subsets: []
  trafficPolicy:
    tls: {mode: SIMPLE, insecureSkipVerify: false, sni: ""}
"#,
    );
    assert!(paths.is_empty(), "{paths:?}");
}

/// Every manifest the repository ships (the user's scenarios and the black-box fixtures)
/// converts without a warning: a warning there would be a field the model reads but the walk
/// misses.
#[test]
fn the_repository_manifests_have_no_unread_fields() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for dir in ["manifests/examples", "crates/meshpilot/tests/testdata"] {
        collect_yaml(&root.join(dir), &mut files);
    }
    assert!(files.len() > 10, "found the fixtures: {files:?}");
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("fixture reads");
        let Ok(docs) = serde_saphyr::from_multiple::<Value>(&text) else {
            continue;
        };
        for doc in docs {
            let mut warnings = Vec::new();
            let _ = convert_noting(doc, &origin(), &mut warnings);
            found.extend(
                warnings
                    .into_iter()
                    .map(|w| format!("{}: {} {:?}", file.display(), w.object, w.field)),
            );
        }
    }
    assert!(
        found.is_empty(),
        "unexpected warnings:\n{}",
        found.join("\n")
    );
}

fn collect_yaml(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_yaml(&path, files);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
}
