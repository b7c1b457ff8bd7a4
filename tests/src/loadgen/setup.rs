//! Everything before the measured loop: chips made and enrolled, powered up, registered,
//! and imported as one batch under a Mosquitto policy.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use indicatif::ProgressBar;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use enroll_service::fleet::{DeviceSigner, EmulatedDevice, PoweredDevice};
use oxroot_proto::v1;
use oxroot_proto::v1::device_enrollment_client::DeviceEnrollmentClient;
use oxroot_proto::v1::operator_client::OperatorClient;

use super::Error;

/// Records per ImportDevices chunk and per call (the contract's limits).
const IMPORT_CHUNK: usize = 1_000;
const IMPORT_CALL: usize = 100_000;
/// Register calls in flight.
const REGISTER_CONCURRENCY: usize = 256;

/// A manufactured, enrolled and powered-up device with its signed registration.
type Made = (PoweredDevice, v1::RegisterRequest);

/// Manufactures and enrols `count` chips of a fresh fleet on every core, powers each up once
/// and has it sign its registration. The chips themselves (their secret seeds) are dropped:
/// only the power-up readout and the public data stay.
///
/// # Errors
/// Enrolment or reconstruction failed.
pub(super) fn manufacture(
    count: u32,
    signer: DeviceSigner,
    bar: &ProgressBar,
) -> Result<Vec<Made>, Error> {
    let mut fleet_seed = [0u8; 32];
    aws_lc_rs::rand::fill(&mut fleet_seed).map_err(|_| "RNG failed")?;
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let next = AtomicUsize::new(0);
    let made: Vec<Result<Vec<(u32, Made)>, String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Ok(index) = u32::try_from(index) else {
                            break;
                        };
                        if index >= count {
                            break;
                        }
                        let device = EmulatedDevice::manufacture(&fleet_seed, index)
                            .map_err(|e| e.to_string())?;
                        let powered = device.power_up(signer).map_err(|e| e.to_string())?;
                        let request = powered
                            .registration(b"loadgen")
                            .map_err(|e| e.to_string())?;
                        out.push((index, (powered, request)));
                        bar.inc(1);
                    }
                    Ok(out)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err("a worker panicked".into())))
            .collect()
    });
    let mut all = Vec::with_capacity(count as usize);
    for part in made {
        all.extend(part?);
    }
    all.sort_unstable_by_key(|(index, _)| *index);
    Ok(all.into_iter().map(|(_, made)| made).collect())
}

/// Registers every device over the shared device channels.
///
/// # Errors
/// A registration the service refused or an RPC failure.
pub(super) async fn register(
    requests: Vec<v1::RegisterRequest>,
    channels: &[Channel],
    bar: &ProgressBar,
) -> Result<(), Error> {
    let semaphore = Arc::new(Semaphore::new(REGISTER_CONCURRENCY));
    let mut tasks = JoinSet::new();
    for (index, request) in requests.into_iter().enumerate() {
        let permit = semaphore.clone().acquire_owned().await?;
        let mut client = DeviceEnrollmentClient::new(channels[index % channels.len()].clone());
        let bar = bar.clone();
        tasks.spawn(async move {
            let response = client.register(request).await;
            drop(permit);
            bar.inc(1);
            response.map(|_| ())
        });
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// Creates a Mosquitto policy and an empty batch for `owner`, then imports every DeviceId into
/// it (ImportDevices, 1,000 per chunk). Returns the batch ID.
///
/// # Errors
/// An RPC failure, or records the import rejected.
pub(super) async fn batch(
    operator: &mut OperatorClient<Channel>,
    owner: &str,
    device_ids: Vec<String>,
) -> Result<String, Error> {
    let mut tag = [0u8; 4];
    aws_lc_rs::rand::fill(&mut tag).map_err(|_| "RNG failed")?;
    let name = format!("loadgen-{}", hex::encode(tag));
    operator
        .create_policy(v1::CreatePolicyRequest {
            policy: Some(v1::Policy {
                name: name.clone(),
                owner: owner.to_owned(),
                description: "oxroot loadgen: a local Mosquitto broker".into(),
                params: Some(v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
                    host: "127.0.0.1".into(),
                    port: 8883,
                    ..Default::default()
                })),
                ..Default::default()
            }),
        })
        .await?;
    let batch = operator
        .create_batch(v1::CreateBatchRequest {
            owner: owner.to_owned(),
            name: name.clone(),
            policy_name: name,
            ..Default::default()
        })
        .await?
        .into_inner()
        .batch
        .ok_or("CreateBatch returned no batch")?;
    let mut line = 0u64;
    let mut ids = device_ids.into_iter().peekable();
    while ids.peek().is_some() {
        let mut messages = vec![v1::ImportDevicesRequest {
            msg: Some(v1::import_devices_request::Msg::Header(v1::ImportHeader {
                batch_id: batch.batch_id.clone(),
            })),
        }];
        let call: Vec<String> = ids.by_ref().take(IMPORT_CALL).collect();
        for chunk in call.chunks(IMPORT_CHUNK) {
            let records = chunk
                .iter()
                .map(|id| {
                    line += 1;
                    v1::ImportRecord {
                        line,
                        record: Some(v1::import_record::Record::DeviceId(id.clone())),
                    }
                })
                .collect();
            messages.push(v1::ImportDevicesRequest {
                msg: Some(v1::import_devices_request::Msg::Chunk(v1::ImportChunk {
                    records,
                })),
            });
        }
        let report = operator
            .import_devices(tokio_stream::iter(messages))
            .await?
            .into_inner()
            .report
            .unwrap_or_default();
        if report.rejected > 0 {
            return Err(format!("the import rejected {} devices", report.rejected).into());
        }
    }
    Ok(batch.batch_id)
}
