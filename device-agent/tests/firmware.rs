//! Keys bound to the firmware that runs (TCG DICE layering), end to end: the agent measures
//! its firmware image, the service certifies the alias key for that measurement and names it
//! in a TcbInfo extension (read back here by Python's cryptography and pyasn1, independently
//! of oxroot's encoder), the alias key authenticates to a real Mosquitto broker, an updated
//! image needs a renewal and gets a certificate naming the new image, and firmware the policy
//! does not list (a tampered image, or none at all) is refused with an audit entry that names
//! it.
#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    clippy::too_many_lines,
    reason = "scenario tests read top to bottom; a failed unwrap is a failed test"
)]

mod common;

use std::path::Path;

use common::{Agent, Broker, Harness, batch_of, free_port};
use oxroot_proto::v1;
use oxroot_proto::v1::operator_client::OperatorClient;
use rot_core::FirmwareMeasurement;
use tonic::transport::Channel;

/// The SHA-256 OID, as the TcbInfo's FWID names the hash.
const ID_SHA256: &str = "2.16.840.1.101.3.4.2.1";

/// A firmware image: some kilobytes, different for each `version`.
fn image(version: u8) -> Vec<u8> {
    (0..40_000u32)
        .map(|i| (i.wrapping_mul(31) as u8) ^ version)
        .collect()
}

/// SHA-256 of a file, by `sha256sum` (a tool of the image's builder, not oxroot's code).
fn sha256sum(path: &Path) -> String {
    let output = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()[..64].to_owned()
}

/// The TcbInfo extension of the certificate at `pem`, as `tests/tools/tcb_info.py` reads it.
fn tcb_info(pem: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/tools/tcb_info.py");
    // Debian's interpreter, whose python3-cryptography and python3-pyasn1 tests/run installs
    // (a python3 earlier on PATH, pyenv's say, may lack them).
    let python = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|python| Path::new(python).exists())
        .unwrap_or("python3");
    let output = std::process::Command::new(python)
        .arg(script)
        .arg(pem)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "tcb_info.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The seeds of the emulated chip `0x31…`, reconstructed from the agent's helper data.
fn seeds_of(agent: &Agent) -> rot_core::keys::Seeds {
    use rot_core::emulator::{ChipSeed, EmulatedChip, OperatingConditions};
    let helper = std::fs::read(agent.state.join("helper-data.bin")).unwrap();
    let helper = rot_core::helper_data::HelperData::from_bytes(&helper).unwrap();
    let mut chip = EmulatedChip::new(
        &ChipSeed::from_bytes([0x31; 32]),
        OperatingConditions::NOMINAL,
        [42; 32],
    );
    rot_core::extractor::reconstruct(&mut chip, &helper).unwrap()
}

/// The subject public key (SEC1) of a PEM certificate.
fn certified_key(pem_text: &str) -> Vec<u8> {
    use x509_parser::prelude::FromDer;
    let der = pem::parse(pem_text).unwrap();
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der.contents()).unwrap();
    cert.public_key().subject_public_key.data.to_vec()
}

/// The audit entries of refusals of `device_id`.
async fn refusals(operator: &mut OperatorClient<Channel>, device_id: &str) -> Vec<v1::AuditEntry> {
    operator
        .query_audit(v1::QueryAuditRequest {
            action: "device.refuse".into(),
            subject: format!("device:{device_id}"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_is_bound_to_the_firmware_that_runs() {
    let harness = Harness::start().await;
    let work = tempfile::tempdir().unwrap();
    let (v1_image, v2_image, tampered) = (
        work.path().join("app-1.0.bin"),
        work.path().join("app-1.1.bin"),
        work.path().join("app-1.1-tampered.bin"),
    );
    std::fs::write(&v1_image, image(1)).unwrap();
    std::fs::write(&v2_image, image(2)).unwrap();
    let mut bytes = image(2);
    bytes[20_000] ^= 1;
    std::fs::write(&tampered, bytes).unwrap();
    let (m1, m2, m_tampered) = (
        sha256sum(&v1_image),
        sha256sum(&v2_image),
        sha256sum(&tampered),
    );
    // The slot the device runs from: its content is what the device measures.
    let running = work.path().join("running.bin");
    std::fs::copy(&v1_image, &running).unwrap();
    let firmware = ["--firmware", running.to_str().unwrap()];

    let port = free_port();
    let mut operator = harness.operator("acme").await;
    operator
        .create_policy(v1::CreatePolicyRequest {
            policy: Some(v1::Policy {
                name: "line".into(),
                firmware_measurements: vec![m2.to_uppercase(), m1.clone()],
                params: Some(v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
                    host: "127.0.0.1".into(),
                    port: u32::from(port),
                    ..Default::default()
                })),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let policy = operator
        .get_policy(v1::GetPolicyRequest {
            name: "line".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    // Stored lowercase and sorted, as sha256sum prints them.
    let mut listed = vec![m1.clone(), m2.clone()];
    listed.sort();
    assert_eq!(policy.firmware_measurements, listed);
    let batch = batch_of(&mut operator, "line").await;

    let device = Agent::new(
        &work.path().join("state"),
        &format!("emulated:{}", hex::encode([0x31; 32])),
    );
    let id = device.join_batch(&harness, &mut operator, &batch).await;

    // Onboarding proves firmware 1.0; the certificate certifies the alias key and names it.
    let onboarded = device
        .json(&[&["onboard"][..], &firmware].concat(), Some(&harness))
        .await;
    assert_eq!(onboarded["key_slot"], 1);
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(device.state.join("credential.json")).unwrap())
            .unwrap();
    assert_eq!(stored["firmware_measurement"], m1.as_str());
    let leaf = work.path().join("leaf-1.pem");
    std::fs::write(&leaf, stored["certificate_pem"].as_str().unwrap()).unwrap();
    let info = tcb_info(&leaf);
    assert_eq!(info["critical"], false);
    assert_eq!(
        info["fwids"],
        serde_json::json!([{ "hash_alg": ID_SHA256, "digest": m1 }])
    );
    assert_eq!(info["other_fields"], serde_json::json!([]));
    // The certified key is the slot's alias key for firmware 1.0, derived here from the chip
    // and its helper data with rot-core alone, and not the slot's DPK.
    let seeds = seeds_of(&device);
    let slot = rot_core::keys::KeySlot::FIRST;
    let certified = certified_key(stored["certificate_pem"].as_str().unwrap());
    let alias = seeds.alias_key(slot, &m1.parse().unwrap()).public_key();
    assert_eq!(certified, alias.as_bytes());
    assert_ne!(certified, seeds.device_key(slot).public_key().as_bytes());
    // The service's view says the same.
    let view = operator
        .get_device(v1::GetDeviceRequest {
            device_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .device
        .unwrap();
    assert_eq!(view.current_credential.unwrap().firmware_measurement, m1);

    // The alias key authenticates to the broker.
    let broker_dir = work.path().join("broker");
    std::fs::create_dir(&broker_dir).unwrap();
    let mut platform = harness.operator("*").await;
    let _broker = Broker::start(&mut platform, "acme", "line", &broker_dir, port).await;
    let connected = device
        .json(&[&["connect"][..], &firmware].concat(), None)
        .await;
    assert!(connected["bytes_read_back"].as_u64().unwrap() > 0);
    assert!(
        connected["client_key"].as_str().unwrap().contains(&m1),
        "{connected}"
    );

    // An update to 1.1: the old credential's key is gone with the old firmware, so the agent
    // says to renew rather than handshake with a key the certificate does not certify.
    std::fs::copy(&v2_image, &running).unwrap();
    let stale = device.run(&[&["connect"][..], &firmware].concat()).await;
    let message = stale.fails(3);
    assert!(message.contains("renew"), "{message}");
    assert!(message.contains(&m1) && message.contains(&m2), "{message}");
    assert!(
        message.contains(&format!("runs {m2}: renew")),
        "one sentence: {message}"
    );
    let renewed = device
        .json(&[&["renew"][..], &firmware].concat(), Some(&harness))
        .await;
    assert_eq!(renewed["key_slot"], 1);
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(device.state.join("credential.json")).unwrap())
            .unwrap();
    assert_eq!(stored["firmware_measurement"], m2.as_str());
    let leaf = work.path().join("leaf-2.pem");
    std::fs::write(&leaf, stored["certificate_pem"].as_str().unwrap()).unwrap();
    assert_eq!(tcb_info(&leaf)["fwids"][0]["digest"], m2.as_str());
    device
        .json(&[&["connect"][..], &firmware].concat(), None)
        .await;

    // A tampered image: the proof is refused, and the audit log names what the chip runs.
    std::fs::copy(&tampered, &running).unwrap();
    let refused = device
        .run_with_service(&[&["renew"][..], &firmware].concat(), &harness)
        .await;
    let message = refused.fails(3);
    assert!(message.contains("PROOF_REJECTED"), "{message}");
    let entries = refusals(&mut operator, &id).await;
    let last = entries.last().unwrap();
    assert_eq!(last.details["refusal_detail"], "firmware_not_accepted");
    assert_eq!(last.details["firmware_measurement"], m_tampered);

    // A device that proves no firmware is refused under this policy, and the log says why.
    let unmeasured = Agent::new(
        &work.path().join("state-2"),
        &format!("emulated:{}", hex::encode([0x32; 32])),
    );
    let other_id = unmeasured.join_batch(&harness, &mut operator, &batch).await;
    let refused = unmeasured.run_with_service(&["onboard"], &harness).await;
    refused.fails(3);
    let entries = refusals(&mut operator, &other_id).await;
    assert_eq!(
        entries.last().unwrap().details["refusal_detail"],
        "firmware_not_measured"
    );

    // The measurement the device computed is the one sha256sum computed.
    assert_eq!(
        FirmwareMeasurement::of_image(&image(1)).to_string(),
        m1,
        "rot-core's measurement is SHA-256 of the image"
    );
}

/// Creates a Mosquitto policy `name` for the client's owner.
async fn create_policy(operator: &mut OperatorClient<Channel>, name: &str) {
    operator
        .create_policy(v1::CreatePolicyRequest {
            policy: Some(v1::Policy {
                name: name.into(),
                params: Some(v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
                    host: "127.0.0.1".into(),
                    port: 18_883,
                    ..Default::default()
                })),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
}

/// Signs `payload` through the Operator API and writes the release directory `dir` (the files
/// `enrollctl firmware get --release` writes); returns the record.
async fn release(
    operator: &mut OperatorClient<Channel>,
    dir: &Path,
    policy: &str,
    version: &str,
    counter: u32,
    payload: &[u8],
) -> v1::Firmware {
    let firmware = operator
        .sign_firmware(v1::SignFirmwareRequest {
            name: "app".into(),
            version: version.into(),
            security_counter: counter,
            policy_name: policy.into(),
            payload: payload.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .firmware
        .unwrap();
    let image = operator
        .get_firmware(v1::GetFirmwareRequest {
            name: "app".into(),
            version: firmware.version.clone(),
            include_image: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .image;
    std::fs::create_dir_all(dir).unwrap();
    for (name, content) in oxroot_client::release::Release::of(&firmware, image).files() {
        std::fs::write(dir.join(name), content).unwrap();
    }
    firmware
}

/// The stored credential's firmware measurement and its certificate's TcbInfo digest.
fn certified_firmware(agent: &Agent, scratch: &Path) -> (serde_json::Value, serde_json::Value) {
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(agent.state.join("credential.json")).unwrap())
            .unwrap();
    if stored["firmware_measurement"].is_null() {
        return (serde_json::Value::Null, serde_json::Value::Null);
    }
    let leaf = scratch.join("leaf.pem");
    std::fs::write(&leaf, stored["certificate_pem"].as_str().unwrap()).unwrap();
    (
        stored["firmware_measurement"].clone(),
        tcb_info(&leaf)["fwids"][0]["digest"].clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_update_installs_renews_for_the_new_firmware_and_rollback_is_refused() {
    let harness = Harness::start().await;
    let work = tempfile::tempdir().unwrap();
    let mut acme = harness.operator("acme").await;
    create_policy(&mut acme, "line").await;
    create_policy(&mut acme, "other-line").await;
    let batch = batch_of(&mut acme, "line").await;
    let dir = |name: &str| work.path().join(name);
    let v1_0 = release(&mut acme, &dir("app-1.0"), "line", "1.0.0", 1, &image(1)).await;
    let v1_1 = release(&mut acme, &dir("app-1.1"), "line", "1.1.0", 2, &image(2)).await;
    release(
        &mut acme,
        &dir("other"),
        "other-line",
        "9.0.0",
        9,
        &image(9),
    )
    .await;
    let mut globex = harness.operator("globex").await;
    create_policy(&mut globex, "line").await;
    release(&mut globex, &dir("globex"), "line", "5.0.0", 5, &image(5)).await;

    let device = Agent::new(
        &work.path().join("state"),
        &format!("emulated:{}", hex::encode([0x33; 32])),
    );
    device.join_batch(&harness, &mut acme, &batch).await;
    // Before onboarding the device trusts no signer.
    let early = device
        .run(&["update", "--release", dir("app-1.0").to_str().unwrap()])
        .await;
    assert!(early.fails(2).contains("no credential"), "{early:#?}");
    device.json(&["onboard"], Some(&harness)).await;
    let (measured, _) = certified_firmware(&device, work.path());
    assert!(
        measured.is_null(),
        "no firmware proved before the first update"
    );

    // 1.0 into slot a; the renewal proves it, and the certificate names it.
    let installed = device
        .json(
            &["update", "--release", dir("app-1.0").to_str().unwrap()],
            None,
        )
        .await;
    assert_eq!(installed["slot"], "a");
    assert_eq!(installed["measurement"], v1_0.measurement.as_str());
    device.json(&["renew"], Some(&harness)).await;
    let (measured, tcb) = certified_firmware(&device, work.path());
    assert_eq!(measured, v1_0.measurement.as_str());
    assert_eq!(tcb, v1_0.measurement.as_str());
    // The same release again changes nothing.
    let again = device
        .json(
            &["update", "--release", dir("app-1.0").to_str().unwrap()],
            None,
        )
        .await;
    assert_eq!(again["slot"], "a");

    // 1.1 into slot b, and renewed for.
    let installed = device
        .json(
            &["update", "--release", dir("app-1.1").to_str().unwrap()],
            None,
        )
        .await;
    assert_eq!(installed["slot"], "b");
    device.json(&["renew"], Some(&harness)).await;
    let (measured, tcb) = certified_firmware(&device, work.path());
    assert_eq!(measured, v1_1.measurement.as_str());
    assert_eq!(tcb, v1_1.measurement.as_str());

    // Refused: a rollback, a tampered image, another policy's release, another owner's.
    let refused = |run: common::Run| run.fails(3).to_owned();
    let rollback = refused(
        device
            .run(&["update", "--release", dir("app-1.0").to_str().unwrap()])
            .await,
    );
    assert!(rollback.contains("rollback"), "{rollback}");
    let tampered_dir = dir("tampered");
    std::fs::create_dir_all(&tampered_dir).unwrap();
    for name in ["manifest.bin", "manifest.sig", "signer.pem", "image.bin"] {
        std::fs::copy(dir("app-1.1").join(name), tampered_dir.join(name)).unwrap();
    }
    let mut bytes = std::fs::read(tampered_dir.join("image.bin")).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(tampered_dir.join("image.bin"), bytes).unwrap();
    let tampered = refused(
        device
            .run(&["update", "--release", tampered_dir.to_str().unwrap()])
            .await,
    );
    assert!(
        tampered.contains("not the one the manifest names"),
        "{tampered}"
    );
    let other_policy = refused(
        device
            .run(&["update", "--release", dir("other").to_str().unwrap()])
            .await,
    );
    assert!(other_policy.contains("\"other-line\""), "{other_policy}");
    let other_owner = refused(
        device
            .run(&["update", "--release", dir("globex").to_str().unwrap()])
            .await,
    );
    assert!(
        other_owner.contains("does not chain to this device's owner root"),
        "{other_owner}"
    );
    // `status` says what runs and what the certificate names.
    let status = device.json(&["status"], None).await;
    assert_eq!(status["firmware"], "app 1.1.0+0");
    assert_eq!(status["firmware_measurement"], v1_1.measurement.as_str());
    assert_eq!(status["firmware_security_counter"], 2);
    assert_eq!(status["credential_firmware"], v1_1.measurement.as_str());
    // Nothing refused was installed: 1.1 still runs, and renews as itself.
    let boot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(device.state.join("firmware/boot.json")).unwrap())
            .unwrap();
    assert_eq!(boot["active"], "b");
    assert_eq!(boot["security_counter"], 2);
    device.json(&["renew"], Some(&harness)).await;
    let (measured, _) = certified_firmware(&device, work.path());
    assert_eq!(measured, v1_1.measurement.as_str());
}

/// The rollout `id` as the operator sees it.
async fn rollout_of(operator: &mut OperatorClient<Channel>, id: &str) -> v1::Rollout {
    operator
        .get_rollout(v1::GetRolloutRequest {
            rollout_id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap()
}

async fn step(
    operator: &mut OperatorClient<Channel>,
    id: &str,
    step: v1::RolloutStep,
    failure_threshold: u64,
) -> Result<v1::Rollout, tonic::Status> {
    operator
        .update_rollout(v1::UpdateRolloutRequest {
            rollout_id: id.into(),
            step: step as i32,
            failure_threshold,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().rollout.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_rollout_reaches_its_cohort_and_halts_on_failures() {
    const DEVICES: u8 = 10;
    let harness = Harness::start().await;
    let work = tempfile::tempdir().unwrap();
    let mut acme = harness.operator("acme").await;
    create_policy(&mut acme, "line").await;
    let batch = batch_of(&mut acme, "line").await;
    let dir = |name: &str| work.path().join(name);
    let v1_1 = release(&mut acme, &dir("app-1.1"), "line", "1.1.0", 2, &image(2)).await;
    let v1_0 = release(&mut acme, &dir("app-1.0"), "line", "1.0.0", 1, &image(1)).await;
    let mut fleet = Vec::new();
    for n in 0..DEVICES {
        let device = Agent::new(
            &work.path().join(format!("device-{n}")),
            &format!("emulated:{}", hex::encode([0x40 + n; 32])),
        );
        let id = device.join_batch(&harness, &mut acme, &batch).await;
        device.json(&["onboard"], Some(&harness)).await;
        fleet.push((device, id.parse::<rot_core::keys::DeviceId>().unwrap()));
    }

    // Stage 1 of [50, 100]: exactly the devices whose cohort is below 50 are offered 1.1.
    let rollout = acme
        .create_rollout(v1::CreateRolloutRequest {
            firmware_name: "app".into(),
            firmware_version: "1.1.0".into(),
            stages: vec![50, 100],
            failure_threshold: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();
    assert_eq!(rollout.standing(), v1::RolloutStanding::Active);
    let in_first_stage = |id: &rot_core::keys::DeviceId| {
        enroll_service::firmware::rollout::cohort(&rollout.id, id) < 50
    };
    let mut installed = 0;
    for (device, id) in &fleet {
        let answer = device.json(&["update"], Some(&harness)).await;
        if in_first_stage(id) {
            assert_eq!(answer["rollout"], rollout.id.as_str(), "{answer}");
            assert_eq!(answer["measurement"], v1_1.measurement.as_str());
            assert!(answer["report"].as_str().unwrap().starts_with("owed"));
            installed += 1;
            // After the "reboot": the renewal proves 1.1, then the owed report goes out.
            device.json(&["renew"], Some(&harness)).await;
            let (measured, _) = certified_firmware(device, work.path());
            assert_eq!(measured, v1_1.measurement.as_str());
            let reported = device.json(&["update"], Some(&harness)).await;
            assert_eq!(reported["reported"], "installed", "{reported}");
            assert_eq!(
                reported["offer"], "none",
                "reported devices are not offered again"
            );
        } else {
            assert_eq!(answer["offer"], "none", "{answer}");
        }
    }
    assert!(
        installed > 0 && installed < DEVICES,
        "a stage of 50 % reached {installed} of {DEVICES}"
    );
    let seen = rollout_of(&mut acme, &rollout.id).await;
    assert_eq!((seen.installed, seen.failed), (u64::from(installed), 0));

    // Stage 2 (100 %): the others install too.
    let advanced = step(&mut acme, &rollout.id, v1::RolloutStep::Advance, 0)
        .await
        .unwrap();
    assert_eq!(advanced.current_stage, 1);
    let last = step(&mut acme, &rollout.id, v1::RolloutStep::Advance, 0)
        .await
        .unwrap_err();
    assert_eq!(last.code(), tonic::Code::FailedPrecondition);
    assert!(last.message().contains("last stage"), "{last:?}");
    for (device, id) in fleet.iter().filter(|(_, id)| !in_first_stage(id)) {
        let answer = device.json(&["update"], Some(&harness)).await;
        assert_eq!(
            answer["measurement"],
            v1_1.measurement.as_str(),
            "{id}: {answer}"
        );
        device.json(&["update"], Some(&harness)).await;
    }
    assert_eq!(
        rollout_of(&mut acme, &rollout.id).await.installed,
        u64::from(DEVICES)
    );

    // A rollout of 1.0 (security counter 1 < 2): every device refuses it as a rollback and
    // says so; at three failures the rollout halts and nobody else is offered it.
    let rollback = acme
        .create_rollout(v1::CreateRolloutRequest {
            firmware_name: "app".into(),
            firmware_version: v1_0.version.clone(),
            stages: vec![100],
            failure_threshold: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();
    for (device, _) in fleet.iter().take(3) {
        let refused = device.run_with_service(&["update"], &harness).await;
        assert!(refused.fails(3).contains("rollback"), "{refused:#?}");
    }
    let halted = rollout_of(&mut acme, &rollback.id).await;
    assert_eq!(halted.standing(), v1::RolloutStanding::Halted);
    assert_eq!((halted.installed, halted.failed), (0, 3));
    let (fourth, _) = &fleet[3];
    assert_eq!(
        fourth.json(&["update"], Some(&harness)).await["offer"],
        "none"
    );
    // Each device's slots are untouched: 1.1 still runs.
    let boot: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fleet[0].0.state.join("firmware/boot.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(boot["security_counter"], 2);

    // The audit log names each failure with the device's reason, and the halt once.
    let failures = acme
        .query_audit(v1::QueryAuditRequest {
            action: "firmware.report".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let failed: Vec<_> = failures.iter().filter(|e| e.outcome == "failed").collect();
    assert_eq!(failed.len(), 3);
    assert!(
        failed
            .iter()
            .all(|e| e.details["reason"].contains("rollback"))
    );
    let halts = acme
        .query_audit(v1::QueryAuditRequest {
            action: "firmware.rollout.halt".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(halts.len(), 1);
    assert_eq!(halts[0].subject, format!("rollout:acme/{}", rollback.id));

    // The device's record lists its reports, oldest first.
    let updates = acme
        .get_device(v1::GetDeviceRequest {
            device_id: fleet[0].1.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .device
        .unwrap()
        .firmware_updates;
    let seen: Vec<_> = updates
        .iter()
        .map(|u| (u.rollout_id.as_str(), u.installed))
        .collect();
    assert_eq!(
        seen,
        [(rollout.id.as_str(), true), (rollback.id.as_str(), false)]
    );
    assert_eq!(updates[0].running_measurement, v1_1.measurement);
    assert!(updates[1].reason.contains("rollback"), "{updates:?}");

    // Resuming needs a threshold above the failures; then abort, for good.
    let refused = step(&mut acme, &rollback.id, v1::RolloutStep::Resume, 0)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("halted"), "{refused:?}");
    let resumed = step(&mut acme, &rollback.id, v1::RolloutStep::Resume, 10)
        .await
        .unwrap();
    assert_eq!(resumed.standing(), v1::RolloutStanding::Active);
    let aborted = step(&mut acme, &rollback.id, v1::RolloutStep::Abort, 0)
        .await
        .unwrap();
    assert_eq!(aborted.standing(), v1::RolloutStanding::Aborted);
    let again = step(&mut acme, &rollback.id, v1::RolloutStep::Pause, 0)
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    // With the newer rollout aborted, 1.1's governs again, and every device reported it.
    assert_eq!(
        fourth.json(&["update"], Some(&harness)).await["offer"],
        "none"
    );

    // Another owner sees none of it.
    let mut globex = harness.operator("globex").await;
    let hidden = globex
        .get_rollout(v1::GetRolloutRequest {
            rollout_id: rollout.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), tonic::Code::NotFound);
}
