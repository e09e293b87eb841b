//! Wildcard VirtualService hosts on sidecars: they route the services they cover, the most
//! specific host winning, and are a virtual host of their own only when they cover none.

use super::*;

/// A VirtualService on `hosts` sending everything to `dest`, created at `created`.
fn vs_to(name: &str, created: &str, hosts: &[&str], dest: &str) -> Object {
    let mut o = mk_virtual_service(
        "default",
        name,
        json!({"hosts": hosts, "http": [{"route": [{"destination": {"host": dest}}]}]}),
    );
    o.meta.creation = created.to_string();
    o
}

/// The cluster of the first route of the virtual host named `name` on port `port`.
fn first_cluster(j: &Value, port: u16, name: &str) -> Option<String> {
    let hosts = j["rds"][port.to_string()]["virtual_hosts"].as_array()?;
    let vh = hosts.iter().find(|h| h["name"] == name)?;
    vh["routes"][0]["route"]["cluster"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn a_wildcard_host_routes_the_services_it_covers() {
    let objects = vec![
        mk_service("default", "web", &[80]),
        mk_service("default", "api", &[80]),
        mk_service("default", "v2", &[80]),
        mk_service("default", "exact-dest", &[80]),
        mk_service("other", "far", &[80]),
        vs_to(
            "wild",
            "2024-01-01T00:00:00Z",
            &["*.default.svc.cluster.local"],
            "v2",
        ),
        // Newer than the wildcard, but exact: it routes `api`, and no conflict is reported.
        vs_to("exact", "2024-02-01T00:00:00Z", &["api"], "exact-dest"),
    ];
    let (j, errors) = compile_json(objects, &sidecar_proxy());
    assert!(errors.is_empty(), "{errors:?}");
    let v2 = "outbound|80||v2.default.svc.cluster.local";
    assert_eq!(
        first_cluster(&j, 80, "web.default.svc.cluster.local:80").as_deref(),
        Some(v2)
    );
    assert_eq!(
        first_cluster(&j, 80, "api.default.svc.cluster.local:80").as_deref(),
        Some("outbound|80||exact-dest.default.svc.cluster.local")
    );
    // Not covered: its own default route.
    assert_eq!(
        first_cluster(&j, 80, "far.other.svc.cluster.local:80").as_deref(),
        Some("outbound|80||far.other.svc.cluster.local")
    );
    // The covered service keeps its usual domains; the wildcard is no virtual host of its own.
    let hosts = j["rds"]["80"]["virtual_hosts"].to_string();
    assert!(hosts.contains("\"web.default\""), "{hosts}");
    assert!(
        !hosts.contains("\"*.default.svc.cluster.local\""),
        "{hosts}"
    );
}

#[test]
fn a_wildcard_host_covering_no_service_is_its_own_virtual_host() {
    let objects = vec![
        mk_service("default", "web", &[80]),
        vs_to("ext", "2024-01-01T00:00:00Z", &["*.example.com"], "web"),
    ];
    let (j, errors) = compile_json(objects, &sidecar_proxy());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        first_cluster(&j, 80, "*.example.com:80").as_deref(),
        Some("outbound|80||web.default.svc.cluster.local")
    );
    let vh = j["rds"]["80"]["virtual_hosts"]
        .as_array()
        .expect("virtual hosts")
        .iter()
        .find(|h| h["name"] == "*.example.com:80")
        .expect("the wildcard's virtual host");
    assert_eq!(vh["domains"], json!(["*.example.com"]));
    // The service it does not cover keeps its default route.
    assert_eq!(
        first_cluster(&j, 80, "web.default.svc.cluster.local:80").as_deref(),
        Some("outbound|80||web.default.svc.cluster.local")
    );
}
