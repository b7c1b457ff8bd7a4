//! The embedded registry: one sled tree, one writer thread, group commit with a real `fsync`.
//!
//! ```text
//!  handlers ──commit(Change)──▶ bounded queue ──▶ writer thread: take every queued change (≤ MAX_GROUP)
//!           (waits for room)                       check guards, versions, CRL numbers; stage writes
//!                                                  (later changes see earlier ones); seal audit entries
//!                                                  apply_batch (atomic) ─▶ flush ─▶ fdatasync(db file)
//!  handlers ◀──────────── Ok(Receipt) ◀─────────── only now: every change of the group is durable
//!  watchers ◀── events, numbered in apply order ◀── published after the fsync
//! ```
//!
//! The writer is the commit: every rule of the [`Registry`] contract that needs an order (audit
//! chain, batch counts, CRL numbers, versions, event sequence) is decided by it, in the order it
//! takes changes from the queue, against the committed state plus the earlier changes of its
//! group. A change that fails a check is refused alone; the rest of the group commits.
//!
//! Back-pressure: [`Registry::commit`] waits for room in the bounded queue (`QUEUE`); nothing is
//! spawned per waiting commit.
//!
//! Why the extra `fdatasync`: sled 0.34's `flush()` writes its buffers and then calls
//! `sync_file_range`, which neither flushes the drive's cache nor the file's metadata, so it is
//! not power-loss durable on its own. One `fdatasync` per group makes every change of the group
//! durable, so the cost is shared by all concurrent onboardings.
//!
//! If a write or sync fails the writer stops accepting changes (the state on disk is then
//! unknown, as with PostgreSQL's fsync failure rule); the service reports UNAVAILABLE and must
//! be restarted, which re-reads the durable state.
//!
//! Key layout (all in the default tree):
//! `d/<device>` device · `p/<owner>/<name>` policy · `b/<batch>` batch · `m/<batch>/<device>`
//! membership · `c/<serial>` credential · `r/<issuer>/<serial>` CRL entry · `q/<owner>/<request>`
//! batch idempotency key · `w/<owner>` owner and its CAs · `a/<seq: u64 BE>` audit entry ·
//! `x/crl/<issuer>` latest CRL · `x/credentials` count · `x/layout` layout version ·
//! `s/<serial>` when a superseded credential is due for revocation.
//! Devices and owners are stored with their version in front ([`super::codec::VERSIONED`]).
//!
//! Layout 2 keys CRL entries and CRLs by issuing CA; a registry of layout 1 (one CA, `r/<serial>`,
//! `x/crl`) is moved to it once, at open, as the platform CA's, in one atomic batch. Layout 3
//! schedules the revocation of every credential that was superseded before the schedule
//! existed ([`SUPERSEDED_GRACE_AT_MIGRATION`] after the move), so none stays valid for good.
//! Policies stored before their `superseded_grace` read with the default
//! ([`decode_policy`]).
//! Values are records in the [`super::codec`] encoding (postcard; older JSON values are read).
//!
//! Within a group the batch counts and the credential count stay decoded while the group's
//! changes update them, and are encoded once: an onboarding adjusts both.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, mpsc};

use super::codec::{
    decode, decode_policy, encode, encode_json, encode_policy, encode_versioned, version_of,
};
use super::commit_delay::CommitDelay;
use super::{
    Change, Conflict, DeviceFilter, Guard, Op, Published, Receipt, Registry, Reply, StoreError,
    Subscription,
};
use crate::audit::{self, GENESIS_HASH, StoredAuditEntry};
use crate::model::CredentialStatus;
use crate::model::{
    BatchRecord, CountsDelta, CredentialRecord, CrlEntryRecord, CrlRecord, DeviceRecord,
    FirmwareRecord, FirmwareSignerRecord, OperatorCertificateRecord, OwnerRecord, RolloutOutcomes,
    RolloutRecord, RolloutReportRecord,
};
use crate::pki::Serial;
use crate::policy::{DEFAULT_SUPERSEDED_GRACE, PolicySpec};
use rot_core::keys::DeviceId;
use time::OffsetDateTime;

/// Most changes one group commit takes: bounds the latency of the first change in a group.
const MAX_GROUP: usize = 1024;
/// Queue length; `commit` waits (back-pressure) when the writer is this far behind.
const QUEUE: usize = 8192;
/// Events kept for slow watchers before they start losing device events.
const EVENT_BUFFER: usize = 16_384;
/// How the embedded registry is tuned (`[registry]` in `config.toml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SledTuning {
    /// sled's page cache (`sled_cache_mib`). Its own default (1 GiB) let the service's memory
    /// follow the registry; records not in it are read back from the file (the OS page
    /// cache). At 64 MiB a 100,000-device run peaked at 267 MB of resident memory (477 MB at
    /// 256 MiB) for ~9 % more CPU per onboarding (README, Performance).
    pub cache_bytes: u64,
    /// How long the writer waits for more changes to join a group before committing it
    /// (`commit_delay_us`; zero: never), while waiting pays off (`commit_delay.rs`). At 2 ms
    /// a device with its own connection cost the service ~20 % less CPU (README,
    /// Performance).
    pub commit_delay: Duration,
}

impl Default for SledTuning {
    fn default() -> Self {
        Self {
            cache_bytes: 64 * 1024 * 1024,
            commit_delay: Duration::from_millis(2),
        }
    }
}

/// The sled-backed [`Registry`].
pub struct SledRegistry {
    db: sled::Db,
    queue: mpsc::Sender<(Change, Reply)>,
    events: broadcast::Sender<Published>,
    audit_head: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
}

/// Records stored with their version, which the store sets on every read.
trait Versioned {
    fn set_version(&mut self, version: u64);
}

impl Versioned for DeviceRecord {
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
}

impl Versioned for RolloutRecord {
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
}

impl Versioned for OwnerRecord {
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
}

/// A record stored with its version (devices, owners), version set.
fn decode_versioned<T: DeserializeOwned + Versioned>(
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    let mut record: T = decode(key, bytes)?;
    record.set_version(version_of(bytes));
    Ok(record)
}

impl std::fmt::Debug for SledRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledRegistry")
            .field("audit_head", &self.audit_head.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt_key(key: &[u8], reason: &str) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_owned(),
    }
}

fn device_key(id: &DeviceId) -> Vec<u8> {
    format!("d/{id}").into_bytes()
}
fn policy_key(owner: &str, name: &str) -> Vec<u8> {
    format!("p/{owner}/{name}").into_bytes()
}
fn batch_key(id: &str) -> Vec<u8> {
    format!("b/{id}").into_bytes()
}
fn member_key(batch: &str, device: &DeviceId) -> Vec<u8> {
    format!("m/{batch}/{device}").into_bytes()
}
fn credential_key(serial: Serial) -> Vec<u8> {
    format!("c/{serial}").into_bytes()
}
fn operator_key(serial: Serial) -> Vec<u8> {
    format!("o/{serial}").into_bytes()
}
fn revoked_key(issuer: &str, serial: Serial) -> Vec<u8> {
    format!("r/{issuer}/{serial}").into_bytes()
}
fn revoked_prefix(issuer: &str) -> Vec<u8> {
    format!("r/{issuer}/").into_bytes()
}
fn crl_key(issuer: &str) -> Vec<u8> {
    format!("x/crl/{issuer}").into_bytes()
}
fn owner_key(name: &str) -> Vec<u8> {
    format!("w/{name}").into_bytes()
}
fn firmware_signer_key(owner: &str) -> Vec<u8> {
    format!("k/{owner}").into_bytes()
}
fn firmware_key(owner: &str, name: &str, version: &str) -> Vec<u8> {
    format!("f/{owner}/{name}/{version}").into_bytes()
}
/// The image file beside its record: raw bytes, not a record encoding.
fn firmware_image_key(owner: &str, name: &str, version: &str) -> Vec<u8> {
    format!("i/{owner}/{name}/{version}").into_bytes()
}

/// Stages a firmware signer, or an image with its record (their guards were checked).
fn stage_firmware(staged: &mut Overlay, op: &Op) {
    match op {
        Op::PutFirmwareSigner(record) => {
            staged.insert(
                firmware_signer_key(&record.owner),
                Staged::Bytes(encode_json(&**record)),
            );
        }
        Op::PutFirmware { record, image } => {
            let (owner, name, version) = (&record.owner, &record.name, &record.version);
            staged.insert(
                firmware_key(owner, name, version),
                Staged::Bytes(encode_json(&**record)),
            );
            staged.insert(
                firmware_image_key(owner, name, version),
                Staged::Bytes(image.clone()),
            );
        }
        _ => {}
    }
}
/// Owner and id apart by a NUL, which sorts below every character a name may hold: listings
/// come out in (owner, id) order (`acme` before `acme-2`), as on PostgreSQL.
fn rollout_key(owner: &str, id: &str) -> Vec<u8> {
    format!("l/{owner}\0{id}").into_bytes()
}
fn rollout_prefix(owner: &str) -> String {
    format!("l/{owner}\0")
}
/// A rollout's outcomes, (installed, failed): kept apart from the record so that reports do
/// not rewrite it.
fn rollout_outcomes_key(owner: &str, id: &str) -> Vec<u8> {
    format!("n/{owner}/{id}").into_bytes()
}
fn rollout_report_key(owner: &str, id: &str, device: &str) -> Vec<u8> {
    format!("e/{owner}/{id}/{device}").into_bytes()
}
fn request_key(owner: &str, request: &str) -> Vec<u8> {
    format!("q/{owner}/{request}").into_bytes()
}
fn schedule_key(serial: Serial) -> Vec<u8> {
    format!("s/{serial}").into_bytes()
}
fn audit_key(seq: u64) -> Vec<u8> {
    let mut key = b"a/".to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}
/// Layout 1's one CRL, and the issuer its entries belong to in layout 2.
const LAYOUT_1_CRL_KEY: &[u8] = b"x/crl";
const PLATFORM_ISSUER: &str = "platform";
const LAYOUT_KEY: &[u8] = b"x/layout";
const LAYOUT: u64 = 3;
const CREDENTIAL_COUNT_KEY: &[u8] = b"x/credentials";
/// How long after the move to layout 3 the credentials superseded before it are revoked: the
/// policies' default grace, counted from the upgrade (their renewals are older than the
/// schedule, and their devices had no way to prove their successors yet).
const SUPERSEDED_GRACE_AT_MIGRATION: time::Duration = DEFAULT_SUPERSEDED_GRACE;

/// A scheduled revocation's due time, stored as Unix seconds.
fn decode_due(key: &[u8], bytes: &[u8]) -> Result<OffsetDateTime, StoreError> {
    let seconds: i64 = decode(key, bytes)?;
    OffsetDateTime::from_unix_timestamp(seconds).map_err(|e| corrupt_key(key, &e.to_string()))
}

/// Moves an older registry to the current layout in one atomic, synced batch: to layout 2
/// ([`move_crls_per_issuer`]), then to layout 3 ([`schedule_superseded`]).
fn migrate_layout(db: &sled::Db, data_file: &File) -> Result<(), StoreError> {
    let layout: u64 = match db.get(LAYOUT_KEY).map_err(unavailable)? {
        Some(value) => decode(LAYOUT_KEY, &value)?,
        None => 1,
    };
    if layout >= LAYOUT {
        return Ok(());
    }
    let mut batch = sled::Batch::default();
    if layout < 2 {
        move_crls_per_issuer(db, &mut batch)?;
    }
    schedule_superseded(db, &mut batch, OffsetDateTime::now_utc())?;
    batch.insert(LAYOUT_KEY, encode(&LAYOUT));
    db.apply_batch(batch).map_err(unavailable)?;
    db.flush().map_err(unavailable)?;
    data_file.sync_data().map_err(unavailable)?;
    tracing::info!(
        "registry moved to layout {LAYOUT}: CRL entries and CRLs per issuing CA, superseded \
         credentials scheduled for revocation"
    );
    Ok(())
}

/// Layout 3: every superseded, unexpired credential is scheduled for revocation
/// [`SUPERSEDED_GRACE_AT_MIGRATION`] after `now`.
fn schedule_superseded(
    db: &sled::Db,
    batch: &mut sled::Batch,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let due = (now + SUPERSEDED_GRACE_AT_MIGRATION).unix_timestamp();
    for item in db.scan_prefix(b"c/") {
        let (key, value) = item.map_err(unavailable)?;
        let credential: CredentialRecord = decode(&key, &value)?;
        if credential.status == CredentialStatus::Superseded && now < credential.not_after {
            batch.insert(schedule_key(credential.serial), encode(&due));
        }
    }
    Ok(())
}

/// Layout 2: every CRL entry `r/<serial>` moves to `r/platform/<serial>` and the CRL `x/crl`
/// to `x/crl/platform`. Before per-owner CAs, the platform's one issuing CA issued everything.
fn move_crls_per_issuer(db: &sled::Db, batch: &mut sled::Batch) -> Result<(), StoreError> {
    for item in db.scan_prefix(b"r/") {
        let (key, value) = item.map_err(unavailable)?;
        let Ok(serial) = std::str::from_utf8(&key[2..]).map(str::parse::<Serial>) else {
            continue;
        };
        let Ok(serial) = serial else {
            // Not a layout-1 key (already `r/<issuer>/…`).
            continue;
        };
        batch.remove(key);
        batch.insert(revoked_key(PLATFORM_ISSUER, serial), value);
    }
    if let Some(crl) = db.get(LAYOUT_1_CRL_KEY).map_err(unavailable)? {
        batch.remove(LAYOUT_1_CRL_KEY);
        batch.insert(crl_key(PLATFORM_ISSUER), crl);
    }
    Ok(())
}

impl SledRegistry {
    /// Opens (or creates) the registry in `dir` and starts its writer thread.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if sled cannot open the directory, [`StoreError::Corrupt`]
    /// if the audit head cannot be read.
    pub fn open(dir: &Path) -> Result<Arc<Self>, StoreError> {
        Self::open_tuned(dir, SledTuning::default())
    }

    /// As [`SledRegistry::open`], tuned.
    ///
    /// # Errors
    /// As [`SledRegistry::open`].
    pub fn open_tuned(dir: &Path, tuning: SledTuning) -> Result<Arc<Self>, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            // The writer flushes every group itself; sled's timer flush would only compete
            // with it for the log.
            .flush_every_ms(None)
            .cache_capacity(tuning.cache_bytes)
            .open()
            .map_err(unavailable)?;
        // The file sled writes its log to; fdatasync on any descriptor of it makes the data
        // written by `flush` durable.
        let data_file = File::open(dir.join("db")).map_err(unavailable)?;
        migrate_layout(&db, &data_file)?;
        let (seq, hash) = match db.scan_prefix(b"a/").next_back() {
            None => (0, GENESIS_HASH),
            Some(item) => {
                let (key, value) = item.map_err(unavailable)?;
                let entry: StoredAuditEntry = decode(&key, &value)?;
                let record = entry.decode().map_err(|e| StoreError::Corrupt {
                    key: "audit head".into(),
                    reason: e.to_string(),
                })?;
                let hash: [u8; 32] =
                    entry
                        .hash
                        .as_slice()
                        .try_into()
                        .map_err(|_| StoreError::Corrupt {
                            key: "audit head".into(),
                            reason: "hash is not 32 bytes".into(),
                        })?;
                (record.seq, hash)
            }
        };
        let (queue, receiver) = mpsc::channel(QUEUE);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let audit_head = Arc::new(AtomicU64::new(seq));
        let failed = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            db: db.clone(),
            data_file,
            events: events.clone(),
            event_seq: 0,
            audit_seq: seq,
            audit_hash: hash,
            audit_head: audit_head.clone(),
            failed: failed.clone(),
            commit_delay: CommitDelay::new(tuning.commit_delay),
        };
        thread::Builder::new()
            .name("registry-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(unavailable)?;
        Ok(Arc::new(Self {
            db,
            queue,
            events,
            audit_head,
            failed,
        }))
    }

    /// Refuses reads once a write failed: sled already shows the group that failed to reach
    /// the disk, and answering from it (an "unchanged" credential, an audit entry) would hand
    /// out what a restart will not know.
    fn check(&self) -> Result<(), StoreError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable(
                "a registry write failed; restart the service".into(),
            ));
        }
        Ok(())
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.check()?;
        self.db
            .get(key)
            .map_err(unavailable)?
            .map(|v| decode(key, &v))
            .transpose()
    }

    /// `record` with the outcomes stored beside it.
    fn with_outcomes(&self, mut record: RolloutRecord) -> Result<RolloutRecord, StoreError> {
        let (installed, failed): (u64, u64) = self
            .get(&rollout_outcomes_key(&record.owner, &record.id))?
            .unwrap_or_default();
        record.outcomes = RolloutOutcomes { installed, failed };
        Ok(record)
    }

    fn get_versioned<T: DeserializeOwned + Versioned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.check()?;
        self.db
            .get(key)
            .map_err(unavailable)?
            .map(|v| decode_versioned(key, &v))
            .transpose()
    }
}

/// The reads answer from sled's page cache or the OS's: they complete without waiting, so they
/// run on the caller's task (a `spawn_blocking` per read would cost more than the read).
#[async_trait]
impl Registry for SledRegistry {
    async fn commit(&self, change: Change) -> Result<Receipt, StoreError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable(
                "a previous write failed; restart the service".into(),
            ));
        }
        super::hand_to_writer(&self.queue, change).await
    }

    fn subscribe(&self) -> Subscription {
        Subscription::new(self.events.subscribe())
    }

    async fn device(&self, device_id: &DeviceId) -> Result<Option<DeviceRecord>, StoreError> {
        self.get_versioned(&device_key(device_id))
    }

    async fn devices(
        &self,
        filter: &DeviceFilter,
        after: Option<&DeviceId>,
        limit: usize,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        self.check()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keep = |device: &DeviceRecord| {
            filter
                .owner
                .as_ref()
                .is_none_or(|o| device.owner.as_ref() == Some(o))
                && filter.state.is_none_or(|s| device.state() == s)
                && filter
                    .batch_id
                    .as_ref()
                    .is_none_or(|b| device.batch_id.as_ref() == Some(b))
        };
        let mut out = Vec::new();
        if let Some(batch) = &filter.batch_id {
            let prefix = format!("m/{batch}/");
            let start = after.map_or_else(
                || prefix.clone().into_bytes(),
                |a| member_key(batch, a).into_iter().chain([0]).collect(),
            );
            for item in self.db.range(start..) {
                let (key, _) = item.map_err(unavailable)?;
                let Some(device_id) = key.strip_prefix(prefix.as_bytes()) else {
                    break;
                };
                let device_id = std::str::from_utf8(device_id)
                    .ok()
                    .and_then(|text| text.parse::<DeviceId>().ok())
                    .ok_or_else(|| corrupt_key(&key, "not a DeviceId"))?;
                if let Some(device) = self.get_versioned::<DeviceRecord>(&device_key(&device_id))?
                    && keep(&device)
                {
                    out.push(device);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
        } else {
            let start = after.map_or_else(
                || b"d/".to_vec(),
                |a| device_key(a).into_iter().chain([0]).collect(),
            );
            for item in self.db.range(start..) {
                let (key, value) = item.map_err(unavailable)?;
                if !key.starts_with(b"d/") {
                    break;
                }
                let device: DeviceRecord = decode_versioned(&key, &value)?;
                if keep(&device) {
                    out.push(device);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    async fn policy(&self, owner: &str, name: &str) -> Result<Option<PolicySpec>, StoreError> {
        self.check()?;
        let key = policy_key(owner, name);
        self.db
            .get(&key)
            .map_err(unavailable)?
            .map(|v| decode_policy(&key, &v))
            .transpose()
    }

    async fn policies(
        &self,
        owner: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<PolicySpec>, StoreError> {
        self.check()?;
        let prefix = owner.map_or_else(|| "p/".to_owned(), |o| format!("p/{o}/"));
        let start = after.map_or_else(
            || prefix.clone().into_bytes(),
            |(o, n)| policy_key(o, n).into_iter().chain([0]).collect(),
        );
        let mut out = Vec::new();
        for item in self.db.range(start..) {
            let (key, value) = item.map_err(unavailable)?;
            if !key.starts_with(prefix.as_bytes()) || out.len() >= limit {
                break;
            }
            out.push(decode_policy(&key, &value)?);
        }
        Ok(out)
    }

    async fn batch(&self, batch_id: &str) -> Result<Option<BatchRecord>, StoreError> {
        self.get(&batch_key(batch_id))
    }

    async fn batches(
        &self,
        owner: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BatchRecord>, StoreError> {
        self.check()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let end = before.map_or_else(|| b"b0".to_vec(), batch_key);
        let mut out = Vec::new();
        for item in self.db.range(b"b/".to_vec()..end).rev() {
            let (key, value) = item.map_err(unavailable)?;
            let batch: BatchRecord = decode(&key, &value)?;
            if owner.is_none_or(|o| batch.owner == o) {
                out.push(batch);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn request_id(
        &self,
        owner: &str,
        request_id: &str,
    ) -> Result<Option<String>, StoreError> {
        self.get(&request_key(owner, request_id))
    }

    async fn credential(&self, serial: Serial) -> Result<Option<CredentialRecord>, StoreError> {
        self.get(&credential_key(serial))
    }

    async fn operator_certificate(
        &self,
        serial: Serial,
    ) -> Result<Option<OperatorCertificateRecord>, StoreError> {
        self.get(&operator_key(serial))
    }

    async fn operator_certificates(
        &self,
        owner: Option<&str>,
        after: Option<Serial>,
        limit: usize,
    ) -> Result<Vec<OperatorCertificateRecord>, StoreError> {
        self.check()?;
        // Operators are few (people and MES accounts), so an owner filter scans them all.
        let start = after.map_or_else(
            || b"o/".to_vec(),
            |serial| operator_key(serial).into_iter().chain([0]).collect(),
        );
        let mut out = Vec::new();
        for item in self.db.range(start..) {
            let (key, value) = item.map_err(unavailable)?;
            if !key.starts_with(b"o/") || out.len() >= limit {
                break;
            }
            let record: OperatorCertificateRecord = decode(&key, &value)?;
            if owner.is_none_or(|o| record.owner == o) {
                out.push(record);
            }
        }
        Ok(out)
    }

    async fn credential_count(&self) -> Result<u64, StoreError> {
        Ok(self.get(CREDENTIAL_COUNT_KEY)?.unwrap_or(0))
    }

    async fn revoked(&self, issuer: &str) -> Result<Vec<(Serial, CrlEntryRecord)>, StoreError> {
        self.check()?;
        let prefix = revoked_prefix(issuer);
        self.db
            .scan_prefix(&prefix)
            // `r/platform/` also covers `r/platform/1/…`, an owner named `platform`'s CA.
            .filter(|item| {
                item.as_ref()
                    .map_or(true, |(key, _)| !key[prefix.len()..].contains(&b'/'))
            })
            .map(|item| {
                let (key, value) = item.map_err(unavailable)?;
                let serial = std::str::from_utf8(&key[prefix.len()..])
                    .ok()
                    .and_then(|text| text.parse::<Serial>().ok())
                    .ok_or_else(|| corrupt_key(&key, "not a serial"))?;
                Ok((serial, decode(&key, &value)?))
            })
            .collect()
    }

    async fn revoked_count(&self, issuer: &str) -> Result<u64, StoreError> {
        self.check()?;
        let prefix = revoked_prefix(issuer);
        let mut count = 0;
        for key in self.db.scan_prefix(&prefix).keys() {
            // Not another CA's whose id extends this one's (`platform` and `platform/1`).
            if !key.map_err(unavailable)?[prefix.len()..].contains(&b'/') {
                count += 1;
            }
        }
        Ok(count)
    }

    async fn crl(&self, issuer: &str) -> Result<Option<CrlRecord>, StoreError> {
        self.get(&crl_key(issuer))
    }

    async fn scheduled_revocations(
        &self,
        due_by: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<(Serial, OffsetDateTime)>, StoreError> {
        self.check()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Only credentials a renewal superseded and nothing revoked yet are scheduled: few,
        // next to the fleet, so they are all read.
        let mut out = Vec::new();
        for item in self.db.scan_prefix(b"s/") {
            let (key, value) = item.map_err(unavailable)?;
            let serial = std::str::from_utf8(&key[2..])
                .ok()
                .and_then(|text| text.parse::<Serial>().ok())
                .ok_or_else(|| corrupt_key(&key, "not a serial"))?;
            let due = decode_due(&key, &value)?;
            if due <= due_by {
                out.push((serial, due));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn scheduled_revocation(
        &self,
        serial: Serial,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        self.check()?;
        let key = schedule_key(serial);
        self.db
            .get(&key)
            .map_err(unavailable)?
            .map(|v| decode_due(&key, &v))
            .transpose()
    }

    async fn owner(&self, name: &str) -> Result<Option<OwnerRecord>, StoreError> {
        self.get_versioned(&owner_key(name))
    }

    async fn owners(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OwnerRecord>, StoreError> {
        self.check()?;
        let start = after.map_or_else(
            || b"w/".to_vec(),
            |a| owner_key(a).into_iter().chain([0]).collect(),
        );
        let mut out = Vec::new();
        for item in self.db.range(start..) {
            let (key, value) = item.map_err(unavailable)?;
            if !key.starts_with(b"w/") || out.len() >= limit {
                break;
            }
            out.push(decode_versioned(&key, &value)?);
        }
        Ok(out)
    }

    async fn firmware_signer(
        &self,
        owner: &str,
    ) -> Result<Option<FirmwareSignerRecord>, StoreError> {
        self.get(&firmware_signer_key(owner))
    }

    async fn firmware(
        &self,
        owner: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<FirmwareRecord>, StoreError> {
        self.get(&firmware_key(owner, name, version))
    }

    async fn firmware_image(
        &self,
        owner: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.check()?;
        Ok(self
            .db
            .get(firmware_image_key(owner, name, version))
            .map_err(unavailable)?
            .map(|bytes| bytes.to_vec()))
    }

    async fn firmwares(
        &self,
        owner: Option<&str>,
        after: Option<(&str, &str, &str)>,
        limit: usize,
    ) -> Result<Vec<FirmwareRecord>, StoreError> {
        self.check()?;
        let prefix = owner.map_or_else(|| "f/".to_owned(), |o| format!("f/{o}/"));
        let start = after.map_or_else(
            || prefix.clone().into_bytes(),
            |(o, n, v)| firmware_key(o, n, v).into_iter().chain([0]).collect(),
        );
        let mut out = Vec::new();
        for item in self.db.range(start..) {
            let (key, value) = item.map_err(unavailable)?;
            if !key.starts_with(prefix.as_bytes()) || out.len() >= limit {
                break;
            }
            out.push(decode(&key, &value)?);
        }
        Ok(out)
    }

    async fn rollout(&self, owner: &str, id: &str) -> Result<Option<RolloutRecord>, StoreError> {
        self.get_versioned(&rollout_key(owner, id))?
            .map(|record| self.with_outcomes(record))
            .transpose()
    }

    async fn rollouts(
        &self,
        owner: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<RolloutRecord>, StoreError> {
        self.check()?;
        let prefix = owner.map_or_else(|| "l/".to_owned(), rollout_prefix);
        let start = after.map_or_else(
            || prefix.clone().into_bytes(),
            |(o, id)| rollout_key(o, id).into_iter().chain([0]).collect(),
        );
        let mut out = Vec::new();
        for item in self.db.range(start..) {
            let (key, value) = item.map_err(unavailable)?;
            if !key.starts_with(prefix.as_bytes()) || out.len() >= limit {
                break;
            }
            out.push(self.with_outcomes(decode_versioned(&key, &value)?)?);
        }
        Ok(out)
    }

    async fn rollout_report(
        &self,
        owner: &str,
        id: &str,
        device_id: &DeviceId,
    ) -> Result<Option<RolloutReportRecord>, StoreError> {
        self.get(&rollout_report_key(owner, id, &device_id.to_string()))
    }

    async fn audit(
        &self,
        start: u64,
        limit: usize,
    ) -> Result<Vec<(u64, StoredAuditEntry)>, StoreError> {
        self.check()?;
        // Only durable entries: those past the head are applied but may not survive a crash.
        let head = self.audit_head.load(Ordering::Acquire);
        let mut out = Vec::new();
        if start.max(1) > head {
            return Ok(out);
        }
        for item in self.db.range(audit_key(start.max(1))..=audit_key(head)) {
            let (key, value) = item.map_err(unavailable)?;
            if !key.starts_with(b"a/") || out.len() >= limit {
                break;
            }
            let seq = u64::from_be_bytes(key[2..].try_into().map_err(|_| StoreError::Corrupt {
                key: "audit".into(),
                reason: "sequence key is not 8 bytes".into(),
            })?);
            out.push((seq, decode(&key, &value)?));
        }
        Ok(out)
    }

    async fn audit_head(&self) -> Result<u64, StoreError> {
        self.check()?;
        Ok(self.audit_head.load(Ordering::Acquire))
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}

/// The single writer: every write to the tree, and so the order of everything the store orders
/// (audit chain head, event sequence, versions, counts, CRL numbers).
struct Writer {
    db: sled::Db,
    data_file: File,
    events: broadcast::Sender<Published>,
    /// Sequence number of the last event published (per process: sled keeps no events).
    event_seq: u64,
    audit_seq: u64,
    audit_hash: [u8; 32],
    audit_head: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
    commit_delay: CommitDelay,
}

/// A write staged by a change, kept decoded where later changes of the group update it again
/// (batch counts, the credential count), and encoded once when the group is made durable.
#[derive(Clone, Debug)]
enum Staged {
    Removed,
    Bytes(Vec<u8>),
    Batch(Box<BatchRecord>),
    Count(u64),
}

impl Staged {
    fn into_bytes(self) -> Option<Vec<u8>> {
        match self {
            Self::Removed => None,
            Self::Bytes(bytes) => Some(bytes),
            Self::Batch(batch) => Some(encode(&*batch)),
            Self::Count(count) => Some(encode(&count)),
        }
    }
}

/// Writes staged by the changes of one group; later changes read through it.
type Overlay = BTreeMap<Vec<u8>, Staged>;

/// Moves what is queued into `group`, up to [`MAX_GROUP`] changes.
fn take_queued(receiver: &mut mpsc::Receiver<(Change, Reply)>, group: &mut Vec<(Change, Reply)>) {
    while group.len() < MAX_GROUP {
        match receiver.try_recv() {
            Ok(item) => group.push(item),
            Err(_) => break,
        }
    }
}

impl Writer {
    fn run(mut self, mut receiver: mpsc::Receiver<(Change, Reply)>) {
        while let Some(first) = receiver.blocking_recv() {
            let mut group = vec![first];
            take_queued(&mut receiver, &mut group);
            if let Some(delay) = self.commit_delay.before_commit(group.len(), MAX_GROUP) {
                let before = group.len();
                thread::sleep(delay);
                take_queued(&mut receiver, &mut group);
                self.commit_delay.waited(group.len() - before);
            }
            self.commit_group(group);
            if self.failed.load(Ordering::Acquire) {
                break;
            }
        }
        // Anything still queued after a failure is refused rather than left hanging.
        receiver.close();
        while let Ok((_, reply)) = receiver.try_recv() {
            let _ = reply.send(Err(StoreError::Unavailable(
                "registry writer stopped".into(),
            )));
        }
    }

    fn commit_group(&mut self, group: Vec<(Change, Reply)>) {
        let mut overlay = Overlay::new();
        let mut outcomes = Vec::with_capacity(group.len());
        let mut events = Vec::new();
        for (change, reply) in group {
            let (seq, hash) = (self.audit_seq, self.audit_hash);
            let mut staged = Overlay::new();
            match self.stage(&overlay, &mut staged, &change) {
                Ok(receipt) => {
                    overlay.extend(staged);
                    events.extend(change.events);
                    outcomes.push((reply, Ok(receipt)));
                }
                Err(e) => {
                    // The refused change's audit entries never happened.
                    self.audit_seq = seq;
                    self.audit_hash = hash;
                    outcomes.push((reply, Err(e)));
                }
            }
        }
        if let Err(e) = self.make_durable(overlay) {
            self.failed.store(true, Ordering::Release);
            tracing::error!(error = %e, "registry write failed; refusing further writes");
            for (reply, _) in outcomes {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
        self.audit_head.store(self.audit_seq, Ordering::Release);
        for (reply, outcome) in outcomes {
            let _ = reply.send(outcome);
        }
        for event in events {
            self.event_seq += 1;
            // No receivers is fine: nobody is watching.
            let _ = self.events.send(Published {
                seq: self.event_seq,
                event,
            });
        }
    }

    fn make_durable(&self, overlay: Overlay) -> Result<(), StoreError> {
        if overlay.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (key, value) in overlay {
            match value.into_bytes() {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        self.db.apply_batch(batch).map_err(unavailable)?;
        self.db.flush().map_err(unavailable)?;
        self.data_file.sync_data().map_err(unavailable)
    }

    /// What the group has staged for `key` so far (this change's writes first).
    fn staged<'a>(overlay: &'a Overlay, staged: &'a Overlay, key: &[u8]) -> Option<&'a Staged> {
        staged.get(key).or_else(|| overlay.get(key))
    }

    fn exists(&self, overlay: &Overlay, staged: &Overlay, key: &[u8]) -> Result<bool, StoreError> {
        match Self::staged(overlay, staged, key) {
            Some(value) => Ok(!matches!(value, Staged::Removed)),
            None => self.db.contains_key(key).map_err(unavailable),
        }
    }

    fn read<T: DeserializeOwned>(
        &self,
        overlay: &Overlay,
        staged: &Overlay,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match Self::staged(overlay, staged, key) {
            Some(Staged::Removed) => Ok(None),
            Some(Staged::Bytes(bytes)) => decode(key, bytes).map(Some),
            Some(other) => {
                // A decoded value read as another type goes through its encoding: rare, and
                // always consistent with what will be stored.
                let bytes = other.clone().into_bytes().unwrap_or_default();
                decode(key, &bytes).map(Some)
            }
            None => self
                .db
                .get(key)
                .map_err(unavailable)?
                .map(|v| decode(key, &v))
                .transpose(),
        }
    }

    fn read_batch(
        &self,
        overlay: &Overlay,
        staged: &Overlay,
        key: &[u8],
    ) -> Result<Option<BatchRecord>, StoreError> {
        match Self::staged(overlay, staged, key) {
            Some(Staged::Batch(batch)) => Ok(Some((**batch).clone())),
            _ => self.read(overlay, staged, key),
        }
    }

    fn read_count(
        &self,
        overlay: &Overlay,
        staged: &Overlay,
        key: &[u8],
    ) -> Result<u64, StoreError> {
        match Self::staged(overlay, staged, key) {
            Some(Staged::Count(count)) => Ok(*count),
            _ => Ok(self.read(overlay, staged, key)?.unwrap_or(0)),
        }
    }

    /// Every onboarding adjusts its batch's counts: the group keeps the batch decoded and
    /// encodes it once, when the group is made durable.
    fn adjust_counts(
        &self,
        overlay: &Overlay,
        staged: &mut Overlay,
        batch_id: &str,
        delta: &CountsDelta,
    ) -> Result<(), StoreError> {
        let key = batch_key(batch_id);
        if !matches!(staged.get(&key), Some(Staged::Batch(_))) {
            let Some(batch) = self.read_batch(overlay, staged, &key)? else {
                return Err(Conflict::BatchAbsent(batch_id.to_owned()).into());
            };
            staged.insert(key.clone(), Staged::Batch(Box::new(batch)));
        }
        if let Some(Staged::Batch(batch)) = staged.get_mut(&key) {
            batch.counts.apply(delta);
        }
        Ok(())
    }

    /// Refuses a change one of whose guards fails.
    fn check_guards(
        &self,
        overlay: &Overlay,
        staged: &Overlay,
        guards: &[Guard],
    ) -> Result<(), StoreError> {
        for guard in guards {
            let (key, conflict) = match guard {
                Guard::PolicyAbsent { owner, name } => (
                    policy_key(owner, name),
                    Conflict::PolicyExists {
                        owner: owner.clone(),
                        name: name.clone(),
                    },
                ),
                Guard::BatchAbsent(id) => (batch_key(id), Conflict::BatchExists(id.clone())),
                Guard::OwnerAbsent(name) => (owner_key(name), Conflict::OwnerExists(name.clone())),
                Guard::SerialAbsent(serial) => {
                    (credential_key(*serial), Conflict::SerialTaken(*serial))
                }
                Guard::RequestIdAbsent { owner, request_id } => (
                    request_key(owner, request_id),
                    Conflict::RequestIdUsed {
                        owner: owner.clone(),
                        request_id: request_id.clone(),
                    },
                ),
                Guard::FirmwareSignerAbsent(owner) => (
                    firmware_signer_key(owner),
                    Conflict::FirmwareSignerExists(owner.clone()),
                ),
                Guard::FirmwareAbsent {
                    owner,
                    name,
                    version,
                } => (
                    firmware_key(owner, name, version),
                    Conflict::FirmwareExists {
                        owner: owner.clone(),
                        name: name.clone(),
                        version: version.clone(),
                    },
                ),
                Guard::OperatorUnrevoked(serial) => {
                    let record: Option<OperatorCertificateRecord> =
                        self.read(overlay, staged, &operator_key(*serial))?;
                    if record.is_none_or(|r| r.revocation.is_some()) {
                        return Err(Conflict::OperatorRevoked(*serial).into());
                    }
                    continue;
                }
            };
            if self.exists(overlay, staged, &key)? {
                return Err(conflict.into());
            }
        }
        Ok(())
    }

    /// Stages a rollout (compare-and-set on its version) or a device's report of one (once per
    /// device, counted into the rollout's outcomes).
    fn stage_rollout(
        &self,
        overlay: &Overlay,
        staged: &mut Overlay,
        op: &Op,
    ) -> Result<(), StoreError> {
        match op {
            Op::PutRollout(rollout) => {
                let key = rollout_key(&rollout.owner, &rollout.id);
                let found = self.version(overlay, staged, &key)?;
                if found != rollout.version {
                    return Err(Conflict::RolloutChanged {
                        owner: rollout.owner.clone(),
                        id: rollout.id.clone(),
                        expected: rollout.version,
                        found,
                    }
                    .into());
                }
                staged.insert(key, Staged::Bytes(encode_versioned(found + 1, &**rollout)));
            }
            Op::ReportRollout {
                owner,
                rollout_id,
                report,
            } => {
                if !self.exists(overlay, staged, &rollout_key(owner, rollout_id))? {
                    return Err(Conflict::RolloutAbsent {
                        owner: owner.clone(),
                        id: rollout_id.clone(),
                    }
                    .into());
                }
                let report_key = rollout_report_key(owner, rollout_id, &report.device_id);
                if self.exists(overlay, staged, &report_key)? {
                    return Err(Conflict::RolloutReported {
                        id: rollout_id.clone(),
                        device_id: report.device_id.clone(),
                    }
                    .into());
                }
                let outcomes_key = rollout_outcomes_key(owner, rollout_id);
                let (installed, failed): (u64, u64) = self
                    .read(overlay, staged, &outcomes_key)?
                    .unwrap_or_default();
                let counted = if report.installed {
                    (installed + 1, failed)
                } else {
                    (installed, failed + 1)
                };
                staged.insert(outcomes_key, Staged::Bytes(encode(&counted)));
                staged.insert(report_key, Staged::Bytes(encode(&**report)));
            }
            _ => {}
        }
        Ok(())
    }

    /// The version stored (or staged by the group) under `key`: 0 when there is no record.
    fn version(&self, overlay: &Overlay, staged: &Overlay, key: &[u8]) -> Result<u64, StoreError> {
        Ok(match Self::staged(overlay, staged, key) {
            Some(Staged::Bytes(bytes)) => version_of(bytes),
            // Devices and owners are only ever staged as bytes, or removed (never).
            Some(_) => 0,
            None => self
                .db
                .get(key)
                .map_err(unavailable)?
                .map_or(0, |bytes| version_of(&bytes)),
        })
    }

    /// Stages a device record if its version is still the one it was read at.
    fn put_device(
        &self,
        overlay: &Overlay,
        staged: &mut Overlay,
        device: &DeviceRecord,
    ) -> Result<(), StoreError> {
        let key = device_key(&device.device_id);
        let found = self.version(overlay, staged, &key)?;
        if found != device.version {
            return Err(Conflict::DeviceChanged {
                device_id: device.device_id,
                expected: device.version,
                found,
            }
            .into());
        }
        staged.insert(key, Staged::Bytes(encode_versioned(found + 1, device)));
        Ok(())
    }

    /// Stages a CRL if its number is above the stored CRL's.
    fn put_crl(
        &self,
        overlay: &Overlay,
        staged: &mut Overlay,
        issuer: &str,
        record: &CrlRecord,
    ) -> Result<(), StoreError> {
        let key = crl_key(issuer);
        let stored: Option<CrlRecord> = self.read(overlay, staged, &key)?;
        if let Some(stored) = stored
            && stored.number >= record.number
        {
            return Err(Conflict::CrlNumberTaken {
                issuer: issuer.to_owned(),
                number: record.number,
                stored: stored.number,
            }
            .into());
        }
        staged.insert(key, Staged::Bytes(encode(record)));
        Ok(())
    }

    #[allow(clippy::too_many_lines, reason = "one short arm per op")]
    fn stage(
        &mut self,
        overlay: &Overlay,
        staged: &mut Overlay,
        change: &Change,
    ) -> Result<Receipt, StoreError> {
        self.check_guards(overlay, staged, &change.guards)?;
        let mut receipt = Receipt::default();
        for op in &change.ops {
            match op {
                Op::PutDevice(device) => self.put_device(overlay, staged, device)?,
                Op::PutCrl { issuer, record } => self.put_crl(overlay, staged, issuer, record)?,
                Op::PutPolicy(policy) => {
                    staged.insert(
                        policy_key(&policy.owner, &policy.name),
                        Staged::Bytes(encode_policy(policy)),
                    );
                }
                Op::PutBatch(batch) => {
                    let key = batch_key(&batch.batch_id);
                    let mut batch = batch.clone();
                    if let Some(existing) = self.read_batch(overlay, staged, &key)? {
                        batch.counts = existing.counts;
                    }
                    staged.insert(key, Staged::Batch(Box::new(batch)));
                }
                Op::AddToBatch {
                    batch_id,
                    device_id,
                } => {
                    staged.insert(member_key(batch_id, device_id), Staged::Bytes(Vec::new()));
                }
                Op::RemoveFromBatch {
                    batch_id,
                    device_id,
                } => {
                    staged.insert(member_key(batch_id, device_id), Staged::Removed);
                }
                Op::PutCredential(credential) => {
                    let key = credential_key(credential.serial);
                    if !self.exists(overlay, staged, &key)? {
                        let count = self.read_count(overlay, staged, CREDENTIAL_COUNT_KEY)?;
                        staged.insert(CREDENTIAL_COUNT_KEY.to_vec(), Staged::Count(count + 1));
                    }
                    staged.insert(key, Staged::Bytes(encode(credential)));
                }
                Op::PutOperatorCertificate(record) => {
                    staged.insert(operator_key(record.serial), Staged::Bytes(encode(record)));
                }
                Op::Revoke {
                    issuer,
                    serial,
                    entry,
                } => {
                    staged.insert(revoked_key(issuer, *serial), Staged::Bytes(encode(entry)));
                }
                Op::PutOwner(owner) => {
                    let key = owner_key(&owner.name);
                    let found = self.version(overlay, staged, &key)?;
                    if found != owner.version {
                        return Err(Conflict::OwnerChanged {
                            name: owner.name.clone(),
                            expected: owner.version,
                            found,
                        }
                        .into());
                    }
                    staged.insert(key, Staged::Bytes(encode_versioned(found + 1, &**owner)));
                }
                Op::AdjustCounts { batch_id, delta } => {
                    self.adjust_counts(overlay, staged, batch_id, delta)?;
                }
                Op::ScheduleRevocation { serial, due } => {
                    staged.insert(
                        schedule_key(*serial),
                        Staged::Bytes(encode(&due.unix_timestamp())),
                    );
                }
                Op::CancelScheduledRevocation(serial) => {
                    staged.insert(schedule_key(*serial), Staged::Removed);
                }
                Op::PutRequestId {
                    owner,
                    request_id,
                    batch_id,
                } => {
                    staged.insert(
                        request_key(owner, request_id),
                        Staged::Bytes(encode(batch_id)),
                    );
                }
                Op::PutFirmwareSigner(_) | Op::PutFirmware { .. } => stage_firmware(staged, op),
                Op::PutRollout(_) | Op::ReportRollout { .. } => {
                    self.stage_rollout(overlay, staged, op)?;
                }
                Op::Audit(draft) => {
                    let seq = self.audit_seq + 1;
                    let entry = audit::seal(draft, seq, &self.audit_hash)
                        .map_err(|e| StoreError::Unrecordable(e.to_string()))?;
                    self.audit_hash.copy_from_slice(&entry.hash);
                    self.audit_seq = seq;
                    staged.insert(audit_key(seq), Staged::Bytes(encode(&entry)));
                    receipt.audit_seqs.push(seq);
                }
            }
        }
        Ok(receipt)
    }
}
