//! The service under load: an `enroll-service` process this run starts (`init` + `serve` on a
//! fresh state directory) or one already running, and what `/proc` says about it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use oxroot_client::channel;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint, Identity};

use super::quota::CpuQuota;
use super::{Error, Pinned};

/// How long `serve` may take to print its listening address.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the service is and how to reach it.
#[derive(Clone, Debug)]
pub enum Target {
    /// Start `service_bin init` + `serve --listen 127.0.0.1:0` on a fresh state directory
    /// (`state_dir`, or a temporary one removed at the end).
    Spawn {
        /// The `enroll-service` binary.
        service_bin: PathBuf,
        /// Keep the state here instead of a temporary directory.
        state_dir: Option<PathBuf>,
        /// Where the CA keys live.
        ca_backend: CaBackend,
        /// Where the registry lives, and how many `serve` replicas share it.
        registry: RegistryChoice,
    },
    /// A running service.
    Existing {
        /// `https://HOST:PORT`.
        url: String,
        /// Directory with `root.pem`, `operator.pem` and `operator.key` (as `enrollctl`).
        profile: PathBuf,
        /// Its process ID, for CPU and memory; found from the listening port if not given.
        pid: Option<u32>,
    },
}

/// Where a spawned service keeps its CA keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaBackend {
    /// Sealed files under a throwaway passphrase.
    Sealed,
    /// A throwaway SoftHSM2 token (`softhsm2-util` and the module must be installed).
    Pkcs11,
}

impl CaBackend {
    /// `sealed` or `pkcs11`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sealed => "sealed",
            Self::Pkcs11 => "pkcs11",
        }
    }
}

/// Where a spawned service keeps its registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryChoice {
    /// The embedded sled store in the state directory (one process).
    Sled,
    /// A throwaway PostgreSQL cluster, shared by this many `serve` replicas.
    Postgres {
        /// `serve` processes on the one database.
        replicas: usize,
    },
}

impl RegistryChoice {
    /// `sled` or `postgres`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sled => "sled",
            Self::Postgres { .. } => "postgres",
        }
    }

    /// `serve` processes.
    #[must_use]
    pub const fn replicas(self) -> usize {
        match self {
            Self::Sled => 1,
            Self::Postgres { replicas } => replicas,
        }
    }
}

/// Debian's SoftHSM2 module.
const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A throwaway SoftHSM2 token in `dir`: its config and the token URI `init` takes.
fn softhsm_token(dir: &Path) -> Result<(PathBuf, String), Error> {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens)?;
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )?;
    let mut pin = [0u8; 8];
    aws_lc_rs::rand::fill(&mut pin).map_err(|_| "RNG failed")?;
    let pin = hex::encode(pin);
    let pin_file = dir.join("pin");
    std::fs::write(&pin_file, format!("{pin}\n"))?;
    let made = std::process::Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "--init-token",
            "--free",
            "--label",
            "loadgen",
            "--so-pin",
            &pin,
            "--pin",
            &pin,
        ])
        .output()
        .map_err(|e| format!("softhsm2-util (apt-get install softhsm2): {e}"))?;
    if !made.status.success() {
        return Err(format!(
            "softhsm2-util --init-token failed: {}",
            String::from_utf8_lossy(&made.stderr).trim()
        )
        .into());
    }
    let uri = format!(
        "pkcs11:token=loadgen?module-path={SOFTHSM_MODULE}&pin-source=file:{}",
        pin_file.display()
    );
    Ok((conf, uri))
}

/// A service this run talks to: one process, or several replicas on one database.
#[derive(Debug)]
pub(super) struct Service {
    /// `https://127.0.0.1:PORT` of the first replica (the operator's).
    pub(super) url: String,
    /// Every replica's URL; devices are spread over them.
    pub(super) urls: Vec<String>,
    /// The root devices pin.
    pub(super) root_pem: Vec<u8>,
    /// The operator profile (platform admin for a spawned service).
    pub(super) profile: PathBuf,
    /// Process ID of the first replica, when known.
    pub(super) pid: Option<u32>,
    /// Every replica's process ID.
    pids: Vec<u32>,
    /// The registry directory, when known (spawned services on sled).
    pub(super) registry_dir: Option<PathBuf>,
    children: Vec<Child>,
    /// The database, for services on PostgreSQL this run started (stopped when dropped, after
    /// the replicas).
    cluster: Option<crate::postgres::Cluster>,
    _temp: Option<tempfile::TempDir>,
}

/// What the database did during a run: its counters, read before and after.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct DatabaseCounters {
    /// Committed transactions (`pg_stat_database.xact_commit`).
    pub(super) transactions: i64,
    /// WAL bytes written (`pg_stat_wal.wal_bytes`).
    pub(super) wal_bytes: f64,
    /// WAL flushes to disk (`pg_stat_wal.wal_sync`).
    pub(super) wal_syncs: i64,
    /// CPU of the postmaster and every backend, all of them.
    pub(super) cpu: Duration,
}

impl Service {
    /// Starts or attaches to the service.
    ///
    /// # Errors
    /// The binary is missing, `init` fails, `serve` does not come up, or the profile is
    /// unreadable.
    pub(super) async fn start(target: &Target) -> Result<Self, Error> {
        match target {
            Target::Spawn {
                service_bin,
                state_dir,
                ca_backend,
                registry,
            } => spawn(service_bin, state_dir.as_deref(), *ca_backend, *registry).await,
            Target::Existing { url, profile, pid } => {
                let root_pem = read(&profile.join("root.pem"))?;
                let pid = match pid {
                    Some(pid) => Some(*pid),
                    None => port_of(url).and_then(listener_pid),
                };
                Ok(Self {
                    url: url.clone(),
                    urls: vec![url.clone()],
                    root_pem,
                    profile: profile.clone(),
                    pid,
                    pids: pid.into_iter().collect(),
                    registry_dir: None,
                    children: Vec::new(),
                    cluster: None,
                    _temp: None,
                })
            }
        }
    }

    /// An operator channel (mutual TLS with the profile's certificate).
    ///
    /// # Errors
    /// Unreadable profile files or a failed connection.
    pub(super) async fn operator_channel(&self) -> Result<Channel, Error> {
        let cert = read(&self.profile.join("operator.pem"))?;
        let key = read(&self.profile.join("operator.key"))?;
        let endpoint = channel::tls_endpoint(
            channel::service_endpoint(&self.url)?,
            &self.root_pem,
            Some(Identity::from_pem(cert, key)),
        )?;
        Ok(channel::connect(&endpoint).await?)
    }

    /// The device-side endpoints, one per replica: TLS pinned to the service's root, no
    /// client certificate.
    ///
    /// # Errors
    /// A malformed URL or root.
    pub(super) fn device_endpoints(&self) -> Result<Vec<Endpoint>, Error> {
        self.urls
            .iter()
            .map(|url| {
                // Thousands of handshakes queue on two cores: a device waits longer than a
                // person would.
                Ok(
                    channel::tls_endpoint(channel::service_endpoint(url)?, &self.root_pem, None)?
                        .connect_timeout(Duration::from_secs(30)),
                )
            })
            .collect()
    }

    /// CPU time the service has used so far (every replica, all threads, user + system), if
    /// its process IDs are known.
    #[must_use]
    pub(super) fn cpu(&self) -> Option<Duration> {
        if self.pids.is_empty() {
            return None;
        }
        self.pids.iter().map(|pid| process_cpu(*pid)).sum()
    }

    /// CPU time of each live thread of the service so far (every replica).
    #[must_use]
    pub(super) fn thread_cpu(&self) -> ThreadCpu {
        ThreadCpu(self.pids.iter().flat_map(|pid| threads_cpu(*pid)).collect())
    }

    /// Context switches of the service's threads so far (every replica, voluntary and
    /// involuntary), if its process IDs are known. Threads that have exited are not counted.
    #[must_use]
    pub(super) fn context_switches(&self) -> Option<u64> {
        if self.pids.is_empty() {
            return None;
        }
        self.pids
            .iter()
            .map(|pid| process_context_switches(*pid))
            .sum()
    }

    /// Moves every thread of the service to `service_cpus` and every thread of this process
    /// to the other CPUs (`taskset`); threads started later inherit their creator's CPUs.
    ///
    /// # Errors
    /// No CPU left for the load generator, a CPU that does not exist, the service's process
    /// IDs unknown, or `taskset` failed.
    pub(super) fn pin(&self, service_cpus: &[usize], nproc: usize) -> Result<Pinned, Error> {
        if let Some(cpu) = service_cpus.iter().find(|cpu| **cpu >= nproc) {
            return Err(format!("--pin-service: CPU {cpu} does not exist (nproc {nproc})").into());
        }
        let loadgen_cpus: Vec<usize> = (0..nproc).filter(|c| !service_cpus.contains(c)).collect();
        if loadgen_cpus.is_empty() || service_cpus.is_empty() {
            return Err("--pin-service must leave the load generator at least one CPU".into());
        }
        if self.pids.is_empty() {
            return Err("--pin-service needs the service's process ID".into());
        }
        if self.pids.contains(&std::process::id()) {
            return Err("--pin-service needs a service in another process".into());
        }
        for pid in &self.pids {
            taskset(*pid, service_cpus)?;
        }
        taskset(std::process::id(), &loadgen_cpus)?;
        Ok(Pinned {
            service_cpus: service_cpus.to_vec(),
            loadgen_cpus,
        })
    }

    /// Limits every replica together to `cpus` CPUs' worth of time until the returned guard
    /// is dropped.
    ///
    /// # Errors
    /// As [`CpuQuota::apply`].
    pub(super) fn limit_cpu(&self, cpus: f64, nproc: usize) -> Result<CpuQuota, Error> {
        CpuQuota::apply(&self.pids, cpus, nproc)
    }

    /// Replicas serving.
    #[must_use]
    pub(super) fn replicas(&self) -> usize {
        self.urls.len()
    }

    /// The database's counters now, for a service on a PostgreSQL cluster this run started.
    /// The server publishes its statistics about once a second, so callers wait that long
    /// after the work they measure.
    pub(super) async fn database_counters(&self) -> Option<DatabaseCounters> {
        let cluster = self.cluster.as_ref()?;
        let (client, connection) = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls)
            .await
            .ok()?;
        tokio::spawn(connection);
        let transactions: i64 = client
            .query_one(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
                &[],
            )
            .await
            .ok()?
            .get(0);
        let wal = client
            .query_one("SELECT wal_bytes::float8, wal_sync FROM pg_stat_wal", &[])
            .await
            .ok()?;
        let postmaster = cluster.postmaster_pid()?;
        let cpu = process_cpu(postmaster)?
            + children_of(postmaster)
                .into_iter()
                .filter_map(process_cpu)
                .sum::<Duration>();
        Some(DatabaseCounters {
            transactions,
            wal_bytes: wal.get(0),
            wal_syncs: wal.get(1),
            cpu,
        })
    }

    /// `(VmHWM, VmRSS)` in bytes: peak and current resident memory.
    #[must_use]
    pub(super) fn memory(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        Some((
            status_kb(&status, "VmHWM:")? * 1024,
            status_kb(&status, "VmRSS:")? * 1024,
        ))
    }

    /// Bytes the registry holds on disk: sled's directory, or the database cluster's.
    #[must_use]
    pub(super) fn registry_bytes(&self) -> Option<u64> {
        match &self.cluster {
            Some(cluster) => Some(cluster.data_bytes()),
            None => self.registry_dir.as_deref().map(directory_bytes),
        }
    }

    /// Stops the replicas this run started (SIGTERM, then SIGKILL after 10 s), then the
    /// database.
    pub(super) async fn stop(mut self) {
        for mut child in std::mem::take(&mut self.children) {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        if let Some(cluster) = self.cluster.take() {
            let _ = tokio::task::spawn_blocking(move || drop(cluster)).await;
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()).into())
}

async fn spawn(
    service_bin: &Path,
    state_dir: Option<&Path>,
    ca_backend: CaBackend,
    registry: RegistryChoice,
) -> Result<Service, Error> {
    if !service_bin.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p enroll-service`, or pass \
             --service-bin",
            service_bin.display()
        )
        .into());
    }
    let temp = match state_dir {
        Some(_) => None,
        None => Some(tempfile::tempdir()?),
    };
    let state = state_dir
        .map(Path::to_path_buf)
        .or_else(|| temp.as_ref().map(|t| t.path().join("state")))
        .ok_or("no state directory")?;
    // A throwaway passphrase: the CA lives only as long as this run's state directory.
    let mut passphrase = [0u8; 16];
    aws_lc_rs::rand::fill(&mut passphrase).map_err(|_| "RNG failed")?;
    let passphrase = hex::encode(passphrase);
    let mut init = Command::new(service_bin);
    init.arg("init").arg("--state-dir").arg(&state);
    // The token sits beside the state directory, and lives as long as it.
    let softhsm = match ca_backend {
        CaBackend::Sealed => {
            init.env("OXROOT_CA_PASSPHRASE", &passphrase);
            None
        }
        CaBackend::Pkcs11 => {
            let hsm_dir = state.with_file_name("softhsm");
            let (conf, uri) = softhsm_token(&hsm_dir)?;
            init.args(["--ca-backend", "pkcs11", "--pkcs11-token", &uri])
                .env("SOFTHSM2_CONF", &conf);
            Some(conf)
        }
    };
    let cluster = match registry {
        RegistryChoice::Sled => None,
        RegistryChoice::Postgres { .. } => {
            let cluster = tokio::task::spawn_blocking(crate::postgres::Cluster::start).await?;
            init.args(["--postgres", &cluster.url()]);
            Some(cluster)
        }
    };
    let init = init.stdout(Stdio::null()).output().await?;
    if !init.status.success() {
        return Err(format!(
            "enroll-service init failed: {}",
            String::from_utf8_lossy(&init.stderr).trim()
        )
        .into());
    }
    let envs = match &softhsm {
        Some(conf) => vec![("SOFTHSM2_CONF", conf.as_os_str().to_owned())],
        None => vec![("OXROOT_CA_PASSPHRASE", passphrase.clone().into())],
    };
    let (mut urls, mut pids, mut children) = (Vec::new(), Vec::new(), Vec::new());
    for replica in 0..registry.replicas() {
        let (url, child) = serve(service_bin, &state, replica, &envs).await?;
        urls.push(url);
        pids.extend(child.id());
        children.push(child);
    }
    let profile = state.join("admin");
    Ok(Service {
        url: urls[0].clone(),
        urls,
        root_pem: read(&profile.join("root.pem"))?,
        profile,
        pid: pids.first().copied(),
        pids,
        registry_dir: Some(state.join("registry")),
        children,
        cluster,
        _temp: temp,
    })
}

/// Starts one `serve` replica of `state` and waits until it listens; returns its URL.
async fn serve(
    service_bin: &Path,
    state: &Path,
    replica: usize,
    envs: &[(&str, std::ffi::OsString)],
) -> Result<(String, Child), Error> {
    // The service logs at its default level into a file, as a deployment would.
    let log_file = state.join(format!("serve-{replica}.log"));
    let log = std::fs::File::create(&log_file)?;
    let mut child = Command::new(service_bin)
        .arg("serve")
        .arg("--state-dir")
        .arg(state)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .envs(envs.iter().map(|(k, v)| (*k, v.clone())))
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout from serve")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(START_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix("listening on ") {
                let addr = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                return Ok::<_, std::io::Error>(Some(addr));
            }
        }
        Ok(None)
    })
    .await
    .map_err(|_| "enroll-service serve did not start within 60 s")??
    .ok_or_else(|| {
        format!(
            "enroll-service serve exited before listening; see {}",
            log_file.display()
        )
    })?;
    // Keep draining stdout so the service never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((format!("https://{addr}"), child))
}

/// Processes whose parent is `pid` (a postmaster's backends), from `/proc/<pid>/stat`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.get(stat.rfind(')')? + 1..)?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, 100 on Linux),
/// asked once: every CPU snapshot around the loop reads it.
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// CPU time of each thread of a set of processes at one moment, by process and thread ID.
#[derive(Debug, Default)]
pub(super) struct ThreadCpu(HashMap<(u32, u32), (String, Duration)>);

impl ThreadCpu {
    /// The CPU time each group of threads used since `earlier`, grouped by thread name with a
    /// trailing `-<number>` dropped (`sled-io-3` and `sled-io-5` are `sled-io`). A thread
    /// started since counts whole; one that ended since is missing, so the groups can add up
    /// to less than the process's total.
    #[must_use]
    pub(super) fn since(&self, earlier: &Self) -> BTreeMap<String, Duration> {
        let mut groups = BTreeMap::new();
        for (id, (name, now)) in &self.0 {
            let before = earlier.0.get(id).map_or(Duration::ZERO, |(_, cpu)| *cpu);
            *groups.entry(thread_group(name).to_owned()).or_default() += now.saturating_sub(before);
        }
        groups
    }
}

/// A thread's name without a trailing `-<number>`: the name of its pool.
fn thread_group(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((pool, number))
            if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) =>
        {
            pool
        }
        _ => name,
    }
}

/// Name and utime + stime of every live thread of a process, from `/proc/<pid>/task/*/stat`.
fn threads_cpu(pid: u32) -> Vec<((u32, u32), (String, Duration))> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let ticks = clock_ticks();
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| {
            let tid = task.file_name().to_str()?.parse::<u32>().ok()?;
            // A thread may exit between the listing and the read.
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let (name, cpu) = stat_cpu(&stat, ticks)?;
            Some(((pid, tid), (name.to_owned(), cpu)))
        })
        .collect()
}

/// The command name and utime + stime of a `/proc` `stat` line.
fn stat_cpu(stat: &str, ticks: u64) -> Option<(&str, Duration)> {
    // The name is in parentheses and may itself contain spaces and parentheses; the fields
    // after it start at field 3 (state).
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((
        stat.get(open + 1..close)?,
        Duration::from_micros((utime + stime) * 1_000_000 / ticks.max(1)),
    ))
}

/// utime + stime of a process, all threads, from `/proc/<pid>/stat`.
#[must_use]
pub(super) fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_cpu(&stat, clock_ticks()).map(|(_, cpu)| cpu)
}

/// Gives the load generator every CPU again after a pinned loop (a second run in the same
/// process, `--ca-backend both`, starts from all of them).
///
/// # Errors
/// `taskset` failed.
pub(super) fn unpin_self(nproc: usize) -> Result<(), Error> {
    taskset(std::process::id(), &(0..nproc).collect::<Vec<_>>())
}

/// Moves every thread of process `pid` to `cpus`.
fn taskset(pid: u32, cpus: &[usize]) -> Result<(), Error> {
    let list = cpus
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let status = std::process::Command::new("taskset")
        .args(["--all-tasks", "--cpu-list", "--pid"])
        .arg(&list)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run taskset (util-linux): {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("taskset could not pin process {pid} to CPUs {list}").into())
    }
}

/// Voluntary and involuntary context switches of every live thread of a process, from
/// `/proc/<pid>/task/*/status`: each one is a thread put to sleep or preempted, so their
/// count per onboarding says how many wake-ups it costs.
fn process_context_switches(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut switches = 0;
    for task in tasks.flatten() {
        // A thread may exit between the listing and the read.
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        for field in ["voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"] {
            switches += status_kb(&status, field).unwrap_or(0);
        }
    }
    Some(switches)
}

/// The first number after `field` in a `/proc` status file (kB for the memory fields).
fn status_kb(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn directory_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|entry| match entry.metadata() {
                Ok(m) if m.is_dir() => directory_bytes(&entry.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

fn port_of(url: &str) -> Option<u16> {
    url.rsplit(':').next()?.trim_end_matches('/').parse().ok()
}

/// The process listening on TCP `port`: the socket's inode from `/proc/net/tcp{,6}`, then
/// the process holding a descriptor to it (only processes of this user are visible).
fn listener_pid(port: u16) -> Option<u32> {
    const LISTEN: &str = "0A";
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local_port = fields.get(1)?.rsplit(':').next()?;
                    let matches = u16::from_str_radix(local_port, 16).ok()? == port
                        && *fields.get(3)? == LISTEN;
                    matches.then(|| fields.get(9).map(|s| (*s).to_owned()))?
                })
                .collect::<Vec<_>>()
        })
        .next()?;
    let wanted = format!("socket:[{inode}]");
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let entry = entry.ok()?;
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        std::fs::read_dir(entry.path().join("fd"))
            .ok()?
            .filter_map(Result::ok)
            .any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == wanted.as_str())
            })
            .then_some(pid)
    })
}

/// `perf record` attached to the service for the measured loop only.
#[derive(Debug)]
pub(super) struct PerfRecord {
    child: Child,
}

impl PerfRecord {
    /// Starts `perf record -g` (DWARF call graphs) on `pid`, writing `output`.
    ///
    /// # Errors
    /// `perf` is not installed or cannot attach.
    pub(super) async fn start(pid: u32, output: &Path) -> Result<Self, Error> {
        let child = Command::new("perf")
            .args(["record", "-F", "999", "--call-graph", "dwarf,16384", "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(output)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run perf (apt-get install linux-perf): {e}"))?;
        // perf needs a moment to attach to every thread.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(Self { child })
    }

    /// Stops it (SIGINT, as Ctrl-C) and waits for the file to be written.
    pub(super) async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pools are named without their members' numbers; a name that merely ends in a dash, or
    /// in something else than digits, is its own group.
    #[test]
    fn threads_group_by_pool() {
        assert_eq!(thread_group("sled-io-3"), "sled-io");
        assert_eq!(thread_group("sled-io-12"), "sled-io");
        assert_eq!(thread_group("tokio-rt-worker"), "tokio-rt-worker");
        assert_eq!(thread_group("registry-writer"), "registry-writer");
        assert_eq!(thread_group("pool-"), "pool-");
        assert_eq!(thread_group("7"), "7");
    }

    /// The name is everything between the first `(` and the last `)`, whatever it contains;
    /// utime and stime are the 14th and 15th fields.
    #[test]
    fn a_stat_line_gives_its_name_and_cpu() {
        let stat = "4242 (odd) name (x)) S 1 4242 4242 0 -1 4194560 10 0 0 0 150 50 0 0 20 0 9 0";
        let (name, cpu) = stat_cpu(stat, 100).expect("parsed");
        assert_eq!(name, "odd) name (x)");
        assert_eq!(cpu, Duration::from_secs(2));
        assert!(stat_cpu("4242 (cut short) S 1", 100).is_none());
    }

    /// A thread counts what it used since the earlier snapshot, a new one all it used; the
    /// members of a pool add up.
    #[test]
    fn thread_cpu_is_the_difference_by_pool() {
        let snapshot = |threads: &[(u32, &str, u64)]| {
            ThreadCpu(
                threads
                    .iter()
                    .map(|&(tid, name, ms)| {
                        ((1, tid), (name.to_owned(), Duration::from_millis(ms)))
                    })
                    .collect(),
            )
        };
        let before = snapshot(&[(1, "main", 100), (2, "sled-io-0", 10), (3, "gone", 5)]);
        let after = snapshot(&[(1, "main", 130), (2, "sled-io-0", 15), (4, "sled-io-1", 7)]);
        let used = after.since(&before);
        assert_eq!(used["main"], Duration::from_millis(30));
        assert_eq!(used["sled-io"], Duration::from_millis(12));
        assert_eq!(used.len(), 2, "{used:?}");
    }
}
