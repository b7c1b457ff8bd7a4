//! The measured loop: every device runs the device agent's Onboard exchange, at most
//! `concurrency` at a time, over shared TLS connections or one connection each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

use enroll_service::fleet::{Outcome, PoweredDevice};
use oxroot_proto::v1::device_enrollment_client::DeviceEnrollmentClient;

use super::Error;

/// How the simulated devices reach the service.
#[derive(Clone, Debug)]
pub(super) enum Connections {
    /// Devices multiplexed over these channels (device `i` on channel `i mod K`), as behind a
    /// programming station that relays for its devices.
    Shared(Vec<Channel>),
    /// Each device opens its own TLS connection (TCP + handshake inside its latency), to
    /// replica `i mod R` of these.
    PerDevice(Vec<Endpoint>),
}

/// What the loop saw.
#[derive(Debug, Default)]
pub(super) struct Tally {
    /// Wall time from the first onboarding to the last.
    pub(super) elapsed: Duration,
    /// Per-device latency (connect included for one connection per device), sorted.
    pub(super) latencies: Vec<Duration>,
    /// Credentials received.
    pub(super) onboarded: u64,
    /// Refusals.
    pub(super) refused: u64,
    /// Transport or protocol failures, with the first message.
    pub(super) failed: u64,
    /// The first failure or refusal, for the report.
    pub(super) first_problem: Option<String>,
}

type Result1 = (std::result::Result<Outcome, String>, Duration);

async fn one(device: &PoweredDevice, connections: &Connections, index: usize) -> Result1 {
    let began = Instant::now();
    let channel = match connections {
        Connections::Shared(channels) => channels[index % channels.len()].clone(),
        Connections::PerDevice(endpoints) => {
            match endpoints[index % endpoints.len()].connect().await {
                Ok(channel) => channel,
                Err(e) => return (Err(format!("connect: {e:?}")), began.elapsed()),
            }
        }
    };
    let mut client = DeviceEnrollmentClient::new(channel);
    let outcome = device.onboard(&mut client).await.map_err(|e| e.to_string());
    (outcome, began.elapsed())
}

fn record(tally: &mut Tally, (outcome, latency): Result1) {
    tally.latencies.push(latency);
    match outcome {
        Ok(Outcome::Credentials(_)) => tally.onboarded += 1,
        Ok(Outcome::Refused(refusal)) => {
            tally.refused += 1;
            tally
                .first_problem
                .get_or_insert_with(|| format!("refused: {refusal:?}"));
        }
        Err(e) => {
            tally.failed += 1;
            tally.first_problem.get_or_insert(e);
        }
    }
}

/// Onboards every device, `concurrency` at a time.
///
/// # Errors
/// Only if the runtime fails; device failures are counted in the [`Tally`].
pub(super) async fn run(
    devices: Arc<Vec<PoweredDevice>>,
    connections: Connections,
    concurrency: usize,
    bar: &ProgressBar,
) -> Result<Tally, Error> {
    let connections = Arc::new(connections);
    let semaphore = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tally = Tally {
        latencies: Vec::with_capacity(devices.len()),
        ..Tally::default()
    };
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    for index in 0..devices.len() {
        let permit = semaphore.clone().acquire_owned().await?;
        let devices = devices.clone();
        let connections = connections.clone();
        let bar = bar.clone();
        tasks.spawn(async move {
            let result = one(&devices[index], &connections, index).await;
            drop(permit);
            bar.inc(1);
            result
        });
        while let Some(done) = tasks.try_join_next() {
            record(&mut tally, done?);
        }
    }
    while let Some(done) = tasks.join_next().await {
        record(&mut tally, done?);
    }
    tally.elapsed = start.elapsed();
    tally.latencies.sort_unstable();
    Ok(tally)
}
