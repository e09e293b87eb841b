//! What a run found, as JSON (`Serialize`) and as a human table ([`Report::table`]).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::tracker::{ProxyStats, Tracked};
use super::{ChangePlan, Decode, Interception, LoadConfig, Protocol};

/// Percentiles of a sample (nearest rank), in the unit of the field name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Stats {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Stats {
    pub fn of(mut v: Vec<f64>) -> Stats {
        if v.is_empty() {
            return Stats::default();
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Stats {
            count: v.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        }
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Phase 1: initial sync.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// Every proxy held a complete configuration before the timeout.
    pub all_complete: bool,
    pub complete: usize,
    pub failed: usize,
    /// From the run's start (first connect) until the last proxy was complete.
    pub all_complete_ms: Option<f64>,
    /// From the last connect until the last proxy was complete.
    pub after_last_connect_ms: Option<f64>,
    /// Per proxy: from its connect until it was complete.
    pub per_proxy_ms: Stats,
    /// Bytes each proxy received until the end of the phase.
    pub bytes_per_proxy: Stats,
}

pub(super) fn sync_report(stats: &[Arc<ProxyStats>], _start: Instant) -> SyncReport {
    let n = stats.len();
    let complete: Vec<(u64, u64)> = stats
        .iter()
        .filter_map(|s| {
            let c = s.complete_ns.load(Ordering::Relaxed);
            (c != 0).then(|| (s.connect_ns.load(Ordering::Relaxed), c))
        })
        .collect();
    let failed = stats
        .iter()
        .filter(|s| s.failed.load(Ordering::Relaxed))
        .count();
    let all = complete.len() == n;
    let last_connect = stats
        .iter()
        .map(|s| s.connect_ns.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let last_complete = complete.iter().map(|(_, c)| *c).max().unwrap_or(0);
    SyncReport {
        all_complete: all,
        complete: complete.len(),
        failed,
        all_complete_ms: all.then(|| ms(last_complete)),
        after_last_connect_ms: all.then(|| ms(last_complete.saturating_sub(last_connect))),
        per_proxy_ms: Stats::of(
            complete
                .iter()
                .map(|(c0, c)| ms(c.saturating_sub(*c0)))
                .collect(),
        ),
        bytes_per_proxy: Stats::of(
            stats
                .iter()
                .map(|s| s.bytes.load(Ordering::Relaxed) as f64)
                .collect(),
        ),
    }
}

/// Phase 2: the no-op recompute.
#[derive(Debug, Clone, Serialize)]
pub struct NoopReport {
    /// `Some(true)`: `/debug/pushz` showed a recompute; `None`: no debug address to ask.
    pub recompute_confirmed: Option<bool>,
    /// Bytes received by all proxies together in the window after the write.
    pub bytes: u64,
    pub waited_ms: f64,
}

/// Phase 3: changes.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeReport {
    pub kind: String,
    pub planned: usize,
    pub applied: usize,
    /// Changes every proxy ACKed.
    pub converged: usize,
    /// Changes some proxy never ACKed within the timeout (never counted in the latencies).
    pub not_converged: usize,
    /// (change, proxy) pairs never ACKed.
    pub missing_acks: usize,
    /// Per converged change: from the file write until the last proxy ACKed it.
    pub all_acked_ms: Stats,
    /// Per (change, proxy) pair that converged: from the file write until the ACK.
    pub per_proxy_ack_ms: Stats,
    /// Per converged change: from the first proxy's ACK to the last one's (the fan-out).
    pub spread_ms: Stats,
    /// Bytes received per proxy per applied change during the phase.
    pub bytes_per_proxy_per_change: f64,
    /// How long writing the changes took, and the whole phase.
    pub writes_ms: f64,
    pub phase_ms: f64,
    /// The pace of responses while the changes were being written.
    pub pace: PaceReport,
}

/// Responses counted per proxy over a window of the change phase: how many each proxy received
/// at its start and at its end.
pub(super) struct Pace {
    pub before: Vec<u64>,
    pub after: Vec<u64>,
    pub window: Duration,
}

/// How often the proxies were answered while the changes were being written.
///
/// A Delta stream has at most one unanswered response per type, so when changes come faster than
/// a round trip, a proxy gets its next response as soon as it has ACKed the last one. Each
/// response then carries several changes, and the time between two responses is the round
/// trip: about the number of proxies divided by `responses_per_s`. The latency of a change is
/// then set by the machine's throughput, not by the rate of changes (BENCHMARKS.md, W4).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PaceReport {
    /// All proxies' responses per second.
    pub responses_per_s: f64,
    /// Per proxy that received any: the mean time between two of its responses.
    pub response_interval_ms: Stats,
    /// Changes written per response a proxy received (median proxy): about 1 when every change
    /// gets a response of its own, more when responses carry several.
    pub changes_per_response: f64,
}

impl PaceReport {
    pub(super) fn of(pace: &Pace, changes: usize) -> PaceReport {
        let secs = pace.window.as_secs_f64();
        let counts: Vec<u64> = pace
            .after
            .iter()
            .zip(&pace.before)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        if secs <= 0.0 {
            return PaceReport::default();
        }
        let total: u64 = counts.iter().sum();
        let answered: Vec<u64> = counts.into_iter().filter(|&n| n > 0).collect();
        let interval = Stats::of(answered.iter().map(|&n| secs * 1e3 / n as f64).collect());
        let median = Stats::of(answered.iter().map(|&n| n as f64).collect()).p50;
        PaceReport {
            responses_per_s: total as f64 / secs,
            response_interval_ms: interval,
            changes_per_response: if median > 0.0 {
                changes as f64 / median
            } else {
                0.0
            },
        }
    }
}

pub(super) fn change_report(
    plan: ChangePlan,
    applied: usize,
    all: &[Arc<Tracked>],
    bytes: u64,
    proxies: usize,
    writes: Duration,
    phase: Duration,
) -> ChangeReport {
    let mut converged = 0;
    let mut missing = 0;
    let mut all_acked = Vec::new();
    let mut spread = Vec::new();
    let mut per_proxy = Vec::new();
    for t in all {
        let (got, never) = acks(t);
        missing += never;
        per_proxy.extend(got.iter().map(|&ns| ms(ns)));
        if never == 0 {
            converged += 1;
            let max = got.iter().copied().max().unwrap_or(0);
            let min = got.iter().copied().min().unwrap_or(0);
            all_acked.push(ms(max));
            spread.push(ms(max - min));
        }
    }
    ChangeReport {
        kind: format!("{:?}", plan.kind),
        planned: plan.count,
        applied,
        converged,
        not_converged: all.len() - converged,
        missing_acks: missing,
        all_acked_ms: Stats::of(all_acked),
        per_proxy_ack_ms: Stats::of(per_proxy),
        spread_ms: Stats::of(spread),
        bytes_per_proxy_per_change: if applied == 0 || proxies == 0 {
            0.0
        } else {
            bytes as f64 / proxies as f64 / applied as f64
        },
        writes_ms: writes.as_secs_f64() * 1e3,
        phase_ms: phase.as_secs_f64() * 1e3,
        pace: PaceReport::default(),
    }
}

/// A change's ACK latencies (ns) from the proxies that ACKed it, and how many never did.
fn acks(t: &Tracked) -> (Vec<u64>, usize) {
    let lat = t.latencies();
    let got: Vec<u64> = lat.iter().flatten().copied().collect();
    let never = lat.len() - got.len();
    (got, never)
}

/// One CSV row per change, in the order they were written: `change,first_ack_ms,all_acked_ms`
/// (from the file write to the first and to the last proxy's ACK; empty when some proxy never
/// ACKed it), for seeing *when* in a run the slow changes fell.
pub(super) fn per_change_csv(all: &[Arc<Tracked>]) -> String {
    let mut out = String::from("change,first_ack_ms,all_acked_ms\n");
    for (k, t) in all.iter().enumerate() {
        let (got, never) = acks(t);
        let min = got.iter().copied().min();
        let max = (never == 0).then(|| got.iter().copied().max()).flatten();
        let cell = |v: Option<u64>| v.map(|ns| format!("{:.3}", ms(ns))).unwrap_or_default();
        let _ = writeln!(out, "{k},{},{}", cell(min), cell(max));
    }
    out
}

/// Server memory (KiB): (VmRSS, VmHWM) before the proxies connected, once synced, at the end.
#[derive(Debug, Clone, Serialize)]
pub struct ServerMemory {
    pub pid: u32,
    pub before: Option<(u64, u64)>,
    pub synced: Option<(u64, u64)>,
    pub end: Option<(u64, u64)>,
}

/// CPU time readings (milliseconds since process start).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuReading {
    pub server_ms: Option<u64>,
    pub client_ms: Option<u64>,
}

/// CPU spent by the server and by the load tool itself (both share the machine's cores), during
/// the sync phase and during the rest of the run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuReport {
    pub server_sync_ms: Option<u64>,
    pub client_sync_ms: Option<u64>,
    pub server_after_sync_ms: Option<u64>,
    pub client_after_sync_ms: Option<u64>,
}

impl CpuReport {
    pub fn between(before: CpuReading, synced: CpuReading, end: CpuReading) -> CpuReport {
        let d = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
        CpuReport {
            server_sync_ms: d(before.server_ms, synced.server_ms),
            client_sync_ms: d(before.client_ms, synced.client_ms),
            server_after_sync_ms: d(synced.server_ms, end.server_ms),
            client_after_sync_ms: d(synced.client_ms, end.client_ms),
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub proxies: usize,
    pub protocol: Protocol,
    pub classes: usize,
    /// Namespaces the proxies were spread over (`ns-0` …; 1: all in one).
    pub namespaces: usize,
    /// Zones the proxies' node localities were spread over (0: none).
    pub localities: usize,
    pub interception: Interception,
    pub connect_over_ms: f64,
    pub sync: SyncReport,
    pub noop: Option<NoopReport>,
    pub change: Option<ChangeReport>,
    pub nacks_sent: u64,
    pub undecodable_resources: u64,
    /// How much of each resource the proxies decoded.
    pub decode: Decode,
    /// Resources decoded into their Envoy type (`--decode full`).
    pub fully_decoded_resources: u64,
    /// Resources that did not decode into their Envoy type (`--decode full`): an error.
    pub decode_failures: u64,
    /// Streams that failed or were closed by the server.
    pub failed_streams: usize,
    /// Stream opens that failed before the stream was established, and were retried.
    pub open_retries: u64,
    /// Distinct stream errors with their counts.
    pub errors: BTreeMap<String, usize>,
    pub server_memory: Option<ServerMemory>,
    pub cpu: CpuReport,
}

impl Report {
    pub(super) fn new(
        cfg: &LoadConfig,
        sync: SyncReport,
        noop: Option<NoopReport>,
        change: Option<ChangeReport>,
        stats: &[Arc<ProxyStats>],
        server_memory: Option<ServerMemory>,
    ) -> Report {
        let mut errors = BTreeMap::new();
        for s in stats {
            let e = s.error.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(e) = e {
                *errors.entry(e).or_insert(0) += 1;
            }
        }
        Report {
            proxies: cfg.proxies,
            protocol: cfg.protocol,
            classes: cfg.classes,
            namespaces: cfg.namespaces.max(1),
            localities: cfg.localities,
            interception: cfg.interception,
            connect_over_ms: cfg.connect_over.as_secs_f64() * 1e3,
            sync,
            noop,
            change,
            nacks_sent: stats.iter().map(|s| s.nacks.load(Ordering::Relaxed)).sum(),
            undecodable_resources: stats
                .iter()
                .map(|s| s.bad_resources.load(Ordering::Relaxed))
                .sum(),
            decode: cfg.decode,
            fully_decoded_resources: stats
                .iter()
                .map(|s| s.fully_decoded.load(Ordering::Relaxed))
                .sum(),
            decode_failures: stats
                .iter()
                .map(|s| s.decode_failures.load(Ordering::Relaxed))
                .sum(),
            failed_streams: stats
                .iter()
                .filter(|s| s.failed.load(Ordering::Relaxed))
                .count(),
            open_retries: stats
                .iter()
                .map(|s| s.retries.load(Ordering::Relaxed))
                .sum(),
            errors,
            server_memory,
            cpu: CpuReport::default(),
        }
    }

    /// True when everything asked for converged, with no failed stream and no undecodable
    /// resource, by either decode (NACKs asked for by the run do not count against it).
    pub fn ok(&self) -> bool {
        self.sync.all_complete
            && self.failed_streams == 0
            && self.undecodable_resources == 0
            && self.decode_failures == 0
            && self.change.as_ref().is_none_or(|c| c.not_converged == 0)
    }

    /// A human-readable summary.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let st = |s: &Stats| format!("p50 {:.1}  p99 {:.1}  max {:.1}", s.p50, s.p99, s.max);
        let _ = writeln!(
            t,
            "proxies {}  protocol {:?}  classes {}  namespaces {}  localities {}  \
             interception {:?}  connect over {:.0} ms",
            self.proxies,
            self.protocol,
            self.classes,
            self.namespaces,
            self.localities,
            self.interception,
            self.connect_over_ms
        );
        let s = &self.sync;
        let _ = writeln!(
            t,
            "sync        complete {}/{}  failed {}  all complete {}  after last connect {}",
            s.complete,
            self.proxies,
            s.failed,
            opt_ms(s.all_complete_ms),
            opt_ms(s.after_last_connect_ms)
        );
        let _ = writeln!(t, "            per proxy ms: {}", st(&s.per_proxy_ms));
        let _ = writeln!(t, "            bytes per proxy: {}", st(&s.bytes_per_proxy));
        if let Some(n) = &self.noop {
            let _ = writeln!(
                t,
                "no-op       recompute confirmed {}  bytes sent to all proxies {}",
                match n.recompute_confirmed {
                    Some(true) => "yes",
                    Some(false) => "NO (no recompute seen)",
                    None => "unknown (no --debug-address)",
                },
                n.bytes
            );
        }
        if let Some(c) = &self.change {
            let _ = writeln!(
                t,
                "changes     {} applied {}/{}  converged {}  NOT converged {}  missing acks {}",
                c.kind, c.applied, c.planned, c.converged, c.not_converged, c.missing_acks
            );
            let _ = writeln!(t, "            all ACKed ms:  {}", st(&c.all_acked_ms));
            let _ = writeln!(t, "            per proxy ms:  {}", st(&c.per_proxy_ack_ms));
            let _ = writeln!(t, "            fan-out ms:    {}", st(&c.spread_ms));
            let _ = writeln!(
                t,
                "            bytes per proxy per change: {:.0}",
                c.bytes_per_proxy_per_change
            );
            if c.pace.response_interval_ms.count > 0 {
                let _ = writeln!(
                    t,
                    "            while writing: {:.0} responses/s  changes per response {:.1}",
                    c.pace.responses_per_s, c.pace.changes_per_response
                );
                let _ = writeln!(
                    t,
                    "            response interval ms: {}",
                    st(&c.pace.response_interval_ms)
                );
            }
        }
        let _ = writeln!(
            t,
            "NACKs sent {}  failed streams {}  stream opens retried {}  undecodable resources {}",
            self.nacks_sent, self.failed_streams, self.open_retries, self.undecodable_resources
        );
        if self.decode == Decode::Full {
            let _ = writeln!(
                t,
                "full decode: {} resources decoded as their Envoy type, {} failed",
                self.fully_decoded_resources, self.decode_failures
            );
        }
        for (e, count) in &self.errors {
            let _ = writeln!(t, "  {count} × {e}");
        }
        let c = &self.cpu;
        let o = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
        let _ = writeln!(
            t,
            "cpu         sync: server {} load tool {}   after sync: server {} load tool {}",
            o(c.server_sync_ms),
            o(c.client_sync_ms),
            o(c.server_after_sync_ms),
            o(c.client_after_sync_ms)
        );
        if let Some(m) = &self.server_memory {
            let f = |v: Option<(u64, u64)>| match v {
                Some((rss, hwm)) => format!(
                    "rss {:.1} MiB (hwm {:.1})",
                    rss as f64 / 1024.0,
                    hwm as f64 / 1024.0
                ),
                None => "-".to_string(),
            };
            let _ = writeln!(
                t,
                "server {}  before {}  synced {}  end {}",
                m.pid,
                f(m.before),
                f(m.synced),
                f(m.end)
            );
        }
        t
    }
}

fn opt_ms(v: Option<f64>) -> String {
    match v {
        Some(v) => format!("{v:.1} ms"),
        None => "NOT REACHED".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::Expect;
    use crate::tracker::Tracker;

    #[test]
    fn per_change_rows_give_first_and_last_ack_and_leave_unconverged_blank() {
        let tracker = Tracker::new(2);
        for ip in ["10.0.0.1", "10.0.0.2"] {
            tracker.register(Expect::Endpoint {
                cla: "c".into(),
                ip: ip.into(),
            });
        }
        let all = tracker.all();
        all[0].satisfy(0);
        std::thread::sleep(Duration::from_millis(5));
        all[0].satisfy(1);
        all[1].satisfy(1); // proxy 0 never ACKs the second change
        let csv = per_change_csv(&all);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "change,first_ack_ms,all_acked_ms");
        let cells: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(cells[0], "0");
        let (first, last): (f64, f64) = (
            cells[1].parse().expect("first ACK"),
            cells[2].parse().expect("last ACK"),
        );
        assert!(last >= first + 4.0, "{first} .. {last}");
        let cells: Vec<&str> = lines[2].split(',').collect();
        assert_eq!(cells[0], "1");
        assert!(!cells[1].is_empty(), "one proxy ACKed it");
        assert_eq!(cells[2], "", "not converged: no all-ACKed time");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn pace_counts_only_the_window_and_only_answered_proxies() {
        let pace = Pace {
            before: vec![10, 0, 5],
            after: vec![50, 20, 5],
            window: Duration::from_secs(2),
        };
        let p = PaceReport::of(&pace, 80);
        // 40 + 20 responses in 2 s.
        assert_eq!(p.responses_per_s, 30.0);
        // 2,000 ms / 40 and / 20; the proxy with none is left out.
        assert_eq!(p.response_interval_ms.count, 2);
        assert_eq!(p.response_interval_ms.p50, 50.0);
        assert_eq!(p.response_interval_ms.max, 100.0);
        // The median proxy (nearest rank of 20 and 40) got 20 responses for 80 changes.
        assert_eq!(p.changes_per_response, 4.0);

        let empty = Pace {
            before: vec![1],
            after: vec![3],
            window: Duration::ZERO,
        };
        assert_eq!(PaceReport::of(&empty, 1), PaceReport::default());
    }
}
