//! Test support for the device-side handlers without a network: a service over a real sled
//! registry in a temporary directory, emulated chips (their keys derived by rot-core as on a
//! device), and devices placed in the registry in the state a test needs (registered, in a
//! batch, holding credentials the owner's CA really issued).
#![allow(
    clippy::expect_used,
    reason = "test support: a failed expect is a failed test"
)]

use std::sync::{Arc, OnceLock};

use rot_core::emulator::{ChipSeed, EmulatedChip, OperatingConditions};
use rot_core::extractor::{EnrolMode, enrol};
use rot_core::keys::{DeviceId, KeySlot, Seeds};
use time::OffsetDateTime;

use oxroot_proto::v1;

use super::{ServiceConfig, ServiceCore};
use crate::metrics::Metrics;
use crate::model::{
    BatchCounts, BatchRecord, CountsDelta, CredentialRecord, CredentialStatus, DeviceRecord,
    Registration, RegistrationMetadata,
};
use crate::pki::{CaNames, CertificateAuthority, LeafRequest, Serial, Validity};
use crate::policy::PolicySpec;
use crate::store::{Change, Op, SledRegistry, commit};

/// The owner every fixture device belongs to.
pub(crate) const OWNER: &str = "acme";
/// Its batch, under a Mosquitto policy.
pub(crate) const BATCH: &str = "b-1";

/// The seeds of emulated chip `n` (0..4), enrolled once per test process.
pub(crate) fn chip(n: usize) -> &'static Seeds {
    static CHIPS: OnceLock<Vec<Seeds>> = OnceLock::new();
    &CHIPS.get_or_init(|| {
        (0u8..4)
            .map(|n| {
                let mut silicon = EmulatedChip::new(
                    &ChipSeed::from_bytes([0x40 + n; 32]),
                    OperatingConditions::NOMINAL,
                    [n; 32],
                );
                enrol(&mut silicon, None, EnrolMode::FirstEnrolment)
                    .expect("enrolment")
                    .seeds
            })
            .collect()
    })[n]
}

/// The DeviceId of chip `seeds`.
pub(crate) fn id_of(seeds: &Seeds) -> DeviceId {
    seeds.enrolment_key().device_id()
}

/// A service with the owner [`OWNER`] and its batch [`BATCH`].
pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub(crate) core: Arc<ServiceCore>,
    pub(crate) policy: PolicySpec,
}

impl Fixture {
    pub(crate) async fn new(config: ServiceConfig) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let registry = SledRegistry::open(dir.path()).expect("registry");
        let now = OffsetDateTime::now_utc();
        let ca = CertificateAuthority::initialise(&CaNames::default(), now).expect("CA");
        let core = ServiceCore::new(registry, Arc::new(ca), config, Arc::new(Metrics::new()));
        core.authorities()
            .ensure_owner(OWNER, "system:test")
            .await
            .expect("owner");
        let policy = PolicySpec::from_proto(
            &v1::Policy {
                name: "broker".into(),
                params: Some(v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
                    host: "127.0.0.1".into(),
                    ..Default::default()
                })),
                ..Default::default()
            },
            OWNER,
            "test",
            now,
            time::Duration::days(3650),
        )
        .expect("policy");
        let mut change = Change::new();
        change
            .op(Op::PutPolicy(Box::new(policy.clone())))
            .op(Op::PutBatch(BatchRecord {
                batch_id: BATCH.into(),
                owner: OWNER.into(),
                name: BATCH.into(),
                policy_name: policy.name.clone(),
                description: String::new(),
                created_at: now,
                created_by: "test".into(),
                counts: BatchCounts::default(),
            }));
        commit(core.registry(), change).await.expect("commit");
        Self {
            _dir: dir,
            core,
            policy,
        }
    }

    /// The device record of `device_id`.
    pub(crate) async fn device(&self, device_id: &DeviceId) -> DeviceRecord {
        self.core
            .registry()
            .device(device_id)
            .await
            .expect("read")
            .expect("a device")
    }

    /// A credential record.
    pub(crate) async fn credential(&self, serial: Serial) -> CredentialRecord {
        self.core
            .registry()
            .credential(serial)
            .await
            .expect("read")
            .expect("a credential")
    }

    /// Registers chip `seeds` and lists it in [`BATCH`].
    pub(crate) async fn register(&self, seeds: &Seeds) -> DeviceId {
        let id = id_of(seeds);
        let now = OffsetDateTime::now_utc();
        let mut device = DeviceRecord::new(id);
        device.registration = Some(Registration {
            epk: seeds.enrolment_key().public_key(),
            registered_at: now,
            proof_context_hex: String::new(),
            metadata: RegistrationMetadata::default(),
        });
        device.owner = Some(OWNER.into());
        device.batch_id = Some(BATCH.into());
        let mut change = Change::new();
        change
            .op(Op::AdjustCounts {
                batch_id: BATCH.into(),
                delta: CountsDelta::joined(device.state()),
            })
            .op(Op::AddToBatch {
                batch_id: BATCH.into(),
                device_id: id,
            })
            .op(Op::PutDevice(device));
        commit(self.core.registry(), change).await.expect("commit");
        id
    }

    /// Issues the device a credential for the DSK of `slot` and makes it current, as Onboard or
    /// Renew would: the credential it replaces becomes SUPERSEDED (with no schedule: tests
    /// schedule what they need). Returns the new serial.
    pub(crate) async fn issue(&self, seeds: &Seeds, slot: u8) -> Serial {
        let id = id_of(seeds);
        let slot = KeySlot::new(slot).expect("a key slot");
        let dpk = seeds.device_key(slot).public_key();
        let now = OffsetDateTime::now_utc();
        let serial = Serial::random().expect("serial");
        let validity = Validity::new(
            now - time::Duration::minutes(1),
            now + time::Duration::days(30),
        )
        .expect("validity");
        let leaf = self
            .core
            .authorities()
            .issuing(OWNER)
            .await
            .expect("issuing CA")
            .ca
            .issue_device_certificate(&LeafRequest {
                public_key: *dpk.as_bytes(),
                common_name: id.to_string(),
                validity,
                serial,
                crl_distribution_point: None,
                firmware: None,
            })
            .expect("leaf");
        let mut device = self.device(&id).await;
        let before = device.state();
        let mut change = Change::new();
        if let Some(previous) = device.current_serial {
            let mut previous = self.credential(previous).await;
            previous.status = CredentialStatus::Superseded;
            change.op(Op::PutCredential(Box::new(previous)));
        }
        change.op(Op::PutCredential(Box::new(CredentialRecord {
            serial,
            device_id: id,
            key_slot: slot.get(),
            dpk,
            owner: OWNER.into(),
            policy_name: self.policy.name.clone(),
            batch_id: BATCH.into(),
            assignment: device.assignment,
            subject_cn: id.to_string(),
            issued_at: now,
            not_before: validity.not_before,
            not_after: validity.not_after,
            renew_after: Some(validity.not_after - time::Duration::days(10)),
            certificate_pem: leaf.pem,
            status: CredentialStatus::Active,
            revocation: None,
        })));
        device.key_slot = slot.get();
        device.slot_keys.insert(slot.get(), dpk);
        device.current_serial = Some(serial);
        device.serials.push(serial);
        device.credential_assignment = Some(device.assignment);
        device.onboarded_at = Some(now);
        change
            .op(Op::AdjustCounts {
                batch_id: BATCH.into(),
                delta: CountsDelta::transition(before, device.state()),
            })
            .op(Op::PutDevice(device));
        commit(self.core.registry(), change).await.expect("commit");
        serial
    }

    /// The audit records, oldest first.
    pub(crate) async fn audit(&self) -> Vec<crate::audit::AuditRecord> {
        self.core
            .registry()
            .audit(1, usize::MAX)
            .await
            .expect("audit")
            .into_iter()
            .map(|(_, entry)| entry.decode().expect("record"))
            .collect()
    }

    /// The issuing CA's revoked serials, with their CRL entries.
    pub(crate) async fn crl_entries(&self) -> Vec<(Serial, crate::model::CrlEntryRecord)> {
        let issuer = self
            .core
            .authorities()
            .issuing(OWNER)
            .await
            .expect("issuing CA")
            .id;
        self.core
            .registry()
            .revoked(&issuer)
            .await
            .expect("revoked")
    }
}
