//! Firmware releases through the Operator API, checked by independent tools: MCUboot's own
//! `imgtool verify` accepts every image oxroot signs and rejects a tampered one or another
//! key's; OpenSSL and webpki see the signing key's certificate chain to the owner's root for
//! code signing and refuse it for TLS; the manifest reads back with rot-core and its signature
//! verifies under the certificate's key with aws-lc-rs. Who may sign, and what is refused, as
//! the contract says; every signature is audited.
#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    clippy::too_many_lines,
    reason = "scenario tests read top to bottom; a failed unwrap is a failed test"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Harness, ctl};
use enroll_service::pki::Role;
use oxroot_proto::v1;
use oxroot_proto::v1::operator_client::OperatorClient;
use rot_core::FirmwareMeasurement;
use rot_core::firmware::manifest::{ImageVersion, Manifest};
use rustls_pki_types::{CertificateDer, UnixTime};
use tonic::Code;
use tonic::transport::Channel;
use webpki::{EndEntityCert, KeyUsage};

/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), the OID's DER value.
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// `tests/tools/imgtool ARGS`: (success, stdout + stderr).
fn imgtool(args: &[&Path]) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/tools/imgtool");
    let output = Command::new(script)
        .arg("verify")
        .arg("-k")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// `openssl ARGS` in `dir`: (success, stdout + stderr).
fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Certificates of a PEM bundle, DER.
fn ders(pem_text: &str) -> Vec<CertificateDer<'static>> {
    pem::parse_many(pem_text)
        .unwrap()
        .into_iter()
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect()
}

/// webpki's verdict on the signing certificate for `usage`, up to the last certificate of the
/// chain (the owner's root) as the only trust anchor.
fn webpki_verdict(firmware: &v1::Firmware, usage: KeyUsage) -> Result<(), webpki::Error> {
    let leaf = ders(&firmware.signer_certificate_pem).remove(0);
    let mut chain = ders(&firmware.signer_chain_pem);
    let root = chain.pop().unwrap();
    let anchors = [webpki::anchor_from_trusted_cert(&root).unwrap()];
    EndEntityCert::try_from(&leaf)
        .unwrap()
        .verify_for_usage(
            &[webpki::aws_lc_rs::ECDSA_P256_SHA256],
            &anchors,
            &chain,
            UnixTime::now(),
            usage,
            None,
            None,
        )
        .map(|_| ())
}

async fn sign(
    client: &mut OperatorClient<Channel>,
    name: &str,
    version: &str,
    counter: u32,
    payload: &[u8],
) -> Result<v1::Firmware, tonic::Status> {
    client
        .sign_firmware(v1::SignFirmwareRequest {
            name: name.into(),
            version: version.into(),
            security_counter: counter,
            policy_name: "line".into(),
            payload: payload.to_vec(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().firmware.unwrap())
}

async fn image_of(client: &mut OperatorClient<Channel>, firmware: &v1::Firmware) -> Vec<u8> {
    client
        .get_firmware(v1::GetFirmwareRequest {
            name: firmware.name.clone(),
            version: firmware.version.clone(),
            include_image: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .image
}

/// The Mosquitto policy "line" of the caller's owner, which the images here are signed for.
async fn create_line_policy(admin: &mut OperatorClient<Channel>) {
    admin
        .create_policy(v1::CreatePolicyRequest {
            policy: Some(v1::Policy {
                name: "line".into(),
                params: Some(v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
                    host: "127.0.0.1".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_images_pass_imgtool_and_the_signing_key_is_for_code_only() {
    let harness = Harness::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut admin = harness.operator("alice", "acme", Role::Admin).await;
    create_line_policy(&mut admin).await;

    let payload: Vec<u8> = (0..70_000u32).map(|i| (i * 7 + i / 255) as u8).collect();
    let firmware = sign(&mut admin, "app", "1.2.3", 5, &payload).await.unwrap();
    assert_eq!(firmware.version, "1.2.3+0");
    assert_eq!(firmware.owner, "acme");
    assert_eq!(firmware.payload_size, payload.len() as u64);
    let image = image_of(&mut admin, &firmware).await;
    assert_eq!(image.len() as u64, firmware.image_size);
    // The measurement is the SHA-256 of the file: what a device running it proves.
    assert_eq!(
        FirmwareMeasurement::of_image(&image).to_string(),
        firmware.measurement
    );

    // MCUboot's imgtool: the image verifies under the signing key, and not when changed.
    let image_path = write(dir.path(), "app.signed.bin", &image);
    let signer_pem = write(
        dir.path(),
        "signer.pem",
        firmware.signer_certificate_pem.as_bytes(),
    );
    let (ok, public_key) = openssl(
        dir.path(),
        &["x509", "-in", "signer.pem", "-noout", "-pubkey"],
    );
    assert!(ok, "{public_key}");
    let public_key_path = write(dir.path(), "signer-public.pem", public_key.as_bytes());
    let (ok, out) = imgtool(&[&public_key_path, &image_path]);
    assert!(ok, "imgtool refused oxroot's image: {out}");
    assert!(out.contains("Image was correctly validated"), "{out}");
    assert!(out.contains("Image version: 1.2.3+0"), "{out}");
    let mut tampered = image.clone();
    tampered[100] ^= 0x01;
    let tampered_path = write(dir.path(), "tampered.bin", &tampered);
    let (ok, out) = imgtool(&[&public_key_path, &tampered_path]);
    assert!(!ok, "imgtool accepted a tampered image: {out}");
    // Another key: the signature is not its.
    let (ok, _) = openssl(
        dir.path(),
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "other.key",
        ],
    );
    assert!(ok);
    let (ok, other_public) = openssl(dir.path(), &["ec", "-in", "other.key", "-pubout"]);
    assert!(ok);
    let other_path = write(dir.path(), "other-public.pem", other_public.as_bytes());
    let (ok, out) = imgtool(&[&other_path, &image_path]);
    assert!(!ok, "imgtool accepted the image under another key: {out}");

    // The signing certificate: the owner's chain, code signing only.
    let chain_path = write(
        dir.path(),
        "chain.pem",
        firmware.signer_chain_pem.as_bytes(),
    );
    let chain = ders(&firmware.signer_chain_pem);
    let root = pem::encode(&pem::Pem::new(
        "CERTIFICATE",
        chain.last().unwrap().to_vec(),
    ));
    write(dir.path(), "root.pem", root.as_bytes());
    let verify = |purpose: &str| {
        openssl(
            dir.path(),
            &[
                "verify",
                "-CAfile",
                "root.pem",
                "-untrusted",
                chain_path.to_str().unwrap(),
                "-purpose",
                purpose,
                signer_pem.to_str().unwrap(),
            ],
        )
    };
    let (ok, out) = verify("any");
    assert!(
        ok,
        "the signing certificate does not chain to the owner's root: {out}"
    );
    for tls in ["sslclient", "sslserver"] {
        let (ok, out) = verify(tls);
        assert!(
            !ok,
            "OpenSSL accepts the signing certificate for {tls}: {out}"
        );
    }
    let (ok, text) = openssl(
        dir.path(),
        &["x509", "-in", "signer.pem", "-noout", "-text"],
    );
    assert!(ok);
    assert!(text.contains("Code Signing"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    // webpki checks the purpose along the whole path; the CAs above carry no EKU, so it is
    // asked "if present" (as it asks for TLS), and the leaf's EKU is checked above.
    webpki_verdict(&firmware, KeyUsage::required_if_present(CODE_SIGNING)).unwrap();
    assert!(webpki_verdict(&firmware, KeyUsage::client_auth()).is_err());
    assert!(webpki_verdict(&firmware, KeyUsage::server_auth()).is_err());
    // The owner's root is the one its devices trust.
    let owner_root = ders(
        &harness
            .core
            .authorities()
            .issuing("acme")
            .await
            .unwrap()
            .ca
            .root_pem(),
    );
    assert_eq!(chain.last(), owner_root.first());

    // The manifest says what was signed, and the signing key signed it.
    let manifest = Manifest::parse(&firmware.manifest).unwrap();
    assert_eq!(manifest.owner, "acme");
    assert_eq!(manifest.policy, "line");
    assert_eq!(manifest.image_name, "app");
    assert_eq!(manifest.version, "1.2.3".parse::<ImageVersion>().unwrap());
    assert_eq!(manifest.security_counter, 5);
    assert_eq!(hex::encode(manifest.image_digest), firmware.measurement);
    assert_eq!(u64::from(manifest.image_size), firmware.image_size);
    let signer_der = ders(&firmware.signer_certificate_pem).remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(&signer_der).unwrap();
    let key = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        cert.public_key().subject_public_key.data.to_vec(),
    );
    key.verify(&firmware.manifest, &firmware.manifest_signature)
        .unwrap();
    let mut forged = firmware.manifest.clone();
    *forged.last_mut().unwrap() ^= 1;
    assert!(key.verify(&forged, &firmware.manifest_signature).is_err());

    // The same key signs the owner's next image; a version is signed once.
    let next = sign(&mut admin, "app", "1.3.0+7", 6, b"next")
        .await
        .unwrap();
    assert_eq!(next.signer_certificate_pem, firmware.signer_certificate_pem);
    let again = sign(&mut admin, "app", "1.2.3+0", 9, b"other")
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");

    // Refusals.
    for (version, payload, code) in [
        ("1.2", &b"x"[..], Code::InvalidArgument),
        ("1.2.3", &b""[..], Code::InvalidArgument),
    ] {
        let refused = sign(&mut admin, "app", version, 0, payload)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), code, "{version}: {refused:?}");
    }
    let big = vec![0u8; 3 * 1024 * 1024 + 1];
    let refused = sign(&mut admin, "big", "1.0.0", 0, &big).await.unwrap_err();
    assert!(
        matches!(
            refused.code(),
            Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted
        ),
        "{refused:?}"
    );
    let refused = admin
        .sign_firmware(v1::SignFirmwareRequest {
            name: "app".into(),
            version: "2.0.0".into(),
            policy_name: "nope".into(),
            payload: b"x".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    // Signing is an admin's act; any role reads.
    let mut operator = harness.operator("bob", "acme", Role::Operator).await;
    let denied = sign(&mut operator, "app", "9.9.9", 0, b"x")
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let listed = operator
        .list_firmware(v1::ListFirmwareRequest::default())
        .await
        .unwrap()
        .into_inner()
        .firmware;
    let versions: Vec<_> = listed.iter().map(|f| f.version.as_str()).collect();
    assert_eq!(versions, ["1.2.3+0", "1.3.0+7"]);
    // Another owner sees none of it.
    let mut other = harness.operator("carol", "globex", Role::Admin).await;
    let theirs = other
        .list_firmware(v1::ListFirmwareRequest::default())
        .await
        .unwrap()
        .into_inner()
        .firmware;
    assert!(theirs.is_empty());
    let hidden = other
        .get_firmware(v1::GetFirmwareRequest {
            name: "app".into(),
            version: "1.2.3".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);

    // Audited: the key's creation and each signature, with the measurement.
    let entries = admin
        .query_audit(v1::QueryAuditRequest {
            action: "firmware.sign".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].subject, "firmware:acme/app/1.2.3+0");
    assert_eq!(entries[0].details["measurement"], firmware.measurement);
    let created = admin
        .query_audit(v1::QueryAuditRequest {
            action: "firmware.signer.create".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(created.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollctl_signs_and_writes_a_release_a_device_can_read() {
    let harness = Harness::start().await;
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile");
    harness
        .write_profile(&profile, "alice", "acme", Role::Admin)
        .await;
    let mut admin = harness.operator("bob", "acme", Role::Admin).await;
    create_line_policy(&mut admin).await;
    let payload = write(dir.path(), "app.bin", &[0x5a; 2048]);
    let signed = dir.path().join("app.signed.bin");
    let (exit, printed, out) = ctl(
        &harness,
        &profile,
        &[
            "firmware",
            "sign",
            "--payload",
            payload.to_str().unwrap(),
            "--name",
            "app",
            "--version",
            "2.0.1+7",
            "--security-counter",
            "4",
            "--policy",
            "line",
            "--out",
            signed.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(exit, enrollctl::Exit::Success, "{out}");
    assert_eq!(printed["version"], "2.0.1+7");
    assert_eq!(printed["security_counter"], 4);
    let image = std::fs::read(&signed).unwrap();
    assert_eq!(
        FirmwareMeasurement::of_image(&image).to_string(),
        printed["measurement"].as_str().unwrap()
    );

    // The release directory holds what the device reads, and it reads back as written.
    let release = dir.path().join("release");
    let (exit, _, out) = ctl(
        &harness,
        &profile,
        &[
            "firmware",
            "get",
            "app",
            "2.0.1+7",
            "--release",
            release.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(exit, enrollctl::Exit::Success, "{out}");
    let read = oxroot_client::release::Release::read(&release).unwrap();
    assert_eq!(read.image, image);
    let manifest = Manifest::parse(&read.manifest).unwrap();
    assert_eq!(manifest.security_counter, 4);
    assert!(read.signer_pem.matches("BEGIN CERTIFICATE").count() >= 3);
    // An existing release is not overwritten without --force.
    let (exit, _, out) = ctl(
        &harness,
        &profile,
        &[
            "firmware",
            "get",
            "app",
            "2.0.1",
            "--release",
            release.to_str().unwrap(),
        ],
    )
    .await;
    assert_ne!(exit, enrollctl::Exit::Success, "{out}");
    // The listing names it.
    let (exit, _, out) = ctl(&harness, &profile, &["firmware", "list"]).await;
    assert_eq!(exit, enrollctl::Exit::Success, "{out}");
    assert!(
        out.contains(printed["measurement"].as_str().unwrap()),
        "{out}"
    );

    // A rollout of it, stepped through the command line; a refused step says why.
    let (exit, created, out) = ctl(
        &harness,
        &profile,
        &[
            "rollout",
            "create",
            "app",
            "2.0.1+7",
            "--stages",
            "20,100",
            "--failure-threshold",
            "3",
        ],
    )
    .await;
    assert_eq!(exit, enrollctl::Exit::Success, "{out}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["stages"], serde_json::json!([20, 100]));
    assert_eq!(created["standing"], "ROLLOUT_STANDING_ACTIVE");
    assert_eq!(created["measurement"], printed["measurement"]);
    let (exit, _, out) = ctl(&harness, &profile, &["rollout", "advance", &id]).await;
    assert_eq!(exit, enrollctl::Exit::Success, "{out}");
    let (exit, _, out) = ctl(&harness, &profile, &["rollout", "advance", &id]).await;
    assert_ne!(exit, enrollctl::Exit::Success, "{out}");
    assert!(out.contains("last stage"), "{out}");
    let (exit, paused, out) = ctl(&harness, &profile, &["rollout", "pause", &id]).await;
    assert_eq!(exit, enrollctl::Exit::Success, "{out}");
    assert_eq!(paused["standing"], "ROLLOUT_STANDING_PAUSED");
    assert_eq!(paused["current_stage"], 1);
    let (exit, _, out) = ctl(&harness, &profile, &["rollout", "list"]).await;
    assert_eq!(exit, enrollctl::Exit::Success, "{out}");
    assert!(out.contains(&id), "{out}");
    // The audit log has each step.
    let (exit, _, out) = ctl(
        &harness,
        &profile,
        &["audit", "query", "--action", "firmware.rollout.update"],
    )
    .await;
    assert_eq!(exit, enrollctl::Exit::Success, "{out}");
    assert_eq!(out.matches("\"step\"").count(), 2, "{out}");
}
