//! `onboard` and `renew`: answer the service's challenge, check what it issued against the
//! silicon, then store it. A credential that does not verify is never stored, and the one it
//! would replace stays in place (and is kept as the fallback after a successful renewal).

use oxroot_proto::v1;
use rustls_pki_types::UnixTime;

use super::{exchange_error, key_slot, open_chip, refused, service};
use crate::chip::SiliconChip;
use crate::cli::{ServiceArgs, SiliconArgs};
use crate::credential::{self, Endpoint, StoredCredential};
use crate::error::AgentError;
use crate::report::{Console, Report};
use crate::state::{self, StateDir};
use oxroot_client::device::{self, Chip, Outcome};

pub(super) async fn onboard(
    state: &StateDir,
    silicon: &SiliconArgs,
    service_args: &ServiceArgs,
    console: &mut Console<'_>,
) -> Result<(), AgentError> {
    let (target, retry) = service(service_args)?;
    let chip = open_chip(state, silicon)?;
    let outcome = retry
        .run(&target, console.err, async |client| {
            device::onboard(client, &chip)
                .await
                .map_err(|e| exchange_error(e, &target))
        })
        .await?;
    let stored = accept(state, &chip, &outcome)?;
    report("onboarded", &stored, state).print(console)
}

pub(super) async fn renew(
    state: &StateDir,
    silicon: &SiliconArgs,
    service_args: &ServiceArgs,
    rotate: bool,
    console: &mut Console<'_>,
) -> Result<(), AgentError> {
    let current = state.require_credential()?;
    let (target, retry) = service(service_args)?;
    let chip = open_chip(state, silicon)?;
    // 0 asks the service to keep the slot; a retried rotation names the same target slot, which
    // the service does not rotate twice.
    let target_slot = if rotate {
        u32::from(key_slot(current.key_slot)?.next().get())
    } else {
        0
    };
    let outcome = retry
        .run(&target, console.err, async |client| {
            device::renew(client, &chip, target_slot, &current.serial)
                .await
                .map_err(|e| exchange_error(e, &target))
        })
        .await?;
    let stored = accept(state, &chip, &outcome)?;
    let title = if stored.serial == current.serial {
        "credential unchanged (not yet due for renewal)"
    } else {
        "renewed"
    };
    report(title, &stored, state)
        .field(
            "previous_serial",
            (stored.serial != current.serial).then_some(current.serial),
        )
        .print(console)
}

/// Checks an outcome against this chip and stores the credential.
fn accept(
    state: &StateDir,
    chip: &SiliconChip,
    outcome: &Outcome,
) -> Result<StoredCredential, AgentError> {
    let bundle: &v1::CredentialBundle = match outcome {
        Outcome::Credentials(bundle) => bundle,
        Outcome::Refused(refusal) => return Err(refused(refusal)),
    };
    let stored = StoredCredential::from_bundle(bundle)?;
    // The certificate must certify the key this chip derives for it: the slot's DPK, or its
    // alias key for the firmware the credential names (which must be the firmware that runs).
    let certified_key =
        chip.credential_public_key(key_slot(stored.key_slot)?, stored.firmware()?.as_ref())?;
    credential::verify(
        &stored,
        &chip.device_id().to_string(),
        &certified_key,
        UnixTime::now(),
    )
    .map_err(|e| {
        AgentError::Protocol(format!(
            "the service issued a credential this device cannot use, so it was not stored: {e}"
        ))
    })?;
    state.save_credential(&stored)?;
    Ok(stored)
}

/// What a stored credential holds, for the onboard / renew / status output.
pub(super) fn report(title: &str, stored: &StoredCredential, state: &StateDir) -> Report {
    let report = Report::new(title)
        .field("device_id", stored.device_id.clone())
        .field("serial", stored.serial.clone())
        .field("key_slot", stored.key_slot)
        .field("policy_kind", stored.endpoint.kind())
        .field("policy_name", stored.policy_name.clone())
        .field("not_before", stored.not_before.clone())
        .field("not_after", stored.not_after.clone())
        .field("renew_after", stored.renew_after.clone());
    let report = match &stored.endpoint {
        Endpoint::Mosquitto {
            host,
            port,
            topic_prefix,
            client_id,
            ..
        } => report
            .field("broker", format!("{host}:{port}"))
            .field("client_id", client_id.clone())
            .field("topic_prefix", topic_prefix.clone()),
        Endpoint::AwsIot {
            host,
            port,
            client_id,
            topic_prefix,
            ..
        } => report
            .field("endpoint", format!("{host}:{port}"))
            .field("client_id", client_id.clone())
            .field("topic_prefix", topic_prefix.clone()),
        Endpoint::AzureDps {
            global_endpoint,
            port,
            id_scope,
            registration_id,
            ..
        } => report
            .field("endpoint", format!("{global_endpoint}:{port}"))
            .field("id_scope", id_scope.clone())
            .field("registration_id", registration_id.clone()),
    };
    report.field(
        "stored_in",
        state.path(state::CREDENTIAL).display().to_string(),
    )
}
