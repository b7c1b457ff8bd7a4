//! Revoking a device: `GET /devices/{id}/revoke` is the confirmation step (an RFC 5280 reason
//! and a comment), `POST` does it with RevokeDevice and shows the device with the new CRL.
//!
//! An auditor's console shows no revoke button and no form here; a POST made anyway (the
//! session and CSRF token are the auditor's own) goes to the service, which refuses it with
//! PERMISSION_DENIED and writes the denial to its audit log, and the console shows that
//! refusal.

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use oxroot_proto::v1::{CredentialState, RevocationReason, RevokeDeviceRequest};
use serde::Deserialize;

use super::SharedConsole;
use super::devices::{get_device, url_component};
use super::page::{PageError, Section, csrf_field, page, shown, when};
use crate::output::role_name;

/// The reasons an operator may choose, with RFC 5280's names and codes, most common first.
const REASONS: [(RevocationReason, &str, &str); 6] = [
    (
        RevocationReason::CessationOfOperation,
        "cessationOfOperation (5)",
        "decommissioned: the board was scrapped, returned or retired",
    ),
    (
        RevocationReason::KeyCompromise,
        "keyCompromise (1)",
        "someone else may be able to use the device's identity (its key slot is retired)",
    ),
    (
        RevocationReason::AffiliationChanged,
        "affiliationChanged (3)",
        "the device no longer belongs to this owner",
    ),
    (
        RevocationReason::Superseded,
        "superseded (4)",
        "replaced by another device",
    ),
    (
        RevocationReason::PrivilegeWithdrawn,
        "privilegeWithdrawn (9)",
        "the device is no longer allowed to connect",
    ),
    (
        RevocationReason::Unspecified,
        "unspecified (0)",
        "no reason given",
    ),
];

/// The longest comment the service accepts.
const MAX_COMMENT: usize = 256;

/// `GET /devices/{id}/revoke`.
pub(crate) async fn confirm(
    State(console): State<SharedConsole>,
    Path(device_id): Path<String>,
) -> Result<Markup, PageError> {
    let device = get_device(&console, &device_id).await?;
    let id = &device.device_id;
    let live: Vec<_> = device
        .credential_history
        .iter()
        .filter(|c| {
            c.state == CredentialState::Active as i32
                || c.state == CredentialState::Superseded as i32
        })
        .collect();
    let body = html! {
        p { "Device " a href={ "/devices/" (url_component(id)) } { code { (shown(id)) } } }
        @if device.revocation.is_some() {
            p { "This device is already revoked." }
        } @else if !console.can_revoke() {
            p #cannot-revoke { "Your role (" (role_name(console.me.role)) ") cannot revoke devices; "
                "the service would refuse." }
        } @else {
            p { strong { "Revocation is final." } " Every unexpired certificate of this device goes on the "
                "CRL at once, and the device can no longer onboard or renew. Removing its certificates "
                "from AWS or Azure is up to you." }
            @if live.is_empty() {
                p { "It holds no live certificate now." }
            } @else {
                p { "Certificates that will be revoked:" }
                ul { @for c in &live {
                    li { code { (shown(&c.serial)) } " (slot " (c.key_slot) ", until " (when(c.not_after.as_ref())) ")" }
                } }
            }
            form #revoke-form method="post" action={ "/devices/" (id) "/revoke" } {
                (csrf_field(&console))
                fieldset {
                    legend { "Reason (RFC 5280 CRLReason)" }
                    @for (i, (reason, name, meaning)) in REASONS.iter().enumerate() {
                        label.choice {
                            input type="radio" name="reason" value=(reason.as_str_name()) required checked[i == 0];
                            " " strong { (name) } " — " (meaning)
                        }
                    }
                }
                label for="comment" { "Comment for the audit log (at most " (MAX_COMMENT) " characters)" }
                textarea #comment name="comment" maxlength=(MAX_COMMENT) rows="3" {}
                div.actions {
                    button.danger type="submit" { "Revoke device" }
                    a.button href={ "/devices/" (url_component(id)) } { "Cancel" }
                }
            }
        }
    };
    Ok(page(&console, Section::Devices, "Revoke a device", &body))
}

/// What the confirmation form sends (its CSRF field was checked before the handler runs).
#[derive(Debug, Deserialize)]
pub(crate) struct RevokeForm {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    comment: String,
}

/// `POST /devices/{id}/revoke`.
pub(crate) async fn submit(
    State(console): State<SharedConsole>,
    Path(device_id): Path<String>,
    Form(form): Form<RevokeForm>,
) -> Result<Response, PageError> {
    let reason = RevocationReason::from_str_name(&form.reason)
        .ok_or_else(|| PageError::BadRequest("choose a revocation reason".into()))?;
    let response = console
        .client()
        .revoke_device(RevokeDeviceRequest {
            device_id,
            reason: reason as i32,
            comment: form.comment,
        })
        .await
        .map_err(PageError::rpc("RevokeDevice"))?
        .into_inner();
    console.fleet.invalidate();
    let device = response
        .device
        .ok_or_else(|| PageError::Internal("RevokeDevice without a device".into()))?;
    // The service's DeviceId (64 hex digits), not the path's text, goes into the redirect.
    Ok(Redirect::to(&format!(
        "/devices/{}?revoked=1",
        hex_only(&device.device_id)
    ))
    .into_response())
}

/// `text` if it is hex (a DeviceId), else nothing: a redirect target must not carry anything
/// else.
fn hex_only(text: &str) -> &str {
    if text.bytes().all(|b| b.is_ascii_hexdigit()) {
        text
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_of_the_contract_can_be_chosen_once() {
        let mut names: Vec<_> = REASONS.iter().map(|(r, _, _)| r.as_str_name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 6);
        for (reason, _, _) in REASONS {
            assert_eq!(
                RevocationReason::from_str_name(reason.as_str_name()),
                Some(reason)
            );
        }
    }

    #[test]
    fn redirects_carry_hex_only() {
        assert_eq!(hex_only("ab01"), "ab01");
        assert_eq!(hex_only("//evil.example"), "");
    }
}
