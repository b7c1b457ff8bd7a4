//! The agent binary against the real enrolment service on loopback: enrol, register (online and
//! as an offline export imported through enrollctl's parser), batch import, onboard, status,
//! renew with rotation, revoke. Afterwards the state directory and everything the agent printed
//! are searched for the chip's secrets, derived independently with rot-core.
#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    clippy::too_many_lines,
    reason = "scenario tests read top to bottom; a failed unwrap is a failed test"
)]

mod common;

use std::path::Path;

use base64::Engine;
use common::{Agent, Harness, import, policy_and_batch, revoke};
use oxroot_proto::v1;
use rot_core::emulator::{ChipSeed, EmulatedChip, OperatingConditions};
use rot_core::helper_data::HelperData;
use x509_parser::prelude::FromDer;

const CHIP_A: &str = "a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0";
const CHIP_B: &str = "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b";

fn mosquitto_params() -> v1::policy::Params {
    v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
        host: "127.0.0.1".into(),
        port: 18_883,
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrol_register_onboard_renew_revoke_and_no_secret_leaks() {
    let harness = Harness::start().await;
    let work = tempfile::tempdir().unwrap();
    let chip_file = work.path().join("chip-a.bin");
    let state = work.path().join("state-a");
    let agent = Agent::new(&state, &format!("file:{}", chip_file.display()));

    // Manufacture and first power-up.
    agent
        .run(&[
            "make-chip",
            "--out",
            chip_file.to_str().unwrap(),
            "--seed",
            CHIP_A,
        ])
        .await
        .ok();
    let enrolled = agent.run(&["enroll"]).await;
    assert!(enrolled.ok().starts_with("enrolled"), "{enrolled:#?}");
    let again = agent.run(&["enroll"]).await;
    assert!(again.fails(3).contains("already enrolled"), "{again:#?}");

    let id = agent.device_id().await;
    assert_eq!(id.len(), 64);
    let identity = agent.json(&["id"], None).await;
    assert_eq!(identity["device_id"], id.as_str());
    assert_eq!(identity["silicon"], format!("file:{}", chip_file.display()));
    assert_eq!(identity["helper_data_version"], 2);
    assert!(
        identity["epk_pem"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    assert!(identity["epk_sec1_hex"].as_str().unwrap().starts_with("04"));
    // The PEM is the SubjectPublicKeyInfo of exactly that point.
    let spki = pem::parse(identity["epk_pem"].as_str().unwrap()).unwrap();
    let (_, parsed) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki.contents()).unwrap();
    assert_eq!(
        hex::encode(parsed.subject_public_key.data.as_ref()),
        identity["epk_sec1_hex"].as_str().unwrap()
    );

    // Register online (idempotent), then the operator imports it into a batch.
    let registered = agent
        .run_with_service(&["register", "--station", "line-1"], &harness)
        .await;
    assert!(registered.ok().starts_with("registered"), "{registered:#?}");
    let registered = agent.run_with_service(&["register"], &harness).await;
    assert!(registered.ok().starts_with("already registered"));

    // The service answers only a signed request: before onboarding, the enrolment key signs.
    let status = agent.json(&["status"], Some(&harness)).await;
    assert_eq!(status["service_status"], "NOT_ONBOARDED");
    assert_eq!(status["signed_with"], "enrolment key");

    let mut operator = harness.operator("acme").await;
    let batch = policy_and_batch(&mut operator, "broker", mosquitto_params()).await;
    let report = import(
        &mut operator,
        &batch,
        vec![v1::import_record::Record::DeviceId(id.clone())],
    )
    .await;
    assert_eq!(report.accepted, 1, "{report:?}");

    // Onboard: slot 1, a credential stored in the state directory.
    let onboarded = agent.json(&["onboard"], Some(&harness)).await;
    assert_eq!(onboarded["device_id"], id.as_str());
    assert_eq!(onboarded["key_slot"], 1);
    assert_eq!(onboarded["policy_kind"], "mosquitto");
    assert_eq!(onboarded["topic_prefix"], format!("devices/{id}/"));
    let first_serial = onboarded["serial"].as_str().unwrap().to_owned();
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("credential.json")).unwrap()).unwrap();
    assert_eq!(stored["serial"], first_serial.as_str());

    let status = agent.json(&["status"], Some(&harness)).await;
    assert_eq!(status["service_status"], "ENROLLED");
    assert_eq!(status["serial"], first_serial.as_str());
    assert_eq!(status["signed_with"], "device key, slot 1");
    // Without --service, status is local only and needs no silicon.
    let local = agent.json(&["status"], None).await;
    assert_eq!(local["serial"], first_serial.as_str());
    assert!(local.get("service_status").is_none());

    // Renew with rotation: slot 2, a new serial, the old credential kept as the fallback.
    let renewed = agent.json(&["renew", "--rotate"], Some(&harness)).await;
    assert_eq!(renewed["key_slot"], 2);
    assert_ne!(renewed["serial"], first_serial.as_str());
    assert_eq!(renewed["previous_serial"], first_serial.as_str());
    let second_serial = renewed["serial"].as_str().unwrap().to_owned();
    // Renewing again without rotation returns the current credential unchanged.
    let unchanged = agent.run_with_service(&["renew"], &harness).await;
    assert!(
        unchanged.ok().starts_with("credential unchanged"),
        "{unchanged:#?}"
    );
    let status = agent.json(&["status"], Some(&harness)).await;
    assert_eq!(status["key_slot"], 2);
    assert_eq!(status["previous_serial"], first_serial.as_str());
    assert_eq!(status["service_status"], "ENROLLED");

    // Revocation: status says so, renewal is refused with the service's reason and reference.
    revoke(&mut operator, &id).await;
    let status = agent.json(&["status"], Some(&harness)).await;
    assert_eq!(status["service_status"], "REVOKED");
    assert!(status["next_step"].as_str().unwrap().starts_with("stop"));
    let refused = agent.run_with_service(&["renew"], &harness).await;
    let message = refused.fails(3);
    assert!(message.contains("refused: REVOKED"), "{message}");
    assert!(message.contains("reference"), "{message}");
    // The refused renewal left the credential alone.
    let local = agent.json(&["status"], None).await;
    assert_eq!(local["serial"], second_serial.as_str());

    // The scan: nothing secret in the state directory or in anything the agent printed.
    let helper = std::fs::read(state.join("helper-data.bin")).unwrap();
    let secrets = secrets_of(CHIP_A, &helper);
    let mut haystacks = files_under(&state);
    haystacks.push((
        "agent stdout+stderr".to_owned(),
        agent.transcript.lock().unwrap().clone().into_bytes(),
    ));
    assert!(haystacks.len() >= 5, "{:?}", names(&haystacks));
    scan(&haystacks, &secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_registration_is_imported_through_enrollctls_parser() {
    let harness = Harness::start().await;
    let work = tempfile::tempdir().unwrap();
    let agent = Agent::new(&work.path().join("state"), &format!("emulated:{CHIP_B}"));
    agent.run(&["enroll"]).await.ok();
    let id = agent.device_id().await;

    let export = work.path().join("registration.jsonl");
    let exported = agent
        .run(&[
            "register",
            "--export",
            export.to_str().unwrap(),
            "--proof-context",
            "station-7",
            "--site",
            "fab-1",
            "--station",
            "station-7",
            "--label",
            "lot=2025-17",
        ])
        .await;
    assert!(exported.ok().starts_with("registration exported"));
    let text = std::fs::read(&export).unwrap();
    assert_eq!(String::from_utf8_lossy(&text).lines().count(), 1);

    // enrollctl's own parser reads it as an offline registration.
    let parsed =
        enrollctl::import::parse_import(&text, enrollctl::import::ImportFormat::Auto).unwrap();
    assert!(parsed.rejections.is_empty(), "{:?}", parsed.rejections);
    let record = parsed.records[0].record.clone().unwrap();
    let v1::import_record::Record::Registration(registration) = &record else {
        panic!("expected an offline registration, got {record:?}");
    };
    assert_eq!(registration.claimed_device_id, id);
    assert_eq!(registration.proof_context, b"station-7");
    assert_eq!(
        registration.context.as_ref().unwrap().labels["lot"],
        "2025-17"
    );

    // The service checks the proof on import and registers the device; it then onboards.
    let mut operator = harness.operator("acme").await;
    let batch = policy_and_batch(&mut operator, "broker", mosquitto_params()).await;
    let report = import(&mut operator, &batch, vec![record]).await;
    assert_eq!(report.accepted, 1, "{report:?}");
    let onboarded = agent.json(&["onboard"], Some(&harness)).await;
    assert_eq!(onboarded["device_id"], id.as_str());

    // Forced re-enrolment: warned about, and the old identity's credential is gone.
    let forced = agent.run(&["enroll", "--force"]).await;
    assert!(forced.ok().starts_with("enrolled"), "{forced:#?}");
    assert!(forced.stderr.contains("re-enrolling"), "{forced:#?}");
    assert!(!agent.state.join("credential.json").exists());
    let status = agent.json(&["status"], None).await;
    assert_eq!(status["device_id"], agent.device_id().await.as_str());

    // A lost identity record is reported, and `id` restores it from the silicon.
    std::fs::remove_file(agent.state.join("identity.json")).unwrap();
    let lost = agent.run(&["status"]).await;
    assert!(lost.fails(2).contains("device-agent id"), "{lost:#?}");
    agent.run(&["id"]).await.ok();
    agent.run(&["status"]).await.ok();

    // A proof context over 128 bytes is the operator's mistake, named as such.
    let long = "x".repeat(129);
    let run = agent
        .run(&["register", "--export", "-", "--proof-context", &long])
        .await;
    assert!(run.fails(2).contains("--proof-context"), "{run:#?}");

    // --export and --service together is a usage error.
    let both = agent
        .run_with_service(&["register", "--export", "-"], &harness)
        .await;
    both.fails(2);
}

/// Every file under `dir`, hidden and temporary ones included.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    files
}

fn names(haystacks: &[(String, Vec<u8>)]) -> Vec<&str> {
    haystacks.iter().map(|(name, _)| name.as_str()).collect()
}

/// The chip seed, the eight PUF seeds and the nine private scalars (ESK and DSK of every slot),
/// reconstructed here from the chip seed and the stored helper data with rot-core alone.
fn secrets_of(chip_hex: &str, helper_data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let chip_seed: [u8; 32] = hex::decode(chip_hex).unwrap().try_into().unwrap();
    let helper = HelperData::from_bytes(helper_data).unwrap();
    let mut chip = EmulatedChip::new(
        &ChipSeed::from_bytes(chip_seed),
        OperatingConditions::NOMINAL,
        [42; 32],
    );
    let seeds = rot_core::extractor::reconstruct(&mut chip, &helper).unwrap();
    let exposed = rot_core::hazmat::expose_secrets(&seeds);
    let mut secrets = vec![("chip seed".to_owned(), chip_seed.to_vec())];
    for (index, seed) in exposed.seeds.iter().enumerate() {
        secrets.push((format!("seed {index}"), seed.to_vec()));
    }
    secrets.push(("ESK scalar".to_owned(), exposed.enrolment_scalar.to_vec()));
    for (index, scalar) in exposed.device_scalars.iter().enumerate() {
        secrets.push((format!("DSK scalar slot {}", index + 1), scalar.to_vec()));
    }
    secrets
}

/// The text forms a secret could take: hex in both cases, and base64 (standard and URL-safe)
/// at each of the three alignments it could sit at inside a longer encoded blob (only the
/// characters that depend on the secret alone are kept).
fn encodings(secret: &[u8]) -> Vec<String> {
    let mut forms = vec![hex::encode(secret), hex::encode_upper(secret)];
    for engine in [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        for offset in 0..3 {
            let mut shifted = vec![0u8; offset];
            shifted.extend_from_slice(secret);
            let text = engine.encode(&shifted);
            let skip = [0, 2, 3][offset];
            let whole_groups = shifted.len() / 3 * 4;
            forms.push(text[skip..whole_groups].to_owned());
        }
    }
    forms
}

fn scan(haystacks: &[(String, Vec<u8>)], secrets: &[(String, Vec<u8>)]) {
    for (what, secret) in secrets {
        let forms = encodings(secret);
        for (name, bytes) in haystacks {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_slice()),
                "{what} found raw in {name}"
            );
            let text = String::from_utf8_lossy(bytes);
            for form in &forms {
                assert!(
                    !text.contains(form.as_str()),
                    "{what} found as {form} in {name}"
                );
            }
        }
    }
}

#[test]
fn the_scan_would_find_a_leaked_secret() {
    let secret = [0x5au8; 32];
    let forms = encodings(&secret);
    for wrapper in [
        format!("key={}", hex::encode(secret)),
        format!(
            "x{}y",
            base64::engine::general_purpose::STANDARD.encode([&[1u8][..], &secret].concat())
        ),
        base64::engine::general_purpose::STANDARD.encode([&[1u8, 2][..], &secret].concat()),
    ] {
        assert!(
            forms.iter().any(|f| wrapper.contains(f.as_str())),
            "{wrapper}"
        );
    }
}
