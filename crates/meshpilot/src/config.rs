//! Command-line flags (each also from an environment variable) → validated configuration.

use meshpilot_model::{ExportDefaults, OutboundTrafficMode};
use meshpilot_source::files::InputLimits;
use meshpilot_source::kube::KubeConfig;
use meshpilot_source::mesh_config::{self, MeshConfig, MeshConfigError};
use meshpilot_xds::ServeLimits;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

/// meshpilot: an xDS control plane serving Istio routing objects to Envoy.
#[derive(Debug, Parser)]
#[command(name = "meshpilot", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch manifests and serve them to Envoy over ADS (SotW and Delta).
    Serve(ServeArgs),
    /// Print an Envoy bootstrap (JSON, which Envoy reads as YAML) for one proxy.
    Bootstrap(BootstrapArgs),
    /// Run the node agent beside a stock Envoy: the workload certificate over SDS, ADS proxied
    /// to the control plane's secure port with the pod's token (what Istio's pilot-agent does).
    Agent(crate::agent::AgentArgs),
    /// Check a directory of manifests as `serve` would, without serving it: every finding with
    /// Istio's message code where there is one; exit status 79 when any reaches the threshold
    /// (like `istioctl analyze`).
    Analyze(crate::analyze::AnalyzeArgs),
    /// Print every connected proxy with, per xDS type, SYNCED / STALE / NOT SENT / ERROR (like
    /// `istioctl proxy-status`), and the errors of rejected configuration.
    ProxyStatus(ProxyStatusArgs),
    /// Print what a proxy was sent, as readable tables (like `istioctl proxy-config`).
    ProxyConfig(ProxyConfigArgs),
}

/// Where a running `meshpilot serve` answers its debug HTTP.
#[derive(Debug, Clone, Args)]
pub struct DebugTarget {
    /// The debug address of the running server (its `serve --debug-address`).
    #[arg(
        long,
        env = "MESHPILOT_DEBUG_ADDRESS",
        default_value = "127.0.0.1:15014"
    )]
    pub debug_address: SocketAddr,
}

#[derive(Debug, Clone, Args)]
pub struct ProxyStatusArgs {
    #[command(flatten)]
    pub target: DebugTarget,
}

/// What `proxy-config` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigKind {
    /// Clusters: service, port, subset, type, status.
    Clusters,
    /// Listeners: address, port, where traffic goes.
    Listeners,
    /// Routes: virtual hosts, matches and destinations.
    Routes,
    /// Endpoints: address, health, weight, cluster.
    Endpoints,
}

/// Output format of `proxy-config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns.
    Table,
    /// The config_dump JSON of that type.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ProxyConfigArgs {
    #[arg(value_enum)]
    pub kind: ConfigKind,
    /// The proxy's node id, as `proxy-status` lists it.
    pub proxy_id: String,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub target: DebugTarget,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Directory of Kubernetes/Istio YAML or JSON manifests, read recursively and watched for
    /// changes. Repeatable.
    #[arg(
        long = "config-dir",
        env = "MESHPILOT_CONFIG_DIR",
        value_delimiter = ','
    )]
    pub config_dirs: Vec<PathBuf>,
    /// Watch the Kubernetes API server: the current kubeconfig context (`KUBECONFIG` or
    /// ~/.kube/config), else the in-cluster service account. Combinable with --config-dir.
    #[arg(long, env = "MESHPILOT_KUBE")]
    pub kube: bool,
    /// With --kube: watch namespaced kinds only in these namespaces (comma-separated, filtered
    /// by the API server); every namespace when absent.
    #[arg(long, env = "MESHPILOT_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Address of the gRPC ADS server.
    #[arg(long, env = "MESHPILOT_XDS_ADDRESS", default_value = "0.0.0.0:15010")]
    pub xds_address: SocketAddr,
    /// Address of the debug HTTP server (/ready, /healthz, /debug/...). Loopback by default.
    #[arg(
        long,
        env = "MESHPILOT_DEBUG_ADDRESS",
        default_value = "127.0.0.1:15014"
    )]
    pub debug_address: SocketAddr,
    /// A file holding the bearer token the `/debug` endpoints require
    /// (`authorization: Bearer TOKEN`). Required when --debug-address is not a loopback
    /// address; /ready, /healthz and /metrics stay open for probes and scrapes.
    #[arg(long, env = "MESHPILOT_DEBUG_TOKEN_FILE")]
    pub debug_token_file: Option<PathBuf>,
    /// DNS domain of the cluster: short host `reviews` in `default` is
    /// `reviews.default.svc.DOMAIN`.
    #[arg(long, env = "MESHPILOT_DOMAIN", default_value = "cluster.local")]
    pub domain: String,
    /// The mesh configuration: a MeshConfig YAML file, as istiod's `--meshConfig` reads it
    /// (camelCase fields). Read at start: `outboundTrafficPolicy.mode` and
    /// `defaultServiceExportTo`, `defaultVirtualServiceExportTo`,
    /// `defaultDestinationRuleExportTo`; every other field is warned about and ignored. A file
    /// that cannot be read, or a field of the wrong type or value, stops the start. Without it
    /// (and with --kube) the `mesh` key of ConfigMap `istio-system/istio` is read, when present.
    #[arg(long, env = "MESHPILOT_MESH_CONFIG")]
    pub mesh_config: Option<PathBuf>,
    /// The mesh-wide `outboundTrafficPolicy.mode`: `ALLOW_ANY` passes traffic for hosts the
    /// registry does not know through, `REGISTRY_ONLY` refuses it. When given, it wins over
    /// the mesh configuration's; when neither sets it, ALLOW_ANY. A Sidecar's own
    /// `outboundTrafficPolicy` overrides both.
    #[arg(
        long,
        env = "MESHPILOT_OUTBOUND_TRAFFIC_POLICY",
        value_parser = parse_outbound_mode
    )]
    pub outbound_traffic_policy: Option<OutboundTrafficMode>,
    /// Quiet period after a change before recomputing (milliseconds). The file watcher reads
    /// a file once its save ends (closed after writing, or renamed into place).
    #[arg(long, env = "MESHPILOT_DEBOUNCE_MS", default_value_t = 100)]
    pub debounce_ms: u64,
    /// Longest a stream of changes can delay a recompute (milliseconds).
    #[arg(long, env = "MESHPILOT_DEBOUNCE_MAX_MS", default_value_t = 1000)]
    pub debounce_max_ms: u64,
    /// Push a change at once when nothing changed and nothing was pushed for --debounce-ms
    /// before it; the changes that follow it are debounced as usual, so a burst costs one push
    /// at once and one after the quiet period. A removal always waits for quiet (it may be the
    /// first step of a replacement). `false` keeps istiod's timing: every change waits for
    /// --debounce-ms of quiet.
    #[arg(
        long,
        env = "MESHPILOT_DEBOUNCE_LEADING",
        default_value_t = true,
        action = ArgAction::Set,
        value_name = "true|false"
    )]
    pub debounce_leading: bool,
    /// Largest manifest file read (bytes); a larger one is refused and its previous objects
    /// keep serving.
    #[arg(long, env = "MESHPILOT_MAX_FILE_BYTES", default_value_t = InputLimits::default().max_file_bytes)]
    pub max_file_bytes: u64,
    /// Most YAML documents in one file; a file with more is refused whole.
    #[arg(long, env = "MESHPILOT_MAX_DOCUMENTS_PER_FILE", default_value_t = InputLimits::default().max_documents_per_file)]
    pub max_documents_per_file: u64,
    /// Most YAML nodes (mappings, sequences, scalars; aliases expanded) in one document; a
    /// larger document is refused, the file's other documents still load.
    #[arg(long, env = "MESHPILOT_MAX_YAML_NODES", default_value_t = InputLimits::default().max_nodes_per_document)]
    pub max_yaml_nodes: u64,
    /// Deepest nesting of mappings and sequences in one document (guards the stack; at most
    /// 64).
    #[arg(long, env = "MESHPILOT_MAX_YAML_DEPTH", default_value_t = InputLimits::default().max_depth)]
    pub max_yaml_depth: u64,
    /// Most aliases (`*name`) and anchors in one document (guards against alias bombs).
    #[arg(long, env = "MESHPILOT_MAX_YAML_ALIASES", default_value_t = InputLimits::default().max_aliases_per_document)]
    pub max_yaml_aliases: u64,
    #[command(flatten)]
    pub ca: crate::ca::CaArgs,
    /// Serve the config directories at start-up even when some files cannot be read or
    /// parsed, leaving out what they define. Off (the default), nothing is served and /ready
    /// stays 503 until one load of the directories is clean, so a restart with a broken file
    /// never takes config from the proxies that reconnect; later errors keep the last good
    /// version either way.
    #[arg(long, env = "MESHPILOT_SERVE_PARTIAL_CONFIG")]
    pub serve_partial_config: bool,
    /// Send gateways their TLS secrets (`credentialName`, SDS) on the plaintext xDS port too.
    /// Off by default: that port verifies no identity, so anyone reaching it could claim a
    /// gateway's namespace and read its private keys. Only for loopback tests and trusted
    /// networks; on the secure port a stream receives the secrets of its own namespace.
    #[arg(long, env = "MESHPILOT_PLAINTEXT_SECRETS")]
    pub plaintext_secrets: bool,
    /// Connections the kernel queues on the xDS port before they are accepted (capped by
    /// net.core.somaxconn): thousands of proxies reconnecting at once after a restart must not
    /// overflow it.
    #[arg(long, env = "MESHPILOT_XDS_LISTEN_BACKLOG", default_value_t = ServeLimits::default().listen_backlog)]
    pub xds_listen_backlog: u32,
    /// Open connections at most on each xDS port (the plaintext one and, with the CA, the
    /// secure one); more are closed at once (and counted in
    /// meshpilot_xds_refused{limit="connections"}).
    #[arg(long, env = "MESHPILOT_XDS_MAX_CONNECTIONS", default_value_t = ServeLimits::default().max_connections)]
    pub xds_max_connections: usize,
    /// Resource names one xDS request may carry; a request with more ends its stream with
    /// RESOURCE_EXHAUSTED (counted in meshpilot_xds_refused{limit="resource_names"}).
    #[arg(long, env = "MESHPILOT_MAX_RESOURCE_NAMES_PER_REQUEST", default_value_t = ServeLimits::default().max_resource_names)]
    pub max_resource_names_per_request: usize,
    /// Bytes one xDS request may have; a larger one ends its stream with RESOURCE_EXHAUSTED
    /// (counted in meshpilot_xds_refused{limit="message_size"}).
    #[arg(long, env = "MESHPILOT_XDS_MAX_MESSAGE_BYTES", default_value_t = ServeLimits::default().max_message_bytes)]
    pub xds_max_message_bytes: usize,
    /// Concurrent streams one HTTP/2 connection may open (advertised in its SETTINGS; HTTP/2
    /// refuses more with REFUSED_STREAM). Envoy opens one ADS stream per connection.
    #[arg(long, env = "MESHPILOT_XDS_MAX_STREAMS_PER_CONNECTION", default_value_t = ServeLimits::default().max_streams_per_connection)]
    pub xds_max_streams_per_connection: u32,
}

impl ServeArgs {
    /// Checks the flags and produces the configuration the server runs with.
    pub fn into_config(self) -> Result<ServeConfig, ConfigError> {
        if self.config_dirs.is_empty() && !self.kube {
            return Err(ConfigError::NoSource);
        }
        if !self.kube && !self.namespaces.is_empty() {
            return Err(ConfigError::NamespacesWithoutKube);
        }
        let mut namespaces: Vec<String> = Vec::new();
        for ns in self.namespaces {
            let valid = !ns.is_empty()
                && ns.len() <= 63
                && ns
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !ns.starts_with('-')
                && !ns.ends_with('-');
            if !valid {
                return Err(ConfigError::Namespace(ns));
            }
            if !namespaces.contains(&ns) {
                namespaces.push(ns);
            }
        }
        for d in &self.config_dirs {
            if !d.is_dir() {
                return Err(ConfigError::NotADirectory(d.clone()));
            }
        }
        if self.domain.is_empty() || self.domain.starts_with('.') {
            return Err(ConfigError::Domain(self.domain));
        }
        if self.debounce_max_ms < self.debounce_ms {
            return Err(ConfigError::Debounce(
                self.debounce_ms,
                self.debounce_max_ms,
            ));
        }
        if self.max_yaml_depth == 0 || self.max_yaml_depth > MAX_YAML_DEPTH {
            return Err(ConfigError::Depth(self.max_yaml_depth));
        }
        let ca = self.ca.into_settings(&self.domain, self.kube)?;
        let mesh = self
            .mesh_config
            .as_deref()
            .map(mesh_config::read_file)
            .transpose()?;
        let debug_token = match &self.debug_token_file {
            Some(path) => {
                let token = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::DebugToken(path.clone(), e.to_string()))?;
                let token = token.trim().to_string();
                if token.is_empty() {
                    return Err(ConfigError::DebugToken(path.clone(), "empty".to_string()));
                }
                Some(token)
            }
            None if !self.debug_address.ip().is_loopback() => {
                return Err(ConfigError::DebugExposed(self.debug_address));
            }
            None => None,
        };
        Ok(ServeConfig {
            debug_token,
            ca,
            input_limits: InputLimits {
                max_file_bytes: self.max_file_bytes,
                max_documents_per_file: self.max_documents_per_file,
                max_nodes_per_document: self.max_yaml_nodes,
                max_depth: self.max_yaml_depth,
                max_aliases_per_document: self.max_yaml_aliases,
            },
            config_dirs: self.config_dirs,
            kube: self.kube.then_some(KubeConfig { namespaces }),
            xds_address: self.xds_address,
            debug_address: self.debug_address,
            domain: self.domain,
            outbound_mode: self.outbound_traffic_policy,
            mesh,
            debounce: Duration::from_millis(self.debounce_ms),
            debounce_max: Duration::from_millis(self.debounce_max_ms),
            debounce_leading: self.debounce_leading,
            serve_partial_config: self.serve_partial_config,
            plaintext_secrets: self.plaintext_secrets,
            xds_limits: ServeLimits {
                listen_backlog: self.xds_listen_backlog.max(1),
                max_connections: self.xds_max_connections.max(1),
                max_resource_names: self.max_resource_names_per_request,
                max_message_bytes: self.xds_max_message_bytes.max(1024),
                max_streams_per_connection: self.xds_max_streams_per_connection.max(1),
            },
        })
    }
}

/// The deepest `--max-yaml-depth` allowed: parsing recurses once per level on a thread with
/// the default 2 MiB stack, which a debug build overflows below 100 levels. Kubernetes and
/// Istio objects nest less than 20 deep, so the flag is there to lower it.
const MAX_YAML_DEPTH: u64 = 64;

/// A flag combination that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither `--config-dir` nor another source was given.
    #[error(
        "no configuration source: pass --config-dir DIR (or MESHPILOT_CONFIG_DIR) and/or --kube"
    )]
    NoSource,
    /// `--namespaces` was given without `--kube`.
    #[error("--namespaces needs --kube")]
    NamespacesWithoutKube,
    /// A `--namespaces` entry is not a Kubernetes namespace name.
    #[error("--namespaces {0:?}: not a namespace name (lowercase letters, digits, '-')")]
    Namespace(String),
    /// A `--config-dir` is missing or not a directory.
    #[error("--config-dir {0}: not a directory")]
    NotADirectory(PathBuf),
    /// `--domain` is empty or malformed.
    #[error("--domain {0:?}: expected a DNS domain such as cluster.local")]
    Domain(String),
    /// `--debounce-max-ms` is shorter than `--debounce-ms`.
    #[error("--debounce-ms {0} is longer than --debounce-max-ms {1}")]
    Debounce(u64, u64),
    /// `--max-yaml-depth` is 0 or deeper than parsing can recurse safely.
    #[error("--max-yaml-depth {0}: expected 1 to {MAX_YAML_DEPTH}")]
    Depth(u64),
    /// `--debug-address` is not loopback and no token protects it.
    #[error(
        "--debug-address {0} is reachable beyond this host: give --debug-token-file (the /debug \
         endpoints then require 'authorization: Bearer TOKEN'), or bind a loopback address"
    )]
    DebugExposed(SocketAddr),
    /// `--mesh-config` cannot be read, or holds a field of the wrong type or value.
    #[error(transparent)]
    MeshConfig(#[from] MeshConfigError),
    /// `--debug-token-file` cannot be read or is empty.
    #[error("--debug-token-file {0}: {1}")]
    DebugToken(PathBuf, String),
    /// The certificate authority's flags do not fit together.
    #[error(transparent)]
    Ca(#[from] crate::ca::CaConfigError),
}

/// What `serve` runs with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub config_dirs: Vec<PathBuf>,
    /// `Some` with `--kube`.
    pub kube: Option<KubeConfig>,
    pub xds_address: SocketAddr,
    pub debug_address: SocketAddr,
    pub domain: String,
    /// `--outbound-traffic-policy`, when given (it wins over the mesh configuration's).
    pub outbound_mode: Option<OutboundTrafficMode>,
    /// The mesh configuration read from `--mesh-config`, when given.
    pub mesh: Option<MeshConfig>,
    pub debounce: Duration,
    pub debounce_max: Duration,
    /// Push a change after a quiet period at once (`--debounce-leading`).
    pub debounce_leading: bool,
    /// The size limits on manifest files.
    pub input_limits: InputLimits,
    /// The certificate authority, when `--ca-dir` is given.
    pub ca: Option<crate::ca::CaSettings>,
    /// The bearer token `/debug` requires (`--debug-token-file`).
    pub debug_token: Option<String>,
    /// Serve the files at start-up even if some do not load (`--serve-partial-config`).
    pub serve_partial_config: bool,
    /// Send TLS secrets on the plaintext xDS port too (`--plaintext-secrets`).
    pub plaintext_secrets: bool,
    /// The xDS server's backlog and limits.
    pub xds_limits: ServeLimits,
}

impl ServeConfig {
    /// A configuration for tests and embedding: loopback, ephemeral ports, short debounce.
    pub fn for_dirs(config_dirs: Vec<PathBuf>) -> ServeConfig {
        ServeConfig {
            config_dirs,
            kube: None,
            xds_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            debug_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            domain: "cluster.local".to_string(),
            outbound_mode: None,
            mesh: None,
            debounce: Duration::from_millis(50),
            debounce_max: Duration::from_millis(500),
            debounce_leading: true,
            input_limits: InputLimits::default(),
            ca: None,
            debug_token: None,
            serve_partial_config: false,
            plaintext_secrets: false,
            xds_limits: ServeLimits::default(),
        }
    }
}

/// The mesh-wide settings served: `--outbound-traffic-policy` over the mesh configuration's
/// `outboundTrafficPolicy.mode` (ALLOW_ANY when neither sets it), and its `exportTo`
/// defaults.
pub fn mesh_settings(
    flag: Option<OutboundTrafficMode>,
    mesh: Option<&MeshConfig>,
) -> (OutboundTrafficMode, ExportDefaults) {
    let mode = flag
        .or(mesh.and_then(|m| m.outbound_mode))
        .unwrap_or_default();
    let defaults = mesh.map(|m| m.export_defaults.clone()).unwrap_or_default();
    (mode, defaults)
}

/// Traffic interception mode written into a bootstrap's node metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InterceptionArg {
    /// Istio's iptables redirection (listeners do not bind; 15001 virtual outbound).
    Redirect,
    /// No redirection: every listener binds the proxy's own IP.
    None,
}

#[derive(Debug, Clone, Args)]
pub struct BootstrapArgs {
    /// Istio node id: TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local (TYPE sidecar|router).
    #[arg(long)]
    pub node_id: String,
    /// Workload label (repeatable), sent as node metadata LABELS.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Namespace (node metadata NAMESPACE); defaults to the one in the node id.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Interception mode (node metadata INTERCEPTION_MODE).
    #[arg(long, value_enum, default_value = "redirect")]
    pub interception: InterceptionArg,
    /// Where the proxy runs, REGION[/ZONE[/SUBZONE]] (the node's `locality`): clusters whose
    /// DestinationRule balances by locality order their endpoints by it.
    #[arg(long)]
    pub locality: Option<String>,
    /// Where the control plane's ADS server listens.
    #[arg(long, default_value = "127.0.0.1:15010")]
    pub xds_address: String,
    /// Envoy's admin listener.
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin_address: SocketAddr,
    /// Use Delta (incremental) xDS instead of state-of-the-world.
    #[arg(long)]
    pub delta: bool,
    /// Reach the control plane over TLS (its secure port, 15012), trusting this root
    /// certificate (a PEM file, e.g. the CA directory's root-cert.pem).
    #[arg(long)]
    pub xds_root_cert: Option<PathBuf>,
    /// With --xds-root-cert: the name the control plane's certificate must carry (also sent
    /// as SNI).
    #[arg(long, default_value = "istiod.istio-system.svc")]
    pub xds_server_name: String,
    /// A file holding a service-account token (JWT), sent as `authorization: Bearer` on the
    /// ADS stream (read when the bootstrap is written).
    #[arg(long)]
    pub xds_token_file: Option<PathBuf>,
    /// Reach the control plane through `meshpilot agent`, as an istio-proxy does: ADS over the
    /// agent's XDS socket, and an `sds-grpc` cluster on its SDS socket for the workload
    /// certificate. The --xds-address/--xds-root-cert/--xds-token-file flags are then unused
    /// (TLS and the token are the agent's).
    #[arg(long)]
    pub via_agent: bool,
    /// With --via-agent: the agent's XDS socket (Istio's path).
    #[arg(long, default_value = meshpilot_agent::XDS_SOCKET)]
    pub agent_xds_socket: PathBuf,
    /// With --via-agent: the agent's SDS socket (Istio's path).
    #[arg(long, default_value = meshpilot_agent::SDS_SOCKET)]
    pub agent_sds_socket: PathBuf,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("label {s:?}: expected KEY=VALUE")),
    }
}

/// `--outbound-traffic-policy`'s value.
fn parse_outbound_mode(s: &str) -> Result<OutboundTrafficMode, String> {
    OutboundTrafficMode::parse(s)
        .ok_or_else(|| format!("{s:?}: expected ALLOW_ANY or REGISTRY_ONLY"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use meshpilot_model::InputLimit;

    fn serve(extra: &[&str]) -> ServeConfig {
        let args = [
            "meshpilot",
            "serve",
            "--config-dir",
            env!("CARGO_MANIFEST_DIR"),
        ]
        .into_iter()
        .chain(extra.iter().copied());
        match Cli::try_parse_from(args).expect("valid flags").command {
            Command::Serve(a) => a.into_config().expect("runnable flags"),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn the_mesh_outbound_traffic_policy_is_allow_any_unless_set() {
        let mode = |c: ServeConfig| mesh_settings(c.outbound_mode, c.mesh.as_ref()).0;
        assert_eq!(mode(serve(&[])), OutboundTrafficMode::AllowAny);
        assert_eq!(
            mode(serve(&["--outbound-traffic-policy", "REGISTRY_ONLY"])),
            OutboundTrafficMode::RegistryOnly
        );
        let dir = tempfile::TempDir::new().expect("temp dir");
        let file = dir.path().join("mesh.yaml");
        std::fs::write(&file, "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n").expect("write");
        let file = file.to_str().expect("utf-8 path");
        assert_eq!(
            mode(serve(&["--mesh-config", file])),
            OutboundTrafficMode::RegistryOnly,
            "the mesh configuration's mode"
        );
        assert_eq!(
            mode(serve(&[
                "--mesh-config",
                file,
                "--outbound-traffic-policy",
                "ALLOW_ANY"
            ])),
            OutboundTrafficMode::AllowAny,
            "the flag wins"
        );
        let args = ["meshpilot", "serve", "--outbound-traffic-policy", "DENY"];
        assert!(Cli::try_parse_from(args).is_err());
    }

    #[test]
    fn a_change_after_quiet_is_pushed_at_once_unless_turned_off() {
        assert!(serve(&[]).debounce_leading, "on by default");
        assert!(!serve(&["--debounce-leading=false"]).debounce_leading);
        assert!(!serve(&["--debounce-leading", "false"]).debounce_leading);
        assert!(serve(&["--debounce-leading=true"]).debounce_leading);
    }

    /// A diagnostic about a size limit names a flag and an environment variable: both must
    /// be the ones `serve` reads, with the source's defaults.
    #[test]
    fn every_input_limit_names_a_serve_flag_and_its_env_var() {
        let cli = Cli::command();
        let command = cli.find_subcommand("serve").expect("serve is a subcommand");
        let defaults = InputLimits::default();
        for limit in InputLimit::ALL {
            let arg = command
                .get_arguments()
                .find(|a| a.get_long().map(|l| format!("--{l}")).as_deref() == Some(limit.flag()))
                .unwrap_or_else(|| panic!("{} is not a serve flag", limit.flag()));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(limit.env()),
                "{}",
                limit.flag()
            );
            let default: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            assert_eq!(
                default,
                [defaults.value(limit).to_string()],
                "{}",
                limit.flag()
            );
        }
    }

    #[test]
    fn the_limit_flags_reach_the_file_source() {
        let limits = serve(&[
            "--max-file-bytes=1",
            "--max-documents-per-file=2",
            "--max-yaml-nodes=3",
            "--max-yaml-depth=4",
            "--max-yaml-aliases=5",
        ])
        .input_limits;
        assert_eq!(
            limits,
            InputLimits {
                max_file_bytes: 1,
                max_documents_per_file: 2,
                max_nodes_per_document: 3,
                max_depth: 4,
                max_aliases_per_document: 5,
            }
        );
        assert_eq!(serve(&[]).input_limits, InputLimits::default());
    }

    #[test]
    fn the_storm_flags_reach_the_xds_server() {
        assert_eq!(serve(&[]).xds_limits, ServeLimits::default());
        assert!(!serve(&[]).serve_partial_config);
        let cfg = serve(&[
            "--xds-listen-backlog=64",
            "--xds-max-connections=10",
            "--max-resource-names-per-request=5",
            "--xds-max-message-bytes=65536",
            "--xds-max-streams-per-connection=2",
            "--serve-partial-config",
        ]);
        assert_eq!(
            cfg.xds_limits,
            ServeLimits {
                listen_backlog: 64,
                max_connections: 10,
                max_resource_names: 5,
                max_message_bytes: 65536,
                max_streams_per_connection: 2,
            }
        );
        assert!(cfg.serve_partial_config);
    }
}
