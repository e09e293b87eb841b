//! Pods for black-box tests: network namespaces on a test bridge, with istio-init's iptables
//! rules, a real Envoy as the sidecar (uid 1337, bootstrap from `meshpilot bootstrap
//! --interception redirect`), and small apps and clients running inside them.
//!
//! Addresses: each [`PodNet`] claims one /28 of 198.18.0.0/24 (the bridge takes its first
//! address, pods the next ones); Service VIPs come from 198.19.0.0/24, which pods route to the
//! bridge. Nothing else is routed, and the host does not forward, so no packet leaves the
//! machine. meshpilot serves ADS on the bridge address.
//!
//! Names carry the test process id and a counter (`mp<pid>n<n>…`, hex), so tests and test
//! processes run in parallel. Everything is removed when the [`PodNet`] and its [`Pod`]s drop
//! (also on panic); a test that was killed leaves its bridge, namespaces and processes behind,
//! and the next [`PodNet::create`] removes those whose process is gone.
//!
//! Apps and clients inside a pod run this very test binary again (`ip netns exec NS <test exe>
//! pod_helper`), so each test file using pods must call [`pod_helper!`] once; the role comes in
//! `MESHPILOT_POD_*` environment variables. The Envoy admin listener binds the pod IP on 15020
//! (a port istio-init leaves uncaptured, pilot-agent's in a real pod), so the test reaches it
//! from the host.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::client::Response;
use super::envoy::{Envoy, READY_TIMEOUT, envoy_bin};
use super::process;

/// The uid and gid the sidecar runs as; istio-init's rules leave its traffic alone.
pub const PROXY_UID: u32 = 1337;
/// Envoy's admin port in a pod (uncaptured, see the module docs).
pub const ADMIN_PORT: u16 = 15020;
/// istio-init's inputs for an injected pod: `-p 15001 -z 15006 -u 1337 -g 1337 -m REDIRECT
/// -i '*' -b '*' -d 15090,15021,15020`.
pub const OUTBOUND_CAPTURE_PORT: u16 = 15001;
pub const INBOUND_CAPTURE_PORT: u16 = 15006;
pub const EXCLUDED_INBOUND_PORTS: [u16; 3] = [15090, 15021, 15020];
/// istio's HBONE port, never captured.
const HBONE_PORT: u16 = 15008;
/// 198.18.0.0/24 in /28 slots, one per [`PodNet`].
const SLOTS: u8 = 16;
const SLOT_SIZE: u8 = 16;
/// Where slot claims live (one file per claimed slot, holding its owner's name prefix).
const CLAIMS_DIR: &str = "/tmp/meshpilot-pods";
const HELPER_ENV: &str = "MESHPILOT_POD_HELPER";
const TERM_GRACE: Duration = Duration::from_millis(300);

/// Counts the nets this process made, for unique names.
static NETS: AtomicU32 = AtomicU32::new(0);

/// Returns a fresh [`PodNet`], or prints `SKIP: …` and returns from the calling test when this
/// machine cannot make network namespaces. Panics instead when `CI=true`.
macro_rules! require_pods {
    () => {
        match $crate::support::pods::PodNet::create() {
            Ok(net) => net,
            Err(why) => {
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("CI=true but pods (network namespaces) cannot be made here: {why}");
                }
                eprintln!("SKIP: pods (network namespaces) cannot be made here: {why}");
                return;
            }
        }
    };
}
pub(crate) use require_pods;

/// Defines the `pod_helper` test through which apps and clients run inside pods (see the
/// module docs). Outside a pod it does nothing.
macro_rules! pod_helper {
    () => {
        #[test]
        fn pod_helper() {
            $crate::support::pods::helper_main();
        }
    };
}
pub(crate) use pod_helper;

/// Runs a command; its stdout, or an error naming it with its stderr.
fn run(args: &[&str]) -> Result<String, String> {
    let (first, rest) = args.split_first().ok_or("empty command")?;
    let out = Command::new(first)
        .args(rest)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The process id a name this module made carries (`mp<pid>n<n>…`), if it is one.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("mp")?;
    let (pid, rest) = rest.split_once('n')?;
    let counter_len = rest.chars().take_while(char::is_ascii_hexdigit).count();
    if counter_len == 0 || pid.is_empty() {
        return None;
    }
    u32::from_str_radix(pid, 16).ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Kills every process in network namespace `ns`.
fn kill_all_in(ns: &str) {
    if let Ok(pids) = run(&["ip", "netns", "pids", ns]) {
        for pid in pids.split_whitespace() {
            let _ = run(&["kill", "-KILL", pid]);
        }
    }
}

fn remove_namespace(ns: &str) {
    kill_all_in(ns);
    let _ = run(&["ip", "netns", "del", ns]);
    let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
}

/// Removes what tests that no longer run left behind: namespaces (and their processes),
/// bridges, slot claims and Envoy copies.
fn sweep() {
    let dead = |name: &str| owner_pid(name).is_some_and(|pid| !alive(pid));
    if let Ok(list) = run(&["ip", "netns", "list"]) {
        for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if dead(ns) {
                remove_namespace(ns);
            }
        }
    }
    if let Ok(links) = run(&["ip", "-o", "link", "show", "type", "bridge"]) {
        for line in links.lines() {
            let name = line.split(':').nth(1).map(str::trim).unwrap_or("");
            if dead(name) {
                let _ = run(&["ip", "link", "del", name]);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(CLAIMS_DIR) {
        for e in entries.flatten() {
            let owner = std::fs::read_to_string(e.path()).unwrap_or_default();
            if dead(owner.trim()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("meshpilot-envoy-")
                && pid.parse::<u32>().is_ok_and(|p| !alive(p))
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Why this machine cannot make pods, if it cannot: root, `ip`, `iptables-restore`, `setpriv`.
fn check_tools() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("");
    if uid != "0" {
        return Err(format!("not root (uid {uid})"));
    }
    for tool in [
        &["ip", "-V"][..],
        &["iptables-restore", "--version"],
        &["setpriv", "--version"],
    ] {
        run(tool).map_err(|e| {
            format!("{e} (install iproute2, iptables and util-linux: apt-get install -y iproute2 iptables)")
        })?;
    }
    Ok(())
}

/// The bridge and the /28 a [`PodNet`] owns; removed when the last of its pods is gone.
struct NetGuard {
    prefix: String,
    bridge: String,
    claim: PathBuf,
}

impl Drop for NetGuard {
    fn drop(&mut self) {
        let _ = run(&["ip", "link", "del", &self.bridge]);
        let _ = std::fs::remove_file(&self.claim);
    }
}

/// A test bridge with a /28 of pod addresses; makes [`Pod`]s.
pub struct PodNet {
    guard: Arc<NetGuard>,
    /// The subnet's first address (network address).
    base: Ipv4Addr,
    /// Pods made so far.
    pods: AtomicU32,
}

impl PodNet {
    /// Sweeps leftovers of killed tests, then makes a bridge on a free /28 of 198.18.0.0/24.
    /// `Err` says why pods cannot be made here.
    pub fn create() -> Result<PodNet, String> {
        check_tools()?;
        sweep();
        let prefix = format!(
            "mp{:x}n{:x}",
            std::process::id(),
            NETS.fetch_add(1, Ordering::SeqCst)
        );
        std::fs::create_dir_all(CLAIMS_DIR).map_err(|e| format!("create {CLAIMS_DIR}: {e}"))?;
        let (slot, claim) = (0..SLOTS)
            .find_map(|slot| {
                let path = Path::new(CLAIMS_DIR).join(format!("slot-{slot}"));
                let mut f = std::fs::File::create_new(&path).ok()?;
                f.write_all(prefix.as_bytes()).ok()?;
                Some((slot, path))
            })
            .ok_or("every /28 of 198.18.0.0/24 is in use by other tests")?;
        let bridge = format!("{prefix}b");
        let guard = NetGuard {
            prefix,
            bridge: bridge.clone(),
            claim,
        };
        let base = Ipv4Addr::new(198, 18, 0, slot * SLOT_SIZE);
        let host = Ipv4Addr::new(198, 18, 0, slot * SLOT_SIZE + 1);
        // Can this machine make network namespaces at all (not in every container)?
        let probe = format!("{}-probe", guard.prefix);
        run(&["ip", "netns", "add", &probe])?;
        remove_namespace(&probe);
        run(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        run(&["ip", "addr", "add", &format!("{host}/28"), "dev", &bridge])?;
        run(&["ip", "link", "set", &bridge, "up"])?;
        Ok(PodNet {
            guard: Arc::new(guard),
            base,
            pods: AtomicU32::new(0),
        })
    }

    /// The bridge's address: where pods reach the host (and meshpilot).
    pub fn host_ip(&self) -> Ipv4Addr {
        let [a, b, c, d] = self.base.octets();
        Ipv4Addr::new(a, b, c, d + 1)
    }

    /// An address on the bridge with a port that was free a moment ago (for meshpilot's ADS).
    pub fn host_addr(&self) -> SocketAddr {
        super::net::free_addr(IpAddr::V4(self.host_ip()))
    }

    /// A new pod `name` (namespace `default` in node ids), not yet captured.
    pub fn pod(&self, name: &str) -> Pod {
        let n = self.pods.fetch_add(1, Ordering::SeqCst);
        assert!(
            n + 2 < u32::from(SLOT_SIZE) - 1,
            "at most 13 pods per PodNet"
        );
        let [a, b, c, d] = self.base.octets();
        let ip = Ipv4Addr::new(a, b, c, d + 2 + n as u8);
        let prefix = &self.guard.prefix;
        let ns = format!("{prefix}-{name}");
        let host_end = format!("{prefix}h{n:x}");
        let pod_end = format!("{prefix}p{n:x}");
        let pod = Pod {
            name: name.to_string(),
            ns: ns.clone(),
            ip,
            _net: self.guard.clone(),
        };
        let steps: [&[&str]; 9] = [
            &["ip", "netns", "add", &ns],
            &[
                "ip", "link", "add", &host_end, "type", "veth", "peer", "name", &pod_end, "netns",
                &ns,
            ],
            &["ip", "link", "set", &host_end, "master", &self.guard.bridge],
            &["ip", "link", "set", &host_end, "up"],
            &["ip", "-n", &ns, "link", "set", &pod_end, "name", "eth0"],
            &[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip}/28"),
                "dev",
                "eth0",
            ],
            &["ip", "-n", &ns, "link", "set", "eth0", "up"],
            &["ip", "-n", &ns, "link", "set", "lo", "up"],
            &[
                "ip",
                "-n",
                &ns,
                "route",
                "add",
                "198.19.0.0/24",
                "via",
                &self.host_ip().to_string(),
            ],
        ];
        for step in steps {
            run(step).unwrap_or_else(|e| panic!("pod {name}: {e}"));
        }
        pod
    }
}

/// istio-init's nat table for its inputs (see `design/dropin.md` §3.1), for `iptables-restore`.
pub fn istio_init_rules(
    outbound_port: u16,
    inbound_port: u16,
    uid: u32,
    gid: u32,
    excluded_inbound: &[u16],
) -> String {
    let mut r = String::from(
        "*nat\n:ISTIO_INBOUND - [0:0]\n:ISTIO_REDIRECT - [0:0]\n:ISTIO_IN_REDIRECT - [0:0]\n\
         :ISTIO_OUTPUT - [0:0]\n",
    );
    r += &format!("-A ISTIO_INBOUND -p tcp --dport {HBONE_PORT} -j RETURN\n");
    r += &format!("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {outbound_port}\n");
    r += &format!("-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {inbound_port}\n");
    r += "-A PREROUTING -p tcp -j ISTIO_INBOUND\n";
    for p in excluded_inbound {
        r += &format!("-A ISTIO_INBOUND -p tcp --dport {p} -j RETURN\n");
    }
    r += "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT\n";
    r += "-A OUTPUT -j ISTIO_OUTPUT\n";
    r += "-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN\n";
    for (kind, id) in [("uid", uid), ("gid", gid)] {
        r += &format!(
            "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport {HBONE_PORT} -m owner --{kind}-owner {id} -j ISTIO_IN_REDIRECT\n"
        );
        r += &format!("-A ISTIO_OUTPUT -o lo -m owner ! --{kind}-owner {id} -j RETURN\n");
        r += &format!("-A ISTIO_OUTPUT -m owner --{kind}-owner {id} -j RETURN\n");
    }
    r += "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\n";
    r += "-A ISTIO_OUTPUT -j ISTIO_REDIRECT\nCOMMIT\n";
    r
}

/// The Envoy binary as uid 1337 can run it: the installed one when every directory above it
/// is open to others, else a copy in a temporary folder (made once per process; a root home is
/// mode 700).
pub(crate) fn envoy_bin_for_proxy_uid() -> PathBuf {
    static COPY: OnceLock<PathBuf> = OnceLock::new();
    let bin = envoy_bin().unwrap_or_else(|| panic!("envoy not installed: call require_envoy!()"));
    let open = |p: &Path, bits: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & bits == bits)
    };
    let reachable = bin.ancestors().skip(1).all(|d| open(d, 0o001));
    if reachable && open(&bin, 0o005) {
        return bin;
    }
    COPY.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("meshpilot-envoy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let copy = dir.join("envoy");
        std::fs::copy(&bin, &copy).unwrap_or_else(|e| panic!("copy envoy: {e}"));
        for (p, mode) in [(dir.as_path(), 0o755), (copy.as_path(), 0o755)] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
        }
        copy
    })
    .clone()
}

/// One pod: a network namespace with `eth0` on the bridge. Its processes are killed and the
/// namespace removed on drop.
pub struct Pod {
    name: String,
    ns: String,
    ip: Ipv4Addr,
    _net: Arc<NetGuard>,
}

impl Pod {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ip(&self) -> IpAddr {
        IpAddr::V4(self.ip)
    }

    /// The network namespace's name.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// Loads istio-init's rules for an injected pod (see [`istio_init_rules`]).
    pub fn capture(&self) {
        let rules = istio_init_rules(
            OUTBOUND_CAPTURE_PORT,
            INBOUND_CAPTURE_PORT,
            PROXY_UID,
            PROXY_UID,
            &EXCLUDED_INBOUND_PORTS,
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "iptables-restore", "--noflush"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("pod {}: iptables-restore: {e}", self.name));
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(rules.as_bytes())
                .unwrap_or_else(|e| panic!("pod {}: write rules: {e}", self.name));
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("pod {}: iptables-restore: {e}", self.name));
        assert!(
            out.status.success(),
            "pod {}: iptables-restore: {}\n{rules}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The pod's node id, as pilot-agent writes it (`sidecar~IP~NAME.default~…`).
    pub fn node_id(&self) -> String {
        super::node_id("sidecar", self.ip(), &self.name, "default")
    }

    /// Starts the sidecar: Envoy as uid/gid 1337 in the pod on `meshpilot bootstrap
    /// --interception redirect` output with `labels`, ADS at `xds` (SotW, or Delta with
    /// `delta`), admin on the pod IP's [`ADMIN_PORT`]. Waits until it is ready.
    pub async fn start_sidecar(
        &self,
        xds: SocketAddr,
        labels: &[(&str, &str)],
        delta: bool,
    ) -> Envoy {
        let id = self.node_id();
        let redirect = meshpilot::config::InterceptionArg::Redirect;
        self.start_envoy(&id, redirect, xds, labels, delta).await
    }

    /// Starts an ingress gateway in the pod, as istio's gateway deployment runs it: node id
    /// `router~IP~NAME.istio-system~…`, interception NONE (the pod has no iptables rules; the
    /// servers' listeners bind the pod IP), `labels`, admin and uid as [`Pod::start_sidecar`].
    pub async fn start_gateway(
        &self,
        xds: SocketAddr,
        labels: &[(&str, &str)],
        delta: bool,
    ) -> Envoy {
        let id = super::node_id("router", self.ip(), &self.name, "istio-system");
        let none = meshpilot::config::InterceptionArg::None;
        self.start_envoy(&id, none, xds, labels, delta).await
    }

    async fn start_envoy(
        &self,
        node_id: &str,
        interception: meshpilot::config::InterceptionArg,
        xds: SocketAddr,
        labels: &[(&str, &str)],
        delta: bool,
    ) -> Envoy {
        let admin = SocketAddr::new(self.ip(), ADMIN_PORT);
        let mut args = super::bootstrap_args(node_id, xds, admin);
        args.interception = interception;
        args.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        args.delta = delta;
        let bootstrap = super::render_bootstrap(&args);
        let wrapper: Vec<String> = [
            "ip",
            "netns",
            "exec",
            &self.ns,
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
        envoy
    }

    /// Runs this test binary's `pod_helper` in the pod with `role` and `env`.
    fn helper(&self, role: &str, env: &[(&str, String)]) -> Command {
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns])
            .arg(exe)
            .args(["pod_helper", "--exact", "--nocapture", "--test-threads=1"])
            .env(HELPER_ENV, role)
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts an app in the pod on `ip:port`, waiting until it listens.
    pub(super) fn start_app(&self, role: &str, ip: IpAddr, port: u16, name: &str) -> PodApp {
        self.start_app_with(role, ip, port, name, &[])
    }

    /// [`Pod::start_app`] with more `MESHPILOT_POD_*` variables for the role.
    pub(super) fn start_app_with(
        &self,
        role: &str,
        ip: IpAddr,
        port: u16,
        name: &str,
        extra: &[(&str, String)],
    ) -> PodApp {
        let ready = tempfile::NamedTempFile::new()
            .unwrap_or_else(|e| panic!("temp file: {e}"))
            .into_temp_path();
        let ready_path = ready.to_path_buf();
        let _ = std::fs::remove_file(&ready_path);
        let mut env = vec![
            ("MESHPILOT_POD_ADDR", SocketAddr::new(ip, port).to_string()),
            ("MESHPILOT_POD_NAME", name.to_string()),
            ("MESHPILOT_POD_READY", ready_path.display().to_string()),
        ];
        env.extend(extra.iter().cloned());
        let child = self
            .helper(role, &env)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("pod {}: start {role}: {e}", self.name));
        let app = PodApp {
            child: Mutex::new(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready_path.exists() {
            assert!(
                Instant::now() < deadline,
                "pod {}: {role} {name} did not listen on {ip}:{port}",
                self.name,
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(ready);
        app
    }

    /// An HTTP app on the pod IP (support's [`super::Backend`]): answers 200 with `name`, and
    /// reports the peer address and request headers it saw (`x-peer`, `x-seen-headers`).
    pub fn start_http_app(&self, port: u16, name: &str) -> PodApp {
        self.start_app("http-app", self.ip(), port, name)
    }

    /// [`Pod::start_http_app`] on the pod's loopback (`127.0.0.1`) only.
    pub fn start_loopback_http_app(&self, port: u16, name: &str) -> PodApp {
        self.start_app("http-app", IpAddr::V4(Ipv4Addr::LOCALHOST), port, name)
    }

    /// A TCP app on the pod IP that writes `NAME PEER\n` to each connection, then closes it.
    /// (It speaks first, as MySQL or SMTP servers do.)
    pub fn start_tcp_app(&self, port: u16, name: &str) -> PodApp {
        self.start_app("tcp-app", self.ip(), port, name)
    }

    /// Gives the pod an `/etc/hosts` (`ip netns exec` mounts `/etc/netns/NS/hosts` over it), so
    /// its clients resolve Service names without DNS. Removed with the pod.
    pub fn set_hosts(&self, entries: &[(IpAddr, &str)]) {
        let dir = Path::new("/etc/netns").join(&self.ns);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let mut text = String::from("127.0.0.1 localhost\n");
        for (ip, names) in entries {
            text += &format!("{ip} {names}\n");
        }
        std::fs::write(dir.join("hosts"), text)
            .unwrap_or_else(|e| panic!("write {}/hosts: {e}", dir.display()));
    }

    /// `GET path` with `Host: host` to `target`, sent from inside the pod.
    pub fn http_get(&self, target: SocketAddr, host: &str, path: &str) -> Result<Response, String> {
        self.http_get_to(&target.to_string(), host, path)
    }

    /// `GET http://NAME:PORT/path` from inside the pod: the name resolved there (see
    /// [`Pod::set_hosts`]) and sent as `Host`.
    pub fn http_get_name(&self, name: &str, port: u16, path: &str) -> Result<Response, String> {
        self.http_get_to(&format!("{name}:{port}"), name, path)
    }

    fn http_get_to(&self, target: &str, host: &str, path: &str) -> Result<Response, String> {
        let out = self.run_client(
            "http-get",
            &[
                ("MESHPILOT_POD_TARGET", target.to_string()),
                ("MESHPILOT_POD_HOST", host.to_string()),
                ("MESHPILOT_POD_PATH", path.to_string()),
            ],
        )?;
        let v: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
        Ok(Response {
            status: v["status"].as_u64().unwrap_or(0) as u16,
            headers: v["headers"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect(),
            body: v["body"].as_str().unwrap_or("").to_string(),
        })
    }

    /// Connects to `target` from inside the pod and reads until the server closes.
    pub fn tcp_read(&self, target: SocketAddr) -> Result<String, String> {
        let out = self.run_client("tcp-read", &[("MESHPILOT_POD_TARGET", target.to_string())])?;
        serde_json::from_str::<String>(&out).map_err(|e| format!("{e}: {out}"))
    }

    /// Runs a client role; the JSON it printed after `POD-RESULT `, or its `POD-ERROR`.
    pub(super) fn run_client(&self, role: &str, env: &[(&str, String)]) -> Result<String, String> {
        let out = self
            .helper(role, env)
            .output()
            .map_err(|e| format!("pod {}: {role}: {e}", self.name))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        // libtest may print its own words before ours on the same line.
        for line in stdout.lines() {
            if let Some(i) = line.find("POD-RESULT ") {
                return Ok(line[i + "POD-RESULT ".len()..].to_string());
            }
            if let Some(i) = line.find("POD-ERROR ") {
                return Err(line[i + "POD-ERROR ".len()..].to_string());
            }
        }
        Err(format!(
            "pod {}: {role} printed no result: {stdout}{}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        remove_namespace(&self.ns);
    }
}

/// An app running in a pod; killed on drop.
pub struct PodApp {
    // A std Mutex so drop can reach the child through `&self` methods' rules; never awaited.
    child: Mutex<Child>,
}

impl Drop for PodApp {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        process::terminate(&mut child, TERM_GRACE);
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn env_addr(name: &str) -> SocketAddr {
    env(name)
        .parse()
        .unwrap_or_else(|e| panic!("{name}: not IP:PORT: {e}"))
}

/// What `pod_helper` does inside a pod; returns at once elsewhere. Apps run until killed;
/// clients print one `POD-RESULT <json>` (or `POD-ERROR <message>`) line and exit.
pub fn helper_main() {
    let Ok(role) = std::env::var(HELPER_ENV) else {
        return;
    };
    let mark_ready = || {
        std::fs::write(env("MESHPILOT_POD_READY"), b"ready")
            .unwrap_or_else(|e| panic!("write ready file: {e}"));
    };
    match role.as_str() {
        "http-app" => {
            let addr = env_addr("MESHPILOT_POD_ADDR");
            let _app = super::Backend::start(addr.ip(), addr.port(), &env("MESHPILOT_POD_NAME"));
            mark_ready();
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        "tcp-app" => {
            let addr = env_addr("MESHPILOT_POD_ADDR");
            let name = env("MESHPILOT_POD_NAME");
            let listener =
                TcpListener::bind(addr).unwrap_or_else(|e| panic!("tcp app: bind {addr}: {e}"));
            mark_ready();
            for mut conn in listener.incoming().flatten() {
                let peer = conn.peer_addr().map(|p| p.to_string()).unwrap_or_default();
                let _ = conn.write_all(format!("{name} {peer}\n").as_bytes());
            }
        }
        "http-get" => {
            // A name resolves through the pod's own /etc/hosts.
            let target =
                match std::net::ToSocketAddrs::to_socket_addrs(&env("MESHPILOT_POD_TARGET"))
                    .map(|mut a| a.next())
                {
                    Ok(Some(a)) => a,
                    other => {
                        println!(
                            "POD-ERROR resolve {}: {other:?}",
                            env("MESHPILOT_POD_TARGET")
                        );
                        std::process::exit(0);
                    }
                };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("runtime: {e}"));
            let got = rt.block_on(super::client::try_get(
                target,
                &env("MESHPILOT_POD_HOST"),
                &env("MESHPILOT_POD_PATH"),
                &[],
            ));
            match got {
                Ok(r) => println!(
                    "POD-RESULT {}",
                    json!({"status": r.status, "headers": r.headers, "body": r.body})
                ),
                Err(e) => println!("POD-ERROR {e:#}"),
            }
        }
        "tcp-read" => {
            let target = env_addr("MESHPILOT_POD_TARGET");
            let read = || -> std::io::Result<String> {
                let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                let mut text = String::new();
                s.read_to_string(&mut text)?;
                Ok(text)
            };
            match read() {
                Ok(text) => println!("POD-RESULT {}", Value::from(text)),
                Err(e) => println!("POD-ERROR connect/read {target}: {e}"),
            }
        }
        other if super::pod_roles::run(other, &mark_ready) => {}
        other if super::pod_tls::run(other, &mark_ready) => {}
        other => panic!("unknown {HELPER_ENV} role {other:?}"),
    }
    std::process::exit(0);
}
