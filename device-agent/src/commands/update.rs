//! `update`: check a signed firmware release and install it into the inactive slot (see
//! [`crate::firmware`]).
//!
//! - `--release DIR` needs no silicon and no service: the release carries its own proof,
//!   checked against the owner root the device pinned when it onboarded.
//! - With the service (`--service`), the device first reports an update it installed before
//!   (now that it runs), then asks which release a rollout offers it (CheckFirmware), checks and
//!   installs it, and reports (ReportFirmware): at once when it refuses the release or already
//!   runs it, after the reboot (the next `update`) when it installed it. Both requests are
//!   signed by the credential's device key, like `status`.
//!
//! ```text
//!  owed report? ─▶ measure what runs ─▶ ReportFirmware(installed = runs the image installed)
//!  CheckFirmware ─▶ no offer: done
//!               ─▶ offer ─▶ checks ─▶ refused: ReportFirmware(failed, reason), exit 3
//!                                  ─▶ already runs it: ReportFirmware(installed)
//!                                  ─▶ installed: owe the report; reboot, renew, `update` again
//! ```

use std::path::Path;

use oxroot_client::device::{self, FirmwareReport, HeldCredential};
use oxroot_client::release::Release;
use oxroot_proto::v1;
use rot_core::FirmwareMeasurement;

use super::{exchange_error, key_slot, open_chip, service};
use crate::chip::SiliconChip;
use crate::cli::{ServiceArgs, SiliconArgs};
use crate::error::AgentError;
use crate::firmware::{PendingReport, Slot, Slots, Update};
use crate::report::{Console, Report};
use crate::service::{Retry, ServiceTarget};
use crate::state::StateDir;

/// Most characters of a failure reason sent to the service (its limit).
const MAX_REASON_CHARS: usize = 200;

/// `update --release DIR`.
pub(super) fn from_release(
    state: &StateDir,
    release_dir: &Path,
    console: &mut Console<'_>,
) -> Result<(), AgentError> {
    // The credential holds the trust anchor (the owner's root) and the policy a release must
    // name; a device that never onboarded trusts no firmware signer yet.
    let credential = state.require_credential()?;
    let release = Release::read(release_dir).map_err(|e| AgentError::File {
        path: e.path,
        problem: e.source.to_string(),
    })?;
    let update = Slots::of(state).install(&release, &credential)?;
    installed_report(&update).print(console)
}

/// `update --service URL`.
pub(super) async fn from_service(
    state: &StateDir,
    silicon: &SiliconArgs,
    service_args: &ServiceArgs,
    console: &mut Console<'_>,
) -> Result<(), AgentError> {
    let credential = state.require_credential()?;
    let held = HeldCredential {
        serial: credential.serial.clone(),
        key_slot: key_slot(credential.key_slot)?,
    };
    let (target, retry) = service(service_args)?;
    let chip = open_chip(state, silicon)?;
    let slots = Slots::of(state);
    let remote = Remote {
        target: &target,
        retry,
        chip: &chip,
        held: &held,
    };
    let mut report = Report::new("update");

    if let Some(pending) = slots.pending_report()? {
        let running = running_measurement(&chip)?;
        let installed = running.to_string() == pending.measurement;
        let reason = if installed {
            String::new()
        } else {
            format!(
                "the firmware that runs ({running}) is not the image installed ({}): the boot \
                 fell back",
                pending.measurement
            )
        };
        let outcome = match remote
            .report(console, &pending.rollout_id, installed, running, reason)
            .await
        {
            Ok(()) if installed => "installed",
            Ok(()) => "failed",
            // The service no longer knows the rollout as this device's (the device moved to
            // another owner or batch): the report is dropped, not retried at every boot.
            Err(AgentError::Rejected(text)) if text.starts_with("NotFound") => "dropped",
            Err(e) => return Err(e),
        };
        slots.report_sent()?;
        report = report
            .field("reported_rollout", pending.rollout_id)
            .field("reported", outcome);
    }

    let Some(offer) = remote.check(console).await? else {
        return report.field("offer", "none").print(console);
    };
    report = report
        .field("rollout", offer.rollout_id.clone())
        .field("offered", format!("{} {}", offer.name, offer.version));
    match slots.install(&Release::of_offer(&offer), &credential) {
        Ok(update) if update.changed => {
            slots.owe_report(&PendingReport {
                rollout_id: offer.rollout_id.clone(),
                measurement: update.installed.measurement.clone(),
            })?;
            installed_report(&update)
                .prepend(report)
                .field(
                    "report",
                    "owed: sent by the next `update`, once the new firmware runs",
                )
                .print(console)
        }
        Ok(update) => {
            let running = running_measurement(&chip)?;
            remote
                .report(console, &offer.rollout_id, true, running, String::new())
                .await?;
            installed_report(&update)
                .prepend(report)
                .field("report", "sent: installed")
                .print(console)
        }
        Err(refusal) => {
            // The device says why, then fails: an operator sees the reason in the rollout's
            // failures and the audit log; the caller sees the exit code.
            let reason: String = refusal.to_string().chars().take(MAX_REASON_CHARS).collect();
            let running = running_measurement(&chip)?;
            remote
                .report(console, &offer.rollout_id, false, running, reason)
                .await?;
            Err(refusal)
        }
    }
}

/// The service, as `update` reaches it.
struct Remote<'a> {
    target: &'a ServiceTarget,
    retry: Retry,
    chip: &'a SiliconChip,
    held: &'a HeldCredential,
}

impl Remote<'_> {
    async fn check(
        &self,
        console: &mut Console<'_>,
    ) -> Result<Option<v1::FirmwareOffer>, AgentError> {
        self.retry
            .run(self.target, console.err, async |client| {
                device::check_firmware(client, self.chip, Some(self.held))
                    .await
                    .map_err(|e| exchange_error(e, self.target))
            })
            .await
    }

    async fn report(
        &self,
        console: &mut Console<'_>,
        rollout_id: &str,
        installed: bool,
        running: FirmwareMeasurement,
        reason: String,
    ) -> Result<(), AgentError> {
        let report = FirmwareReport {
            rollout_id: rollout_id.to_owned(),
            installed,
            running,
            reason,
        };
        let sent = self
            .retry
            .run(self.target, console.err, async |client| {
                device::report_firmware(client, self.chip, Some(self.held), &report)
                    .await
                    .map_err(|e| exchange_error(e, self.target))
            })
            .await;
        match sent {
            // Sent before, and its answer lost: the service has it.
            Err(AgentError::Rejected(text)) if text.starts_with("AlreadyExists") => Ok(()),
            other => other,
        }
    }
}

/// What runs now: the active slot, or the image `--firmware` names; zeros when the device
/// proves no firmware.
fn running_measurement(chip: &SiliconChip) -> Result<FirmwareMeasurement, AgentError> {
    Ok(chip
        .measure_firmware()?
        .unwrap_or(FirmwareMeasurement::from_digest([0; 32])))
}

fn installed_report(update: &Update) -> Report {
    Report::new(if update.changed {
        "installed"
    } else {
        "already running"
    })
    .field("name", update.installed.name.clone())
    .field("version", update.installed.version.clone())
    .field("security_counter", update.installed.security_counter)
    .field("measurement", update.installed.measurement.clone())
    .field(
        "slot",
        match update.slot {
            Slot::A => "a",
            Slot::B => "b",
        },
    )
    .field(
        "next",
        if update.changed {
            "reboot, then renew: the certificate of the firmware that ran before no longer \
             matches"
        } else {
            "nothing: this release is the firmware that runs"
        },
    )
}
