//! The compiled contract is what the `.proto` files say: the descriptor set
//! decodes, both services carry the expected methods with the right
//! streaming shapes, and stream envelopes survive an encode/decode round trip.
#![allow(clippy::expect_used, reason = "a failed expect is a failed test")]

use oxroot_proto::FILE_DESCRIPTOR_SET;
use oxroot_proto::v1::{self, onboard_request, onboard_response};
use prost::Message as _;
use prost_types::{FileDescriptorSet, ServiceDescriptorProto};

/// (method, client streaming, server streaming)
type Shape = (&'static str, bool, bool);

const DEVICE_METHODS: &[Shape] = &[
    ("Register", false, false),
    ("Onboard", true, true),
    ("Renew", true, true),
    ("Status", false, false),
    ("CheckFirmware", false, false),
    ("ReportFirmware", false, false),
];

const OPERATOR_METHODS: &[Shape] = &[
    ("WhoAmI", false, false),
    ("CreatePolicy", false, false),
    ("GetPolicy", false, false),
    ("ListPolicies", false, false),
    ("CreateBatch", false, false),
    ("ImportDevices", true, false),
    ("GetBatch", false, false),
    ("ListBatches", false, false),
    ("WatchBatch", false, true),
    ("ListDevices", false, false),
    ("GetDevice", false, false),
    ("RevokeDevice", false, false),
    ("TransferDevice", false, false),
    ("ExportArtifacts", false, false),
    ("GetCrl", false, false),
    ("WatchCrls", false, true),
    ("QueryAudit", false, false),
    ("VerifyAudit", false, false),
    ("IssueOperatorCertificate", false, false),
    ("RevokeOperatorCertificate", false, false),
    ("ListOperatorCertificates", false, false),
    ("CreateOwner", false, false),
    ("GetOwner", false, false),
    ("ListOwners", false, false),
    ("ImportOwnerCa", false, false),
    ("RotateOwnerCa", false, false),
    ("SignFirmware", false, false),
    ("GetFirmware", false, false),
    ("ListFirmware", false, false),
    ("CreateRollout", false, false),
    ("GetRollout", false, false),
    ("ListRollouts", false, false),
    ("UpdateRollout", false, false),
];

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
}

fn service(fds: &FileDescriptorSet, name: &str) -> ServiceDescriptorProto {
    fds.file
        .iter()
        .filter(|file| file.package() == "oxroot.v1")
        .flat_map(|file| file.service.iter())
        .find(|service| service.name() == name)
        .unwrap_or_else(|| panic!("service oxroot.v1.{name} is missing"))
        .clone()
}

fn assert_shapes(service: &ServiceDescriptorProto, expected: &[Shape]) {
    let actual: Vec<Shape> = service
        .method
        .iter()
        .map(|m| {
            let name = expected
                .iter()
                .map(|(n, _, _)| *n)
                .find(|n| *n == m.name())
                .unwrap_or_else(|| panic!("unexpected method {}.{}", service.name(), m.name()));
            (name, m.client_streaming(), m.server_streaming())
        })
        .collect();
    assert_eq!(actual, expected, "methods of {}", service.name());
}

#[test]
fn descriptor_set_holds_the_contract_and_its_imports() {
    let fds = descriptor_set();
    let names: Vec<&str> = fds
        .file
        .iter()
        .map(prost_types::FileDescriptorProto::name)
        .collect();
    for file in [
        "oxroot/v1/common.proto",
        "oxroot/v1/device.proto",
        "oxroot/v1/operator.proto",
        "google/protobuf/timestamp.proto",
        "google/protobuf/duration.proto",
    ] {
        assert!(names.contains(&file), "{file} missing from {names:?}");
    }
    // Comments are kept: they are the API reference that reflection tools show.
    let device = fds
        .file
        .iter()
        .find(|f| f.name() == "oxroot/v1/device.proto")
        .expect("device.proto present");
    assert!(device.source_code_info.is_some(), "source info kept");
}

#[test]
fn device_service_methods_and_streaming() {
    let fds = descriptor_set();
    let device = service(&fds, "DeviceEnrollment");
    assert_shapes(&device, DEVICE_METHODS);
    let onboard = device
        .method
        .iter()
        .find(|m| m.name() == "Onboard")
        .expect("Onboard");
    assert_eq!(onboard.input_type(), ".oxroot.v1.OnboardRequest");
    assert_eq!(onboard.output_type(), ".oxroot.v1.OnboardResponse");
}

#[test]
fn operator_service_methods_and_streaming() {
    let fds = descriptor_set();
    assert_shapes(&service(&fds, "Operator"), OPERATOR_METHODS);
}

#[test]
fn generated_service_names_match_the_descriptor() {
    assert_eq!(
        v1::device_enrollment_server::SERVICE_NAME,
        "oxroot.v1.DeviceEnrollment"
    );
    assert_eq!(v1::operator_server::SERVICE_NAME, "oxroot.v1.Operator");
}

#[test]
fn onboard_envelopes_round_trip() {
    let hello = v1::OnboardRequest {
        msg: Some(onboard_request::Msg::Hello(v1::Hello {
            device_id: "ab".repeat(32),
            epk: [&[0x04_u8][..], &[0x11; 64]].concat(),
        })),
    };
    let proof = v1::OnboardRequest {
        msg: Some(onboard_request::Msg::Proof(v1::Proof {
            challenge_id: vec![0x22; 16],
            esk_signature: vec![0x33; 64],
            dpk: [&[0x04_u8][..], &[0x44; 64]].concat(),
            dpk_signature: vec![0x55; 64],
            key_slot: 1,
            firmware: None,
        })),
    };
    for request in [hello, proof] {
        let bytes = request.encode_to_vec();
        assert_eq!(
            v1::OnboardRequest::decode(bytes.as_slice()).expect("decodes"),
            request
        );
    }

    let challenge = v1::OnboardResponse {
        msg: Some(onboard_response::Msg::Challenge(v1::Challenge {
            challenge_id: vec![0x22; 16],
            nonce: vec![0x66; 32],
            expires_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_060,
                nanos: 0,
            }),
            expires_in: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
            key_slot: 1,
        })),
    };
    let credentials = v1::OnboardResponse {
        msg: Some(onboard_response::Msg::Credentials(v1::CredentialBundle {
            device_id: "ab".repeat(32),
            serial: "0a1b2c".into(),
            certificate_pem: "-----BEGIN CERTIFICATE-----\n…".into(),
            intermediate_pems: vec!["-----BEGIN CERTIFICATE-----\n…".into()],
            policy_kind: v1::PolicyKind::Mosquitto.into(),
            key_slot: 1,
            endpoint: Some(v1::credential_bundle::Endpoint::Mosquitto(
                v1::MosquittoEndpoint {
                    host: "broker.example".into(),
                    port: 8883,
                    topic_prefix: format!("devices/{}/", "ab".repeat(32)),
                    client_id: "ab".repeat(32),
                    ..Default::default()
                },
            )),
            ..Default::default()
        })),
    };
    let refusal = v1::OnboardResponse {
        msg: Some(onboard_response::Msg::Refusal(v1::Refusal {
            reason: v1::RefusalReason::ProofRejected.into(),
            message: "proof rejected".into(),
            reference: "c0ffee".into(),
            ..Default::default()
        })),
    };
    for response in [challenge, credentials, refusal] {
        let bytes = response.encode_to_vec();
        let decoded = v1::OnboardResponse::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(decoded, response);
    }
}

#[test]
fn unknown_enum_values_decode_as_raw_numbers() {
    // Additive evolution: a newer server may send a refusal reason this
    // client does not know; it must still decode.
    let refusal = v1::Refusal {
        reason: 999,
        ..Default::default()
    };
    let decoded = v1::Refusal::decode(refusal.encode_to_vec().as_slice()).expect("decodes");
    assert_eq!(decoded.reason, 999);
    assert!(v1::RefusalReason::try_from(decoded.reason).is_err());
}
