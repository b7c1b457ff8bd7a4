//! Status: what a device should do next, from its record, its batch's policy and its current
//! credential.

use rot_core::keys::DeviceId;
use time::OffsetDateTime;

use oxroot_proto::v1;

use crate::error::ServiceError;
use crate::model::DeviceState;
use crate::service::ServiceCore;
use crate::wire::timestamp;

/// What a device should do next.
///
/// # Errors
/// Registry failures.
pub(crate) async fn device_status(
    core: &ServiceCore,
    device_id: &DeviceId,
    presented_serial: &str,
) -> Result<v1::StatusResponse, ServiceError> {
    use v1::DeviceStatus as S;
    let now = OffsetDateTime::now_utc();
    let mut response = v1::StatusResponse {
        device_id: device_id.to_string(),
        next_check_after: Some(timestamp(now + time::Duration::hours(1))),
        ..v1::StatusResponse::default()
    };
    let Some(device) = core.registry.device(device_id).await? else {
        response.status = S::NotRegistered as i32;
        return Ok(response);
    };
    let batch = match &device.batch_id {
        Some(id) => core.registry.batch(id).await?,
        None => None,
    };
    let policy = match &batch {
        Some(b) => core.registry.policy(&b.owner, &b.policy_name).await?,
        None => None,
    };
    if let Some(policy) = &policy {
        response.policy_kind = policy.kind() as i32;
    }
    let credential = match device.current_serial {
        Some(serial) => core.registry.credential(serial).await?,
        None => None,
    };
    if let Some(c) = &credential {
        response.serial = c.serial.to_string();
        response.key_slot = u32::from(c.key_slot);
        response.not_after = Some(timestamp(c.not_after));
        response.renew_after = c.renew_after.map(timestamp);
        if let Some(renew_after) = c.renew_after
            && renew_after > now
        {
            response.next_check_after =
                Some(timestamp(renew_after.min(now + time::Duration::hours(24))));
        }
    }
    let status = match device.state() {
        DeviceState::Revoked => S::Revoked,
        DeviceState::AwaitingRegistration => S::NotRegistered,
        DeviceState::Unassigned | DeviceState::Ready => {
            response.onboarding_ready = policy.is_some();
            S::NotOnboarded
        }
        DeviceState::ReonboardPending => S::PolicyChanged,
        DeviceState::Onboarded => match &credential {
            Some(c) if !presented_serial.is_empty() && presented_serial != c.serial.to_string() => {
                S::PolicyChanged
            }
            Some(c)
                if policy
                    .as_ref()
                    .is_some_and(|p| p.name != c.policy_name || p.owner != c.owner) =>
            {
                S::PolicyChanged
            }
            Some(c) if now >= c.not_after || c.renew_after.is_some_and(|r| now >= r) => {
                S::RenewalDue
            }
            Some(_) => S::Enrolled,
            None => S::NotOnboarded,
        },
    };
    response.status = status as i32;
    Ok(response)
}
