//! `loadgen`: onboards a fleet of simulated devices against `enroll-service` and reports
//! devices/s, latency, the service's CPU and memory, and its distance to the crypto floor.
//! Argument parsing only; the work is in [`oxroot_tests::loadgen`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use enroll_service::fleet::DeviceSigner;
use oxroot_tests::loadgen::{self, CaBackend, Options, RegistryChoice, Target};

/// Fleet load generator for the oxroot enrolment service.
///
/// Without --service it starts `enroll-service init` + `serve --listen 127.0.0.1:0` on a
/// fresh state directory (the binary next to this one, or --service-bin) and stops it at the
/// end. The last line of output is a JSON object.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Devices to onboard.
    #[arg(long, default_value_t = 10_000)]
    devices: u32,
    /// Shared TLS connections the devices are multiplexed over.
    #[arg(long, default_value_t = 4, conflicts_with = "connection_per_device")]
    connections: usize,
    /// Give every device its own TLS connection instead.
    #[arg(long)]
    connection_per_device: bool,
    /// Onboardings in flight.
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    /// A running service (https://HOST:PORT) instead of starting one; needs --profile.
    #[arg(long, requires = "profile")]
    service: Option<String>,
    /// Operator profile directory (root.pem, operator.pem, operator.key) for --service.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Process ID of the --service (default: the process listening on its port).
    #[arg(long, requires = "service")]
    service_pid: Option<u32>,
    /// The enroll-service binary to start.
    #[arg(long, conflicts_with = "service")]
    service_bin: Option<PathBuf>,
    /// Keep the started service's state here instead of a temporary directory.
    #[arg(long, conflicts_with_all = ["service", "ca_backend"])]
    state_dir: Option<PathBuf>,
    /// Where the started service's CA keys live: sealed files, a throwaway SoftHSM2 token, or
    /// both one after the other with the same fleet settings, compared side by side.
    #[arg(long, value_parser = ["sealed", "pkcs11", "both"], default_value = "sealed", conflicts_with = "service")]
    ca_backend: String,
    /// Where the started service's registry lives: embedded sled, a throwaway PostgreSQL
    /// cluster (initdb + pg_ctl, as an unprivileged user when run as root), or both one after
    /// the other with the same fleet settings, compared side by side.
    #[arg(long, value_parser = ["sled", "postgres", "both"], default_value = "sled", conflicts_with_all = ["service", "state_dir"])]
    registry: String,
    /// `serve` replicas on the PostgreSQL database; devices are spread over them.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Owner of the load test's policy and batch.
    #[arg(long, default_value = "loadgen")]
    owner: String,
    /// How the simulated devices sign their answers: aws-lc-rs, or p256 (RustCrypto) as the
    /// device agent does. Both sign with the keys rot-core derives from the reconstruction.
    #[arg(long, value_parser = ["aws-lc-rs", "p256"], default_value = "aws-lc-rs")]
    device_signer: String,
    /// Iterations of the crypto-floor measurement.
    #[arg(long, default_value_t = 5_000)]
    floor_iterations: u32,
    /// Record the service with `perf record -g` during the measured loop (perf must be
    /// installed: apt-get install linux-perf).
    #[arg(long, value_name = "FILE")]
    perf_record: Option<PathBuf>,
    /// Before the loop, open this many TLS + HTTP/2 connections that stay idle, report the
    /// service's resident memory per connection, and close them (a programming station
    /// holds its waiting devices' connections). The service allows 1024 per client address
    /// by default (`[limits] max_connections_per_peer`).
    #[arg(long, default_value_t = 0)]
    idle_connections: usize,
    /// Run the service on these CPUs (comma-separated, e.g. 0) and the load generator on
    /// all others during the measured loop (taskset), so that they do not preempt each other
    /// and repeated runs agree more closely. Setup and the floor use every CPU. Only for a
    /// service it starts: a running one is not re-pinned.
    #[arg(
        long,
        value_name = "CPUS",
        value_delimiter = ',',
        conflicts_with = "service"
    )]
    pin_service: Option<Vec<usize>>,
    /// Limit the service it starts to this many CPUs' worth of time during the measured loop
    /// (a cgroup of its own, e.g. 0.3; needs root), so that the service, not the simulated
    /// devices, is the bottleneck: its CPU per device is then its cost at capacity. Without
    /// it, on a machine where the devices cost more than the service, the service idles
    /// between devices and pays for waking up each time.
    #[arg(long, value_name = "CPUS", conflicts_with = "service")]
    service_cpu_quota: Option<f64>,
    /// Print only the JSON object.
    #[arg(long)]
    json: bool,
}

fn target(
    cli: &Cli,
    ca_backend: CaBackend,
    registry: RegistryChoice,
) -> Result<Target, loadgen::Error> {
    if let Some(url) = &cli.service {
        return Ok(Target::Existing {
            url: url.clone(),
            profile: cli.profile.clone().ok_or("--service needs --profile")?,
            pid: cli.service_pid,
        });
    }
    let service_bin = match &cli.service_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or("the loadgen binary has no directory")?
            .join("enroll-service"),
    };
    Ok(Target::Spawn {
        service_bin,
        state_dir: cli.state_dir.clone(),
        ca_backend,
        registry,
    })
}

/// The configurations a run compares: CA key stores, or registries (not both at once).
fn configurations(cli: &Cli) -> Result<Vec<(CaBackend, RegistryChoice)>, loadgen::Error> {
    let postgres = RegistryChoice::Postgres {
        replicas: cli.replicas.max(1),
    };
    if cli.replicas > 1 && cli.registry == "sled" {
        return Err("--replicas needs --registry postgres (sled is one process's)".into());
    }
    let registries = match cli.registry.as_str() {
        "both" => vec![RegistryChoice::Sled, postgres],
        "postgres" => vec![postgres],
        _ => vec![RegistryChoice::Sled],
    };
    let backends = match cli.ca_backend.as_str() {
        "both" => vec![CaBackend::Sealed, CaBackend::Pkcs11],
        "pkcs11" => vec![CaBackend::Pkcs11],
        _ => vec![CaBackend::Sealed],
    };
    if backends.len() > 1 && registries.len() > 1 {
        return Err("compare CA key stores or registries, not both in one run".into());
    }
    Ok(backends
        .iter()
        .flat_map(|backend| registries.iter().map(move |registry| (*backend, *registry)))
        .collect())
}

async fn run(cli: Cli) -> Result<bool, loadgen::Error> {
    let mut reports = Vec::new();
    for (backend, registry) in configurations(&cli)? {
        reports.push(run_one(&cli, backend, registry).await?);
    }
    let mut out = std::io::stdout();
    if !cli.json {
        for report in &reports {
            report.write_summary(&mut out)?;
        }
    }
    let ok = reports.iter().all(|report| {
        report.onboarded == u64::from(report.devices) && report.batch_onboarded >= report.onboarded
    });
    if let [sled, postgres] = reports.as_slice()
        && sled.registry != postgres.registry
    {
        let rate = postgres.devices_per_s / sled.devices_per_s.max(1e-9);
        if !cli.json {
            println!(
                "PostgreSQL registry ({} replica{}): {:.0} devices/s against {:.0} on sled \
                 ({:.0} %); service CPU {} against {} per device, database CPU {} per device",
                postgres.replicas,
                if postgres.replicas == 1 { "" } else { "s" },
                postgres.devices_per_s,
                sled.devices_per_s,
                rate * 100.0,
                per_device(postgres.service_cpu_us_per_device),
                per_device(sled.service_cpu_us_per_device),
                per_device(postgres.database_cpu_us_per_device),
            );
        }
        println!(
            "{}",
            serde_json::json!({
                "sled": sled,
                "postgres": postgres,
                "postgres_rate_to_sled": rate,
            })
        );
    } else if let [sealed, pkcs11] = reports.as_slice() {
        let rate = pkcs11.devices_per_s / sealed.devices_per_s.max(1e-9);
        if !cli.json {
            println!(
                "CA keys in SoftHSM2: {:.0} devices/s against {:.0} sealed ({:.0} %), service CPU \
                 {} against {} per device",
                pkcs11.devices_per_s,
                sealed.devices_per_s,
                rate * 100.0,
                per_device(pkcs11.service_cpu_us_per_device),
                per_device(sealed.service_cpu_us_per_device),
            );
        }
        println!(
            "{}",
            serde_json::json!({
                "sealed": sealed,
                "pkcs11": pkcs11,
                "pkcs11_rate_to_sealed": rate,
            })
        );
    } else if let Some(report) = reports.first() {
        println!("{}", serde_json::to_string(report)?);
    }
    Ok(ok)
}

fn per_device(us: Option<f64>) -> String {
    us.map_or_else(|| "n/a".to_owned(), |us| format!("{us:.0} µs"))
}

async fn run_one(
    cli: &Cli,
    ca_backend: CaBackend,
    registry: RegistryChoice,
) -> Result<loadgen::Report, loadgen::Error> {
    let options = Options {
        devices: cli.devices,
        connections: cli.connections,
        connection_per_device: cli.connection_per_device,
        concurrency: cli.concurrency,
        target: target(cli, ca_backend, registry)?,
        owner: cli.owner.clone(),
        floor_iterations: cli.floor_iterations,
        perf_record: cli.perf_record.clone(),
        device_signer: if cli.device_signer == "p256" {
            DeviceSigner::RotCore
        } else {
            DeviceSigner::AwsLc
        },
        idle_connections: cli.idle_connections,
        service_cpus: cli.pin_service.clone(),
        service_cpu_quota: cli.service_cpu_quota,
        progress: !cli.json && std::io::stderr().is_terminal(),
    };
    loadgen::run(&options).await
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}
