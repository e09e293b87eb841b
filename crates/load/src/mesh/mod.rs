//! The mesh generator for benchmarks and load tests: S services × E endpoints (Pods or
//! EndpointSlices), V VirtualServices with weights (across DestinationRule subsets when the
//! service has one), D DestinationRules, spread over K namespaces, written as a manifests
//! directory the file source reads. [`Mesh`] keeps the generated state so that the mutators of
//! the change workloads (replace an endpoint, edit a weight, add or remove a service) can rewrite
//! the affected file atomically and say what every proxy should then receive ([`Expect`]).
//!
//! Three optional shapes exercise the per-client sets the server keeps: namespaces with
//! DestinationRules of their own for hosts of another namespace (their clients get their own
//! cluster sets), endpoints spread over zones with outlier detection on every service (clusters
//! balanced by locality: one endpoint set per client locality), and a Sidecar per namespace
//! limiting egress to the namespace itself and `istio-system`.
//!
//! Layout: `ns-K/svc-I.yaml` (the Service and its Pods or EndpointSlice), `ns-K/svc-I.dr.yaml`,
//! `ns-K/svc-I.vs.yaml`, `ns-K/namespace-rules.yaml`, `ns-K/sidecar.yaml`, `namespaces.yaml`, and
//! `.mesh.json` (the [`MeshSpec`], so another process can rebuild the same state). Everything is deterministic in the spec; only the addresses
//! handed out by mutators depend on a per-run seed, so a change always differs from what is on
//! disk.

mod yaml;

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use meshpilot_compile::names::outbound_cluster;

/// The port every generated service listens on (route configuration `"80"` on sidecars).
pub const SERVICE_PORT: u16 = 80;
/// The container port endpoints listen on.
pub const TARGET_PORT: u16 = 8080;
/// The spec file written beside the manifests (hidden: the file source skips it).
pub const SPEC_FILE: &str = ".mesh.json";

/// How endpoints are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointKind {
    /// One Running, Ready Pod per endpoint, labelled `app` and `version` (v1/v2 alternating), so
    /// DestinationRule subsets select them.
    Pods,
    /// One EndpointSlice per service (no Pods: subsets select nothing).
    Slices,
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshSpec {
    pub services: usize,
    pub endpoints: usize,
    pub namespaces: usize,
    /// VirtualServices (one per service, for the first V services).
    pub virtual_services: usize,
    /// DestinationRules with subsets v1/v2 (for the first D services).
    pub destination_rules: usize,
    pub endpoint_kind: EndpointKind,
    /// The first K namespaces each get DestinationRules of their own (`exportTo: ["."]`,
    /// `ROUND_ROBIN` rather than the default `LEAST_REQUEST`) for [`NAMESPACE_RULE_HOSTS`]
    /// services of the next namespace.
    #[serde(default)]
    pub namespace_rules: usize,
    /// Zones the endpoints are spread over (0: endpoints carry no locality). Needs Pods (an
    /// EndpointSlice endpoint takes its locality from its Pod); every service then has a
    /// DestinationRule with outlier detection, so its clusters are balanced by locality.
    #[serde(default)]
    pub localities: usize,
    /// One Sidecar per namespace, `egress: [{hosts: ["./*", "istio-system/*"]}]`.
    #[serde(default)]
    pub sidecars: bool,
}

/// How many hosts of another namespace each namespace with rules of its own covers.
pub const NAMESPACE_RULE_HOSTS: usize = 10;

/// The region and zone of zone `z` of `zones`: `region-0`, `zone-Z`, the upper half of the
/// zones in `region-1` (one region for a single zone, two otherwise), so that clients see
/// endpoints in their own zone, in another zone of their region and in another region. The
/// mesh generator labels Pods with it and the load tool gives it to proxies' nodes.
pub fn zone_locality(z: usize, zones: usize) -> (String, String) {
    let zones = zones.max(1);
    let z = z % zones;
    (format!("region-{}", z * 2 / zones), format!("zone-{z}"))
}

impl MeshSpec {
    /// S services × E endpoints over `namespaces` namespaces, no routing objects.
    pub fn plain(services: usize, endpoints: usize, namespaces: usize) -> MeshSpec {
        MeshSpec {
            services,
            endpoints,
            namespaces: namespaces.max(1),
            virtual_services: 0,
            destination_rules: 0,
            endpoint_kind: EndpointKind::Slices,
            namespace_rules: 0,
            localities: 0,
            sidecars: false,
        }
    }

    /// Refuses combinations that would not produce what they ask for.
    pub fn check(&self) -> Result<(), MeshError> {
        if self.localities > 0 && self.endpoint_kind == EndpointKind::Slices {
            return Err(MeshError::Invalid(
                "localities need Pods (--endpoint-kind pods): an EndpointSlice endpoint takes \
                 its locality from its Pod",
            ));
        }
        Ok(())
    }
}

/// Why the mesh could not be written or changed.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// A file or directory could not be written, renamed or removed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `.mesh.json` is missing or malformed.
    #[error("{path}: not a mesh spec: {message}")]
    Spec { path: PathBuf, message: String },
    /// A mutator has nothing to work on (no VirtualService to edit, no service to remove).
    #[error("cannot apply {0}: the mesh has nothing it could change")]
    Nothing(&'static str),
    /// The spec asks for a combination the generator cannot write faithfully.
    #[error("invalid mesh spec: {0}")]
    Invalid(&'static str),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> MeshError + '_ {
    move |source| MeshError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What every proxy should receive once a change has reached it, checked on the content of the
/// responses (never on versions, so a coalesced change still counts and a missed one never does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Expect {
    /// The ClusterLoadAssignment `cla` lists an endpoint with address `ip`.
    Endpoint { cla: String, ip: String },
    /// RouteConfiguration `route` gives `weight` to cluster `cluster` in a weighted route.
    Weight {
        route: String,
        cluster: String,
        weight: u32,
    },
    /// CDS holds cluster `cluster`.
    ClusterPresent { cluster: String },
    /// CDS no longer holds cluster `cluster`.
    ClusterAbsent { cluster: String },
}

/// A change workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    /// Replace one endpoint address of one service (services taken round-robin).
    Endpoint,
    /// Edit the weights of one VirtualService (round-robin).
    Weight,
    /// Add a new service with its endpoints.
    AddService,
    /// Remove a service (ones added earlier in the run first, else generated ones).
    RemoveService,
    /// Write nothing, but expect a new endpoint: the tool must report it as not converged.
    Phantom,
}

/// One generated service's current state.
#[derive(Debug, Clone)]
struct Svc {
    name: String,
    namespace: String,
    /// Endpoint addresses; index j has version v1 when j is even.
    ips: Vec<String>,
    has_dr: bool,
    /// Weight of the first destination, when the service has a VirtualService.
    vs_weight: Option<u32>,
    /// Written by this process after generation (an added service).
    added: bool,
    removed: bool,
}

/// The generated mesh and its current state.
#[derive(Debug, Clone)]
pub struct Mesh {
    pub spec: MeshSpec,
    dir: PathBuf,
    domain: String,
    services: Vec<Svc>,
    /// Source of addresses and names for mutations; starts at a per-run seed.
    fresh: u32,
    seed: u32,
    /// Round-robin cursors of the mutators.
    next_endpoint: usize,
    next_weight: usize,
    /// Files rewritten since the mesh was generated (restored by [`Mesh::restore`]).
    touched: BTreeSet<usize>,
}

impl Mesh {
    /// The state `spec` describes, for directory `dir` (nothing is written).
    pub fn new(spec: MeshSpec, dir: impl Into<PathBuf>) -> Mesh {
        let ns = spec.namespaces.max(1);
        let services = (0..spec.services)
            .map(|i| Svc {
                name: format!("svc-{i}"),
                namespace: format!("ns-{}", i % ns),
                ips: (0..spec.endpoints)
                    .map(|j| ip_from(10, (i * spec.endpoints + j) as u32))
                    .collect(),
                has_dr: i < spec.destination_rules,
                vs_weight: (i < spec.virtual_services).then_some(90),
                added: false,
                removed: false,
            })
            .collect();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
            .unwrap_or(0);
        Mesh {
            spec,
            dir: dir.into(),
            domain: "cluster.local".to_string(),
            services,
            fresh: 0,
            seed,
            next_endpoint: 0,
            next_weight: 0,
            touched: BTreeSet::new(),
        }
    }

    /// Reads `DIR/.mesh.json` and rebuilds the generated state (as written by [`Mesh::write`]).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Mesh, MeshError> {
        let dir = dir.into();
        let path = dir.join(SPEC_FILE);
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        let spec: MeshSpec = serde_json::from_str(&text).map_err(|e| MeshError::Spec {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(Mesh::new(spec, dir))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes every manifest and `.mesh.json` (each file atomically). Files of an earlier mesh
    /// in the directory that this spec does not produce are left alone: use a fresh directory.
    pub fn write(&self) -> Result<(), MeshError> {
        self.spec.check()?;
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let namespaces: BTreeSet<&str> =
            self.services.iter().map(|s| s.namespace.as_str()).collect();
        let mut ns_yaml = String::new();
        for ns in &namespaces {
            ns_yaml.push_str(&yaml::namespace(ns));
        }
        write_atomic(&self.dir.join("namespaces.yaml"), &ns_yaml)?;
        for i in 0..self.services.len() {
            self.write_service(i)?;
        }
        for (k, ns) in namespaces.iter().enumerate() {
            let dir = self.dir.join(ns);
            if k < self.spec.namespace_rules {
                let hosts = self.namespace_rule_hosts(ns);
                if !hosts.is_empty() {
                    write_atomic(
                        &dir.join("namespace-rules.yaml"),
                        &yaml::namespace_rules(ns, &hosts),
                    )?;
                }
            }
            if self.spec.sidecars {
                let next = self.next_namespace(ns);
                write_atomic(&dir.join("sidecar.yaml"), &yaml::sidecar(ns, &next))?;
            }
        }
        let spec = serde_json::to_string_pretty(&self.spec).unwrap_or_default();
        write_atomic(&self.dir.join(SPEC_FILE), &spec)
    }

    /// The namespace after `ns` (`ns-K` → `ns-K+1`, the last wrapping to `ns-0`).
    fn next_namespace(&self, ns: &str) -> String {
        let count = self.spec.namespaces.max(1);
        let k: usize = ns
            .strip_prefix("ns-")
            .and_then(|k| k.parse().ok())
            .unwrap_or(0);
        format!("ns-{}", (k + 1) % count)
    }

    /// The services of the namespace after `ns` (in generation order) that `ns`'s own rules
    /// cover: up to [`NAMESPACE_RULE_HOSTS`] fully qualified names, none with one namespace.
    fn namespace_rule_hosts(&self, ns: &str) -> Vec<String> {
        let next = self.next_namespace(ns);
        if next == ns {
            return Vec::new();
        }
        self.services
            .iter()
            .filter(|s| s.namespace == next && !s.added)
            .take(NAMESPACE_RULE_HOSTS)
            .map(|s| self.fqdn(s))
            .collect()
    }

    /// The locality label of endpoint `j` of service `i` (`REGION.ZONE`), spread over the zones
    /// so that every service has endpoints in each; `None` without localities.
    fn endpoint_locality(&self, i: usize, j: usize) -> Option<String> {
        let zones = self.spec.localities;
        (zones > 0).then(|| {
            let (region, zone) = zone_locality(i + j, zones);
            format!("{region}.{zone}")
        })
    }

    /// `ns-K/NAME.yaml` for the service, `NAME.dr.yaml` / `NAME.vs.yaml` for its routing.
    fn svc_path(&self, s: &Svc, suffix: &str) -> PathBuf {
        self.dir
            .join(&s.namespace)
            .join(format!("{}{suffix}.yaml", s.name))
    }

    /// Writes (or, for a removed service, deletes) the files of service `i`.
    fn write_service(&self, i: usize) -> Result<(), MeshError> {
        let s = &self.services[i];
        let path = self.svc_path(s, "");
        let outlier = self.spec.localities > 0;
        if s.removed {
            remove_if_present(&path)?;
            // A rule written only for outlier detection goes with its service.
            if outlier && !s.has_dr {
                remove_if_present(&self.svc_path(s, ".dr"))?;
            }
            return Ok(());
        }
        let localities: Vec<Option<String>> = (0..s.ips.len())
            .map(|j| self.endpoint_locality(i, j))
            .collect();
        let body = yaml::service(
            &s.name,
            &s.namespace,
            &s.ips,
            &localities,
            self.spec.endpoint_kind,
        );
        write_atomic(&path, &body)?;
        if s.has_dr || outlier {
            write_atomic(
                &self.svc_path(s, ".dr"),
                &yaml::destination_rule(&s.name, &s.namespace, s.has_dr, outlier),
            )?;
        }
        if let Some(w) = s.vs_weight {
            let other = self.vs_other(i);
            write_atomic(
                &self.svc_path(s, ".vs"),
                &yaml::virtual_service(&s.name, &s.namespace, s.has_dr, &other, w),
            )?;
        }
        Ok(())
    }

    /// The second destination of service `i`'s VirtualService when it has no subsets: the next
    /// service, by fully qualified name.
    fn vs_other(&self, i: usize) -> String {
        let o = &self.services[(i + 1) % self.services.len()];
        self.fqdn(o)
    }

    fn fqdn(&self, s: &Svc) -> String {
        format!("{}.{}.svc.{}", s.name, s.namespace, self.domain)
    }

    /// The EDS/CDS name of a service's default cluster.
    pub fn cluster_name(&self, i: usize) -> String {
        outbound_cluster(SERVICE_PORT, "", &self.fqdn(&self.services[i]))
    }

    fn next_ip(&mut self) -> String {
        self.fresh = self.fresh.wrapping_add(1);
        // 11.0.0.0/8 never overlaps the generated 10.0.0.0/8 endpoints; the seed keeps runs apart.
        ip_from(11, (self.seed & 0xff) << 16 | (self.fresh & 0xffff))
    }

    /// Applies one change of `kind` to the files and returns what proxies should then hold.
    /// The expectation is computed before the file is written, so the caller can register it
    /// first (use [`Mesh::plan`] and [`Planned::apply`] for that order).
    pub fn plan(&mut self, kind: ChangeKind) -> Result<Planned, MeshError> {
        match kind {
            ChangeKind::Endpoint | ChangeKind::Phantom => {
                let live: Vec<usize> = (0..self.services.len())
                    .filter(|&i| !self.services[i].removed && !self.services[i].ips.is_empty())
                    .collect();
                if live.is_empty() {
                    return Err(MeshError::Nothing("an endpoint change"));
                }
                let i = live[self.next_endpoint % live.len()];
                let slot = (self.next_endpoint / live.len()) % self.services[i].ips.len();
                self.next_endpoint += 1;
                let ip = self.next_ip();
                let expect = Expect::Endpoint {
                    cla: self.cluster_name(i),
                    ip: ip.clone(),
                };
                if kind == ChangeKind::Phantom {
                    return Ok(Planned {
                        expect,
                        service: None,
                    });
                }
                self.services[i].ips[slot] = ip;
                Ok(self.touch(i, expect))
            }
            ChangeKind::Weight => {
                let with_vs: Vec<usize> = (0..self.services.len())
                    .filter(|&i| !self.services[i].removed && self.services[i].vs_weight.is_some())
                    .collect();
                if with_vs.is_empty() {
                    return Err(MeshError::Nothing("a VirtualService weight edit"));
                }
                let i = with_vs[self.next_weight % with_vs.len()];
                self.next_weight += 1;
                let old = self.services[i].vs_weight.unwrap_or(90);
                // Any weight in 1..=99 other than the current one.
                let weight = 1 + (old + 1 + self.fresh % 97) % 99;
                self.fresh += 1;
                self.services[i].vs_weight = Some(weight);
                let s = &self.services[i];
                let cluster = if s.has_dr {
                    outbound_cluster(SERVICE_PORT, "v1", &self.fqdn(s))
                } else {
                    self.cluster_name(i)
                };
                let expect = Expect::Weight {
                    route: SERVICE_PORT.to_string(),
                    cluster,
                    weight,
                };
                Ok(self.touch(i, expect))
            }
            ChangeKind::AddService => {
                let n = self.services.len();
                let ns = self.spec.namespaces.max(1);
                let ips = (0..self.spec.endpoints.max(1))
                    .map(|_| self.next_ip())
                    .collect();
                self.services.push(Svc {
                    name: format!("added-{:x}-{n}", self.seed & 0xffff),
                    namespace: format!("ns-{}", n % ns),
                    ips,
                    has_dr: false,
                    vs_weight: None,
                    added: true,
                    removed: false,
                });
                let expect = Expect::ClusterPresent {
                    cluster: self.cluster_name(n),
                };
                Ok(self.touch(n, expect))
            }
            ChangeKind::RemoveService => {
                let pick = (0..self.services.len())
                    .rev()
                    .find(|&i| self.services[i].added && !self.services[i].removed)
                    .or_else(|| {
                        (0..self.services.len()).rev().find(|&i| {
                            let s = &self.services[i];
                            !s.removed && s.vs_weight.is_none() && !s.has_dr
                        })
                    })
                    .ok_or(MeshError::Nothing("removing a service"))?;
                self.services[pick].removed = true;
                let expect = Expect::ClusterAbsent {
                    cluster: self.cluster_name(pick),
                };
                Ok(self.touch(pick, expect))
            }
        }
    }

    fn touch(&mut self, i: usize, expect: Expect) -> Planned {
        self.touched.insert(i);
        Planned {
            expect,
            service: Some(i),
        }
    }

    /// Writes the file a planned change touches (nothing for [`ChangeKind::Phantom`]).
    pub fn apply(&self, planned: &Planned) -> Result<(), MeshError> {
        match planned.service {
            Some(i) => self.write_service(i),
            None => Ok(()),
        }
    }

    /// Writes a file with one new Namespace: the index changes, so the server recomputes, but
    /// no proxy's configuration does (the "recompute that changes nothing" check).
    pub fn touch_noop(&mut self) -> Result<PathBuf, MeshError> {
        self.fresh += 1;
        let name = format!("noop-{:x}-{}", self.seed & 0xffff, self.fresh);
        let path = self.dir.join(format!("{name}.yaml"));
        write_atomic(&path, &yaml::namespace(&name))?;
        Ok(path)
    }

    /// Puts every file a mutator touched back to its generated content, and removes added
    /// services and no-op files.
    pub fn restore(&mut self) -> Result<(), MeshError> {
        let original = Mesh::new(self.spec.clone(), self.dir.clone());
        for &i in &self.touched {
            if self.services[i].added {
                // Its outlier-detection rule too, when localities wrote one.
                remove_if_present(&self.svc_path(&self.services[i], ""))?;
                remove_if_present(&self.svc_path(&self.services[i], ".dr"))?;
            } else {
                original.write_service(i)?;
            }
        }
        let entries = fs::read_dir(&self.dir).map_err(io_err(&self.dir))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("noop-") {
                fs::remove_file(e.path()).map_err(io_err(&e.path()))?;
            }
        }
        *self = Mesh {
            seed: self.seed,
            fresh: self.fresh,
            ..original
        };
        Ok(())
    }
}

/// A change whose expectation is known and whose file is not written yet.
#[derive(Debug, Clone)]
pub struct Planned {
    pub expect: Expect,
    service: Option<usize>,
}

/// `a.b.c.d` from a first octet and 24 bits.
fn ip_from(first: u8, n: u32) -> String {
    format!(
        "{first}.{}.{}.{}",
        (n >> 16) & 0xff,
        (n >> 8) & 0xff,
        n & 0xff
    )
}

/// Removes a file; one already gone is fine.
fn remove_if_present(path: &Path) -> Result<(), MeshError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Writes `contents` to a hidden temporary beside `path` and renames it into place, so a
/// watcher never reads half a file.
pub fn write_atomic(path: &Path, contents: &str) -> Result<(), MeshError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp"));
    fs::write(&tmp, contents).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

#[cfg(test)]
mod tests;
