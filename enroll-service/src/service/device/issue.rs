//! Issuing a credential for a verified proof: re-check, return the unchanged credential
//! (idempotent) or sign a leaf, and make it durable before it is sent.
//!
//! ```text
//!  read the device (version v) ─▶ re-check ─▶ still current? ─▶ the same bundle again
//!                                      └─▶ sign ─▶ commit (PutDevice at v, serial unused)
//!     SerialTaken ─────▶ draw another serial, sign again (a retry that can succeed)
//!     DeviceChanged ───▶ read the device again and decide again from the top: another stream
//!                        (maybe on another replica) may have issued what this proof asks for
//!     anything else ───▶ an error; nothing signed again (a batch that is gone stays gone)
//! ```

use rot_core::keys::{DeviceId, KeySlot, PublicKey};
use time::OffsetDateTime;

use oxroot_proto::v1;

use super::checks::{Eligible, Exchange, check_eligible};
use super::read_facts;
use super::refusal::Refusal;
use crate::audit::AuditDraft;
use crate::error::ServiceError;
use crate::model::{
    CountsDelta, CredentialRecord, CredentialStatus, CrlEntryRecord, DeviceEvent, DeviceEventKind,
    DeviceRecord, RefusalDetail,
};
use crate::pki::{CertificateAuthority, LeafRequest, RevocationReason, Serial, Validity};
use crate::policy::PolicySpec;
use crate::service::locks::MAX_ATTEMPTS;
use crate::service::{Issuer, ServiceCore};
use crate::store::{Change, Conflict, Guard, Op, StoreError};
use crate::wire::timestamp;

/// Certificates start a little in the past so devices with a slightly slow clock accept them.
const BACKDATE: time::Duration = time::Duration::minutes(5);
/// Most serials drawn for one credential: a random 127-bit serial collides with one issued
/// before practically never, so more than one collision means something else is wrong.
const MAX_SERIALS: u32 = 3;

/// The credential bundle for an issued certificate: what the device stores and uses.
#[must_use]
pub(crate) fn bundle(
    ca: &CertificateAuthority,
    credential: &CredentialRecord,
    policy: &PolicySpec,
) -> v1::CredentialBundle {
    v1::CredentialBundle {
        device_id: credential.device_id.to_string(),
        serial: credential.serial.to_string(),
        certificate_pem: credential.certificate_pem.clone(),
        intermediate_pems: ca.chain_pems(),
        root_pem: ca.root_pem(),
        policy_kind: policy.kind() as i32,
        policy_name: policy.name.clone(),
        not_before: Some(timestamp(credential.not_before)),
        not_after: Some(timestamp(credential.not_after)),
        renew_after: credential.renew_after.map(timestamp),
        key_slot: u32::from(credential.key_slot),
        tls_versions: policy
            .tls_versions()
            .into_iter()
            .map(|version| version.to_proto() as i32)
            .collect(),
        endpoint: Some(policy.endpoint(
            &credential.device_id,
            &credential.subject_cn,
            &ca.root_pem(),
        )),
    }
}

/// What happens to the credential being replaced: superseded (still valid until it expires),
/// or revoked when the device moved within its owner since it was issued. Returns whether it
/// goes on the CRL.
fn retire(previous: &mut CredentialRecord, device: &DeviceRecord, now: OffsetDateTime) -> bool {
    if previous.assignment == device.assignment {
        previous.status = CredentialStatus::Superseded;
        false
    } else {
        // Moved within the owner: the old certificate stayed valid until now, the device
        // has re-onboarded under the new batch, so the old one goes on the CRL.
        previous.status = CredentialStatus::Revoked;
        previous.revocation = Some(CrlEntryRecord {
            revoked_at: now,
            reason: RevocationReason::Superseded,
        });
        true
    }
}

/// Whether `current` is exactly what this proof would be issued: then it is sent again rather
/// than a second certificate signed (a device retrying after a lost response).
fn still_current(
    exchange: Exchange,
    current: &CredentialRecord,
    eligible: &Eligible,
    dpk: &PublicKey,
    now: OffsetDateTime,
) -> bool {
    let unchanged = current.status == CredentialStatus::Active
        && current.assignment == eligible.device.assignment
        && current.key_slot == eligible.slot.get()
        && current.dpk == *dpk
        && current.owner == eligible.policy.owner
        && current.policy_name == eligible.policy.name
        && current.batch_id == eligible.batch.batch_id
        && now < current.not_after;
    let due = current.renew_after.is_some_and(|r| now >= r);
    match exchange {
        Exchange::Onboard => unchanged,
        Exchange::Renew { .. } => unchanged && !due,
    }
}

/// What one read-decide-commit of [`issue`] came to.
enum Attempt {
    /// The answer: a bundle (new, or the unchanged one again) or a refusal.
    Done(Result<v1::CredentialBundle, Refusal>),
    /// The device changed between the read and the commit: read again.
    DeviceChanged(StoreError),
}

/// Issues (or returns the unchanged) credential for a verified proof, and makes it durable
/// before returning it. The device's lock (an optimisation within this replica) is held
/// throughout; the device record's version is what guards the commit.
pub(super) async fn issue(
    core: &ServiceCore,
    exchange: Exchange,
    device_id: &DeviceId,
    epk: &PublicKey,
    earlier: &Eligible,
    dpk: &PublicKey,
    correlation: &str,
) -> Result<Result<v1::CredentialBundle, Refusal>, ServiceError> {
    let _lock = core.device_locks.lock(device_id).await;
    let mut attempts = 0;
    loop {
        attempts += 1;
        match attempt(core, exchange, device_id, epk, earlier, dpk, correlation).await? {
            Attempt::Done(answer) => return Ok(answer),
            Attempt::DeviceChanged(_) if attempts < MAX_ATTEMPTS => {}
            Attempt::DeviceChanged(conflict) => return Err(conflict.into()),
        }
    }
}

/// One read of the device, the decision, and at most one commit (several signatures only for
/// serial collisions).
async fn attempt(
    core: &ServiceCore,
    exchange: Exchange,
    device_id: &DeviceId,
    epk: &PublicKey,
    earlier: &Eligible,
    dpk: &PublicKey,
    correlation: &str,
) -> Result<Attempt, ServiceError> {
    let slot = earlier.slot;
    // The world may have changed while the device was signing: check again (the device
    // record; its batch and policy, if it is still in the same batch, cannot change).
    let facts = read_facts(
        core,
        device_id,
        exchange,
        Some((&earlier.batch, &earlier.policy)),
    )
    .await?;
    let eligible = match check_eligible(exchange, device_id, epk, || Ok(()), facts) {
        Ok(e) => e,
        Err(refusal) => return Ok(Attempt::Done(Err(refusal))),
    };
    if eligible.slot != slot {
        return Ok(Attempt::Done(Err(RefusalDetail::SlotMismatch.into())));
    }
    let now = OffsetDateTime::now_utc();
    // Checked at proof time against the Hello-time record; again on the record this commit is
    // conditional on, so two concurrent streams cannot certify two different keys for one slot.
    if eligible
        .device
        .slot_keys
        .get(&slot.get())
        .is_some_and(|known| known != dpk)
    {
        return Ok(Attempt::Done(Err(RefusalDetail::DpkMismatch.into())));
    }
    let current = match eligible.device.current_serial {
        Some(serial) => core.registry.credential(serial).await?,
        None => None,
    };
    // The owner's CA that issues now: after a rotation, renewals move devices to it.
    let issuer = core.authorities().issuing(&eligible.policy.owner).await?;
    if let Some(current) = &current
        && still_current(exchange, current, &eligible, dpk, now)
    {
        let issued_by = core
            .authorities()
            .issuer_of(&current.owner, &current.certificate_pem)
            .await?;
        // A certificate of a CA retired since is not what this proof would be issued now.
        if issued_by.id == issuer.id {
            return Ok(Attempt::Done(Ok(bundle(
                &issued_by.ca,
                current,
                &eligible.policy,
            ))));
        }
    }
    // The CA that issued the credential being replaced, whose CRL it may go on.
    let replaced = match current {
        Some(previous) if previous.status == CredentialStatus::Active => {
            let issued_by = core
                .authorities()
                .issuer_of(&previous.owner, &previous.certificate_pem)
                .await?;
            Some((previous, issued_by.id))
        }
        _ => None,
    };
    let subject_cn = eligible.policy.subject_cn(device_id)?;
    let mut serials = 0;
    let credential = loop {
        serials += 1;
        let credential = sign(&issuer, &eligible, slot, dpk, &subject_cn, now)?;
        let change = onboarding_change(
            exchange,
            &eligible,
            replaced.clone(),
            &credential,
            now,
            correlation,
        );
        match core.registry.commit(change).await {
            Ok(_) => break credential,
            // A random 127-bit serial collided with one already issued: draw another.
            Err(StoreError::Conflict(Conflict::SerialTaken(_))) if serials < MAX_SERIALS => {}
            Err(e) if e.is_device_changed() => return Ok(Attempt::DeviceChanged(e)),
            // Not retried, not signed again: the batch is gone, the store is down…
            Err(e) => return Err(e.into()),
        }
    };
    match exchange {
        Exchange::Onboard => core.metrics.onboarded(),
        Exchange::Renew { .. } => core.metrics.renewed(),
    }
    Ok(Attempt::Done(Ok(bundle(
        &issuer.ca,
        &credential,
        &eligible.policy,
    ))))
}

/// Signs a leaf for `dpk` with the owner's issuing CA under a fresh random serial, pointing at
/// that CA's CRL if the policy names a CRL base URL.
fn sign(
    issuer: &Issuer,
    eligible: &Eligible,
    slot: KeySlot,
    dpk: &PublicKey,
    subject_cn: &str,
    now: OffsetDateTime,
) -> Result<CredentialRecord, ServiceError> {
    let policy = &eligible.policy;
    let serial = Serial::random()?;
    let validity = Validity::new(now - BACKDATE, now + policy.certificate_lifetime)?;
    let leaf = issuer.ca.issue_device_certificate(&LeafRequest {
        public_key: *dpk.as_bytes(),
        common_name: subject_cn.to_owned(),
        validity,
        serial,
        crl_distribution_point: policy.crl_distribution_point(&issuer.id),
    })?;
    Ok(CredentialRecord {
        serial,
        device_id: eligible.device.device_id,
        key_slot: slot.get(),
        dpk: *dpk,
        owner: policy.owner.clone(),
        policy_name: policy.name.clone(),
        batch_id: eligible.batch.batch_id.clone(),
        assignment: eligible.device.assignment,
        subject_cn: subject_cn.to_owned(),
        issued_at: now,
        not_before: validity.not_before,
        not_after: validity.not_after,
        renew_after: (policy.renew_window > time::Duration::ZERO)
            .then(|| validity.not_after - policy.renew_window),
        certificate_pem: leaf.pem,
        status: CredentialStatus::Active,
        revocation: None,
    })
}

/// The one durable change of an issued credential: the credential (its serial never used
/// before), the replaced one (with the id of the CA that issued it) retired, the device, its
/// batch's counts, the event and the audit entry.
fn onboarding_change(
    exchange: Exchange,
    eligible: &Eligible,
    current: Option<(CredentialRecord, String)>,
    credential: &CredentialRecord,
    now: OffsetDateTime,
    correlation: &str,
) -> Change {
    let device = &eligible.device;
    let (policy, batch) = (&eligible.policy, &eligible.batch);
    let slot = credential.key_slot;
    let mut updated = device.clone();
    updated.key_slot = slot;
    updated.slot_keys.insert(slot, credential.dpk);
    updated.current_serial = Some(credential.serial);
    updated.serials.push(credential.serial);
    updated.credential_assignment = Some(device.assignment);
    updated.onboarded_at = Some(now);
    updated.last_seen = Some(now);

    let mut change = Change::new();
    change
        .guard(Guard::SerialAbsent(credential.serial))
        .op(Op::PutCredential(Box::new(credential.clone())));
    if let Some((mut previous, previous_issuer)) = current
        && previous.status == CredentialStatus::Active
    {
        if retire(&mut previous, device, now)
            && let Some(entry) = previous.revocation
        {
            // Not on the device's response path: the CRL refresher (and any GetCrl)
            // re-signs as soon as it sees a revoked serial that the CRL does not list yet.
            change.op(Op::Revoke {
                issuer: previous_issuer,
                serial: previous.serial,
                entry,
            });
        }
        change.op(Op::PutCredential(Box::new(previous)));
    }
    let (serial, key_slot) = (credential.serial, slot);
    let kind = match exchange {
        Exchange::Onboard => DeviceEventKind::Onboarded { serial, key_slot },
        Exchange::Renew { .. } => DeviceEventKind::Renewed { serial, key_slot },
    };
    let id = device.device_id;
    change
        .batch_moved(
            &batch.batch_id,
            CountsDelta::transition(device.state(), updated.state()),
            Some(DeviceEvent::new(id, kind, now, correlation)),
        )
        .op(Op::PutDevice(updated))
        .audit(
            AuditDraft::new(
                now,
                format!("device:{id}"),
                policy.owner.clone(),
                format!("device.{}", exchange.rpc()),
                format!("device:{id}"),
                "ok",
            )
            .detail("serial", serial.to_string())
            .detail("key_slot", slot.to_string())
            .detail("policy", format!("{}/{}", policy.owner, policy.name))
            .detail("batch", batch.batch_id.clone())
            .correlation(correlation),
        );
    change
}
