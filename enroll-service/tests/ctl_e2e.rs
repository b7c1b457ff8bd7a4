//! `enrollctl` against the real service over mutual TLS on loopback: the operator's path from
//! a platform admin profile to a revoked device on the CRL, driven in-process with captured
//! output.
#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    clippy::too_many_lines,
    reason = "scenario tests read top to bottom; a failed unwrap is a failed test"
)]

mod common;

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use common::{Harness, ctl, fleet, register};
use enroll_service::pki::Role;
use enrollctl::Exit;
use oxroot_proto::v1::device_enrollment_client::DeviceEnrollmentClient;
use serde_json::Value;

/// `enrollctl operator issue` by the profile `issuer`, writing a new profile to `out`; returns
/// what it printed as JSON.
async fn issue_profile(
    harness: &Harness,
    issuer: &Path,
    (name, role, owner): (&str, &str, &str),
    out: &Path,
) -> Value {
    let (exit, issued, log) = ctl(
        harness,
        issuer,
        &[
            "operator",
            "issue",
            "--name",
            name,
            "--role",
            role,
            "--owner",
            owner,
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(exit, Exit::Success, "{log}");
    issued
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_drives_a_batch_from_import_to_revocation() {
    let harness = Harness::start().await;
    let work = tempfile::tempdir().unwrap();
    let platform = work.path().join("platform");
    harness
        .write_profile(&platform, "root-admin", "*", Role::Admin)
        .await;

    // The platform admin issues an owner admin; its key is made and kept locally.
    let acme = work.path().join("acme");
    let issued = issue_profile(&harness, &platform, ("alice", "admin", "acme"), &acme).await;
    assert_eq!(issued["owner"], "acme", "{issued}");
    let (exit, me, log) = ctl(&harness, &acme, &["whoami"]).await;
    assert_eq!(exit, Exit::Success, "{log}");
    assert_eq!(me["name"], "alice");
    assert_eq!(me["owner"], "acme");

    let (exit, _, log) = ctl(
        &harness,
        &acme,
        &[
            "policy",
            "create",
            "--name",
            "broker",
            "--mosquitto-host",
            "127.0.0.1",
        ],
    )
    .await;
    assert_eq!(exit, Exit::Success, "{log}");
    let (exit, batch, log) = ctl(
        &harness,
        &acme,
        &["batch", "create", "--name", "line 1", "--policy", "broker"],
    )
    .await;
    assert_eq!(exit, Exit::Success, "{log}");
    let batch_id = batch["batch"]["batch_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no batch id in {batch}"))
        .to_owned();

    // A QuarkLink export with one bad entry: the good ones are imported, the bad one reported
    // with its position, and the command fails so a script cannot miss it.
    let devices = Arc::new(fleet(12, 30));
    let mut ids: Vec<Value> = devices
        .iter()
        .map(|d| Value::from(d.device_id().to_string()))
        .collect();
    ids.insert(3, Value::from("not-a-device-id"));
    let file = work.path().join("devices.json");
    std::fs::write(&file, serde_json::json!({ "devices": ids }).to_string()).unwrap();
    let (exit, report, log) = ctl(
        &harness,
        &acme,
        &["batch", "import", &batch_id, file.to_str().unwrap()],
    )
    .await;
    assert_eq!(exit, Exit::Refused, "{log}");
    assert!(
        log.contains("not-a-device-id") || log.contains("\"line\":\"4\""),
        "{log}"
    );
    assert_eq!(report["report"]["accepted"], "12", "{report}");

    // The devices register and onboard; watch follows the batch until it settles.
    let mut client = DeviceEnrollmentClient::new(harness.channel().await);
    for device in devices.iter() {
        register(&mut client, device).await;
    }
    for device in devices.iter() {
        let outcome = device.onboard(&mut client).await.unwrap();
        assert!(outcome.credentials().is_some());
    }
    let (exit, progress, log) = ctl(
        &harness,
        &acme,
        &["batch", "watch", &batch_id, "--until-settled"],
    )
    .await;
    assert_eq!(exit, Exit::Success, "{log}");
    assert!(log.contains("\"onboarded\":\"12\""), "{progress}");

    let (exit, listed, log) = ctl(&harness, &acme, &["device", "list", "--batch", &batch_id]).await;
    assert_eq!(exit, Exit::Success, "{log}");
    assert!(
        log.contains(&devices[0].device_id().to_string()),
        "{listed}"
    );

    let victim = devices[0].device_id().to_string();
    let (exit, _, log) = ctl(
        &harness,
        &acme,
        &[
            "device",
            "revoke",
            &victim,
            "--reason",
            "key-compromise",
            "--comment",
            "lost",
        ],
    )
    .await;
    assert_eq!(exit, Exit::Success, "{log}");
    let crl = work.path().join("crl.pem");
    let (exit, _, log) = ctl(&harness, &acme, &["crl", "--out", crl.to_str().unwrap()]).await;
    assert_eq!(exit, Exit::Success, "{log}");
    let text = std::process::Command::new("openssl")
        .args(["crl", "-noout", "-text", "-in"])
        .arg(&crl)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).to_uppercase();
    let record = harness
        .registry()
        .device(&victim.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        text.contains(&record.serials[0].to_string().to_uppercase()),
        "{text}"
    );
    assert!(text.contains("KEY COMPROMISE"), "{text}");

    let out = work.path().join("artefacts");
    let (exit, _, log) = ctl(
        &harness,
        &acme,
        &["export", "broker", "--out", out.to_str().unwrap()],
    )
    .await;
    assert_eq!(exit, Exit::Success, "{log}");
    for name in ["mosquitto.conf", "acl", "ca.pem", "crl.pem"] {
        assert!(out.join(name).exists(), "{name} missing: {log}");
    }

    // Auditors verify the chain; operators of the owner may not read the audit log.
    let auditor = work.path().join("auditor");
    harness
        .write_profile(&auditor, "audrey", "acme", Role::Auditor)
        .await;
    let (exit, verified, log) = ctl(&harness, &auditor, &["audit", "verify"]).await;
    assert_eq!(exit, Exit::Success, "{log}");
    assert_eq!(verified["ok"], true, "{verified}");
    let (exit, _, log) = ctl(
        &harness,
        &auditor,
        &["device", "revoke", &devices[1].device_id().to_string()],
    )
    .await;
    assert_eq!(exit, Exit::Refused, "{log}");
    assert!(
        log.contains("PERMISSION_DENIED") || log.contains("permission"),
        "{log}"
    );

    // A CSV of 2,500 ids: more than one ImportChunk may carry (1,000), so this only works if
    // the CLI splits it; devices listed before they register wait in the batch.
    let (exit, second, log) = ctl(
        &harness,
        &acme,
        &["batch", "create", "--name", "line 2", "--policy", "broker"],
    )
    .await;
    assert_eq!(exit, Exit::Success, "{log}");
    let second_id = second["batch"]["batch_id"].as_str().unwrap().to_owned();
    let mut csv = String::from("device_id,line\n");
    for i in 0..2500u32 {
        let id = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &i.to_be_bytes());
        writeln!(csv, "{},{i}", hex::encode(id.as_ref())).unwrap();
    }
    let file = work.path().join("devices.csv");
    std::fs::write(&file, csv).unwrap();
    let (exit, report, log) = ctl(
        &harness,
        &acme,
        &["batch", "import", &second_id, file.to_str().unwrap()],
    )
    .await;
    assert_eq!(exit, Exit::Success, "{log}");
    assert_eq!(report["report"]["accepted"], "2500", "{report}");
    let batch = harness.registry().batch(&second_id).await.unwrap().unwrap();
    assert_eq!(batch.counts.awaiting_registration, 2500);
}

/// An operator whose key is lost: an admin lists the operators, revokes that one's certificate,
/// and from the next call on the service refuses it, on a fresh connection and on one opened
/// before the revocation. OpenSSL, checking the certificate against the service's CRL, agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_operator_is_refused_from_its_next_call() {
    let harness = Harness::start().await;
    let work = tempfile::tempdir().unwrap();
    let platform = work.path().join("platform");
    harness
        .write_profile(&platform, "root-admin", "*", Role::Admin)
        .await;
    let mallory = work.path().join("mallory");
    let issued = issue_profile(
        &harness,
        &platform,
        ("mallory", "operator", "acme"),
        &mallory,
    )
    .await;
    let serial = issued["serial"].as_str().unwrap().to_owned();

    // A connection opened while the certificate was good.
    let chain = std::fs::read_to_string(mallory.join("operator.pem")).unwrap();
    let key = std::fs::read(mallory.join("operator.key")).unwrap();
    let mut open_client = harness.client_with_identity(&chain, &key).await;
    let me = open_client
        .who_am_i(oxroot_proto::v1::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.certificate_serial, serial);

    let (exit, listed, log) = ctl(
        &harness,
        &platform,
        &["operator", "list", "--owner", "acme"],
    )
    .await;
    assert_eq!(exit, Exit::Success, "{log}");
    let entry = listed["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["serial"] == serial.as_str())
        .unwrap_or_else(|| panic!("mallory is not listed: {listed}"))
        .clone();
    assert_eq!(entry["name"], "mallory");
    assert_eq!(entry["issued_by"], "*/root-admin");
    assert!(entry.get("revocation").is_none(), "{entry}");

    // The operator cannot revoke anyone (not an admin), and nobody revokes themselves.
    let (exit, _, log) = ctl(&harness, &mallory, &["operator", "revoke", &serial]).await;
    assert_eq!(exit, Exit::Refused, "{log}");
    let (exit, me, _) = ctl(&harness, &platform, &["whoami"]).await;
    assert_eq!(exit, Exit::Success);
    let own = me["certificate_serial"].as_str().unwrap().to_owned();
    let (exit, _, log) = ctl(&harness, &platform, &["operator", "revoke", &own]).await;
    assert_eq!(exit, Exit::Refused, "{log}");
    assert!(log.contains("another admin"), "{log}");

    let (exit, revoked, log) = ctl(
        &harness,
        &platform,
        &[
            "operator",
            "revoke",
            &serial,
            "--reason",
            "key-compromise",
            "--comment",
            "laptop stolen",
        ],
    )
    .await;
    assert_eq!(exit, Exit::Success, "{log}");
    assert_eq!(
        revoked["certificate"]["revocation"]["reason"], "REVOCATION_REASON_KEY_COMPROMISE",
        "{revoked}"
    );

    let (exit, _, log) = ctl(&harness, &mallory, &["whoami"]).await;
    assert_eq!(exit, Exit::Refused, "{log}");
    assert!(
        log.contains("UNAUTHENTICATED") && log.contains("revoked"),
        "{log}"
    );
    let status = open_client
        .who_am_i(oxroot_proto::v1::WhoAmIRequest {})
        .await
        .expect_err("the open connection's next call is refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");

    // The audit log names who revoked whom.
    let (exit, audit, log) = ctl(
        &harness,
        &platform,
        &["audit", "query", "--action", "operator.revoke"],
    )
    .await;
    assert_eq!(exit, Exit::Success, "{log}");
    assert!(log.contains("operator:acme/mallory"), "{audit} {log}");

    // OpenSSL, given the service's CRL, refuses the certificate.
    let crl = work.path().join("crl.pem");
    let (exit, _, log) = ctl(
        &harness,
        &platform,
        &["crl", "--out", crl.to_str().unwrap()],
    )
    .await;
    assert_eq!(exit, Exit::Success, "{log}");
    let verify = std::process::Command::new("openssl")
        .args(["verify", "-crl_check", "-CAfile"])
        .arg(mallory.join("root.pem"))
        .arg("-untrusted")
        .arg(mallory.join("operator.pem"))
        .arg("-CRLfile")
        .arg(&crl)
        .arg(mallory.join("operator.pem"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stdout).to_string()
        + &String::from_utf8_lossy(&verify.stderr);
    assert!(!verify.status.success(), "{said}");
    assert!(said.contains("certificate revoked"), "{said}");
}
