//! `GET /devices/{id}/evidence`: everything on record about one device, in one JSON download.
//!
//! ```text
//!  { format, exported_at, exported_by (WhoAmI),
//!    registration {device_id, epk_hex, registered_at, context},
//!    batch, policy,                            (GetBatch, GetPolicy; null if none)
//!    certificates [{serial, state, …, certificate_pem}],
//!    firmware_history [{serial, issued_at, key_slot, measurement}],  (oldest first; measurement
//!                                              null for a certificate of the DPK)
//!    firmware_updates [FirmwareUpdate],        (the device's rollout reports, oldest first)
//!    device,                                   (GetDevice, the whole record)
//!    audit {available, entries [AuditEntry + record_text, prev_hash_hex, hash_hex]},
//!    verification {ok, summary, local {…}, service (VerifyAudit), service_last_hash_matches} }
//! ```
//!
//! Messages are in the proto3 JSON mapping `--json` uses ([`crate::output::json`]), so a
//! reader of one reads the other. The verification is twofold: this console rechecks every
//! listed entry's hash and the links between consecutive ones ([`crate::audit_chain`]), and
//! the service verifies the whole log over the range from the first to the last listed entry;
//! the hash it reports for the last entry must be the one listed, which ties the device's
//! entries to the complete chain. Audit entries are for auditors and admins: an operator's
//! export says that they were not available and why.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use oxroot_proto::v1::{
    AuditEntry, Batch, Device, GetBatchRequest, GetPolicyRequest, Policy, VerifyAuditRequest,
    VerifyAuditResponse,
};
use serde_json::{Value, json};

use super::devices::get_device;
use super::page::PageError;
use super::{Console, SharedConsole, audit};
use crate::audit_chain::{ChainCheck, check_entries};
use crate::output::{json as proto_json, timestamp_text, to_timestamp};

/// The most audit entries one export carries.
const MAX_ENTRIES: usize = 10_000;
/// Names this document's layout.
pub(crate) const FORMAT: &str = "oxroot.device-evidence.v1";

/// `GET /devices/{id}/evidence`.
pub(crate) async fn download(
    State(console): State<SharedConsole>,
    Path(device_id): Path<String>,
) -> Result<Response, PageError> {
    let device = get_device(&console, &device_id).await?;
    let batch = batch_of(&console, &device).await?;
    let policy = policy_of(&console, &device, batch.as_ref()).await?;
    let audit = if console.can_read_audit() {
        let entries = audit::entries_about(
            &console,
            &format!("device:{}", device.device_id),
            MAX_ENTRIES,
        )
        .await?;
        let service = verify_range(&console, &entries).await?;
        Audit::Read { entries, service }
    } else {
        Audit::NotForRole
    };
    let document = evidence(&console, &device, batch.as_ref(), policy.as_ref(), &audit)?;
    let name = format!(
        "attachment; filename=\"device-{}-evidence.json\"",
        device
            .device_id
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(16)
            .collect::<String>()
    );
    let body = serde_json::to_vec_pretty(&document)
        .map_err(|e| PageError::Internal(format!("writing the evidence: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::CONTENT_DISPOSITION, name),
        ],
        body,
    )
        .into_response())
}

/// What the export could learn from the audit log.
enum Audit {
    /// The entries, and the service's verification of their range (none without entries).
    Read {
        entries: Vec<AuditEntry>,
        service: Option<VerifyAuditResponse>,
    },
    /// The operator's role may not read the log.
    NotForRole,
}

async fn batch_of(console: &Console, device: &Device) -> Result<Option<Batch>, PageError> {
    if device.batch_id.is_empty() {
        return Ok(None);
    }
    let response = console
        .client()
        .get_batch(GetBatchRequest {
            batch_id: device.batch_id.clone(),
        })
        .await
        .map_err(PageError::rpc("GetBatch"))?;
    Ok(response.into_inner().batch)
}

/// The batch's policy, or the current certificate's for a device in no batch.
async fn policy_of(
    console: &Console,
    device: &Device,
    batch: Option<&Batch>,
) -> Result<Option<Policy>, PageError> {
    let name = batch.map(|b| b.policy_name.clone()).or_else(|| {
        device
            .current_credential
            .as_ref()
            .map(|c| c.policy_name.clone())
    });
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    let response = console
        .client()
        .get_policy(GetPolicyRequest {
            owner: device.owner.clone(),
            name,
        })
        .await
        .map_err(PageError::rpc("GetPolicy"))?;
    Ok(response.into_inner().policy)
}

/// VerifyAudit from the first to the last listed entry.
async fn verify_range(
    console: &Console,
    entries: &[AuditEntry],
) -> Result<Option<VerifyAuditResponse>, PageError> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Ok(None);
    };
    let response = console
        .client()
        .verify_audit(VerifyAuditRequest {
            start_seq: first.seq,
            end_seq: last.seq,
        })
        .await
        .map_err(PageError::rpc("VerifyAudit"))?;
    Ok(Some(response.into_inner()))
}

fn mapped<M: prost::Message + prost::Name>(message: &M) -> Result<Value, PageError> {
    proto_json::message(message).map_err(|e| PageError::Internal(e.to_string()))
}

/// The evidence document.
fn evidence(
    console: &Console,
    device: &Device,
    batch: Option<&Batch>,
    policy: Option<&Policy>,
    audit: &Audit,
) -> Result<Value, PageError> {
    let certificates: Vec<Value> = device
        .credential_history
        .iter()
        .map(mapped)
        .collect::<Result<_, _>>()?;
    let registration = json!({
        "device_id": device.device_id,
        "epk_hex": hex::encode(&device.epk),
        "registered_at": timestamp_text(device.registered_at.as_ref()),
        "context": device.registration_context.as_ref().map(mapped).transpose()?,
    });
    let (audit_json, verification) = match audit {
        Audit::NotForRole => (
            json!({
                "available": false,
                "unavailable_because": "QueryAudit and VerifyAudit are for auditors and admins; \
                    this export was made by an operator of another role",
            }),
            json!({
                "ok": Value::Null,
                "summary": "not verified: the audit log is not available to this role",
            }),
        ),
        Audit::Read { entries, service } => {
            let listed: Vec<Value> = entries.iter().map(entry_json).collect::<Result<_, _>>()?;
            let local = check_entries(entries);
            (
                json!({ "available": true, "entries": listed }),
                verification_json(&local, entries.last(), service.as_ref())?,
            )
        }
    };
    Ok(json!({
        "format": FORMAT,
        "exported_at": timestamp_text(Some(&to_timestamp(time::OffsetDateTime::now_utc()))),
        "exported_by": mapped(&console.me)?,
        "registration": registration,
        "batch": batch.map(mapped).transpose()?,
        "policy": policy.map(mapped).transpose()?,
        "certificates": certificates,
        "firmware_history": firmware_history(device),
        "firmware_updates": device
            .firmware_updates
            .iter()
            .map(mapped)
            .collect::<Result<Vec<_>, _>>()?,
        "device": mapped(device)?,
        "audit": audit_json,
        "verification": verification,
    }))
}

/// The firmware the device ran, as its certificates record it: each certificate, oldest first,
/// with the measurement its key was bound to (null: it certified the DPK, no firmware proved).
fn firmware_history(device: &Device) -> Value {
    device
        .credential_history
        .iter()
        .rev()
        .map(|credential| {
            json!({
                "serial": credential.serial,
                "issued_at": timestamp_text(credential.issued_at.as_ref()),
                "key_slot": credential.key_slot,
                "measurement": (!credential.firmware_measurement.is_empty())
                    .then_some(credential.firmware_measurement.as_str()),
            })
        })
        .collect()
}

/// An entry in the mapping, plus its record as text and its hashes in hex for reading.
fn entry_json(entry: &AuditEntry) -> Result<Value, PageError> {
    let mut value = mapped(entry)?;
    value["record_text"] = String::from_utf8_lossy(&entry.record).into();
    value["prev_hash_hex"] = hex::encode(&entry.prev_hash).into();
    value["hash_hex"] = hex::encode(&entry.hash).into();
    Ok(value)
}

/// Both checks and one verdict.
fn verification_json(
    local: &ChainCheck,
    last: Option<&AuditEntry>,
    service: Option<&VerifyAuditResponse>,
) -> Result<Value, PageError> {
    let anchored = match (last, service) {
        (Some(last), Some(service)) => Some(service.last_hash == last.hash),
        _ => None,
    };
    let service_ok = service.map(|s| s.ok);
    let ok = local.ok() && service_ok.unwrap_or(true) && anchored.unwrap_or(true);
    let summary = match (ok, last) {
        (_, None) => "no audit entries about this device".to_owned(),
        (true, Some(_)) => format!(
            "ok: {} entries rehashed here ({} consecutive links), the service verified the log \
             over their range, and its hash of the last entry is the one listed",
            local.checked, local.links_checked
        ),
        (false, Some(_)) => {
            "FAILED: see local.problems, service and service_last_hash_matches".into()
        }
    };
    let problems: Vec<Value> = local
        .problems
        .iter()
        .map(|p| json!({ "seq": p.seq.to_string(), "problem": p.problem }))
        .collect();
    Ok(json!({
        "ok": ok,
        "summary": summary,
        "local": {
            "ok": local.ok(),
            "rule": "hash = SHA-256(prev_hash || record); prev_hash = the previous entry's hash",
            "entries_checked": local.checked,
            "links_checked": local.links_checked,
            "problems": problems,
        },
        "service": service.map(mapped).transpose()?,
        "service_last_hash_matches": anchored,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit_chain::ChainProblem;

    #[test]
    fn the_firmware_history_lists_each_certificates_measurement_oldest_first() {
        use oxroot_proto::v1::CredentialSummary;
        let credential = |serial: &str, measurement: &str| CredentialSummary {
            serial: serial.into(),
            key_slot: 1,
            firmware_measurement: measurement.into(),
            ..CredentialSummary::default()
        };
        let device = Device {
            // Newest first, as GetDevice sends it.
            credential_history: vec![
                credential("03", &"bb".repeat(32)),
                credential("02", &"aa".repeat(32)),
                credential("01", ""),
            ],
            ..Device::default()
        };
        let history = firmware_history(&device);
        assert_eq!(history[0]["serial"], "01");
        assert_eq!(history[0]["measurement"], Value::Null);
        assert_eq!(history[1]["measurement"], "aa".repeat(32));
        assert_eq!(history[2]["serial"], "03");
        assert_eq!(history[2]["measurement"], "bb".repeat(32));
    }

    #[test]
    fn the_verdict_needs_both_checks_and_the_anchor() {
        let last = AuditEntry {
            seq: 9,
            hash: vec![7; 32],
            ..AuditEntry::default()
        };
        let service = VerifyAuditResponse {
            ok: true,
            last_hash: vec![7; 32],
            ..VerifyAuditResponse::default()
        };
        let clean = ChainCheck {
            checked: 1,
            ..ChainCheck::default()
        };
        let good = verification_json(&clean, Some(&last), Some(&service)).expect("json");
        assert_eq!(good["ok"], true, "{good}");
        assert_eq!(good["service_last_hash_matches"], true);
        let moved = VerifyAuditResponse {
            last_hash: vec![8; 32],
            ..service.clone()
        };
        let unanchored = verification_json(&clean, Some(&last), Some(&moved)).expect("json");
        assert_eq!(unanchored["ok"], false, "{unanchored}");
        let broken = ChainCheck {
            problems: vec![ChainProblem {
                seq: 9,
                problem: "hash mismatch".into(),
            }],
            ..clean
        };
        let local_failure = verification_json(&broken, Some(&last), Some(&service)).expect("json");
        assert_eq!(local_failure["ok"], false);
        assert_eq!(local_failure["local"]["problems"][0]["seq"], "9");
    }
}
