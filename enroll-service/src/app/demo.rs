//! `enroll-service demo`: the whole flow in one process, over real gRPC and TLS on loopback.
//!
//! A temporary state directory, a fresh CA, the service on 127.0.0.1:0, an owner admin
//! credential; N emulated chips are manufactured and enrolled, register themselves, an
//! operator creates a Mosquitto policy and a batch over the Operator API, the chips onboard
//! concurrently (progress bar), and a summary is printed, audit chain check included.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use oxroot_proto::v1;
use oxroot_proto::v1::device_enrollment_client::DeviceEnrollmentClient;
use oxroot_proto::v1::operator_client::OperatorClient;

use super::AppError;
use crate::fleet::{EmulatedDevice, Outcome, percentile, progress_bar};
use crate::metrics::Metrics;
use crate::pki::{CaNames, CertificateAuthority, OperatorKey, Role, Validity};
use crate::server::RunningServer;
use crate::service::{ServiceConfig, ServiceCore, issue_operator_certificate};
use crate::store::SledRegistry;

/// Devices onboarding at the same time.
const CONCURRENCY: usize = 64;

/// Options of the demo.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Number of emulated chips.
    pub devices: u32,
    /// Show progress bars (a terminal is attached).
    pub progress: bool,
}

/// Runs the demo and prints the summary to `out`.
///
/// # Errors
/// Any step that fails; the message says which.
#[allow(
    clippy::too_many_lines,
    reason = "a script: each block is one step of the demo"
)]
pub async fn run(options: &DemoOptions, out: &mut dyn Write) -> Result<(), AppError> {
    let dir = tempfile::tempdir()?;
    let now = time::OffsetDateTime::now_utc();
    let ca = Arc::new(CertificateAuthority::initialise(
        &CaNames::default(),
        now - time::Duration::minutes(1),
    )?);
    let registry = SledRegistry::open(&dir.path().join("registry"))?;
    let core = ServiceCore::new(
        registry,
        ca.clone(),
        ServiceConfig::default(),
        Arc::new(Metrics::new()),
    );
    let server = RunningServer::start(core.clone()).await?;
    writeln!(
        out,
        "service      {} (TLS, registry in {})",
        server.url(),
        dir.path().display()
    )?;

    let admin = issue_operator_certificate(
        &core,
        &OperatorKey::Generate,
        ("demo-admin", "demo", Role::Admin),
        Validity::starting(now - time::Duration::minutes(1), time::Duration::hours(2))?,
        "system:demo",
    )
    .await?;
    let admin_key = admin
        .private_key
        .as_ref()
        .ok_or("no generated operator key")?
        .to_pem();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.root_pem()))
        .domain_name("localhost");
    let channel = Channel::from_shared(server.url())?
        .tls_config(tls.clone())?
        .connect()
        .await?;
    let operator_channel = Channel::from_shared(server.url())?
        .tls_config(tls.identity(Identity::from_pem(
            format!("{}{}", admin.certificate.pem, ca.chain_pems().concat()),
            admin_key.as_bytes(),
        )))?
        .connect()
        .await?;
    let mut operator = OperatorClient::new(operator_channel);

    let manufacture = progress_bar(u64::from(options.devices), "manufacture", options.progress);
    let fleet_seed = {
        let mut seed = [0u8; 32];
        aws_lc_rs::rand::fill(&mut seed).map_err(|_| "RNG failed")?;
        seed
    };
    let mut devices = Vec::with_capacity(options.devices as usize);
    for index in 0..options.devices {
        devices.push(EmulatedDevice::manufacture(&fleet_seed, index)?);
        manufacture.inc(1);
    }
    manufacture.finish_and_clear();
    let devices = Arc::new(devices);

    let register = progress_bar(u64::from(options.devices), "register", options.progress);
    let mut client = DeviceEnrollmentClient::new(channel.clone());
    for device in devices.iter() {
        client
            .register(device.registration(b"demo-station")?)
            .await?;
        register.inc(1);
    }
    register.finish_and_clear();

    let policy = operator
        .create_policy(v1::CreatePolicyRequest {
            policy: Some(v1::Policy {
                name: "demo-mosquitto".into(),
                description: "oxroot demo: a local Mosquitto broker".into(),
                params: Some(v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
                    host: "127.0.0.1".into(),
                    port: 8883,
                    ..Default::default()
                })),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .policy
        .ok_or("CreatePolicy returned no policy")?;
    let created = operator
        .create_batch(v1::CreateBatchRequest {
            name: "demo batch".into(),
            policy_name: policy.name.clone(),
            device_ids: devices.iter().map(|d| d.device_id().to_string()).collect(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let batch = created.batch.ok_or("CreateBatch returned no batch")?;
    let report = created.report.unwrap_or_default();
    writeln!(
        out,
        "batch        {} under policy {} (mosquitto): {} accepted, {} rejected",
        batch.batch_id, policy.name, report.accepted, report.rejected
    )?;

    let onboard = progress_bar(u64::from(options.devices), "onboard", options.progress);
    let start = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..devices.len() {
        let devices = devices.clone();
        let channel = channel.clone();
        let permit = semaphore.clone().acquire_owned().await?;
        let onboard = onboard.clone();
        tasks.spawn(async move {
            let mut client = DeviceEnrollmentClient::new(channel);
            let began = Instant::now();
            let outcome = devices[index].onboard(&mut client).await;
            drop(permit);
            onboard.inc(1);
            (outcome, began.elapsed())
        });
    }
    let mut latencies = Vec::with_capacity(devices.len());
    let (mut onboarded, mut refused, mut failed) = (0u32, 0u32, 0u32);
    let mut example_serial = String::new();
    while let Some(joined) = tasks.join_next().await {
        let (outcome, latency) = joined?;
        latencies.push(latency);
        match outcome {
            Ok(Outcome::Credentials(bundle)) => {
                onboarded += 1;
                if example_serial.is_empty() {
                    example_serial = bundle.serial;
                }
            }
            Ok(Outcome::Refused(_)) => refused += 1,
            Err(_) => failed += 1,
        }
    }
    let elapsed = start.elapsed();
    onboard.finish_and_clear();
    latencies.sort_unstable();

    let counts = operator
        .get_batch(v1::GetBatchRequest {
            batch_id: batch.batch_id.clone(),
        })
        .await?
        .into_inner()
        .batch
        .and_then(|b| b.counts)
        .unwrap_or_default();
    let audit = operator
        .verify_audit(v1::VerifyAuditRequest::default())
        .await?
        .into_inner();

    let rate = f64::from(onboarded) / elapsed.as_secs_f64().max(1e-9);
    writeln!(out)?;
    writeln!(out, "  devices            {:>10}", options.devices)?;
    writeln!(out, "  onboarded          {onboarded:>10}")?;
    writeln!(out, "  refused            {refused:>10}")?;
    writeln!(out, "  failed             {failed:>10}")?;
    writeln!(out, "  batch onboarded    {:>10}", counts.onboarded)?;
    writeln!(out, "  elapsed            {:>9.2}s", elapsed.as_secs_f64())?;
    writeln!(out, "  devices/s          {rate:>10.1}")?;
    writeln!(
        out,
        "  latency p50 / p99  {:>7.1} / {:.1} ms",
        percentile(&latencies, 50.0).as_secs_f64() * 1e3,
        percentile(&latencies, 99.0).as_secs_f64() * 1e3
    )?;
    writeln!(out, "  example serial     {example_serial:>10}")?;
    writeln!(
        out,
        "  audit chain        {:>10} ({} entries)",
        if audit.ok { "ok" } else { "BROKEN" },
        audit.entries_checked
    )?;
    server.stop().await?;
    if onboarded != options.devices || !audit.ok {
        return Err(format!(
            "demo incomplete: {onboarded} of {} devices onboarded",
            options.devices
        )
        .into());
    }
    Ok(())
}
