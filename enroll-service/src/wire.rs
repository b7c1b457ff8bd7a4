//! The service's one edge to the wire: conversions between the domain's types and the
//! `oxroot.v1` messages and enums. Inside the service every concept has one type (a device
//! state, a revocation reason, a role); the wire enum appears only here and in the handlers'
//! request parsing and response building.

use time::OffsetDateTime;

use oxroot_proto::v1;

use crate::model::{BatchCounts, DeviceEvent, DeviceEventKind, DeviceState, RefusalDetail};
use crate::pki::{RevocationReason, Role};

/// Proto `Timestamp` from an instant.
#[must_use]
pub fn timestamp(at: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.unix_timestamp(),
        nanos: at.nanosecond() as i32,
    }
}

/// Proto `Duration` from a span (negative spans become zero).
#[must_use]
pub fn duration(span: time::Duration) -> prost_types::Duration {
    let span = span.max(time::Duration::ZERO);
    prost_types::Duration {
        seconds: span.whole_seconds(),
        nanos: span.subsec_nanoseconds(),
    }
}

impl From<DeviceState> for v1::DeviceState {
    fn from(state: DeviceState) -> Self {
        match state {
            DeviceState::AwaitingRegistration => Self::AwaitingRegistration,
            DeviceState::Unassigned => Self::Unassigned,
            DeviceState::Ready => Self::Ready,
            DeviceState::Onboarded => Self::Onboarded,
            DeviceState::ReonboardPending => Self::ReonboardPending,
            DeviceState::Revoked => Self::Revoked,
        }
    }
}

/// The state a wire filter names; `None` for UNSPECIFIED (no filter).
#[must_use]
pub fn device_state_filter(state: v1::DeviceState) -> Option<DeviceState> {
    match state {
        v1::DeviceState::Unspecified => None,
        v1::DeviceState::AwaitingRegistration => Some(DeviceState::AwaitingRegistration),
        v1::DeviceState::Unassigned => Some(DeviceState::Unassigned),
        v1::DeviceState::Ready => Some(DeviceState::Ready),
        v1::DeviceState::Onboarded => Some(DeviceState::Onboarded),
        v1::DeviceState::ReonboardPending => Some(DeviceState::ReonboardPending),
        v1::DeviceState::Revoked => Some(DeviceState::Revoked),
    }
}

impl From<RevocationReason> for v1::RevocationReason {
    fn from(reason: RevocationReason) -> Self {
        match reason {
            RevocationReason::Unspecified => Self::Unspecified,
            RevocationReason::KeyCompromise => Self::KeyCompromise,
            RevocationReason::AffiliationChanged => Self::AffiliationChanged,
            RevocationReason::Superseded => Self::Superseded,
            RevocationReason::CessationOfOperation => Self::CessationOfOperation,
            RevocationReason::PrivilegeWithdrawn => Self::PrivilegeWithdrawn,
        }
    }
}

impl From<v1::RevocationReason> for RevocationReason {
    fn from(reason: v1::RevocationReason) -> Self {
        match reason {
            v1::RevocationReason::Unspecified => Self::Unspecified,
            v1::RevocationReason::KeyCompromise => Self::KeyCompromise,
            v1::RevocationReason::AffiliationChanged => Self::AffiliationChanged,
            v1::RevocationReason::Superseded => Self::Superseded,
            v1::RevocationReason::CessationOfOperation => Self::CessationOfOperation,
            v1::RevocationReason::PrivilegeWithdrawn => Self::PrivilegeWithdrawn,
        }
    }
}

impl From<Role> for v1::Role {
    fn from(role: Role) -> Self {
        match role {
            Role::Admin => Self::Admin,
            Role::Operator => Self::Operator,
            Role::Auditor => Self::Auditor,
        }
    }
}

/// The role a wire enum names; `None` for UNSPECIFIED.
#[must_use]
pub fn role(role: v1::Role) -> Option<Role> {
    match role {
        v1::Role::Unspecified => None,
        v1::Role::Admin => Some(Role::Admin),
        v1::Role::Operator => Some(Role::Operator),
        v1::Role::Auditor => Some(Role::Auditor),
    }
}

impl From<&BatchCounts> for v1::BatchCounts {
    fn from(counts: &BatchCounts) -> Self {
        Self {
            total: counts.total,
            awaiting_registration: counts.awaiting_registration,
            registered: counts.registered,
            onboarded: counts.onboarded,
            reonboard_pending: counts.reonboard_pending,
            revoked: counts.revoked,
            refusals: counts.refusals,
        }
    }
}

impl From<RefusalDetail> for v1::RefusalDetail {
    fn from(detail: RefusalDetail) -> Self {
        match detail {
            RefusalDetail::Unregistered => Self::Unregistered,
            RefusalDetail::DeviceIdMismatch => Self::DeviceIdMismatch,
            RefusalDetail::NotInBatch => Self::NotInBatch,
            RefusalDetail::Revoked => Self::Revoked,
            RefusalDetail::NonceReplayed => Self::NonceReplayed,
            RefusalDetail::NonceExpired => Self::NonceExpired,
            RefusalDetail::NonceForeign => Self::NonceForeign,
            RefusalDetail::BadEskSignature => Self::BadEskSignature,
            RefusalDetail::BadDskSignature => Self::BadDskSignature,
            RefusalDetail::DpkMismatch => Self::DpkMismatch,
            RefusalDetail::SlotMismatch => Self::SlotMismatch,
            RefusalDetail::RateLimited => Self::RateLimited,
            RefusalDetail::KeySlotUnavailable => Self::KeySlotUnavailable,
            RefusalDetail::NotOnboarded => Self::NotOnboarded,
            RefusalDetail::FirmwareNotMeasured => Self::FirmwareNotMeasured,
            RefusalDetail::FirmwareNotAccepted => Self::FirmwareNotAccepted,
            RefusalDetail::BadFirmwareSignature => Self::BadFirmwareSignature,
            RefusalDetail::BadAliasKey => Self::BadAliasKey,
        }
    }
}

/// What a device is told for a refusal: the coarse reason of its precise detail. Every proof
/// failure reads the same, so a device (or an attacker) learns nothing about which check
/// failed.
#[must_use]
pub fn refusal_reason(detail: RefusalDetail) -> v1::RefusalReason {
    use v1::RefusalReason as R;
    match detail {
        RefusalDetail::Unregistered | RefusalDetail::DeviceIdMismatch => R::UnknownDevice,
        RefusalDetail::NotInBatch => R::NotProvisioned,
        RefusalDetail::Revoked => R::Revoked,
        RefusalDetail::NonceReplayed
        | RefusalDetail::NonceForeign
        | RefusalDetail::BadEskSignature
        | RefusalDetail::BadDskSignature
        | RefusalDetail::DpkMismatch
        | RefusalDetail::SlotMismatch
        | RefusalDetail::FirmwareNotMeasured
        | RefusalDetail::FirmwareNotAccepted
        | RefusalDetail::BadFirmwareSignature
        | RefusalDetail::BadAliasKey => R::ProofRejected,
        RefusalDetail::NonceExpired => R::ChallengeExpired,
        RefusalDetail::RateLimited => R::RateLimited,
        RefusalDetail::KeySlotUnavailable => R::KeySlotUnavailable,
        RefusalDetail::NotOnboarded => R::NotOnboarded,
    }
}

impl From<&DeviceEvent> for v1::DeviceEvent {
    fn from(event: &DeviceEvent) -> Self {
        use v1::DeviceEventKind as K;
        let mut wire = Self {
            device_id: event.device_id.to_string(),
            time: Some(timestamp(event.at)),
            correlation_id: event.correlation.clone(),
            ..Self::default()
        };
        let kind = match event.kind {
            DeviceEventKind::Added => K::Added,
            DeviceEventKind::Registered => K::Registered,
            DeviceEventKind::Onboarded { serial, key_slot }
            | DeviceEventKind::Renewed { serial, key_slot } => {
                wire.serial = serial.to_string();
                wire.key_slot = u32::from(key_slot);
                if matches!(event.kind, DeviceEventKind::Onboarded { .. }) {
                    K::Onboarded
                } else {
                    K::Renewed
                }
            }
            DeviceEventKind::Refused(detail) => {
                wire.refusal_detail = v1::RefusalDetail::from(detail) as i32;
                K::Refused
            }
            DeviceEventKind::Revoked => K::Revoked,
            DeviceEventKind::TransferredOut => K::TransferredOut,
        };
        wire.kind = kind as i32;
        wire
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_detail_has_its_wire_name() {
        for detail in RefusalDetail::ALL {
            let wire = v1::RefusalDetail::from(detail);
            assert_eq!(
                wire.as_str_name()
                    .trim_start_matches("REFUSAL_DETAIL_")
                    .to_ascii_lowercase(),
                detail.as_str()
            );
            assert_ne!(refusal_reason(detail), v1::RefusalReason::Unspecified);
        }
    }
}
