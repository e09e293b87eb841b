//! Sidecars as an injected pod has them: a stock Envoy in the pod (uid 1337, istio-init's
//! rules) that knows only `meshpilot agent`'s Unix sockets, the agent holding the pod's
//! service-account token, fetching the workload certificate from the CA and proxying ADS to
//! the secure port. The agent runs in the host's network namespace (it reaches the control
//! plane's loopback address); the sockets are files, which Envoy in the pod reaches all the
//! same.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::envoy::{Envoy, READY_TIMEOUT};
use super::pods::{ADMIN_PORT, PROXY_UID, Pod, envoy_bin_for_proxy_uid};

/// Where a pod's agent gets its certificate and which identity it proves.
pub struct AgentIdentity<'a> {
    /// The control plane's secure port (CA and ADS).
    pub secure: SocketAddr,
    pub root_cert: &'a Path,
    /// A file holding the service-account token.
    pub token_file: &'a Path,
    pub namespace: &'a str,
    pub service_account: &'a str,
    /// The workload certificate's lifetime in seconds (renewed at half of it); `None`: the
    /// agent's default (24 h).
    pub cert_ttl_seconds: Option<u64>,
}

/// A pod's agent process, stopped when dropped (also on a failed assertion).
pub struct PodAgent {
    child: Child,
    log: PathBuf,
}

impl PodAgent {
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PodAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

impl Pod {
    /// Starts the pod's agent (working directory `dir`/POD-NAME, which holds its sockets) and
    /// its sidecar on `meshpilot bootstrap --via-agent --interception redirect` output with
    /// `labels`; waits until Envoy is ready, which needs its certificate.
    pub async fn start_sidecar_via_agent(
        &self,
        dir: &Path,
        identity: &AgentIdentity<'_>,
        labels: &[(&str, &str)],
    ) -> (Envoy, PodAgent) {
        let home = dir.join(self.name());
        std::fs::create_dir_all(&home).unwrap_or_else(|e| panic!("create {}: {e}", home.display()));
        // Envoy runs as uid 1337: it must reach the sockets through these directories.
        for d in home
            .ancestors()
            .take_while(|d| d.starts_with(std::env::temp_dir()) && *d != std::env::temp_dir())
        {
            chmod(d, 0o755);
        }
        let log = home.join("agent.log");
        let out = std::fs::File::create(&log).expect("agent log");
        let err = out.try_clone().expect("log handle");
        let child = Command::new(env!("CARGO_BIN_EXE_meshpilot"))
            .arg("agent")
            .args(["--ca-address", &identity.secure.to_string()])
            .arg("--root-cert")
            .arg(identity.root_cert)
            .arg("--token-file")
            .arg(identity.token_file)
            .args(["--namespace", identity.namespace])
            .args(["--service-account", identity.service_account])
            .args(
                identity
                    .cert_ttl_seconds
                    .map(|ttl| ["--cert-ttl".to_string(), ttl.to_string()])
                    .into_iter()
                    .flatten(),
            )
            .current_dir(&home)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start meshpilot agent");
        let agent = PodAgent { child, log };
        let sockets = [
            home.join(meshpilot_agent::XDS_SOCKET),
            home.join(meshpilot_agent::SDS_SOCKET),
        ];
        let deadline = Instant::now() + Duration::from_secs(15);
        while !sockets.iter().all(|s| s.exists()) {
            assert!(
                Instant::now() < deadline,
                "pod {}: the agent's sockets never appeared: {}",
                self.name(),
                agent.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The agent runs as root; the proxy user must be able to connect.
        for s in &sockets {
            chmod(s, 0o777);
        }

        let admin = SocketAddr::new(self.ip(), ADMIN_PORT);
        let mut args = super::bootstrap_args(&self.node_id(), identity.secure, admin);
        args.interception = meshpilot::config::InterceptionArg::Redirect;
        args.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        args.via_agent = true;
        args.agent_xds_socket = sockets[0].clone();
        args.agent_sds_socket = sockets[1].clone();
        let bootstrap = super::render_bootstrap(&args);
        let wrapper: Vec<String> = [
            "ip",
            "netns",
            "exec",
            self.namespace(),
            "setpriv",
            &format!("--reuid={PROXY_UID}"),
            &format!("--regid={PROXY_UID}"),
            "--clear-groups",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let envoy = Envoy::spawn_wrapped(bootstrap, admin, &wrapper, &envoy_bin_for_proxy_uid());
        envoy.wait_ready(READY_TIMEOUT).await;
        (envoy, agent)
    }
}
