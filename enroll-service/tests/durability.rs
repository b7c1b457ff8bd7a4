//! Durability: the service runs as a real child process, is SIGKILLed in the middle of a
//! 1,000-device batch, and restarted. Every credential a device received must be in the
//! registry, and no serial may have been issued twice.
#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    clippy::too_many_lines,
    reason = "scenario tests read top to bottom; a failed unwrap is a failed test"
)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use common::process::{channel, init, start, start_with_file_size_limit};

use enroll_service::fleet::{EmulatedDevice, Outcome};
use enroll_service::store::{Registry, SledRegistry};
use oxroot_proto::v1;
use oxroot_proto::v1::device_enrollment_client::DeviceEnrollmentClient;
use oxroot_proto::v1::operator_client::OperatorClient;
use tonic::transport::Channel;

const DEVICES: u32 = 1000;
const KILL_AFTER: usize = 400;
/// A Mosquitto policy and a batch under it, for the `factory` owner.
async fn create_batch(
    operator: &mut OperatorClient<Channel>,
    device_ids: Vec<String>,
) -> v1::CreateBatchResponse {
    operator
        .create_policy(v1::CreatePolicyRequest {
            policy: Some(v1::Policy {
                name: "broker".into(),
                owner: "factory".into(),
                params: Some(v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
                    host: "127.0.0.1".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    operator
        .create_batch(v1::CreateBatchRequest {
            owner: "factory".into(),
            name: "durability".into(),
            policy_name: "broker".into(),
            device_ids,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// Onboards every device not yet in `received`, concurrently, until done or the channel dies.
async fn onboard_all(
    channel: Channel,
    devices: &Arc<Vec<EmulatedDevice>>,
    received: &Arc<std::sync::Mutex<HashMap<usize, String>>>,
    stop_after: Option<(usize, tokio::sync::oneshot::Sender<()>)>,
) {
    let pending: Vec<usize> = {
        let received = received.lock().unwrap();
        (0..devices.len())
            .filter(|i| !received.contains_key(i))
            .collect()
    };
    let semaphore = Arc::new(tokio::sync::Semaphore::new(64));
    let stop = Arc::new(std::sync::Mutex::new(stop_after));
    let mut tasks = tokio::task::JoinSet::new();
    for index in pending {
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        let (devices, received, channel, stop) = (
            devices.clone(),
            received.clone(),
            channel.clone(),
            stop.clone(),
        );
        tasks.spawn(async move {
            let mut client = DeviceEnrollmentClient::new(channel);
            if let Ok(Outcome::Credentials(bundle)) = devices[index].onboard(&mut client).await {
                let count = {
                    let mut received = received.lock().unwrap();
                    received.insert(index, bundle.serial.clone());
                    received.len()
                };
                let mut stop = stop.lock().unwrap();
                if stop.as_ref().is_some_and(|(at, _)| count >= *at)
                    && let Some((_, tx)) = stop.take()
                {
                    let _ = tx.send(());
                }
            }
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_loses_no_issued_credential() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    init(&state);
    let service = start(&state);

    let devices: Arc<Vec<EmulatedDevice>> = Arc::new(
        (0..DEVICES)
            .map(|i| EmulatedDevice::manufacture(&[42; 32], i).unwrap())
            .collect(),
    );
    let device_channel = channel(&service.url, &state, false).await;
    let mut client = DeviceEnrollmentClient::new(device_channel.clone());
    for device in devices.iter() {
        client
            .register(device.registration(b"durability").unwrap())
            .await
            .unwrap();
    }
    let mut operator = OperatorClient::new(channel(&service.url, &state, true).await);
    let batch = create_batch(
        &mut operator,
        devices.iter().map(|d| d.device_id().to_string()).collect(),
    )
    .await;
    assert_eq!(batch.report.unwrap().accepted, u64::from(DEVICES));

    // Onboard until KILL_AFTER credentials arrived, then SIGKILL the service mid-flight.
    let received = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel();
    // Child::kill is SIGKILL on Unix: no shutdown path runs in the service.
    let child = service.child.clone();
    let killer = {
        let child = child.clone();
        tokio::spawn(async move {
            let _ = kill_rx.await;
            child.lock().unwrap().kill().unwrap();
        })
    };
    let started = Instant::now();
    onboard_all(
        device_channel,
        &devices,
        &received,
        Some((KILL_AFTER, kill_tx)),
    )
    .await;
    killer.await.unwrap();
    let status = child.lock().unwrap().wait().unwrap();
    assert!(
        !status.success(),
        "the service was killed, not stopped: {status:?}"
    );
    let before_kill = received.lock().unwrap().len();
    assert!(
        before_kill >= KILL_AFTER && before_kill < devices.len(),
        "{before_kill}"
    );

    // Restart and finish the batch: devices whose credential was durable get the same one.
    drop(service);
    let service = start(&state);
    let device_channel = channel(&service.url, &state, false).await;
    onboard_all(device_channel, &devices, &received, None).await;
    let elapsed = started.elapsed();
    assert_eq!(received.lock().unwrap().len(), devices.len());
    drop(service);
    eprintln!(
        "durability: {} devices onboarded in {:.2}s across a SIGKILL ({} before it)",
        devices.len(),
        elapsed.as_secs_f64(),
        before_kill
    );

    // Every credential a device received is in the registry, as that device's, and current.
    let registry = SledRegistry::open(&state.join("registry")).unwrap();
    let received = received.lock().unwrap().clone();
    let mut serials = HashSet::new();
    for (index, serial) in &received {
        let device_id = *devices[*index].device_id();
        let credential = registry
            .credential(serial.parse().unwrap())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("credential {serial} of device {index} was lost"));
        assert_eq!(credential.device_id, device_id);
        let device = registry.device(&device_id).await.unwrap().unwrap();
        assert_eq!(
            device.current_serial.map(|s| s.to_string()).as_deref(),
            Some(serial.as_str())
        );
        assert!(
            serials.insert(serial.clone()),
            "serial {serial} handed to two devices"
        );
    }
    // No serial issued twice: each device holds exactly one, and the store counts as many
    // certificates as devices (a retried onboarding reused the durable credential).
    for device in devices.iter() {
        let record = registry.device(device.device_id()).await.unwrap().unwrap();
        assert_eq!(
            record.serials.len(),
            1,
            "device issued {:?}",
            record.serials
        );
    }
    assert_eq!(
        registry.credential_count().await.unwrap(),
        u64::from(DEVICES)
    );
    let batch = registry
        .batch(&batch.batch.unwrap().batch_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.counts.onboarded, u64::from(DEVICES));
}

/// The disk fills up in the middle of an import: the failed write is refused, every call then
/// answers UNAVAILABLE, and health turns NOT_SERVING so that orchestrators stop sending traffic.
/// After a restart with room again, the registry holds exactly the chunks that were committed:
/// the batch's counts match its members, and the audit chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_service_cleanly_and_loses_nothing_committed() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    init(&state);
    // 1 MiB for sled's log: a few thousand imported devices fit, thirty thousand do not.
    let service = start_with_file_size_limit(&state, 2048);
    let mut operator = OperatorClient::new(channel(&service.url, &state, true).await);
    let batch_id = create_batch(&mut operator, Vec::new())
        .await
        .batch
        .unwrap()
        .batch_id;

    let ids: Vec<String> = (0..30_000u32)
        .map(|i| {
            hex::encode(aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                &i.to_be_bytes(),
            ))
        })
        .collect();
    let mut messages = vec![v1::ImportDevicesRequest {
        msg: Some(v1::import_devices_request::Msg::Header(v1::ImportHeader {
            batch_id: batch_id.clone(),
        })),
    }];
    for chunk in ids.chunks(1000) {
        messages.push(v1::ImportDevicesRequest {
            msg: Some(v1::import_devices_request::Msg::Chunk(v1::ImportChunk {
                records: chunk
                    .iter()
                    .map(|id| v1::ImportRecord {
                        line: 0,
                        record: Some(v1::import_record::Record::DeviceId(id.clone())),
                    })
                    .collect(),
            })),
        });
    }
    let refused = operator
        .import_devices(tokio_stream::iter(messages))
        .await
        .expect_err("the import cannot fit in 1 MiB");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");

    let mut health = HealthClient::new(channel(&service.url, &state, false).await);
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    for name in ["", "oxroot.v1.DeviceEnrollment", "oxroot.v1.Operator"] {
        loop {
            let status = health
                .check(HealthCheckRequest {
                    service: name.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status();
            if status == ServingStatus::NotServing {
                break;
            }
            assert!(Instant::now() < deadline, "{name:?} still {status:?}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let status = operator
        .who_am_i(v1::WhoAmIRequest {})
        .await
        .expect_err("every call fails after a failed write");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    drop(service);

    // Room again: what was committed is all there, and consistent.
    let service = start(&state);
    let mut operator = OperatorClient::new(channel(&service.url, &state, true).await);
    let batch = operator
        .get_batch(v1::GetBatchRequest {
            batch_id: batch_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .batch
        .unwrap();
    let total = batch.counts.unwrap().total;
    let mut members = 0u64;
    let mut page_token = String::new();
    loop {
        let page = operator
            .list_devices(v1::ListDevicesRequest {
                batch_id: batch_id.clone(),
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        members += page.devices.len() as u64;
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(members, total, "the batch's counts match its members");
    assert!(total > 0 && total < 30_000, "{total}");
    // Imports commit whole chunks.
    assert_eq!(total % 1000, 0, "{total}");
    let verified = operator
        .verify_audit(v1::VerifyAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(verified.ok, "{verified:?}");
    let mut health = HealthClient::new(channel(&service.url, &state, false).await);
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);
}
