//! Per stream and type, the record of every resource the proxy was sent — its content (the
//! shared `Arc<Resource>`), the version Envoy files it under, when it last changed — and what the
//! proxy made of it: ACKED, NACKED with Envoy's message, or still awaiting an answer.
//!
//! Both protocol variants feed it the same way: [`TypeRecord::sent`] after each response,
//! [`TypeRecord::acked`] / [`TypeRecord::nacked`] when Envoy answers the newest nonce (the xDS
//! protocol doc: a request carrying the newest nonce answers every response up to it).
//! An entry changes only when the content of its resource does, so a push that resends unchanged
//! resources costs one hash lookup per resource and no allocation.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::snapshot::Resource;

/// Where one resource stands with the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResourceStatus {
    /// Sent; the proxy has not answered that response yet.
    Sent,
    /// The proxy applied it.
    Acked,
    /// The proxy rejected it (see the entry's `error`).
    Nacked,
    /// The proxy should have it (wildcard or subscribed) but was never sent it.
    NotSent,
}

/// One resource as last sent on a stream.
#[derive(Debug, Clone)]
pub struct SentResource {
    pub resource: Arc<Resource>,
    /// The version Envoy files it under: SotW, the `version_info` of the response that carried
    /// this content first; Delta, the resource's own version.
    pub version: String,
    /// The nonce of the response that carried this content first.
    pub nonce: String,
    /// When this content was first sent.
    pub last_updated: SystemTime,
    pub status: ResourceStatus,
    /// Envoy's message when NACKED.
    pub error: Option<String>,
}

/// What a stream holds of one type.
#[derive(Debug, Clone, Default)]
pub struct TypeRecord {
    items: HashMap<String, SentResource>,
}

/// How a response names the versions of its resources.
#[derive(Debug, Clone, Copy)]
pub enum Versions<'a> {
    /// SotW: every resource carries the response's `version_info`, and the response is the
    /// complete set (a name left out is no longer held).
    Sotw(&'a str),
    /// Delta: each resource carries its own version; removals are explicit.
    Delta,
}

impl TypeRecord {
    /// Records a response: `resources` sent (unchanged ones keep their entry), `removed` names
    /// dropped.
    pub fn sent(
        &mut self,
        versions: Versions<'_>,
        nonce: &str,
        resources: &[Arc<Resource>],
        removed: &[String],
        now: SystemTime,
    ) {
        for r in resources {
            if let Some(e) = self.items.get(&r.name)
                && e.resource.version == r.version
            {
                continue;
            }
            let version = match versions {
                Versions::Sotw(v) => v.to_string(),
                Versions::Delta => r.version.clone(),
            };
            self.items.insert(
                r.name.clone(),
                SentResource {
                    resource: r.clone(),
                    version,
                    nonce: nonce.to_string(),
                    last_updated: now,
                    status: ResourceStatus::Sent,
                    error: None,
                },
            );
        }
        for name in removed {
            self.items.remove(name);
        }
        if matches!(versions, Versions::Sotw(_)) && self.items.len() > resources.len() {
            // Only when something was left out (deleted or unsubscribed): a rare set.
            let keep: HashSet<&str> = resources.iter().map(|r| r.name.as_str()).collect();
            self.items.retain(|name, _| keep.contains(name.as_str()));
        }
    }

    /// The proxy applied the newest response: everything awaiting an answer is ACKED.
    pub fn acked(&mut self) {
        for e in self.items.values_mut() {
            if e.status == ResourceStatus::Sent {
                e.status = ResourceStatus::Acked;
            }
        }
    }

    /// The proxy rejected the newest response (nonce `nonce`). Envoy applies the valid resources
    /// of a response and names the rejected ones in its message, so an entry whose name appears
    /// in `message` is NACKED and the rest of what awaited an answer is ACKED. When the message
    /// names none, every resource that changed in that response is blamed (or, failing that,
    /// everything awaiting an answer). Returns the blamed resources, sorted by name.
    pub fn nacked(&mut self, nonce: &str, message: &str) -> Vec<SentResource> {
        let named: Vec<&String> = self
            .items
            .iter()
            .filter(|(name, e)| {
                matches!(e.status, ResourceStatus::Sent | ResourceStatus::Nacked)
                    && mentions(message, name)
            })
            .map(|(name, _)| name)
            .collect();
        let blamed: Vec<String> = if !named.is_empty() {
            named.into_iter().cloned().collect()
        } else {
            let in_response: Vec<String> = self
                .items
                .iter()
                .filter(|(_, e)| e.status == ResourceStatus::Sent && e.nonce == nonce)
                .map(|(n, _)| n.clone())
                .collect();
            if in_response.is_empty() {
                self.items
                    .iter()
                    .filter(|(_, e)| e.status == ResourceStatus::Sent)
                    .map(|(n, _)| n.clone())
                    .collect()
            } else {
                in_response
            }
        };
        for name in &blamed {
            if let Some(e) = self.items.get_mut(name) {
                e.status = ResourceStatus::Nacked;
                e.error = Some(message.to_string());
            }
        }
        self.acked();
        let mut out: Vec<SentResource> = blamed
            .iter()
            .filter_map(|n| self.items.get(n).cloned())
            .collect();
        out.sort_by(|a, b| a.resource.name.cmp(&b.resource.name));
        out
    }

    /// A copy of every entry, sorted by name.
    pub fn entries(&self) -> Vec<SentResource> {
        let mut out: Vec<SentResource> = self.items.values().cloned().collect();
        out.sort_by(|a, b| a.resource.name.cmp(&b.resource.name));
        out
    }

    /// Whether `name` is held.
    #[cfg(test)]
    pub fn contains(&self, name: &str) -> bool {
        self.items.contains_key(name)
    }
}

/// True when `message` names `name` as a whole token (so cluster `a` is not found in `had`).
fn mentions(message: &str, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    let token = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '|' | ':');
    message.match_indices(name).any(|(i, _)| {
        let before = message[..i].chars().next_back();
        let after = message[i + name.len()..].chars().next();
        // A trailing '.' or ':' ends a sentence or a label, not the name.
        before.is_none_or(|c| !token(c))
            && after.is_none_or(|c| !token(c) || matches!(c, '.' | ':'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn res(name: &str, body: &'static [u8]) -> Arc<Resource> {
        Arc::new(Resource::new(name, Bytes::from_static(body), vec![]))
    }

    fn status(rec: &TypeRecord) -> Vec<(String, ResourceStatus)> {
        rec.entries()
            .into_iter()
            .map(|e| (e.resource.name.clone(), e.status))
            .collect()
    }

    #[test]
    fn sent_then_acked_and_unchanged_entries_keep_their_version_and_time() {
        let mut rec = TypeRecord::default();
        let t0 = SystemTime::UNIX_EPOCH;
        rec.sent(
            Versions::Sotw("v1"),
            "1",
            &[res("a", b"1"), res("b", b"1")],
            &[],
            t0,
        );
        assert_eq!(
            status(&rec),
            [
                ("a".into(), ResourceStatus::Sent),
                ("b".into(), ResourceStatus::Sent)
            ]
        );
        rec.acked();
        let t1 = t0 + std::time::Duration::from_secs(5);
        rec.sent(
            Versions::Sotw("v2"),
            "2",
            &[res("a", b"1"), res("b", b"2")],
            &[],
            t1,
        );
        let e = rec.entries();
        assert_eq!((e[0].version.as_str(), e[0].last_updated), ("v1", t0));
        assert_eq!(e[0].status, ResourceStatus::Acked);
        assert_eq!((e[1].version.as_str(), e[1].last_updated), ("v2", t1));
        assert_eq!(e[1].status, ResourceStatus::Sent);
    }

    #[test]
    fn sotw_drops_names_left_out_and_delta_drops_removed_names() {
        let mut rec = TypeRecord::default();
        let now = SystemTime::now();
        rec.sent(
            Versions::Sotw("v1"),
            "1",
            &[res("a", b"1"), res("b", b"1")],
            &[],
            now,
        );
        rec.sent(Versions::Sotw("v2"), "2", &[res("b", b"1")], &[], now);
        assert!(!rec.contains("a") && rec.contains("b"));

        let mut delta = TypeRecord::default();
        delta.sent(
            Versions::Delta,
            "1",
            &[res("a", b"1"), res("b", b"1")],
            &[],
            now,
        );
        delta.sent(Versions::Delta, "2", &[], &["a".to_string()], now);
        let e = delta.entries();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].version, e[0].resource.version);
    }

    #[test]
    fn nack_blames_the_resources_envoy_names_and_acks_the_rest() {
        let mut rec = TypeRecord::default();
        let now = SystemTime::now();
        rec.sent(
            Versions::Sotw("v1"),
            "1",
            &[res("http.80", b"1"), res("http.8080", b"1")],
            &[],
            now,
        );
        let blamed = rec.nacked("1", "Error adding/updating route(s) http.80: bad regex");
        assert_eq!(blamed.len(), 1);
        assert_eq!(blamed[0].resource.name, "http.80");
        assert_eq!(
            status(&rec),
            [
                ("http.80".into(), ResourceStatus::Nacked),
                ("http.8080".into(), ResourceStatus::Acked)
            ]
        );
        let e = rec.entries();
        assert_eq!(
            e[0].error.as_deref(),
            Some("Error adding/updating route(s) http.80: bad regex")
        );
    }

    #[test]
    fn nack_naming_nothing_blames_what_changed_in_that_response() {
        let mut rec = TypeRecord::default();
        let now = SystemTime::now();
        rec.sent(Versions::Sotw("v1"), "1", &[res("a", b"1")], &[], now);
        rec.acked();
        rec.sent(
            Versions::Sotw("v2"),
            "2",
            &[res("a", b"1"), res("b", b"1")],
            &[],
            now,
        );
        let blamed = rec.nacked("2", "something went wrong");
        assert_eq!(blamed.len(), 1);
        assert_eq!(blamed[0].resource.name, "b");
        assert_eq!(
            status(&rec),
            [
                ("a".into(), ResourceStatus::Acked),
                ("b".into(), ResourceStatus::Nacked)
            ]
        );
        // A fixed version is sent again and then acknowledged.
        rec.sent(
            Versions::Sotw("v3"),
            "3",
            &[res("a", b"1"), res("b", b"2")],
            &[],
            now,
        );
        rec.acked();
        assert!(
            rec.entries()
                .iter()
                .all(|e| e.status == ResourceStatus::Acked)
        );
        assert!(rec.entries().iter().all(|e| e.error.is_none()));
    }

    #[test]
    fn names_are_matched_as_whole_tokens() {
        assert!(mentions("listener 80 failed", "80"));
        assert!(mentions("route http.80: bad", "http.80"));
        assert!(!mentions("route http.8080: bad", "http.80"));
        assert!(!mentions("route http.80: bad", "80"));
        assert!(mentions(
            "cluster outbound|80||a.b.svc.cluster.local.",
            "outbound|80||a.b.svc.cluster.local"
        ));
    }
}
