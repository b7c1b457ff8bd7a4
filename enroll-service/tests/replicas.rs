//! Several `serve` replicas on one PostgreSQL database: real child processes over a throwaway
//! cluster (`common::postgres`). A batch is onboarded across three replicas while one is
//! SIGKILLed and the database restarts; then the races across replicas, one by one.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc,
    clippy::too_many_lines,
    reason = "scenario tests read top to bottom; a failed unwrap is a failed test"
)]

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::postgres::Cluster;
use common::process::{Service, channel, init_command, start};
use enroll_service::fleet::{EmulatedDevice, Outcome};
use enroll_service::store::{PostgresRegistry, Registry};
use oxroot_proto::v1;
use oxroot_proto::v1::device_enrollment_client::DeviceEnrollmentClient;
use oxroot_proto::v1::operator_client::OperatorClient;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Devices of the kill-and-restart scenario: 10,000, or `OXROOT_REPLICA_DEVICES` (a smaller
/// batch for a quick local run).
fn batch_size() -> u32 {
    std::env::var("OXROOT_REPLICA_DEVICES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000)
}

/// A state directory whose registry is the cluster's database.
fn init_on(cluster: &Cluster, dir: &Path) -> PathBuf {
    let state = dir.join("state");
    let output = init_command(&state)
        .args(["--postgres", &cluster.url()])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "init --postgres: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    state
}

async fn operator(service: &Service, state: &Path) -> OperatorClient<Channel> {
    OperatorClient::new(channel(&service.url, state, true).await)
}

async fn device_client(service: &Service, state: &Path) -> DeviceEnrollmentClient<Channel> {
    DeviceEnrollmentClient::new(channel(&service.url, state, false).await)
}

fn fleet(n: u32, seed: u8) -> Vec<EmulatedDevice> {
    (0..n)
        .map(|i| EmulatedDevice::manufacture(&[seed; 32], i).unwrap())
        .collect()
}

/// A Mosquitto policy of `factory` and a batch of `devices` under it (registered first).
async fn batch_of(
    operator: &mut OperatorClient<Channel>,
    client: &mut DeviceEnrollmentClient<Channel>,
    devices: &[EmulatedDevice],
    name: &str,
) -> String {
    for device in devices {
        client
            .register(device.registration(name.as_bytes()).unwrap())
            .await
            .unwrap();
    }
    let _ = operator
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
        .await;
    let response = operator
        .create_batch(v1::CreateBatchRequest {
            owner: "factory".into(),
            name: name.into(),
            policy_name: "broker".into(),
            device_ids: devices.iter().map(|d| d.device_id().to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.report.as_ref().unwrap().accepted,
        devices.len() as u64
    );
    response.batch.unwrap().batch_id
}

/// 10,000 devices onboard across three replicas.
/// Replica 2 is SIGKILLed a third of the way in, PostgreSQL is restarted two thirds of the way
/// in; devices whose replica died or whose call failed try the next replica. At the end every
/// device holds exactly one current credential, no serial was issued twice, the batch's counts
/// equal its members, the audit chain verifies, and a WatchBatch held open on replica 1 the
/// whole time saw every device's onboarding.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_onboard_a_batch_through_a_kill_and_a_database_restart() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let state = init_on(&cluster, dir.path());
    let replicas: Vec<Service> = (0..3).map(|_| start(&state)).collect();
    let urls: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();

    let n = batch_size();
    let devices = Arc::new(fleet(n, 7));
    let mut operator_one = operator(&replicas[0], &state).await;
    let mut device_one = device_client(&replicas[0], &state).await;
    let batch_id = batch_of(&mut operator_one, &mut device_one, &devices, "replicas").await;

    // The watcher on replica 1, which survives.
    let mut watch = operator_one
        .watch_batch(v1::WatchBatchRequest {
            batch_id: batch_id.clone(),
            device_events: true,
            until_settled: false,
        })
        .await
        .unwrap()
        .into_inner();
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let watcher = {
        let seen = seen.clone();
        let expected = n as usize;
        tokio::spawn(async move {
            while let Ok(Some(message)) = watch.message().await {
                if let Some(v1::watch_batch_response::Event::Device(event)) = message.event
                    && event.kind == v1::DeviceEventKind::Onboarded as i32
                {
                    let mut seen = seen.lock().unwrap();
                    seen.insert(event.device_id);
                    if seen.len() == expected {
                        return;
                    }
                }
            }
        })
    };

    let mut channels = Vec::new();
    for url in &urls {
        channels.push(channel(url, &state, false).await);
    }
    let channels = Arc::new(channels);
    let received: Arc<Mutex<HashMap<usize, String>>> = Arc::new(Mutex::new(HashMap::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let semaphore = Arc::new(tokio::sync::Semaphore::new(48));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..devices.len() {
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        let (devices, channels, received, done, killed) = (
            devices.clone(),
            channels.clone(),
            received.clone(),
            done.clone(),
            killed.clone(),
        );
        tasks.spawn(async move {
            let _permit = permit;
            // Spread over the replicas; after a failure, the next one (a load balancer's
            // retry). Replica 2 is skipped once it was killed.
            for attempt in 0..200 {
                let replica = (index + attempt) % 3;
                if replica == 1 && killed.load(Ordering::Acquire) {
                    continue;
                }
                let mut client = DeviceEnrollmentClient::new(channels[replica].clone());
                match devices[index].onboard(&mut client).await {
                    Ok(Outcome::Credentials(bundle)) => {
                        received
                            .lock()
                            .unwrap()
                            .insert(index, bundle.serial.clone());
                        done.fetch_add(1, Ordering::AcqRel);
                        return;
                    }
                    Ok(Outcome::Refused(refusal)) => {
                        panic!("device {index} refused: {refusal:?}")
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            panic!("device {index} never onboarded");
        });
    }

    // The disruptions, by progress.
    let n_usize = n as usize;
    while done.load(Ordering::Acquire) < n_usize / 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    {
        let mut child = replicas[1].child.lock().unwrap();
        child.kill().unwrap(); // SIGKILL: no shutdown path runs
        let _ = child.wait();
    }
    killed.store(true, Ordering::Release);
    while done.load(Ordering::Acquire) < 2 * n_usize / 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.stop();
    // While the database is down: health NOT_SERVING, calls UNAVAILABLE; and back, without a
    // restart of the service, once it returns.
    let mut health = HealthClient::new(channel(&urls[0], &state, false).await);
    wait_for_health(&mut health, ServingStatus::NotServing).await;
    let refused = operator_one
        .get_batch(v1::GetBatchRequest {
            batch_id: batch_id.clone(),
        })
        .await
        .expect_err("no batch can be read while the database is down");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    cluster.start_server();
    wait_for_health(&mut health, ServingStatus::Serving).await;

    while let Some(outcome) = tasks.join_next().await {
        outcome.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(60), watcher)
        .await
        .expect("the watcher on replica 1 saw every device's onboarding")
        .unwrap();
    assert_eq!(seen.lock().unwrap().len(), n_usize);

    // Every device holds exactly one current credential; no serial twice.
    let registry = PostgresRegistry::connect(&cluster.config()).await.unwrap();
    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), n_usize);
    let mut serials = HashSet::new();
    for (index, serial) in &received {
        let device = registry
            .device(devices[*index].device_id())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            device.current_serial.map(|s| s.to_string()).as_deref(),
            Some(serial.as_str()),
            "device {index} holds a credential that is not its current one"
        );
        assert!(
            serials.insert(serial.clone()),
            "serial {serial} issued twice"
        );
    }
    assert_eq!(registry.credential_count().await.unwrap(), u64::from(n));
    // The batch's counts equal its members.
    let batch = registry.batch(&batch_id).await.unwrap().unwrap();
    assert_eq!(batch.counts.total, u64::from(n));
    assert_eq!(batch.counts.onboarded, u64::from(n));
    // One verifiable audit chain (what `enrollctl audit verify` asks for), through a survivor.
    let mut operator_three = operator(&replicas[2], &state).await;
    let verified = operator_three
        .verify_audit(v1::VerifyAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(verified.ok, "{verified:?}");
    assert_eq!(verified.last_seq, registry.audit_head().await.unwrap());
    assert!(verified.entries_checked >= u64::from(n));
}

/// Polls the service's overall health until it is `wanted` (at most 20 s).
async fn wait_for_health(health: &mut HealthClient<Channel>, wanted: ServingStatus) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = health
            .check(HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner()
            .status();
        if status == wanted {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health still {status:?}, waiting for {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three replicas, the batch of `devices` on them, for the race tests.
struct Scene {
    cluster: Cluster,
    _dir: tempfile::TempDir,
    state: PathBuf,
    replicas: Vec<Service>,
}

impl Scene {
    fn start(replicas: usize) -> Self {
        let cluster = Cluster::start();
        let dir = tempfile::tempdir().unwrap();
        let state = init_on(&cluster, dir.path());
        let replicas = (0..replicas).map(|_| start(&state)).collect();
        Self {
            cluster,
            _dir: dir,
            state,
            replicas,
        }
    }

    async fn operator(&self, replica: usize) -> OperatorClient<Channel> {
        operator(&self.replicas[replica], &self.state).await
    }

    async fn devices(&self, replica: usize) -> DeviceEnrollmentClient<Channel> {
        device_client(&self.replicas[replica], &self.state).await
    }

    async fn registry(&self) -> Arc<PostgresRegistry> {
        PostgresRegistry::connect(&self.cluster.config())
            .await
            .unwrap()
    }
}

/// The same device proves itself on two replicas at once, many times over: each race ends
/// with one certificate, which both answers carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_proof_on_two_replicas_yields_one_certificate() {
    let scene = Scene::start(2);
    let devices = fleet(20, 11);
    let mut operator = scene.operator(0).await;
    let mut client_a = scene.devices(0).await;
    let mut client_b = scene.devices(1).await;
    batch_of(&mut operator, &mut client_a, &devices, "same-proof").await;
    for device in &devices {
        let (a, b) = tokio::join!(device.onboard(&mut client_a), device.onboard(&mut client_b));
        let serial = |outcome: Outcome| match outcome {
            Outcome::Credentials(bundle) => bundle.serial,
            Outcome::Refused(refusal) => panic!("refused: {refusal:?}"),
        };
        let (a, b) = (serial(a.unwrap()), serial(b.unwrap()));
        assert_eq!(a, b, "two certificates for one device");
    }
    let registry = scene.registry().await;
    assert_eq!(registry.credential_count().await.unwrap(), 20);
}

/// A revocation on one replica races the device's onboarding on another. Whichever wins, the
/// device ends revoked and no certificate of it stays valid: one issued before the revocation
/// is on its CA's revocation list.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoke_racing_onboarding_leaves_no_valid_certificate() {
    let scene = Scene::start(2);
    let devices = fleet(12, 12);
    let mut operator_a = scene.operator(0).await;
    let mut client_a = scene.devices(0).await;
    batch_of(&mut operator_a, &mut client_a, &devices, "revoke-race").await;
    let mut operator_b = scene.operator(1).await;
    let mut client_b = scene.devices(1).await;
    for device in &devices {
        let revoke = operator_a.revoke_device(v1::RevokeDeviceRequest {
            device_id: device.device_id().to_string(),
            reason: v1::RevocationReason::KeyCompromise as i32,
            comment: "race".into(),
        });
        let (revoked, onboarded) = tokio::join!(revoke, device.onboard(&mut client_b));
        revoked.unwrap();
        let _ = onboarded; // refused or issued: both are allowed outcomes of the race
    }
    let registry = scene.registry().await;
    for device in &devices {
        let record = registry.device(device.device_id()).await.unwrap().unwrap();
        assert!(record.revocation.is_some(), "the revocation was lost");
        for serial in &record.serials {
            let credential = registry.credential(*serial).await.unwrap().unwrap();
            assert_eq!(
                credential.status,
                enroll_service::model::CredentialStatus::Revoked,
                "credential {serial} of a revoked device is still valid"
            );
        }
    }
    // And the other replica says so too: nothing of the outcome lives in one process.
    for device in &devices {
        let seen = operator_b
            .get_device(v1::GetDeviceRequest {
                device_id: device.device_id().to_string(),
            })
            .await
            .unwrap()
            .into_inner()
            .device
            .unwrap();
        assert_eq!(seen.state, v1::DeviceState::Revoked as i32);
    }
}

/// CreateBatch with the same request id on two replicas at once: one batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_batch_with_one_request_id_on_two_replicas_makes_one_batch() {
    let scene = Scene::start(2);
    let devices = fleet(4, 13);
    let mut operator_a = scene.operator(0).await;
    let mut operator_b = scene.operator(1).await;
    let mut client = scene.devices(0).await;
    batch_of(&mut operator_a, &mut client, &devices[..1], "first").await;
    for round in 0..10 {
        let request = v1::CreateBatchRequest {
            owner: "factory".into(),
            name: format!("idempotent-{round}"),
            policy_name: "broker".into(),
            request_id: format!("mes-order-{round}"),
            ..Default::default()
        };
        let (a, b) = tokio::join!(
            operator_a.create_batch(request.clone()),
            operator_b.create_batch(request)
        );
        let a = a.unwrap().into_inner().batch.unwrap().batch_id;
        let b = b.unwrap().into_inner().batch.unwrap().batch_id;
        assert_eq!(a, b, "one request id made two batches");
    }
    let registry = scene.registry().await;
    let batches = registry.batches(Some("factory"), None, 100).await.unwrap();
    assert_eq!(batches.len(), 11);
}

/// An operator certificate revoked through replica A is refused by replica B at its next
/// call: B reads the certificate's record from the shared registry, not from a cache of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_revoked_on_one_replica_is_refused_on_the_other() {
    let scene = Scene::start(2);
    let mut admin_a = scene.operator(0).await;
    let key = rcgen::KeyPair::generate().unwrap();
    let issued = admin_a
        .issue_operator_certificate(v1::IssueOperatorCertificateRequest {
            key: Some(v1::issue_operator_certificate_request::Key::PublicKey(
                rcgen::PublicKeyData::subject_public_key_info(&key),
            )),
            name: "otto".into(),
            role: v1::Role::Operator as i32,
            owner: "factory".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let otto_channel = {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let root = std::fs::read(scene.state.join("admin/root.pem")).unwrap();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(root))
            .domain_name("localhost")
            .identity(Identity::from_pem(
                format!(
                    "{}{}",
                    issued.certificate_pem,
                    issued.intermediate_pems.concat()
                ),
                key.serialize_pem(),
            ));
        Channel::from_shared(scene.replicas[1].url.clone())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    let mut otto_b = OperatorClient::new(otto_channel);
    otto_b
        .list_batches(v1::ListBatchesRequest::default())
        .await
        .expect("otto works on replica B before the revocation");
    admin_a
        .revoke_operator_certificate(v1::RevokeOperatorCertificateRequest {
            serial: issued.serial.clone(),
            reason: v1::RevocationReason::KeyCompromise as i32,
            comment: "left the company".into(),
        })
        .await
        .unwrap();
    let refused = otto_b
        .list_batches(v1::ListBatchesRequest::default())
        .await
        .expect_err("replica B refuses a certificate revoked on replica A");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
}
