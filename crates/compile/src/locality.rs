//! Locality-aware load balancing (DestinationRule `localityLbSetting`), as istiod applies it:
//! which clusters need it, and their endpoint assignments for one client locality.
//!
//! Endpoints are grouped by their locality (`REGION/ZONE/SUBZONE`) in every assignment (see
//! `endpoints.rs`); this module orders those groups for a client. A cluster needs it when its
//! rule does not turn it off (`enabled: false`; the mesh default is on) and it either
//! distributes weights or has outlier detection (istiod's rule: without ejection Envoy never
//! drops to a lower priority, so failover is applied only with it). Such clusters get one
//! assignment per client locality (and, for `failoverPriority`, per value of its labels); every
//! other cluster keeps the one shared assignment.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Locality as EnvoyLocality;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints};
use envoy_types::pb::google::protobuf::UInt32Value;

use meshpilot_index::{Named, ServiceInfo};
use meshpilot_model::{ConfigKey, DestinationRule, Labels, LocalityLbSetting, Subset};

use super::cluster_policy::ClusterPolicy;

/// A locality split into its parts; missing parts are empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Locality<'a> {
    pub region: &'a str,
    pub zone: &'a str,
    pub sub_zone: &'a str,
}

impl<'a> Locality<'a> {
    /// Splits `REGION/ZONE/SUBZONE` (also `REGION` or `REGION/ZONE`).
    pub fn parse(s: &'a str) -> Locality<'a> {
        let mut parts = s.splitn(3, '/');
        Locality {
            region: parts.next().unwrap_or(""),
            zone: parts.next().unwrap_or(""),
            sub_zone: parts.next().unwrap_or(""),
        }
    }

    /// Envoy's `Locality` message, or `None` for an endpoint without locality.
    pub fn message(s: Option<&str>) -> Option<EnvoyLocality> {
        let s = s.filter(|s| !s.is_empty())?;
        let l = Locality::parse(s);
        Some(EnvoyLocality {
            region: l.region.to_string(),
            zone: l.zone.to_string(),
            sub_zone: l.sub_zone.to_string(),
        })
    }

    fn of(m: Option<&EnvoyLocality>) -> Locality<'_> {
        m.map_or_else(Locality::default, |m| Locality {
            region: &m.region,
            zone: &m.zone,
            sub_zone: &m.sub_zone,
        })
    }

    /// istiod's `LocalityMatch`: whether this (a client's) locality is one a rule names;
    /// `*` or a missing part matches any zone or subzone, `*` any region.
    fn matches(&self, rule: &str) -> bool {
        let r = Locality::parse(rule);
        (r.region == "*" || r.region == self.region)
            && (r.zone == "*" || r.zone.is_empty() || r.zone == self.zone)
            && (r.sub_zone == "*" || r.sub_zone.is_empty() || r.sub_zone == self.sub_zone)
    }

    /// istiod's `LbPriority`: 0 for the same subzone, 1 same zone, 2 same region, 3 other.
    fn priority_of(&self, other: &Locality<'_>) -> u32 {
        if self.region != other.region {
            3
        } else if self.zone != other.zone {
            2
        } else if self.sub_zone != other.sub_zone {
            1
        } else {
            0
        }
    }
}

/// The setting a cluster with `policy` balances by locality with, or `None` when its
/// assignment does not depend on the client's locality.
pub(super) fn effective<'a>(policy: &ClusterPolicy<'a>) -> Option<&'a LocalityLbSetting> {
    /// The mesh default: on, with no failover rules or weights of its own.
    static MESH_DEFAULT: LocalityLbSetting = LocalityLbSetting {
        distribute: Vec::new(),
        failover: Vec::new(),
        failover_priority: Vec::new(),
        enabled: None,
    };
    let setting = policy
        .load_balancer
        .and_then(|lb| lb.locality_lb_setting.as_ref())
        .unwrap_or(&MESH_DEFAULT);
    if setting.enabled == Some(false) {
        return None;
    }
    (!setting.distribute.is_empty() || policy.outlier_detection.is_some()).then_some(setting)
}

/// Whether the cluster balances over localities by weight (Envoy's
/// `locality_weighted_lb_config`), as istiod sets it: with `distribute`, or with failover rules
/// that outlier detection makes apply.
pub(super) fn weighted(policy: &ClusterPolicy<'_>) -> bool {
    effective(policy).is_some_and(|s| {
        !s.distribute.is_empty()
            || (policy.outlier_detection.is_some()
                && (!s.failover.is_empty() || !s.failover_priority.is_empty()))
    })
}

/// One cluster whose assignment depends on the client's locality, with what it is made from.
#[derive(Debug, Clone)]
pub struct LocalityCluster {
    pub(crate) svc: Arc<ServiceInfo>,
    pub(crate) dr: Arc<Named<DestinationRule>>,
    pub(crate) port: u16,
    pub(crate) subset: String,
    pub(crate) name: Arc<str>,
    pub(crate) sources: Arc<[ConfigKey]>,
    /// The client labels its assignment depends on (`failoverPriority`'s keys), found once
    /// when the cluster is made rather than at each client's lookup.
    label_keys: Arc<[String]>,
}

impl LocalityCluster {
    /// The cluster `name` (of `svc`'s `port` and `subset`) when `dr` makes its assignment
    /// depend on the client's locality; `None` when it does not.
    pub(crate) fn of(
        svc: &Arc<ServiceInfo>,
        dr: &Arc<Named<DestinationRule>>,
        port: u16,
        subset: Option<&Subset>,
        name: Arc<str>,
        sources: Arc<[ConfigKey]>,
    ) -> Option<LocalityCluster> {
        let policy = ClusterPolicy::of(Some(&dr.spec), subset, port);
        let setting = effective(&policy)?;
        let label_keys = priority_labels(&setting.failover_priority)
            .map(|(k, _)| k.to_string())
            .collect();
        Some(LocalityCluster {
            svc: svc.clone(),
            dr: dr.clone(),
            port,
            subset: subset.map(|s| s.name.clone()).unwrap_or_default(),
            name,
            sources,
            label_keys,
        })
    }

    /// Its assignment for a client at `locality` with `labels` (`None`: a client without any
    /// labels, whom `failoverPriority` leaves alone, as istiod does).
    pub(crate) fn assignment(
        &self,
        locality: &str,
        labels: Option<&Labels>,
    ) -> ClusterLoadAssignment {
        let dr = Some(&*self.dr);
        let mut cla =
            super::endpoints::assignment(&self.svc, self.port, &self.subset, &self.name, dr);
        let subset = self.dr.spec.subsets.iter().find(|s| s.name == self.subset);
        let policy = ClusterPolicy::of(Some(&self.dr.spec), subset, self.port);
        if let Some(setting) = effective(&policy) {
            let endpoint_labels: Vec<Vec<&Labels>> =
                super::endpoints::groups(&self.svc, self.port, &self.subset, dr)
                    .into_iter()
                    .map(|(_, eps)| eps.into_iter().map(|e| &e.labels).collect())
                    .collect();
            apply(
                &mut cla,
                setting,
                Locality::parse(locality),
                labels,
                &endpoint_labels,
                policy.outlier_detection.is_some(),
            );
        }
        cla
    }

    /// The label keys of the client its assignment depends on (`failoverPriority`'s).
    pub(crate) fn label_keys(&self) -> impl Iterator<Item = &str> {
        self.label_keys.iter().map(String::as_str)
    }
}

/// The group weight istiod gives a locality: the sum of its endpoints' weights (1 each unset).
fn group_weight(g: &LocalityLbEndpoints) -> u32 {
    g.lb_endpoints
        .iter()
        .map(|e| e.load_balancing_weight.map_or(1, |w| w.value))
        .sum()
}

/// istiod's `ApplyLocalityLoadBalancer` on `cla` for a client at `client` with `labels`:
/// `distribute` weights, else (with outlier detection) `failoverPriority` labels and then
/// region `failover`, else the default subzone → zone → region → anywhere order.
pub(crate) fn apply(
    cla: &mut ClusterLoadAssignment,
    setting: &LocalityLbSetting,
    client: Locality<'_>,
    labels: Option<&Labels>,
    endpoint_labels: &[Vec<&Labels>],
    failover_enabled: bool,
) {
    // Every group carries its weight: with locality weighted balancing on, Envoy sends
    // nothing to a locality without one.
    for g in &mut cla.endpoints {
        g.load_balancing_weight = Some(UInt32Value {
            value: group_weight(g),
        });
    }
    if !setting.distribute.is_empty() {
        distribute(cla, setting, client);
    } else if failover_enabled {
        if !setting.failover_priority.is_empty() {
            if let Some(labels) = labels {
                failover_priority(cla, &setting.failover_priority, labels, endpoint_labels);
            }
            if !setting.failover.is_empty() {
                failover(cla, setting, client);
            }
        } else {
            failover(cla, setting, client);
        }
    }
}

/// istiod's `applyLocalityWeights`: the first `distribute` entry whose `from` matches the
/// client sets each destination locality's share; localities it names none of get no
/// endpoints.
fn distribute(cla: &mut ClusterLoadAssignment, setting: &LocalityLbSetting, client: Locality) {
    let Some(rule) = setting.distribute.iter().find(|d| client.matches(&d.from)) else {
        return;
    };
    let mut unmatched = vec![true; cla.endpoints.len()];
    for (to, weight) in &rule.to {
        let to_locality = |g: &LocalityLbEndpoints| {
            let l = Locality::of(g.locality.as_ref());
            l.matches(to)
        };
        let picked: Vec<usize> = (0..cla.endpoints.len())
            .filter(|&i| unmatched[i] && to_locality(&cla.endpoints[i]))
            .collect();
        let total: u32 = picked
            .iter()
            .map(|&i| group_weight(&cla.endpoints[i]))
            .sum();
        for i in picked {
            unmatched[i] = false;
            let original = group_weight(&cla.endpoints[i]);
            let share = (f64::from(original) * f64::from(*weight) / f64::from(total)).ceil();
            if share > 0.0 {
                cla.endpoints[i].load_balancing_weight = Some(UInt32Value {
                    value: share as u32,
                });
            }
        }
    }
    for (g, unmatched) in cla.endpoints.iter_mut().zip(unmatched) {
        if unmatched {
            g.lb_endpoints.clear();
        }
    }
}

/// istiod's `applyLocalityFailover`: priority by how much of the client's locality a group
/// shares; another region is 3, or 4 when a `failover` rule for the client's region names a
/// different one. Composed with priorities already set (`× 5`), then renumbered 0..N.
fn failover(cla: &mut ClusterLoadAssignment, setting: &LocalityLbSetting, client: Locality) {
    for g in &mut cla.endpoints {
        let theirs = Locality::of(g.locality.as_ref());
        let mut priority = client.priority_of(&theirs);
        if priority == 3
            && let Some(rule) = setting.failover.iter().find(|f| f.from == client.region)
            && (g.locality.is_none() || theirs.region != rule.to)
        {
            priority = 4;
        }
        g.priority = g.priority * 5 + priority;
    }
    compact(cla);
}

/// Renumbers the groups' priorities 0..N in their order, leaving no gaps (Envoy requires it).
fn compact(cla: &mut ClusterLoadAssignment) {
    let mut used: Vec<u32> = cla.endpoints.iter().map(|g| g.priority).collect();
    used.sort_unstable();
    used.dedup();
    for g in &mut cla.endpoints {
        g.priority = used.partition_point(|p| *p < g.priority) as u32;
    }
}

/// The label keys (and optional overriding values) of `failoverPriority` entries `KEY[=VALUE]`.
fn priority_labels(entries: &[String]) -> impl Iterator<Item = (&str, Option<&str>)> {
    entries.iter().map(|e| match e.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (e.as_str(), None),
    })
}

/// The network label: a mismatch on it as the first `failoverPriority` entry does not lower
/// the priority of an endpoint, it only sorts it after every matching one (as istiod does).
const NETWORK_LABEL: &str = "topology.istio.io/network";

/// istiod's `applyFailoverPriorities`: each locality group splits by how many leading
/// `failoverPriority` labels its endpoints share with the client (the more, the higher the
/// priority); the groups then take priorities 0..N in that order. `endpoint_labels[i][j]` are
/// the labels of endpoint `j` of group `i`.
fn failover_priority(
    cla: &mut ClusterLoadAssignment,
    entries: &[String],
    labels: &Labels,
    endpoint_labels: &[Vec<&Labels>],
) {
    let lowest = entries.len() as u32;
    let with_network = entries.first().is_some_and(|e| e == NETWORK_LABEL);
    let mut out: Vec<LocalityLbEndpoints> = Vec::new();
    for (i, group) in std::mem::take(&mut cla.endpoints).into_iter().enumerate() {
        let mut split: std::collections::BTreeMap<u32, LocalityLbEndpoints> = Default::default();
        for (j, ep) in group.lb_endpoints.iter().enumerate() {
            let ep_labels = endpoint_labels.get(i).and_then(|g| g.get(j)).copied();
            let mut priority = 0;
            let mut adjust = 0;
            for (k, (key, value)) in priority_labels(entries).enumerate() {
                let want = value.or(labels.get(key).map(String::as_str));
                if want != ep_labels.and_then(|l| l.get(key).map(String::as_str)) {
                    if k == 0 && with_network {
                        adjust = lowest;
                        continue;
                    }
                    priority = lowest - k as u32;
                    break;
                }
            }
            let g = split
                .entry(priority + adjust)
                .or_insert_with(|| LocalityLbEndpoints {
                    locality: group.locality.clone(),
                    lb_endpoints: Vec::new(),
                    ..LocalityLbEndpoints::default()
                });
            g.lb_endpoints.push(ep.clone());
        }
        for (priority, mut g) in split {
            g.priority = priority;
            g.load_balancing_weight = Some(UInt32Value {
                value: group_weight(&g),
            });
            out.push(g);
        }
    }
    cla.endpoints = out;
    compact(cla);
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshpilot_index::{Endpoint, ServiceOrigin};
    use meshpilot_model::{Kind, LocalityDistribute, LocalityFailover, Meta};
    use std::collections::BTreeMap;

    /// One endpoint: address, locality, labels.
    type Ep<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

    /// A service whose port 80 has one endpoint per `(address, locality, labels)`.
    fn service(eps: &[Ep<'_>]) -> Arc<ServiceInfo> {
        Arc::new(ServiceInfo {
            hostname: "svc.default.svc.cluster.local".into(),
            name: "svc".into(),
            namespace: "default".into(),
            key: ConfigKey::new(Kind::Service, "default", "svc"),
            origin: ServiceOrigin::Kubernetes,
            ports: vec![],
            cluster_ip: None,
            selector: None,
            export_to: Vec::new(),
            subject_alt_names: Vec::new(),
            endpoints: BTreeMap::from([(
                80,
                eps.iter()
                    .map(|(address, locality, labels)| Endpoint {
                        address: (*address).into(),
                        port: 80,
                        labels: labels
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        weight: None,
                        locality: Some(locality.to_string()).filter(|l| !l.is_empty()),
                        service_account: None,
                    })
                    .collect(),
            )]),
        })
    }

    /// A cluster of `svc` under a rule with outlier detection and `setting`.
    fn cluster(svc: Arc<ServiceInfo>, setting: LocalityLbSetting) -> LocalityCluster {
        let spec: DestinationRule = serde_json::from_value(serde_json::json!({
            "host": "svc",
            "trafficPolicy": {"outlierDetection": {"consecutive5xxErrors": 1}},
        }))
        .expect("rule");
        let mut spec = spec;
        if let Some(p) = spec.traffic_policy.as_mut() {
            p.load_balancer = Some(meshpilot_model::LoadBalancerSettings {
                locality_lb_setting: Some(setting),
                ..Default::default()
            });
        }
        let dr = Arc::new(Named {
            key: ConfigKey::new(Kind::DestinationRule, "default", "svc"),
            meta: Meta::default(),
            spec,
        });
        LocalityCluster::of(
            &svc,
            &dr,
            80,
            None,
            "outbound|80||svc.default.svc.cluster.local".into(),
            Arc::from([]),
        )
        .expect("outlier detection makes the cluster locality-aware")
    }

    /// Each group of the client's assignment as (locality, priority, weight, addresses).
    fn groups_of(cla: &ClusterLoadAssignment) -> Vec<(String, u32, u32, Vec<String>)> {
        use envoy_types::pb::envoy::config::core::v3::address;
        use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
        cla.endpoints
            .iter()
            .map(|g| {
                let l = Locality::of(g.locality.as_ref());
                let addresses = g
                    .lb_endpoints
                    .iter()
                    .filter_map(|e| match &e.host_identifier {
                        Some(HostIdentifier::Endpoint(ep)) => {
                            match ep.address.as_ref()?.address.as_ref()? {
                                address::Address::SocketAddress(s) => Some(s.address.clone()),
                                _ => None,
                            }
                        }
                        _ => None,
                    })
                    .collect();
                (
                    format!("{}/{}/{}", l.region, l.zone, l.sub_zone),
                    g.priority,
                    g.load_balancing_weight.map_or(0, |w| w.value),
                    addresses,
                )
            })
            .collect()
    }

    fn mesh() -> Arc<ServiceInfo> {
        service(&[
            ("10.0.0.1", "r-a/z-1", &[]),
            ("10.0.0.2", "r-a/z-1", &[]),
            ("10.0.0.3", "r-a/z-2", &[]),
            ("10.0.0.4", "r-b/z-1", &[]),
            ("10.0.0.5", "r-c/z-1", &[]),
            ("10.0.0.6", "", &[]),
        ])
    }

    /// The default order: same zone, then same region, then elsewhere (endpoints without a
    /// locality count as elsewhere), with no gaps between priorities.
    #[test]
    fn failover_orders_localities_by_what_they_share_with_the_client() {
        let c = cluster(mesh(), LocalityLbSetting::default());
        let got: Vec<(String, u32)> = groups_of(&c.assignment("r-a/z-1", None))
            .into_iter()
            .map(|(l, p, _, _)| (l, p))
            .collect();
        assert_eq!(
            got,
            [
                ("//".to_string(), 2),
                ("r-a/z-1/".to_string(), 0),
                ("r-a/z-2/".to_string(), 1),
                ("r-b/z-1/".to_string(), 2),
                ("r-c/z-1/".to_string(), 2),
            ]
        );
        // A client in a subzone puts its own zone's endpoints without subzone second.
        let got: Vec<u32> = groups_of(&c.assignment("r-a/z-1/s-1", None))
            .into_iter()
            .map(|(_, p, _, _)| p)
            .collect();
        assert_eq!(got, [2, 0, 1, 2, 2]);
    }

    /// `failover` puts the named region right after the client's own, before other regions.
    #[test]
    fn failover_rule_puts_its_region_next() {
        let setting = LocalityLbSetting {
            failover: vec![LocalityFailover {
                from: "r-a".into(),
                to: "r-c".into(),
            }],
            ..Default::default()
        };
        let c = cluster(mesh(), setting);
        let got: Vec<(String, u32)> = groups_of(&c.assignment("r-a/z-1", None))
            .into_iter()
            .map(|(l, p, _, _)| (l, p))
            .collect();
        assert_eq!(
            got,
            [
                ("//".to_string(), 3),
                ("r-a/z-1/".to_string(), 0),
                ("r-a/z-2/".to_string(), 1),
                ("r-b/z-1/".to_string(), 3),
                ("r-c/z-1/".to_string(), 2),
            ]
        );
        // Clients of other regions keep the default order.
        let got: Vec<u32> = groups_of(&c.assignment("r-b/z-1", None))
            .into_iter()
            .map(|(_, p, _, _)| p)
            .collect();
        assert_eq!(got, [1, 1, 1, 0, 1]);
    }

    /// `distribute`: the first rule matching the client weighs the destination localities;
    /// one weight shared by several groups is split by their sizes; unnamed localities get no
    /// endpoints; clients no rule matches get the plain groups.
    #[test]
    fn distribute_weighs_localities_for_matching_clients() {
        let setting = LocalityLbSetting {
            distribute: vec![LocalityDistribute {
                from: "r-a/z-1/*".into(),
                to: BTreeMap::from([("r-a/*".into(), 90), ("r-b/z-1".into(), 10)]),
            }],
            ..Default::default()
        };
        let c = cluster(mesh(), setting);
        let got = groups_of(&c.assignment("r-a/z-1", None));
        let summary: Vec<(String, u32, usize)> = got
            .into_iter()
            .map(|(l, p, w, a)| {
                assert_eq!(p, 0, "distribute sets no priorities");
                (l, w, a.len())
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("//".to_string(), 1, 0),
                ("r-a/z-1/".to_string(), 60, 2),
                ("r-a/z-2/".to_string(), 30, 1),
                ("r-b/z-1/".to_string(), 10, 1),
                ("r-c/z-1/".to_string(), 1, 0),
            ]
        );
        let other = groups_of(&c.assignment("r-b/z-1", None));
        assert!(other.iter().all(|(_, p, _, a)| *p == 0 && a.len() <= 2));
        assert_eq!(other.iter().map(|g| g.3.len()).sum::<usize>(), 6);
    }

    /// `failoverPriority`: endpoints sharing more of the listed labels with the client come
    /// first, within and across localities.
    #[test]
    fn failover_priority_prefers_endpoints_with_the_clients_labels() {
        let svc = service(&[
            ("10.0.0.1", "r-a/z-1", &[("tier", "gold"), ("rack", "1")]),
            ("10.0.0.2", "r-a/z-1", &[("tier", "gold"), ("rack", "2")]),
            ("10.0.0.3", "r-a/z-1", &[("tier", "tin")]),
        ]);
        let setting = LocalityLbSetting {
            failover_priority: vec!["tier".into(), "rack".into()],
            ..Default::default()
        };
        let c = cluster(svc, setting);
        let client = Labels::from([
            ("tier".to_string(), "gold".to_string()),
            ("rack".to_string(), "2".to_string()),
        ]);
        let got: Vec<(u32, Vec<String>)> = groups_of(&c.assignment("r-a/z-1", Some(&client)))
            .into_iter()
            .map(|(_, p, _, a)| (p, a))
            .collect();
        assert_eq!(
            got,
            [
                (0, vec!["10.0.0.2".to_string()]),
                (1, vec!["10.0.0.1".to_string()]),
                (2, vec!["10.0.0.3".to_string()]),
            ]
        );
        // A client without labels keeps the locality's one group, as istiod leaves it.
        let got = groups_of(&c.assignment("r-a/z-1", None));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, 0);
        assert_eq!(got[0].3.len(), 3);
    }

    /// Which clusters need a client's locality: outlier detection or `distribute`, unless
    /// `enabled: false`; and which balance by locality weight.
    #[test]
    fn only_failover_or_distribute_make_endpoints_depend_on_the_client() {
        let od = meshpilot_model::OutlierDetection::default();
        let off = meshpilot_model::LoadBalancerSettings {
            locality_lb_setting: Some(LocalityLbSetting {
                enabled: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        let weights = meshpilot_model::LoadBalancerSettings {
            locality_lb_setting: Some(LocalityLbSetting {
                distribute: vec![LocalityDistribute::default()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let policy = |lb, od| ClusterPolicy {
            load_balancer: lb,
            outlier_detection: od,
            ..ClusterPolicy::default()
        };
        assert!(effective(&policy(None, None)).is_none());
        assert!(effective(&policy(None, Some(&od))).is_some());
        assert!(!weighted(&policy(None, Some(&od))), "default failover");
        assert!(effective(&policy(Some(&off), Some(&od))).is_none());
        assert!(effective(&policy(Some(&weights), None)).is_some());
        assert!(weighted(&policy(Some(&weights), None)));
    }
}
