//! The load tool: N simulated proxies on ADS streams (SotW or Delta) against any xDS server, a
//! no-op recompute check and a change workload driven through the [`mesh`](crate::mesh)
//! generator's mutators, with a report of what converged, how fast, and what did not.
//!
//! Phases of [`run`]:
//! 1. **sync** — proxies connect (all at once or spread over `connect_over`); each is *complete*
//!    once CDS and LDS are answered and it holds the ClusterLoadAssignment of every EDS cluster
//!    and the RouteConfiguration every listener names. Reported: time until all N are
//!    complete, from the start and from the last connect, per-proxy time, bytes per proxy.
//! 2. **no-op** (optional) — writes a file that makes the server recompute without changing any
//!    proxy's configuration, confirms the recompute through `/debug/pushz` when a debug address
//!    is known, and counts the bytes every proxy receives in the following window (should be 0).
//! 3. **changes** (optional) — `count` changes at `rate` per second. Each is registered with its
//!    [`Expect`](crate::mesh::Expect)ation *before* its file is written; a proxy records the
//!    time it ACKs a response whose content satisfies it. A change is *converged* when every
//!    proxy has; one that some proxy never got is reported as not converged with counts, never
//!    as fast. Latencies are measured from the file write, so they include the file source's
//!    and the push engine's debounce.
//!
//! Every wait is bounded by `timeout`; every address is the one given (loopback in practice).

pub mod decode;
pub mod envoy_node;
pub mod mesh;

mod grpc;
mod proxy;
mod report;
pub mod tracker;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Locality;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

pub use report::{
    ChangeReport, CpuReading, CpuReport, NoopReport, Report, ServerMemory, Stats, SyncReport,
};
pub use tracker::{ProxyStats, Tracker};

use crate::mesh::{ChangeKind, Mesh, MeshError};
use meshpilot_snapshot::XdsType;

/// SotW or Delta ADS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Sotw,
    Delta,
}

/// How the simulated proxies say traffic reaches them (`INTERCEPTION_MODE` in the node metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Interception {
    /// Sidecars behind iptables: no `INTERCEPTION_MODE` is sent (the server's default,
    /// REDIRECT), and every proxy shares its listeners with the others of its class.
    Redirect,
    /// Sidecars without iptables: `INTERCEPTION_MODE: NONE` and a distinct IP per proxy
    /// (10.0.0.1, 10.0.0.2, … in order), so each proxy's listeners bind its own address.
    None,
}

/// How much of each received resource the simulated proxies decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Decode {
    /// Only what following the xDS chain and checking changes needs (names, EDS service
    /// names, route configuration names), read from the encoding without building messages:
    /// the load tool shares the machine with the server.
    Names,
    /// Also decode every resource into its Envoy type (Cluster, ClusterLoadAssignment,
    /// Listener with its HTTP connection managers, RouteConfiguration), as Envoy does, and
    /// count the failures.
    Full,
}

/// NACK every `every`-th response of type `t` on each stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NackRule {
    pub t: XdsType,
    pub every: u64,
}

/// A change workload: `count` changes of `kind`, `rate` per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChangePlan {
    pub kind: ChangeKind,
    pub count: usize,
    pub rate: f64,
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub xds_address: SocketAddr,
    /// The server's debug address: `/ready` is awaited and `/debug/pushz` confirms recomputes.
    pub debug_address: Option<SocketAddr>,
    /// The server's process id, for RSS figures (`/proc/PID/status`).
    pub server_pid: Option<u32>,
    pub proxies: usize,
    pub protocol: Protocol,
    /// HTTP/2 connections; `None`: one per proxy, as Envoy does.
    pub connections: Option<usize>,
    /// Connects are spread evenly over this long (zero: all at once).
    pub connect_over: Duration,
    /// Distinct proxy classes (1: every proxy shares one compiled snapshot).
    pub classes: usize,
    /// The proxies' namespace when `namespaces` is 0 or 1.
    pub namespace: String,
    /// Spread the proxies round-robin over `ns-0` … `ns-{M-1}` (0 or 1: all in `namespace`).
    pub namespaces: usize,
    /// Spread each namespace's proxies' node locality round-robin over this many zones, named
    /// as the mesh generator's ([`mesh::zone_locality`]); 0: no locality.
    pub localities: usize,
    /// The interception mode the proxies announce.
    pub interception: Interception,
    /// How much of each resource the proxies decode.
    pub decode: Decode,
    pub nack: Option<NackRule>,
    /// Bound of every wait (sync after the last connect, no-op recompute, change convergence).
    pub timeout: Duration,
    /// Run the no-op check (needs a mesh).
    pub noop: bool,
    pub changes: Option<ChangePlan>,
    /// Keep the streams open, idle, this long after the last phase (for memory readings).
    pub hold: Duration,
    /// Where to write each change's latencies as CSV ([`report::per_change_csv`]).
    pub per_change_csv: Option<std::path::PathBuf>,
}

impl LoadConfig {
    /// `proxies` SotW proxies sharing one class against `xds`, one connection each.
    pub fn new(xds_address: SocketAddr, proxies: usize) -> LoadConfig {
        LoadConfig {
            xds_address,
            debug_address: None,
            server_pid: None,
            proxies,
            protocol: Protocol::Sotw,
            connections: None,
            connect_over: Duration::ZERO,
            classes: 1,
            namespace: "ns-0".to_string(),
            namespaces: 0,
            localities: 0,
            interception: Interception::Redirect,
            decode: Decode::Names,
            nack: None,
            timeout: Duration::from_secs(30),
            noop: false,
            changes: None,
            hold: Duration::ZERO,
            per_change_csv: None,
        }
    }
}

impl LoadConfig {
    /// The namespace of proxy `i`.
    pub fn proxy_namespace(&self, i: usize) -> std::borrow::Cow<'_, str> {
        match self.namespaces {
            0 | 1 => self.namespace.as_str().into(),
            m => format!("ns-{}", i % m).into(),
        }
    }

    /// The node locality of proxy `i`, `None` without localities. Each namespace's proxies
    /// take the zones round-robin, so every (namespace, zone) pair has proxies even when the
    /// two counts share a divisor.
    pub fn proxy_locality(&self, i: usize) -> Option<Locality> {
        (self.localities > 0).then(|| {
            let (region, zone) = mesh::zone_locality(i / self.namespaces.max(1), self.localities);
            Locality {
                region,
                zone,
                sub_zone: String::new(),
            }
        })
    }
}

/// Why a run could not be carried out (a run that *measures* failures still returns a report).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The mesh could not be changed.
    #[error(transparent)]
    Mesh(#[from] MeshError),
    /// The no-op check or a change workload was asked for without a mesh directory.
    #[error("the no-op check and change workloads need the mesh directory (--mesh-dir)")]
    NoMesh,
    /// The connections shared by the proxies (`--connections`) could not be opened.
    #[error("xDS address {0}: {1}")]
    Address(SocketAddr, String),
    /// The server's `/ready` did not answer 200 in time.
    #[error("the server at {0} was not ready within {1:?}")]
    NotReady(SocketAddr, Duration),
    /// The embedded description of Envoy's node could not be read.
    #[error(transparent)]
    EnvoyNode(#[from] envoy_node::EnvoyNodeError),
    /// An output file could not be written.
    #[error("write {}: {source}", path.display())]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The node id of simulated proxy `i`: a distinct address per proxy (only a string in the
/// node id; every stream connects to the server's address). Redirect-mode proxies take theirs
/// from 127/8; proxies without interception take 10.0.0.1, 10.0.0.2, … in order, the addresses
/// their listeners then bind.
pub fn node_id(i: usize, namespace: &str, interception: Interception) -> String {
    let ip = match interception {
        Interception::Redirect => format!(
            "127.{}.{}.{}",
            1 + (i >> 16) % 254,
            (i >> 8) & 0xff,
            i & 0xff
        ),
        Interception::None => std::net::Ipv4Addr::from(0x0a00_0001_u32 + i as u32).to_string(),
    };
    format!("sidecar~{ip}~load-{i}.{namespace}~{namespace}.svc.cluster.local")
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

/// Node metadata: `NAMESPACE`, `LABELS` that put proxy `i` in class `i % classes`, and
/// `INTERCEPTION_MODE: NONE` for proxies without interception.
fn metadata(i: usize, namespace: &str, cfg: &LoadConfig) -> Struct {
    let labels = Struct {
        fields: [
            ("app".to_string(), string("load")),
            (
                "load-class".to_string(),
                string(&format!("c{}", i % cfg.classes.max(1))),
            ),
        ]
        .into(),
    };
    let mut meta = Struct {
        fields: [
            ("NAMESPACE".to_string(), string(namespace)),
            (
                "LABELS".to_string(),
                Value {
                    kind: Some(Kind::StructValue(labels)),
                },
            ),
        ]
        .into(),
    };
    if cfg.interception == Interception::None {
        meta.fields
            .insert("INTERCEPTION_MODE".to_string(), string("NONE"));
    }
    meta
}

/// Runs the phases described in the module documentation. `mesh` is needed for the no-op check
/// and for changes; the files it touched are restored at the end.
pub async fn run(cfg: &LoadConfig, mut mesh: Option<&mut Mesh>) -> Result<Report, LoadError> {
    if (cfg.noop || cfg.changes.is_some()) && mesh.is_none() {
        return Err(LoadError::NoMesh);
    }
    // Read once: every proxy's first request carries it (a shared handle, not a copy each).
    let envoy = envoy_node::EnvoyNode::embedded()?.encoded().clone();
    if let Some(debug) = cfg.debug_address {
        wait_ready(debug, cfg.timeout).await?;
    }
    let n = cfg.proxies;
    let mem_before = cfg.server_pid.and_then(read_memory);
    let cpu_before = cpu_now(cfg);
    let addr = cfg.xds_address;
    let mut shared: Vec<grpc::Conn> = Vec::new();
    if let Some(c) = cfg.connections.filter(|c| *c < n) {
        let deadline = Instant::now() + cfg.timeout;
        for _ in 0..c.max(1) {
            let conn = connect(addr, deadline)
                .await
                .map_err(|e| LoadError::Address(addr, e))?;
            shared.push(conn);
        }
    }
    let tracker = Arc::new(Tracker::new(n));
    let names = Arc::new(proxy::Names::default());
    let stats: Vec<Arc<ProxyStats>> = (0..n).map(|_| Arc::default()).collect();
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (i, st) in stats.iter().enumerate() {
        let delay = if n > 1 {
            cfg.connect_over.mul_f64(i as f64 / (n - 1) as f64)
        } else {
            Duration::ZERO
        };
        let conn = shared.get(i % shared.len().max(1)).cloned();
        let (tracker, names, nack, envoy, decode) = (
            tracker.clone(),
            names.clone(),
            cfg.nack,
            envoy.clone(),
            cfg.decode,
        );
        let namespace = cfg.proxy_namespace(i);
        let (protocol, id, meta, locality, st) = (
            cfg.protocol,
            node_id(i, &namespace, cfg.interception),
            metadata(i, &namespace, cfg),
            cfg.proxy_locality(i),
            st.clone(),
        );
        let deadline = start + cfg.connect_over + cfg.timeout;
        tasks.spawn(async move {
            tokio::time::sleep_until((start + delay).into()).await;
            st.connect_ns
                .store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
            let result = loop {
                let attempt = async {
                    let conn = match conn.clone() {
                        Some(c) => c,
                        None => connect(addr, deadline).await?,
                    };
                    let state = proxy::State::new(
                        i,
                        st.clone(),
                        tracker.clone(),
                        names.clone(),
                        nack,
                        decode,
                        start,
                    );
                    let node = proxy::OwnNode {
                        id: &id,
                        metadata: &meta,
                        locality: locality.as_ref(),
                    };
                    proxy::run(conn, protocol, node, &envoy, state).await
                }
                .await;
                // Like Envoy, retry a stream the server refused or reset before it opened
                // (a burst of connects can overflow the accept queue); never one that ran.
                if attempt.is_err()
                    && !st.connected.load(Ordering::Relaxed)
                    && Instant::now() + Duration::from_millis(200) < deadline
                {
                    st.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                break attempt;
            };
            if let Err(e) = result {
                st.failed.store(true, Ordering::Relaxed);
                st.complete.store(false, Ordering::Relaxed);
                let mut slot = st.error.lock().unwrap_or_else(|e| e.into_inner());
                *slot = Some(e);
            }
        });
    }

    // Phase 1: sync.
    let deadline = start + cfg.connect_over + cfg.timeout;
    loop {
        let done = stats
            .iter()
            .filter(|s| {
                s.complete_ns.load(Ordering::Relaxed) != 0 || s.failed.load(Ordering::Relaxed)
            })
            .count();
        if done == n || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sync = report::sync_report(&stats, start);
    // A progress line on stderr (the report goes to stdout): lets a profiler or a watcher
    // separate the sync phase from the changes that follow.
    eprintln!(
        "meshpilot-load: sync phase over after {:.0} ms: {} of {n} proxies complete",
        start.elapsed().as_secs_f64() * 1e3,
        sync.complete
    );
    let mem_synced = cfg.server_pid.and_then(read_memory);
    let cpu_synced = cpu_now(cfg);

    // Phase 2: a recompute that changes nothing.
    let noop = match (cfg.noop, mesh.as_deref_mut()) {
        (true, Some(mesh)) => Some(noop_check(cfg, mesh, &stats).await?),
        _ => None,
    };

    // Phase 3: changes.
    let change = match (cfg.changes, mesh.as_deref_mut()) {
        (Some(plan), Some(mesh)) => Some(changes(cfg, plan, mesh, &stats, &tracker).await?),
        _ => None,
    };
    if change.is_some() {
        eprintln!(
            "meshpilot-load: changes over after {:.0} ms",
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    if !cfg.hold.is_zero() {
        tokio::time::sleep(cfg.hold).await;
    }
    let mem_end = cfg.server_pid.and_then(read_memory);
    let cpu_end = cpu_now(cfg);
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    if let Some(mesh) = mesh {
        mesh.restore()?;
    }
    let mut report = Report::new(
        cfg,
        sync,
        noop,
        change,
        &stats,
        cfg.server_pid.map(|pid| ServerMemory {
            pid,
            before: mem_before,
            synced: mem_synced,
            end: mem_end,
        }),
    );
    report.cpu = CpuReport::between(cpu_before, cpu_synced, cpu_end);
    Ok(report)
}

/// Opens one HTTP/2 connection, retrying until `deadline` (a server accepting thousands of
/// connections at once may refuse some for a moment).
async fn connect(addr: SocketAddr, deadline: Instant) -> Result<grpc::Conn, String> {
    loop {
        match grpc::connect(addr).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() + Duration::from_millis(100) >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Responses each proxy has received so far.
fn responses(stats: &[Arc<ProxyStats>]) -> Vec<u64> {
    stats
        .iter()
        .map(|s| s.responses.load(Ordering::Relaxed))
        .collect()
}

fn total_bytes(stats: &[Arc<ProxyStats>]) -> u64 {
    stats.iter().map(|s| s.bytes.load(Ordering::Relaxed)).sum()
}

async fn noop_check(
    cfg: &LoadConfig,
    mesh: &mut Mesh,
    stats: &[Arc<ProxyStats>],
) -> Result<NoopReport, LoadError> {
    let pushes_before = match cfg.debug_address {
        Some(d) => pushes(d).await,
        None => None,
    };
    let before = total_bytes(stats);
    mesh.touch_noop()?;
    let started = Instant::now();
    let mut confirmed = None;
    if let (Some(d), Some(p0)) = (cfg.debug_address, pushes_before) {
        confirmed = Some(false);
        while started.elapsed() < cfg.timeout {
            if pushes(d).await.is_some_and(|p| p > p0) {
                confirmed = Some(true);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Whatever the recompute sends arrives within moments of it; wait a generous window.
    let window = Duration::from_secs(1);
    let unconfirmed_wait = Duration::from_secs(2);
    tokio::time::sleep(if confirmed == Some(true) {
        window
    } else {
        unconfirmed_wait
    })
    .await;
    Ok(NoopReport {
        recompute_confirmed: confirmed,
        bytes: total_bytes(stats) - before,
        waited_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

async fn changes(
    cfg: &LoadConfig,
    plan: ChangePlan,
    mesh: &mut Mesh,
    stats: &[Arc<ProxyStats>],
    tracker: &Tracker,
) -> Result<ChangeReport, LoadError> {
    let bytes_before = total_bytes(stats);
    let responses_before = responses(stats);
    let started = Instant::now();
    let interval = if plan.rate > 0.0 {
        Duration::from_secs_f64(1.0 / plan.rate)
    } else {
        Duration::ZERO
    };
    let mut applied = 0;
    for k in 0..plan.count {
        tokio::time::sleep_until((started + interval.mul_f64(k as f64)).into()).await;
        let planned = mesh.plan(plan.kind)?;
        // Registered before the write: every response that could carry it is checked.
        tracker.register(planned.expect.clone());
        mesh.apply(&planned)?;
        applied += 1;
    }
    let writes_done = started.elapsed();
    let pace = report::Pace {
        before: responses_before,
        after: responses(stats),
        window: writes_done,
    };
    let deadline = Instant::now() + cfg.timeout;
    let all = tracker.all();
    let mut cursor = 0;
    while Instant::now() < deadline {
        let live: Vec<usize> = (0..stats.len())
            .filter(|&i| !stats[i].failed.load(Ordering::Relaxed))
            .collect();
        while cursor < all.len() {
            let lat = all[cursor].latencies();
            if live.iter().all(|&i| lat[i].is_some()) {
                cursor += 1;
            } else {
                break;
            }
        }
        if cursor == all.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bytes = total_bytes(stats) - bytes_before;
    if let Some(path) = &cfg.per_change_csv {
        std::fs::write(path, report::per_change_csv(&all)).map_err(|source| LoadError::Write {
            path: path.clone(),
            source,
        })?;
    }
    let mut report = report::change_report(
        plan,
        applied,
        &all,
        bytes,
        stats.len(),
        writes_done,
        started.elapsed(),
    );
    report.pace = report::PaceReport::of(&pace, applied);
    Ok(report)
}

/// Waits for `GET /ready` to answer 200.
async fn wait_ready(debug: SocketAddr, timeout: Duration) -> Result<(), LoadError> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Some((200, _)) = http_get(debug, "/ready").await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(LoadError::NotReady(debug, timeout))
}

/// The server's recompute count from `/debug/pushz`.
async fn pushes(debug: SocketAddr) -> Option<u64> {
    let (status, body) = http_get(debug, "/debug/pushz").await?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v.get("pushes")?.as_u64()
}

/// A minimal HTTP/1.0 GET (the debug server is plain HTTP on loopback): status and body.
async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .ok()
        .flatten()
}

/// User + system CPU time of a process so far, in milliseconds (`/proc/PID/stat`, assuming the
/// usual 100 ticks per second).
pub fn read_cpu_ms(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 10)
}

/// CPU milliseconds of the server (when its pid is known) and of this process.
fn cpu_now(cfg: &LoadConfig) -> CpuReading {
    CpuReading {
        server_ms: cfg.server_pid.and_then(read_cpu_ms),
        client_ms: read_cpu_ms(std::process::id()),
    }
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
pub fn read_memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}
