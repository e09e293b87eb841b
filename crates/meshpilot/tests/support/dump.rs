//! Reading Envoy's `/config_dump?include_eds` JSON: names of listeners, clusters, route
//! configurations and their domains, endpoints, and every `error_state` (a NACKed resource).

use serde_json::Value;

/// The config_dump section whose `@type` ends with `suffix` (e.g. `ListenersConfigDump`).
pub fn section<'a>(dump: &'a Value, suffix: &str) -> Option<&'a Value> {
    dump["configs"].as_array()?.iter().find(|c| {
        c["@type"]
            .as_str()
            .is_some_and(|t| t.ends_with(&format!(".{suffix}")))
    })
}

fn items<'a>(section: Option<&'a Value>, key: &str) -> impl Iterator<Item = &'a Value> {
    section
        .and_then(|s| s[key].as_array())
        .into_iter()
        .flatten()
}

/// Names of static and active dynamic listeners (not ones still warming or in error).
pub fn listener_names(dump: &Value) -> Vec<String> {
    let s = section(dump, "ListenersConfigDump");
    items(s, "static_listeners")
        .map(|l| &l["listener"])
        .chain(items(s, "dynamic_listeners").map(|l| &l["active_state"]["listener"]))
        .filter_map(|l| l["name"].as_str().map(str::to_string))
        .collect()
}

/// Names of static and active dynamic clusters (not warming ones).
pub fn cluster_names(dump: &Value) -> Vec<String> {
    let s = section(dump, "ClustersConfigDump");
    items(s, "static_clusters")
        .chain(items(s, "dynamic_active_clusters"))
        .filter_map(|c| c["cluster"]["name"].as_str().map(str::to_string))
        .collect()
}

/// Names of clusters still warming (waiting for their endpoints).
pub fn warming_cluster_names(dump: &Value) -> Vec<String> {
    items(
        section(dump, "ClustersConfigDump"),
        "dynamic_warming_clusters",
    )
    .filter_map(|c| c["cluster"]["name"].as_str().map(str::to_string))
    .collect()
}

/// Route configurations (static and dynamic), as the `RouteConfiguration` JSON.
pub fn route_configs(dump: &Value) -> Vec<&Value> {
    let s = section(dump, "RoutesConfigDump");
    items(s, "static_route_configs")
        .chain(items(s, "dynamic_route_configs"))
        .map(|r| &r["route_config"])
        .collect()
}

/// Every `(route config name, virtual host domain)` pair.
pub fn route_domains(dump: &Value) -> Vec<(String, String)> {
    route_configs(dump)
        .into_iter()
        .flat_map(|rc| {
            let name = rc["name"].as_str().unwrap_or("").to_string();
            items(Some(rc), "virtual_hosts")
                .flat_map(|vh| items(Some(vh), "domains"))
                .filter_map(|d| d.as_str())
                .map(move |d| (name.clone(), d.to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `ip:port` of every endpoint EDS gave `cluster` (from the EndpointsConfigDump).
pub fn endpoints(dump: &Value, cluster: &str) -> Vec<String> {
    let s = section(dump, "EndpointsConfigDump");
    items(s, "dynamic_endpoint_configs")
        .chain(items(s, "static_endpoint_configs"))
        .map(|e| &e["endpoint_config"])
        .filter(|cla| cla["cluster_name"] == cluster)
        .flat_map(|cla| items(Some(cla), "endpoints"))
        .flat_map(|le| items(Some(le), "lb_endpoints"))
        .filter_map(|lb| {
            let sa = &lb["endpoint"]["address"]["socket_address"];
            Some(format!("{}:{}", sa["address"].as_str()?, sa["port_value"]))
        })
        .collect()
}

/// Every `error_state` anywhere in the dump, as `"<path>: <details>"` (a resource Envoy
/// rejected; `details` is Envoy's reason).
pub fn error_states(dump: &Value) -> Vec<String> {
    fn walk(v: &Value, path: &mut Vec<String>, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    if k == "error_state" {
                        let name = map
                            .get("name")
                            .and_then(Value::as_str)
                            .map(|n| format!(" ({n})"))
                            .unwrap_or_default();
                        out.push(format!("{}{name}: {child}", path.join(".")));
                        continue;
                    }
                    path.push(k.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    path.push(i.to_string());
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dump, &mut Vec::new(), &mut out);
    out
}
