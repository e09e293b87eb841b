//! `meshpilot agent`'s flags, with Istio's defaults (its socket and file paths, its environment
//! variable names where pilot-agent reads one), and how it runs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use meshpilot_agent::{AgentConfig, RenewalPolicy, SDS_SOCKET, Workload, XDS_SOCKET};

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// The control plane's secure port (its CA and ADS), HOST:PORT.
    #[arg(long, env = "CA_ADDR", default_value = "istiod.istio-system.svc:15012")]
    pub ca_address: String,
    /// The name the control plane's certificate must carry.
    #[arg(long, env = "ISTIOD_SAN", default_value = "istiod.istio-system.svc")]
    pub server_name: String,
    /// The mesh root certificate (PEM) the control plane's certificate must chain to.
    #[arg(long, default_value = "/var/run/secrets/istio/root-cert.pem")]
    pub root_cert: PathBuf,
    /// The pod's service-account token (audience istio-ca), re-read for every request.
    #[arg(long, default_value = "/var/run/secrets/tokens/istio-token")]
    pub token_file: PathBuf,
    /// The pod's namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// The pod's service account.
    #[arg(long, env = "SERVICE_ACCOUNT")]
    pub service_account: String,
    /// The mesh's trust domain.
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// Lifetime asked for the workload certificate (seconds).
    #[arg(long, env = "SECRET_TTL_SECONDS", default_value_t = 24 * 3600)]
    pub cert_ttl: u64,
    /// The share of the certificate's life still left when it is renewed (pilot-agent's).
    #[arg(long, env = "SECRET_GRACE_PERIOD_RATIO", default_value_t = RenewalPolicy::default().grace_ratio)]
    pub grace_period_ratio: f64,
    /// At most this much is added to or taken from the ratio at random, per certificate, so
    /// that pods started together do not renew together (pilot-agent's).
    #[arg(long, env = "SECRET_GRACE_PERIOD_RATIO_JITTER", default_value_t = RenewalPolicy::default().grace_ratio_jitter)]
    pub grace_period_ratio_jitter: f64,
    /// Where Envoy's ADS is accepted (Istio's path, relative to the working directory).
    #[arg(long, default_value = XDS_SOCKET)]
    pub xds_socket: PathBuf,
    /// Where SDS is served (Istio's path, relative to the working directory).
    #[arg(long, default_value = SDS_SOCKET)]
    pub sds_socket: PathBuf,
}

/// Runs the agent until SIGINT/SIGTERM.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    if args.cert_ttl < 2 {
        anyhow::bail!("--cert-ttl must be at least 2 seconds");
    }
    for (flag, value) in [
        ("--grace-period-ratio", args.grace_period_ratio),
        (
            "--grace-period-ratio-jitter",
            args.grace_period_ratio_jitter,
        ),
    ] {
        if !(0.0..=1.0).contains(&value) {
            anyhow::bail!("{flag} must be between 0 and 1, not {value}");
        }
    }
    let config = AgentConfig {
        address: args.ca_address,
        server_name: args.server_name,
        root_cert: args.root_cert,
        token_file: args.token_file,
        workload: Workload {
            trust_domain: args.trust_domain,
            namespace: args.namespace,
            service_account: args.service_account,
        },
        cert_ttl: Duration::from_secs(args.cert_ttl),
        renewal: RenewalPolicy {
            grace_ratio: args.grace_period_ratio,
            grace_ratio_jitter: args.grace_period_ratio_jitter,
        },
        xds_socket: args.xds_socket,
        sds_socket: args.sds_socket,
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        crate::app::wait_for_signal().await;
        stop.cancel();
    });
    meshpilot_agent::run(config, shutdown)
        .await
        .context("agent")
}
