//! The service's side of one onboarding, piece by piece: the two proof verifications, the
//! device certificate, the durable registry commit (alone and in a group of 64, as group
//! commit shares one fdatasync), and decoding stored records.
//! Needs no network and no running service: `cargo bench -p enroll-service`.
//! The commit benches write to a temporary directory on the disk under `$TMPDIR`.
#![allow(clippy::expect_used, reason = "a bench fails loudly")]

use std::hint::black_box;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use time::{Duration, OffsetDateTime};

use enroll_service::audit::AuditDraft;
use enroll_service::model::{
    BatchCounts, BatchRecord, CountsDelta, CredentialRecord, CredentialStatus, DeviceRecord,
    DeviceState, Registration, RegistrationMetadata,
};
use enroll_service::pki::{CaNames, CertificateAuthority, LeafRequest, Serial, Validity};
use enroll_service::service::verify_signature;
use enroll_service::store::codec::{decode, encode};
use enroll_service::store::{Change, Guard, Op, Registry, SledRegistry, commit};
use rot_core::attestation::{self, ChallengeContext, ChallengeKind, SignerRole};
use rot_core::keys::{DeviceId, KeySlot, PublicKey};

fn key_pair(rng: &SystemRandom) -> EcdsaKeyPair {
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, rng).expect("key");
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).expect("key")
}

fn public(key: &EcdsaKeyPair) -> PublicKey {
    PublicKey::from_sec1(key.public_key().as_ref()).expect("P-256 point")
}

fn verify(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let (esk, dsk) = (key_pair(&rng), key_pair(&rng));
    let (epk, dpk) = (public(&esk), public(&dsk));
    let device_id = DeviceId::from_public_key(&epk);
    let context = ChallengeContext {
        device_id: &device_id,
        challenge_id: &[7; 16],
        nonce: &[9; 32],
        dpk: &dpk,
        key_slot: KeySlot::FIRST,
    };
    let message = |role| {
        attestation::challenge_message(ChallengeKind::Onboarding, role, &context)
            .expect("message")
            .as_bytes()
            .to_vec()
    };
    let (esk_message, dsk_message) = (
        message(SignerRole::EnrolmentKey),
        message(SignerRole::DeviceKey),
    );
    let esk_signature = esk.sign(&rng, &esk_message).expect("signs");
    let dsk_signature = dsk.sign(&rng, &dsk_message).expect("signs");
    c.bench_function("verify_proof_esk_and_dsk", |b| {
        b.iter(|| {
            black_box(verify_signature(&epk, &esk_message, esk_signature.as_ref()))
                && black_box(verify_signature(&dpk, &dsk_message, dsk_signature.as_ref()))
        });
    });
}

fn issue(c: &mut Criterion) {
    let now = OffsetDateTime::now_utc();
    let ca = CertificateAuthority::initialise(&CaNames::default(), now - Duration::hours(1))
        .expect("CA");
    let dpk = public(&key_pair(&SystemRandom::new()));
    let validity = Validity::new(now, now + Duration::days(365)).expect("validity");
    let common_name = "ab".repeat(32);
    c.bench_function("issue_device_certificate", |b| {
        b.iter(|| {
            black_box(
                ca.issue_device_certificate(&LeafRequest {
                    public_key: *dpk.as_bytes(),
                    common_name: common_name.clone(),
                    validity,
                    serial: Serial::random().expect("serial"),
                    crl_distribution_point: None,
                    firmware: None,
                })
                .expect("issues"),
            )
        });
    });
}

const BATCH: &str = "bench-batch";

/// A valid P-256 public key for the records (which key does not matter to their cost).
fn some_key() -> PublicKey {
    static KEY: std::sync::OnceLock<PublicKey> = std::sync::OnceLock::new();
    *KEY.get_or_init(|| {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("key");
        PublicKey::from_sec1(pair.public_key().as_ref()).expect("a P-256 point")
    })
}

fn device_id(index: u64) -> DeviceId {
    format!("{index:064x}").parse().expect("a DeviceId")
}

fn device(index: u64) -> DeviceRecord {
    let mut device = DeviceRecord::new(device_id(index));
    device.registration = Some(Registration {
        epk: some_key(),
        registered_at: OffsetDateTime::UNIX_EPOCH,
        proof_context_hex: hex::encode(b"station-1"),
        metadata: RegistrationMetadata::default(),
    });
    device.owner = Some("acme".into());
    device.batch_id = Some(BATCH.into());
    device
}

fn credential(index: u64) -> CredentialRecord {
    let now = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
    CredentialRecord {
        serial: Serial::new((1u128 << 120) + u128::from(index)).expect("serial"),
        device_id: device_id(index),
        key_slot: 1,
        dpk: some_key(),
        owner: "acme".into(),
        policy_name: "broker".into(),
        batch_id: BATCH.into(),
        assignment: 0,
        subject_cn: format!("{index:064x}"),
        issued_at: now,
        not_before: now - Duration::minutes(5),
        not_after: now + Duration::days(365),
        renew_after: Some(now + Duration::days(335)),
        // A P-256 leaf is about 700 bytes of PEM.
        certificate_pem: format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            "A".repeat(640)
        ),
        status: CredentialStatus::Active,
        revocation: None,
    }
}

/// The change one onboarding commits: credential, device, batch counts, audit entry.
fn onboarding(index: u64) -> Change {
    let credential = credential(index);
    let mut device = device(index);
    device.slot_keys.insert(1, credential.dpk);
    device.current_serial = Some(credential.serial);
    device.serials.push(credential.serial);
    device.credential_assignment = Some(0);
    let mut change = Change::new();
    change
        .guard(Guard::SerialAbsent(credential.serial))
        .op(Op::AdjustCounts {
            batch_id: BATCH.into(),
            delta: CountsDelta::transition(DeviceState::Ready, DeviceState::Onboarded),
        })
        .audit(
            AuditDraft::new(
                credential.issued_at,
                format!("device:{}", device.device_id),
                "acme",
                "device.onboard",
                format!("device:{}", device.device_id),
                "ok",
            )
            .detail("serial", credential.serial.to_string())
            .detail("key_slot", "1")
            .detail("policy", "acme/broker")
            .detail("batch", BATCH),
        )
        .op(Op::PutDevice(device))
        .op(Op::PutCredential(Box::new(credential)));
    change
}

fn store_commit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temporary directory");
    let registry: Arc<dyn Registry> = runtime
        .block_on(async { SledRegistry::open(&dir.path().join("registry")) })
        .expect("registry");
    let mut batch = Change::new();
    batch.op(Op::PutBatch(BatchRecord {
        batch_id: BATCH.into(),
        owner: "acme".into(),
        name: "bench".into(),
        policy_name: "broker".into(),
        description: String::new(),
        created_at: OffsetDateTime::UNIX_EPOCH,
        created_by: "bench".into(),
        counts: BatchCounts::default(),
    }));
    runtime
        .block_on(commit(registry.as_ref(), batch))
        .expect("batch");
    let mut next = 0u64;
    let mut group = c.benchmark_group("store_commit_durable");
    for size in [1u64, 64] {
        group.throughput(Throughput::Elements(size));
        group.bench_function(format!("group_of_{size}"), |b| {
            b.iter_batched(
                || {
                    let changes: Vec<Change> = (next..next + size).map(onboarding).collect();
                    next += size;
                    changes
                },
                |changes| {
                    runtime.block_on(async {
                        // Submitted together, as concurrent onboardings are: one group, one
                        // fdatasync.
                        let mut pending = tokio::task::JoinSet::new();
                        for change in changes {
                            let registry = registry.clone();
                            pending.spawn(async move { registry.commit(change).await });
                        }
                        while let Some(receipt) = pending.join_next().await {
                            receipt.expect("task").expect("commits");
                        }
                    });
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn record_decode(c: &mut Criterion) {
    let mut device = device(7);
    device.slot_keys.insert(1, some_key());
    device.current_serial = Some(Serial::new(0x1f).expect("serial"));
    device.serials.push(Serial::new(0x1f).expect("serial"));
    let credential = credential(7);
    let mut group = c.benchmark_group("record_decode");
    let stored_device = encode(&device);
    let stored_credential = encode(&credential);
    group.bench_function("device", |b| {
        b.iter(|| black_box(decode::<DeviceRecord>(b"d/", black_box(&stored_device))));
    });
    group.bench_function("credential", |b| {
        b.iter(|| {
            black_box(decode::<CredentialRecord>(
                b"c/",
                black_box(&stored_credential),
            ))
        });
    });
    // The same records as JSON, how registries stored them before the binary encoding.
    let json_device = serde_json::to_vec(&device).expect("json");
    let json_credential = serde_json::to_vec(&credential).expect("json");
    group.bench_function("device_json", |b| {
        b.iter(|| black_box(decode::<DeviceRecord>(b"d/", black_box(&json_device))));
    });
    group.bench_function("credential_json", |b| {
        b.iter(|| {
            black_box(decode::<CredentialRecord>(
                b"c/",
                black_box(&json_credential),
            ))
        });
    });
    group.finish();
}

criterion_group!(benches, verify, issue, store_commit, record_decode);
criterion_main!(benches);
