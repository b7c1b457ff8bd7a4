//! `loadgen`: onboards a fleet of simulated devices against `enroll-service` and reports
//! devices/s, latency, the service's CPU and memory, and its distance to the crypto floor.
//! Argument parsing only; the work is in [`oxroot_tests::loadgen`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use enroll_service::fleet::DeviceSigner;
use oxroot_tests::loadgen::{self, Options, Target};

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
    #[arg(long, conflicts_with = "service")]
    state_dir: Option<PathBuf>,
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
    /// Print only the JSON object.
    #[arg(long)]
    json: bool,
}

fn target(cli: &Cli) -> Result<Target, loadgen::Error> {
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
    })
}

async fn run(cli: Cli) -> Result<bool, loadgen::Error> {
    let options = Options {
        devices: cli.devices,
        connections: cli.connections,
        connection_per_device: cli.connection_per_device,
        concurrency: cli.concurrency,
        target: target(&cli)?,
        owner: cli.owner.clone(),
        floor_iterations: cli.floor_iterations,
        perf_record: cli.perf_record.clone(),
        device_signer: if cli.device_signer == "p256" {
            DeviceSigner::RotCore
        } else {
            DeviceSigner::AwsLc
        },
        progress: !cli.json && std::io::stderr().is_terminal(),
    };
    let report = loadgen::run(&options).await?;
    let mut out = std::io::stdout();
    if !cli.json {
        report.write_summary(&mut out)?;
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(report.onboarded == u64::from(report.devices) && report.batch_onboarded >= report.onboarded)
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
