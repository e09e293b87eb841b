//! Per stream and type, what the proxy holds and what it made of it: ACKED, NACKED with Envoy's
//! message, or still awaiting an answer — per resource, for `/debug/config_dump`.
//!
//! The record keeps no per-resource state on the stream. Each response is remembered with the
//! set the proxy holds after it — an `Arc<TypeSet>` that is usually the snapshot's own set,
//! shared by every stream of the class — in a short history (the first response and the last
//! [`HISTORY`]). A resource's version and last-updated time are those of the oldest response in
//! the unbroken run of responses that held its current content; its status follows from the
//! newest acknowledged response and the small map of NACKed names. Memory per stream and type is
//! therefore a handful of pointers, whatever the size of the mesh.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use super::events::Versions;
use meshpilot_snapshot::{Resource, TypeSet};

/// Responses remembered besides the first one. A resource unchanged for longer is attributed to
/// the oldest remembered response in its run (or to the first response, when that one held the
/// same content too).
pub const HISTORY: usize = 4;

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

/// One response, with what the proxy holds after it.
#[derive(Debug, Clone)]
struct RecordedResponse {
    version: String,
    nonce: String,
    at: SystemTime,
    /// What the proxy holds of the type after this response.
    client_holds: Arc<TypeSet>,
    acked: bool,
}

impl RecordedResponse {
    fn holds(&self, r: &Resource) -> bool {
        self.client_holds
            .items
            .get(&r.name)
            .is_some_and(|h| h.version == r.version)
    }
}

/// What a stream holds of one type.
#[derive(Debug, Clone, Default)]
pub struct TypeRecord {
    delta: bool,
    first: Option<RecordedResponse>,
    /// Newest last.
    recent: VecDeque<RecordedResponse>,
    /// Name → (rejected version, Envoy's message).
    nacked: BTreeMap<String, (String, String)>,
}

impl TypeRecord {
    /// Records a response after which the proxy holds `client_holds`.
    pub fn sent(
        &mut self,
        versions: Versions<'_>,
        nonce: &str,
        client_holds: Arc<TypeSet>,
        now: SystemTime,
    ) {
        self.delta = matches!(versions, Versions::Delta);
        // The oldest remembered response makes room, and its strings take the new ones: a
        // stream records one response per push, and the version and nonce are short.
        let oldest = if self.recent.len() >= HISTORY {
            self.recent.pop_front()
        } else {
            None
        };
        let (mut version, mut nonce_buf) = oldest.map(|r| (r.version, r.nonce)).unwrap_or_default();
        version.clear();
        version.push_str(match versions {
            Versions::Sotw(v) => v,
            Versions::Delta => &client_holds.version,
        });
        nonce_buf.clear();
        nonce_buf.push_str(nonce);
        let resp = RecordedResponse {
            version,
            nonce: nonce_buf,
            at: now,
            client_holds,
            acked: false,
        };
        if self.first.is_none() {
            self.first = Some(resp.clone());
        }
        self.recent.push_back(resp);
        // A rejection of content that is no longer held is history.
        let newest = self.recent.back().map(|r| r.client_holds.clone());
        if let Some(holds) = newest {
            self.nacked.retain(|name, (version, _)| {
                holds
                    .items
                    .get(name.as_str())
                    .is_some_and(|r| &r.version == version)
            });
        }
    }

    /// The proxy applied the newest response.
    pub fn acked(&mut self) {
        if let Some(r) = self.recent.back_mut() {
            r.acked = true;
        }
    }

    /// The proxy rejected the newest response (nonce `nonce`). Envoy applies the valid resources
    /// of a response and names the rejected ones in its message, so an entry whose name appears
    /// in `message` is NACKED and the rest is ACKED. When the message names none, every resource
    /// that changed in that response is blamed (or, failing that, everything not yet
    /// acknowledged). Returns the blamed resources, sorted by name.
    pub fn nacked(&mut self, nonce: &str, message: &str) -> Vec<SentResource> {
        let Some(newest) = self.recent.back() else {
            return Vec::new();
        };
        let holds = newest.client_holds.clone();
        let previous_acked = self.recent.iter().rev().skip(1).find(|r| r.acked).cloned();
        let mut blamed: Vec<Arc<Resource>> = holds
            .items
            .values()
            .filter(|r| mentions(message, &r.name))
            .cloned()
            .collect();
        if blamed.is_empty() {
            let previous = self
                .recent
                .iter()
                .rev()
                .nth(1)
                .map(|r| r.client_holds.clone());
            blamed = holds
                .items
                .values()
                .filter(|r| {
                    newest.nonce == nonce
                        && previous.as_ref().is_none_or(|p| {
                            p.items.get(&r.name).is_none_or(|h| h.version != r.version)
                        })
                })
                .cloned()
                .collect();
        }
        if blamed.is_empty() {
            blamed = holds
                .items
                .values()
                .filter(|r| previous_acked.as_ref().is_none_or(|a| !a.holds(r)))
                .cloned()
                .collect();
        }
        for r in &blamed {
            self.nacked.insert(
                r.name.to_string(),
                (r.version.to_string(), message.to_string()),
            );
        }
        self.acked();
        let mut out: Vec<SentResource> = blamed.iter().map(|r| self.describe(r)).collect();
        out.sort_by(|a, b| a.resource.name.cmp(&b.resource.name));
        out
    }

    /// Where `r` (held by the newest response) stands.
    fn describe(&self, r: &Arc<Resource>) -> SentResource {
        // The oldest response of the unbroken run holding this content.
        let mut origin: Option<&RecordedResponse> = None;
        for resp in self.recent.iter().rev() {
            if resp.holds(r) {
                origin = Some(resp);
            } else {
                break;
            }
        }
        let run_reaches_oldest = origin.is_some()
            && self
                .recent
                .front()
                .is_some_and(|f| origin.is_some_and(|o| o.nonce == f.nonce));
        if run_reaches_oldest && let Some(first) = self.first.as_ref().filter(|f| f.holds(r)) {
            origin = Some(first);
        }
        let (version, nonce, at) = match origin {
            Some(o) => (o.version.clone(), o.nonce.clone(), o.at),
            None => (String::new(), String::new(), SystemTime::UNIX_EPOCH),
        };
        let version = if self.delta {
            r.version.to_string()
        } else {
            version
        };
        let (status, error) = match self.nacked.get(&*r.name) {
            Some((v, message)) if v == &r.version => {
                (ResourceStatus::Nacked, Some(message.clone()))
            }
            _ => {
                let acked = self
                    .recent
                    .iter()
                    .rev()
                    .find(|resp| resp.acked)
                    .is_some_and(|resp| resp.holds(r));
                let status = if acked {
                    ResourceStatus::Acked
                } else {
                    ResourceStatus::Sent
                };
                (status, None)
            }
        };
        SentResource {
            resource: r.clone(),
            version,
            nonce,
            last_updated: at,
            status,
            error,
        }
    }

    /// Every resource the proxy holds, sorted by name.
    pub fn entries(&self) -> Vec<SentResource> {
        let Some(newest) = self.recent.back() else {
            return Vec::new();
        };
        newest
            .client_holds
            .items
            .values()
            .map(|r| self.describe(r))
            .collect()
    }

    /// Whether `name` is held.
    #[cfg(test)]
    pub fn contains(&self, name: &str) -> bool {
        self.recent
            .back()
            .is_some_and(|r| r.client_holds.items.contains_key(name))
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

    fn set(items: &[Arc<Resource>]) -> Arc<TypeSet> {
        Arc::new(TypeSet::from_shared(items.iter().cloned()))
    }

    fn status(rec: &TypeRecord) -> Vec<(String, ResourceStatus)> {
        rec.entries()
            .into_iter()
            .map(|e| (e.resource.name.to_string(), e.status))
            .collect()
    }

    #[test]
    fn sent_then_acked_and_unchanged_entries_keep_their_version_and_time() {
        let mut rec = TypeRecord::default();
        let t0 = SystemTime::UNIX_EPOCH;
        rec.sent(
            Versions::Sotw("v1"),
            "1",
            set(&[res("a", b"1"), res("b", b"1")]),
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
            set(&[res("a", b"1"), res("b", b"2")]),
            t1,
        );
        let e = rec.entries();
        assert_eq!((e[0].version.as_str(), e[0].last_updated), ("v1", t0));
        assert_eq!(e[0].status, ResourceStatus::Acked);
        assert_eq!((e[1].version.as_str(), e[1].last_updated), ("v2", t1));
        assert_eq!(e[1].status, ResourceStatus::Sent);
    }

    #[test]
    fn past_the_history_each_entry_keeps_the_version_and_nonce_of_its_run() {
        let mut rec = TypeRecord::default();
        let t0 = SystemTime::UNIX_EPOCH;
        let last = HISTORY + 3;
        for i in 1..=last {
            // "a" never changes; "c" changes in response 3, "b" in the last one.
            let b: &'static [u8] = if i < last { b"1" } else { b"2" };
            let c: &'static [u8] = if i < 3 { b"1" } else { b"2" };
            rec.sent(
                Versions::Sotw(&format!("v{i}")),
                &i.to_string(),
                set(&[res("a", b"1"), res("b", b), res("c", c)]),
                t0 + std::time::Duration::from_secs(i as u64),
            );
            rec.acked();
        }
        let got: Vec<(String, String)> = rec
            .entries()
            .into_iter()
            .map(|e| (e.version, e.nonce))
            .collect();
        let pair = |i: usize| (format!("v{i}"), i.to_string());
        // "a": the first response; "b": the last; "c": response 3 is forgotten, so the oldest
        // remembered response of its run.
        assert_eq!(got, [pair(1), pair(last), pair(last + 1 - HISTORY)]);
    }

    #[test]
    fn sotw_drops_names_left_out_and_delta_drops_removed_names() {
        let mut rec = TypeRecord::default();
        let now = SystemTime::now();
        rec.sent(
            Versions::Sotw("v1"),
            "1",
            set(&[res("a", b"1"), res("b", b"1")]),
            now,
        );
        rec.sent(Versions::Sotw("v2"), "2", set(&[res("b", b"1")]), now);
        assert!(!rec.contains("a") && rec.contains("b"));

        let mut delta = TypeRecord::default();
        delta.sent(
            Versions::Delta,
            "1",
            set(&[res("a", b"1"), res("b", b"1")]),
            now,
        );
        // Delta: "a" removed, the client now holds only "b".
        delta.sent(Versions::Delta, "2", set(&[res("b", b"1")]), now);
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
            set(&[res("http.80", b"1"), res("http.8080", b"1")]),
            now,
        );
        let blamed = rec.nacked("1", "Error adding/updating route(s) http.80: bad regex");
        assert_eq!(blamed.len(), 1);
        assert_eq!(&*blamed[0].resource.name, "http.80");
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
        rec.sent(Versions::Sotw("v1"), "1", set(&[res("a", b"1")]), now);
        rec.acked();
        rec.sent(
            Versions::Sotw("v2"),
            "2",
            set(&[res("a", b"1"), res("b", b"1")]),
            now,
        );
        let blamed = rec.nacked("2", "something went wrong");
        assert_eq!(blamed.len(), 1);
        assert_eq!(&*blamed[0].resource.name, "b");
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
            set(&[res("a", b"1"), res("b", b"2")]),
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
