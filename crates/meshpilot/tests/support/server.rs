//! Running the real `meshpilot serve` binary for black-box tests: on `127.0.0.1` with ports
//! picked free, waiting for its debug `/ready`, printing its output if the test panics, and
//! stopping it on drop (SIGTERM, then SIGKILL after a short grace).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use tempfile::TempDir;

use super::client::{self, Response};
use super::net;
use super::process;
use super::wait::eventually;

/// Default bound for [`Meshpilot::start`]'s readiness wait.
pub const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(10);
const TERM_GRACE: Duration = Duration::from_millis(500);

/// A running `meshpilot serve`.
pub struct Meshpilot {
    // A std Mutex so `&self` methods can poll `try_wait`; never held across `.await`.
    child: Mutex<Child>,
    xds: SocketAddr,
    debug: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

impl Meshpilot {
    /// Starts `meshpilot serve --config-dir DIR…` and waits for its debug `/ready`.
    pub async fn start(config_dirs: &[&Path]) -> Meshpilot {
        let server = Meshpilot::spawn(config_dirs, &[]);
        server.wait_ready(SERVER_READY_TIMEOUT).await;
        server
    }

    /// Starts the server with extra flags, without waiting. `RUST_LOG` defaults to `info`.
    pub fn spawn(config_dirs: &[&Path], extra_args: &[&str]) -> Meshpilot {
        Meshpilot::spawn_with_env(config_dirs, extra_args, &[])
    }

    /// [`Meshpilot::spawn`] with extra environment variables (e.g. `KUBECONFIG`).
    pub fn spawn_with_env(
        config_dirs: &[&Path],
        extra_args: &[&str],
        envs: &[(&str, &Path)],
    ) -> Meshpilot {
        Meshpilot::spawn_at(
            net::admin_addr(),
            net::admin_addr(),
            config_dirs,
            extra_args,
            envs,
        )
    }

    /// [`Meshpilot::spawn_with_env`] on given addresses: a restart on the addresses of a
    /// server that was [`Meshpilot::kill`]ed, which its proxies reconnect to.
    pub fn spawn_at(
        xds: SocketAddr,
        debug: SocketAddr,
        config_dirs: &[&Path],
        extra_args: &[&str],
        envs: &[(&str, &Path)],
    ) -> Meshpilot {
        let program = Command::new(env!("CARGO_BIN_EXE_meshpilot"));
        Meshpilot::spawn_program(program, xds, debug, config_dirs, extra_args, envs)
    }

    /// The binary at `/usr/local/bin/meshpilot` of the root filesystem `rootfs` (an image's),
    /// run in it with `chroot` as the image's user (uid/gid 65532); `config_dirs` are paths
    /// inside it. Needs root.
    pub fn spawn_in_root(rootfs: &Path, config_dirs: &[&Path], extra_args: &[&str]) -> Meshpilot {
        let mut program = Command::new("chroot");
        program
            .arg("--userspec=65532:65532")
            .arg(rootfs)
            .arg("/usr/local/bin/meshpilot");
        let (xds, debug) = (net::admin_addr(), net::admin_addr());
        Meshpilot::spawn_program(program, xds, debug, config_dirs, extra_args, &[])
    }

    fn spawn_program(
        mut cmd: Command,
        xds: SocketAddr,
        debug: SocketAddr,
        config_dirs: &[&Path],
        extra_args: &[&str],
        envs: &[(&str, &Path)],
    ) -> Meshpilot {
        let dir = TempDir::new().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let log = dir.path().join("meshpilot.log");
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("create log: {e}"));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("clone log handle: {e}"));
        cmd.arg("serve")
            .arg("--xds-address")
            .arg(xds.to_string())
            .arg("--debug-address")
            .arg(debug.to_string());
        for d in config_dirs {
            cmd.arg("--config-dir").arg(d);
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .args(extra_args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start meshpilot: {e}"));
        Meshpilot {
            child: Mutex::new(child),
            xds,
            debug,
            log,
            _dir: dir,
        }
    }

    /// The ADS address, for [`super::bootstrap_args`].
    pub fn xds(&self) -> SocketAddr {
        self.xds
    }

    /// The debug HTTP address.
    pub fn debug(&self) -> SocketAddr {
        self.debug
    }

    /// Kills the process with SIGKILL (no shutdown: streams are cut, nothing is flushed) and
    /// waits for it to be gone, so its addresses can be bound again.
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The server's output so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child.try_wait().ok().flatten()
    }

    /// GET a debug path (e.g. `/debug/syncz`).
    pub async fn debug_get(&self, path_and_query: &str) -> anyhow::Result<Response> {
        client::try_get(self.debug, "localhost", path_and_query, &[]).await
    }

    /// [`Meshpilot::debug_get`] allowing the answer up to `timeout` (large dumps).
    pub async fn debug_get_patiently(
        &self,
        path_and_query: &str,
        timeout: Duration,
    ) -> anyhow::Result<Response> {
        client::Conn::connect(self.debug)
            .await?
            .patient(timeout)
            .get("localhost", path_and_query, &[])
            .await
    }

    /// GET a debug path that answers JSON; an error names the path and what went wrong.
    pub async fn debug_json(&self, path: &str) -> Result<serde_json::Value, String> {
        let r = self
            .debug_get(path)
            .await
            .map_err(|e| format!("GET {path}: {e:#}"))?;
        if r.status != 200 {
            return Err(format!("GET {path}: HTTP {} {}", r.status, r.body));
        }
        serde_json::from_str(&r.body).map_err(|e| format!("GET {path}: not JSON: {e}"))
    }

    /// Waits until `/debug/syncz` lists proxy `id` with at least `types` xDS types, every one
    /// SYNCED (its last response acknowledged).
    pub async fn wait_synced(&self, id: &str, types: usize, timeout: Duration) {
        eventually(&format!("{id} SYNCED on every type"), timeout, || async {
            let all = self.debug_json("/debug/syncz").await?;
            let p = all
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["node_id"] == id)
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            let status = p["types"].as_object().cloned().unwrap_or_default();
            if status.len() >= types && status.values().all(|t| t["status"] == "SYNCED") {
                Ok(())
            } else {
                Err(p.to_string())
            }
        })
        .await;
    }

    /// Waits until the debug `/ready` answers 200. Panics on timeout or if the server exits.
    pub async fn wait_ready(&self, timeout: Duration) {
        eventually(
            &format!("meshpilot {} /ready", self.debug),
            timeout,
            || async {
                if let Some(status) = self.exited() {
                    panic!("meshpilot exited with {status}");
                }
                match self.debug_get("/ready").await {
                    Ok(r) if r.status == 200 => Ok(()),
                    Ok(r) => Err(format!("HTTP {} {}", r.status, r.body.trim())),
                    Err(e) => Err(format!("{e:#}")),
                }
            },
        )
        .await
    }
}

impl Drop for Meshpilot {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== meshpilot (xds {}, debug {}) output =====\n{}\n===== end of meshpilot output =====",
                self.xds,
                self.debug,
                self.logs()
            );
        }
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        process::terminate(&mut child, TERM_GRACE);
    }
}
