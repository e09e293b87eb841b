//! Running a real Envoy 1.40 in tests: locating the binary, starting it on a bootstrap, waiting
//! for readiness, reading its admin API (config_dump, stats), and stopping it on drop.
//!
//! Envoy runs with `--disable-hot-restart --concurrency 1 -l warning` (the level can be raised
//! with `MESHPILOT_TEST_ENVOY_LOG=debug`); its output goes to a file in a temporary folder that
//! is printed to stderr when the test panics, so a failing test shows what Envoy said.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::client::{self, Response};
use super::dump;
use super::process;
use super::wait::eventually;

/// Default bound for [`Envoy::start`]'s readiness wait.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a dropped Envoy gets to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_millis(300);

/// The Envoy binary: `$ENVOY_BIN`, else `<repo>/.envoy/bin/envoy`, else `envoy` on `PATH`.
///
/// `None` when there is none, so a test can skip — except with `CI=true`, where a missing Envoy
/// panics: in CI the tests must fail, not skip. A `$ENVOY_BIN` that does not exist panics too.
pub fn envoy_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ENVOY_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "ENVOY_BIN={} does not exist; run scripts/install-envoy.sh",
            p.display()
        );
        return Some(p);
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.envoy/bin/envoy");
    if local.is_file() {
        return Some(local);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("envoy"))
            .find(|p| p.is_file())
    });
    if on_path.is_some() {
        return on_path;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "CI=true but no Envoy found (ENVOY_BIN unset, no {}, none on PATH): \
             run scripts/install-envoy.sh",
            local.display()
        );
    }
    None
}

/// Returns the Envoy binary, or prints `SKIP: envoy not installed` and returns from the calling
/// test (which must return `()`). Panics instead when `CI=true` (see [`envoy_bin`]).
macro_rules! require_envoy {
    () => {
        match $crate::support::envoy_bin() {
            Some(bin) => bin,
            None => {
                eprintln!("SKIP: envoy not installed (run scripts/install-envoy.sh)");
                return;
            }
        }
    };
}
pub(crate) use require_envoy;

/// Runs `envoy --mode validate` on `bootstrap`; `Err` carries Envoy's output.
pub fn validate(bootstrap: &Value) -> Result<(), String> {
    let bin = envoy_bin().ok_or("envoy not installed")?;
    let dir = TempDir::new().map_err(|e| format!("temp dir: {e}"))?;
    let path = dir.path().join("bootstrap.json");
    std::fs::write(&path, bootstrap.to_string()).map_err(|e| format!("write bootstrap: {e}"))?;
    let out = Command::new(&bin)
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "warning",
            "-c",
        ])
        .arg(&path)
        .output()
        .map_err(|e| format!("run {}: {e}", bin.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "envoy --mode validate: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A running Envoy; SIGTERM (then SIGKILL after a short grace) on drop.
pub struct Envoy {
    // A std Mutex so `&self` methods can poll `try_wait`; never held across `.await`.
    child: Mutex<Child>,
    admin: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

impl Envoy {
    /// Starts Envoy on `bootstrap` with its admin listener set to `admin` (overriding the
    /// bootstrap's), then waits up to [`READY_TIMEOUT`] for `/ready`. An Envoy fed by ADS is
    /// ready only once the control plane has answered, so start the server first — or use
    /// [`Envoy::spawn`] and [`Envoy::wait_ready`].
    pub async fn start(bootstrap: Value, admin: SocketAddr) -> Envoy {
        let envoy = Envoy::spawn(bootstrap, admin);
        envoy.wait_ready(READY_TIMEOUT).await;
        envoy
    }

    /// Starts Envoy without waiting for anything.
    pub fn spawn(bootstrap: Value, admin: SocketAddr) -> Envoy {
        let bin = envoy_bin().unwrap_or_else(|| {
            panic!(
                "envoy not installed: call require_envoy!() first, or run scripts/install-envoy.sh"
            )
        });
        Envoy::spawn_wrapped(bootstrap, admin, &[], &bin)
    }

    /// Starts `bin` through `wrapper` (a command line that ends by running the rest, such as
    /// `ip netns exec NS setpriv --reuid=1337 …`), without waiting. With a wrapper, the bootstrap
    /// is readable by every user: the wrapper may drop privileges.
    pub fn spawn_wrapped(
        mut bootstrap: Value,
        admin: SocketAddr,
        wrapper: &[String],
        bin: &Path,
    ) -> Envoy {
        bootstrap["admin"] = serde_json::json!({
            "address": {
                "socket_address": { "address": admin.ip().to_string(), "port_value": admin.port() }
            }
        });
        let dir = TempDir::new().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let config = dir.path().join("bootstrap.json");
        let pretty = serde_json::to_string_pretty(&bootstrap)
            .unwrap_or_else(|e| panic!("encode bootstrap: {e}"));
        std::fs::write(&config, pretty).unwrap_or_else(|e| panic!("write bootstrap: {e}"));
        if !wrapper.is_empty() {
            use std::os::unix::fs::PermissionsExt;
            for (path, mode) in [(dir.path(), 0o755), (config.as_path(), 0o644)] {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
            }
        }
        let log = dir.path().join("envoy.log");
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("create log: {e}"));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("clone log handle: {e}"));
        let level =
            std::env::var("MESHPILOT_TEST_ENVOY_LOG").unwrap_or_else(|_| "warning".to_string());
        // Output goes to stderr (unbuffered) redirected into the file, rather than
        // `--log-path`, which Envoy flushes lazily: a dump on failure must be complete.
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .arg("-c")
            .arg(&config)
            .args(["--disable-hot-restart", "--concurrency", "1", "-l", &level])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        Envoy {
            child: Mutex::new(child),
            admin,
            log,
            _dir: dir,
        }
    }

    /// The admin address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// Envoy's output so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child.try_wait().ok().flatten()
    }

    /// Waits until `/ready` answers 200 (state LIVE). Panics on timeout or if Envoy exits.
    pub async fn wait_ready(&self, timeout: Duration) {
        eventually(&format!("envoy {} /ready", self.admin), timeout, || async {
            if let Some(status) = self.exited() {
                panic!("envoy (admin {}) exited with {status}", self.admin);
            }
            match self.admin_get("/ready").await {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("HTTP {} {}", r.status, r.body.trim())),
                Err(e) => Err(format!("{e:#}")),
            }
        })
        .await
    }

    /// GET an admin path (e.g. `/clusters?format=json`).
    pub async fn admin_get(&self, path_and_query: &str) -> anyhow::Result<Response> {
        client::try_get(self.admin, "localhost", path_and_query, &[]).await
    }

    /// `/config_dump?include_eds` as JSON. Panics if the admin API does not answer.
    pub async fn config_dump(&self) -> Value {
        self.try_config_dump()
            .await
            .unwrap_or_else(|e| panic!("config_dump from {}: {e}", self.admin))
    }

    async fn try_config_dump(&self) -> Result<Value, String> {
        let r = self
            .admin_get("/config_dump?include_eds")
            .await
            .map_err(|e| format!("{e:#}"))?;
        if r.status != 200 {
            return Err(format!("HTTP {}: {}", r.status, r.body));
        }
        serde_json::from_str(&r.body).map_err(|e| format!("config_dump is not JSON: {e}"))
    }

    /// Panics listing every resource Envoy rejected (any `error_state` in the config dump).
    pub async fn assert_all_acked(&self) {
        let errors = dump::error_states(&self.config_dump().await);
        assert!(
            errors.is_empty(),
            "envoy {} rejected configuration:\n  {}",
            self.admin,
            errors.join("\n  ")
        );
    }

    /// Polls the config dump until `pred` holds; returns that dump. Panics after `timeout`.
    pub async fn wait_for_dump(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let what = format!("envoy {}: {what}", self.admin);
        eventually(&what, timeout, || async {
            let dump = self.try_config_dump().await?;
            if pred(&dump) {
                Ok(dump)
            } else {
                Err(summary(&dump))
            }
        })
        .await
    }

    /// Waits until an active listener named `name` exists.
    pub async fn wait_for_listener(&self, name: &str, timeout: Duration) -> Value {
        self.wait_for_dump(&format!("listener {name:?}"), timeout, |d| {
            dump::listener_names(d).iter().any(|n| n == name)
        })
        .await
    }

    /// Waits until an active (not warming) cluster named `name` exists.
    pub async fn wait_for_cluster(&self, name: &str, timeout: Duration) -> Value {
        self.wait_for_dump(&format!("cluster {name:?}"), timeout, |d| {
            dump::cluster_names(d).iter().any(|n| n == name)
        })
        .await
    }

    /// Waits until some route configuration has a virtual host with `domain`.
    pub async fn wait_for_route_domain(&self, domain: &str, timeout: Duration) -> Value {
        self.wait_for_dump(&format!("a route for domain {domain:?}"), timeout, |d| {
            dump::route_domains(d).iter().any(|(_, dom)| dom == domain)
        })
        .await
    }

    /// The value of one counter or gauge (`/stats?format=json`), if Envoy has it.
    /// [`Envoy::stat`], 0 when the counter does not exist (yet).
    pub async fn counter(&self, name: &str) -> u64 {
        self.stat(name).await.unwrap_or(0)
    }

    pub async fn stat(&self, name: &str) -> Option<u64> {
        let r = self
            .admin_get(&format!("/stats?format=json&filter=^{name}$"))
            .await
            .ok()?;
        let v: Value = serde_json::from_str(&r.body).ok()?;
        v["stats"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == name)
            .and_then(|s| s["value"].as_u64())
    }

    fn dump_logs(&self) {
        eprintln!(
            "===== envoy (admin {}) output, {} =====\n{}\n===== end of envoy output =====",
            self.admin,
            self.log.display(),
            self.logs()
        );
    }
}

/// A one-line summary of a config dump, for timeout messages.
fn summary(d: &Value) -> String {
    format!(
        "listeners {:?}, clusters {:?} (warming {:?}), domains {:?}, errors {:?}",
        dump::listener_names(d),
        dump::cluster_names(d),
        dump::warming_cluster_names(d),
        dump::route_domains(d),
        dump::error_states(d),
    )
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        process::terminate(&mut child, TERM_GRACE);
    }
}
