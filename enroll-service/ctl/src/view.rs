//! How each contract message looks in `--json` and in human output. Pure functions of the
//! messages, so that the formats are unit-tested without a service.

use std::fmt::Write as _;

use oxroot_proto::v1::{
    AuditEntry, Batch, BatchCounts, BatchProgress, CredentialSummary, Device, DeviceEvent,
    ImportRejection, OperatorCertificate, Policy, RegistrationContext, Revocation,
    VerifyAuditResponse, WhoAmIResponse, policy::Params,
};
use serde_json::{Value, json};

use super::import::LocalRejection;
use super::output::{
    Fields, Table, credential_state_name, duration_json, duration_text, event_name, kind_name,
    reason_name, refusal_detail_name, rejection_name, role_name, state_name, timestamp_json,
    timestamp_text,
};

/// `whoami` as JSON.
pub(crate) fn whoami_json(me: &WhoAmIResponse) -> Value {
    json!({
        "name": me.name,
        "owner": me.owner,
        "role": role_name(me.role),
        "certificate_serial": me.certificate_serial,
        "not_after": timestamp_json(me.not_after.as_ref()),
    })
}

/// `whoami` for humans.
pub(crate) fn whoami_fields(me: &WhoAmIResponse) -> Fields {
    let owner = if me.owner == "*" {
        "* (platform)".to_owned()
    } else {
        me.owner.clone()
    };
    Fields::new()
        .field("name", &me.name)
        .field("owner", owner)
        .field("role", role_name(me.role))
        .field("certificate serial", &me.certificate_serial)
        .field("not after", timestamp_text(me.not_after.as_ref()))
}

/// A policy as JSON; the parameters sit under the name of the contract's `params` case.
pub(crate) fn policy_json(policy: &Policy) -> Value {
    let mut value = json!({
        "name": policy.name,
        "owner": policy.owner,
        "kind": kind_name(policy.kind),
        "description": policy.description,
        "certificate_lifetime": duration_json(policy.certificate_lifetime.as_ref()),
        "renew_window": duration_json(policy.renew_window.as_ref()),
        "subject_cn_template": policy.subject_cn_template,
        "created_at": timestamp_json(policy.created_at.as_ref()),
        "created_by": policy.created_by,
    });
    match &policy.params {
        Some(Params::AwsIot(aws)) => {
            value["aws_iot"] = json!({
                "endpoint_host": aws.endpoint_host,
                "port": aws.port,
                "server_root_ca_pem": aws.server_root_ca_pem,
                "thing_name_template": aws.thing_name_template,
                "topic_root": aws.topic_root,
                "aws_region": aws.aws_region,
                "aws_account_id": aws.aws_account_id,
                "alpn_protocols": aws.alpn_protocols,
            });
        }
        Some(Params::AzureDps(azure)) => {
            value["azure_dps"] = json!({
                "id_scope": azure.id_scope,
                "global_endpoint": azure.global_endpoint,
                "port": azure.port,
                "server_root_ca_pem": azure.server_root_ca_pem,
                "enrollment_group_id": azure.enrollment_group_id,
                "iot_hub_host_names": azure.iot_hub_host_names,
            });
        }
        Some(Params::Mosquitto(mosquitto)) => {
            value["mosquitto"] = json!({
                "host": mosquitto.host,
                "port": mosquitto.port,
                "topic_root": mosquitto.topic_root,
                "broker_ca_pem": mosquitto.broker_ca_pem,
            });
        }
        None => {}
    }
    value
}

/// A policy for humans. Defaults the service fills in are shown as such when a server leaves
/// them unset, so that the reader never has to know the contract's defaults.
pub(crate) fn policy_fields(policy: &Policy) -> Fields {
    let mut fields = Fields::new()
        .field("name", &policy.name)
        .field("owner", &policy.owner)
        .field("kind", kind_name(policy.kind))
        .field("description", &policy.description)
        .field(
            "lifetime",
            duration_text(policy.certificate_lifetime.as_ref(), "365d (default)"),
        )
        .field(
            "renew window",
            duration_text(policy.renew_window.as_ref(), "30d (default)"),
        )
        .field(
            "cn template",
            or_default(&policy.subject_cn_template, "{device_id}"),
        );
    match &policy.params {
        Some(Params::AwsIot(aws)) => {
            fields = fields
                .field("endpoint", host_port(&aws.endpoint_host, aws.port))
                .field(
                    "thing name",
                    or_default(&aws.thing_name_template, "{device_id}"),
                )
                .field("topic root", or_default(&aws.topic_root, "devices"))
                .field("region", or_default(&aws.aws_region, "*"))
                .field("account", or_default(&aws.aws_account_id, "*"))
                .field("alpn", aws.alpn_protocols.join(", "))
                .field("server root ca", pem_summary(&aws.server_root_ca_pem));
        }
        Some(Params::AzureDps(azure)) => {
            fields = fields
                .field("id scope", &azure.id_scope)
                .field(
                    "endpoint",
                    host_port(
                        or_default(
                            &azure.global_endpoint,
                            "global.azure-devices-provisioning.net",
                        )
                        .as_str(),
                        azure.port,
                    ),
                )
                .field(
                    "enrollment group",
                    or_default(&azure.enrollment_group_id, &policy.name),
                )
                .field("iot hubs", azure.iot_hub_host_names.join(", "))
                .field("server root ca", pem_summary(&azure.server_root_ca_pem));
        }
        Some(Params::Mosquitto(mosquitto)) => {
            fields = fields
                .field("broker", host_port(&mosquitto.host, mosquitto.port))
                .field("topic root", or_default(&mosquitto.topic_root, "devices"))
                .field(
                    "broker ca",
                    if mosquitto.broker_ca_pem.is_empty() {
                        "the oxroot root (default)".to_owned()
                    } else {
                        pem_summary(&mosquitto.broker_ca_pem)
                    },
                );
        }
        None => {}
    }
    fields.field(
        "created",
        by(
            timestamp_text(policy.created_at.as_ref()),
            &policy.created_by,
        ),
    )
}

/// An operator certificate as JSON.
pub(crate) fn operator_certificate_json(certificate: &OperatorCertificate) -> Value {
    json!({
        "serial": certificate.serial,
        "name": certificate.name,
        "owner": certificate.owner,
        "role": role_name(certificate.role),
        "issued_at": timestamp_json(certificate.issued_at.as_ref()),
        "not_after": timestamp_json(certificate.not_after.as_ref()),
        "issued_by": certificate.issued_by,
        "revocation": certificate.revocation.as_ref().map(revocation_json),
    })
}

/// Operator certificates as a table; STATUS says revoked (with the reason) or valid.
pub(crate) fn operator_certificate_table(certificates: &[OperatorCertificate]) -> Table {
    let mut table = Table::new(&[
        "SERIAL",
        "NAME",
        "OWNER",
        "ROLE",
        "NOT AFTER",
        "ISSUED BY",
        "STATUS",
    ]);
    for certificate in certificates {
        let status = certificate.revocation.as_ref().map_or_else(
            || "valid".to_owned(),
            |r| format!("revoked ({})", reason_name(r.reason)),
        );
        table.row(vec![
            certificate.serial.clone(),
            certificate.name.clone(),
            certificate.owner.clone(),
            role_name(certificate.role),
            timestamp_text(certificate.not_after.as_ref()),
            certificate.issued_by.clone(),
            status,
        ]);
    }
    table
}

/// Policies as a table.
pub(crate) fn policy_table(policies: &[Policy]) -> Table {
    let mut table = Table::new(&["NAME", "OWNER", "KIND", "LIFETIME", "TARGET", "CREATED"]);
    for policy in policies {
        let target = match &policy.params {
            Some(Params::AwsIot(aws)) => host_port(&aws.endpoint_host, aws.port),
            Some(Params::AzureDps(azure)) => azure.id_scope.clone(),
            Some(Params::Mosquitto(mosquitto)) => host_port(&mosquitto.host, mosquitto.port),
            None => String::new(),
        };
        table.row(vec![
            policy.name.clone(),
            policy.owner.clone(),
            kind_name(policy.kind),
            duration_text(policy.certificate_lifetime.as_ref(), "365d"),
            target,
            timestamp_text(policy.created_at.as_ref()),
        ]);
    }
    table
}

/// Batch counts as JSON.
pub(crate) fn counts_json(counts: Option<&BatchCounts>) -> Value {
    let counts = counts.copied().unwrap_or_default();
    json!({
        "total": counts.total,
        "awaiting_registration": counts.awaiting_registration,
        "registered": counts.registered,
        "onboarded": counts.onboarded,
        "reonboard_pending": counts.reonboard_pending,
        "revoked": counts.revoked,
        "refusals": counts.refusals,
    })
}

/// Batch counts on one line.
pub(crate) fn counts_text(counts: Option<&BatchCounts>) -> String {
    let c = counts.copied().unwrap_or_default();
    format!(
        "{} total: {} awaiting registration, {} registered, {} onboarded, {} reonboard pending, \
         {} revoked; {} refusals",
        c.total,
        c.awaiting_registration,
        c.registered,
        c.onboarded,
        c.reonboard_pending,
        c.revoked,
        c.refusals
    )
}

/// A batch as JSON.
pub(crate) fn batch_json(batch: &Batch) -> Value {
    json!({
        "batch_id": batch.batch_id,
        "owner": batch.owner,
        "name": batch.name,
        "policy_name": batch.policy_name,
        "policy_kind": kind_name(batch.policy_kind),
        "description": batch.description,
        "created_at": timestamp_json(batch.created_at.as_ref()),
        "created_by": batch.created_by,
        "counts": counts_json(batch.counts.as_ref()),
    })
}

/// A batch for humans.
pub(crate) fn batch_fields(batch: &Batch) -> Fields {
    Fields::new()
        .field("batch", &batch.batch_id)
        .field("name", &batch.name)
        .field("owner", &batch.owner)
        .field(
            "policy",
            format!("{} ({})", batch.policy_name, kind_name(batch.policy_kind)),
        )
        .field("description", &batch.description)
        .field(
            "created",
            by(timestamp_text(batch.created_at.as_ref()), &batch.created_by),
        )
        .field("devices", counts_text(batch.counts.as_ref()))
}

/// Batches as a table.
pub(crate) fn batch_table(batches: &[Batch]) -> Table {
    let mut table = Table::new(&[
        "BATCH",
        "NAME",
        "OWNER",
        "POLICY",
        "TOTAL",
        "ONBOARDED",
        "REVOKED",
        "CREATED",
    ]);
    for batch in batches {
        let counts = batch.counts.unwrap_or_default();
        table.row(vec![
            batch.batch_id.clone(),
            batch.name.clone(),
            batch.owner.clone(),
            batch.policy_name.clone(),
            counts.total.to_string(),
            counts.onboarded.to_string(),
            counts.revoked.to_string(),
            timestamp_text(batch.created_at.as_ref()),
        ]);
    }
    table
}

/// A device as JSON, credential history included when the service sent it.
pub(crate) fn device_json(device: &Device) -> Value {
    json!({
        "device_id": device.device_id,
        "epk": hex::encode(&device.epk),
        "owner": device.owner,
        "batch_id": device.batch_id,
        "state": state_name(device.state),
        "registration_context": device.registration_context.as_ref().map(context_json),
        "registered_at": timestamp_json(device.registered_at.as_ref()),
        "onboarded_at": timestamp_json(device.onboarded_at.as_ref()),
        "last_seen": timestamp_json(device.last_seen.as_ref()),
        "key_slot": device.key_slot,
        "current_credential": device.current_credential.as_ref().map(credential_json),
        "credential_history": device.credential_history.iter().map(credential_json).collect::<Vec<_>>(),
        "revocation": device.revocation.as_ref().map(revocation_json),
        "refusals": device.refusals,
    })
}

fn context_json(context: &RegistrationContext) -> Value {
    // Sorted, so that the same device prints the same bytes every time.
    let labels: std::collections::BTreeMap<_, _> = context.labels.iter().collect();
    json!({
        "site": context.site,
        "station": context.station,
        "firmware_version": context.firmware_version,
        "labels": labels,
    })
}

fn credential_json(credential: &CredentialSummary) -> Value {
    json!({
        "serial": credential.serial,
        "state": credential_state_name(credential.state),
        "key_slot": credential.key_slot,
        "policy_name": credential.policy_name,
        "policy_kind": kind_name(credential.policy_kind),
        "subject_cn": credential.subject_cn,
        "issued_at": timestamp_json(credential.issued_at.as_ref()),
        "not_before": timestamp_json(credential.not_before.as_ref()),
        "not_after": timestamp_json(credential.not_after.as_ref()),
        "certificate_pem": credential.certificate_pem,
    })
}

fn revocation_json(revocation: &Revocation) -> Value {
    json!({
        "revoked_at": timestamp_json(revocation.revoked_at.as_ref()),
        "reason": reason_name(revocation.reason),
        "comment": revocation.comment,
        "revoked_by": revocation.revoked_by,
    })
}

/// A device for humans; the credential history follows as a table when present.
pub(crate) fn device_fields(device: &Device) -> (Fields, Option<Table>) {
    let mut fields = Fields::new()
        .field("device", &device.device_id)
        .field("state", state_name(device.state))
        .field("owner", &device.owner)
        .field("batch", &device.batch_id)
        .field(
            "key slot",
            if device.key_slot == 0 {
                String::new()
            } else {
                device.key_slot.to_string()
            },
        )
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
            .field("firmware", &context.firmware_version)
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
    let history = (!device.credential_history.is_empty()).then(|| {
        let mut table = Table::new(&["SERIAL", "STATE", "SLOT", "POLICY", "ISSUED", "NOT_AFTER"]);
        for credential in &device.credential_history {
            table.row(vec![
                credential.serial.clone(),
                credential_state_name(credential.state),
                credential.key_slot.to_string(),
                credential.policy_name.clone(),
                timestamp_text(credential.issued_at.as_ref()),
                timestamp_text(credential.not_after.as_ref()),
            ]);
        }
        table
    });
    (fields, history)
}

/// Devices as a table.
pub(crate) fn device_table(devices: &[Device]) -> Table {
    let mut table = Table::new(&["DEVICE", "STATE", "OWNER", "BATCH", "SLOT", "LAST_SEEN"]);
    for device in devices {
        table.row(vec![
            device.device_id.clone(),
            state_name(device.state),
            device.owner.clone(),
            device.batch_id.clone(),
            if device.key_slot == 0 {
                String::new()
            } else {
                device.key_slot.to_string()
            },
            timestamp_text(device.last_seen.as_ref()),
        ]);
    }
    table
}

/// One rejected import record, from either side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RejectionRow {
    pub(crate) line: u64,
    pub(crate) device_id: String,
    pub(crate) reason: String,
    pub(crate) message: String,
    /// `enrollctl` (could not be read) or `service`.
    pub(crate) source: &'static str,
}

/// Local and service rejections in line order; for the same line the local one comes first
/// (it cannot happen today, but the order must not depend on sort stability accidents).
pub(crate) fn merge_rejections(
    local: &[LocalRejection],
    service: &[ImportRejection],
) -> Vec<RejectionRow> {
    let mut rows: Vec<RejectionRow> = local
        .iter()
        .map(|r| RejectionRow {
            line: r.line,
            device_id: r.device_id.clone(),
            reason: rejection_name(r.reason as i32),
            message: r.message.clone(),
            source: "enrollctl",
        })
        .chain(service.iter().map(|r| RejectionRow {
            line: r.line,
            device_id: r.device_id.clone(),
            reason: rejection_name(r.reason),
            message: r.message.clone(),
            source: "service",
        }))
        .collect();
    rows.sort_by_key(|row| (row.line, row.source != "enrollctl"));
    rows
}

/// The outcome of `batch import` or `batch create --devices`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ImportSummary {
    pub(crate) batch_id: String,
    pub(crate) format: &'static str,
    pub(crate) accepted: u64,
    pub(crate) unchanged: u64,
    pub(crate) rejected_by_service: u64,
    pub(crate) rejected_locally: u64,
    pub(crate) rejections: Vec<RejectionRow>,
    pub(crate) truncated: bool,
    pub(crate) counts: Option<BatchCounts>,
}

impl ImportSummary {
    pub(crate) fn rejected(&self) -> u64 {
        self.rejected_by_service + self.rejected_locally
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "batch_id": self.batch_id,
            "format": self.format,
            "accepted": self.accepted,
            "unchanged": self.unchanged,
            "rejected": self.rejected(),
            "rejected_locally": self.rejected_locally,
            "rejections": self.rejections.iter().map(|r| json!({
                "line": r.line,
                "device_id": r.device_id,
                "reason": r.reason,
                "message": r.message,
                "source": r.source,
            })).collect::<Vec<_>>(),
            "rejections_truncated": self.truncated,
            "counts": self.counts.as_ref().map(|c| counts_json(Some(c))),
        })
    }

    pub(crate) fn write(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        writeln!(
            out,
            "batch {}: {} accepted, {} unchanged, {} rejected ({} unreadable, {} by the service)",
            self.batch_id,
            self.accepted,
            self.unchanged,
            self.rejected(),
            self.rejected_locally,
            self.rejected_by_service
        )?;
        if !self.rejections.is_empty() {
            let mut table = Table::new(&["LINE", "DEVICE", "REASON", "MESSAGE"]);
            for row in &self.rejections {
                table.row(vec![
                    row.line.to_string(),
                    row.device_id.clone(),
                    row.reason.clone(),
                    row.message.clone(),
                ]);
            }
            table.write(out)?;
        }
        if self.truncated {
            writeln!(
                out,
                "(the service listed only the first of its rejections; query the audit log \
                 for the rest)"
            )?;
        }
        if let Some(counts) = &self.counts {
            writeln!(out, "batch now: {}", counts_text(Some(counts)))?;
        }
        Ok(())
    }
}

/// One WatchBatch progress message as JSON.
pub(crate) fn progress_json(progress: &BatchProgress) -> Value {
    json!({ "progress": {
        "counts": counts_json(progress.counts.as_ref()),
        "time": timestamp_json(progress.time.as_ref()),
        "dropped_events": progress.dropped_events,
    }})
}

/// One WatchBatch progress message on one line.
pub(crate) fn progress_line(progress: &BatchProgress) -> String {
    let mut line = joined(&[
        timestamp_text(progress.time.as_ref()),
        counts_text(progress.counts.as_ref()),
    ]);
    if progress.dropped_events > 0 {
        // Writing to a String cannot fail.
        let _ = write!(
            line,
            " ({} device events dropped: reading too slowly)",
            progress.dropped_events
        );
    }
    line
}

/// One WatchBatch device event as JSON.
pub(crate) fn event_json(event: &DeviceEvent) -> Value {
    json!({ "device": {
        "device_id": event.device_id,
        "kind": event_name(event.kind),
        "time": timestamp_json(event.time.as_ref()),
        "serial": event.serial,
        "key_slot": event.key_slot,
        "refusal_detail": refusal_detail_name(event.refusal_detail),
        "correlation_id": event.correlation_id,
    }})
}

/// One WatchBatch device event on one line.
pub(crate) fn event_line(event: &DeviceEvent) -> String {
    let mut line = joined(&[
        timestamp_text(event.time.as_ref()),
        event.device_id.clone(),
        event_name(event.kind),
    ]);
    // Writing to a String cannot fail.
    if !event.serial.is_empty() {
        let _ = write!(line, "  serial {} slot {}", event.serial, event.key_slot);
    }
    if event.refusal_detail != 0 {
        let _ = write!(line, "  {}", refusal_detail_name(event.refusal_detail));
    }
    if !event.correlation_id.is_empty() {
        let _ = write!(line, "  ref {}", event.correlation_id);
    }
    line
}

/// An audit entry as JSON (bytes in hex, as everywhere).
pub(crate) fn audit_json(entry: &AuditEntry) -> Value {
    let details: std::collections::BTreeMap<_, _> = entry.details.iter().collect();
    json!({
        "seq": entry.seq,
        "time": timestamp_json(entry.time.as_ref()),
        "actor": entry.actor,
        "actor_role": role_name(entry.actor_role),
        "owner": entry.owner,
        "action": entry.action,
        "subject": entry.subject,
        "outcome": entry.outcome,
        "details": details,
        "correlation_id": entry.correlation_id,
        "record": hex::encode(&entry.record),
        "prev_hash": hex::encode(&entry.prev_hash),
        "hash": hex::encode(&entry.hash),
    })
}

/// Audit entries as a table; details as `key=value` pairs.
pub(crate) fn audit_table(entries: &[AuditEntry]) -> Table {
    let mut table = Table::new(&[
        "SEQ", "TIME", "ACTOR", "OWNER", "ACTION", "SUBJECT", "OUTCOME", "DETAILS",
    ]);
    for entry in entries {
        let mut details: Vec<_> = entry
            .details
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        details.sort();
        table.row(vec![
            entry.seq.to_string(),
            timestamp_text(entry.time.as_ref()),
            entry.actor.clone(),
            entry.owner.clone(),
            entry.action.clone(),
            entry.subject.clone(),
            entry.outcome.clone(),
            details.join(" "),
        ]);
    }
    table
}

/// The result of `audit verify` as JSON.
pub(crate) fn verify_json(result: &VerifyAuditResponse) -> Value {
    json!({
        "ok": result.ok,
        "entries_checked": result.entries_checked,
        "first_seq": result.first_seq,
        "last_seq": result.last_seq,
        "last_hash": hex::encode(&result.last_hash),
        "first_bad_seq": result.first_bad_seq,
        "problem": result.problem,
    })
}

/// The result of `audit verify` for humans.
pub(crate) fn verify_fields(result: &VerifyAuditResponse) -> Fields {
    let mut fields = Fields::new()
        .field("chain", if result.ok { "ok" } else { "BROKEN" })
        .field(
            "checked",
            format!(
                "{} entries, seq {}..={}",
                result.entries_checked, result.first_seq, result.last_seq
            ),
        )
        .field("last hash", hex::encode(&result.last_hash));
    if !result.ok {
        fields = fields
            .field("first bad seq", result.first_bad_seq.to_string())
            .field("problem", &result.problem);
    }
    fields
}

/// The non-empty parts, two spaces apart (an unset timestamp leaves no gap).
fn joined(parts: &[String]) -> String {
    parts
        .iter()
        .filter(|part| !part.is_empty())
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("  ")
}

fn or_default(value: &str, default: &str) -> String {
    if value.is_empty() {
        format!("{default} (default)")
    } else {
        value.to_owned()
    }
}

fn host_port(host: &str, port: u32) -> String {
    let port = if port == 0 { 8883 } else { port };
    if host.contains(':') && !host.starts_with('[') {
        // An IPv6 literal: brackets keep the port readable.
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn by(when: String, who: &str) -> String {
    match (when.is_empty(), who.is_empty()) {
        (_, true) => when,
        (true, false) => format!("by {who}"),
        (false, false) => format!("{when} by {who}"),
    }
}

/// "2 PEM certificates" rather than the PEM itself, which nobody reads in a terminal.
fn pem_summary(pem: &str) -> String {
    let count = pem.matches("-----BEGIN CERTIFICATE-----").count();
    match count {
        0 if pem.is_empty() => String::new(),
        0 => format!("{} bytes, no PEM certificate", pem.len()),
        1 => "1 PEM certificate".to_owned(),
        n => format!("{n} PEM certificates"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxroot_proto::v1::{
        DeviceState, ImportRejectionReason, MosquittoPolicyParams, PolicyKind, Role,
    };

    fn write_fields(fields: &Fields) -> String {
        let mut out = Vec::new();
        fields.write(&mut out).expect("writes");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn whoami_marks_platform_operators() {
        let me = WhoAmIResponse {
            name: "root".into(),
            owner: "*".into(),
            role: Role::Admin as i32,
            certificate_serial: "0a".into(),
            not_after: None,
        };
        let json = whoami_json(&me);
        assert_eq!(json["role"], "admin");
        assert_eq!(json["not_after"], Value::Null);
        assert!(write_fields(&whoami_fields(&me)).contains("owner:               * (platform)"));
    }

    #[test]
    fn policies_show_defaults_and_their_params_case() {
        let policy = Policy {
            name: "line-a".into(),
            owner: "acme".into(),
            kind: PolicyKind::Mosquitto as i32,
            params: Some(Params::Mosquitto(MosquittoPolicyParams {
                host: "::1".into(),
                port: 0,
                topic_root: String::new(),
                broker_ca_pem: String::new(),
            })),
            ..Policy::default()
        };
        let json = policy_json(&policy);
        assert_eq!(json["kind"], "mosquitto");
        assert_eq!(json["mosquitto"]["host"], "::1");
        assert_eq!(json["certificate_lifetime"], Value::Null);
        assert!(json.get("aws_iot").is_none());
        let text = write_fields(&policy_fields(&policy));
        assert!(text.contains("lifetime:      365d (default)"), "{text}");
        assert!(text.contains("broker:        [::1]:8883"), "{text}");
        assert!(text.contains("topic root:    devices (default)"), "{text}");
    }

    #[test]
    fn rejections_merge_in_line_order() {
        let local = vec![LocalRejection {
            line: 3,
            device_id: String::new(),
            reason: ImportRejectionReason::Malformed,
            message: "invalid JSON".into(),
        }];
        let service = vec![
            ImportRejection {
                line: 1,
                device_id: "aa".into(),
                reason: ImportRejectionReason::InvalidDeviceId as i32,
                message: "not 64 hex".into(),
            },
            ImportRejection {
                line: 7,
                device_id: "bb".into(),
                reason: ImportRejectionReason::Duplicate as i32,
                message: "seen on line 2".into(),
            },
        ];
        let rows = merge_rejections(&local, &service);
        let lines: Vec<_> = rows.iter().map(|r| (r.line, r.source)).collect();
        assert_eq!(lines, [(1, "service"), (3, "enrollctl"), (7, "service")]);
        assert_eq!(rows[0].reason, "invalid-device-id");
        assert_eq!(rows[1].reason, "malformed");
    }

    #[test]
    fn import_summary_counts_both_sides() {
        let summary = ImportSummary {
            batch_id: "b1".into(),
            format: "csv",
            accepted: 5,
            unchanged: 1,
            rejected_by_service: 2,
            rejected_locally: 1,
            rejections: Vec::new(),
            truncated: false,
            counts: None,
        };
        assert_eq!(summary.to_json()["rejected"], 3);
        let mut out = Vec::new();
        summary.write(&mut out).expect("writes");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "batch b1: 5 accepted, 1 unchanged, 3 rejected (1 unreadable, 2 by the service)\n"
        );
    }

    #[test]
    fn devices_print_their_state_names() {
        let device = Device {
            device_id: "ab".into(),
            state: DeviceState::ReonboardPending as i32,
            epk: vec![4, 1],
            ..Device::default()
        };
        let json = device_json(&device);
        assert_eq!(json["state"], "reonboard-pending");
        assert_eq!(json["epk"], "0401");
        assert_eq!(json["revocation"], Value::Null);
        let (fields, history) = device_fields(&device);
        assert!(history.is_none());
        assert!(write_fields(&fields).contains("state:     reonboard-pending"));
    }

    #[test]
    fn event_lines_have_no_gap_for_an_unset_time() {
        use oxroot_proto::v1::{DeviceEventKind, RefusalDetail};
        let event = DeviceEvent {
            device_id: "ab".into(),
            kind: DeviceEventKind::Refused as i32,
            refusal_detail: RefusalDetail::NonceReplayed as i32,
            correlation_id: "c-1".into(),
            ..DeviceEvent::default()
        };
        assert_eq!(event_line(&event), "ab  refused  nonce-replayed  ref c-1");
        assert_eq!(
            event_json(&event)["device"]["refusal_detail"],
            "nonce-replayed"
        );
    }

    #[test]
    fn pem_summaries_count_certificates() {
        assert_eq!(pem_summary(""), "");
        assert_eq!(
            pem_summary("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"),
            "1 PEM certificate"
        );
        assert_eq!(pem_summary("junk"), "4 bytes, no PEM certificate");
    }
}
