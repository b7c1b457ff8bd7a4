//! `GET /audit` (the log, filtered and paged by the service's own page tokens) and
//! `POST /audit/verify` (VerifyAudit over a range, with its result). Auditors and admins only:
//! the navigation hides the section from operators, and the service refuses them anyway.

use axum::Form;
use axum::extract::{Query, State};
use maud::{Markup, html};
use oxroot_proto::v1::{AuditEntry, QueryAuditRequest, VerifyAuditRequest};
use serde::Deserialize;

use super::devices::url_component;
use super::page::{PageError, Section, csrf_field, page, shown, when};
use super::{Console, SharedConsole};
use crate::commands::all_pages;

/// Entries per page of the log.
const PAGE_SIZE: u32 = 50;

/// The log's filters (exact matches, as QueryAudit takes them) and the page token.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LogQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    correlation_id: String,
    /// Empty or a sequence number (the form sends the field empty).
    #[serde(default)]
    start: String,
    #[serde(default)]
    page: String,
}

impl LogQuery {
    /// The query string of these filters (without the page).
    fn filters(&self) -> String {
        let mut query = format!(
            "actor={}&action={}&subject={}&correlation_id={}",
            url_component(&self.actor),
            url_component(&self.action),
            url_component(&self.subject),
            url_component(&self.correlation_id),
        );
        if !self.start.trim().is_empty() {
            query.push_str("&start=");
            query.push_str(&url_component(self.start.trim()));
        }
        query
    }
}

/// `GET /audit`.
pub(crate) async fn log(
    State(console): State<SharedConsole>,
    Query(query): Query<LogQuery>,
) -> Result<Markup, PageError> {
    let response = console
        .client()
        .query_audit(QueryAuditRequest {
            start_seq: seq_field("start", &query.start)?,
            actor: query.actor.clone(),
            action: query.action.clone(),
            subject: query.subject.clone(),
            correlation_id: query.correlation_id.clone(),
            page_size: PAGE_SIZE,
            page_token: query.page.clone(),
            ..QueryAuditRequest::default()
        })
        .await
        .map_err(PageError::rpc("QueryAudit"))?
        .into_inner();
    let body = html! {
        form.filters method="get" action="/audit" {
            (filter_input("actor", "Actor", &query.actor, "operator:alice, device:…"))
            (filter_input("action", "Action", &query.action, "device.revoke"))
            (filter_input("subject", "Subject", &query.subject, "device:…, batch:…"))
            (filter_input("correlation_id", "Correlation / reference", &query.correlation_id, ""))
            label for="start" { "From seq" }
            input #start type="number" min="0" name="start" value=(query.start);
            button type="submit" { "Filter" }
        }
        (verify_form(&console))
        p { "Newest entry in the whole log: seq " (response.head_seq) ". Entries of other owners are not shown to owner-scoped operators, so sequence numbers have gaps." }
        (entries_table(&response.entries))
        nav.pager {
            @if !query.page.is_empty() { a href={ "/audit?" (query.filters()) } { "← first page" } }
            @if !response.next_page_token.is_empty() {
                a href={ "/audit?" (query.filters()) "&page=" (url_component(&response.next_page_token)) } rel="next" { "next page →" }
            }
        }
    };
    Ok(page(&console, Section::Audit, "Audit log", &body))
}

fn filter_input(name: &str, label: &str, value: &str, placeholder: &str) -> Markup {
    html! {
        label for=(name) { (label) }
        input id=(name) type="text" name=(name) value=(value) placeholder=(placeholder);
    }
}

/// The "verify chain" action.
fn verify_form(console: &Console) -> Markup {
    html! {
        form.verify #verify-form method="post" action="/audit/verify" {
            (csrf_field(console))
            label for="verify-start" { "Verify the hash chain from seq" }
            input #verify-start type="number" min="0" name="start" placeholder="first";
            label for="verify-end" { "to" }
            input #verify-end type="number" min="0" name="end" placeholder="newest";
            button type="submit" { "Verify chain" }
        }
    }
}

/// The range of `POST /audit/verify` (empty: the whole log).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct VerifyForm {
    #[serde(default)]
    start: String,
    #[serde(default)]
    end: String,
}

/// A sequence number from a form field; empty means 0 (the contract's "from the start" and
/// "to the newest").
fn seq_field(name: &str, text: &str) -> Result<u64, PageError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    text.parse()
        .map_err(|_| PageError::BadRequest(format!("{name}: not a sequence number")))
}

/// `POST /audit/verify`.
pub(crate) async fn verify(
    State(console): State<SharedConsole>,
    Form(form): Form<VerifyForm>,
) -> Result<Markup, PageError> {
    let result = console
        .client()
        .verify_audit(VerifyAuditRequest {
            start_seq: seq_field("start", &form.start)?,
            end_seq: seq_field("end", &form.end)?,
        })
        .await
        .map_err(PageError::rpc("VerifyAudit"))?
        .into_inner();
    let body = html! {
        div #verify-result .result .ok[result.ok] .broken[!result.ok] data-ok=(result.ok) {
            p.verdict { @if result.ok { "Chain: ok" } @else { "Chain: BROKEN" } }
            dl.fields {
                dt { "Checked" } dd { (result.entries_checked) " entries, seq " (result.first_seq) " to " (result.last_seq) }
                dt { "Hash of the last entry" } dd { code.wrap { (hex::encode(&result.last_hash)) } }
                @if !result.ok {
                    dt { "First bad entry" } dd { (result.first_bad_seq) }
                    dt { "Problem" } dd { (shown(&result.problem)) }
                }
            }
            p.muted { "The service recomputed SHA-256(prev_hash ‖ record) for every entry of the range, "
                "other owners' included, and checked that each links to the one before. Keep the last "
                "hash: a later verification that ends at the same entry must give the same one." }
        }
        (verify_form(&console))
        p { a href="/audit" { "Back to the log" } }
    };
    Ok(page(
        &console,
        Section::Audit,
        "Audit chain verification",
        &body,
    ))
}

/// Every entry about `subject` (oldest first, at most `limit`).
pub(crate) async fn entries_about(
    console: &Console,
    subject: &str,
    limit: usize,
) -> Result<Vec<AuditEntry>, PageError> {
    let request = QueryAuditRequest {
        subject: subject.to_owned(),
        page_size: 1_000,
        ..QueryAuditRequest::default()
    };
    Ok(all_pages("QueryAudit", Some(limit), |page_token| {
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
    .await?)
}

/// Audit entries, one per row, with their chain hashes.
pub(crate) fn entries_table(entries: &[AuditEntry]) -> Markup {
    html! {
        @if entries.is_empty() {
            p { "No entries." }
        } @else {
            table.audit {
                thead { tr {
                    th.num { "Seq" } th { "Time" } th { "Actor" } th { "Owner" } th { "Action" }
                    th { "Subject" } th { "Outcome" } th { "Details" } th { "Reference" } th { "Hash" }
                } }
                tbody {
                    @for entry in entries {
                        tr data-seq=(entry.seq) .refused[entry.outcome != "ok"] {
                            td.num { (entry.seq) }
                            td { (when(entry.time.as_ref())) }
                            td { (shown(&entry.actor)) }
                            td { (shown(&entry.owner)) }
                            td { (shown(&entry.action)) }
                            td { (shown(&entry.subject)) }
                            td { (shown(&entry.outcome)) }
                            td { @for (key, value) in sorted_details(entry) {
                                span.detail { (shown(key)) "=" (shown(value)) } " "
                            } }
                            td { code { (shown(&entry.correlation_id)) } }
                            td { code title=(hex::encode(&entry.hash)) { (short_hex(&entry.hash)) "…" } }
                        }
                    }
                }
            }
        }
    }
}

fn sorted_details(entry: &AuditEntry) -> Vec<(&String, &String)> {
    let mut details: Vec<_> = entry.details.iter().collect();
    details.sort();
    details
}

/// The first 8 bytes of a hash in hex.
fn short_hex(bytes: &[u8]) -> String {
    hex::encode(&bytes[..bytes.len().min(8)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_fields_are_numbers_or_empty() {
        assert_eq!(seq_field("start", " ").expect("empty"), 0);
        assert_eq!(seq_field("start", "17").expect("number"), 17);
        assert!(seq_field("end", "-1").is_err());
        assert!(seq_field("end", "x").is_err());
    }

    #[test]
    fn hostile_entries_are_escaped_and_their_controls_visible() {
        let entry = AuditEntry {
            seq: 3,
            actor: "<script>alert(1)</script>".into(),
            details: [("comment".to_owned(), "\u{202e}gpj.exe".to_owned())].into(),
            hash: vec![0xab; 32],
            ..AuditEntry::default()
        };
        let html = entries_table(&[entry]).into_string();
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("\\u{202e}gpj.exe"), "{html}");
        assert!(html.contains("abababababababab…"), "{html}");
    }

    #[test]
    fn filters_keep_their_values_across_pages() {
        let query = LogQuery {
            action: "device.revoke".into(),
            subject: "device:ab cd".into(),
            start: "5".into(),
            ..LogQuery::default()
        };
        assert_eq!(
            query.filters(),
            "actor=&action=device.revoke&subject=device%3Aab%20cd&correlation_id=&start=5"
        );
    }
}
