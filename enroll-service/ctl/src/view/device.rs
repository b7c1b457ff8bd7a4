//! `device list | get | revoke | transfer`.

use std::io;

use oxroot_proto::v1::Device;

use super::{by, slot};
use crate::output::{
    Fields, Human, Table, credential_state_name, reason_name, state_name, timestamp_text,
};

/// `device get`: the device, then its credential history and its firmware updates when the
/// service sent them.
pub(crate) fn get(out: &mut Human<'_>, device: &Device) -> io::Result<()> {
    out.fields(&fields(device))?;
    if let Some(history) = history(device) {
        out.blank()?;
        out.table(&history)?;
    }
    if let Some(updates) = updates(device) {
        out.blank()?;
        out.table(&updates)?;
    }
    Ok(())
}

/// A device's record.
pub(crate) fn fields(device: &Device) -> Fields {
    let mut fields = Fields::new()
        .field("device", &device.device_id)
        .field("state", state_name(device.state))
        .field("owner", &device.owner)
        .field("batch", &device.batch_id)
        .field("key slot", slot(device.key_slot))
        .field("registered", timestamp_text(device.registered_at.as_ref()))
        .field("onboarded", timestamp_text(device.onboarded_at.as_ref()))
        .field("last seen", timestamp_text(device.last_seen.as_ref()))
        .field("refusals", device.refusals.to_string())
        .field("epk", hex::encode(&device.epk));
    if let Some(context) = &device.registration_context {
        let mut labels: Vec<_> = context
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        fields = fields
            .field("site", &context.site)
            .field("station", &context.station)
            .field("firmware version", &context.firmware_version)
            .field("labels", labels.join(", "));
    }
    if let Some(credential) = &device.current_credential {
        fields = fields.field(
            "credential",
            format!(
                "serial {}, {}, until {}",
                credential.serial,
                credential_state_name(credential.state),
                timestamp_text(credential.not_after.as_ref())
            ),
        );
        if !credential.firmware_measurement.is_empty() {
            // The measurement its key is bound to (TcbInfo), as sha256sum prints it.
            fields = fields.field("bound to firmware", &credential.firmware_measurement);
        }
    }
    if let Some(revocation) = &device.revocation {
        fields = fields
            .field(
                "revoked",
                by(
                    timestamp_text(revocation.revoked_at.as_ref()),
                    &revocation.revoked_by,
                ),
            )
            .field("reason", reason_name(revocation.reason))
            .field("comment", &revocation.comment);
    }
    fields
}

/// The credential history, if the service sent one.
fn history(device: &Device) -> Option<Table> {
    (!device.credential_history.is_empty()).then(|| {
        let mut table = Table::new(&[
            "SERIAL",
            "STATE",
            "SLOT",
            "POLICY",
            "ISSUED",
            "NOT_AFTER",
            "FIRMWARE",
        ]);
        for credential in &device.credential_history {
            table.row(vec![
                credential.serial.clone(),
                credential_state_name(credential.state),
                credential.key_slot.to_string(),
                credential.policy_name.clone(),
                timestamp_text(credential.issued_at.as_ref()),
                timestamp_text(credential.not_after.as_ref()),
                firmware_text(&credential.firmware_measurement),
            ]);
        }
        table
    })
}

/// What the device reported of its owner's rollouts, if anything. The reason is the device's
/// text, escaped like every cell.
fn updates(device: &Device) -> Option<Table> {
    (!device.firmware_updates.is_empty()).then(|| {
        let mut table = Table::new(&[
            "ROLLOUT", "FIRMWARE", "OUTCOME", "RUNNING", "REPORTED", "REASON",
        ]);
        for update in &device.firmware_updates {
            table.row(vec![
                update.rollout_id.clone(),
                format!("{} {}", update.firmware_name, update.firmware_version),
                if update.installed {
                    "installed"
                } else {
                    "failed"
                }
                .to_owned(),
                firmware_text(&update.running_measurement),
                timestamp_text(update.reported_at.as_ref()),
                update.reason.clone(),
            ]);
        }
        table
    })
}

/// A credential's firmware binding in a table cell: the measurement's first 12 hex characters
/// (enough to tell images apart; `device get` shows it whole), or "-" for a DPK credential.
fn firmware_text(measurement: &str) -> String {
    if measurement.is_empty() {
        "-".to_owned()
    } else {
        measurement.chars().take(12).collect()
    }
}

/// Devices, one per row.
pub(crate) fn table(devices: &[Device]) -> Table {
    let mut table = Table::new(&["DEVICE", "STATE", "OWNER", "BATCH", "SLOT", "LAST_SEEN"]);
    for device in devices {
        table.row(vec![
            device.device_id.clone(),
            state_name(device.state),
            device.owner.clone(),
            device.batch_id.clone(),
            slot(device.key_slot),
            timestamp_text(device.last_seen.as_ref()),
        ]);
    }
    table
}

/// `device revoke`: the device and the serials the revocation put on the CRL.
pub(crate) fn revoked(
    out: &mut Human<'_>,
    device: &Device,
    revoked_serials: &[String],
) -> io::Result<()> {
    let reason = device
        .revocation
        .as_ref()
        .map_or_else(String::new, |r| format!(" ({})", reason_name(r.reason)));
    out.line(&format!("revoked {}{reason}", device.device_id))?;
    serials(out, revoked_serials)
}

/// `device transfer`: where the device is now, and the serials the move revoked.
pub(crate) fn transferred(
    out: &mut Human<'_>,
    device: &Device,
    revoked_serials: &[String],
) -> io::Result<()> {
    let batch = if device.batch_id.is_empty() {
        "no batch (unassigned)".to_owned()
    } else {
        format!("batch {}", device.batch_id)
    };
    out.line(&format!(
        "moved {} to owner {}, {batch}; now {}",
        device.device_id,
        device.owner,
        state_name(device.state)
    ))?;
    serials(out, revoked_serials)
}

/// The serials a state change put on the CRL: those are what an operator must also remove
/// from AWS or Azure, which the service does not call.
fn serials(out: &mut Human<'_>, revoked_serials: &[String]) -> io::Result<()> {
    if revoked_serials.is_empty() {
        out.line("no certificate revoked by this call")
    } else {
        out.line(&format!(
            "revoked serials (now on the CRL; remove them from the cloud too): {}",
            revoked_serials.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::testing::{HOSTILE, assert_escaped, human, json_of};
    use oxroot_proto::v1::{
        CredentialSummary, DeviceState, FirmwareUpdate, RegistrationContext, Revocation,
        RevocationReason, RevokeDeviceResponse,
    };

    #[test]
    fn devices_print_their_state_names() {
        let device = Device {
            device_id: "ab".into(),
            state: DeviceState::ReonboardPending as i32,
            epk: vec![4, 1],
            ..Device::default()
        };
        let json = json_of(&device);
        assert_eq!(json["state"], "DEVICE_STATE_REONBOARD_PENDING");
        // Bytes are base64 in the mapping (hex in the human view).
        assert_eq!(json["epk"], "BAE=");
        assert!(json.get("revocation").is_none(), "{json}");
        assert!(history(&device).is_none());
        let text = human(|out| get(out, &device));
        assert!(text.contains("state:     reonboard-pending"), "{text}");
        assert!(text.contains("epk:       0401"), "{text}");
    }

    #[test]
    fn a_hostile_device_is_escaped_for_humans_and_exact_in_json() {
        let device = Device {
            device_id: "ab".into(),
            registration_context: Some(RegistrationContext {
                site: HOSTILE.into(),
                station: HOSTILE.into(),
                firmware_version: HOSTILE.into(),
                labels: [
                    ("line".to_owned(), HOSTILE.to_owned()),
                    (HOSTILE.to_owned(), "key".to_owned()),
                ]
                .into(),
            }),
            credential_history: vec![CredentialSummary {
                serial: "0a".into(),
                policy_name: HOSTILE.into(),
                ..CredentialSummary::default()
            }],
            revocation: Some(Revocation {
                comment: HOSTILE.into(),
                revoked_by: HOSTILE.into(),
                reason: RevocationReason::KeyCompromise as i32,
                revoked_at: None,
            }),
            firmware_updates: vec![FirmwareUpdate {
                rollout_id: "ro-0123456789abcdef".into(),
                reason: HOSTILE.into(),
                ..FirmwareUpdate::default()
            }],
            ..Device::default()
        };
        // site, station, firmware, two labels, revoked by, comment; the history's policy; the
        // device's reason for a failed update.
        assert_escaped(&human(|out| get(out, &device)), 9);
        let json = json_of(&device);
        let context = &json["registration_context"];
        assert_eq!(context["site"], HOSTILE);
        assert_eq!(context["station"], HOSTILE);
        assert_eq!(context["firmware_version"], HOSTILE);
        assert_eq!(context["labels"]["line"], HOSTILE);
        assert_eq!(context["labels"][HOSTILE], "key");
        assert_eq!(json["revocation"]["comment"], HOSTILE);
        assert_eq!(
            json["revocation"]["reason"],
            "REVOCATION_REASON_KEY_COMPROMISE"
        );
    }

    #[test]
    fn hostile_listings_and_revocations_are_escaped() {
        let device = Device {
            device_id: HOSTILE.into(),
            owner: HOSTILE.into(),
            batch_id: HOSTILE.into(),
            ..Device::default()
        };
        assert_escaped(
            &human(|out| out.table(&table(std::slice::from_ref(&device)))),
            3,
        );
        let serials = vec![HOSTILE.to_owned()];
        assert_escaped(&human(|out| revoked(out, &device, &serials)), 2);
        assert_escaped(&human(|out| transferred(out, &device, &serials)), 4);
        let json = json_of(&RevokeDeviceResponse {
            device: Some(device),
            revoked_serials: serials,
        });
        assert_eq!(json["device"]["owner"], HOSTILE);
        assert_eq!(json["revoked_serials"][0], HOSTILE);
    }
}
