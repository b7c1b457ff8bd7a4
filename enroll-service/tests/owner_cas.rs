//! Per-owner CAs against the real service over gRPC and TLS (issue 13), with the sealed
//! (software) key backend, every certificate and CRL checked by the `openssl` CLI:
//!
//! - two managed owners' devices each verify under their own owner's exported trust and
//!   never under the other's (or the platform's); each owner's CRL is signed by its own
//!   issuing CA and lists only its own revocations;
//! - a rotation moves renewals to the new issuing CA, the export then trusts both, and the
//!   retired CA keeps signing its CRL;
//! - an owner brings its own root (made with `openssl`): the CSR, the import, the checks that
//!   refuse a certificate for another key, a non-CA, a chain that does not link and a path
//!   length exceeded;
//! - a transfer re-issues under the new owner's CA and revokes on the old owner's CRL;
//! - owner-scoped operators see and change only their own owner.
#![allow(clippy::expect_used, reason = "a failed expect is a failed test")]
#![allow(clippy::too_many_lines, reason = "scenario tests read top to bottom")]

mod common;
mod owner_support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::{Harness, bundle, fleet};
use enroll_service::fleet::EmulatedDevice;
use enroll_service::pki::Role;
use owner_support::{
    OpensslRoot, assert_issued_by, assert_no_chain, assert_verifies, crl_serials, crl_signed_by,
    der, ders, openssl, openssl_serial,
};
use oxroot_proto::v1;
use oxroot_proto::v1::operator_client::OperatorClient;
use tonic::transport::Channel;

type Client = OperatorClient<Channel>;

const POLICY: &str = "broker";

/// CreateOwner by a platform admin.
async fn create_owner(platform: &mut Client, name: &str, mode: v1::CaMode) -> v1::Owner {
    platform
        .create_owner(v1::CreateOwnerRequest {
            name: name.into(),
            ca_mode: mode as i32,
            organisation: String::new(),
        })
        .await
        .expect("CreateOwner")
        .into_inner()
        .owner
        .expect("an owner")
}

/// GetOwner.
async fn get_owner(client: &mut Client, name: &str) -> v1::Owner {
    client
        .get_owner(v1::GetOwnerRequest { name: name.into() })
        .await
        .expect("GetOwner")
        .into_inner()
        .owner
        .expect("an owner")
}

/// The owner's issuing CA of that id.
fn issuing_ca<'a>(owner: &'a v1::Owner, id: &str) -> &'a v1::IssuingCa {
    owner
        .issuing_cas
        .iter()
        .find(|ca| ca.id == id)
        .unwrap_or_else(|| panic!("{} has no issuing CA {id}: {owner:#?}", owner.name))
}

/// (id, state) of each issuing CA, newest first.
fn ca_states(owner: &v1::Owner) -> Vec<(String, v1::IssuingCaState)> {
    owner
        .issuing_cas
        .iter()
        .map(|ca| (ca.id.clone(), ca.state()))
        .collect()
}

/// A Mosquitto policy `POLICY` and a batch of `devices` for the caller's owner; registers and
/// onboards every device and returns their credentials.
async fn onboard_batch(
    harness: &Harness,
    admin: &mut Client,
    devices: &[EmulatedDevice],
) -> Vec<v1::CredentialBundle> {
    admin
        .create_policy(v1::CreatePolicyRequest {
            policy: Some(v1::Policy {
                name: POLICY.into(),
                params: Some(v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
                    host: "127.0.0.1".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
        })
        .await
        .expect("CreatePolicy");
    admin
        .create_batch(v1::CreateBatchRequest {
            name: "line 1".into(),
            policy_name: POLICY.into(),
            device_ids: devices.iter().map(|d| d.device_id().to_string()).collect(),
            ..Default::default()
        })
        .await
        .expect("CreateBatch");
    let mut client = harness.device_client().await;
    let mut bundles = Vec::new();
    for device in devices {
        common::register(&mut client, device).await;
        let outcome = device.onboard(&mut client).await.expect("Onboard");
        bundles.push(bundle(&outcome).clone());
    }
    bundles
}

/// ExportArtifacts of the owner's Mosquitto policy, by file name.
async fn export(client: &mut Client, owner: &str) -> BTreeMap<String, String> {
    client
        .export_artifacts(v1::ExportArtifactsRequest {
            owner: owner.into(),
            policy_name: POLICY.into(),
            ..Default::default()
        })
        .await
        .expect("ExportArtifacts")
        .into_inner()
        .artifacts
        .into_iter()
        .map(|a| {
            (
                a.file_name,
                String::from_utf8(a.content).expect("a text artefact"),
            )
        })
        .collect()
}

/// GetCrl in PEM for `owner` ("" = the caller's) and `issuer_id` ("" = all live).
async fn crl(client: &mut Client, owner: &str, issuer_id: &str) -> v1::GetCrlResponse {
    client
        .get_crl(v1::GetCrlRequest {
            format: v1::CrlFormat::Pem as i32,
            owner: owner.into(),
            issuer_id: issuer_id.into(),
        })
        .await
        .expect("GetCrl")
        .into_inner()
}

fn write(dir: &Path, name: &str, content: impl AsRef<[u8]>) {
    fs::write(dir.join(name), content).expect("write");
}

/// What one owner has after onboarding: its record, an admin, its devices' credentials and
/// its export.
struct Tenant {
    name: &'static str,
    owner: v1::Owner,
    admin: Client,
    bundles: Vec<v1::CredentialBundle>,
    export: BTreeMap<String, String>,
}

/// Two owners, acme and globex, each with its own managed root and issuing CA. Each onboards
/// three devices; every leaf verifies under its own owner's trust, as exported (`ca.pem`) and
/// as GetOwner gives it (root, then the issuing CA as an untrusted intermediate), and under
/// neither the other owner's nor the platform's. Each owner's CRL is signed by its own issuing
/// CA, and an acme revocation is on acme's CRL only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_owners_devices_and_crl_verify_under_its_own_trust_only() {
    let harness = Harness::start().await;
    let mut platform = harness.operator("root-admin", "*", Role::Admin).await;
    let work = tempfile::tempdir().expect("tempdir");
    let d = work.path();

    let mut tenants = Vec::new();
    for (name, seed) in [("acme", 60), ("globex", 61)] {
        let created = create_owner(&mut platform, name, v1::CaMode::Managed).await;
        assert_eq!(created.ca_mode(), v1::CaMode::Managed);
        assert_eq!(created.created_by, "*/root-admin");
        let id = format!("{name}/1");
        assert_eq!(
            ca_states(&created),
            vec![(id.clone(), v1::IssuingCaState::Active)]
        );
        let issuing = issuing_ca(&created, &id);
        assert_eq!(issuing.key_location, "sealed");
        assert_eq!(issuing.chain_pems, vec![created.root_pem.clone()]);
        assert!(issuing.csr_pem.is_empty());
        assert_issued_by(&issuing.certificate_pem, &created.root_pem);

        let mut admin = harness.operator("admin", name, Role::Admin).await;
        let bundles = onboard_batch(&harness, &mut admin, &fleet(3, seed)).await;
        let export = export(&mut admin, "").await;
        write(d, &format!("{name}-ca.pem"), &export["ca.pem"]);
        write(d, &format!("{name}-root.pem"), &created.root_pem);
        write(d, &format!("{name}-issuing.pem"), &issuing.certificate_pem);
        for (index, issued) in bundles.iter().enumerate() {
            // The credential names the owner's chain, and the owner's issuing CA signed it.
            assert_eq!(der(&issued.root_pem), der(&created.root_pem));
            assert_eq!(
                issued.intermediate_pems,
                vec![issuing.certificate_pem.clone()]
            );
            assert_issued_by(&issued.certificate_pem, &issuing.certificate_pem);
            write(d, &format!("{name}-{index}.pem"), &issued.certificate_pem);
        }
        // ca.pem is the issuing CA, then the root: exactly this owner's trust.
        assert_eq!(
            ders(&export["ca.pem"]),
            vec![der(&issuing.certificate_pem), der(&created.root_pem)]
        );
        assert!(
            !export
                .keys()
                .any(|f| f.starts_with("ca-certificate-previous")),
            "{:?}",
            export.keys()
        );
        tenants.push(Tenant {
            name,
            owner: created,
            admin,
            bundles,
            export,
        });
    }
    assert_ne!(
        der(&tenants[0].owner.root_pem),
        der(&tenants[1].owner.root_pem)
    );
    // The platform's chain (operators, the service's TLS) is in neither owner's trust.
    write(
        d,
        "platform-ca.pem",
        format!(
            "{}{}",
            harness.core.ca().certificate_pem(),
            harness.server.root_pem
        ),
    );

    for own in &tenants {
        for other in tenants.iter().filter(|t| t.name != own.name) {
            for index in 0..own.bundles.len() {
                let leaf = format!("{}-{index}.pem", own.name);
                let (mine, theirs) = (own.name, other.name);
                assert_verifies(d, &format!("{mine}-ca.pem"), None, &leaf);
                assert_verifies(
                    d,
                    &format!("{mine}-root.pem"),
                    Some(&format!("{mine}-issuing.pem")),
                    &leaf,
                );
                assert_no_chain(d, &format!("{theirs}-ca.pem"), None, &leaf);
                assert_no_chain(
                    d,
                    &format!("{theirs}-root.pem"),
                    Some(&format!("{theirs}-issuing.pem")),
                    &leaf,
                );
                // Offering the right intermediate does not help without the right root.
                assert_no_chain(
                    d,
                    &format!("{theirs}-root.pem"),
                    Some(&format!("{mine}-issuing.pem")),
                    &leaf,
                );
                assert_no_chain(d, "platform-ca.pem", None, &leaf);
            }
        }
    }

    // Revoke one acme device: acme's CRL lists it, globex's does not.
    let revoked = tenants[0].bundles[0].clone();
    let response = tenants[0]
        .admin
        .revoke_device(v1::RevokeDeviceRequest {
            device_id: revoked.device_id.clone(),
            reason: v1::RevocationReason::KeyCompromise as i32,
            comment: "lost".into(),
        })
        .await
        .expect("RevokeDevice")
        .into_inner();
    assert_eq!(response.revoked_serials, vec![revoked.serial.clone()]);
    // globex's admin cannot even see it.
    let acme_device = tenants[0].bundles[1].device_id.clone();
    let status = tenants[1]
        .admin
        .revoke_device(v1::RevokeDeviceRequest {
            device_id: acme_device,
            ..Default::default()
        })
        .await
        .expect_err("another owner's device");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");

    for tenant in &mut tenants {
        let name = tenant.name;
        let got = crl(&mut tenant.admin, "", "").await;
        assert_eq!(got.issuer_ids, vec![format!("{name}/1")]);
        write(d, &format!("{name}-crl.pem"), &got.crl);
        // A platform admin naming the owner gets the same CRL.
        let same = crl(&mut platform, name, "").await;
        assert_eq!(same.crl, got.crl);
        assert_eq!(same.crl_number, got.crl_number);
    }
    for (own, other) in [("acme", "globex"), ("globex", "acme")] {
        let crl_file = format!("{own}-crl.pem");
        let (ok, out) = crl_signed_by(d, &crl_file, &format!("{own}-ca.pem"), false);
        assert!(ok, "{own}'s CRL is signed by {own}'s issuing CA: {out}");
        let (ok, out) = crl_signed_by(d, &crl_file, &format!("{other}-ca.pem"), false);
        assert!(
            !ok,
            "{own}'s CRL must not verify under {other}'s CAs: {out}"
        );
    }
    let revoked_serial = openssl_serial(&revoked.serial);
    assert_eq!(
        crl_serials(d, "acme-crl.pem", false),
        vec![revoked_serial.clone()]
    );
    assert!(crl_serials(d, "globex-crl.pem", false).is_empty());
    // The revoked acme leaf fails a CRL check with acme's CRL, the others pass.
    for (index, expect_ok) in [(0, false), (1, true), (2, true)] {
        let (ok, out) = openssl(
            d,
            &[
                "verify",
                "-x509_strict",
                "-crl_check",
                "-CAfile",
                "acme-ca.pem",
                "-CRLfile",
                "acme-crl.pem",
                &format!("acme-{index}.pem"),
            ],
        );
        assert_eq!(ok, expect_ok, "acme device {index}: {out}");
        if !expect_ok {
            assert!(out.contains("certificate revoked"), "{out}");
        }
    }
    // The platform's own CRL (operator certificates) does not carry device serials.
    let platform_crl = crl(&mut platform, "*", "").await;
    assert_eq!(platform_crl.issuer_ids, vec!["platform".to_owned()]);
    write(d, "platform-crl.pem", &platform_crl.crl);
    assert!(!crl_serials(d, "platform-crl.pem", false).contains(&revoked_serial));
    // An export made after the revocation ships acme's CRL with it.
    let export = export(&mut tenants[0].admin, "").await;
    write(d, "acme-export-crl.pem", &export["crl.pem"]);
    assert_eq!(
        crl_serials(d, "acme-export-crl.pem", false),
        vec![revoked_serial]
    );
    assert_eq!(
        tenants[1].export["crl.pem"]
            .matches("BEGIN X509 CRL")
            .count(),
        1
    );
}

/// A managed owner rotates its issuing CA with devices out. A device that renews afterwards
/// gets a certificate from the new CA; the export made after the rotation trusts the old and
/// the new certificates alike (ca.pem carries both chains, the retired CA is also its own
/// file); the retired CA still signs its CRL, which GetCrl serves by its id and which lists a
/// revocation made after the rotation of a certificate the retired CA issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_moves_renewals_to_the_new_ca_and_the_old_one_stays_trusted() {
    let harness = Harness::start().await;
    let mut admin = harness.operator("admin", "acme", Role::Admin).await;
    let work = tempfile::tempdir().expect("tempdir");
    let d = work.path();
    let devices = fleet(3, 62);
    let before = onboard_batch(&harness, &mut admin, &devices).await;
    let owner = get_owner(&mut admin, "").await;
    assert_eq!(owner.name, "acme");
    let first = issuing_ca(&owner, "acme/1").certificate_pem.clone();
    for issued in &before {
        assert_issued_by(&issued.certificate_pem, &first);
    }

    // An owner's admin rotates its own owner's CA.
    let rotated = admin
        .rotate_owner_ca(v1::RotateOwnerCaRequest {
            owner: String::new(),
        })
        .await
        .expect("RotateOwnerCa")
        .into_inner()
        .owner
        .expect("an owner");
    assert_eq!(
        ca_states(&rotated),
        vec![
            ("acme/2".to_owned(), v1::IssuingCaState::Active),
            ("acme/1".to_owned(), v1::IssuingCaState::Retired),
        ]
    );
    assert_eq!(rotated.root_pem, owner.root_pem, "the root stays");
    let second = issuing_ca(&rotated, "acme/2").certificate_pem.clone();
    assert_issued_by(&second, &rotated.root_pem);
    assert_ne!(der(&second), der(&first));

    // Device 0 renews (same key slot) and device 1 renews onto its next slot: both now hold
    // certificates from acme/2.
    let mut client = harness.device_client().await;
    let mut after = Vec::new();
    for (index, target_slot) in [(0, 0), (1, 2)] {
        let outcome = devices[index]
            .renew(&mut client, target_slot)
            .await
            .expect("Renew");
        let renewed = bundle(&outcome).clone();
        assert_ne!(renewed.serial, before[index].serial, "device {index}");
        assert_issued_by(&renewed.certificate_pem, &second);
        assert_eq!(renewed.intermediate_pems, vec![second.clone()]);
        assert_eq!(der(&renewed.root_pem), der(&owner.root_pem));
        after.push(renewed);
    }
    // Asking again before anything is due gives the same certificate back, not a third one.
    let again = devices[0].renew(&mut client, 0).await.expect("Renew");
    assert_eq!(bundle(&again).serial, after[0].serial);

    // Device 2 keeps its acme/1 certificate and is revoked after the rotation: the revocation
    // belongs on acme/1's CRL, the CA that signed the certificate.
    let revoked = admin
        .revoke_device(v1::RevokeDeviceRequest {
            device_id: before[2].device_id.clone(),
            reason: v1::RevocationReason::KeyCompromise as i32,
            comment: String::new(),
        })
        .await
        .expect("RevokeDevice")
        .into_inner();
    assert_eq!(revoked.revoked_serials, vec![before[2].serial.clone()]);

    let export = export(&mut admin, "").await;
    write(d, "ca.pem", &export["ca.pem"]);
    write(d, "crl.pem", &export["crl.pem"]);
    write(d, "root.pem", &owner.root_pem);
    write(d, "acme-1.pem", &first);
    write(d, "acme-2.pem", &second);
    write(d, "acme-1-chain.pem", format!("{first}{}", owner.root_pem));
    write(d, "acme-2-chain.pem", format!("{second}{}", owner.root_pem));
    // The new chain, the retired one, then the root once.
    assert_eq!(
        ders(&export["ca.pem"]),
        vec![der(&second), der(&first), der(&owner.root_pem)]
    );
    assert_eq!(
        der(&export["ca-certificate-previous-1.pem"]),
        der(&first),
        "{:?}",
        export.keys()
    );
    assert!(!export.contains_key("ca-certificate-previous-2.pem"));
    assert_eq!(export["crl.pem"].matches("BEGIN X509 CRL").count(), 2);

    let leaves = [
        ("old-0.pem", &before[0].certificate_pem, "acme-1.pem"),
        ("old-1.pem", &before[1].certificate_pem, "acme-1.pem"),
        ("new-0.pem", &after[0].certificate_pem, "acme-2.pem"),
        ("new-1.pem", &after[1].certificate_pem, "acme-2.pem"),
    ];
    for (file, pem, issuer) in leaves {
        write(d, file, pem);
        // Under the export's trust, as Mosquitto's cafile, and with only the root trusted.
        assert_verifies(d, "ca.pem", None, file);
        assert_verifies(d, "root.pem", Some("ca.pem"), file);
        // Each chains through its own issuing CA and not the other.
        assert_verifies(d, "root.pem", Some(issuer), file);
        let other = if issuer == "acme-1.pem" {
            "acme-2.pem"
        } else {
            "acme-1.pem"
        };
        assert_no_chain(d, "root.pem", Some(other), file);
        // Superseded is not revoked: the export's CRLs (both CAs') pass every one of them.
        let (ok, out) = openssl(
            d,
            &[
                "verify",
                "-x509_strict",
                "-crl_check",
                "-CAfile",
                "ca.pem",
                "-CRLfile",
                "crl.pem",
                file,
            ],
        );
        assert!(ok, "{file}: {out}");
    }
    write(d, "revoked.pem", &before[2].certificate_pem);
    let (ok, out) = openssl(
        d,
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            "ca.pem",
            "-CRLfile",
            "crl.pem",
            "revoked.pem",
        ],
    );
    assert!(!ok && out.contains("certificate revoked"), "{out}");

    // Both live CAs' CRLs, the active one first; each by its id, signed by that CA.
    let both = crl(&mut admin, "", "").await;
    assert_eq!(both.issuer_ids, vec!["acme/2", "acme/1"]);
    let old = crl(&mut admin, "", "acme/1").await;
    assert_eq!(old.issuer_ids, vec!["acme/1"]);
    assert_eq!(old.revoked_count, 1);
    write(d, "acme-1-crl.pem", &old.crl);
    let (ok, out) = crl_signed_by(d, "acme-1-crl.pem", "acme-1-chain.pem", false);
    assert!(ok, "the retired CA signs its CRL: {out}");
    let (ok, out) = crl_signed_by(d, "acme-1-crl.pem", "acme-2-chain.pem", false);
    assert!(!ok, "{out}");
    assert_eq!(
        crl_serials(d, "acme-1-crl.pem", false),
        vec![openssl_serial(&before[2].serial)]
    );
    let new = crl(&mut admin, "", "acme/2").await;
    assert_eq!(new.revoked_count, 0);
    write(d, "acme-2-crl.pem", &new.crl);
    let (ok, out) = crl_signed_by(d, "acme-2-crl.pem", "acme-2-chain.pem", false);
    assert!(ok, "{out}");
    assert!(crl_serials(d, "acme-2-crl.pem", false).is_empty());
    // DER is one CA's: it needs the id while two are live.
    let status = admin
        .get_crl(v1::GetCrlRequest {
            format: v1::CrlFormat::Der as i32,
            ..Default::default()
        })
        .await
        .expect_err("DER of two CAs");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("issuer_id"), "{status:?}");
    let old_der = admin
        .get_crl(v1::GetCrlRequest {
            format: v1::CrlFormat::Der as i32,
            owner: String::new(),
            issuer_id: "acme/1".into(),
        })
        .await
        .expect("DER CRL of acme/1")
        .into_inner();
    write(d, "acme-1-crl.der", &old_der.crl);
    let (ok, out) = crl_signed_by(d, "acme-1-crl.der", "acme-1-chain.pem", true);
    assert!(ok, "{out}");
    // An id of no CA of this owner is not found.
    for unknown in ["acme/3", "globex/1", "platform"] {
        let status = admin
            .get_crl(v1::GetCrlRequest {
                format: v1::CrlFormat::Pem as i32,
                owner: String::new(),
                issuer_id: unknown.into(),
            })
            .await
            .expect_err("an unknown issuer");
        assert_eq!(
            status.code(),
            tonic::Code::NotFound,
            "{unknown}: {status:?}"
        );
    }
}

/// Bring your own CA: CreateOwner with CA_MODE_OWN_CA returns a CSR; the owner's root, made
/// with the openssl CLI, signs it (CA:true, pathlen 0, keyCertSign and cRLSign) and
/// ImportOwnerCa brings it back, after the service has refused a certificate for another key,
/// a certificate that is not a CA, a chain that does not link and a path length exceeded, each
/// saying what was wrong. A device of the owner then onboards and verifies under the owner's
/// own root. Nothing pending: FAILED_PRECONDITION. A rotation waits for the root again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_brings_its_own_root_and_bad_certificates_are_refused() {
    let harness = Harness::start().await;
    let mut platform = harness.operator("root-admin", "*", Role::Admin).await;
    let work = tempfile::tempdir().expect("tempdir");
    let d = work.path();

    let created = platform
        .create_owner(v1::CreateOwnerRequest {
            name: "byo".into(),
            ca_mode: v1::CaMode::OwnCa as i32,
            organisation: "BYO Corp".into(),
        })
        .await
        .expect("CreateOwner")
        .into_inner()
        .owner
        .expect("an owner");
    assert_eq!(created.ca_mode(), v1::CaMode::OwnCa);
    assert!(created.root_pem.is_empty(), "no root until the import");
    assert_eq!(
        ca_states(&created),
        vec![("byo/1".to_owned(), v1::IssuingCaState::Pending)]
    );
    let pending = issuing_ca(&created, "byo/1");
    assert!(pending.certificate_pem.is_empty());
    assert_eq!(pending.key_location, "sealed");
    let csr = pending.csr_pem.clone();
    write(d, "byo-1.csr", &csr);
    let (ok, out) = openssl(
        d,
        &["req", "-in", "byo-1.csr", "-noout", "-verify", "-subject"],
    );
    assert!(ok && out.contains("verify OK"), "{out}");
    assert!(
        out.contains("O = BYO Corp") && out.contains("CN = oxroot byo Issuing CA 1"),
        "{out}"
    );

    // Nothing can be issued, signed or exported before the certificate comes back.
    let status = platform
        .create_policy(v1::CreatePolicyRequest {
            policy: Some(v1::Policy {
                name: POLICY.into(),
                owner: "byo".into(),
                params: Some(v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
                    host: "127.0.0.1".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
        })
        .await
        .expect_err("a policy without an issuing CA");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("import-ca"), "{status:?}");
    let status = platform
        .get_crl(v1::GetCrlRequest {
            format: v1::CrlFormat::Pem as i32,
            owner: "byo".into(),
            issuer_id: String::new(),
        })
        .await
        .expect_err("no CRL without an issuing CA");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");

    let root = OpensslRoot::new(d, "root", "/O=BYO Corp/CN=BYO Root CA", false);
    let other_root = OpensslRoot::new(d, "other-root", "/O=Elsewhere/CN=Other Root CA", false);
    let tight_root = OpensslRoot::new(d, "tight-root", "/O=BYO Corp/CN=BYO Tight Root", true);

    let import = |certificate_pem: String, chain_pem: String| v1::ImportOwnerCaRequest {
        owner: "byo".into(),
        certificate_pem,
        chain_pem,
    };
    let refusals = [
        (
            "a certificate for another key",
            import(
                root.sign(
                    &root.foreign_csr("/O=byo/CN=oxroot byo Issuing CA 1"),
                    "issuing",
                    "foreign.pem",
                ),
                root.pem(),
            ),
            "certifies another public key than byo/1's",
        ),
        (
            "a certificate that is not a CA",
            import(root.sign(&csr, "not_a_ca", "not-a-ca.pem"), root.pem()),
            "not a CA certificate",
        ),
        (
            "a CA whose key may not sign certificates",
            import(
                root.sign(&csr, "no_cert_sign", "no-cert-sign.pem"),
                root.pem(),
            ),
            "has no keyUsage keyCertSign",
        ),
        (
            "a CA whose key may not sign its CRLs",
            import(
                root.sign(&csr, "no_crl_sign", "no-crl-sign.pem"),
                root.pem(),
            ),
            "has no keyUsage cRLSign",
        ),
        (
            "a certificate that is not valid now",
            import(root.sign_expired(&csr, "expired.pem"), root.pem()),
            "is not valid now",
        ),
        (
            "a chain that does not link",
            import(root.sign(&csr, "issuing", "byo-1.pem"), other_root.pem()),
            "is not the next certificate's subject",
        ),
        (
            "a path length exceeded",
            import(
                tight_root.sign(&csr, "issuing", "tight.pem"),
                tight_root.pem(),
            ),
            "allows 0 CA certificate(s) below it, the chain puts 1 there",
        ),
    ];
    for (what, request, says) in refusals {
        let status = platform
            .import_owner_ca(request)
            .await
            .expect_err("a bad certificate");
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{what}: {status:?}"
        );
        assert!(status.message().contains(says), "{what}: {status:?}");
        // Nothing changed: the CA still waits.
        let owner = get_owner(&mut platform, "byo").await;
        assert_eq!(
            ca_states(&owner),
            vec![("byo/1".to_owned(), v1::IssuingCaState::Pending)],
            "{what}"
        );
    }

    // The good one: the owner's root signed the service's CSR as a CA with pathlen 0.
    let certificate = fs::read_to_string(d.join("byo-1.pem")).expect("certificate");
    let (ok, out) = openssl(d, &["x509", "-in", "byo-1.pem", "-noout", "-text"]);
    assert!(
        ok && out.contains("CA:TRUE, pathlen:0") && out.contains("Certificate Sign, CRL Sign"),
        "{out}"
    );
    let imported = platform
        .import_owner_ca(import(certificate.clone(), root.pem()))
        .await
        .expect("ImportOwnerCa")
        .into_inner()
        .owner
        .expect("an owner");
    assert_eq!(
        ca_states(&imported),
        vec![("byo/1".to_owned(), v1::IssuingCaState::Active)]
    );
    assert_eq!(der(&imported.root_pem), der(&root.pem()));
    let active = issuing_ca(&imported, "byo/1");
    assert_eq!(der(&active.certificate_pem), der(&certificate));
    assert_eq!(active.chain_pems.len(), 1);
    assert_eq!(der(&active.chain_pems[0]), der(&root.pem()));
    assert!(active.csr_pem.is_empty());

    // Nothing pending any more, and a managed owner never has anything pending.
    let status = platform
        .import_owner_ca(import(certificate.clone(), root.pem()))
        .await
        .expect_err("nothing pending");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("no issuing CA waiting"),
        "{status:?}"
    );
    create_owner(&mut platform, "acme", v1::CaMode::Managed).await;
    let status = platform
        .import_owner_ca(v1::ImportOwnerCaRequest {
            owner: "acme".into(),
            certificate_pem: certificate.clone(),
            chain_pem: root.pem(),
        })
        .await
        .expect_err("nothing pending");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");

    // A device of the owner onboards; its leaf chains to the owner's own root only.
    let mut admin = harness.operator("admin", "byo", Role::Admin).await;
    let devices = fleet(2, 63);
    let bundles = onboard_batch(&harness, &mut admin, &devices).await;
    let mut acme = harness.operator("admin", "acme", Role::Admin).await;
    onboard_batch(&harness, &mut acme, &fleet(1, 64)).await;
    write(
        d,
        "acme-ca.pem",
        export(&mut acme, "").await["ca.pem"].clone(),
    );
    let byo_export = export(&mut admin, "").await;
    write(d, "byo-ca.pem", &byo_export["ca.pem"]);
    assert_eq!(
        ders(&byo_export["ca.pem"]),
        vec![der(&certificate), der(&root.pem())]
    );
    for (index, issued) in bundles.iter().enumerate() {
        assert_issued_by(&issued.certificate_pem, &certificate);
        assert_eq!(der(&issued.root_pem), der(&root.pem()));
        let leaf = format!("leaf-{index}.pem");
        write(d, &leaf, &issued.certificate_pem);
        assert_verifies(d, &root.certificate, Some("byo-1.pem"), &leaf);
        assert_verifies(d, "byo-ca.pem", None, &leaf);
        assert_no_chain(d, &other_root.certificate, Some("byo-1.pem"), &leaf);
        assert_no_chain(d, "acme-ca.pem", None, &leaf);
    }
    // Its CRL is signed by the imported CA.
    let got = crl(&mut admin, "", "").await;
    assert_eq!(got.issuer_ids, vec!["byo/1"]);
    write(d, "byo-crl.pem", &got.crl);
    let (ok, out) = crl_signed_by(d, "byo-crl.pem", "byo-ca.pem", false);
    assert!(ok, "{out}");

    // A rotation of an owner with its own root: a new key and CSR wait for the root, and the
    // active CA issues meanwhile; a second rotation while one waits is refused.
    let rotated = admin
        .rotate_owner_ca(v1::RotateOwnerCaRequest::default())
        .await
        .expect("RotateOwnerCa")
        .into_inner()
        .owner
        .expect("an owner");
    assert_eq!(
        ca_states(&rotated),
        vec![
            ("byo/2".to_owned(), v1::IssuingCaState::Pending),
            ("byo/1".to_owned(), v1::IssuingCaState::Active),
        ]
    );
    let status = admin
        .rotate_owner_ca(v1::RotateOwnerCaRequest::default())
        .await
        .expect_err("a CSR is pending");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    let mut client = harness.device_client().await;
    let meanwhile = devices[0].renew(&mut client, 2).await.expect("Renew");
    assert_issued_by(&bundle(&meanwhile).certificate_pem, &certificate);
    // The chain may start with the certificate itself (issuer order from there).
    let second = root.sign(
        &issuing_ca(&rotated, "byo/2").csr_pem,
        "issuing",
        "byo-2.pem",
    );
    let imported = admin
        .import_owner_ca(v1::ImportOwnerCaRequest {
            owner: String::new(),
            certificate_pem: second.clone(),
            chain_pem: format!("{second}{}", root.pem()),
        })
        .await
        .expect("ImportOwnerCa")
        .into_inner()
        .owner
        .expect("an owner");
    assert_eq!(
        ca_states(&imported),
        vec![
            ("byo/2".to_owned(), v1::IssuingCaState::Active),
            ("byo/1".to_owned(), v1::IssuingCaState::Retired),
        ]
    );
    assert_eq!(issuing_ca(&imported, "byo/2").chain_pems.len(), 1);
    let renewed = devices[1].renew(&mut client, 2).await.expect("Renew");
    assert_issued_by(&bundle(&renewed).certificate_pem, &second);
    write(
        d,
        "byo-ca-2.pem",
        export(&mut admin, "").await["ca.pem"].clone(),
    );
    write(d, "renewed.pem", &bundle(&renewed).certificate_pem);
    write(d, "meanwhile.pem", &bundle(&meanwhile).certificate_pem);
    assert_verifies(d, "byo-ca-2.pem", None, "renewed.pem");
    assert_verifies(d, "byo-ca-2.pem", None, "meanwhile.pem");
}

/// Owner-scoped operators see their own owner only (another one is NOT_FOUND, ListOwners
/// lists only theirs); only platform admins create owners; an owner's non-admins cannot
/// rotate, and nobody of one owner rotates or imports for another. Refusals change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_scoped_operators_see_and_change_only_their_own_owner() {
    let harness = Harness::start().await;
    let mut platform = harness.operator("root-admin", "*", Role::Admin).await;
    for name in ["acme", "globex"] {
        create_owner(&mut platform, name, v1::CaMode::Managed).await;
    }
    let mut acme_admin = harness.operator("alice", "acme", Role::Admin).await;
    let mut acme_operator = harness.operator("oscar", "acme", Role::Operator).await;
    let mut acme_auditor = harness.operator("audrey", "acme", Role::Auditor).await;

    // Every role of acme sees acme, and only acme.
    for client in [&mut acme_admin, &mut acme_operator, &mut acme_auditor] {
        assert_eq!(get_owner(client, "").await.name, "acme");
        assert_eq!(get_owner(client, "acme").await.name, "acme");
        for hidden in ["globex", "initech", "*"] {
            let status = client
                .get_owner(v1::GetOwnerRequest {
                    name: hidden.into(),
                })
                .await
                .expect_err("another owner");
            assert_eq!(status.code(), tonic::Code::NotFound, "{hidden}: {status:?}");
        }
        let listed = client
            .list_owners(v1::ListOwnersRequest::default())
            .await
            .expect("ListOwners")
            .into_inner();
        let names: Vec<&str> = listed.owners.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, vec!["acme"]);
        assert!(listed.next_page_token.is_empty());
    }
    // A platform operator sees both, a page at a time.
    let mut platform_auditor = harness.operator("pat", "*", Role::Auditor).await;
    let first = platform_auditor
        .list_owners(v1::ListOwnersRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .expect("ListOwners")
        .into_inner();
    assert_eq!(first.owners.len(), 1);
    assert_eq!(first.owners[0].name, "acme");
    let second = platform_auditor
        .list_owners(v1::ListOwnersRequest {
            page_size: 1,
            page_token: first.next_page_token,
        })
        .await
        .expect("ListOwners")
        .into_inner();
    let names: Vec<&str> = second.owners.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, vec!["globex"]);
    assert!(
        get_owner(&mut platform_auditor, "globex")
            .await
            .root_pem
            .contains("CERTIFICATE")
    );

    // Only platform admins create owners.
    for (who, client) in [
        ("acme's admin", &mut acme_admin),
        ("the platform's auditor", &mut platform_auditor),
    ] {
        let status = client
            .create_owner(v1::CreateOwnerRequest {
                name: "initech".into(),
                ..Default::default()
            })
            .await
            .expect_err("not a platform admin");
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{who}: {status:?}"
        );
    }
    let status = platform
        .get_owner(v1::GetOwnerRequest {
            name: "initech".into(),
        })
        .await
        .expect_err("never created");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");

    // An owner's operator and auditor cannot rotate; its admin cannot rotate or import for
    // another owner, which looks absent.
    for (who, client) in [
        ("acme's operator", &mut acme_operator),
        ("acme's auditor", &mut acme_auditor),
    ] {
        let status = client
            .rotate_owner_ca(v1::RotateOwnerCaRequest::default())
            .await
            .expect_err("not an admin");
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{who}: {status:?}"
        );
        let status = client
            .import_owner_ca(v1::ImportOwnerCaRequest::default())
            .await
            .expect_err("not an admin");
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{who}: {status:?}"
        );
    }
    let status = acme_admin
        .rotate_owner_ca(v1::RotateOwnerCaRequest {
            owner: "globex".into(),
        })
        .await
        .expect_err("another owner");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    let status = acme_admin
        .import_owner_ca(v1::ImportOwnerCaRequest {
            owner: "globex".into(),
            ..Default::default()
        })
        .await
        .expect_err("another owner");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    // Another owner's CRL is not the caller's to ask for.
    let status = acme_admin
        .get_crl(v1::GetCrlRequest {
            format: v1::CrlFormat::Pem as i32,
            owner: "globex".into(),
            issuer_id: String::new(),
        })
        .await
        .expect_err("another owner's CRL");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    // None of that changed a CA.
    for name in ["acme", "globex"] {
        let owner = get_owner(&mut platform, name).await;
        assert_eq!(
            ca_states(&owner),
            vec![(format!("{name}/1"), v1::IssuingCaState::Active)]
        );
    }
    // The denials are in the audit log.
    let denials = acme_auditor
        .query_audit(v1::QueryAuditRequest {
            action: "access.denied".into(),
            ..Default::default()
        })
        .await
        .expect("QueryAudit")
        .into_inner()
        .entries;
    assert!(denials.len() >= 4, "{denials:#?}");
    // acme's admin may rotate acme's CA, and a platform admin any owner's.
    let rotated = acme_admin
        .rotate_owner_ca(v1::RotateOwnerCaRequest::default())
        .await
        .expect("RotateOwnerCa")
        .into_inner()
        .owner
        .expect("an owner");
    assert_eq!(rotated.issuing_cas[0].id, "acme/2");
    let rotated = platform
        .rotate_owner_ca(v1::RotateOwnerCaRequest {
            owner: "globex".into(),
        })
        .await
        .expect("RotateOwnerCa")
        .into_inner()
        .owner
        .expect("an owner");
    assert_eq!(rotated.issuing_cas[0].id, "globex/2");
    // The platform is no owner: it has no owner record, nor a CA to rotate that way.
    let status = platform
        .rotate_owner_ca(v1::RotateOwnerCaRequest { owner: "*".into() })
        .await
        .expect_err("the platform");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
}

/// A device of acme moves to globex: the transfer revokes its acme certificate on acme's CRL
/// (signed by acme's issuing CA), and its re-onboarding issues under globex's CA, so that the
/// new certificate verifies under globex's trust only and the old one fails a CRL check under
/// acme's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_reissues_under_the_new_owners_ca_and_revokes_on_the_old_owners_crl() {
    let harness = Harness::start().await;
    let mut platform = harness.operator("root-admin", "*", Role::Admin).await;
    let work = tempfile::tempdir().expect("tempdir");
    let d = work.path();
    create_owner(&mut platform, "acme", v1::CaMode::Managed).await;
    let globex = create_owner(&mut platform, "globex", v1::CaMode::Managed).await;
    let mut acme_admin = harness.operator("admin", "acme", Role::Admin).await;
    let mut globex_admin = harness.operator("admin", "globex", Role::Admin).await;

    let devices = fleet(1, 70);
    let before = onboard_batch(&harness, &mut acme_admin, &devices).await;
    // globex: the same kind of policy and an empty batch to receive the device.
    let received = onboard_batch(&harness, &mut globex_admin, &[]).await;
    assert!(received.is_empty());
    let target_batch_id = globex_admin
        .list_batches(v1::ListBatchesRequest::default())
        .await
        .expect("ListBatches")
        .into_inner()
        .batches
        .first()
        .expect("globex's batch")
        .batch_id
        .clone();

    let moved = platform
        .transfer_device(v1::TransferDeviceRequest {
            device_id: devices[0].device_id().to_string(),
            target_owner: "globex".into(),
            target_batch_id,
            comment: "sold".into(),
        })
        .await
        .expect("TransferDevice")
        .into_inner();
    assert_eq!(moved.revoked_serials, vec![before[0].serial.clone()]);

    let mut client = harness.device_client().await;
    let outcome = devices[0].onboard(&mut client).await.expect("Onboard");
    let after = bundle(&outcome).clone();
    let globex_issuing = issuing_ca(&globex, "globex/1");
    assert_eq!(der(&after.root_pem), der(&globex.root_pem));
    assert_issued_by(&after.certificate_pem, &globex_issuing.certificate_pem);

    write(
        d,
        "acme-ca.pem",
        &export(&mut acme_admin, "").await["ca.pem"],
    );
    write(
        d,
        "globex-ca.pem",
        &export(&mut globex_admin, "").await["ca.pem"],
    );
    write(d, "before.pem", &before[0].certificate_pem);
    write(d, "after.pem", &after.certificate_pem);
    assert_verifies(d, "globex-ca.pem", None, "after.pem");
    assert_no_chain(d, "acme-ca.pem", None, "after.pem");

    write(d, "acme-crl.pem", &crl(&mut acme_admin, "", "").await.crl);
    write(
        d,
        "globex-crl.pem",
        &crl(&mut globex_admin, "", "").await.crl,
    );
    let (ok, out) = crl_signed_by(d, "acme-crl.pem", "acme-ca.pem", false);
    assert!(ok, "acme's CRL is signed by acme's issuing CA: {out}");
    assert_eq!(
        crl_serials(d, "acme-crl.pem", false),
        vec![openssl_serial(&before[0].serial)]
    );
    assert!(crl_serials(d, "globex-crl.pem", false).is_empty());
    let (ok, out) = openssl(
        d,
        &[
            "verify",
            "-x509_strict",
            "-crl_check",
            "-CAfile",
            "acme-ca.pem",
            "-CRLfile",
            "acme-crl.pem",
            "before.pem",
        ],
    );
    assert!(!ok && out.contains("certificate revoked"), "{out}");
}
