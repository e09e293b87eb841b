//! Istio's `exportTo`: which namespaces see an object (a Service, ServiceEntry or
//! VirtualService). An empty list is every namespace; the mesh configuration's defaults
//! ([`ExportDefaults`]) fill the list of an object that sets none.

use serde::Serialize;

/// The mesh configuration's `exportTo` for objects that set none of their own (MeshConfig's
/// `defaultServiceExportTo`, `defaultVirtualServiceExportTo`,
/// `defaultDestinationRuleExportTo`), read as an object's own list is. An empty list is
/// istiod's default, every namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExportDefaults {
    /// For Kubernetes Services (without the `networking.istio.io/exportTo` annotation) and
    /// ServiceEntries.
    pub service: Vec<String>,
    pub virtual_service: Vec<String>,
    pub destination_rule: Vec<String>,
}

/// `own`, or `default` when `own` is empty (the object set no `exportTo`).
pub fn export_or_default<'a>(own: &'a [String], default: &'a [String]) -> &'a [String] {
    if own.is_empty() { default } else { own }
}

/// Whether an object of namespace `owner`, exported to `export_to`, is visible to proxies in
/// namespace `to`: `*` is every namespace, `.` the owner's own, `~` none, anything else a
/// namespace name. An empty list is the mesh default, `*`.
pub fn exported_to(export_to: &[String], owner: &str, to: &str) -> bool {
    export_to.is_empty()
        || export_to.iter().any(|e| match e.as_str() {
            "*" => true,
            "." => owner == to,
            "~" => false,
            ns => ns == to,
        })
}

/// The mesh's root namespace (istiod's default `rootNamespace`): its mesh-wide objects, such as
/// DestinationRules every namespace falls back to, live there.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// The annotation that sets a Kubernetes Service's `exportTo` (comma-separated).
pub const SERVICE_EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";

#[cfg(test)]
mod tests {
    use super::exported_to;

    #[test]
    fn export_lists_as_istio_reads_them() {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(exported_to(&[], "shop", "other"));
        assert!(exported_to(&list(&["*"]), "shop", "other"));
        assert!(exported_to(&list(&["."]), "shop", "shop"));
        assert!(!exported_to(&list(&["."]), "shop", "other"));
        assert!(!exported_to(&list(&["~"]), "shop", "shop"));
        assert!(exported_to(&list(&[".", "front"]), "shop", "front"));
        assert!(!exported_to(&list(&[".", "front"]), "shop", "back"));
    }
}
