//! `GET /devices` (search by DeviceId or serial prefix, filter by standing) and
//! `GET /devices/{id}` (one device: registration, certificates with their PEM, history, audit
//! entries, revocation and its CRL).
//!
//! The search reads the fleet index; a complete DeviceId goes straight to the service and to
//! the device's page. The device page always asks the service.

use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use oxroot_proto::v1::{AuditEntry, CredentialState, Device, GetDeviceRequest};
use serde::Deserialize;

use super::ca::{CrlFacts, owner_crls};
use super::page::{PageError, Section, page, shown, shown_pem, when};
use super::stats::{DeviceSummary, Standing};
use super::{Console, SharedConsole, audit};
use crate::output::{credential_state_name, reason_name, state_name};

/// Devices per page of search results.
const PAGE_SIZE: usize = 100;
/// Audit entries shown on a device page (oldest first).
pub(crate) const MAX_DEVICE_AUDIT: usize = 1_000;

/// What the search form sends.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SearchQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    filter: String,
    #[serde(default)]
    batch: String,
    #[serde(default)]
    page: usize,
}

/// The search's standing filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Filter {
    All,
    /// A valid certificate (onboarded, renewal due or not).
    Valid,
    Standing(Standing),
}

impl Filter {
    fn parse(text: &str) -> Result<Self, PageError> {
        match text {
            "" | "all" => Ok(Self::All),
            "valid" => Ok(Self::Valid),
            other => Standing::from_slug(other)
                .map(Self::Standing)
                .ok_or_else(|| PageError::BadRequest(format!("unknown filter {other:?}"))),
        }
    }

    fn admits(self, device: &DeviceSummary) -> bool {
        match self {
            Self::All => true,
            Self::Valid => device.standing.is_valid(),
            Self::Standing(standing) => device.standing == standing,
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Valid => "valid",
            Self::Standing(standing) => standing.slug(),
        }
    }
}

/// The filter menu: the four the overview's users ask for first, then the other standings.
const FILTERS: [(&str, &str); 9] = [
    ("all", "all devices"),
    ("valid", "valid certificate"),
    ("renewal-due", "renewal due"),
    ("expired", "expired"),
    ("revoked", "revoked"),
    ("onboarded", "onboarded, not due"),
    ("in-batch", "in batch, not onboarded"),
    ("awaiting-registration", "awaiting registration"),
    ("registered", "registered, no batch"),
];

/// True for a complete DeviceId (64 hex digits, any case).
fn is_device_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `GET /devices?q=&filter=&batch=&page=`.
pub(crate) async fn search(
    State(console): State<SharedConsole>,
    Query(query): Query<SearchQuery>,
) -> Result<Response, PageError> {
    let prefix = query.q.trim().to_ascii_lowercase();
    let filter = Filter::parse(&query.filter)?;
    if !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PageError::BadRequest(
            "search by DeviceId or serial: hexadecimal digits only".into(),
        ));
    }
    // A whole DeviceId: ask the service, so that a device registered a second ago is found.
    if is_device_id(&prefix) {
        let found = console
            .client()
            .get_device(GetDeviceRequest {
                device_id: prefix.clone(),
            })
            .await;
        match found {
            Ok(_) => return Ok(Redirect::to(&format!("/devices/{prefix}")).into_response()),
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => return Err(PageError::rpc("GetDevice")(status)),
        }
    }
    let fleet = console.fleet.fleet().await?;
    let candidates = if prefix.is_empty() {
        fleet.devices.iter().collect()
    } else {
        fleet.search(&prefix)
    };
    let matches: Vec<&DeviceSummary> = candidates
        .into_iter()
        .filter(|d| filter.admits(d))
        .filter(|d| query.batch.is_empty() || d.batch_id == query.batch)
        .collect();
    let pages = matches.len().div_ceil(PAGE_SIZE).max(1);
    let page_index = query.page.min(pages - 1);
    let shown_devices = &matches[(page_index * PAGE_SIZE).min(matches.len())
        ..((page_index + 1) * PAGE_SIZE).min(matches.len())];
    let link = |page: usize| {
        format!(
            "/devices?q={prefix}&filter={}&batch={}&page={page}",
            filter.slug(),
            url_component(&query.batch),
        )
    };
    let body = html! {
        form.search method="get" action="/devices" role="search" {
            label for="q" { "DeviceId or serial prefix" }
            input #q type="search" name="q" value=(prefix) placeholder="e.g. 53a3e9" autocomplete="off";
            label for="filter" { "Show" }
            select #filter name="filter" {
                @for (value, label) in FILTERS {
                    option value=(value) selected[value == filter.slug()] { (label) }
                }
            }
            @if !query.batch.is_empty() {
                input type="hidden" name="batch" value=(query.batch);
            }
            button type="submit" { "Search" }
        }
        (super::overview::freshness(&console, &fleet))
        @if !query.batch.is_empty() {
            p { "Devices of batch " a href={ "/batches/" (url_component(&query.batch)) } { code { (shown(&query.batch)) } } "." }
        }
        p #result-count { (matches.len()) " device(s)" @if pages > 1 { ", page " (page_index + 1) " of " (pages) } "." }
        @if !shown_devices.is_empty() {
            table.devices {
                thead { tr {
                    th { "Device" } th { "Standing" } th { "Owner" } th { "Batch" } th { "Policy" }
                    th { "Serial" } th { "Not after" } th.num { "Refusals" }
                } }
                tbody {
                    @for device in shown_devices {
                        tr {
                            td { a href={ "/devices/" (url_component(&device.device_id)) } { code { (shown(&device.device_id)) } } }
                            td data-standing=(device.standing.slug()) { (device.standing.label()) }
                            td { (shown(&device.owner)) }
                            td { @if !device.batch_id.is_empty() {
                                a href={ "/batches/" (url_component(&device.batch_id)) } { code { (shown(&device.batch_id)) } }
                            } }
                            td { (shown(&device.policy)) }
                            td { code { (shown(&device.serial)) } }
                            td { (unix_text(device.not_after)) }
                            td.num { (device.refusals) }
                        }
                    }
                }
            }
        }
        nav.pager {
            @if page_index > 0 { a href=(link(page_index - 1)) rel="prev" { "← previous" } }
            @if page_index + 1 < pages { a href=(link(page_index + 1)) rel="next" { "next →" } }
        }
    };
    Ok(page(&console, Section::Devices, "Devices", &body).into_response())
}

/// Unix seconds as RFC 3339, or nothing.
fn unix_text(seconds: Option<i64>) -> String {
    when(
        seconds
            .map(|seconds| prost_types::Timestamp { seconds, nanos: 0 })
            .as_ref(),
    )
}

/// Percent-encodes a path or query component (batch ids are opaque text from the service).
pub(crate) fn url_component(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// `?revoked=1` after a revocation made here: the page then says so at the top.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ViewQuery {
    #[serde(default)]
    revoked: Option<String>,
}

/// `GET /devices/{id}`.
pub(crate) async fn view(
    State(console): State<SharedConsole>,
    Path(device_id): Path<String>,
    Query(query): Query<ViewQuery>,
) -> Result<Markup, PageError> {
    let device = get_device(&console, &device_id).await?;
    let audit = if console.can_read_audit() {
        Some(
            audit::entries_about(
                &console,
                &format!("device:{}", device.device_id),
                MAX_DEVICE_AUDIT,
            )
            .await,
        )
    } else {
        None
    };
    // The owner's CRLs, not the caller's: a platform operator's own is the platform's.
    let crls = if device.revocation.is_some() {
        Some(owner_crls(&console, &device.owner).await)
    } else {
        None
    };
    let title = format!(
        "Device {}…",
        &shown(&device.device_id)
            .chars()
            .take(16)
            .collect::<String>()
    );
    let body = body(
        &console,
        &device,
        audit.as_ref(),
        crls.as_ref(),
        query.revoked.is_some(),
    );
    Ok(page(&console, Section::Devices, &title, &body))
}

/// GetDevice, with its credential history.
pub(crate) async fn get_device(console: &Console, device_id: &str) -> Result<Device, PageError> {
    console
        .client()
        .get_device(GetDeviceRequest {
            device_id: device_id.to_owned(),
        })
        .await
        .map_err(PageError::rpc("GetDevice"))?
        .into_inner()
        .device
        .ok_or_else(|| PageError::Internal("GetDevice without a device".into()))
}

fn body(
    console: &Console,
    device: &Device,
    audit: Option<&Result<Vec<AuditEntry>, PageError>>,
    crls: Option<&OwnerCrls>,
    just_revoked: bool,
) -> Markup {
    let id = &device.device_id;
    html! {
        @if just_revoked && device.revocation.is_some() {
            p.notice #revoked-notice { "Revoked. " (crl_status(device, crls)) }
        }
        div.actions {
            @if console.can_revoke() && device.revocation.is_none() {
                a.button.danger #revoke href={ "/devices/" (url_component(id)) "/revoke" } { "Revoke…" }
            }
            a.button #evidence href={ "/devices/" (url_component(id)) "/evidence" } download { "Download evidence (JSON)" }
        }
        dl.fields #device {
            dt { "DeviceId" } dd { code #device-id { (shown(id)) } }
            dt { "State" } dd #state { (state_name(device.state)) }
            dt { "Owner" } dd { (shown(&device.owner)) }
            dt { "Batch" } dd { @if !device.batch_id.is_empty() {
                a href={ "/batches/" (url_component(&device.batch_id)) } { code { (shown(&device.batch_id)) } }
            } }
            dt { "Key slot" } dd { @if device.key_slot == 0 { "none" } @else { (device.key_slot) } }
            dt { "Last seen" } dd { (when(device.last_seen.as_ref())) }
            dt { "Refusals" } dd { (device.refusals) }
        }
        (registration(device))
        @if let Some(revocation) = &device.revocation {
            section #revocation {
                h2 { "Revocation" }
                dl.fields {
                    dt { "Revoked" } dd { (when(revocation.revoked_at.as_ref())) " by " (shown(&revocation.revoked_by)) }
                    dt { "Reason" } dd #revocation-reason { (reason_name(revocation.reason)) }
                    dt { "Comment" } dd { (shown(&revocation.comment)) }
                    dt { "CRL" } dd #crl-status { (crl_status(device, crls)) }
                }
            }
        }
        section #certificates {
            h2 { "Certificates" }
            @if device.credential_history.is_empty() {
                p { "None issued yet." }
            } @else {
                table.certificates {
                    thead { tr {
                        th { "Serial" } th { "State" } th { "Slot" } th { "Policy" } th { "Subject CN" }
                        th { "Issued" } th { "Not after" } th { "Firmware" }
                    } }
                    tbody {
                        @for credential in &device.credential_history {
                            tr data-serial=(credential.serial) {
                                td { code { (shown(&credential.serial)) } }
                                td { (credential_state_label(device, credential.state, &credential.serial)) }
                                td { (credential.key_slot) }
                                td { (shown(&credential.policy_name)) }
                                td { code { (shown(&credential.subject_cn)) } }
                                td { (when(credential.issued_at.as_ref())) }
                                td { (when(credential.not_after.as_ref())) }
                                td.firmware {
                                    @if credential.firmware_measurement.is_empty() { "-" }
                                    @else { code title="SHA-256 of the firmware image its key is bound to" { (shown(&credential.firmware_measurement)) } }
                                }
                            }
                            tr.pem { td colspan="8" {
                                details { summary { "PEM of " (shown(&credential.serial)) } pre { (shown_pem(&credential.certificate_pem)) } }
                            } }
                        }
                    }
                }
            }
        }
        section #history {
            h2 { "History" }
            ol.timeline {
                @for (when, what) in history(device) {
                    li { time { (when) } " " (what) }
                }
            }
        }
        section #audit {
            h2 { "Audit entries" }
            @match audit {
                None => p.muted { "The audit log is for auditors and admins; this operator's role cannot read it." },
                Some(Err(error)) => p.warn { "The audit log could not be read: " (shown(&error.to_string())) },
                Some(Ok(entries)) => (audit::entries_table(entries)),
            }
        }
    }
}

/// A certificate's state, marking the device's current one.
fn credential_state_label(device: &Device, state: i32, serial: &str) -> String {
    let current = device
        .current_credential
        .as_ref()
        .is_some_and(|c| c.serial == serial);
    let name = credential_state_name(state);
    if current && state == CredentialState::Active as i32 {
        format!("{name} (current)")
    } else {
        name
    }
}

/// What the device said when it registered. Its context is text from an unauthenticated
/// device: the service refuses control and invisible characters in it, and a record from before
/// that check (or from a service that misses one) still shows them only as visible escapes.
fn registration(device: &Device) -> Markup {
    html! {
        section #registration {
            h2 { "Registration" }
            dl.fields {
                dt { "Registered" } dd { (when(device.registered_at.as_ref())) }
                dt { "EPK" } dd { code.wrap { (hex::encode(&device.epk)) } }
                @if let Some(context) = &device.registration_context {
                    @for (label, value) in [("Site", &context.site), ("Station", &context.station), ("Firmware", &context.firmware_version)] {
                        @if !value.is_empty() {
                            dt { (label) } dd.context { (shown(value)) }
                        }
                    }
                    @for (key, value) in sorted(&context.labels) {
                        dt.context { "Label " (shown(key)) } dd.context { (shown(value)) }
                    }
                }
            }
        }
    }
}

/// The owner's current CRLs as (issuing CA id, CRL), active first, or why they could not be
/// read.
type OwnerCrls = Result<Vec<(String, CrlFacts)>, PageError>;

/// Whether the owner's current CRLs list the device's revoked certificates: the number and
/// issuing CA of the CRL that lists them (a rotation's overlap has two live CRLs, and a
/// device's certificate is on its own CA's).
fn crl_status(device: &Device, crls: Option<&OwnerCrls>) -> Markup {
    let revoked: Vec<&str> = device
        .credential_history
        .iter()
        .filter(|c| c.state == CredentialState::Revoked as i32)
        .map(|c| c.serial.as_str())
        .collect();
    html! {
        @match crls {
            None => "",
            Some(Err(error)) => span.warn { "the CRL could not be read: " (shown(&error.to_string())) },
            Some(Ok(crls)) => {
                @let listed_anywhere = |serial: &str| crls.iter().any(|(_, crl)| crl.lists(serial));
                @let shown_crl = crls
                    .iter()
                    .find(|(_, crl)| revoked.iter().any(|s| crl.lists(s)))
                    .or(crls.first());
                @if let Some((issuer, crl)) = shown_crl {
                    @if revoked.is_empty() {
                        "No certificate of this device was live when it was revoked. Current CRL of issuing CA "
                        code { (shown(issuer)) } ": #" (crl.number) "."
                    } @else {
                        @let listed = revoked.iter().filter(|s| listed_anywhere(s)).count();
                        "CRL #" span #crl-number { (crl.number) } " of issuing CA " code #crl-issuer { (shown(issuer)) }
                        " (next update " (crl.next_update) ") lists "
                        (listed) " of this device's " (revoked.len()) " revoked serial(s): "
                        @for serial in &revoked {
                            code data-listed=(listed_anywhere(serial)) { (shown(serial)) } " "
                        }
                    }
                } @else {
                    span.warn { "the service sent no CRL" }
                }
            }
        }
    }
}

/// The device's life as the record tells it, oldest first.
fn history(device: &Device) -> Vec<(String, String)> {
    let mut events: Vec<(String, String)> = Vec::new();
    if let Some(at) = nonempty(when(device.registered_at.as_ref())) {
        events.push((at, "registered its enrolment key".into()));
    }
    for credential in &device.credential_history {
        if let Some(at) = nonempty(when(credential.issued_at.as_ref())) {
            events.push((
                at,
                format!(
                    "certificate {} issued for key slot {} under policy {}",
                    shown(&credential.serial),
                    credential.key_slot,
                    shown(&credential.policy_name)
                ),
            ));
        }
    }
    for update in &device.firmware_updates {
        if let Some(at) = nonempty(when(update.reported_at.as_ref())) {
            let outcome = if update.installed {
                "installed and running".to_owned()
            } else {
                format!("failed: {}", shown(&update.reason))
            };
            events.push((
                at,
                format!(
                    "firmware {} {} of rollout {} reported {outcome}",
                    shown(&update.firmware_name),
                    shown(&update.firmware_version),
                    shown(&update.rollout_id),
                ),
            ));
        }
    }
    if let Some(revocation) = &device.revocation
        && let Some(at) = nonempty(when(revocation.revoked_at.as_ref()))
    {
        events.push((
            at,
            format!(
                "revoked by {} ({})",
                shown(&revocation.revoked_by),
                reason_name(revocation.reason)
            ),
        ));
    }
    // RFC 3339 in UTC sorts by time as text.
    events.sort();
    events
}

/// `Some(text)` unless it is empty.
fn nonempty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// A map's entries by key.
fn sorted(map: &std::collections::HashMap<String, String>) -> Vec<(&String, &String)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort();
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_from_the_menu_values() {
        for (value, _) in FILTERS {
            let filter = Filter::parse(value).expect(value);
            assert_eq!(filter.slug(), value);
        }
        assert_eq!(Filter::parse("").expect("empty"), Filter::All);
        assert!(Filter::parse("<script>").is_err());
    }

    #[test]
    fn only_whole_hex_ids_go_straight_to_the_service() {
        assert!(is_device_id(&"aB".repeat(32)));
        assert!(!is_device_id(&"ab".repeat(31)));
        assert!(!is_device_id(&"zz".repeat(32)));
    }

    #[test]
    fn url_components_are_percent_encoded() {
        assert_eq!(url_component("b-1_x.y~"), "b-1_x.y~");
        assert_eq!(url_component("a b/&\"<"), "a%20b%2F%26%22%3C");
    }

    #[test]
    fn a_registration_context_is_text_with_its_controls_visible() {
        let hostile = "<script>alert(1)</script>\u{1b}[31m\u{202e}fdp.exe";
        let device = Device {
            registration_context: Some(oxroot_proto::v1::RegistrationContext {
                site: hostile.into(),
                station: "line 1 <b>bold</b>".into(),
                firmware_version: "1.0\r\n\u{7}".into(),
                labels: [(
                    "lot\u{200b}".to_owned(),
                    "<img src=x onerror=alert(2)>".to_owned(),
                )]
                .into(),
            }),
            ..Device::default()
        };
        let html = registration(&device).into_string();
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;\\x1b[31m\\u{202e}fdp.exe"),
            "{html}"
        );
        assert!(html.contains("line 1 &lt;b&gt;bold&lt;/b&gt;"), "{html}");
        assert!(html.contains("1.0\\r\\n\\x07"), "{html}");
        assert!(html.contains("Label lot\\u{200b}"), "{html}");
        assert!(
            html.contains("&lt;img src=x onerror=alert(2)&gt;"),
            "{html}"
        );
        for raw in [
            "<script", "<b>", "<img", "\u{1b}", "\u{202e}", "\u{200b}", "\r", "\u{7}",
        ] {
            assert!(!html.contains(raw), "{raw:?} in {html}");
        }
    }

    #[test]
    fn history_runs_oldest_first() {
        let at = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
        let device = Device {
            registered_at: at(100),
            credential_history: vec![
                oxroot_proto::v1::CredentialSummary {
                    serial: "02".into(),
                    issued_at: at(300),
                    ..Default::default()
                },
                oxroot_proto::v1::CredentialSummary {
                    serial: "01".into(),
                    issued_at: at(200),
                    ..Default::default()
                },
            ],
            ..Device::default()
        };
        let device = Device {
            firmware_updates: vec![oxroot_proto::v1::FirmwareUpdate {
                rollout_id: "ro-00000000000000aa".into(),
                firmware_name: "app".into(),
                firmware_version: "1.5.0+0".into(),
                reason: "<b>rollback</b>\u{1b}[31m".into(),
                reported_at: at(250),
                ..Default::default()
            }],
            ..device
        };
        let lines: Vec<String> = history(&device).into_iter().map(|(_, what)| what).collect();
        assert!(lines[0].starts_with("registered"), "{lines:?}");
        assert!(lines[1].contains("certificate 01"), "{lines:?}");
        // A device's reason is its text, with its controls visible (maud escapes the markup).
        assert_eq!(
            lines[2],
            "firmware app 1.5.0+0 of rollout ro-00000000000000aa reported failed: \
             <b>rollback</b>\\x1b[31m"
        );
        assert!(lines[3].contains("certificate 02"), "{lines:?}");
    }
}
