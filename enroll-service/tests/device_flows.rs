//! The device-facing service end to end over TLS on loopback: onboarding, idempotency,
//! renewal, and every refusal path, each checked for its audited precise reason.
#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    clippy::too_many_lines,
    reason = "scenario tests read top to bottom; a failed unwrap is a failed test"
)]

mod common;

use std::time::Duration;

use common::{Harness, bundle, fleet, refusal, register, seed_batch};
use enroll_service::fleet::{EmulatedDevice, HeldCredential, Outcome};
use enroll_service::service::ServiceConfig;
use oxroot_proto::v1;
use oxroot_proto::v1::device_enrollment_client::DeviceEnrollmentClient;
use rot_core::attestation::ChallengeKind;
use rot_core::keys::KeySlot;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// An Onboard stream opened by hand, so tests can tamper with the proof.
struct OpenExchange {
    tx: mpsc::Sender<v1::OnboardRequest>,
    responses: tonic::Streaming<v1::OnboardResponse>,
    challenge: v1::Challenge,
}

async fn open(
    client: &mut DeviceEnrollmentClient<Channel>,
    device: &EmulatedDevice,
) -> OpenExchange {
    let (tx, rx) = mpsc::channel(2);
    tx.send(v1::OnboardRequest {
        msg: Some(v1::onboard_request::Msg::Hello(v1::Hello {
            device_id: device.device_id().to_string(),
            epk: device.epk().as_bytes().to_vec(),
        })),
    })
    .await
    .unwrap();
    let mut responses = client
        .onboard(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let challenge = match responses.message().await.unwrap().unwrap().msg.unwrap() {
        v1::onboard_response::Msg::Challenge(c) => c,
        other => panic!("expected a challenge, got {other:?}"),
    };
    OpenExchange {
        tx,
        responses,
        challenge,
    }
}

impl OpenExchange {
    async fn prove(mut self, proof: v1::Proof) -> Outcome {
        self.tx
            .send(v1::OnboardRequest {
                msg: Some(v1::onboard_request::Msg::Proof(proof)),
            })
            .await
            .unwrap();
        match self
            .responses
            .message()
            .await
            .unwrap()
            .unwrap()
            .msg
            .unwrap()
        {
            v1::onboard_response::Msg::Credentials(c) => Outcome::Credentials(Box::new(c)),
            v1::onboard_response::Msg::Refusal(r) => Outcome::Refused(r),
            v1::onboard_response::Msg::Challenge(_) => panic!("second challenge"),
        }
    }
}

/// Onboards, retrying while the service has not yet released the peer's previous stream slot
/// (it does so when it sees the stream end, a moment after the client drops it).
async fn onboard_when_slot_free(
    client: &mut DeviceEnrollmentClient<Channel>,
    device: &EmulatedDevice,
) -> Outcome {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match device.onboard(client).await {
            Err(enroll_service::fleet::FleetError::Rpc(status))
                if status.code() == tonic::Code::ResourceExhausted
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other.unwrap(),
        }
    }
}

/// The precise detail audited for a refusal.
/// Opens an Onboard stream with one message and returns the status the stream ends with.
async fn status_after_one_message(
    client: &mut DeviceEnrollmentClient<Channel>,
    msg: v1::onboard_request::Msg,
) -> tonic::Status {
    let (tx, rx) = mpsc::channel(1);
    tx.send(v1::OnboardRequest { msg: Some(msg) })
        .await
        .unwrap();
    let mut responses = client
        .onboard(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    responses.message().await.unwrap_err()
}

async fn audited_detail(harness: &Harness, refusal: &v1::Refusal) -> String {
    let entries = harness.audit_for(&refusal.reference).await;
    let entry = entries
        .iter()
        .find(|e| e.action == "device.refuse")
        .unwrap_or_else(|| panic!("no audit entry for {}", refusal.reference));
    assert_eq!(entry.outcome, "refused");
    entry.details["refusal_detail"].clone()
}

#[tokio::test]
async fn onboarding_issues_a_certificate_for_the_proved_key_and_is_idempotent() {
    let harness = Harness::start().await;
    let devices = fleet(2, 1);
    let mut client = harness.device_client().await;
    for device in &devices {
        register(&mut client, device).await;
    }
    seed_batch(&harness, "acme", "b1", &devices.iter().collect::<Vec<_>>()).await;

    let first = devices[0].onboard(&mut client).await.unwrap();
    let issued = bundle(&first);
    assert_eq!(issued.device_id, devices[0].device_id().to_string());
    assert_eq!(issued.key_slot, 1);
    assert_eq!(issued.policy_kind(), v1::PolicyKind::Mosquitto);
    assert_eq!(issued.intermediate_pems.len(), 1);
    // The certificate certifies the DPK of slot 1, under CN = DeviceId.
    let der = pem::parse(&issued.certificate_pem).unwrap().into_contents();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let dpk = devices[0]
        .device_public_key(rot_core::keys::KeySlot::FIRST)
        .unwrap();
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        dpk.as_bytes()
    );
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap();
    assert_eq!(cn, devices[0].device_id().to_string());

    // A dropped stream retried: the same credential, not a second one.
    let again = devices[0].onboard(&mut client).await.unwrap();
    assert_eq!(bundle(&again).serial, issued.serial);
    assert_eq!(harness.registry().credential_count().await.unwrap(), 1);

    let other = devices[1].onboard(&mut client).await.unwrap();
    assert_ne!(bundle(&other).serial, issued.serial);

    let batch = harness.registry().batch("b1").await.unwrap().unwrap();
    assert_eq!(batch.counts.onboarded, 2);
    assert_eq!(batch.counts.total, 2);

    let held = HeldCredential {
        serial: issued.serial.clone(),
        key_slot: KeySlot::FIRST,
    };
    let status = devices[0].status(&mut client, Some(&held)).await.unwrap();
    assert_eq!(status.status(), v1::DeviceStatus::Enrolled);
    // A serial the service never issued to the device: its device-key proof names no key on
    // record, so the client signs again with the enrolment key, and hears that the serial is
    // not its current credential.
    let unknown = HeldCredential {
        serial: "abc".into(),
        ..held
    };
    let stale = devices[0]
        .status(&mut client, Some(&unknown))
        .await
        .unwrap();
    assert_eq!(stale.status(), v1::DeviceStatus::PolicyChanged);
}

#[tokio::test]
async fn unregistered_unassigned_and_mismatched_devices_are_refused() {
    let harness = Harness::start().await;
    let devices = fleet(3, 2);
    let mut client = harness.device_client().await;

    let outcome = devices[0].onboard(&mut client).await.unwrap();
    let r = refusal(&outcome);
    assert_eq!(r.reason(), v1::RefusalReason::UnknownDevice);
    assert_eq!(audited_detail(&harness, r).await, "unregistered");

    register(&mut client, &devices[1]).await;
    let outcome = devices[1].onboard(&mut client).await.unwrap();
    let r = refusal(&outcome);
    assert_eq!(r.reason(), v1::RefusalReason::NotProvisioned);
    assert_eq!(audited_detail(&harness, r).await, "not_in_batch");
    let status = devices[1].status(&mut client, None).await.unwrap();
    assert_eq!(status.status(), v1::DeviceStatus::NotOnboarded);
    assert!(!status.onboarding_ready);

    // A Hello whose EPK does not hash to the claimed DeviceId.
    let (tx, rx) = mpsc::channel(1);
    tx.send(v1::OnboardRequest {
        msg: Some(v1::onboard_request::Msg::Hello(v1::Hello {
            device_id: devices[1].device_id().to_string(),
            epk: devices[2].epk().as_bytes().to_vec(),
        })),
    })
    .await
    .unwrap();
    let mut responses = client
        .onboard(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let v1::onboard_response::Msg::Refusal(r) =
        responses.message().await.unwrap().unwrap().msg.unwrap()
    else {
        panic!("expected a refusal");
    };
    assert_eq!(r.reason(), v1::RefusalReason::UnknownDevice);
    assert_eq!(audited_detail(&harness, &r).await, "device_id_mismatch");
    // Devices are told nothing precise.
    assert!(!r.message.contains("mismatch"));
    // Someone else's EPK proves nothing about devices[1]: its record is not touched.
    let record = harness
        .registry()
        .device(devices[1].device_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record.refusals, 1,
        "only its own NOT_PROVISIONED refusal counts"
    );
}

#[tokio::test]
async fn register_checks_the_claimed_hash_the_signature_and_sizes() {
    let harness = Harness::start().await;
    let devices = fleet(2, 3);
    let mut client = harness.device_client().await;

    let mut request = devices[0].registration(b"").unwrap();
    request.claimed_device_id = devices[1].device_id().to_string();
    let status = client.register(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().starts_with("claimed_device_id:"),
        "{}",
        status.message()
    );
    assert!(
        harness
            .registry()
            .device(devices[0].device_id())
            .await
            .unwrap()
            .is_none()
    );

    let mut request = devices[0].registration(b"ctx").unwrap();
    request.proof_context = b"other".to_vec();
    let status = client.register(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    let mut request = devices[0].registration(b"").unwrap();
    request.epk.truncate(33);
    let status = client.register(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().starts_with("epk:"));

    // Larger than the 16 KiB device message limit.
    let mut request = devices[0].registration(b"").unwrap();
    request.context = Some(v1::RegistrationContext {
        site: "x".repeat(20 * 1024),
        ..Default::default()
    });
    let status = client.register(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");

    // Registration is idempotent and keeps the first record.
    let first = client
        .register(devices[0].registration(b"a").unwrap())
        .await
        .unwrap()
        .into_inner();
    assert!(first.newly_registered);
    let second = client
        .register(devices[0].registration(b"b").unwrap())
        .await
        .unwrap()
        .into_inner();
    assert!(!second.newly_registered);
    assert_eq!(first.registered_at, second.registered_at);
}

#[tokio::test]
async fn tampered_replayed_and_foreign_proofs_are_refused() {
    let harness = Harness::start().await;
    let devices = fleet(2, 4);
    let mut client = harness.device_client().await;
    for device in &devices {
        register(&mut client, device).await;
    }
    seed_batch(&harness, "acme", "b1", &devices.iter().collect::<Vec<_>>()).await;
    let device = &devices[0];

    // Wrong ESK signature.
    let exchange = open(&mut client, device).await;
    let mut proof = device
        .answer(ChallengeKind::Onboarding, &exchange.challenge)
        .unwrap();
    proof.esk_signature[5] ^= 1;
    let outcome = exchange.prove(proof).await;
    let r = refusal(&outcome);
    assert_eq!(r.reason(), v1::RefusalReason::ProofRejected);
    assert_eq!(audited_detail(&harness, r).await, "bad_esk_signature");

    // Wrong DSK signature.
    let exchange = open(&mut client, device).await;
    let mut proof = device
        .answer(ChallengeKind::Onboarding, &exchange.challenge)
        .unwrap();
    proof.dpk_signature[40] ^= 0x80;
    let outcome = exchange.prove(proof).await;
    assert_eq!(
        audited_detail(&harness, refusal(&outcome)).await,
        "bad_dsk_signature"
    );

    // A proof for the renewal purpose does not answer an onboarding challenge.
    let exchange = open(&mut client, device).await;
    let proof = device
        .answer(ChallengeKind::Renewal, &exchange.challenge)
        .unwrap();
    let outcome = exchange.prove(proof).await;
    assert_eq!(
        audited_detail(&harness, refusal(&outcome)).await,
        "bad_esk_signature"
    );

    // Another device's proof (its own, valid, challenge) on this device's stream.
    let theirs = open(&mut client, &devices[1]).await;
    let mine = open(&mut client, device).await;
    let foreign = devices[1]
        .answer(ChallengeKind::Onboarding, &theirs.challenge)
        .unwrap();
    let outcome = mine.prove(foreign).await;
    assert_eq!(
        audited_detail(&harness, refusal(&outcome)).await,
        "nonce_foreign"
    );
    drop(theirs);

    // A valid proof, used once, then replayed on a new stream.
    let exchange = open(&mut client, device).await;
    let proof = device
        .answer(ChallengeKind::Onboarding, &exchange.challenge)
        .unwrap();
    let outcome = exchange.prove(proof.clone()).await;
    let serial = bundle(&outcome).serial.clone();
    let replay = open(&mut client, device).await;
    let outcome = replay.prove(proof).await;
    let r = refusal(&outcome);
    assert_eq!(r.reason(), v1::RefusalReason::ProofRejected);
    assert_eq!(audited_detail(&harness, r).await, "nonce_replayed");

    // Slot mismatch.
    let exchange = open(&mut client, device).await;
    let mut proof = device
        .answer(ChallengeKind::Onboarding, &exchange.challenge)
        .unwrap();
    proof.key_slot = 2;
    let outcome = exchange.prove(proof).await;
    assert_eq!(
        audited_detail(&harness, refusal(&outcome)).await,
        "slot_mismatch"
    );

    // Refusals never disturbed the issued credential; they are counted on the batch.
    let record = harness
        .registry()
        .device(device.device_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record.current_serial.map(|s| s.to_string()).as_deref(),
        Some(serial.as_str())
    );
    assert_eq!(record.refusals, 6);
    assert_eq!(
        harness
            .registry()
            .batch("b1")
            .await
            .unwrap()
            .unwrap()
            .counts
            .refusals,
        6
    );
}

#[tokio::test]
async fn an_expired_challenge_is_refused() {
    let harness = Harness::start_with(ServiceConfig {
        challenge_ttl: Duration::from_millis(300),
        ..ServiceConfig::default()
    })
    .await;
    let devices = fleet(1, 5);
    let mut client = harness.device_client().await;
    register(&mut client, &devices[0]).await;
    seed_batch(&harness, "acme", "b1", &[&devices[0]]).await;

    // The service refuses on its own when no proof arrives in time.
    let mut exchange = open(&mut client, &devices[0]).await;
    let message = exchange
        .responses
        .message()
        .await
        .unwrap()
        .unwrap()
        .msg
        .unwrap();
    let v1::onboard_response::Msg::Refusal(r) = message else {
        panic!("expected a refusal");
    };
    assert_eq!(r.reason(), v1::RefusalReason::ChallengeExpired);
    assert_eq!(audited_detail(&harness, &r).await, "nonce_expired");
    assert!(exchange.tx.capacity() > 0);
}

#[tokio::test]
async fn renewal_rotates_slots_and_refuses_devices_never_onboarded() {
    let harness = Harness::start().await;
    let devices = fleet(2, 6);
    let mut client = harness.device_client().await;
    for device in &devices {
        register(&mut client, device).await;
    }
    seed_batch(&harness, "acme", "b1", &devices.iter().collect::<Vec<_>>()).await;

    let outcome = devices[1].renew(&mut client, 0).await.unwrap();
    let r = refusal(&outcome);
    assert_eq!(r.reason(), v1::RefusalReason::NotOnboarded);

    let first = devices[0].onboard(&mut client).await.unwrap();
    let first = bundle(&first).clone();
    // Not due, same slot: the current credential comes back unchanged.
    let same = devices[0].renew(&mut client, 0).await.unwrap();
    assert_eq!(bundle(&same).serial, first.serial);
    // Rotation to slot 2: a new certificate for the slot-2 key.
    let rotated = devices[0].renew(&mut client, 2).await.unwrap();
    let rotated = bundle(&rotated).clone();
    assert_ne!(rotated.serial, first.serial);
    assert_eq!(rotated.key_slot, 2);
    // Retried after a dropped stream: no second rotation.
    let retried = devices[0].renew(&mut client, 2).await.unwrap();
    assert_eq!(bundle(&retried).serial, rotated.serial);
    // The old certificate is superseded, not revoked.
    let old = harness
        .registry()
        .credential(first.serial.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        old.status,
        enroll_service::model::CredentialStatus::Superseded
    );
    assert!(
        harness
            .registry()
            .revoked(&harness.issuer("acme").await)
            .await
            .unwrap()
            .is_empty()
    );
    // Slot 8 does not exist.
    let outcome = devices[0].renew(&mut client, 8).await.unwrap();
    assert_eq!(
        refusal(&outcome).reason(),
        v1::RefusalReason::KeySlotUnavailable
    );
}

#[tokio::test]
async fn out_of_order_messages_fail_the_stream() {
    let harness = Harness::start().await;
    let devices = fleet(1, 7);
    let mut client = harness.device_client().await;
    let status = status_after_one_message(
        &mut client,
        v1::onboard_request::Msg::Proof(v1::Proof::default()),
    )
    .await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    drop(devices);
}

#[tokio::test]
async fn an_oversized_stream_message_is_out_of_range() {
    let harness = Harness::start().await;
    let devices = fleet(1, 8);
    let mut client = harness.device_client().await;
    let status = status_after_one_message(
        &mut client,
        v1::onboard_request::Msg::Hello(v1::Hello {
            device_id: devices[0].device_id().to_string(),
            epk: vec![4; 20 * 1024],
        }),
    )
    .await;
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
}

#[tokio::test]
async fn a_revocation_missing_from_the_crl_is_signed_in_on_the_next_read() {
    use enroll_service::model::CrlEntryRecord;
    use enroll_service::pki::RevocationReason;
    use enroll_service::store::{Change, Op, commit};
    let harness = Harness::start().await;
    let issuer = enroll_service::service::PLATFORM_ISSUER;
    let first = harness.core.crls().current(issuer).await.unwrap();
    assert_eq!(first.revoked_count, 0);
    // A revocation committed without its re-signing (as after a failure between the two).
    let mut change = Change::new();
    change.op(Op::Revoke {
        issuer: issuer.into(),
        serial: "1234abcd".parse().unwrap(),
        entry: CrlEntryRecord {
            revoked_at: time::OffsetDateTime::now_utc(),
            reason: RevocationReason::KeyCompromise,
        },
    });
    commit(harness.registry(), change).await.unwrap();
    let next = harness.core.crls().current(issuer).await.unwrap();
    assert_eq!(next.revoked_count, 1);
    assert!(next.number > first.number);
}

#[tokio::test]
async fn streams_per_peer_and_challenges_per_device_are_bounded() {
    let harness = Harness::start_with(ServiceConfig {
        max_streams_per_peer: 1,
        challenges_per_window: 2,
        ..ServiceConfig::default()
    })
    .await;
    let devices = fleet(1, 9);
    let mut client = harness.device_client().await;
    register(&mut client, &devices[0]).await;
    seed_batch(&harness, "acme", "b1", &[&devices[0]]).await;

    // One stream held open at its challenge: a second one from the same address is refused.
    let held = open(&mut client, &devices[0]).await;
    let (tx, rx) = mpsc::channel::<v1::OnboardRequest>(1);
    let status = match client.onboard(ReceiverStream::new(rx)).await {
        Err(status) => status,
        Ok(response) => response.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("too many concurrent streams"),
        "{status:?}"
    );
    drop(tx);
    drop(held);

    // The device already used one challenge: the second is allowed (and onboards), the third
    // is refused with a retry_after.
    let outcome = onboard_when_slot_free(&mut client, &devices[0]).await;
    assert!(outcome.credentials().is_some(), "{outcome:?}");
    let outcome = onboard_when_slot_free(&mut client, &devices[0]).await;
    let r = refusal(&outcome);
    assert_eq!(r.reason(), v1::RefusalReason::RateLimited);
    assert!(
        r.retry_after.as_ref().is_some_and(|d| d.seconds > 0),
        "{r:?}"
    );
    assert_eq!(audited_detail(&harness, r).await, "rate_limited");
}

/// Anyone can invent DeviceIds: refusals of IDs the registry has no record of are audited only
/// within their address's budget. Beyond it they are still refused, without a reference and
/// without an audit entry, and counted in a metric; refusals of known devices are always
/// audited.
#[tokio::test]
async fn refusals_of_invented_device_ids_are_audited_within_a_budget_per_address() {
    let harness = Harness::start_with(ServiceConfig {
        audited_unknown_refusals_per_peer: 3,
        ..ServiceConfig::default()
    })
    .await;
    let invented = fleet(5, 41);
    let mut client = harness.device_client().await;
    let mut references = Vec::new();
    for device in &invented {
        let outcome = device.onboard(&mut client).await.unwrap();
        let r = refusal(&outcome);
        assert_eq!(r.reason(), v1::RefusalReason::UnknownDevice);
        references.push(r.reference.clone());
    }
    for reference in &references[..3] {
        assert!(!reference.is_empty());
        assert_eq!(harness.audit_for(reference).await.len(), 1);
    }
    assert_eq!(references[3..], [String::new(), String::new()]);
    let refusals_audited = harness
        .registry()
        .audit(1, 10_000)
        .await
        .unwrap()
        .iter()
        .filter(|(_, e)| e.decode().unwrap().action == "device.refuse")
        .count();
    assert_eq!(refusals_audited, 3);
    let metrics = harness.core.metrics().render();
    assert!(
        metrics.contains("oxroot_device_refusals_unaudited_total 2"),
        "{metrics}"
    );

    // A registered device from the same address is still audited.
    let known = fleet(1, 42);
    register(&mut client, &known[0]).await;
    let outcome = known[0].onboard(&mut client).await.unwrap();
    assert_eq!(
        audited_detail(&harness, refusal(&outcome)).await,
        "not_in_batch"
    );
}

/// A codec that sends bytes as they are: a body no protobuf decoder accepts.
#[derive(Clone, Copy, Default)]
struct RawBytes;

impl tonic::codec::Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> Self::Encoder {
        RawBytes
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawBytes
    }
}

impl tonic::codec::Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

#[tokio::test]
async fn a_request_that_does_not_decode_is_invalid_argument() {
    let harness = Harness::start().await;
    let mut grpc = tonic::client::Grpc::new(harness.channel().await);
    // Field 1, length-delimited, claiming 127 bytes that never come.
    let garbage = vec![0x0a, 0x7f, 0x01];
    grpc.ready().await.unwrap();
    let status = grpc
        .unary(
            tonic::Request::new(garbage.clone()),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/oxroot.v1.DeviceEnrollment/Register",
            ),
            RawBytes,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("oxroot.v1.RegisterRequest"),
        "{status:?}"
    );
    // In a stream too: the Onboard stream ends with INVALID_ARGUMENT, not INTERNAL.
    grpc.ready().await.unwrap();
    let outcome = grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(vec![garbage])),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/oxroot.v1.DeviceEnrollment/Onboard",
            ),
            RawBytes,
        )
        .await;
    let status = match outcome {
        Err(status) => status,
        Ok(response) => response.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
}

#[tokio::test]
async fn registration_metadata_with_control_characters_is_refused() {
    let harness = Harness::start().await;
    let mut client = harness.device_client().await;
    let device = &fleet(1, 44)[0];
    for (site, label) in [("hall\u{1b}]0;pwned\u{7}", "x"), ("hall", "\u{202E}gnp")] {
        let mut request = device.registration(b"station-1").unwrap();
        request.context = Some(v1::RegistrationContext {
            site: site.into(),
            labels: [("line".to_owned(), label.to_owned())].into(),
            ..Default::default()
        });
        let status = client.register(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("context."), "{status:?}");
    }
    // The device was not registered by either attempt.
    assert!(
        harness
            .registry()
            .device(device.device_id())
            .await
            .unwrap()
            .is_none()
    );
}
