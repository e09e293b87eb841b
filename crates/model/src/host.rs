//! Host names: Istio's short-name resolution and wildcard matching.

/// A fully qualified host name (`reviews.default.svc.cluster.local`, `edition.cnn.com`,
/// `*.example.com` or `*`).
pub type Hostname = String;

/// Resolves a host as written in an Istio object to its fully qualified form, the way Istio does:
/// a name with no dot is short for a Service in the referring object's namespace
/// (`reviews` in `default` → `reviews.default.svc.cluster.local`); `*` and names with dots are
/// kept as written (lower-cased).
pub fn resolve_host(host: &str, namespace: &str, domain: &str) -> Hostname {
    let host = host.trim().to_ascii_lowercase();
    if host == "*" || host.contains('.') {
        return host;
    }
    service_hostname(&host, namespace, domain)
}

/// A Kubernetes Service's host name, `NAME.NAMESPACE.svc.DOMAIN`, in one allocation of its
/// exact size (made for every service on every view build).
pub fn service_hostname(name: &str, namespace: &str, domain: &str) -> Hostname {
    [name, ".", namespace, ".svc.", domain].concat()
}

/// True when `pattern` (possibly `*` or `*.suffix`) matches the concrete or wildcard `host`.
/// `*.example.com` matches `a.example.com` and `*.a.example.com`, not `example.com`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        // suffix starts with '.'
        if let Some(hs) = host.strip_prefix('*') {
            return hs.ends_with(suffix);
        }
        return host.ends_with(suffix) && host.len() > suffix.len();
    }
    pattern == host
}

/// True when either host matches the other (used to intersect Gateway and VirtualService hosts).
pub fn hosts_intersect(a: &str, b: &str) -> bool {
    host_matches(a, b) || host_matches(b, a)
}

/// The more specific of two intersecting hosts (the one a virtual host should be named by).
pub fn narrower<'a>(a: &'a str, b: &'a str) -> &'a str {
    if host_matches(a, b) { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_hostnames_are_fully_qualified() {
        assert_eq!(
            service_hostname("reviews", "prod", "cluster.local"),
            "reviews.prod.svc.cluster.local"
        );
    }

    #[test]
    fn short_names_resolve_in_the_referring_namespace() {
        assert_eq!(
            resolve_host("reviews", "default", "cluster.local"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(
            resolve_host("Reviews", "prod", "example.org"),
            "reviews.prod.svc.example.org"
        );
    }

    #[test]
    fn qualified_and_wildcard_hosts_are_kept() {
        assert_eq!(
            resolve_host(
                "reviews.other.svc.cluster.local",
                "default",
                "cluster.local"
            ),
            "reviews.other.svc.cluster.local"
        );
        assert_eq!(
            resolve_host("edition.cnn.com", "default", "cluster.local"),
            "edition.cnn.com"
        );
        assert_eq!(resolve_host("*", "default", "cluster.local"), "*");
    }

    #[test]
    fn wildcard_matching() {
        assert!(host_matches("*", "anything.com"));
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(host_matches("*.example.com", "*.a.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("a.example.com", "b.example.com"));
        assert!(hosts_intersect("a.example.com", "*.example.com"));
        assert_eq!(narrower("*", "a.com"), "a.com");
        assert_eq!(narrower("a.com", "*"), "a.com");
    }
}
