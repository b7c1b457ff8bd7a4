//! The registry: devices, policies, batches, issued certificates, CRLs, firmware releases and
//! the audit log,
//! behind the [`Registry`] trait, so that a networked, transactional backend (PostgreSQL shared
//! by stateless service replicas) can stand in for the embedded one ([`SledRegistry`]).
//!
//! ```text
//!  handler ──read (async)──────────────────────────────▶ Registry ──▶ committed state
//!  handler ──commit(Change { guards, ops, events })────▶ Registry: guards checked and ops
//!          ◀── Ok(Receipt) once durable                   applied atomically, audit entries
//!          ◀── Err(Conflict::…) naming the failed guard   sealed into the chain, events
//!                                                          numbered; all inside the commit
//!  watcher ──subscribe()──▶ Subscription ◀── events of every writer (every replica), in order
//! ```
//!
//! # The contract
//! Every backend keeps these rules; `tests/registry_conformance.rs` checks each of them, and
//! runs against every backend.
//!
//! - **Atomic, durable commits.** A [`Change`] is applied entirely or not at all, audit entries
//!   included, and [`Registry::commit`] answers `Ok` only once it is durable: the service hands
//!   out a credential only after that.
//! - **Guards are checked inside the commit**, against the state the change is applied to, never
//!   against what the caller read earlier. A change whose guard fails is refused with a typed
//!   [`Conflict`] and leaves no trace (no record, no audit entry, no event).
//! - **Read-modify-write is optimistic.** Device and owner records carry a `version` that the
//!   store sets on every read; [`Op::PutDevice`] and [`Op::PutOwner`] are compare-and-set on it.
//!   A writer that loses sees [`Conflict::DeviceChanged`] / [`Conflict::OwnerChanged`], reads
//!   again and decides again. Correctness never rests on an in-process lock: the service's
//!   per-device locks (`service/locks.rs`) only spare one replica needless conflicts.
//! - **Uniqueness is the store's:** a serial is stored once ([`Guard::SerialAbsent`]), an
//!   idempotency key once per owner, a policy, batch or owner name once, an owner's
//!   firmware-signing key once, a firmware name and version once per owner, a rollout id once
//!   per owner, a device's report of a rollout once.
//! - **Ordered state belongs to the store and is assigned inside the commit:** the audit
//!   sequence and hash chain (one chain, in commit order, across every writer), batch counts
//!   ([`Op::AdjustCounts`], deltas that compose), rollout outcomes ([`Op::ReportRollout`]),
//!   CRL numbers (strictly increasing per issuer,
//!   [`Op::PutCrl`]) and the event order.
//! - **Events reach every subscriber of every replica** ([`Registry::subscribe`]), after the
//!   change is durable, in commit order, never for a refused change.
//! - **Back-pressure, bounded:** a commit waits for room when the backend's queue is full; no
//!   backend spawns a task or queues without bound per waiting commit.
//! - **Reads are async** so that a network round trip does not block a runtime worker, and see
//!   committed state only.
//!
//! Who retries what is in [`Conflict`]: only the conflicts of a concurrent writer
//! ([`Conflict::is_concurrent_change`]) are worth a re-read; a certificate is signed again only
//! when the re-read still calls for one (a serial collision, or a device that changed in a way
//! that leaves a new certificate due).
//!
//! # sled (embedded; one process)
//! One writer thread applies queued changes in groups with one `fdatasync` per group (see
//! `sled_backend.rs`): guards, versions and CRL numbers are checked against the committed
//! state plus the group's earlier changes; the writer seals audit entries and numbers events in
//! the order it applies changes, so its queue order *is* the commit order. Versions are stored
//! in front of the record (`codec::VERSIONED`). Events go to an in-process broadcast.
//!
//! # PostgreSQL (several stateless replicas on one database; `postgres.rs`)
//! Every rule maps to SQL that CockroachDB and YugabyteDB accept too: primary keys,
//! `ON CONFLICT`, `SELECT … FOR UPDATE`, data-modifying CTEs, savepoints, `UNNEST`; no advisory
//! locks, no LISTEN/NOTIFY.
//!
//! - **Transactions.** Each replica keeps group commit: the changes queued on it are applied
//!   in one transaction, each change under its own `SAVEPOINT`, so a failed guard rolls back
//!   (and refuses) that change only; at most 60 changes, under PostgreSQL's 64-entry
//!   subtransaction cache. `COMMIT` with `synchronous_commit = on` is the durability point.
//!   Transactions run at READ COMMITTED: every guard below is a row lock or a constraint, so
//!   the same statements stay correct under SERIALIZABLE, where a serialization failure
//!   (`40001`) or a deadlock (`40P01`) retries the whole group, guards re-checked.
//! - **Versions.** `devices(device_id PK, version, owner, batch_id, state, record)` and
//!   `owners(name PK, version, record)`. `PutDevice` at version 0 is `INSERT … ON CONFLICT DO
//!   NOTHING`, at version v `UPDATE … WHERE device_id = $id AND version = v`, each inside a CTE
//!   that also returns the version stored before it: nothing written means `DeviceChanged`
//!   naming it. Same for owners.
//! - **Uniqueness.** Primary keys carry every "absent" guard: `credentials(serial)`,
//!   `request_ids(owner, request_id)`, `policies(owner, name)`, `batches(batch_id)`,
//!   `owners(name)`, `firmware_signers(owner)`, `firmware(owner, name, version)` (schema v2),
//!   `rollout_reports(owner, rollout_id, device_id)` (schema v3). Where the change inserts
//!   the guarded key itself, that plain `INSERT`'s
//!   unique violation (`23505`) is the guard and gives the same typed conflict; otherwise the
//!   guard is a `SELECT`. A racing replica cannot slip between a check and an insert.
//!   `OperatorUnrevoked` locks the certificate's row (`FOR UPDATE`) until the group commits.
//! - **Rollouts** (schema v3) are versioned like owners; a report adds to the rollout row's
//!   `installed` / `failed` columns in its own savepoint (which locks the row until `COMMIT`:
//!   reports are rare beside onboardings) and inserts its report row.
//! - **Batch counters.** Columns of `batches`. A change's `AdjustCounts` only checks that the
//!   batch exists; the group sums its changes' deltas per batch and updates each batch row
//!   once, near its end and in batch order, so a batch every replica onboards into is held
//!   only from there to `COMMIT`.
//! - **CRL numbers per issuer.** `crls(issuer PK, number, record)`; `PutCrl` is `INSERT …
//!   ON CONFLICT (issuer) DO UPDATE … WHERE crls.number < excluded.number`; nothing written
//!   means `CrlNumberTaken`. Revocations (`crl_entries(issuer, serial)`) only grow, and the
//!   signer reads the number before the entries, so a CRL with a higher number never lists
//!   fewer serials.
//! - **The audit chain head.** One row, `registry_head(audit_seq, audit_hash, event_seq)`. A
//!   group does all its other work first; its last statements lock the head (`SELECT … FOR
//!   UPDATE`), seal the group's entries in order after it (sequence and hash chain computed by
//!   the service, as the sled writer does), insert them into `audit(seq, entry)` and the
//!   events into `events(seq, payload)`, and update the head. The head row is therefore held
//!   only from that `SELECT` to `COMMIT` (one round trip and the commit's flush), so groups of
//!   different replicas serialise there and nowhere else, and the chain's order is the commit
//!   order. A group with neither audit entries nor events does not touch the head.
//! - **Events.** Rows of `events`, numbered under the head's lock, so their sequence is the
//!   commit order with no gaps (a sequence object would number them at insert, in another
//!   order). Each replica runs one tail, `SELECT … FROM events WHERE seq > $last ORDER BY seq`,
//!   woken at once by its own commits and polling every 50 ms for other replicas', and fans
//!   the events out to that replica's [`Subscription`]s. A tail that reconnects resumes at
//!   `$last`. Old events are pruned (the newest 200,000 are kept); a subscriber that sees a
//!   gap in the sequence is told how many it missed ([`SubscriptionError::Missed`]).
//! - **Back-pressure.** The per-replica group queue is bounded like sled's; the connection pool
//!   bounds concurrent reads. Neither spawns per waiting caller.
//! - **Availability.** [`Registry::failed`] is true while the database is unreachable (health
//!   NOT_SERVING, calls UNAVAILABLE) and false again once a probe reaches it; a commit whose
//!   `COMMIT` answer is lost is reported unavailable, and the caller's re-read decides (a
//!   credential is sent only after an acknowledged commit).

mod change;
pub mod codec;
mod commit_delay;
mod conflict;
mod events;
pub mod postgres;
mod sled_backend;

use std::fmt;

use async_trait::async_trait;
use rot_core::keys::DeviceId;

use crate::audit::StoredAuditEntry;
use crate::model::{
    BatchRecord, CredentialRecord, CrlEntryRecord, CrlRecord, DeviceRecord, FirmwareRecord,
    FirmwareSignerRecord, OperatorCertificateRecord, OwnerRecord, RolloutRecord,
    RolloutReportRecord,
};
use crate::pki::Serial;
use crate::policy::PolicySpec;

pub use change::{Change, Guard, Op, Receipt};
pub use conflict::{Conflict, StoreError};
pub use events::{CrlNotice, Published, RegistryEvent, Subscription, SubscriptionError};
pub use postgres::{PostgresConfig, PostgresRegistry};
pub use sled_backend::{SledRegistry, SledTuning};

/// A device and what an exchange decides on with it: its batch, the batch's policy and the
/// owner's record ([`Registry::placement`]).
#[derive(Clone, Debug)]
pub struct Placement {
    /// The device, with its stored version.
    pub device: DeviceRecord,
    /// Its batch, if it is in one that exists.
    pub batch: Option<BatchRecord>,
    /// The batch's policy, if it exists.
    pub policy: Option<PolicySpec>,
    /// The batch owner's record (its CAs), if it exists.
    pub owner: Option<OwnerRecord>,
}

/// Filters of [`Registry::devices`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    /// Only members of this batch.
    pub batch_id: Option<String>,
    /// Only this owner.
    pub owner: Option<String>,
    /// Only devices in this state.
    pub state: Option<crate::model::DeviceState>,
}

/// The registry. Used as `Arc<dyn Registry>`; see the module documentation for the rules every
/// implementation keeps.
#[async_trait]
pub trait Registry: Send + Sync + fmt::Debug + 'static {
    /// Applies `change` atomically and durably, or refuses it whole.
    ///
    /// Waits while the backend's commit queue is full (back-pressure). Dropping the returned
    /// future once the change was handed over does not withdraw it: it may still commit, as a
    /// networked commit whose acknowledgement is lost may. A caller that must know reads again.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] naming the guard that failed (nothing written);
    /// [`StoreError::Unrecordable`]; [`StoreError::Unavailable`] when the store cannot commit.
    async fn commit(&self, change: Change) -> Result<Receipt, StoreError>;

    /// Events of durable changes from now on, of every writer of this store, in commit order.
    fn subscribe(&self) -> Subscription;

    /// A device, with its stored version.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Corrupt`].
    async fn device(&self, device_id: &DeviceId) -> Result<Option<DeviceRecord>, StoreError>;

    /// A device with its batch, policy and owner: what every device exchange reads before it
    /// decides. One round trip on a networked store (this default reads them one by one).
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn placement(&self, device_id: &DeviceId) -> Result<Option<Placement>, StoreError> {
        let Some(device) = self.device(device_id).await? else {
            return Ok(None);
        };
        let batch = match &device.batch_id {
            Some(id) => self.batch(id).await?,
            None => None,
        };
        let (policy, owner) = match &batch {
            Some(batch) => (
                self.policy(&batch.owner, &batch.policy_name).await?,
                self.owner(&batch.owner).await?,
            ),
            None => (None, None),
        };
        Ok(Some(Placement {
            device,
            batch,
            policy,
            owner,
        }))
    }

    /// Devices ordered by DeviceId, after `after`, at most `limit` of them matching `filter`.
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn devices(
        &self,
        filter: &DeviceFilter,
        after: Option<&DeviceId>,
        limit: usize,
    ) -> Result<Vec<DeviceRecord>, StoreError>;

    /// A policy.
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn policy(&self, owner: &str, name: &str) -> Result<Option<PolicySpec>, StoreError>;

    /// Policies ordered by (owner, name), after `after`, at most `limit`, of `owner` if given.
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn policies(
        &self,
        owner: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<PolicySpec>, StoreError>;

    /// A batch.
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn batch(&self, batch_id: &str) -> Result<Option<BatchRecord>, StoreError>;

    /// Batches newest first, strictly older than `before` (a batch ID), at most `limit`, of
    /// `owner` if given.
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn batches(
        &self,
        owner: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BatchRecord>, StoreError>;

    /// The batch a CreateBatch idempotency key created.
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn request_id(&self, owner: &str, request_id: &str)
    -> Result<Option<String>, StoreError>;

    /// An issued certificate.
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn credential(&self, serial: Serial) -> Result<Option<CredentialRecord>, StoreError>;

    /// An operator certificate this service issued.
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn operator_certificate(
        &self,
        serial: Serial,
    ) -> Result<Option<OperatorCertificateRecord>, StoreError>;

    /// Operator certificates ordered by serial, after `after`, at most `limit`, of `owner` if
    /// given.
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn operator_certificates(
        &self,
        owner: Option<&str>,
        after: Option<Serial>,
        limit: usize,
    ) -> Result<Vec<OperatorCertificateRecord>, StoreError>;

    /// Number of distinct certificates ever stored.
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn credential_count(&self) -> Result<u64, StoreError>;

    /// Every serial an issuing CA revoked, with its CRL entry.
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn revoked(&self, issuer: &str) -> Result<Vec<(Serial, CrlEntryRecord)>, StoreError>;

    /// Number of serials an issuing CA revoked (what its complete CRL lists).
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn revoked_count(&self, issuer: &str) -> Result<u64, StoreError>;

    /// The latest signed CRL of an issuing CA.
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn crl(&self, issuer: &str) -> Result<Option<CrlRecord>, StoreError>;

    /// Scheduled revocations due at or before `due_by`, at most `limit` of them, in no
    /// particular order (see [`Op::ScheduleRevocation`]).
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn scheduled_revocations(
        &self,
        due_by: time::OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<(Serial, time::OffsetDateTime)>, StoreError>;

    /// When a credential's scheduled revocation is due, if one is scheduled.
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn scheduled_revocation(
        &self,
        serial: Serial,
    ) -> Result<Option<time::OffsetDateTime>, StoreError>;

    /// An owner and its CAs, with its stored version.
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn owner(&self, name: &str) -> Result<Option<OwnerRecord>, StoreError>;

    /// Owners ordered by name, after `after`, at most `limit`.
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn owners(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OwnerRecord>, StoreError>;

    /// An owner's firmware-signing key.
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn firmware_signer(
        &self,
        owner: &str,
    ) -> Result<Option<FirmwareSignerRecord>, StoreError>;

    /// A signed firmware image's record.
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn firmware(
        &self,
        owner: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<FirmwareRecord>, StoreError>;

    /// A signed firmware image file.
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn firmware_image(
        &self,
        owner: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// Firmware records ordered by (owner, name, version), of `owner` if given, after `after`,
    /// at most `limit`.
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn firmwares(
        &self,
        owner: Option<&str>,
        after: Option<(&str, &str, &str)>,
        limit: usize,
    ) -> Result<Vec<FirmwareRecord>, StoreError>;

    /// A rollout, with its version and outcomes.
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn rollout(&self, owner: &str, id: &str) -> Result<Option<RolloutRecord>, StoreError>;

    /// Rollouts ordered by (owner, id), of `owner` if given, after `after`, at most `limit`,
    /// with their versions and outcomes.
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn rollouts(
        &self,
        owner: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<RolloutRecord>, StoreError>;

    /// A device's report of a rollout.
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn rollout_report(
        &self,
        owner: &str,
        id: &str,
        device_id: &DeviceId,
    ) -> Result<Option<RolloutReportRecord>, StoreError>;

    /// Audit entries with `seq >= start`, ascending, at most `limit`; durable entries only.
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn audit(
        &self,
        start: u64,
        limit: usize,
    ) -> Result<Vec<(u64, StoredAuditEntry)>, StoreError>;

    /// Sequence number of the newest durable audit entry (0 if none).
    ///
    /// # Errors
    /// As [`Registry::device`].
    async fn audit_head(&self) -> Result<u64, StoreError>;

    /// True while the registry cannot serve: the embedded store after a write failed to become
    /// durable (until the service restarts: what was applied but not synced must not be
    /// served); a networked store while its database is unreachable.
    fn failed(&self) -> bool;
}

/// The answer a backend's writer sends for one queued change.
type Reply = tokio::sync::oneshot::Sender<Result<Receipt, StoreError>>;

/// Hands `change` to a backend's writer and waits for its answer. Waits for room while the
/// writer's bounded queue is full: back-pressure as latency, held by the caller's own task.
///
/// # Errors
/// The writer's answer, or [`StoreError::Unavailable`] when the writer has stopped.
async fn hand_to_writer(
    queue: &tokio::sync::mpsc::Sender<(Change, Reply)>,
    change: Change,
) -> Result<Receipt, StoreError> {
    let stopped = || StoreError::Unavailable("registry writer stopped".into());
    let (reply, receiver) = tokio::sync::oneshot::channel();
    queue.send((change, reply)).await.map_err(|_| stopped())?;
    receiver.await.map_err(|_| stopped())?
}

/// Commits `change` and waits until it is durable: [`Registry::commit`] for callers holding a
/// `&dyn Registry`.
///
/// # Errors
/// As [`Registry::commit`].
pub async fn commit(registry: &dyn Registry, change: Change) -> Result<Receipt, StoreError> {
    registry.commit(change).await
}

/// Every rollout of `owner`, read page by page, in (owner, id) order.
///
/// # Errors
/// As [`Registry::rollouts`].
pub async fn owner_rollouts(
    registry: &dyn Registry,
    owner: &str,
) -> Result<Vec<RolloutRecord>, StoreError> {
    const PAGE: usize = 256;
    let mut all: Vec<RolloutRecord> = Vec::new();
    loop {
        let after = all.last().map(|r| (r.owner.as_str(), r.id.as_str()));
        let page = registry.rollouts(Some(owner), after, PAGE).await?;
        let done = page.len() < PAGE;
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}
