//! Every refusal of the two decisions, one table row each, without a network or a registry. The
//! last test checks that the tables together cover every `RefusalDetail` the contract names.
#![allow(
    clippy::unwrap_used,
    clippy::too_many_lines,
    reason = "tests fail loudly; a table reads best whole"
)]

use std::collections::HashSet;
use std::sync::OnceLock;

use rot_core::emulator::{ChipSeed, EmulatedChip, OperatingConditions};
use rot_core::extractor::{EnrolMode, enrol};
use rot_core::keys::Seeds;
use time::OffsetDateTime;

use super::*;
use crate::model::{Registration, RegistrationMetadata, RevocationRecord};
use crate::pki::{RevocationReason, Serial};
use crate::policy::CloudParams;
use crate::policy::mosquitto::MosquittoParams;

/// One emulated chip's seeds, enrolled once for all tests.
fn seeds() -> &'static Seeds {
    static SEEDS: OnceLock<Seeds> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut chip = EmulatedChip::new(
            &ChipSeed::from_bytes([7; 32]),
            OperatingConditions::NOMINAL,
            [1; 32],
        );
        enrol(&mut chip, None, EnrolMode::FirstEnrolment)
            .unwrap()
            .seeds
    })
}

fn epk() -> PublicKey {
    seeds().enrolment_key().public_key()
}

fn device_id() -> DeviceId {
    DeviceId::from_public_key(&epk())
}

fn slot(n: u8) -> KeySlot {
    KeySlot::new(n).unwrap()
}

fn batch() -> BatchRecord {
    BatchRecord {
        batch_id: "b-1".into(),
        owner: "acme".into(),
        name: "line 1".into(),
        policy_name: "broker".into(),
        description: String::new(),
        created_at: OffsetDateTime::UNIX_EPOCH,
        created_by: "alice".into(),
        counts: crate::model::BatchCounts::default(),
    }
}

fn policy() -> PolicySpec {
    PolicySpec {
        name: "broker".into(),
        owner: "acme".into(),
        description: String::new(),
        certificate_lifetime: time::Duration::days(365),
        renew_window: time::Duration::days(30),
        subject_cn_template: "{device_id}".into(),
        crl_base_url: String::new(),
        cloud: CloudParams::Mosquitto(MosquittoParams {
            host: "127.0.0.1".into(),
            port: 8883,
            topic_root: "devices".into(),
            broker_ca_pem: String::new(),
            tls_versions: crate::policy::TlsVersion::ALL.to_vec(),
        }),
        created_at: OffsetDateTime::UNIX_EPOCH,
        created_by: "alice".into(),
        superseded_grace: crate::policy::DEFAULT_SUPERSEDED_GRACE,
        firmware_measurements: Vec::new(),
    }
}

/// A registered device in batch `b-1`, not onboarded: eligible for Onboard on slot 1.
fn ready_device() -> DeviceRecord {
    let mut device = DeviceRecord::new(device_id());
    device.registration = Some(Registration {
        epk: epk(),
        registered_at: OffsetDateTime::UNIX_EPOCH,
        proof_context_hex: String::new(),
        metadata: RegistrationMetadata::default(),
    });
    device.owner = Some("acme".into());
    device.batch_id = Some("b-1".into());
    device
}

/// `ready_device` after its first onboarding on slot 1.
fn onboarded_device() -> DeviceRecord {
    let mut device = ready_device();
    let serial = Serial::new(0x1f).unwrap();
    device.current_serial = Some(serial);
    device.serials.push(serial);
    device.credential_assignment = Some(device.assignment);
    device
        .slot_keys
        .insert(1, seeds().device_key(slot(1)).public_key());
    device
}

fn facts(device: DeviceRecord) -> DeviceFacts {
    DeviceFacts {
        device: Some(device),
        placement: Some((batch(), policy())),
        current_slot: None,
        owner: None,
    }
}

fn eligible(exchange: Exchange, facts: DeviceFacts) -> Result<Eligible, Refusal> {
    check_eligible(exchange, &device_id(), &epk(), || Ok(()), facts)
}

const RENEW: Exchange = Exchange::Renew { target_slot: 0 };

/// The eligibility table: each row is a situation and the refusal it must get.
fn eligibility_refusals() -> Vec<(&'static str, Result<Eligible, Refusal>, RefusalDetail)> {
    let other_epk = seeds().device_key(slot(7)).public_key();
    let mut revoked = ready_device();
    revoked.revocation = Some(RevocationRecord {
        revoked_at: OffsetDateTime::UNIX_EPOCH,
        reason: RevocationReason::KeyCompromise,
        comment: String::new(),
        revoked_by: "alice".into(),
    });
    let mut unregistered = ready_device();
    unregistered.registration = None;
    let mut registered_with_other_key = ready_device();
    if let Some(registration) = &mut registered_with_other_key.registration {
        registration.epk = other_epk;
    }
    let mut no_batch = ready_device();
    no_batch.batch_id = None;
    let mut retired = ready_device();
    retired.retired_slots.push(1);
    let mut moved = onboarded_device();
    moved.assignment += 1;
    moved.key_slot = 2;
    let mut other_batch = facts(ready_device());
    if let Some((batch, _)) = &mut other_batch.placement {
        batch.batch_id = "b-2".into();
    }
    vec![
        (
            "the EPK does not hash to the DeviceId",
            check_eligible(
                Exchange::Onboard,
                &device_id(),
                &other_epk,
                || Ok(()),
                facts(ready_device()),
            ),
            RefusalDetail::DeviceIdMismatch,
        ),
        (
            "the device asked too often",
            check_eligible(
                Exchange::Onboard,
                &device_id(),
                &epk(),
                || Err(Duration::from_secs(5)),
                facts(ready_device()),
            ),
            RefusalDetail::RateLimited,
        ),
        (
            "no record",
            eligible(Exchange::Onboard, DeviceFacts::default()),
            RefusalDetail::Unregistered,
        ),
        (
            "listed in a batch, never registered",
            eligible(Exchange::Onboard, facts(unregistered)),
            RefusalDetail::Unregistered,
        ),
        (
            "registered with another EPK",
            eligible(Exchange::Onboard, facts(registered_with_other_key)),
            RefusalDetail::DeviceIdMismatch,
        ),
        (
            "revoked",
            eligible(Exchange::Onboard, facts(revoked)),
            RefusalDetail::Revoked,
        ),
        (
            "renew before any onboarding",
            eligible(RENEW, facts(ready_device())),
            RefusalDetail::NotOnboarded,
        ),
        (
            "in no batch",
            eligible(Exchange::Onboard, facts(no_batch)),
            RefusalDetail::NotInBatch,
        ),
        (
            "its batch or policy is gone",
            eligible(
                Exchange::Onboard,
                DeviceFacts {
                    placement: None,
                    ..facts(ready_device())
                },
            ),
            RefusalDetail::NotInBatch,
        ),
        (
            "the placement read is of another batch",
            eligible(Exchange::Onboard, other_batch),
            RefusalDetail::NotInBatch,
        ),
        (
            "its slot was retired",
            eligible(Exchange::Onboard, facts(retired)),
            RefusalDetail::KeySlotUnavailable,
        ),
        (
            "renew onto slot 8, which does not exist",
            eligible(
                Exchange::Renew { target_slot: 8 },
                facts(onboarded_device()),
            ),
            RefusalDetail::KeySlotUnavailable,
        ),
        (
            "moved: renew onto another slot than the move chose",
            eligible(Exchange::Renew { target_slot: 3 }, facts(moved)),
            RefusalDetail::KeySlotUnavailable,
        ),
    ]
}

#[test]
fn every_ineligible_situation_is_refused_with_its_detail() {
    for (situation, outcome, detail) in eligibility_refusals() {
        match outcome {
            Ok(e) => panic!("{situation}: eligible on slot {}", e.slot.get()),
            Err(refusal) => assert_eq!(refusal.detail, detail, "{situation}"),
        }
    }
}

#[test]
fn a_rate_limited_refusal_says_when_to_retry() {
    let refusal = check_eligible(
        Exchange::Onboard,
        &device_id(),
        &epk(),
        || Err(Duration::from_secs(5)),
        facts(ready_device()),
    )
    .unwrap_err();
    assert_eq!(refusal.retry_after, Some(Duration::from_secs(5)));
}

#[test]
fn a_strangers_hello_spends_nothing_of_the_rate_limit() {
    let other_epk = seeds().device_key(slot(7)).public_key();
    let mut asked = false;
    let outcome = check_eligible(
        Exchange::Onboard,
        &device_id(),
        &other_epk,
        || {
            asked = true;
            Ok(())
        },
        facts(ready_device()),
    );
    assert!(outcome.is_err());
    assert!(
        !asked,
        "the rate limit was charged for a Hello with another EPK"
    );
}

#[test]
fn eligible_devices_get_the_slot_their_situation_calls_for() {
    let slot_of = |exchange, facts| eligible(exchange, facts).unwrap().slot.get();
    assert_eq!(slot_of(Exchange::Onboard, facts(ready_device())), 1);
    // Renew with target 0 keeps the current credential's slot.
    let mut on_three = facts(onboarded_device());
    on_three.current_slot = Some(3);
    assert_eq!(slot_of(RENEW, on_three), 3);
    assert_eq!(
        slot_of(
            Exchange::Renew { target_slot: 4 },
            facts(onboarded_device())
        ),
        4
    );
    // After a move, the slot the move chose.
    let mut moved = onboarded_device();
    moved.assignment += 1;
    moved.key_slot = 2;
    assert_eq!(slot_of(RENEW, facts(moved.clone())), 2);
    assert_eq!(slot_of(Exchange::Renew { target_slot: 2 }, facts(moved)), 2);
}

/// A challenge on `slot` and a proof of it signed by the chip's ESK and the slot's DSK.
fn answered(
    exchange: Exchange,
    challenge_slot: u8,
    proof_slot: u8,
) -> (Eligible, IssuedChallenge, v1::Proof) {
    let eligible = eligible(exchange, facts(onboarded_device())).unwrap();
    let challenge = IssuedChallenge {
        id: [9; 16],
        nonce: [5; 32],
        slot: slot(challenge_slot),
        expires: tokio::time::Instant::now(),
    };
    let proof = sign(exchange, &challenge, proof_slot, &challenge.nonce);
    (eligible, challenge, proof)
}

/// The proof a device with these seeds makes for `challenge` with the DSK of `dsk_slot`,
/// signing `nonce` (the challenge's, unless a test wants another).
fn sign(
    exchange: Exchange,
    challenge: &IssuedChallenge,
    dsk_slot: u8,
    nonce: &[u8; 32],
) -> v1::Proof {
    let dsk = seeds().device_key(slot(dsk_slot));
    let dpk = dsk.public_key();
    let id = device_id();
    let context = ChallengeContext {
        device_id: &id,
        challenge_id: &challenge.id,
        nonce,
        dpk: &dpk,
        key_slot: challenge.slot,
    };
    let message = |role| attestation::challenge_message(exchange.kind(), role, &context).unwrap();
    v1::Proof {
        challenge_id: challenge.id.to_vec(),
        esk_signature: seeds()
            .enrolment_key()
            .sign(&message(SignerRole::EnrolmentKey))
            .0
            .to_vec(),
        dpk: dpk.as_bytes().to_vec(),
        dpk_signature: dsk.sign(&message(SignerRole::DeviceKey)).0.to_vec(),
        key_slot: u32::from(challenge.slot.get()),
        firmware: None,
    }
}

/// The firmware image every firmware-bound proof below measures.
fn firmware() -> FirmwareMeasurement {
    FirmwareMeasurement::of_image(b"firmware 1.0")
}

/// `proof` with a firmware binding for `measurement`, signed as a device running it signs:
/// the ESK and the slot's alias key over the v2 message of the same challenge.
fn bound(
    exchange: Exchange,
    challenge: &IssuedChallenge,
    proof: &v1::Proof,
    measurement: FirmwareMeasurement,
) -> v1::Proof {
    let alias = seeds().alias_key(challenge.slot, &measurement);
    let alias_key = alias.public_key();
    let dpk = PublicKey::from_sec1(&proof.dpk).unwrap();
    let id = device_id();
    let context = ChallengeContext {
        device_id: &id,
        challenge_id: &challenge.id,
        nonce: &challenge.nonce,
        dpk: &dpk,
        key_slot: challenge.slot,
    };
    let binding = FirmwareBinding {
        measurement: &measurement,
        alias_public_key: &alias_key,
    };
    let message = |signer| {
        attestation::firmware_binding_message(exchange.kind(), signer, &context, &binding).unwrap()
    };
    v1::Proof {
        firmware: Some(v1::FirmwareProof {
            measurement: measurement.as_bytes().to_vec(),
            alias_public_key: alias_key.as_bytes().to_vec(),
            esk_signature: seeds()
                .enrolment_key()
                .sign(&message(FirmwareSigner::EnrolmentKey))
                .0
                .to_vec(),
            alias_signature: alias.sign(&message(FirmwareSigner::AliasKey)).0.to_vec(),
        }),
        ..proof.clone()
    }
}

/// `eligible` under a policy that accepts only `accepted`.
fn requiring(eligible: &Eligible, accepted: &[FirmwareMeasurement]) -> Eligible {
    let mut eligible = eligible.clone();
    eligible.policy.firmware_measurements = accepted.to_vec();
    eligible.policy.firmware_measurements.sort_unstable();
    eligible
}

const LIVE: ChallengeStanding = ChallengeStanding {
    fresh: true,
    foreign: None,
    expired: false,
};

fn proved(
    eligible: &Eligible,
    challenge: &IssuedChallenge,
    standing: ChallengeStanding,
    proof: &v1::Proof,
) -> Result<ProvedKeys, Refusal> {
    check_proof(
        Exchange::Onboard,
        &device_id(),
        &epk(),
        eligible,
        challenge,
        standing,
        proof,
    )
}

/// The proof table: each row is a defect of the proof or its challenge and its refusal.
fn proof_refusals() -> Vec<(&'static str, Result<ProvedKeys, Refusal>, RefusalDetail)> {
    let (eligible, challenge, proof) = answered(Exchange::Onboard, 1, 1);
    let with = |change: &dyn Fn(&mut v1::Proof)| {
        let mut proof = proof.clone();
        change(&mut proof);
        proof
    };
    let other_nonce = sign(Exchange::Onboard, &challenge, 1, &[6; 32]);
    let renewal_signatures = sign(Exchange::Renew { target_slot: 0 }, &challenge, 1, &[5; 32]);
    let other_key = sign(Exchange::Onboard, &challenge, 2, &challenge.nonce);
    let with_firmware = bound(Exchange::Onboard, &challenge, &proof, firmware());
    let other_firmware = FirmwareMeasurement::of_image(b"firmware 2.0");
    let with_firmware_field = |change: &dyn Fn(&mut v1::FirmwareProof)| {
        let mut proof = with_firmware.clone();
        change(proof.firmware.as_mut().unwrap());
        proof
    };
    let renewal_binding = bound(
        Exchange::Renew { target_slot: 0 },
        &challenge,
        &proof,
        firmware(),
    );
    vec![
        (
            "it answers a challenge this stream never issued",
            proved(
                &eligible,
                &challenge,
                ChallengeStanding {
                    foreign: Some(ForeignChallenge::Foreign),
                    ..LIVE
                },
                &proof,
            ),
            RefusalDetail::NonceForeign,
        ),
        (
            "it answers another stream's spent challenge",
            proved(
                &eligible,
                &challenge,
                ChallengeStanding {
                    foreign: Some(ForeignChallenge::Spent),
                    ..LIVE
                },
                &proof,
            ),
            RefusalDetail::NonceReplayed,
        ),
        (
            "its own challenge was already spent",
            proved(
                &eligible,
                &challenge,
                ChallengeStanding {
                    fresh: false,
                    ..LIVE
                },
                &proof,
            ),
            RefusalDetail::NonceReplayed,
        ),
        (
            "it came after the expiry",
            proved(
                &eligible,
                &challenge,
                ChallengeStanding {
                    expired: true,
                    ..LIVE
                },
                &proof,
            ),
            RefusalDetail::NonceExpired,
        ),
        (
            "it names another key slot",
            proved(&eligible, &challenge, LIVE, &with(&|p| p.key_slot = 2)),
            RefusalDetail::SlotMismatch,
        ),
        (
            "its DPK is not a point",
            proved(&eligible, &challenge, LIVE, &with(&|p| p.dpk = vec![4; 65])),
            RefusalDetail::DpkMismatch,
        ),
        (
            "its DPK is the EPK",
            proved(
                &eligible,
                &challenge,
                LIVE,
                &with(&|p| p.dpk = epk().as_bytes().to_vec()),
            ),
            RefusalDetail::DpkMismatch,
        ),
        (
            "its DPK is not the one proved for the slot before",
            proved(&eligible, &challenge, LIVE, &other_key),
            RefusalDetail::DpkMismatch,
        ),
        (
            "the ESK signed another nonce",
            proved(&eligible, &challenge, LIVE, &other_nonce),
            RefusalDetail::BadEskSignature,
        ),
        (
            "the ESK signed a renewal, not an onboarding",
            proved(&eligible, &challenge, LIVE, &renewal_signatures),
            RefusalDetail::BadEskSignature,
        ),
        (
            "the DSK's signature is the ESK's",
            proved(
                &eligible,
                &challenge,
                LIVE,
                &with(&|p| p.dpk_signature = p.esk_signature.clone()),
            ),
            RefusalDetail::BadDskSignature,
        ),
        (
            "the policy lists firmware and the proof proves none",
            proved(
                &requiring(&eligible, &[firmware()]),
                &challenge,
                LIVE,
                &proof,
            ),
            RefusalDetail::FirmwareNotMeasured,
        ),
        (
            "it proves firmware the policy does not list",
            proved(
                &requiring(&eligible, &[other_firmware]),
                &challenge,
                LIVE,
                &with_firmware,
            ),
            RefusalDetail::FirmwareNotAccepted,
        ),
        (
            "the ESK signed another measurement",
            proved(
                &eligible,
                &challenge,
                LIVE,
                &with_firmware_field(&|f| f.measurement = other_firmware.as_bytes().to_vec()),
            ),
            RefusalDetail::BadFirmwareSignature,
        ),
        (
            "the firmware binding was signed for a renewal",
            proved(
                &eligible,
                &challenge,
                LIVE,
                &with(&|p| p.firmware = renewal_binding.firmware.clone()),
            ),
            RefusalDetail::BadFirmwareSignature,
        ),
        (
            "the alias key is the DPK",
            proved(
                &eligible,
                &challenge,
                LIVE,
                &with_firmware_field(&|f| f.alias_public_key = proof.dpk.clone()),
            ),
            RefusalDetail::BadAliasKey,
        ),
        (
            "the alias key is not a point",
            proved(
                &eligible,
                &challenge,
                LIVE,
                &with_firmware_field(&|f| f.alias_public_key = vec![4; 65]),
            ),
            RefusalDetail::BadAliasKey,
        ),
        (
            "the alias key's signature is the ESK's",
            proved(
                &eligible,
                &challenge,
                LIVE,
                &with_firmware_field(&|f| f.alias_signature = f.esk_signature.clone()),
            ),
            RefusalDetail::BadAliasKey,
        ),
    ]
}

#[test]
fn a_firmware_bound_proof_certifies_the_alias_key_and_names_the_firmware() {
    let (eligible, challenge, proof) = answered(Exchange::Onboard, 1, 1);
    let with_firmware = bound(Exchange::Onboard, &challenge, &proof, firmware());
    let alias_key = seeds().alias_key(slot(1), &firmware()).public_key();
    for eligible in [
        eligible.clone(),
        requiring(
            &eligible,
            &[firmware(), FirmwareMeasurement::of_image(b"other")],
        ),
    ] {
        let keys = proved(&eligible, &challenge, LIVE, &with_firmware).unwrap();
        assert_eq!(keys.dpk, seeds().device_key(slot(1)).public_key());
        assert_eq!(*keys.certified_key(), alias_key);
        assert_eq!(keys.measurement(), Some(firmware()));
    }
    // A proof without firmware under a policy without a list certifies the DPK, as before.
    let keys = proved(&eligible, &challenge, LIVE, &proof).unwrap();
    assert_eq!(*keys.certified_key(), keys.dpk);
    assert_eq!(keys.measurement(), None);
}

#[test]
fn a_refusal_for_unlisted_firmware_names_the_measurement_for_the_audit() {
    let (eligible, challenge, proof) = answered(Exchange::Onboard, 1, 1);
    let with_firmware = bound(Exchange::Onboard, &challenge, &proof, firmware());
    let policy_lists = [FirmwareMeasurement::of_image(b"firmware 2.0")];
    let refusal = proved(
        &requiring(&eligible, &policy_lists),
        &challenge,
        LIVE,
        &with_firmware,
    )
    .unwrap_err();
    assert_eq!(refusal.detail, RefusalDetail::FirmwareNotAccepted);
    assert_eq!(refusal.firmware, Some(firmware()));
    // The device hears only that its proof was rejected.
    assert_eq!(refusal.reason(), v1::RefusalReason::ProofRejected);
}

#[test]
fn every_defective_proof_is_refused_with_its_detail() {
    for (defect, outcome, detail) in proof_refusals() {
        match outcome {
            Ok(_) => panic!("{defect}: accepted"),
            Err(refusal) => assert_eq!(refusal.detail, detail, "{defect}"),
        }
    }
}

#[test]
fn a_good_proof_yields_the_slots_dpk_for_onboarding_and_renewal() {
    let (eligible, challenge, proof) = answered(Exchange::Onboard, 1, 1);
    assert_eq!(
        proved(&eligible, &challenge, LIVE, &proof).unwrap().dpk,
        seeds().device_key(slot(1)).public_key()
    );
    let renew = Exchange::Renew { target_slot: 0 };
    let (eligible, challenge, proof) = answered(renew, 3, 3);
    let dpk = check_proof(
        renew,
        &device_id(),
        &epk(),
        &eligible,
        &challenge,
        LIVE,
        &proof,
    );
    assert_eq!(dpk.unwrap().dpk, seeds().device_key(slot(3)).public_key());
}

#[test]
fn the_shape_check_names_the_field() {
    let (_, challenge, proof) = answered(Exchange::Onboard, 1, 1);
    assert!(check_proof_shape(&proof).is_ok());
    for (field, change) in [
        (
            "proof.esk_signature",
            (|p: &mut v1::Proof| p.esk_signature.pop()) as fn(&mut v1::Proof) -> Option<u8>,
        ),
        ("proof.dpk_signature", |p: &mut v1::Proof| {
            p.dpk_signature.pop()
        }),
        ("proof.firmware.measurement", |p: &mut v1::Proof| {
            p.firmware.as_mut().unwrap().measurement.pop()
        }),
        ("proof.firmware.alias_public_key", |p: &mut v1::Proof| {
            p.firmware.as_mut().unwrap().alias_public_key.pop()
        }),
        ("proof.firmware.esk_signature", |p: &mut v1::Proof| {
            p.firmware.as_mut().unwrap().esk_signature.pop()
        }),
        ("proof.firmware.alias_signature", |p: &mut v1::Proof| {
            p.firmware.as_mut().unwrap().alias_signature.pop()
        }),
    ] {
        let mut short = proof.clone();
        if field.starts_with("proof.firmware") {
            short = bound(Exchange::Onboard, &challenge, &short, firmware());
        }
        change(&mut short);
        let error = check_proof_shape(&short).unwrap_err();
        assert!(error.to_string().contains(field), "{error}");
    }
}

#[test]
fn the_tables_cover_every_refusal_detail_of_the_contract() {
    let covered: HashSet<RefusalDetail> = eligibility_refusals()
        .into_iter()
        .map(|(_, _, detail)| detail)
        .chain(proof_refusals().into_iter().map(|(_, _, detail)| detail))
        .collect();
    for detail in RefusalDetail::ALL {
        assert!(
            covered.contains(&detail),
            "no table row refuses with {detail:?}"
        );
    }
    // …and ALL is every detail the contract names (UNSPECIFIED aside).
    let contract = (1..)
        .map_while(|n| v1::RefusalDetail::try_from(n).ok())
        .count();
    assert_eq!(contract, RefusalDetail::ALL.len());
}
