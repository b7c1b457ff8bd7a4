//! Refusals: a coarse reason for the device, a precise detail for operators, and the audit
//! entry that connects them through a reference the device can quote.

use std::net::IpAddr;
use std::time::Duration;

use rot_core::FirmwareMeasurement;
use rot_core::keys::DeviceId;
use time::OffsetDateTime;

use oxroot_proto::v1;

use crate::audit::AuditDraft;
use crate::error::ServiceError;
use crate::model::{CountsDelta, DeviceEvent, DeviceEventKind, RefusalDetail};
use crate::service::ServiceCore;
use crate::service::locks::retry_device_changes;
use crate::store::{Change, StoreError};
use crate::wire::refusal_reason;

/// A refusal of an Onboard or Renew.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// What operators see; the device hears only its coarse reason.
    pub(crate) detail: RefusalDetail,
    /// When the device may retry (rate limit).
    pub(crate) retry_after: Option<Duration>,
    /// The firmware the refused proof named (vouched for by the ESK), for the audit entry.
    pub(crate) firmware: Option<FirmwareMeasurement>,
}

impl From<RefusalDetail> for Refusal {
    fn from(detail: RefusalDetail) -> Self {
        Self {
            detail,
            retry_after: None,
            firmware: None,
        }
    }
}

impl Refusal {
    /// A refusal that concerns the firmware `measurement` the device proved it runs.
    pub(crate) fn firmware(detail: RefusalDetail, measurement: FirmwareMeasurement) -> Self {
        Self {
            firmware: Some(measurement),
            ..detail.into()
        }
    }

    /// The coarse reason the device is told.
    pub(crate) fn reason(&self) -> v1::RefusalReason {
        refusal_reason(self.detail)
    }

    /// Text for device logs; never names the precise cause of a failed proof.
    pub(crate) fn device_message(&self) -> &'static str {
        match self.reason() {
            v1::RefusalReason::UnknownDevice => "unknown device: register first",
            v1::RefusalReason::NotProvisioned => "the device is not in a batch yet",
            v1::RefusalReason::Revoked => "the device is revoked",
            v1::RefusalReason::ProofRejected => "the proof was rejected; start a new stream",
            v1::RefusalReason::ChallengeExpired => "the challenge expired; start a new stream",
            v1::RefusalReason::RateLimited => "too many attempts; retry later",
            v1::RefusalReason::KeySlotUnavailable => "the requested key slot cannot be used",
            v1::RefusalReason::NotOnboarded => "the device was never onboarded; use Onboard",
            v1::RefusalReason::Unspecified => "refused",
        }
    }

    /// The wire message; `reference` is the audit entry's correlation ID, or empty.
    pub(crate) fn to_proto(&self, reference: &str) -> v1::Refusal {
        v1::Refusal {
            reason: self.reason() as i32,
            message: self.device_message().to_owned(),
            retry_after: self.retry_after.map(|d| prost_types::Duration {
                seconds: d.as_secs() as i64,
                nanos: d.subsec_nanos() as i32,
            }),
            reference: reference.to_owned(),
        }
    }
}

/// Audits a refusal and counts it on the device and its batch. Returns whether it was
/// audited: refusals of DeviceIds with no record are audited only within their client
/// address's budget, since anyone can invent such IDs by the million.
pub(crate) async fn record_refusal(
    core: &ServiceCore,
    device_id: &DeviceId,
    rpc: &str,
    refusal: &Refusal,
    correlation: &str,
    peer: Option<IpAddr>,
) -> Result<bool, ServiceError> {
    let _lock = core.device_locks.lock(device_id).await;
    let audited = retry_device_changes(|| {
        record_refusal_once(core, device_id, rpc, refusal, correlation, peer)
    })
    .await?;
    if audited {
        core.metrics.refused(refusal.detail.as_str());
    }
    Ok(audited)
}

/// One read of the device and one commit of the refusal (or none, for an unknown device past
/// its address's budget).
async fn record_refusal_once(
    core: &ServiceCore,
    device_id: &DeviceId,
    rpc: &str,
    refusal: &Refusal,
    correlation: &str,
    peer: Option<IpAddr>,
) -> Result<Result<bool, StoreError>, ServiceError> {
    let now = OffsetDateTime::now_utc();
    let detail = refusal.detail;
    let mut change = Change::new();
    // A Hello naming someone else's DeviceId with another EPK proves nothing about that
    // device: it must not add to its refusal counts, its batch's events or its owner's log.
    let device = if detail == RefusalDetail::DeviceIdMismatch {
        None
    } else {
        core.registry.device(device_id).await?
    };
    if device.is_none()
        && let Some(ip) = peer
        && !core.limits.audit_unknown_refusal(ip)
    {
        core.metrics.refused(detail.as_str());
        core.metrics.refusal_unaudited();
        return Ok(Ok(false));
    }
    let owner = device
        .as_ref()
        .and_then(|d| d.owner.clone())
        .unwrap_or_else(|| "*".to_owned());
    // Unknown DeviceIds get no record: anyone can invent them, and the registry must not
    // grow with an attacker's imagination.
    if let Some(mut device) = device {
        device.refusals += 1;
        if let Some(batch_id) = &device.batch_id {
            let event = DeviceEvent::new(
                *device_id,
                DeviceEventKind::Refused(detail),
                now,
                correlation,
            );
            change.batch_moved(batch_id, CountsDelta::refusal(), Some(event));
        }
        change.op(crate::store::Op::PutDevice(device));
    }
    let mut entry = AuditDraft::new(
        now,
        format!("device:{device_id}"),
        owner,
        "device.refuse",
        format!("device:{device_id}"),
        "refused",
    )
    .detail("rpc", rpc)
    .detail("refusal_detail", detail.as_str())
    .detail("refusal_reason", refusal.reason().as_str_name());
    if let Some(measurement) = refusal.firmware {
        entry = entry.detail("firmware_measurement", measurement.to_string());
    }
    change.audit(entry.correlation(correlation));
    Ok(core.registry.commit(change).await.map(|_| true))
}
