//! Handler tests without the network: a real sled registry in a temporary directory, a fresh CA,
//! and callers read back from operator certificates that CA issued (as the TLS layer would hand
//! them over). Device credentials are written straight into the registry where a test needs an
//! onboarded device, since Onboard belongs to the device service.
#![allow(
    clippy::too_many_lines,
    reason = "each test is one scenario, read top to bottom"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use time::OffsetDateTime;
use tokio_stream::StreamExt;
use tonic::{Code, Request, Status};
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::x509::ReasonCode;

use oxroot_proto::v1;
use oxroot_proto::v1::operator_server::Operator;
use rot_core::attestation::registration_message;
use rot_core::keys::{DeviceId, PublicKey};

use super::OperatorService;
use crate::error::ServiceError;
use crate::metrics::Metrics;
use crate::model::{CountsDelta, CredentialRecord, CredentialStatus, DeviceState};
use crate::pki::{
    CaNames, CertificateAuthority, LeafRequest, OperatorKey, RevocationReason, Role, Serial,
    Validity,
};
use crate::service::{Caller, ServiceConfig, ServiceCore};
use crate::store::{Change, Op, SledRegistry, commit};

mod operator_certificates;

struct Fixture {
    _dir: tempfile::TempDir,
    core: Arc<ServiceCore>,
    svc: OperatorService,
}

/// A service with the owners the tests' callers belong to, acme and globex, created as a
/// platform admin's first operator for each would create them.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temporary directory");
    let registry = SledRegistry::open(dir.path()).expect("registry");
    let ca = CertificateAuthority::initialise(&CaNames::default(), OffsetDateTime::now_utc())
        .expect("CA");
    let core = ServiceCore::new(
        registry,
        Arc::new(ca),
        ServiceConfig::default(),
        Arc::new(Metrics::new()),
    );
    for owner in ["acme", "globex"] {
        core.authorities()
            .ensure_owner(owner, "system:test")
            .await
            .expect("owner");
    }
    Fixture {
        _dir: dir,
        svc: OperatorService::new(core.clone()),
        core,
    }
}

impl Fixture {
    /// A caller as the TLS layer would present it: read from a certificate the CA issued.
    fn caller(&self, name: &str, owner: &str, role: Role) -> Caller {
        let now = OffsetDateTime::now_utc();
        let issued = self
            .core
            .ca()
            .issue_operator_certificate(
                &OperatorKey::Generate,
                name,
                owner,
                role,
                Validity::new(
                    now - time::Duration::minutes(1),
                    now + time::Duration::days(1),
                )
                .expect("validity"),
                Serial::random().expect("serial"),
            )
            .expect("operator certificate");
        Caller::from_certificate_der(&issued.certificate.der).expect("caller")
    }

    /// The id of the owner's active issuing CA.
    async fn issuer(&self, owner: &str) -> String {
        self.core
            .authorities()
            .issuing(owner)
            .await
            .expect("issuing CA")
            .id
    }

    /// What the trait method does between authentication and the answer.
    async fn checked<T>(
        &self,
        caller: &Caller,
        rpc: &str,
        result: Result<T, ServiceError>,
    ) -> Result<T, ServiceError> {
        self.svc.audit_denial(caller, rpc, result).await
    }

    async fn policy(&self, admin: &Caller, owner: &str, name: &str) {
        self.svc
            .create_policy_as(admin, policy_request(owner, name))
            .await
            .expect("policy");
    }

    async fn batch(&self, caller: &Caller, owner: &str, policy: &str, ids: &[String]) -> String {
        let response = self
            .svc
            .create_batch_as(
                caller,
                v1::CreateBatchRequest {
                    owner: owner.into(),
                    name: "line 1".into(),
                    policy_name: policy.into(),
                    device_ids: ids.to_vec(),
                    ..v1::CreateBatchRequest::default()
                },
            )
            .await
            .expect("batch");
        response.batch.expect("batch").batch_id
    }

    async fn import(
        &self,
        caller: &Caller,
        messages: Vec<v1::ImportDevicesRequest>,
    ) -> Result<v1::ImportDevicesResponse, ServiceError> {
        let stream = tokio_stream::iter(messages.into_iter().map(Ok::<_, Status>));
        self.svc.import_devices_as(caller, stream).await
    }

    async fn audit_actions(&self) -> Vec<(String, String, String)> {
        self.core
            .registry
            .audit(1, 10_000)
            .await
            .expect("audit")
            .into_iter()
            .map(|(_, e)| {
                let r = e.decode().expect("record");
                (r.action, r.outcome, r.owner)
            })
            .collect()
    }

    async fn counts(&self, batch_id: &str) -> crate::model::BatchCounts {
        self.core
            .registry
            .batch(batch_id)
            .await
            .expect("read")
            .expect("batch")
            .counts
    }

    /// Gives a registered device of a batch an active credential, as Onboard would.
    async fn onboard_directly(&self, device_id: &str) -> String {
        let registry = self.core.registry.as_ref();
        let id: DeviceId = device_id.parse().expect("a DeviceId");
        let mut device = registry.device(&id).await.expect("read").expect("device");
        let batch_id = device.batch_id.clone().expect("in a batch");
        let batch = registry
            .batch(&batch_id)
            .await
            .expect("read")
            .expect("batch");
        let before = device.state();
        let serial = Serial::random().expect("serial");
        let serial_hex = serial.to_string();
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("key");
        let public_key: [u8; 65] = key.public_key().as_ref().try_into().expect("65 bytes");
        let now = OffsetDateTime::now_utc();
        let validity = Validity::new(
            now - time::Duration::minutes(1),
            now + time::Duration::days(30),
        )
        .expect("validity");
        let owner = device.owner.clone().expect("an owner");
        let leaf = self
            .core
            .authorities()
            .issuing(&owner)
            .await
            .expect("issuing CA")
            .ca
            .issue_device_certificate(&LeafRequest {
                public_key,
                common_name: device_id.to_owned(),
                validity,
                serial,
                crl_distribution_point: None,
                firmware: None,
            })
            .expect("leaf");
        let credential = CredentialRecord {
            serial,
            device_id: id,
            key_slot: device.key_slot,
            dpk: PublicKey::from_sec1(&public_key).expect("a P-256 point"),
            owner: batch.owner.clone(),
            policy_name: batch.policy_name.clone(),
            batch_id: batch_id.clone(),
            assignment: device.assignment,
            subject_cn: device_id.to_owned(),
            issued_at: now,
            not_before: validity.not_before,
            not_after: validity.not_after,
            renew_after: None,
            certificate_pem: leaf.pem,
            status: CredentialStatus::Active,
            revocation: None,
        };
        device.current_serial = Some(serial);
        device.serials.push(serial);
        device.credential_assignment = Some(device.assignment);
        device.onboarded_at = Some(now);
        let mut change = Change::new();
        change
            .op(Op::AdjustCounts {
                batch_id,
                delta: CountsDelta::transition(before, device.state()),
            })
            .op(Op::PutCredential(Box::new(credential)))
            .op(Op::PutDevice(device));
        commit(registry, change).await.expect("commit");
        serial_hex
    }
}

fn policy_request(owner: &str, name: &str) -> v1::CreatePolicyRequest {
    v1::CreatePolicyRequest {
        policy: Some(v1::Policy {
            name: name.into(),
            owner: owner.into(),
            params: Some(v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
                host: "broker.example.com".into(),
                ..v1::MosquittoPolicyParams::default()
            })),
            ..v1::Policy::default()
        }),
    }
}

/// A DeviceId nobody registered.
fn device_id(n: u32) -> String {
    format!("{n:064x}")
}

/// An offline registration signed by a fresh enrolment key.
fn offline_registration() -> (v1::OfflineRegistration, String) {
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("key");
    let epk = PublicKey::from_sec1(key.public_key().as_ref()).expect("EPK");
    let context = b"station-7".to_vec();
    let message = registration_message(&epk, &context).expect("message");
    let signature = key
        .sign(&SystemRandom::new(), message.as_bytes())
        .expect("signature");
    let registration = v1::OfflineRegistration {
        epk: epk.as_bytes().to_vec(),
        proof_signature: signature.as_ref().to_vec(),
        claimed_device_id: String::new(),
        context: Some(v1::RegistrationContext {
            site: "plant-a".into(),
            ..v1::RegistrationContext::default()
        }),
        proof_context: context,
    };
    (registration, DeviceId::from_public_key(&epk).to_string())
}

fn header(batch_id: &str) -> v1::ImportDevicesRequest {
    v1::ImportDevicesRequest {
        msg: Some(v1::import_devices_request::Msg::Header(v1::ImportHeader {
            batch_id: batch_id.into(),
        })),
    }
}

fn chunk(records: Vec<v1::ImportRecord>) -> v1::ImportDevicesRequest {
    v1::ImportDevicesRequest {
        msg: Some(v1::import_devices_request::Msg::Chunk(v1::ImportChunk {
            records,
        })),
    }
}

fn by_id(line: u64, id: &str) -> v1::ImportRecord {
    v1::ImportRecord {
        line,
        record: Some(v1::import_record::Record::DeviceId(id.into())),
    }
}

fn by_registration(registration: v1::OfflineRegistration) -> v1::ImportRecord {
    v1::ImportRecord {
        line: 0,
        record: Some(v1::import_record::Record::Registration(registration)),
    }
}

fn is_denied<T: std::fmt::Debug>(result: &Result<T, ServiceError>) -> bool {
    matches!(result, Err(ServiceError::PermissionDenied(_)))
}

fn is_not_found<T: std::fmt::Debug>(result: &Result<T, ServiceError>) -> bool {
    matches!(result, Err(ServiceError::NotFound(_)))
}

fn is_invalid<T: std::fmt::Debug>(result: &Result<T, ServiceError>) -> bool {
    matches!(
        result,
        Err(ServiceError::InvalidArgument { .. } | ServiceError::Protocol(_))
    )
}

#[tokio::test]
async fn a_request_without_a_client_certificate_is_unauthenticated() {
    let f = fixture().await;
    let status = f
        .svc
        .who_am_i(Request::new(v1::WhoAmIRequest {}))
        .await
        .expect_err("no certificate");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn who_am_i_reads_the_certificate() {
    let f = fixture().await;
    let caller = f.caller("carol", "acme", Role::Auditor);
    let me = OperatorService::who_am_i_as(&caller);
    assert_eq!(
        (me.name.as_str(), me.owner.as_str(), me.role),
        ("carol", "acme", v1::Role::Auditor as i32)
    );
    assert_eq!(me.certificate_serial, caller.serial.to_string());
}

#[tokio::test]
async fn roles_are_enforced_and_every_denial_is_audited() {
    let f = fixture().await;
    let admin = f.caller("ada", "acme", Role::Admin);
    let operator = f.caller("otto", "acme", Role::Operator);
    let auditor = f.caller("aud", "acme", Role::Auditor);

    let denied = f
        .checked(
            &operator,
            "CreatePolicy",
            f.svc
                .create_policy_as(&operator, policy_request("", "p1"))
                .await,
        )
        .await;
    assert!(is_denied(&denied), "{denied:?}");
    f.policy(&admin, "", "p1").await;

    let batch = v1::CreateBatchRequest {
        policy_name: "p1".into(),
        ..v1::CreateBatchRequest::default()
    };
    let denied = f
        .checked(
            &auditor,
            "CreateBatch",
            f.svc.create_batch_as(&auditor, batch.clone()).await,
        )
        .await;
    assert!(is_denied(&denied));
    assert!(f.svc.create_batch_as(&operator, batch).await.is_ok());

    let query = v1::QueryAuditRequest::default();
    let denied = f
        .checked(
            &operator,
            "QueryAudit",
            f.svc.query_audit_as(&operator, &query).await,
        )
        .await;
    assert!(is_denied(&denied));
    assert!(f.svc.query_audit_as(&auditor, &query).await.is_ok());
    assert!(
        f.svc
            .verify_audit_as(&auditor, &v1::VerifyAuditRequest::default())
            .await
            .is_ok()
    );

    let export = v1::ExportArtifactsRequest {
        policy_name: "p1".into(),
        ..v1::ExportArtifactsRequest::default()
    };
    assert!(is_denied(
        &f.svc.export_artifacts_as(&auditor, &export).await
    ));
    assert!(f.svc.export_artifacts_as(&operator, &export).await.is_ok());
    assert!(
        f.svc
            .get_crl_as(&auditor, &v1::GetCrlRequest::default())
            .await
            .is_ok()
    );

    let issue = v1::IssueOperatorCertificateRequest {
        name: "new".into(),
        role: v1::Role::Auditor as i32,
        key: Some(v1::issue_operator_certificate_request::Key::PublicKey(
            offline_registration().0.epk,
        )),
        ..v1::IssueOperatorCertificateRequest::default()
    };
    assert!(is_denied(
        &f.svc
            .issue_operator_certificate_as(&operator, issue.clone())
            .await
    ));
    assert!(
        f.svc
            .issue_operator_certificate_as(&admin, issue)
            .await
            .is_ok()
    );

    // The three denials that went through the RPC path are on record, with who and why.
    let denials: Vec<_> = f
        .core
        .registry
        .audit(1, 1000)
        .await
        .expect("audit")
        .into_iter()
        .map(|(_, e)| e.decode().expect("record"))
        .filter(|r| r.action == "access.denied")
        .collect();
    assert_eq!(denials.len(), 3);
    assert!(
        denials
            .iter()
            .all(|r| r.outcome == "denied" && r.owner == "acme")
    );
    assert_eq!(denials[0].actor, "operator:acme/otto");
    assert_eq!(denials[0].details["rpc"], "CreatePolicy");
    assert!(denials[0].details["reason"].contains("admin"));
    assert_eq!(denials[1].actor, "operator:acme/aud");
    let actions = f.audit_actions().await;
    for action in [
        "policy.create",
        "batch.create",
        "artifacts.export",
        "operator.issue",
    ] {
        assert!(
            actions.iter().any(|(a, _, _)| a == action),
            "{action} missing"
        );
    }
}

#[tokio::test]
async fn another_owners_resources_look_absent() {
    let f = fixture().await;
    let acme = f.caller("ada", "acme", Role::Admin);
    let globex = f.caller("gus", "globex", Role::Admin);
    f.policy(&acme, "", "p1").await;
    let id = device_id(1);
    let batch_id = f.batch(&acme, "", "p1", std::slice::from_ref(&id)).await;

    let get_batch = v1::GetBatchRequest {
        batch_id: batch_id.clone(),
    };
    assert!(is_not_found(&f.svc.get_batch_as(&globex, &get_batch).await));
    assert!(f.svc.get_batch_as(&acme, &get_batch).await.is_ok());
    let get_policy = |owner: &str| v1::GetPolicyRequest {
        owner: owner.into(),
        name: "p1".into(),
    };
    assert!(is_not_found(
        &f.svc.get_policy_as(&globex, &get_policy("")).await
    ));
    // Naming the other owner is a denial, not a lookup.
    assert!(is_denied(
        &f.svc.get_policy_as(&globex, &get_policy("acme")).await
    ));
    let get_device = v1::GetDeviceRequest {
        device_id: id.clone(),
    };
    assert!(is_not_found(
        &f.svc.get_device_as(&globex, &get_device).await
    ));
    let revoke = v1::RevokeDeviceRequest {
        device_id: id.clone(),
        ..v1::RevokeDeviceRequest::default()
    };
    assert!(is_not_found(
        &f.svc.revoke_device_as(&globex, &revoke).await
    ));
    let watch = v1::WatchBatchRequest {
        batch_id: batch_id.clone(),
        ..v1::WatchBatchRequest::default()
    };
    assert!(f.svc.watch_batch_as(&globex, &watch).await.is_err());
    let import = f
        .import(
            &globex,
            vec![header(&batch_id), chunk(vec![by_id(0, &device_id(9))])],
        )
        .await;
    assert!(is_not_found(&import));

    let batches = f
        .svc
        .list_batches_as(&globex, &v1::ListBatchesRequest::default())
        .await
        .expect("list");
    assert!(batches.batches.is_empty());
    let devices = f
        .svc
        .list_devices_as(&globex, &v1::ListDevicesRequest::default())
        .await
        .expect("list");
    assert!(devices.devices.is_empty());
    let policies = f
        .svc
        .list_policies_as(&globex, &v1::ListPoliciesRequest::default())
        .await
        .expect("list");
    assert!(policies.policies.is_empty());
    // A batch under another owner's policy name is simply a missing policy.
    let create = v1::CreateBatchRequest {
        policy_name: "p1".into(),
        ..v1::CreateBatchRequest::default()
    };
    assert!(is_not_found(&f.svc.create_batch_as(&globex, create).await));
}

#[tokio::test]
async fn platform_operators_name_the_owner_and_see_every_owner() {
    let f = fixture().await;
    let platform = f.caller("root", "*", Role::Admin);
    let acme = f.caller("ada", "acme", Role::Admin);
    assert!(is_invalid(
        &f.svc
            .create_policy_as(&platform, policy_request("", "p1"))
            .await
    ));
    f.policy(&platform, "acme", "p1").await;
    f.policy(&platform, "globex", "p1").await;
    f.batch(&platform, "acme", "p1", &[]).await;
    f.batch(&platform, "globex", "p1", &[]).await;

    let all = f
        .svc
        .list_batches_as(&platform, &v1::ListBatchesRequest::default())
        .await
        .expect("list");
    assert_eq!(all.batches.len(), 2);
    let mine = f
        .svc
        .list_batches_as(&acme, &v1::ListBatchesRequest::default())
        .await
        .expect("list");
    assert_eq!(mine.batches.len(), 1);
    assert_eq!(mine.batches[0].owner, "acme");
    let theirs = v1::ListBatchesRequest {
        owner: "globex".into(),
        ..v1::ListBatchesRequest::default()
    };
    assert!(is_denied(&f.svc.list_batches_as(&acme, &theirs).await));
    assert_eq!(
        f.svc
            .list_policies_as(&platform, &v1::ListPoliciesRequest::default())
            .await
            .expect("list")
            .policies
            .len(),
        2
    );
}

#[tokio::test]
async fn a_second_policy_of_the_same_name_already_exists() {
    let f = fixture().await;
    let admin = f.caller("ada", "acme", Role::Admin);
    f.policy(&admin, "", "p1").await;
    let again = f
        .svc
        .create_policy_as(&admin, policy_request("", "p1"))
        .await;
    assert!(
        matches!(again, Err(ServiceError::AlreadyExists(_))),
        "{again:?}"
    );
    assert!(is_invalid(
        &f.svc
            .create_policy_as(&admin, policy_request("", "Bad/Name"))
            .await
    ));
    let other = f.caller("gus", "globex", Role::Admin);
    f.policy(&other, "", "p1").await;
}

#[tokio::test]
async fn create_batch_with_a_request_id_is_idempotent() {
    let f = fixture().await;
    let admin = f.caller("ada", "acme", Role::Admin);
    f.policy(&admin, "", "p1").await;
    let request = v1::CreateBatchRequest {
        policy_name: "p1".into(),
        request_id: "mes-42".into(),
        device_ids: vec![device_id(1), device_id(2), "nope".into()],
        ..v1::CreateBatchRequest::default()
    };
    let first = f
        .svc
        .create_batch_as(&admin, request.clone())
        .await
        .expect("first");
    let second = f.svc.create_batch_as(&admin, request).await.expect("retry");
    let (b1, b2) = (first.batch.expect("batch"), second.batch.expect("batch"));
    assert_eq!(b1.batch_id, b2.batch_id);
    let (r1, r2) = (
        first.report.expect("report"),
        second.report.expect("report"),
    );
    assert_eq!((r1.accepted, r1.unchanged, r1.rejected), (2, 0, 1));
    assert_eq!((r2.accepted, r2.unchanged, r2.rejected), (0, 2, 1));
    assert_eq!(r1.rejections[0].line, 3);
    assert_eq!(b2.counts.expect("counts").total, 2);
    let batches = f
        .svc
        .list_batches_as(&admin, &v1::ListBatchesRequest::default())
        .await
        .expect("list");
    assert_eq!(batches.batches.len(), 1);
    assert!(b1.batch_id.starts_with("bt") && b1.batch_id.len() <= 64);

    let too_many = v1::CreateBatchRequest {
        policy_name: "p1".into(),
        device_ids: vec![device_id(1); 10_001],
        ..v1::CreateBatchRequest::default()
    };
    assert!(is_invalid(&f.svc.create_batch_as(&admin, too_many).await));
}

/// Another owner's devices, whatever their state, are all answered alike: one reason, one
/// message, naming neither the owner nor the state. The precise reason is in the platform's
/// audit log, and nowhere the importing owner can read.
#[tokio::test]
async fn import_of_another_owners_device_tells_nothing_about_it() {
    use v1::ImportRejectionReason as R;
    let f = fixture().await;
    let acme = f.caller("ada", "acme", Role::Admin);
    let globex = f.caller("gus", "globex", Role::Admin);
    let platform = f.caller("root", "*", Role::Admin);
    f.policy(&acme, "", "p1").await;
    f.policy(&globex, "", "p1").await;
    let target = f.batch(&acme, "", "p1", &[]).await;

    // globex's devices: listed but never registered, registered, onboarded, revoked.
    let (listed, (registration, registered)) = (device_id(30), offline_registration());
    let (onboarded, revoked) = (device_id(31), device_id(32));
    let globex_batch = f
        .batch(
            &globex,
            "",
            "p1",
            &[listed.clone(), onboarded.clone(), revoked.clone()],
        )
        .await;
    let imported = f
        .import(
            &globex,
            vec![
                header(&globex_batch),
                chunk(vec![by_registration(registration.clone())]),
            ],
        )
        .await
        .expect("globex import");
    assert_eq!(imported.report.expect("report").accepted, 1);
    f.onboard_directly(&onboarded).await;
    f.svc
        .revoke_device_as(
            &globex,
            &v1::RevokeDeviceRequest {
                device_id: revoked.clone(),
                ..v1::RevokeDeviceRequest::default()
            },
        )
        .await
        .expect("revoke");
    let mut globex_before = Vec::new();
    for id in [&listed, &registered, &onboarded, &revoked] {
        globex_before.push(
            f.svc
                .get_device_as(
                    &globex,
                    &v1::GetDeviceRequest {
                        device_id: id.clone(),
                    },
                )
                .await
                .expect("globex sees its device"),
        );
    }
    let acme_log_before = f.audit_actions().await.len();

    let response = f
        .import(
            &acme,
            vec![
                header(&target),
                chunk(vec![
                    by_id(0, &listed),
                    by_registration(registration),
                    by_id(0, &onboarded),
                    by_id(0, &revoked),
                ]),
            ],
        )
        .await
        .expect("import");
    let report = response.report.expect("report");
    assert_eq!((report.accepted, report.rejected), (0, 4));
    let answers: Vec<(i32, String)> = report
        .rejections
        .iter()
        .map(|r| (r.reason, r.message.clone()))
        .collect();
    assert!(
        answers.iter().all(|answer| *answer == answers[0]),
        "{answers:?}"
    );
    let (reason, message) = &answers[0];
    assert_eq!(*reason, R::Unavailable as i32);
    assert_ne!(*reason, R::OtherOwner as i32);
    for word in [
        "globex",
        "owner ",
        "revoked",
        "registered",
        "onboarded",
        "batch ",
    ] {
        assert!(!message.contains(word), "{word:?} in {message:?}");
    }
    // Nothing changed for globex, and acme's batch is as empty as before.
    for (id, before) in [&listed, &registered, &onboarded, &revoked]
        .iter()
        .zip(&globex_before)
    {
        let now = f
            .svc
            .get_device_as(
                &globex,
                &v1::GetDeviceRequest {
                    device_id: (*id).clone(),
                },
            )
            .await
            .expect("globex sees its device");
        assert_eq!(now.device, before.device, "{id}");
    }
    assert_eq!(f.counts(&target).await.total, 0);

    // The precise reason: one platform entry per record, which acme's auditors cannot read.
    let records: Vec<_> = f
        .core
        .registry
        .audit(1, 10_000)
        .await
        .expect("audit")
        .into_iter()
        .map(|(_, e)| e.decode().expect("record"))
        .collect();
    let unavailable: Vec<_> = records
        .iter()
        .filter(|r| r.action == "batch.import_unavailable")
        .collect();
    assert_eq!(unavailable.len(), 4);
    for entry in &unavailable {
        assert_eq!(entry.owner, "*");
        assert_eq!(entry.outcome, "refused");
        assert_eq!(entry.details["reason"], "other_owner");
        assert_eq!(entry.details["holder"], "globex");
        assert_eq!(entry.details["importing_owner"], "acme");
        assert!(message.contains(&entry.correlation_id), "{message}");
    }
    assert!(
        records[acme_log_before..]
            .iter()
            .filter(|r| r.owner != "*")
            .all(|r| !r.details.values().any(|v| v.contains("globex"))),
        "acme's log names globex"
    );
    let acme_view = f
        .svc
        .query_audit_as(&acme_auditor(&f), &v1::QueryAuditRequest::default())
        .await
        .expect("acme's audit");
    assert!(
        acme_view
            .entries
            .iter()
            .all(|e| e.action != "batch.import_unavailable"),
        "acme's auditor reads the platform's entry"
    );
    let platform_view = f
        .svc
        .query_audit_as(&platform, &v1::QueryAuditRequest::default())
        .await
        .expect("platform audit");
    assert_eq!(
        platform_view
            .entries
            .iter()
            .filter(|e| e.action == "batch.import_unavailable")
            .count(),
        4
    );
}

fn acme_auditor(f: &Fixture) -> Caller {
    f.caller("audrey", "acme", Role::Auditor)
}

#[tokio::test]
async fn import_rejects_each_record_with_its_reason_and_line() {
    use v1::ImportRejectionReason as R;
    let f = fixture().await;
    let acme = f.caller("ada", "acme", Role::Admin);
    let globex = f.caller("gus", "globex", Role::Admin);
    f.policy(&acme, "", "p1").await;
    f.policy(&globex, "", "p1").await;
    let (already, elsewhere, revoked, foreign) =
        (device_id(10), device_id(11), device_id(12), device_id(13));
    let target = f
        .batch(&acme, "", "p1", std::slice::from_ref(&already))
        .await;
    f.batch(&acme, "", "p1", &[elsewhere.clone(), revoked.clone()])
        .await;
    f.batch(&globex, "", "p1", std::slice::from_ref(&foreign))
        .await;
    f.svc
        .revoke_device_as(
            &acme,
            &v1::RevokeDeviceRequest {
                device_id: revoked.clone(),
                ..v1::RevokeDeviceRequest::default()
            },
        )
        .await
        .expect("revoke");
    let (good, good_id) = offline_registration();
    let (mut forged, forged_id) = offline_registration();
    forged.proof_signature[10] ^= 1;

    let fresh = device_id(0x00ab_cdef).to_uppercase();
    let records = vec![
        by_id(0, &fresh),
        by_id(0, "xyz"),
        by_id(0, &device_id(0x00ab_cdef)),
        by_id(0, &elsewhere),
        by_id(0, &foreign),
        by_id(0, &revoked),
        v1::ImportRecord::default(),
        by_registration(good),
        by_registration(forged),
        by_id(0, &already),
    ];
    let response = f
        .import(
            &acme,
            vec![header(&target), chunk(records), chunk(vec![by_id(42, "")])],
        )
        .await
        .expect("import");
    let report = response.report.expect("report");
    assert_eq!(
        (report.accepted, report.unchanged, report.rejected),
        (2, 1, 8)
    );
    let seen: Vec<(u64, i32)> = report
        .rejections
        .iter()
        .map(|r| (r.line, r.reason))
        .collect();
    assert_eq!(
        seen,
        vec![
            (2, R::InvalidDeviceId as i32),
            (3, R::Duplicate as i32),
            (4, R::InOtherBatch as i32),
            (5, R::Unavailable as i32),
            (6, R::Revoked as i32),
            (7, R::Malformed as i32),
            (9, R::InvalidRegistration as i32),
            (42, R::Malformed as i32),
        ]
    );
    let forged_rejection = &report.rejections[6];
    assert_eq!(forged_rejection.device_id, forged_id);
    assert!(
        forged_rejection.message.contains("proof_signature"),
        "{}",
        forged_rejection.message
    );
    // The other owner's device is not described at all (see
    // import_of_another_owners_device_tells_nothing_about_it).
    assert!(!report.rejections[3].message.contains("globex"));

    let counts = response.counts.expect("counts");
    assert_eq!(
        (
            counts.total,
            counts.awaiting_registration,
            counts.registered
        ),
        (3, 2, 1)
    );
    let device = f
        .svc
        .get_device_as(&acme, &v1::GetDeviceRequest { device_id: good_id })
        .await
        .expect("device")
        .device
        .expect("device");
    assert_eq!(device.state, v1::DeviceState::Ready as i32);
    assert_eq!(
        (device.owner.as_str(), device.batch_id.as_str()),
        ("acme", target.as_str())
    );
    assert_eq!(
        device.registration_context.expect("context").site,
        "plant-a"
    );

    // Protocol errors.
    let no_header = f
        .import(&acme, vec![chunk(vec![by_id(0, &device_id(5))])])
        .await;
    assert!(is_invalid(&no_header));
    let second_header = f
        .import(&acme, vec![header(&target), header(&target)])
        .await;
    assert!(is_invalid(&second_header));
    let big = chunk((0..1001).map(|n| by_id(0, &device_id(n))).collect());
    assert!(is_invalid(
        &f.import(&acme, vec![header(&target), big]).await
    ));
    let auditor = f.caller("aud", "acme", Role::Auditor);
    assert!(is_denied(&f.import(&auditor, vec![header(&target)]).await));
}

#[tokio::test]
async fn paging_walks_every_page_and_binds_the_filters() {
    let f = fixture().await;
    let admin = f.caller("ada", "acme", Role::Admin);
    f.policy(&admin, "", "p1").await;
    let ids: Vec<String> = (0..25).rev().map(device_id).collect();
    let batch_id = f.batch(&admin, "", "p1", &ids).await;
    f.batch(&admin, "", "p1", &[device_id(100)]).await;

    let mut request = v1::ListDevicesRequest {
        batch_id: batch_id.clone(),
        page_size: 10,
        ..v1::ListDevicesRequest::default()
    };
    let mut listed = Vec::new();
    let mut pages = 0;
    loop {
        let page = f.svc.list_devices_as(&admin, &request).await.expect("page");
        pages += 1;
        listed.extend(page.devices.into_iter().map(|d| d.device_id));
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(listed, expected);

    let first = f
        .svc
        .list_devices_as(
            &admin,
            &v1::ListDevicesRequest {
                batch_id: batch_id.clone(),
                page_size: 10,
                ..v1::ListDevicesRequest::default()
            },
        )
        .await
        .expect("page");
    let mismatched = v1::ListDevicesRequest {
        batch_id,
        page_size: 10,
        state: v1::DeviceState::Ready as i32,
        page_token: first.next_page_token.clone(),
        ..v1::ListDevicesRequest::default()
    };
    assert!(is_invalid(
        &f.svc.list_devices_as(&admin, &mismatched).await
    ));
    let foreign_rpc = v1::ListBatchesRequest {
        page_token: first.next_page_token,
        ..v1::ListBatchesRequest::default()
    };
    assert!(is_invalid(
        &f.svc.list_batches_as(&admin, &foreign_rpc).await
    ));

    // Batches: newest first, across pages.
    let third = f.batch(&admin, "", "p1", &[]).await;
    let page = f
        .svc
        .list_batches_as(
            &admin,
            &v1::ListBatchesRequest {
                page_size: 2,
                ..v1::ListBatchesRequest::default()
            },
        )
        .await
        .expect("page");
    assert_eq!(page.batches[0].batch_id, third);
    let rest = f
        .svc
        .list_batches_as(
            &admin,
            &v1::ListBatchesRequest {
                page_size: 2,
                page_token: page.next_page_token,
                ..v1::ListBatchesRequest::default()
            },
        )
        .await
        .expect("page");
    assert_eq!(rest.batches.len(), 1);
    assert!(rest.next_page_token.is_empty());

    // The audit log pages the same way.
    let page = f
        .svc
        .query_audit_as(
            &admin,
            &v1::QueryAuditRequest {
                action: "batch.create".into(),
                page_size: 2,
                ..v1::QueryAuditRequest::default()
            },
        )
        .await
        .expect("page");
    assert_eq!(page.entries.len(), 2);
    assert!(page.entries[0].seq < page.entries[1].seq);
    let rest = f
        .svc
        .query_audit_as(
            &admin,
            &v1::QueryAuditRequest {
                action: "batch.create".into(),
                page_size: 2,
                page_token: page.next_page_token,
                ..v1::QueryAuditRequest::default()
            },
        )
        .await
        .expect("page");
    assert_eq!(rest.entries.len(), 1);
    assert!(rest.next_page_token.is_empty());
}

/// A registered device in a new batch of `owner`, with an active credential.
async fn onboarded_device(f: &Fixture, admin: &Caller, owner: &str) -> (String, String, String) {
    let batch_id = f.batch(admin, owner, "p1", &[]).await;
    let (registration, id) = offline_registration();
    let response = f
        .import(
            admin,
            vec![
                header(&batch_id),
                chunk(vec![by_registration(registration)]),
            ],
        )
        .await
        .expect("import");
    assert_eq!(response.report.expect("report").accepted, 1);
    let serial = f.onboard_directly(&id).await;
    (batch_id, id, serial)
}

fn crl_serials(der: &[u8]) -> Vec<(String, Option<ReasonCode>)> {
    let (_, crl) = CertificateRevocationList::from_der(der).expect("CRL");
    crl.iter_revoked_certificates()
        .map(|r| (r.serial().to_str_radix(16), r.reason_code().map(|(_, c)| c)))
        .collect()
}

#[tokio::test]
async fn revocation_is_idempotent_and_puts_the_serial_on_the_crl() {
    let f = fixture().await;
    let admin = f.caller("ada", "acme", Role::Admin);
    let operator = f.caller("otto", "acme", Role::Operator);
    f.policy(&admin, "", "p1").await;
    let (batch_id, id, serial) = onboarded_device(&f, &admin, "").await;
    assert_eq!(f.counts(&batch_id).await.onboarded, 1);

    let request = v1::RevokeDeviceRequest {
        device_id: id.clone(),
        reason: v1::RevocationReason::KeyCompromise as i32,
        comment: "lost in transit".into(),
    };
    let first = f
        .svc
        .revoke_device_as(&operator, &request)
        .await
        .expect("revoke");
    assert_eq!(first.revoked_serials, vec![serial.clone()]);
    let device = first.device.expect("device");
    assert_eq!(device.state, v1::DeviceState::Revoked as i32);
    assert_eq!(
        device.revocation.expect("revocation").revoked_by,
        "acme/otto"
    );
    let counts = f.counts(&batch_id).await;
    assert_eq!((counts.onboarded, counts.revoked, counts.total), (0, 1, 1));

    let again = f
        .svc
        .revoke_device_as(&operator, &request)
        .await
        .expect("again");
    assert!(again.revoked_serials.is_empty());
    assert_eq!(f.counts(&batch_id).await.revoked, 1);

    let crl = f
        .svc
        .get_crl_as(
            &operator,
            &v1::GetCrlRequest {
                format: v1::CrlFormat::Der as i32,
                ..v1::GetCrlRequest::default()
            },
        )
        .await
        .expect("CRL");
    assert_eq!(crl.format, v1::CrlFormat::Der as i32);
    assert_eq!(crl.revoked_count, 1);
    assert_eq!(
        crl_serials(&crl.crl),
        vec![(serial.clone(), Some(ReasonCode::KeyCompromise))]
    );
    let pem = f
        .svc
        .get_crl_as(&operator, &v1::GetCrlRequest::default())
        .await
        .expect("CRL");
    assert!(pem.crl.starts_with(b"-----BEGIN X509 CRL-----"));

    let history = f
        .svc
        .get_device_as(&operator, &v1::GetDeviceRequest { device_id: id })
        .await
        .expect("device")
        .device
        .expect("device")
        .credential_history;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].state, v1::CredentialState::Revoked as i32);
    let revocations = f
        .audit_actions()
        .await
        .into_iter()
        .filter(|(a, _, _)| a == "device.revoke")
        .count();
    assert_eq!(revocations, 1);
}

#[tokio::test]
async fn a_move_within_the_owner_keeps_the_certificate() {
    let f = fixture().await;
    let admin = f.caller("ada", "acme", Role::Admin);
    let operator = f.caller("otto", "acme", Role::Operator);
    f.policy(&admin, "", "p1").await;
    let (from, id, serial) = onboarded_device(&f, &admin, "").await;
    let to = f.batch(&admin, "", "p1", &[]).await;

    let missing_batch = v1::TransferDeviceRequest {
        device_id: id.clone(),
        ..v1::TransferDeviceRequest::default()
    };
    assert!(is_invalid(
        &f.svc.transfer_device_as(&operator, &missing_batch).await
    ));
    let request = v1::TransferDeviceRequest {
        device_id: id.clone(),
        target_batch_id: to.clone(),
        ..v1::TransferDeviceRequest::default()
    };
    let moved = f
        .svc
        .transfer_device_as(&operator, &request)
        .await
        .expect("move");
    assert!(moved.revoked_serials.is_empty());
    let device = moved.device.expect("device");
    assert_eq!(device.state, v1::DeviceState::ReonboardPending as i32);
    assert_eq!(device.batch_id, to);
    assert_eq!(
        device.current_credential.expect("credential").serial,
        serial
    );
    assert_eq!(f.counts(&from).await.total, 0);
    let counts = f.counts(&to).await;
    assert_eq!((counts.total, counts.reonboard_pending), (1, 1));
    let record = f
        .core
        .registry
        .device(&id.parse().expect("a DeviceId"))
        .await
        .expect("read")
        .expect("device");
    assert_eq!((record.assignment, record.key_slot), (1, 1));
    assert!(
        f.core
            .registry
            .revoked(&f.issuer("acme").await)
            .await
            .expect("revoked")
            .is_empty()
    );

    let again = f.svc.transfer_device_as(&operator, &request).await;
    assert!(
        matches!(again, Err(ServiceError::FailedPrecondition(_))),
        "{again:?}"
    );
    let listed = f
        .svc
        .list_devices_as(
            &operator,
            &v1::ListDevicesRequest {
                batch_id: from,
                ..v1::ListDevicesRequest::default()
            },
        )
        .await
        .expect("list");
    assert!(listed.devices.is_empty());
}

#[tokio::test]
async fn a_move_to_another_owner_revokes_and_takes_the_next_slot() {
    let f = fixture().await;
    let admin = f.caller("ada", "acme", Role::Admin);
    let operator = f.caller("otto", "acme", Role::Operator);
    let platform = f.caller("root", "*", Role::Admin);
    let globex = f.caller("gus", "globex", Role::Admin);
    f.policy(&admin, "", "p1").await;
    f.policy(&globex, "", "p1").await;
    let globex_batch = f.batch(&globex, "", "p1", &[]).await;
    let (from, id, serial) = onboarded_device(&f, &admin, "").await;

    let away = |batch: &str| v1::TransferDeviceRequest {
        device_id: id.clone(),
        target_owner: "globex".into(),
        target_batch_id: batch.into(),
        comment: "sold".into(),
    };
    let denied = f
        .checked(
            &operator,
            "TransferDevice",
            f.svc.transfer_device_as(&operator, &away("")).await,
        )
        .await;
    assert!(is_denied(&denied));
    // Only a platform admin may name another owner's batch.
    assert!(is_denied(
        &f.svc.transfer_device_as(&admin, &away(&globex_batch)).await
    ));

    let moved = f
        .svc
        .transfer_device_as(&admin, &away(""))
        .await
        .expect("move");
    assert_eq!(moved.revoked_serials, vec![serial.clone()]);
    let device = moved.device.expect("device");
    assert_eq!(device.owner, "globex");
    assert_eq!(device.state, v1::DeviceState::Unassigned as i32);
    assert!(device.current_credential.is_none());
    let record = f
        .core
        .registry
        .device(&id.parse().expect("a DeviceId"))
        .await
        .expect("read")
        .expect("device");
    assert_eq!((record.key_slot, record.assignment), (2, 1));
    let revoked = f
        .core
        .registry
        .revoked(&f.issuer("acme").await)
        .await
        .expect("revoked");
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].1.reason, RevocationReason::AffiliationChanged);
    let crl = f
        .core
        .crls()
        .current(&f.issuer("acme").await)
        .await
        .expect("CRL");
    assert_eq!(
        crl_serials(&hex::decode(crl.der_hex).expect("hex")),
        vec![(serial.clone(), Some(ReasonCode::AffiliationChanged))]
    );
    assert_eq!(f.counts(&from).await.total, 0);
    // Each owner's copy of the transfer holds only its own side.
    let sides: Vec<_> = f
        .core
        .registry
        .audit(1, 10_000)
        .await
        .expect("audit")
        .into_iter()
        .map(|(_, e)| e.decode().expect("record"))
        .filter(|r| r.action == "device.transfer")
        .collect();
    let side = |owner: &str| {
        sides
            .iter()
            .find(|r| r.owner == owner)
            .unwrap_or_else(|| panic!("no transfer entry for {owner}"))
            .details
            .clone()
    };
    let (old, new) = (side("acme"), side("globex"));
    assert_eq!(old["from_batch"], from);
    assert_eq!(old["comment"], "sold");
    assert!(old["serials"].contains(&serial));
    for acme_only in ["from_batch", "comment", "serials", "from_owner"] {
        assert!(
            !new.contains_key(acme_only),
            "globex reads {acme_only}: {new:?}"
        );
    }
    assert_eq!(new["to_owner"], "globex");
    assert_eq!(new["key_slot"], "2");

    // Acme no longer sees it; globex does, and can claim it into a batch.
    let get = v1::GetDeviceRequest {
        device_id: id.clone(),
    };
    assert!(is_not_found(&f.svc.get_device_as(&admin, &get).await));
    assert!(f.svc.get_device_as(&globex, &get).await.is_ok());
    let claimed = f
        .import(
            &globex,
            vec![header(&globex_batch), chunk(vec![by_id(0, &id)])],
        )
        .await
        .expect("import");
    let counts = claimed.counts.expect("counts");
    assert_eq!((counts.total, counts.reonboard_pending), (1, 1));

    // A platform admin moves it on, straight into a batch of a third owner.
    f.policy(&platform, "initech", "p1").await;
    let initech_batch = f.batch(&platform, "initech", "p1", &[]).await;
    let onward = v1::TransferDeviceRequest {
        device_id: id.clone(),
        target_owner: "initech".into(),
        target_batch_id: initech_batch.clone(),
        comment: String::new(),
    };
    let moved = f
        .svc
        .transfer_device_as(&platform, &onward)
        .await
        .expect("move");
    assert!(moved.revoked_serials.is_empty());
    assert_eq!(f.counts(&globex_batch).await.total, 0);
    assert_eq!(f.counts(&initech_batch).await.total, 1);
    let record = f
        .core
        .registry
        .device(&id.parse().expect("a DeviceId"))
        .await
        .expect("read")
        .expect("device");
    assert_eq!(record.key_slot, 3);
    let transfers: Vec<String> = f
        .audit_actions()
        .await
        .into_iter()
        .filter(|(a, _, _)| a == "device.transfer")
        .map(|(_, _, owner)| owner)
        .collect();
    assert_eq!(transfers, vec!["acme", "globex", "globex", "initech"]);
}

#[test]
fn key_slots_wrap_from_seven_to_one() {
    assert_eq!(super::devices::next_slot(1), 2);
    assert_eq!(super::devices::next_slot(7), 1);
    assert_eq!(super::devices::next_free_slot(7, &[1, 2]), Some(3));
    assert_eq!(
        super::devices::next_free_slot(3, &[1, 2, 3, 4, 5, 6, 7]),
        None
    );
}

#[tokio::test]
async fn the_audit_chain_verifies_and_auditors_see_their_owner_only() {
    let f = fixture().await;
    let acme = f.caller("ada", "acme", Role::Admin);
    let globex = f.caller("gus", "globex", Role::Admin);
    let auditor = f.caller("aud", "globex", Role::Auditor);
    f.policy(&acme, "", "p1").await;
    f.policy(&globex, "", "p1").await;
    f.batch(&acme, "", "p1", &[device_id(1)]).await;
    f.batch(&globex, "", "p1", &[device_id(2)]).await;
    let head = f.core.registry.audit_head().await.expect("head");
    assert!(head >= 6);

    let all = f
        .svc
        .verify_audit_as(&auditor, &v1::VerifyAuditRequest::default())
        .await
        .expect("verify");
    assert!(all.ok, "{all:?}");
    assert_eq!(
        (all.entries_checked, all.first_seq, all.last_seq),
        (head, 1, head)
    );
    assert_eq!(all.last_hash.len(), 32);
    let part = f
        .svc
        .verify_audit_as(
            &auditor,
            &v1::VerifyAuditRequest {
                start_seq: 2,
                end_seq: 3,
            },
        )
        .await
        .expect("verify");
    assert!(part.ok);
    assert_eq!(
        (part.entries_checked, part.first_seq, part.last_seq),
        (2, 2, 3)
    );
    let backwards = v1::VerifyAuditRequest {
        start_seq: 3,
        end_seq: 2,
    };
    assert!(is_invalid(
        &f.svc.verify_audit_as(&auditor, &backwards).await
    ));

    let seen = f
        .svc
        .query_audit_as(&auditor, &v1::QueryAuditRequest::default())
        .await
        .expect("query");
    assert!(!seen.entries.is_empty());
    assert!(seen.entries.iter().all(|e| e.owner == "globex"));
    assert_eq!(seen.head_seq, head);
    // Every entry checks on its own: hash = SHA-256(prev_hash || record).
    for entry in &seen.entries {
        assert_eq!(
            crate::audit::chain_hash(&entry.prev_hash, &entry.record).to_vec(),
            entry.hash
        );
    }
    let platform = f.caller("root", "*", Role::Auditor);
    let everything = f
        .svc
        .query_audit_as(&platform, &v1::QueryAuditRequest::default())
        .await
        .expect("query");
    assert_eq!(everything.entries.len() as u64, head);
}

fn issue_request(
    name: &str,
    owner: &str,
    key: v1::issue_operator_certificate_request::Key,
) -> v1::IssueOperatorCertificateRequest {
    v1::IssueOperatorCertificateRequest {
        key: Some(key),
        name: name.into(),
        role: v1::Role::Operator as i32,
        owner: owner.into(),
        validity: None,
    }
}

#[tokio::test]
async fn operator_certificates_round_trip_through_a_csr() {
    use v1::issue_operator_certificate_request::Key;
    let f = fixture().await;
    let admin = f.caller("ada", "acme", Role::Admin);
    let key = rcgen::KeyPair::generate().expect("key");
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .expect("CSR");
    let issued = f
        .svc
        .issue_operator_certificate_as(
            &admin,
            issue_request("alice@acme", "", Key::CsrPem(csr.pem().expect("PEM"))),
        )
        .await
        .expect("issue");
    assert_eq!(
        (issued.name.as_str(), issued.owner.as_str(), issued.role),
        ("alice@acme", "acme", v1::Role::Operator as i32)
    );
    let der = pem::parse(&issued.certificate_pem)
        .expect("PEM")
        .into_contents();
    let alice = Caller::from_certificate_der(&der).expect("operator certificate");
    assert_eq!(
        (alice.name.as_str(), alice.owner.as_str()),
        ("alice@acme", "acme")
    );
    assert_eq!(alice.role, Role::Operator);
    assert_eq!(alice.serial.to_string(), issued.serial);
    let days = (alice.not_after - OffsetDateTime::now_utc()).whole_days();
    assert!((89..=90).contains(&days), "{days}");
    // The new operator can work at once.
    assert!(OperatorService::who_am_i_as(&alice).name == "alice@acme");

    // Same key as DER CSR, as a bare SEC1 key, and as a SubjectPublicKeyInfo.
    let by_der = issue_request("bob", "acme", Key::CsrDer(csr.der().to_vec()));
    assert!(
        f.svc
            .issue_operator_certificate_as(&admin, by_der)
            .await
            .is_ok()
    );
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    let by_spki = issue_request("carl", "acme", Key::PublicKey(spki));
    assert!(
        f.svc
            .issue_operator_certificate_as(&admin, by_spki)
            .await
            .is_ok()
    );
    let sec1 = issue_request(
        "dan",
        "acme",
        Key::PublicKey(rcgen::PublicKeyData::der_bytes(&key).to_vec()),
    );
    assert!(
        f.svc
            .issue_operator_certificate_as(&admin, sec1)
            .await
            .is_ok()
    );

    // Refusals.
    let mut tampered = csr.der().to_vec();
    let last = tampered.len() - 3;
    tampered[last] ^= 1;
    let cases = [
        issue_request("eve", "acme", Key::CsrDer(tampered)),
        issue_request("eve", "acme", Key::CsrDer(b"junk".to_vec())),
        issue_request("bad name!", "acme", Key::CsrDer(csr.der().to_vec())),
        issue_request("eve", "acme", Key::PublicKey(vec![4; 65])),
        v1::IssueOperatorCertificateRequest {
            validity: Some(prost_types::Duration {
                seconds: 400 * 86_400,
                nanos: 0,
            }),
            ..issue_request("eve", "acme", Key::CsrDer(csr.der().to_vec()))
        },
        v1::IssueOperatorCertificateRequest {
            role: v1::Role::Unspecified as i32,
            ..issue_request("eve", "acme", Key::CsrDer(csr.der().to_vec()))
        },
    ];
    for case in cases {
        let result = f.svc.issue_operator_certificate_as(&admin, case).await;
        assert!(is_invalid(&result), "{result:?}");
    }
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
    let p384_csr = rcgen::CertificateParams::default()
        .serialize_request(&p384)
        .expect("CSR");
    let result = f
        .svc
        .issue_operator_certificate_as(
            &admin,
            issue_request("eve", "acme", Key::CsrDer(p384_csr.der().to_vec())),
        )
        .await;
    assert!(is_invalid(&result), "{result:?}");

    // Owners: own only for owner-scoped admins; any (including "*") for platform admins.
    let der_key = || Key::CsrDer(csr.der().to_vec());
    for owner in ["globex", "*"] {
        let result = f
            .svc
            .issue_operator_certificate_as(&admin, issue_request("eve", owner, der_key()))
            .await;
        assert!(is_denied(&result), "{owner}: {result:?}");
    }
    let platform = f.caller("root", "*", Role::Admin);
    let missing_owner = issue_request("eve", "", der_key());
    assert!(is_invalid(
        &f.svc
            .issue_operator_certificate_as(&platform, missing_owner)
            .await
    ));
    let platform_operator = f
        .svc
        .issue_operator_certificate_as(&platform, issue_request("ops", "*", der_key()))
        .await
        .expect("issue");
    assert_eq!(platform_operator.owner, "*");
    let issued = f
        .audit_actions()
        .await
        .into_iter()
        .filter(|(a, _, _)| a == "operator.issue")
        .count();
    assert_eq!(issued, 5);
}

async fn next_message(stream: &mut super::WatchStream) -> Option<v1::watch_batch_response::Event> {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a message within 5 s")
        .map(|m| m.expect("message").event.expect("event"))
}

#[tokio::test]
async fn watch_batch_reports_progress_and_events_until_settled() {
    use v1::watch_batch_response::Event;
    let f = fixture().await;
    let admin = f.caller("ada", "acme", Role::Admin);
    let auditor = f.caller("aud", "acme", Role::Auditor);
    f.policy(&admin, "", "p1").await;
    let batch_id = f.batch(&admin, "", "p1", &[device_id(1)]).await;
    let mut stream = f
        .svc
        .watch_batch_as(
            &auditor,
            &v1::WatchBatchRequest {
                batch_id: batch_id.clone(),
                device_events: true,
                until_settled: true,
            },
        )
        .await
        .expect("watch");
    let Some(Event::Progress(first)) = next_message(&mut stream).await else {
        panic!("the first message is a progress snapshot");
    };
    assert_eq!(first.counts.expect("counts").total, 1);

    f.import(
        &admin,
        vec![header(&batch_id), chunk(vec![by_id(0, &device_id(2))])],
    )
    .await
    .expect("import");
    let mut added = false;
    let mut total = 0;
    while !(added && total == 2) {
        match next_message(&mut stream).await.expect("open") {
            Event::Device(event) => {
                assert_eq!(event.kind, v1::DeviceEventKind::Added as i32);
                // The registry publishes a commit's events just after answering it, so the
                // batch's own creation may still arrive: events are at least once.
                added |= event.device_id == device_id(2);
            }
            Event::Progress(progress) => total = progress.counts.expect("counts").total,
        }
    }
    for n in [1, 2] {
        let revoke = v1::RevokeDeviceRequest {
            device_id: device_id(n),
            ..v1::RevokeDeviceRequest::default()
        };
        f.svc
            .revoke_device_as(&admin, &revoke)
            .await
            .expect("revoke");
    }
    // Everything revoked: nothing waits any more, so the stream ends.
    let mut revoked_events = 0;
    while let Some(event) = next_message(&mut stream).await {
        match event {
            Event::Device(event) if event.kind == v1::DeviceEventKind::Revoked as i32 => {
                revoked_events += 1;
            }
            Event::Device(_) => {}
            Event::Progress(progress) => {
                let counts = progress.counts.expect("counts");
                assert!(counts.revoked <= 2);
            }
        }
    }
    assert_eq!(revoked_events, 2);
}

#[tokio::test]
async fn ten_thousand_device_import() {
    let f = fixture().await;
    let admin = f.caller("ada", "acme", Role::Admin);
    f.policy(&admin, "", "p1").await;
    let batch_id = f.batch(&admin, "", "p1", &[]).await;
    let mut messages = vec![header(&batch_id)];
    for c in 0..10 {
        messages.push(chunk(
            (0..1000)
                .map(|n| by_id(0, &device_id(c * 1000 + n)))
                .collect(),
        ));
    }
    let start = Instant::now();
    let response = f.import(&admin, messages).await.expect("import");
    let elapsed = start.elapsed();
    eprintln!("imported 10,000 devices in {elapsed:?}");
    let report = response.report.expect("report");
    assert_eq!((report.accepted, report.rejected), (10_000, 0));
    let counts = f.counts(&batch_id).await;
    assert_eq!(
        (counts.total, counts.awaiting_registration),
        (10_000, 10_000)
    );
    let listed = f
        .svc
        .list_devices_as(
            &admin,
            &v1::ListDevicesRequest {
                batch_id,
                state: v1::DeviceState::AwaitingRegistration as i32,
                page_size: 5000,
                ..v1::ListDevicesRequest::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(listed.devices.len(), 1000);
    assert!(!listed.next_page_token.is_empty());
    assert_eq!(
        v1::DeviceState::from(DeviceState::AwaitingRegistration) as i32,
        listed.devices[0].state
    );
}

#[tokio::test]
async fn control_and_invisible_characters_are_refused_where_text_enters() {
    let f = fixture().await;
    let admin = f.caller("ada", "acme", Role::Admin);
    f.policy(&admin, "", "p1").await;
    let field_of = |error: ServiceError| match error {
        ServiceError::InvalidArgument { field, .. } => field,
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    };
    for (name, description) in [
        ("line\u{1b}[2J", ""),
        ("gnp.\u{202E}exe", ""),
        ("ok", "beep\u{7}"),
        ("ok", "over\rwrite"),
    ] {
        let request = v1::CreateBatchRequest {
            policy_name: "p1".into(),
            name: name.into(),
            description: description.into(),
            ..v1::CreateBatchRequest::default()
        };
        let error = f.svc.create_batch_as(&admin, request).await.unwrap_err();
        let field = field_of(error);
        assert!(field == "name" || field == "description", "{field}");
    }
    let mut policy = policy_request("", "p2");
    if let Some(p) = &mut policy.policy {
        p.description = "nul\0inside".into();
    }
    let error = f.svc.create_policy_as(&admin, policy).await.unwrap_err();
    assert_eq!(field_of(error), "policy.description");
    // Nothing of the refused requests was stored.
    let batches = f
        .svc
        .list_batches_as(&admin, &v1::ListBatchesRequest::default())
        .await
        .expect("list");
    assert!(batches.batches.is_empty());
}
