//! An import over gRPC that names another owner's device: the importer hears one neutral
//! answer, nothing about that owner or the device, and only the platform's audit log says why.
#![allow(
    clippy::expect_used,
    clippy::missing_panics_doc,
    clippy::too_many_lines,
    reason = "scenario tests read top to bottom; a failed expect is a failed test"
)]

mod common;

use common::{Harness, bundle, fleet, register};
use enroll_service::pki::Role;
use oxroot_proto::v1;
use oxroot_proto::v1::operator_client::OperatorClient;
use tonic::transport::Channel;

async fn import(
    operator: &mut OperatorClient<Channel>,
    batch_id: &str,
    ids: &[String],
) -> v1::ImportReport {
    let messages = vec![
        v1::ImportDevicesRequest {
            msg: Some(v1::import_devices_request::Msg::Header(v1::ImportHeader {
                batch_id: batch_id.into(),
            })),
        },
        v1::ImportDevicesRequest {
            msg: Some(v1::import_devices_request::Msg::Chunk(v1::ImportChunk {
                records: ids
                    .iter()
                    .map(|id| v1::ImportRecord {
                        line: 0,
                        record: Some(v1::import_record::Record::DeviceId(id.clone())),
                    })
                    .collect(),
            })),
        },
    ];
    operator
        .import_devices(tokio_stream::iter(messages))
        .await
        .expect("import")
        .into_inner()
        .report
        .expect("report")
}

async fn batch(operator: &mut OperatorClient<Channel>, ids: &[String]) -> String {
    operator
        .create_policy(v1::CreatePolicyRequest {
            policy: Some(v1::Policy {
                name: "broker".into(),
                params: Some(v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
                    host: "127.0.0.1".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
        })
        .await
        .expect("policy");
    operator
        .create_batch(v1::CreateBatchRequest {
            name: "line 1".into(),
            policy_name: "broker".into(),
            device_ids: ids.to_vec(),
            ..Default::default()
        })
        .await
        .expect("batch")
        .into_inner()
        .batch
        .expect("batch")
        .batch_id
}

/// The audit entries the operator may read (all of them: at most 1,000 here), of `action` if
/// given.
async fn audit(operator: &mut OperatorClient<Channel>, action: &str) -> Vec<v1::AuditEntry> {
    operator
        .query_audit(v1::QueryAuditRequest {
            action: action.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner()
        .entries
}

#[tokio::test]
async fn importing_another_owners_device_tells_nothing_about_it() {
    let harness = Harness::start().await;
    let devices = fleet(2, 0x81);
    let mut client = harness.device_client().await;
    for device in &devices {
        register(&mut client, device).await;
    }
    let ids: Vec<String> = devices.iter().map(|d| d.device_id().to_string()).collect();
    // globex holds an onboarded device and one it listed that never registered.
    let listed_only = "cd".repeat(32);
    let mut globex = harness.operator("gus", "globex", Role::Admin).await;
    batch(&mut globex, &[ids[0].clone(), listed_only.clone()]).await;
    bundle(&devices[0].onboard(&mut client).await.expect("onboard"));

    let mut acme = harness.operator("ada", "acme", Role::Admin).await;
    let target = batch(&mut acme, &[]).await;
    let report = import(
        &mut acme,
        &target,
        &[ids[0].clone(), listed_only.clone(), ids[1].clone()],
    )
    .await;
    // The device nobody holds is added; globex's two get one answer, naming nothing.
    assert_eq!((report.accepted, report.rejected), (1, 2), "{report:?}");
    let (onboarded, listed) = (&report.rejections[0], &report.rejections[1]);
    assert_eq!(onboarded.reason, listed.reason);
    assert_eq!(onboarded.message, listed.message);
    assert_ne!(
        onboarded.reason,
        v1::ImportRejectionReason::OtherOwner as i32
    );
    assert_eq!(onboarded.reason(), v1::ImportRejectionReason::Unavailable);
    for word in ["globex", "owner ", "onboarded", "registered"] {
        assert!(!onboarded.message.contains(word), "{:?}", onboarded.message);
    }

    // acme's auditors read nothing of it; the platform's log has the precise reason.
    let mut acme_auditor = harness.operator("audrey", "acme", Role::Auditor).await;
    let acme_log = audit(&mut acme_auditor, "").await;
    assert!(
        acme_log
            .iter()
            .all(|e| e.action != "batch.import_unavailable")
    );
    assert!(
        acme_log
            .iter()
            .all(|e| !e.details.values().any(|v| v.contains("globex"))),
        "{acme_log:?}"
    );
    let mut platform = harness.operator("root", "*", Role::Admin).await;
    let platform_log = audit(&mut platform, "batch.import_unavailable").await;
    let precise: Vec<_> = platform_log
        .iter()
        .filter(|e| e.action == "batch.import_unavailable")
        .collect();
    assert_eq!(precise.len(), 2, "{platform_log:?}");
    for entry in precise {
        assert_eq!(entry.owner, "*");
        assert_eq!(entry.details["holder"], "globex");
        assert_eq!(entry.details["reason"], "other_owner");
        assert_eq!(entry.details["importing_owner"], "acme");
        assert!(onboarded.message.contains(&entry.correlation_id));
    }
    // globex's device is still globex's, onboarded.
    let held = globex
        .get_device(v1::GetDeviceRequest {
            device_id: ids[0].clone(),
        })
        .await
        .expect("globex's device")
        .into_inner()
        .device
        .expect("device");
    assert_eq!(held.owner, "globex");
    assert_eq!(held.state(), v1::DeviceState::Onboarded);
}
