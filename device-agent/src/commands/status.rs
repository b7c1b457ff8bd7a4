//! `status`: what the state directory holds and, with `--service`, what the service says the
//! device should do next. The local part needs no silicon: everything in the state directory
//! is public. The service tells a device its status only when the request is signed (see
//! `oxroot_client::device::status`): by the device key of the credential it holds, which also
//! shows the service that the device has moved to that credential, or by the enrolment key
//! before it holds one.

use oxroot_client::device::{self, HeldCredential};
use oxroot_proto::v1;
use rot_core::attestation::StatusSigner;

use super::{exchange_error, key_slot, open_chip, service};
use crate::cli::{ServiceArgs, SiliconArgs};
use crate::credential::timestamp;
use crate::error::AgentError;
use crate::firmware::Slots;
use crate::lockout::{Lockout, MAX_CONSECUTIVE_FAILURES};
use crate::report::{Console, Report};
use crate::state::StateDir;

pub(super) async fn status(
    state: &StateDir,
    silicon: &SiliconArgs,
    service_args: &ServiceArgs,
    console: &mut Console<'_>,
) -> Result<(), AgentError> {
    // Validates the helper data too: a corrupted file is worth knowing about before the next
    // command needs it.
    state.helper_data()?;
    let identity = state.identity()?.ok_or_else(|| AgentError::CorruptState {
        path: state.path(crate::state::IDENTITY),
        problem: "missing; re-run `device-agent id` to check the silicon, or re-enrol".to_owned(),
    })?;
    let credential = state.credential()?;
    let previous = state.previous_credential()?;
    let failures = Lockout::new(state).failures()?;
    let mut report = Report::new("status")
        .field("device_id", identity.device_id.clone())
        .field("enrolled_at", identity.enrolled_at.clone())
        .field(
            "lockout",
            format!("{failures} of {MAX_CONSECUTIVE_FAILURES} consecutive reconstruction failures"),
        );
    report = match &credential {
        Some(current) => report
            .field("serial", current.serial.clone())
            .field("key_slot", current.key_slot)
            .field("policy_kind", current.endpoint.kind())
            .field("policy_name", current.policy_name.clone())
            .field("not_after", current.not_after.clone())
            .field("renew_after", current.renew_after.clone()),
        None => report.field("credential", "none (run `device-agent onboard`)"),
    };
    report = report.field("previous_serial", previous.map(|p| p.serial));
    // What `update` installed: the firmware that runs, and the anti-rollback floor.
    let boot = Slots::of(state).boot_record()?;
    let running = boot.active.and_then(|slot| boot.slot(slot).cloned());
    report = match running {
        Some(installed) => report
            .field(
                "firmware",
                format!("{} {}", installed.name, installed.version),
            )
            .field("firmware_measurement", installed.measurement)
            .field("firmware_security_counter", boot.security_counter),
        None => report.field("firmware", "none installed by `device-agent update`"),
    };
    report = report.field(
        "credential_firmware",
        credential
            .as_ref()
            .and_then(|c| c.firmware_measurement.clone()),
    );

    if service_args.service.is_some() || service_args.ca.is_some() {
        let (target, retry) = service(service_args)?;
        let held = match &credential {
            Some(current) => Some(HeldCredential {
                serial: current.serial.clone(),
                key_slot: key_slot(current.key_slot)?,
            }),
            None => None,
        };
        let chip = open_chip(state, silicon)?;
        let signed = retry
            .run(&target, console.err, async |client| {
                device::status(client, &chip, held.as_ref())
                    .await
                    .map_err(|e| exchange_error(e, &target))
            })
            .await?;
        let answer = signed.response;
        let name = answer
            .status()
            .as_str_name()
            .trim_start_matches("DEVICE_STATUS_")
            .to_owned();
        let signed_with = match signed.signed_by {
            Some(StatusSigner::DeviceKey(slot)) => format!("device key, slot {}", slot.get()),
            Some(StatusSigner::EnrolmentKey) => "enrolment key".to_owned(),
            None => "nothing (the service did not ask for a proof)".to_owned(),
        };
        report = report
            .field("service_status", name)
            .field("signed_with", signed_with)
            .field("next_step", next_step(&answer))
            .field("service_serial", non_empty(&answer.serial))
            .field(
                "next_check_after",
                answer
                    .next_check_after
                    .as_ref()
                    .map(timestamp)
                    .transpose()?,
            );
    }
    report.print(console)
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// The contract's advice per status, in the agent's commands.
fn next_step(answer: &v1::StatusResponse) -> &'static str {
    match answer.status() {
        v1::DeviceStatus::NotRegistered => "register (device-agent register)",
        v1::DeviceStatus::NotOnboarded if answer.onboarding_ready => {
            "onboard (device-agent onboard)"
        }
        v1::DeviceStatus::NotOnboarded => "wait for an operator to add the device to a batch",
        v1::DeviceStatus::Enrolled => "nothing: the credential is current",
        v1::DeviceStatus::RenewalDue => "renew (device-agent renew)",
        v1::DeviceStatus::PolicyChanged => "onboard again (device-agent onboard)",
        v1::DeviceStatus::Revoked => "stop: the device is revoked; do not use its credentials",
        v1::DeviceStatus::ProofRequired => "the service wants a signed request; retry",
        v1::DeviceStatus::Unspecified => "unknown status; ask the operator",
    }
}
