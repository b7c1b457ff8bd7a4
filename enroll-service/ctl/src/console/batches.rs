//! `GET /batches` (every batch with its progress) and `GET /batches/{id}` (one batch, live).
//!
//! The batch page is complete without JavaScript: counts and progress as of the page load, and
//! the refused devices with their precise causes. With JavaScript, `console.js` follows
//! `/batches/{id}/events` (see [`super::live`]) and updates the same elements in place as the
//! service reports progress, adding each device event as it happens.

use std::collections::HashMap;

use axum::extract::{Path, State};
use maud::{Markup, html};
use oxroot_proto::v1::{
    AuditEntry, Batch, BatchCounts, GetBatchRequest, ListBatchesRequest, QueryAuditRequest,
};

use super::devices::url_component;
use super::fleet_index::Fleet;
use super::page::{PageError, Section, page, percent, shown, when, when_at};
use super::stats::DeviceSummary;
use super::{Console, SharedConsole};
use crate::commands::all_pages;
use crate::output::kind_name;

/// Batches listed on the batches page (newest first).
const MAX_BATCHES: usize = 1_000;
/// Refusal entries of the audit log read for one batch page.
const MAX_REFUSAL_ENTRIES: usize = 1_000;

/// `GET /batches`.
pub(crate) async fn list(State(console): State<SharedConsole>) -> Result<Markup, PageError> {
    let batches = all_pages("ListBatches", Some(MAX_BATCHES), |page_token| {
        let mut client = console.client();
        async move {
            let page = client
                .list_batches(ListBatchesRequest {
                    page_size: 1_000,
                    page_token,
                    ..ListBatchesRequest::default()
                })
                .await?
                .into_inner();
            Ok((page.batches, page.next_page_token))
        }
    })
    .await?;
    let body = html! {
        @if batches.is_empty() {
            p { "No batches yet." }
        } @else {
            table.batches {
                thead { tr {
                    th { "Batch" } th { "Owner" } th { "Policy" } th { "Progress" }
                    th.num { "Onboarded" } th.num { "Refusals" } th.num { "Error rate" } th { "Created" }
                } }
                tbody {
                    @for batch in &batches {
                        @let counts = batch.counts.unwrap_or_default();
                        tr {
                            td { a href={ "/batches/" (url_component(&batch.batch_id)) } { (name_of(batch)) } }
                            td { (shown(&batch.owner)) }
                            td { (shown(&batch.policy_name)) " " span.muted { (kind_name(batch.policy_kind)) } }
                            td { (progress_bar(&counts)) " " (percent(counts.onboarded, counts.total)) " %" }
                            td.num { (counts.onboarded) " / " (counts.total) }
                            td.num { (counts.refusals) }
                            td.num { (error_rate(&counts)) }
                            td { (when(batch.created_at.as_ref())) }
                        }
                    }
                }
            }
            @if batches.len() == MAX_BATCHES {
                p.muted { "The newest " (MAX_BATCHES) " batches." }
            }
        }
    };
    Ok(page(&console, Section::Batches, "Batches", &body))
}

/// A batch's label, or its id when it has none.
fn name_of(batch: &Batch) -> Markup {
    html! {
        @if batch.name.is_empty() { code { (shown(&batch.batch_id)) } } @else { (shown(&batch.name)) }
    }
}

/// Onboarded out of all; `<progress>` needs no style attribute (the CSP allows none).
fn progress_bar(counts: &BatchCounts) -> Markup {
    html! {
        progress max=(counts.total.max(1)) value=(counts.onboarded)
            title={ (counts.onboarded) " of " (counts.total) " onboarded" } {
            (percent(counts.onboarded, counts.total)) " %"
        }
    }
}

/// Refused attempts per onboarding attempt (refusals and successful onboardings), in percent.
fn error_rate(counts: &BatchCounts) -> String {
    let attempts = counts.onboarded + counts.refusals;
    if attempts == 0 {
        "–".into()
    } else {
        format!("{:.1} %", counts.refusals as f64 * 100.0 / attempts as f64)
    }
}

/// `GET /batches/{id}`.
pub(crate) async fn view(
    State(console): State<SharedConsole>,
    Path(batch_id): Path<String>,
) -> Result<Markup, PageError> {
    let batch = console
        .client()
        .get_batch(GetBatchRequest {
            batch_id: batch_id.clone(),
        })
        .await
        .map_err(PageError::rpc("GetBatch"))?
        .into_inner()
        .batch
        .ok_or_else(|| PageError::Internal("GetBatch without a batch".into()))?;
    let fleet = console.fleet.fleet().await?;
    let refused: Vec<&DeviceSummary> = fleet
        .devices
        .iter()
        .filter(|d| d.batch_id == batch.batch_id && d.refusals > 0)
        .collect();
    let causes = if console.can_read_audit() && !refused.is_empty() {
        Some(refusal_causes(&console, &batch, &refused).await?)
    } else {
        None
    };
    let title = format!("Batch {}", shown(&batch.name));
    let body = body(&console, &batch, &fleet, &refused, causes.as_ref());
    Ok(page(&console, Section::Batches, &title, &body))
}

/// The latest audited refusal of each refused device, from the owner's refusals since the
/// batch was created (the audit log has no batch filter; the first entries suffice for a page).
async fn refusal_causes(
    console: &Console,
    batch: &Batch,
    refused: &[&DeviceSummary],
) -> Result<HashMap<String, AuditEntry>, PageError> {
    let subjects: HashMap<String, &str> = refused
        .iter()
        .map(|d| (format!("device:{}", d.device_id), d.device_id.as_str()))
        .collect();
    let request = QueryAuditRequest {
        action: "device.refuse".into(),
        since: batch.created_at,
        page_size: 1_000,
        ..QueryAuditRequest::default()
    };
    let entries = all_pages("QueryAudit", Some(MAX_REFUSAL_ENTRIES), |page_token| {
        let mut client = console.client();
        let request = QueryAuditRequest {
            page_token,
            ..request.clone()
        };
        async move {
            let page = client.query_audit(request).await?.into_inner();
            Ok((page.entries, page.next_page_token))
        }
    })
    .await?;
    let mut latest = HashMap::new();
    for entry in entries {
        if let Some(device_id) = subjects.get(&entry.subject) {
            // Ascending order: a later entry replaces an earlier one.
            latest.insert((*device_id).to_owned(), entry);
        }
    }
    Ok(latest)
}

fn body(
    console: &Console,
    batch: &Batch,
    fleet: &Fleet,
    refused: &[&DeviceSummary],
    causes: Option<&HashMap<String, AuditEntry>>,
) -> Markup {
    let counts = batch.counts.unwrap_or_default();
    let figures = [
        ("total", "total", counts.total),
        (
            "awaiting",
            "awaiting registration",
            counts.awaiting_registration,
        ),
        (
            "registered",
            "registered, waiting to onboard",
            counts.registered,
        ),
        ("onboarded", "onboarded", counts.onboarded),
        (
            "reonboard",
            "re-onboarding pending",
            counts.reonboard_pending,
        ),
        ("revoked", "revoked", counts.revoked),
        ("refusals", "refusals", counts.refusals),
    ];
    html! {
        dl.fields {
            dt { "Batch id" } dd { code { (shown(&batch.batch_id)) } }
            dt { "Owner" } dd { (shown(&batch.owner)) }
            dt { "Policy" } dd { (shown(&batch.policy_name)) " (" (kind_name(batch.policy_kind)) ")" }
            @if !batch.description.is_empty() {
                dt { "Description" } dd { (shown(&batch.description)) }
            }
            dt { "Created" } dd { (when(batch.created_at.as_ref())) " by " (shown(&batch.created_by)) }
        }
        section #live data-events={ "/batches/" (batch.batch_id) "/events" } {
            h2 { "Progress" }
            p.progress {
                progress #batch-progress max=(counts.total.max(1)) value=(counts.onboarded) {
                    (percent(counts.onboarded, counts.total)) " %"
                }
                " " strong #batch-percent { (percent(counts.onboarded, counts.total)) " %" }
                " onboarded · " span #live-status { "as of this page load; reload for the latest" }
            }
            dl.counts {
                @for (key, label, value) in figures {
                    dt { (label) } dd data-count=(key) { (value) }
                }
            }
            h3 { "Device events" }
            table.events {
                thead { tr { th { "Time" } th { "Device" } th { "Event" } th { "Detail" } } }
                tbody #events {}
            }
            p.muted #events-note {
                "Device events appear here as they happen while this page is open (with JavaScript)."
            }
        }
        section {
            h2 { "Refused devices" }
            (refused_table(refused, causes, console.can_read_audit()))
            p.muted {
                "Refusal counts as of the device list of " (when_at(fleet.taken_at)) ". "
                a href={ "/devices?batch=" (url_component(&batch.batch_id)) } { "All devices of this batch" }
            }
        }
    }
}

/// The batch's refused devices, each linked to its record, with the audited cause when the
/// role may read the audit log.
fn refused_table(
    refused: &[&DeviceSummary],
    causes: Option<&HashMap<String, AuditEntry>>,
    can_read_audit: bool,
) -> Markup {
    html! {
        @if refused.is_empty() {
            p { "No device of this batch has been refused." }
        } @else {
            table.refusals {
                thead { tr {
                    th { "Device" } th.num { "Refusals" } th { "Last cause" } th { "When" } th { "Reference" }
                } }
                tbody {
                    @for device in refused {
                        @let entry = causes.and_then(|c| c.get(&device.device_id));
                        tr {
                            td { a href={ "/devices/" (url_component(&device.device_id)) } { code { (device.device_id) } } }
                            td.num { (device.refusals) }
                            @if let Some(entry) = entry {
                                td.cause { (shown(entry.details.get("refusal_detail").map_or("", String::as_str))) }
                                td { (when(entry.time.as_ref())) }
                                td { code { (shown(&entry.correlation_id)) } }
                            } @else {
                                td.muted colspan="3" {
                                    @if can_read_audit { "not among the audit entries read" }
                                    @else { "precise causes are in the audit log (auditor or admin role)" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_rates_count_refusals_among_attempts() {
        let counts = |onboarded, refusals| BatchCounts {
            onboarded,
            refusals,
            ..BatchCounts::default()
        };
        assert_eq!(error_rate(&counts(0, 0)), "–");
        assert_eq!(error_rate(&counts(3, 1)), "25.0 %");
        assert_eq!(error_rate(&counts(0, 2)), "100.0 %");
    }

    #[test]
    fn progress_bars_carry_no_style_and_survive_empty_batches() {
        let empty = progress_bar(&BatchCounts::default()).into_string();
        assert!(empty.contains("max=\"1\" value=\"0\""), "{empty}");
        let half = progress_bar(&BatchCounts {
            total: 4,
            onboarded: 2,
            ..BatchCounts::default()
        })
        .into_string();
        assert!(half.contains("max=\"4\" value=\"2\""), "{half}");
        assert!(!half.contains("style"), "{half}");
    }
}
