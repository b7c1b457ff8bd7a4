//! The fleet load generator behind `loadgen`: N simulated devices onboard concurrently over
//! real gRPC and TLS against an `enroll-service` process with its durable registry, and the
//! service's CPU per onboarding is set against the crypto floor measured in the same run.
//!
//! ```text
//!  setup (not timed)                                    measured
//!  ─────────────────                                    ────────
//!  manufacture + enrol N emulated chips (every core)    N Onboard exchanges, C in flight,
//!  power each up once (its readout), sign Register      over K shared TLS connections, or one
//!  Register RPCs; CreatePolicy, CreateBatch,            TLS connection per device
//!  ImportDevices (one batch)                            service CPU: /proc/<pid>/stat (all threads)
//!  crypto floor + device answer cost (one core)         service memory: /proc/<pid>/status VmHWM
//! ```
//!
//! The service runs as its own process (started here, or `--service` + `--profile` for one
//! already running), so its CPU and memory are its own. The simulated devices run in this
//! process on the same machine: their cost is reported separately (`device_us_per_onboarding`
//! on one core, and this process's whole CPU per device).

mod floor;
mod onboard;
mod quota;
mod service;
mod setup;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use enroll_service::fleet::{DeviceSigner, percentile, progress_bar};
use oxroot_proto::v1;
use oxroot_proto::v1::operator_client::OperatorClient;

pub use floor::CryptoFloor;
pub use service::{CaBackend, RegistryChoice, Target};

use onboard::Connections;
use service::Service;

/// Errors of the load generator: a message for the operator.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Devices to onboard.
    pub devices: u32,
    /// Shared TLS connections (ignored with `connection_per_device`).
    pub connections: usize,
    /// One TLS connection per device instead of shared ones.
    pub connection_per_device: bool,
    /// Onboardings in flight.
    pub concurrency: usize,
    /// The service.
    pub target: Target,
    /// Owner of the policy and batch.
    pub owner: String,
    /// Iterations of the crypto floor measurement.
    pub floor_iterations: u32,
    /// How the simulated devices sign.
    pub device_signer: DeviceSigner,
    /// Record the service with `perf record -g` during the measured loop, into this file.
    pub perf_record: Option<std::path::PathBuf>,
    /// Idle connections to open (and close) before the loop, to measure their memory.
    pub idle_connections: usize,
    /// Run the service on these CPUs and the load generator on all others during the measured
    /// loop, so that neither preempts the other and repeated runs agree more closely.
    pub service_cpus: Option<Vec<usize>>,
    /// Limit the service to this many CPUs' worth of time during the measured loop (a cgroup
    /// CPU quota), so that it, not the simulated devices, is the bottleneck.
    pub service_cpu_quota: Option<f64>,
    /// Show progress bars.
    pub progress: bool,
}

/// Where the service and the load generator ran during a pinned loop.
#[derive(Clone, Debug, Serialize)]
pub struct Pinned {
    /// The service's CPUs (every replica's threads).
    pub service_cpus: Vec<usize>,
    /// The load generator's CPUs.
    pub loadgen_cpus: Vec<usize>,
}

/// Everything the run measured; the JSON line is this, serialised.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Devices onboarded in the measured loop.
    pub devices: u32,
    /// `shared` or `per-device`.
    pub mode: &'static str,
    /// Where the service's CA keys live: `sealed`, `pkcs11`, or `unknown` for a service this
    /// run did not start.
    pub ca_backend: &'static str,
    /// Where the registry lives: `sled`, `postgres`, or `unknown` for a service this run did
    /// not start.
    pub registry: &'static str,
    /// `serve` replicas the devices were spread over.
    pub replicas: usize,
    /// TLS connections (equal to `devices` for one per device).
    pub connections: usize,
    /// Onboardings in flight.
    pub concurrency: usize,
    /// Credentials received.
    pub onboarded: u64,
    /// Refusals.
    pub refused: u64,
    /// Failures.
    pub failed: u64,
    /// The batch's `onboarded` count read back from the service afterwards.
    pub batch_onboarded: u64,
    /// Wall time of the measured loop.
    pub elapsed_s: f64,
    /// Onboarded devices per second of wall time.
    pub devices_per_s: f64,
    /// Latency percentiles of one onboarding (connect included for one connection per device).
    pub latency_ms_p50: f64,
    /// 95th percentile.
    pub latency_ms_p95: f64,
    /// 99th percentile.
    pub latency_ms_p99: f64,
    /// Slowest.
    pub latency_ms_max: f64,
    /// Service CPU (all threads, user + system) during the loop.
    pub service_cpu_s: Option<f64>,
    /// The same per onboarded device.
    pub service_cpu_us_per_device: Option<f64>,
    /// The same by thread pool (`tokio-rt-worker`, `registry-writer`, `sled-io`, …): where
    /// the service spends it. Threads that ended during the loop are missing, so the pools
    /// can add up to a little less than the total.
    pub service_cpu_us_per_device_by_thread: BTreeMap<String, f64>,
    /// Context switches of the service's threads during the loop, per onboarded device: its
    /// wake-ups (a thread that sleeps and is woken again) and preemptions.
    pub service_context_switches_per_device: Option<f64>,
    /// The service's peak resident memory (VmHWM) at the end: its whole life, setup included.
    pub service_peak_rss_mb: Option<f64>,
    /// The service's resident memory at the end.
    pub service_rss_mb: Option<f64>,
    /// Registry size on disk at the end (services this run started): sled's directory, or
    /// the whole PostgreSQL cluster's data directory (WAL included).
    pub registry_disk_mb: Option<f64>,
    /// PostgreSQL only: CPU of the database's processes (postmaster and backends) per
    /// onboarded device, during the loop.
    pub database_cpu_us_per_device: Option<f64>,
    /// PostgreSQL only: committed transactions per onboarded device (group commit makes it
    /// less than one).
    pub database_transactions_per_device: Option<f64>,
    /// PostgreSQL only: WAL bytes per onboarded device.
    pub database_wal_bytes_per_device: Option<f64>,
    /// PostgreSQL only: WAL flushes (fsync) per onboarded device.
    pub database_fsyncs_per_device: Option<f64>,
    /// Service-side crypto of one onboarding, aws-lc-rs, one core, this run: the two proof
    /// verifications and the certificate, plus, with a connection per device, the server's
    /// side of the TLS 1.3 handshake, so that both modes' ratios mean the same thing.
    pub crypto_floor_us_per_device: f64,
    /// Its parts.
    pub crypto_floor: CryptoFloor,
    /// `service_cpu_us_per_device / crypto_floor_us_per_device`.
    pub ratio_to_floor: Option<f64>,
    /// Idle TLS + HTTP/2 connections opened before the setup to measure what one costs the
    /// service (`--idle-connections`), and closed again.
    pub idle_connections: usize,
    /// The service's resident memory per idle connection (VmRSS before and after they were
    /// opened and had settled), in KiB.
    pub service_kib_per_idle_connection: Option<f64>,
    /// One device's answer to a challenge on one core (reconstruct, derive, two
    /// signatures), median.
    pub device_us_per_onboarding: f64,
    /// The P-256 implementation the simulated devices sign with (`aws-lc-rs` or `p256`).
    pub device_signer: &'static str,
    /// This process's CPU per onboarded device: simulated devices plus their gRPC/TLS clients.
    pub loadgen_cpu_us_per_device: Option<f64>,
    /// Setup durations (not measured): manufacture + power-up + registration signatures.
    pub setup_manufacture_s: f64,
    /// Register RPCs.
    pub setup_register_s: f64,
    /// Policy, batch and ImportDevices.
    pub setup_import_s: f64,
    /// `nproc`.
    pub nproc: usize,
    /// The CPUs the service ran on during the loop, and the load generator's, when pinned
    /// (`--pin-service`).
    pub pinned: Option<Pinned>,
    /// The CPUs' worth of time the service was limited to during the loop
    /// (`--service-cpu-quota`).
    pub service_cpu_quota: Option<f64>,
    /// The service's CPU time over the loop's wall time, in CPUs: how busy it was. At its
    /// quota it was the bottleneck; well below, it waited for the devices.
    pub service_cpus_busy: Option<f64>,
    /// CPU model from /proc/cpuinfo.
    pub cpu_model: String,
    /// 1-minute load average before the measured loop.
    pub load_before: Option<f64>,
    /// 1-minute load average after it.
    pub load_after: Option<f64>,
    /// The first refusal or failure, if any.
    pub first_problem: Option<String>,
}

/// A percentile of sorted latencies, in milliseconds.
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    percentile(sorted, p).as_secs_f64() * 1e3
}

fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

const MB: f64 = 1024.0 * 1024.0;

/// Runs the whole load test.
///
/// # Errors
/// Setup failures (the service, the fleet, the batch). Failed onboardings are counted in the
/// report, not returned as errors.
#[allow(
    clippy::too_many_lines,
    reason = "a script: each block is one phase of the run"
)]
pub async fn run(options: &Options) -> Result<Report, Error> {
    // Before any pinning narrows what this process may use.
    let nproc = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let service = Service::start(&options.target).await?;
    let endpoints = service.device_endpoints()?;
    let endpoint = endpoints[0].clone();
    // At least one shared connection per replica; device i uses connection i mod K.
    let shared_count = options.connections.max(service.replicas());
    let mut channels = Vec::with_capacity(shared_count);
    for index in 0..shared_count {
        channels.push(endpoints[index % endpoints.len()].connect().await?);
    }
    let mut operator = OperatorClient::new(service.operator_channel().await?);
    // Before the setup: a heap that registration and import have grown and freed would take
    // new connections into memory it already holds, and show none.
    let service_kib_per_idle_connection =
        idle_connection_memory(&service, &endpoint, options.idle_connections).await?;

    let began = Instant::now();
    let making = progress_bar(u64::from(options.devices), "manufacture", options.progress);
    let (devices, signer) = (options.devices, options.device_signer);
    let made = {
        let making = making.clone();
        tokio::task::spawn_blocking(move || setup::manufacture(devices, signer, &making)).await??
    };
    making.finish_and_clear();
    let setup_manufacture_s = began.elapsed().as_secs_f64();
    let (powered, requests): (Vec<_>, Vec<_>) = made.into_iter().unzip();
    let device_ids: Vec<String> = powered.iter().map(|d| d.device_id().to_string()).collect();

    let began = Instant::now();
    let registering = progress_bar(u64::from(options.devices), "register", options.progress);
    setup::register(requests, &channels, &registering).await?;
    registering.finish_and_clear();
    let setup_register_s = began.elapsed().as_secs_f64();

    let began = Instant::now();
    let batch_id = setup::batch(&mut operator, &options.owner, device_ids).await?;
    let setup_import_s = began.elapsed().as_secs_f64();

    let powered = Arc::new(powered);
    let (floor, device_answer) = {
        let iterations = options.floor_iterations;
        let powered = powered.clone();
        tokio::task::spawn_blocking(move || {
            let sample = &powered[..powered.len().min(500)];
            Ok::<_, Error>((
                floor::crypto_floor(iterations)?,
                floor::device_answer(sample)?,
            ))
        })
        .await??
    };

    let connections = if options.connection_per_device {
        Connections::PerDevice(endpoints)
    } else {
        Connections::Shared(channels.clone())
    };
    let perf = match (&options.perf_record, service.pid) {
        (Some(output), Some(pid)) => Some(service::PerfRecord::start(pid, output).await?),
        (Some(_), None) => return Err("--perf-record needs the service's process ID".into()),
        (None, _) => None,
    };
    let pinned = match &options.service_cpus {
        Some(cpus) => Some(service.pin(cpus, nproc)?),
        None => None,
    };
    let quota = match options.service_cpu_quota {
        Some(cpus) => Some(service.limit_cpu(cpus, nproc)?),
        None => None,
    };
    let load_before = load_average();
    let database_before = service.database_counters().await;
    let service_before = service.cpu();
    let switches_before = service.context_switches();
    let threads_before = service.thread_cpu();
    let self_before = service::process_cpu(std::process::id());
    let onboarding = progress_bar(u64::from(options.devices), "onboard", options.progress);
    let tally = onboard::run(powered, connections, options.concurrency, &onboarding).await?;
    onboarding.finish_and_clear();
    drop(quota);
    if pinned.is_some() {
        service::unpin_self(nproc)?;
    }
    let service_after = service.cpu();
    let switches_after = service.context_switches();
    let threads_after = service.thread_cpu();
    let self_after = service::process_cpu(std::process::id());
    let load_after = load_average();
    let database_after = match database_before {
        Some(_) => {
            // The server publishes its statistics about once a second.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            service.database_counters().await
        }
        None => None,
    };
    if let Some(perf) = perf {
        perf.stop().await;
    }

    let batch_onboarded = operator
        .get_batch(v1::GetBatchRequest { batch_id })
        .await?
        .into_inner()
        .batch
        .and_then(|b| b.counts)
        .map_or(0, |c| c.onboarded);
    let memory = service.memory();
    let registry_bytes = service.registry_bytes();
    let replicas = service.replicas();
    drop(channels);
    service.stop().await;

    let us_per_device = |used: Duration| {
        (tally.onboarded > 0).then(|| used.as_secs_f64() * 1e6 / tally.onboarded as f64)
    };
    let per_device = |before: Option<Duration>, after: Option<Duration>| {
        us_per_device(after?.checked_sub(before?)?)
    };
    let service_cpu_us_per_device = per_device(service_before, service_after);
    let service_cpu_s = service_after
        .zip(service_before)
        .and_then(|(a, b)| a.checked_sub(b))
        .map(|d| d.as_secs_f64());
    let database = database_before.zip(database_after);
    let per_onboarding = |count: f64| count / tally.onboarded.max(1) as f64;
    let floor_us = if options.connection_per_device {
        floor.per_onboarding_us + floor.handshake_us
    } else {
        floor.per_onboarding_us
    };
    Ok(Report {
        devices: options.devices,
        mode: if options.connection_per_device {
            "per-device"
        } else {
            "shared"
        },
        ca_backend: match &options.target {
            Target::Spawn { ca_backend, .. } => ca_backend.name(),
            Target::Existing { .. } => "unknown",
        },
        registry: match &options.target {
            Target::Spawn { registry, .. } => registry.name(),
            Target::Existing { .. } => "unknown",
        },
        replicas,
        connections: if options.connection_per_device {
            options.devices as usize
        } else {
            shared_count
        },
        concurrency: options.concurrency,
        onboarded: tally.onboarded,
        refused: tally.refused,
        failed: tally.failed,
        batch_onboarded,
        elapsed_s: tally.elapsed.as_secs_f64(),
        devices_per_s: tally.onboarded as f64 / tally.elapsed.as_secs_f64().max(1e-9),
        latency_ms_p50: percentile_ms(&tally.latencies, 50.0),
        latency_ms_p95: percentile_ms(&tally.latencies, 95.0),
        latency_ms_p99: percentile_ms(&tally.latencies, 99.0),
        latency_ms_max: percentile_ms(&tally.latencies, 100.0),
        service_cpu_s,
        service_cpu_us_per_device,
        service_cpu_us_per_device_by_thread: threads_after
            .since(&threads_before)
            .into_iter()
            .filter_map(|(pool, used)| Some((pool, us_per_device(used)?)))
            .collect(),
        service_context_switches_per_device: switches_before
            .zip(switches_after)
            .map(|(before, after)| per_onboarding(after.saturating_sub(before) as f64)),
        service_peak_rss_mb: memory.map(|(peak, _)| peak as f64 / MB),
        service_rss_mb: memory.map(|(_, now)| now as f64 / MB),
        registry_disk_mb: registry_bytes.map(|b| b as f64 / MB),
        database_cpu_us_per_device: per_device(
            database_before.map(|d| d.cpu),
            database_after.map(|d| d.cpu),
        ),
        database_transactions_per_device: database
            .map(|(b, a)| per_onboarding((a.transactions - b.transactions) as f64)),
        database_wal_bytes_per_device: database
            .map(|(b, a)| per_onboarding(a.wal_bytes - b.wal_bytes)),
        database_fsyncs_per_device: database
            .map(|(b, a)| per_onboarding((a.wal_syncs - b.wal_syncs) as f64)),
        crypto_floor_us_per_device: floor_us,
        crypto_floor: floor,
        ratio_to_floor: service_cpu_us_per_device.map(|s| s / floor_us),
        idle_connections: options.idle_connections,
        service_kib_per_idle_connection,
        device_us_per_onboarding: device_answer.as_secs_f64() * 1e6,
        device_signer: options.device_signer.name(),
        loadgen_cpu_us_per_device: per_device(self_before, self_after),
        setup_manufacture_s,
        setup_register_s,
        setup_import_s,
        nproc,
        pinned,
        service_cpu_quota: options.service_cpu_quota,
        service_cpus_busy: service_cpu_s.map(|s| s / tally.elapsed.as_secs_f64().max(1e-9)),
        cpu_model: cpu_model(),
        load_before,
        load_after,
        first_problem: tally.first_problem,
    })
}

/// Opens `count` TLS + HTTP/2 connections that send nothing, waits for the service to settle,
/// and returns its resident memory per connection in KiB; closes them again. `None` without
/// connections or when the service's memory cannot be read.
async fn idle_connection_memory(
    service: &Service,
    endpoint: &tonic::transport::Endpoint,
    count: usize,
) -> Result<Option<f64>, Error> {
    const SETTLE: Duration = Duration::from_millis(500);
    if count == 0 {
        return Ok(None);
    }
    tokio::time::sleep(SETTLE).await;
    let before = service.memory().map(|(_, now)| now);
    let mut idle = Vec::with_capacity(count);
    for _ in 0..count {
        // connect() completes TCP, TLS and the HTTP/2 preface and settings exchange.
        idle.push(endpoint.connect().await?);
    }
    tokio::time::sleep(SETTLE).await;
    let after = service.memory().map(|(_, now)| now);
    drop(idle);
    Ok(before
        .zip(after)
        .map(|(before, after)| after.saturating_sub(before) as f64 / 1024.0 / count as f64))
}

fn opt(value: Option<f64>, precision: usize, unit: &str) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.precision$}{unit}"))
}

impl Report {
    /// The database's line of the summary (PostgreSQL registries only).
    fn write_database(&self, out: &mut dyn Write) -> std::io::Result<()> {
        if self.database_cpu_us_per_device.is_none() {
            return Ok(());
        }
        writeln!(
            out,
            "  database       CPU {} per device; {} transactions, {} WAL, {} fsyncs per device",
            opt(self.database_cpu_us_per_device, 1, " µs"),
            opt(self.database_transactions_per_device, 3, ""),
            opt(self.database_wal_bytes_per_device, 0, " B"),
            opt(self.database_fsyncs_per_device, 3, "")
        )
    }

    /// The human-readable summary (without the JSON line).
    ///
    /// # Errors
    /// Writing failed.
    #[allow(
        clippy::too_many_lines,
        reason = "one statement per line of the summary, in the order they print"
    )]
    pub fn write_summary(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mode = match self.mode {
            "shared" => format!("{} shared TLS connections", self.connections),
            _ => "one TLS connection per device".to_owned(),
        };
        writeln!(
            out,
            "loadgen: {} devices, {mode}, {} in flight, CA keys {}, registry {} ({} replica{})",
            self.devices,
            self.concurrency,
            self.ca_backend,
            self.registry,
            self.replicas,
            if self.replicas == 1 { "" } else { "s" }
        )?;
        writeln!(
            out,
            "  machine        {} × {}, load {} before / {} after",
            self.nproc,
            self.cpu_model,
            opt(self.load_before, 2, ""),
            opt(self.load_after, 2, "")
        )?;
        if let Some(pinned) = &self.pinned {
            writeln!(
                out,
                "  pinned         service on CPUs {:?}, load generator on {:?} (the loop only)",
                pinned.service_cpus, pinned.loadgen_cpus
            )?;
        }
        writeln!(
            out,
            "  setup          manufacture {:.1} s, register {:.1} s, import {:.1} s (not measured)",
            self.setup_manufacture_s, self.setup_register_s, self.setup_import_s
        )?;
        writeln!(
            out,
            "  onboarded      {} of {} in {:.2} s ({} refused, {} failed; batch count {})",
            self.onboarded,
            self.devices,
            self.elapsed_s,
            self.refused,
            self.failed,
            self.batch_onboarded
        )?;
        writeln!(out, "  devices/s      {:.0}", self.devices_per_s)?;
        writeln!(
            out,
            "  latency        p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.latency_ms_p50, self.latency_ms_p95, self.latency_ms_p99, self.latency_ms_max
        )?;
        writeln!(
            out,
            "  service CPU    {} = {} per device",
            opt(self.service_cpu_s, 2, " s"),
            opt(self.service_cpu_us_per_device, 1, " µs")
        )?;
        if !self.service_cpu_us_per_device_by_thread.is_empty() {
            let mut pools: Vec<_> = self.service_cpu_us_per_device_by_thread.iter().collect();
            pools.sort_by(|a, b| b.1.total_cmp(a.1));
            let pools: Vec<String> = pools
                .iter()
                .map(|(pool, us)| format!("{pool} {us:.1} µs"))
                .collect();
            writeln!(out, "  by thread      {} per device", pools.join(", "))?;
        }
        writeln!(
            out,
            "  service busy   {} CPUs over the loop{}",
            opt(self.service_cpus_busy, 2, ""),
            self.service_cpu_quota
                .map(|q| format!(" (quota {q} CPUs)"))
                .unwrap_or_default()
        )?;
        writeln!(
            out,
            "  service wakes  {} context switches per device",
            opt(self.service_context_switches_per_device, 1, "")
        )?;
        writeln!(
            out,
            "  service memory peak RSS {} (VmHWM, setup included), {} at the end; registry {} on disk",
            opt(self.service_peak_rss_mb, 1, " MB"),
            opt(self.service_rss_mb, 1, " MB"),
            opt(self.registry_disk_mb, 1, " MB")
        )?;
        self.write_database(out)?;
        if self.idle_connections > 0 {
            writeln!(
                out,
                "  idle conns     {} per connection over {} idle TLS + HTTP/2 connections (VmRSS)",
                opt(self.service_kib_per_idle_connection, 1, " KiB"),
                self.idle_connections
            )?;
        }
        let handshake = if self.mode == "shared" {
            format!(
                "; a TLS 1.3 handshake would add {:.1} µs",
                self.crypto_floor.handshake_us
            )
        } else {
            format!(
                " + the server's TLS 1.3 handshake {:.1} µs",
                self.crypto_floor.handshake_us
            )
        };
        writeln!(
            out,
            "  crypto floor   {:.1} µs per device (2 verifications {:.1} µs + certificate {:.1} µs{handshake}; aws-lc-rs, one core)",
            self.crypto_floor_us_per_device,
            self.crypto_floor.verify_two_us,
            self.crypto_floor.issue_us
        )?;
        writeln!(
            out,
            "  ratio          {} × the floor",
            opt(self.ratio_to_floor, 2, "")
        )?;
        writeln!(
            out,
            "  device side    {:.1} µs per onboarding on one core (reconstruct, derive ESK + DSK, 2 signatures with {})",
            self.device_us_per_onboarding, self.device_signer
        )?;
        writeln!(
            out,
            "  loadgen CPU    {} per device (simulated devices + gRPC/TLS clients, same machine)",
            opt(self.loadgen_cpu_us_per_device, 1, " µs")
        )?;
        if let Some(problem) = &self.first_problem {
            writeln!(out, "  first problem  {problem}")?;
        }
        Ok(())
    }
}
