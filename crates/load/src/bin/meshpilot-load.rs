//! `meshpilot-load`: generates benchmark meshes (`gen`) and drives many simulated proxies against
//! an xDS server (`run`), printing a table or JSON report. See BENCHMARKS.md for the workloads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use meshpilot::app::Server;
use meshpilot::config::ServeConfig;
use meshpilot_load::mesh::{ChangeKind, EndpointKind, Mesh, MeshSpec};
use meshpilot_load::{
    self as load, ChangePlan, Decode, Interception, LoadConfig, NackRule, Protocol,
};
use meshpilot_snapshot::XdsType;

#[derive(Debug, Parser)]
#[command(
    name = "meshpilot-load",
    version,
    about = "Mesh generator and xDS load tool"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Write a generated mesh (manifests and .mesh.json) into a directory.
    Gen(GenArgs),
    /// Connect simulated proxies to a server, optionally check a no-op recompute and apply
    /// changes, and report.
    Run(Box<RunArgs>),
}

#[derive(Debug, Args)]
struct GenArgs {
    /// Directory to write (created; use a fresh one).
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 100)]
    services: usize,
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    #[arg(long, default_value_t = 10)]
    namespaces: usize,
    #[arg(long, default_value_t = 0)]
    virtual_services: usize,
    #[arg(long, default_value_t = 0)]
    destination_rules: usize,
    #[arg(long, value_enum, default_value = "slices")]
    endpoint_kind: EndpointKind,
    /// The first K namespaces get DestinationRules of their own for 10 services of the next
    /// namespace (so their clients get cluster sets of their own).
    #[arg(long, default_value_t = 0)]
    namespace_rules: usize,
    /// Spread the endpoints over L zones (two regions from L = 2; Pod label
    /// `topology.istio.io/locality`) and give every service outlier detection, so its clusters
    /// balance by locality. Needs `--endpoint-kind pods`.
    #[arg(long, default_value_t = 0)]
    localities: usize,
    /// One Sidecar per namespace with egress to `./*` and `istio-system/*` only.
    #[arg(long)]
    sidecars: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TypeArg {
    Cds,
    Eds,
    Lds,
    Rds,
}

impl From<TypeArg> for XdsType {
    fn from(t: TypeArg) -> XdsType {
        match t {
            TypeArg::Cds => XdsType::Cluster,
            TypeArg::Eds => XdsType::Endpoint,
            TypeArg::Lds => XdsType::Listener,
            TypeArg::Rds => XdsType::Route,
        }
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The server's ADS address (loopback). Not needed with --serve.
    #[arg(long, required_unless_present = "serve")]
    xds_address: Option<SocketAddr>,
    /// The server's debug address: /ready is awaited, /debug/pushz confirms the no-op recompute.
    #[arg(long)]
    debug_address: Option<SocketAddr>,
    /// The server's pid, for RSS readings from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Start meshpilot in this process on --mesh-dir instead (convenience; figures then include
    /// the load tool's own work and memory).
    #[arg(long, requires = "mesh_dir")]
    serve: bool,
    /// Debounce of the in-process server (milliseconds).
    #[arg(long, default_value_t = 100)]
    serve_debounce_ms: u64,
    /// The generated mesh the server reads (needed for --noop and --change).
    #[arg(long)]
    mesh_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 100)]
    proxies: usize,
    #[arg(long, value_enum, default_value = "sotw")]
    protocol: Protocol,
    /// HTTP/2 connections shared by the proxies (default: one per proxy, like Envoy).
    #[arg(long)]
    connections: Option<usize>,
    /// Spread the connects evenly over this many milliseconds (0: all at once).
    #[arg(long, default_value_t = 0)]
    connect_over_ms: u64,
    /// Distinct proxy classes (1: all proxies share one class and one snapshot).
    #[arg(long, default_value_t = 1)]
    classes: usize,
    /// Namespace of the proxies (with --namespaces 0 or 1).
    #[arg(long, default_value = "ns-0")]
    namespace: String,
    /// Spread the proxies round-robin over the generated namespaces `ns-0` … `ns-{M-1}`.
    #[arg(long, default_value_t = 0)]
    namespaces: usize,
    /// Spread the proxies' node locality round-robin over the L zones `gen --localities L`
    /// writes (`region-R/zone-Z`).
    #[arg(long, default_value_t = 0)]
    localities: usize,
    /// How the proxies say traffic reaches them: `redirect` (sidecars behind iptables, sharing
    /// listeners) or `none` (`INTERCEPTION_MODE: NONE`, a distinct 10/8 IP per proxy, so each
    /// proxy's listeners bind its own address).
    #[arg(long, value_enum, default_value = "redirect")]
    interception: Interception,
    /// How much of each resource the proxies decode: `names` (what following the xDS chain
    /// needs, cheaply) or `full` (every resource into its Envoy type, as Envoy does; a resource
    /// that fails is an error).
    #[arg(long, value_enum, default_value = "names")]
    decode: Decode,
    /// NACK responses of this type ...
    #[arg(long, value_enum, requires = "nack_every")]
    nack_type: Option<TypeArg>,
    /// ... every K-th one on each stream.
    #[arg(long, requires = "nack_type")]
    nack_every: Option<u64>,
    /// Bound of every wait, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Check that a recompute which changes nothing sends nothing.
    #[arg(long)]
    noop: bool,
    /// Change workload.
    #[arg(long, value_enum)]
    change: Option<ChangeKind>,
    /// Number of changes.
    #[arg(long, default_value_t = 1)]
    changes: usize,
    /// Changes per second.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Keep the streams open, idle, this many seconds at the end (memory readings).
    #[arg(long, default_value_t = 0)]
    hold: u64,
    /// Also write each change's latencies to this CSV file (`change,first_ack_ms,all_acked_ms`).
    #[arg(long)]
    per_change_csv: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    meshpilot_telemetry::init();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("meshpilot-load: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ok(false): the run completed but something did not converge.
fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Cmd::Gen(a) => {
            let spec = MeshSpec {
                services: a.services,
                endpoints: a.endpoints,
                namespaces: a.namespaces.max(1),
                virtual_services: a.virtual_services.min(a.services),
                destination_rules: a.destination_rules.min(a.services),
                endpoint_kind: a.endpoint_kind,
                namespace_rules: a.namespace_rules.min(a.namespaces.max(1)),
                localities: a.localities,
                sidecars: a.sidecars,
            };
            Mesh::new(spec, &a.dir).write()?;
            eprintln!("wrote {}", a.dir.display());
            Ok(true)
        }
        Cmd::Run(a) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("load")
                .build()
                .context("start the tokio runtime")?;
            runtime.block_on(run_load(*a))
        }
    }
}

async fn run_load(a: RunArgs) -> anyhow::Result<bool> {
    let mut mesh = match &a.mesh_dir {
        Some(d) => Some(Mesh::open(d).with_context(|| format!("open mesh {}", d.display()))?),
        None => None,
    };
    let server = if a.serve {
        let dir = a.mesh_dir.clone().context("--serve needs --mesh-dir")?;
        let mut cfg = ServeConfig::for_dirs(vec![dir]);
        cfg.debounce = Duration::from_millis(a.serve_debounce_ms);
        cfg.debounce_max = cfg.debounce.max(Duration::from_secs(1));
        Some(Server::start(cfg).await?)
    } else {
        None
    };
    let xds = match (&server, a.xds_address) {
        (Some(s), _) => s.xds_addr,
        (None, Some(x)) => x,
        (None, None) => anyhow::bail!("--xds-address or --serve is required"),
    };
    let mut cfg = LoadConfig::new(xds, a.proxies);
    cfg.debug_address = server.as_ref().map(|s| s.debug_addr).or(a.debug_address);
    cfg.server_pid = if a.serve {
        Some(std::process::id())
    } else {
        a.server_pid
    };
    cfg.protocol = a.protocol;
    cfg.connections = a.connections;
    cfg.connect_over = Duration::from_millis(a.connect_over_ms);
    cfg.classes = a.classes.max(1);
    cfg.namespace = a.namespace;
    cfg.namespaces = a.namespaces;
    cfg.localities = a.localities;
    cfg.interception = a.interception;
    cfg.decode = a.decode;
    cfg.nack = match (a.nack_type, a.nack_every) {
        (Some(t), Some(every)) => Some(NackRule {
            t: t.into(),
            every: every.max(1),
        }),
        _ => None,
    };
    cfg.timeout = Duration::from_secs(a.timeout);
    cfg.noop = a.noop;
    cfg.changes = a.change.map(|kind| ChangePlan {
        kind,
        count: a.changes,
        rate: a.rate,
    });
    cfg.hold = Duration::from_secs(a.hold);
    cfg.per_change_csv = a.per_change_csv;
    let report = load::run(&cfg, mesh.as_mut()).await;
    if let Some(s) = server {
        s.stop().await;
    }
    let report = report?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    if report.decode_failures > 0 {
        eprintln!(
            "meshpilot-load: error: {} of the resources received did not decode as their \
             Envoy type (--decode full)",
            report.decode_failures
        );
    }
    Ok(report.ok())
}
