//! A ServiceEntry with a wildcard host and resolution NONE or STATIC, as istiod serves it on
//! sidecars: an ORIGINAL_DST cluster (NONE) or an EDS cluster (STATIC) per port, a virtual host `*.example.com` on its HTTP ports, on its TLS
//! ports a chain of the port's `0.0.0.0_PORT` listener matched by that SNI, and on its TCP
//! ports that listener's catch-all chain.

use super::*;

fn wildcard_entry(resolution: &str) -> Object {
    mk_istio(
        "ServiceEntry",
        "default",
        "any-example",
        json!({"hosts": ["*.example.com"], "location": "MESH_EXTERNAL", "resolution": resolution,
               "ports": [
                   {"number": 80, "name": "http", "protocol": "HTTP"},
                   {"number": 443, "name": "tls", "protocol": "TLS"},
                   {"number": 9000, "name": "tcp", "protocol": "TCP"}]}),
    )
}

/// A sidecar whose traffic iptables captures (REDIRECT), only registry hosts allowed out.
fn captured_sidecar() -> Proxy {
    proxy(
        "sidecar~10.0.0.5~client.default~default.svc.cluster.local",
        &[("app", "client")],
        false,
    )
}

#[test]
fn a_wildcard_entry_of_resolution_none_gets_clusters_a_virtual_host_and_chains() {
    let (j, errors) = compile_json(vec![wildcard_entry("NONE")], &captured_sidecar());
    assert!(errors.is_empty(), "{errors:?}");
    for port in [80, 443, 9000] {
        let name = format!("outbound|{port}||*.example.com");
        let c = &j["cds"][&name];
        assert_eq!(c["type"], "ORIGINAL_DST", "{name}: {:#}", j["cds"]);
        assert_eq!(c["lb_policy"], "CLUSTER_PROVIDED", "{name}");
    }
    let vh = j["rds"]["80"]["virtual_hosts"]
        .as_array()
        .expect("virtual hosts")
        .iter()
        .find(|h| h["name"] == "*.example.com:80")
        .expect("the entry's virtual host")
        .clone();
    assert_eq!(vh["domains"], json!(["*.example.com"]));
    assert_eq!(
        vh["routes"][0]["route"]["cluster"],
        "outbound|80||*.example.com"
    );

    let tls = &j["lds"]["0.0.0.0_443"];
    let chains = tls["filter_chains"].as_array().expect("TLS chains");
    let by_sni = chains
        .iter()
        .find(|c| c["filter_chain_match"]["server_names"] == json!(["*.example.com"]))
        .unwrap_or_else(|| panic!("an SNI chain: {tls:#}"));
    assert_eq!(
        by_sni["filters"][0]["typed_config"]["cluster"],
        "outbound|443||*.example.com"
    );

    let tcp = &j["lds"]["0.0.0.0_9000"];
    let chains = tcp["filter_chains"].as_array().expect("TCP chains");
    assert_eq!(chains.len(), 1, "{tcp:#}");
    assert!(chains[0].get("filter_chain_match").is_none(), "{tcp:#}");
    assert_eq!(
        chains[0]["filters"][0]["typed_config"]["cluster"],
        "outbound|9000||*.example.com"
    );
}

/// istiod's validation only warns of a wildcard host of resolution STATIC, and serves it: an
/// EDS cluster over the listed endpoints per port, the same virtual host and chains as NONE.
#[test]
fn a_wildcard_entry_of_resolution_static_gets_eds_clusters_over_its_endpoints() {
    let entry = mk_istio(
        "ServiceEntry",
        "default",
        "any-example",
        json!({"hosts": ["*.example.com"], "location": "MESH_EXTERNAL", "resolution": "STATIC",
               "endpoints": [{"address": "192.0.2.20"}],
               "ports": [
                   {"number": 80, "name": "http", "protocol": "HTTP"},
                   {"number": 443, "name": "tls", "protocol": "TLS"},
                   {"number": 9000, "name": "tcp", "protocol": "TCP"}]}),
    );
    let (j, errors) = compile_json(vec![entry], &captured_sidecar());
    assert!(errors.is_empty(), "{errors:?}");
    for port in [80, 443, 9000] {
        let name = format!("outbound|{port}||*.example.com");
        assert_eq!(j["cds"][&name]["type"], "EDS", "{name}: {:#}", j["cds"]);
        let lb = &j["eds"][&name]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"];
        assert_eq!(lb["socket_address"]["address"], "192.0.2.20", "{name}");
        assert_eq!(lb["socket_address"]["port_value"], port, "{name}");
    }
    let vh = (j["rds"]["80"]["virtual_hosts"]
        .as_array()
        .expect("virtual hosts")
        .iter())
    .find(|h| h["name"] == "*.example.com:80")
    .unwrap_or_else(|| panic!("the entry's virtual host: {:#}", j["rds"]))
    .clone();
    assert_eq!(vh["domains"], json!(["*.example.com"]));
    let tls = &j["lds"]["0.0.0.0_443"];
    let by_sni = (tls["filter_chains"].as_array().expect("TLS chains").iter())
        .find(|c| c["filter_chain_match"]["server_names"] == json!(["*.example.com"]))
        .unwrap_or_else(|| panic!("an SNI chain: {tls:#}"));
    assert_eq!(
        by_sni["filters"][0]["typed_config"]["cluster"],
        "outbound|443||*.example.com"
    );
    assert_eq!(
        j["lds"]["0.0.0.0_9000"]["filter_chains"][0]["filters"][0]["typed_config"]["cluster"],
        "outbound|9000||*.example.com"
    );
}

/// A wildcard host can name no address to resolve: resolution DNS with no endpoints is
/// refused at the source, and serves nothing.
#[test]
fn a_wildcard_entry_of_resolution_dns_gets_nothing() {
    let (j, _) = compile_json(vec![wildcard_entry("DNS")], &captured_sidecar());
    let all = j.to_string();
    assert!(!all.contains("*.example.com"), "{j:#}");
}
