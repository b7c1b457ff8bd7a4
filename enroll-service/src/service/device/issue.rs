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
//!
//! The credential a new one replaces is superseded, not revoked: the device may not get the new
//! one. Its revocation is scheduled for the end of the policy's grace, and comes sooner when
//! the device proves it uses a later credential: here, a renewal that names the credential it
//! holds and proves that credential's key (see [`crate::service::supersede`]).

use rot_core::FirmwareMeasurement;
use rot_core::keys::{DeviceId, KeySlot, PublicKey};
use time::OffsetDateTime;

use oxroot_proto::v1;

use super::checks::{Eligible, Exchange, ProvedKeys, check_eligible};
use super::read_facts;
use super::refusal::Refusal;
use crate::audit::AuditDraft;
use crate::error::ServiceError;
use crate::model::{
    CountsDelta, CredentialRecord, CredentialStatus, CrlEntryRecord, DeviceEvent, DeviceEventKind,
    DeviceRecord, RefusalDetail,
};
use crate::pki::{
    CertificateAuthority, CertifiedKey, LeafRequest, RevocationReason, Serial, Validity,
};
use crate::policy::PolicySpec;
use crate::service::authorities::sign_off_runtime;
use crate::service::locks::MAX_ATTEMPTS;
use crate::service::supersede::{self, Cause};
use crate::service::{Issuer, ServiceCore};
use crate::store::{Change, Conflict, Guard, Op, StoreError};
use crate::wire::timestamp;

/// Certificates start a little in the past so devices with a slightly slow clock accept them.
const BACKDATE: time::Duration = time::Duration::minutes(5);
/// Most serials drawn for one credential: a random 127-bit serial collides with one issued
/// before practically never, so more than one collision means something else is wrong.
const MAX_SERIALS: u32 = 3;

/// The credential bundle for an issued certificate: what the device stores and uses.
/// `firmware` is the measurement the certificate names (the proof's, which the certificate was
/// issued or found to match), so the hot path parses no certificate.
#[must_use]
pub(crate) fn bundle(
    ca: &CertificateAuthority,
    credential: &CredentialRecord,
    policy: &PolicySpec,
    firmware: Option<FirmwareMeasurement>,
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
        firmware_measurement: firmware
            .map(|measurement| measurement.as_bytes().to_vec())
            .unwrap_or_default(),
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

/// What happens to the credential being replaced: superseded (still valid until the device
/// proves its successor or the policy's grace ends), or revoked when the device moved within
/// its owner since it was issued. Returns whether it goes on the CRL now.
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
/// than a second certificate signed (a device retrying after a lost response). A device that
/// now runs other firmware proves another alias key, so it gets a new certificate.
fn still_current(
    exchange: Exchange,
    current: &CredentialRecord,
    eligible: &Eligible,
    keys: &ProvedKeys,
    now: OffsetDateTime,
) -> bool {
    let certifies_the_same = || {
        CertifiedKey::of_certificate_pem(&current.certificate_pem).is_some_and(|certified| {
            certified.public_key == keys.certified_key().as_bytes()
                && certified.firmware == keys.measurement()
        })
    };
    let unchanged = current.status == CredentialStatus::Active
        && current.assignment == eligible.device.assignment
        && current.key_slot == eligible.slot.get()
        && current.dpk == keys.dpk
        && current.owner == eligible.policy.owner
        && current.policy_name == eligible.policy.name
        && current.batch_id == eligible.batch.batch_id
        && now < current.not_after
        && certifies_the_same();
    let due = current.renew_after.is_some_and(|r| now >= r);
    match exchange {
        Exchange::Onboard => unchanged,
        Exchange::Renew { .. } => unchanged && !due,
    }
}

/// What a renewal's proof retires: the device named `held_serial` as the credential it holds
/// and proved that credential's key, so the credentials a renewal replaced before it are no
/// longer needed ([`supersede::predecessors`]); their revocation goes into the renewal's own
/// change.
struct Retirement<'a> {
    core: &'a ServiceCore,
    /// The credential the device proved it uses, if it did.
    successor: Option<Serial>,
    /// The credentials that proof retires.
    retired: Vec<CredentialRecord>,
    device_id: &'a DeviceId,
    owner: &'a str,
    rpc: &'static str,
    now: OffsetDateTime,
    correlation: &'a str,
}

impl<'a> Retirement<'a> {
    /// What a proof by `eligible.slot`'s key, `dpk`, retires when the device says it holds
    /// `held_serial`: nothing unless that is one of its credentials, for that very key, not
    /// revoked.
    async fn of_proof(
        core: &'a ServiceCore,
        eligible: &'a Eligible,
        held_serial: Option<Serial>,
        dpk: &PublicKey,
        rpc: &'static str,
        now: OffsetDateTime,
        correlation: &'a str,
    ) -> Result<Self, ServiceError> {
        let device = &eligible.device;
        let proved = match held_serial {
            Some(serial) => core.registry.credential(serial).await?.is_some_and(|held| {
                held.device_id == device.device_id
                    && held.key_slot == eligible.slot.get()
                    && held.dpk == *dpk
                    && held.status != CredentialStatus::Revoked
            }),
            None => false,
        };
        let successor = held_serial.filter(|_| proved);
        let mut retired = match successor {
            Some(serial) => supersede::predecessors(core, device, serial).await?,
            None => Vec::new(),
        };
        // Best effort: these revocations ride along with the renewal, which must not fail
        // because of them (an old credential's issuer whose key store is away, say). What
        // cannot be staged now is left to the grace sweep.
        if !retired.is_empty()
            && let Err(e) =
                supersede::stage_revocations(core, retired.clone(), now, &mut Change::new()).await
        {
            tracing::warn!(device_id = %device.device_id, error = %e, "superseded credentials left to the grace sweep");
            retired.clear();
        }
        Ok(Self {
            core,
            successor,
            retired,
            device_id: &device.device_id,
            owner: &eligible.policy.owner,
            rpc,
            now,
            correlation,
        })
    }

    /// Stages the revocations and their audit entry into `change`.
    async fn stage(&self, change: &mut Change) -> Result<(), ServiceError> {
        let revoked =
            supersede::stage_revocations(self.core, self.retired.clone(), self.now, change).await?;
        if let (Some(successor), false) = (self.successor, revoked.is_empty()) {
            let cause = Cause::SuccessorProved {
                successor,
                rpc: self.rpc,
            };
            change.audit(supersede::audit(
                self.device_id,
                self.owner,
                &revoked,
                cause,
                self.now,
                self.correlation,
            ));
        }
        Ok(())
    }
}

/// What one read-decide-commit of [`issue`] came to.
#[allow(
    clippy::large_enum_variant,
    reason = "one per attempt, returned at once; boxing buys nothing"
)]
enum Attempt {
    /// The answer: a bundle (new, or the unchanged one again) or a refusal.
    Done(Result<v1::CredentialBundle, Refusal>),
    /// The device changed between the read and the commit: read again.
    DeviceChanged(StoreError),
    /// The answer would be sent without a commit (the unchanged credential again), so the
    /// Hello-time record it was decided on must be read again first: no commit's
    /// compare-and-set vouches for it.
    Unverified,
}

/// Issues (or returns the unchanged) credential for a verified proof, and makes it durable
/// before returning it. `held_serial` is the credential the device says it holds
/// (RenewHello.serial). The device's lock (an optimisation within this replica) is held
/// throughout; the device record's version is what guards the commit.
#[allow(
    clippy::too_many_arguments,
    reason = "one exchange's facts; a struct would only rename them"
)]
pub(super) async fn issue(
    core: &ServiceCore,
    exchange: Exchange,
    device_id: &DeviceId,
    epk: &PublicKey,
    earlier: &Eligible,
    keys: &ProvedKeys,
    held_serial: Option<Serial>,
    correlation: &str,
) -> Result<Result<v1::CredentialBundle, Refusal>, ServiceError> {
    let _lock = core.device_locks.lock(device_id).await;
    let facts = Proved {
        exchange,
        device_id,
        epk,
        earlier,
        keys,
        held_serial,
        correlation,
    };
    // The first attempt decides on the record read at Hello: the commit is conditional on its
    // version, so a device that changed since makes the commit fail and the next attempt read
    // it afresh. That spares a read per onboarding.
    let mut read_afresh = false;
    let mut attempts = 0;
    loop {
        attempts += 1;
        match attempt(core, &facts, read_afresh).await? {
            Attempt::Done(answer) => return Ok(answer),
            Attempt::Unverified if !read_afresh => read_afresh = true,
            Attempt::DeviceChanged(_) if attempts < MAX_ATTEMPTS => read_afresh = true,
            Attempt::DeviceChanged(conflict) => return Err(conflict.into()),
            Attempt::Unverified => {
                return Err(ServiceError::Internal(
                    "a freshly read record cannot be unverified".into(),
                ));
            }
        }
    }
}

/// What a verified proof established, for [`attempt`].
#[derive(Clone, Copy)]
struct Proved<'a> {
    exchange: Exchange,
    device_id: &'a DeviceId,
    epk: &'a PublicKey,
    earlier: &'a Eligible,
    keys: &'a ProvedKeys,
    held_serial: Option<Serial>,
    correlation: &'a str,
}

/// What the attempt decides on: the Hello-time facts, or the registry's now.
async fn eligible_now(
    core: &ServiceCore,
    proved: &Proved<'_>,
    read_afresh: bool,
) -> Result<Result<Eligible, Refusal>, ServiceError> {
    if !read_afresh {
        return Ok(Ok(proved.earlier.clone()));
    }
    // The world changed while the device was signing: check again.
    let facts = read_facts(core, proved.device_id, proved.exchange).await?;
    Ok(check_eligible(
        proved.exchange,
        proved.device_id,
        proved.epk,
        || Ok(()),
        facts,
    ))
}

/// One read of the device, the decision, and at most one commit (several signatures only for
/// serial collisions).
async fn attempt(
    core: &ServiceCore,
    proved: &Proved<'_>,
    read_afresh: bool,
) -> Result<Attempt, ServiceError> {
    let Proved {
        exchange,
        device_id,
        earlier,
        keys,
        held_serial,
        correlation,
        ..
    } = *proved;
    let slot = earlier.slot;
    let eligible = match eligible_now(core, proved, read_afresh).await? {
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
        .is_some_and(|known| *known != keys.dpk)
    {
        return Ok(Attempt::Done(Err(RefusalDetail::DpkMismatch.into())));
    }
    let current = match eligible.device.current_serial {
        Some(serial) => core.registry.credential(serial).await?,
        None => None,
    };
    // The owner's CA that issues now: after a rotation, renewals move devices to it. The
    // owner record is the one read with the device (at Hello, on a first attempt): a rotation
    // in between issues this one certificate from the CA just retired, which stays trusted
    // (exports carry both chains, its CRL is signed until its last certificate expires), as if
    // the proof had come a moment earlier.
    let issuer = match &eligible.owner {
        Some(record) if record.name == eligible.policy.owner => {
            core.authorities().issuing_from(record)?
        }
        _ => core.authorities().issuing(&eligible.policy.owner).await?,
    };
    let retirement = Retirement::of_proof(
        core,
        &eligible,
        held_serial,
        &keys.dpk,
        exchange.rpc(),
        now,
        correlation,
    )
    .await?;
    if let Some(current) = &current
        && still_current(exchange, current, &eligible, keys, now)
    {
        let issued_by = core
            .authorities()
            .issuer_of(&current.owner, &current.certificate_pem)
            .await?;
        // A certificate of a CA retired since is not what this proof would be issued now: it
        // is replaced below, and the retirement goes with that change.
        if issued_by.id == issuer.id {
            if !read_afresh {
                return Ok(Attempt::Unverified);
            }
            if !retirement.retired.is_empty() {
                // The device record is written back unchanged so that its version guards the
                // credentials this change rewrites, as every credential rewrite is guarded.
                let mut change = Change::new();
                change.op(Op::PutDevice(eligible.device.clone()));
                retirement.stage(&mut change).await?;
                match core.registry.commit(change).await {
                    Ok(_) => {}
                    Err(e) if e.is_device_changed() => return Ok(Attempt::DeviceChanged(e)),
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(Attempt::Done(Ok(bundle(
                &issued_by.ca,
                current,
                &eligible.policy,
                keys.measurement(),
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
    let issued = IssuedNow {
        eligible: &eligible,
        issuer: &issuer,
        replaced,
        retirement: &retirement,
        subject_cn: &subject_cn,
        now,
    };
    sign_and_commit(core, proved, &issued).await
}

/// What a new credential is issued from, once [`attempt`] decided one is due.
struct IssuedNow<'a> {
    eligible: &'a Eligible,
    issuer: &'a Issuer,
    /// The credential it replaces, with the id of the CA that issued that one.
    replaced: Option<(CredentialRecord, String)>,
    retirement: &'a Retirement<'a>,
    subject_cn: &'a str,
    now: OffsetDateTime,
}

/// Signs the new credential and commits it with everything it changes; a serial collision
/// draws another serial, a device changed since the read sends the caller back to read.
async fn sign_and_commit(
    core: &ServiceCore,
    proved: &Proved<'_>,
    issued: &IssuedNow<'_>,
) -> Result<Attempt, ServiceError> {
    let IssuedNow {
        eligible,
        issuer,
        subject_cn,
        now,
        ..
    } = *issued;
    let mut serials = 0;
    let credential = loop {
        serials += 1;
        let credential = sign(
            issuer,
            eligible,
            proved.earlier.slot,
            proved.keys,
            subject_cn,
            now,
        )
        .await?;
        let mut change = onboarding_change(
            proved.exchange,
            eligible,
            issued.replaced.clone(),
            &credential,
            proved.keys.measurement(),
            now,
            proved.correlation,
        );
        issued.retirement.stage(&mut change).await?;
        match core.registry.commit(change).await {
            Ok(_) => break credential,
            // A random 127-bit serial collided with one already issued: draw another.
            Err(StoreError::Conflict(Conflict::SerialTaken(_))) if serials < MAX_SERIALS => {}
            Err(e) if e.is_device_changed() => return Ok(Attempt::DeviceChanged(e)),
            // Not retried, not signed again: the batch is gone, the store is down…
            Err(e) => return Err(e.into()),
        }
    };
    match proved.exchange {
        Exchange::Onboard => core.metrics.onboarded(),
        Exchange::Renew { .. } => core.metrics.renewed(),
    }
    Ok(Attempt::Done(Ok(bundle(
        &issuer.ca,
        &credential,
        &eligible.policy,
        proved.keys.measurement(),
    ))))
}

/// Signs a leaf for the proved keys' certified key (the alias key, naming its firmware, or the
/// DPK) with the owner's issuing CA under a fresh random serial, pointing at that CA's CRL if
/// the policy names a CRL base URL.
async fn sign(
    issuer: &Issuer,
    eligible: &Eligible,
    slot: KeySlot,
    keys: &ProvedKeys,
    subject_cn: &str,
    now: OffsetDateTime,
) -> Result<CredentialRecord, ServiceError> {
    let policy = &eligible.policy;
    let serial = Serial::random()?;
    let validity = Validity::new(now - BACKDATE, now + policy.certificate_lifetime)?;
    let request = LeafRequest {
        public_key: *keys.certified_key().as_bytes(),
        common_name: subject_cn.to_owned(),
        validity,
        serial,
        crl_distribution_point: policy.crl_distribution_point(&issuer.id),
        firmware: keys.measurement(),
    };
    let leaf =
        sign_off_runtime(&issuer.ca, move |ca| ca.issue_device_certificate(&request)).await??;
    Ok(CredentialRecord {
        serial,
        device_id: eligible.device.device_id,
        key_slot: slot.get(),
        dpk: keys.dpk,
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
/// batch's counts, the event and the audit entry (which names the firmware a firmware-bound
/// credential is for).
fn onboarding_change(
    exchange: Exchange,
    eligible: &Eligible,
    current: Option<(CredentialRecord, String)>,
    credential: &CredentialRecord,
    firmware: Option<FirmwareMeasurement>,
    now: OffsetDateTime,
    correlation: &str,
) -> Change {
    let device = &eligible.device;
    let (policy, batch) = (&eligible.policy, &eligible.batch);
    let slot = credential.key_slot;
    let mut superseded = None;
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
        if retire(&mut previous, device, now) {
            if let Some(entry) = previous.revocation {
                // Not on the device's response path: the CRL refresher (and any GetCrl)
                // re-signs as soon as it sees a revoked serial that the CRL does not list yet.
                change.op(Op::Revoke {
                    issuer: previous_issuer,
                    serial: previous.serial,
                    entry,
                });
            }
        } else {
            let due = now + policy.superseded_grace;
            change.op(Op::ScheduleRevocation {
                serial: previous.serial,
                due,
            });
            superseded = Some((previous.serial, due));
        }
        change.op(Op::PutCredential(Box::new(previous)));
    }
    let (serial, key_slot) = (credential.serial, slot);
    let kind = match exchange {
        Exchange::Onboard => DeviceEventKind::Onboarded { serial, key_slot },
        Exchange::Renew { .. } => DeviceEventKind::Renewed { serial, key_slot },
    };
    let id = device.device_id;
    let mut entry = AuditDraft::new(
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
    .correlation(correlation);
    if let Some(measurement) = firmware {
        entry = entry.detail("firmware_measurement", measurement.to_string());
    }
    if let Some((previous, due)) = superseded {
        entry = entry.detail("superseded", previous.to_string()).detail(
            "superseded_revoked_by",
            due.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        );
    }
    change
        .batch_moved(
            &batch.batch_id,
            CountsDelta::transition(device.state(), updated.state()),
            Some(DeviceEvent::new(id, kind, now, correlation)),
        )
        .op(Op::PutDevice(updated))
        .audit(entry);
    change
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, reason = "a failed expect is a failed test")]

    use super::*;
    use crate::service::ServiceConfig;
    use crate::service::testing::{BATCH, Fixture, chip};

    /// A renewal that replaces a credential never revokes it: it is superseded, its
    /// revocation scheduled for the end of the policy's grace, and the audit entry says when.
    #[tokio::test]
    async fn a_replaced_credential_is_superseded_and_scheduled_not_revoked() {
        let f = Fixture::new(ServiceConfig::default()).await;
        let seeds = chip(0);
        let id = f.register(seeds).await;
        let first = f.issue(seeds, 1).await;
        let previous = f.credential(first).await;
        let issuer = f
            .core
            .authorities()
            .issuer_of(&previous.owner, &previous.certificate_pem)
            .await
            .expect("issuer")
            .id;
        let batch = f
            .core
            .registry()
            .batch(BATCH)
            .await
            .expect("read")
            .expect("batch");
        let slot = KeySlot::new(2).expect("slot");
        let eligible = Eligible {
            device: f.device(&id).await,
            batch,
            policy: f.policy.clone(),
            slot,
            owner: None,
        };
        let now = OffsetDateTime::now_utc();
        let renewed = CredentialRecord {
            serial: Serial::random().expect("serial"),
            key_slot: 2,
            dpk: seeds.device_key(slot).public_key(),
            ..previous.clone()
        };
        let change = onboarding_change(
            Exchange::Renew { target_slot: 2 },
            &eligible,
            Some((previous, issuer)),
            &renewed,
            None,
            now,
            "c-1",
        );
        let due = now + f.policy.superseded_grace;
        assert!(
            !change.ops.iter().any(|op| matches!(op, Op::Revoke { .. })),
            "{change:?}"
        );
        assert!(change.ops.iter().any(|op| matches!(
            op,
            Op::ScheduleRevocation { serial, due: at } if *serial == first && *at == due
        )));
        assert!(change.ops.iter().any(|op| matches!(
            op,
            Op::PutCredential(c) if c.serial == first && c.status == CredentialStatus::Superseded
        )));
        let audited = change
            .ops
            .iter()
            .find_map(|op| match op {
                Op::Audit(draft) => Some(draft.clone()),
                _ => None,
            })
            .expect("an audit entry");
        assert_eq!(audited.details["superseded"], first.to_string());
        assert!(audited.details.contains_key("superseded_revoked_by"));
        crate::store::commit(f.core.registry(), change)
            .await
            .expect("commit");
        assert_eq!(
            f.core
                .registry()
                .scheduled_revocation(first)
                .await
                .expect("read"),
            Some(due.replace_nanosecond(0).expect("0"))
        );
        assert!(f.crl_entries().await.is_empty());
    }
}
