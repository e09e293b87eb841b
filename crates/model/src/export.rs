//! Istio's `exportTo`: which namespaces see an object (a Service, ServiceEntry or
//! VirtualService). The mesh default, an empty list, is every namespace.

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
