//! `proxy-config` tables, read from our `/debug/config_dump` JSON (Envoy's config_dump shape):
//! clusters (service, port, subset, type), listeners (address, port, destination), routes
//! (virtual host, domains, match → destination) and endpoints (address, health, weight).
//! Every row ends with the resource's status as the proxy answered it.

use serde_json::Value;

use super::table;
use crate::config::ConfigKind;

/// The table of one kind from a config dump filtered to that kind's type.
pub fn render(kind: ConfigKind, dump: &Value) -> String {
    match kind {
        ConfigKind::Clusters => clusters(dump),
        ConfigKind::Listeners => listeners(dump),
        ConfigKind::Routes => routes(dump),
        ConfigKind::Endpoints => endpoints(dump),
    }
}

/// The entries of the section whose `@type` ends with `suffix`.
fn entries<'a>(dump: &'a Value, suffix: &str, key: &str) -> Vec<&'a Value> {
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["@type"].as_str().is_some_and(|t| t.ends_with(suffix)))
        .flat_map(|c| c[key].as_array().into_iter().flatten())
        .collect()
}

fn arr(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn status(e: &Value) -> String {
    s(&e["client_status"]).to_string()
}

fn clusters(dump: &Value) -> String {
    let mut rows = Vec::new();
    for e in entries(dump, "ClustersConfigDump", "dynamic_active_clusters") {
        let c = &e["cluster"];
        let name = s(&c["name"]);
        // Istio names: outbound|PORT|SUBSET|HOST.
        let parts: Vec<&str> = name.split('|').collect();
        let (fqdn, port, subset, direction) = match parts.as_slice() {
            [dir, port, subset, host] => (
                host.to_string(),
                port.to_string(),
                if subset.is_empty() { "-" } else { subset }.to_string(),
                dir.to_string(),
            ),
            _ => (name.to_string(), "-".into(), "-".into(), "-".into()),
        };
        let kind = c["type"]
            .as_str()
            .unwrap_or(if c.get("cluster_type").is_some() {
                "CUSTOM"
            } else {
                "STATIC"
            });
        rows.push(vec![
            fqdn,
            port,
            subset,
            direction,
            kind.to_string(),
            status(e),
        ]);
    }
    table(
        &[
            "SERVICE FQDN",
            "PORT",
            "SUBSET",
            "DIRECTION",
            "TYPE",
            "STATUS",
        ],
        &rows,
    )
}

/// Where a listener's filter chains send traffic: `Route: NAME` or `Cluster: NAME`.
fn listener_destinations(l: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for chain in arr(&l["filter_chains"]).chain(std::iter::once(&l["default_filter_chain"])) {
        for f in arr(&chain["filters"]) {
            let tc = &f["typed_config"];
            if let Some(rc) = tc["rds"]["route_config_name"].as_str() {
                out.push(format!("Route: {rc}"));
            } else if let Some(rc) = tc["route_config"]["name"].as_str() {
                out.push(format!("Inline route: {rc}"));
            } else if let Some(c) = tc["cluster"].as_str() {
                out.push(format!("Cluster: {c}"));
            }
        }
    }
    out.dedup();
    out
}

fn listeners(dump: &Value) -> String {
    let mut rows = Vec::new();
    for e in entries(dump, "ListenersConfigDump", "dynamic_listeners") {
        let l = &e["active_state"]["listener"];
        let sa = &l["address"]["socket_address"];
        let dest = listener_destinations(l);
        rows.push(vec![
            s(&l["name"]).to_string(),
            s(&sa["address"]).to_string(),
            sa["port_value"].as_u64().unwrap_or(0).to_string(),
            if dest.is_empty() {
                "-".to_string()
            } else {
                dest.join(", ")
            },
            status(e),
        ]);
    }
    table(&["NAME", "ADDRESS", "PORT", "DESTINATION", "STATUS"], &rows)
}

/// A route's match as one short string: path part, then headers.
fn route_match(m: &Value) -> String {
    let mut out = if let Some(p) = m["prefix"].as_str() {
        format!("{p}*")
    } else if let Some(p) = m["path"].as_str() {
        p.to_string()
    } else if let Some(p) = m["safe_regex"]["regex"].as_str() {
        format!("~{p}")
    } else if let Some(p) = m["path_separated_prefix"].as_str() {
        format!("{p}/*")
    } else {
        "*".to_string()
    };
    for h in arr(&m["headers"]) {
        let name = s(&h["name"]);
        let sm = &h["string_match"];
        let v = if let Some(x) = sm["exact"].as_str() {
            format!("={x}")
        } else if let Some(x) = sm["prefix"].as_str() {
            format!("^={x}")
        } else if let Some(x) = sm["safe_regex"]["regex"].as_str() {
            format!("~={x}")
        } else if h.get("present_match").is_some() {
            " present".to_string()
        } else {
            String::new()
        };
        out.push_str(&format!(" [{name}{v}]"));
    }
    out
}

/// Where a route sends a request.
fn route_destination(r: &Value) -> String {
    let action = &r["route"];
    if let Some(c) = action["cluster"].as_str() {
        return c.to_string();
    }
    let weighted: Vec<String> = arr(&action["weighted_clusters"]["clusters"])
        .map(|c| format!("{} {}%", s(&c["name"]), c["weight"].as_u64().unwrap_or(0)))
        .collect();
    if !weighted.is_empty() {
        return weighted.join(", ");
    }
    if let Some(redirect) = r.get("redirect") {
        let host = redirect["host_redirect"].as_str().unwrap_or("");
        let path = redirect["path_redirect"].as_str().unwrap_or("");
        return format!("redirect {host}{path}").trim_end().to_string();
    }
    if let Some(d) = r.get("direct_response") {
        return format!("direct response {}", d["status"].as_u64().unwrap_or(0));
    }
    "-".to_string()
}

fn routes(dump: &Value) -> String {
    let mut rows = Vec::new();
    for e in entries(dump, "RoutesConfigDump", "dynamic_route_configs") {
        let rc = &e["route_config"];
        for vh in arr(&rc["virtual_hosts"]) {
            let domains: Vec<&str> = arr(&vh["domains"]).filter_map(Value::as_str).collect();
            let domains = if domains.len() > 2 {
                format!("{} +{} more", domains[..2].join(","), domains.len() - 2)
            } else {
                domains.join(",")
            };
            for r in arr(&vh["routes"]) {
                rows.push(vec![
                    s(&rc["name"]).to_string(),
                    s(&vh["name"]).to_string(),
                    domains.clone(),
                    route_match(&r["match"]),
                    route_destination(r),
                    status(e),
                ]);
            }
        }
    }
    table(
        &[
            "NAME",
            "VIRTUAL HOST",
            "DOMAINS",
            "MATCH",
            "DESTINATION",
            "STATUS",
        ],
        &rows,
    )
}

fn endpoints(dump: &Value) -> String {
    let mut rows = Vec::new();
    for e in entries(dump, "EndpointsConfigDump", "dynamic_endpoint_configs") {
        let cla = &e["endpoint_config"];
        for le in arr(&cla["endpoints"]) {
            for lb in arr(&le["lb_endpoints"]) {
                let sa = &lb["endpoint"]["address"]["socket_address"];
                rows.push(vec![
                    format!(
                        "{}:{}",
                        s(&sa["address"]),
                        sa["port_value"].as_u64().unwrap_or(0)
                    ),
                    lb["health_status"]
                        .as_str()
                        .unwrap_or("HEALTHY")
                        .to_string(),
                    lb["load_balancing_weight"]
                        .as_u64()
                        .unwrap_or(1)
                        .to_string(),
                    s(&cla["cluster_name"]).to_string(),
                    status(e),
                ]);
            }
        }
    }
    table(
        &["ENDPOINT", "HEALTH", "WEIGHT", "CLUSTER", "STATUS"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dump(section: &str, key: &str, entry: Value) -> Value {
        json!({"configs": [{"@type": format!("type.googleapis.com/envoy.admin.v3.{section}"), key: [entry]}]})
    }

    #[test]
    fn routes_show_matches_and_weighted_destinations() {
        let d = dump(
            "RoutesConfigDump",
            "dynamic_route_configs",
            json!({"client_status": "ACKED", "route_config": {"name": "http.80", "virtual_hosts": [{
                "name": "mvc.example.com:80", "domains": ["mvc.example.com"],
                "routes": [{"match": {"prefix": "/service", "headers": [{"name": "x-canary", "string_match": {"exact": "1"}}]},
                            "route": {"weighted_clusters": {"clusters": [
                                {"name": "outbound|80|v1|mvc", "weight": 80},
                                {"name": "outbound|80|v2|mvc", "weight": 20}]}}}]}]}}),
        );
        let text = render(ConfigKind::Routes, &d);
        assert!(text.starts_with("NAME"), "{text}");
        assert!(
            text.contains(
                "/service* [x-canary=1]   outbound|80|v1|mvc 80%, outbound|80|v2|mvc 20%   ACKED"
            ),
            "{text}"
        );
    }

    #[test]
    fn clusters_split_istio_names_and_endpoints_default_weight_and_health() {
        let d = dump(
            "ClustersConfigDump",
            "dynamic_active_clusters",
            json!({"client_status": "ACKED", "cluster": {"name": "outbound|80|v1|mvc.default.svc.cluster.local", "type": "EDS"}}),
        );
        let text = render(ConfigKind::Clusters, &d);
        let row: Vec<&str> = text
            .lines()
            .nth(1)
            .expect("row")
            .split_whitespace()
            .collect();
        assert_eq!(
            row,
            [
                "mvc.default.svc.cluster.local",
                "80",
                "v1",
                "outbound",
                "EDS",
                "ACKED"
            ]
        );
        let d = dump(
            "EndpointsConfigDump",
            "dynamic_endpoint_configs",
            json!({"client_status": "ACKED", "endpoint_config": {"cluster_name": "c", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 8080}}}}]}]}}),
        );
        let text = render(ConfigKind::Endpoints, &d);
        let row: Vec<&str> = text
            .lines()
            .nth(1)
            .expect("row")
            .split_whitespace()
            .collect();
        assert_eq!(row, ["10.0.0.1:8080", "HEALTHY", "1", "c", "ACKED"]);
    }
}
