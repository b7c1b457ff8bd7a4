//! Adding devices to a batch: the path CreateBatch's `device_ids` and ImportDevices share.
//!
//! ```text
//!  chunk of ≤ 1,000 records
//!    ├─ parse each (DeviceId or offline registration) ─▶ INVALID_DEVICE_ID / INVALID_REGISTRATION / MALFORMED
//!    ├─ seen earlier in this import? ─▶ DUPLICATE
//!    ├─ offline registrations that would be accepted: Register them (concurrently, one lock each)
//!    └─ lock every remaining device (stripes once, ascending) ─▶ read, decide, stage
//!         ─▶ ONE Change: devices + memberships + summed counts + events + one batch.import entry
//!         ─▶ a device changed meanwhile (DeviceChanged): read and decide the chunk again
//! ```
//!
//! One durable commit per chunk instead of one per device is what makes a 100,000-device import
//! take seconds: every commit costs an fsync. Each staged device is written compare-and-set on
//! the version read, so a concurrent Register or Onboard of the same device (on any replica)
//! cannot overwrite (or be overwritten by) the staged record: the chunk loses, and is read and
//! decided again. The device locks, held from the read to the commit, spare this replica's own
//! streams that conflict.
//!
//! A record naming another owner's device is answered UNAVAILABLE, with one message whatever
//! that device's owner, state or batch: the importer hears nothing about the other owner. The
//! precise reason goes to the platform's audit log (owner `*`) in the chunk's one commit, so
//! such a record costs the same commit as a device that was added.

use std::collections::HashSet;

use time::OffsetDateTime;
use tokio::task::JoinSet;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use oxroot_proto::v1;
use oxroot_proto::v1::ImportRejectionReason as Reason;
use rot_core::keys::{DeviceId, PublicKey};

use super::{OPERATORS, OperatorService, operator_audit};
use crate::audit::AuditDraft;
use crate::error::ServiceError;
use crate::model::{BatchRecord, CountsDelta, DeviceEvent, DeviceEventKind, DeviceRecord};
use crate::pki::PLATFORM_OWNER;
use crate::service::device::{
    RegistrationProblem, VerifiedRegistration, register, verify_registration,
};
use crate::service::locks::retry_device_changes;
use crate::service::{Caller, parse_device_id, random_hex};
use crate::store::{Change, Op, RegistryEvent, StoreError};

/// Most records one ImportDevices chunk may carry.
const MAX_CHUNK: usize = 1_000;
/// Most records one ImportDevices call may carry.
const MAX_RECORDS: usize = 100_000;
/// Rejections listed in a report; the rest are only counted.
const MAX_LISTED_REJECTIONS: usize = 10_000;
/// Longest rejection message (contract: 256 characters).
const MAX_MESSAGE: usize = 256;
/// The platform audit action of a record answered UNAVAILABLE.
const UNAVAILABLE_ACTION: &str = "batch.import_unavailable";

/// A record that parsed and is not a duplicate.
struct Candidate {
    /// Position in the whole import (1-based), which orders the report.
    position: u64,
    /// Line number echoed in the report.
    line: u64,
    /// The DeviceId.
    device_id: DeviceId,
    /// Set for an offline registration whose proof verified.
    registration: Option<VerifiedRegistration>,
}

/// A refused record: the DeviceId if one could be read, the reason and a precise message.
struct Refused {
    /// The DeviceId, or empty if none could be read.
    device_id: String,
    /// The contract's reason code.
    reason: Reason,
    /// What exactly is wrong, for the operator.
    message: String,
}

impl Refused {
    fn new(device_id: impl Into<String>, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            device_id: device_id.into(),
            reason,
            message: message.into(),
        }
    }
}

/// What adding one device to the batch means, given its current record.
enum Decision {
    /// Add it: the record to store.
    Add(Box<DeviceRecord>),
    /// It is in this batch already.
    Unchanged,
    /// It cannot be added, for a reason the importer may know.
    Reject(Reason, String),
    /// It cannot be added because another owner (named here, for the platform's audit log
    /// only) holds it.
    Unavailable {
        /// The owner that holds it.
        holder: String,
    },
}

/// The rules of the contract's ImportRejectionReason, in an order that discloses nothing about
/// another owner's devices (not even whether they are revoked).
fn decide(existing: Option<DeviceRecord>, batch: &BatchRecord, device_id: DeviceId) -> Decision {
    let Some(device) = existing else {
        return Decision::Add(Box::new(DeviceRecord::new(device_id)));
    };
    if let Some(holder) = device.owner.as_ref().filter(|o| **o != batch.owner) {
        return Decision::Unavailable {
            holder: holder.clone(),
        };
    }
    if device.batch_id.as_ref() == Some(&batch.batch_id) {
        return Decision::Unchanged;
    }
    if device.revocation.is_some() {
        return Decision::Reject(Reason::Revoked, "the device is revoked".into());
    }
    if let Some(other) = &device.batch_id {
        return Decision::Reject(
            Reason::InOtherBatch,
            format!("the device is in batch {other}; move it with TransferDevice"),
        );
    }
    Decision::Add(Box::new(device))
}

/// Parses one record into a DeviceId (and a verified registration for offline records).
fn parse(record: Option<v1::import_record::Record>) -> Result<Candidate, Refused> {
    use v1::import_record::Record;
    let candidate = |device_id: DeviceId, registration| Candidate {
        position: 0,
        line: 0,
        device_id,
        registration,
    };
    match record {
        None => Err(Refused::new(
            "",
            Reason::Malformed,
            "the record has neither a device_id nor a registration",
        )),
        Some(Record::DeviceId(text)) if text.is_empty() => Err(Refused::new(
            "",
            Reason::Malformed,
            "the record's device_id is empty",
        )),
        Some(Record::DeviceId(text)) => match parse_device_id("device_id", &text) {
            Ok(id) => Ok(candidate(id, None)),
            Err(_) => Err(Refused::new(
                "",
                Reason::InvalidDeviceId,
                format!(
                    "{:?} is not a DeviceId (64 hexadecimal characters)",
                    text.chars().take(80).collect::<String>()
                ),
            )),
        },
        Some(Record::Registration(r)) => {
            if r.epk.is_empty() && r.proof_signature.is_empty() && r.claimed_device_id.is_empty() {
                return Err(Refused::new(
                    "",
                    Reason::Malformed,
                    "the record's registration is empty",
                ));
            }
            match verify_registration(
                &r.epk,
                &r.proof_signature,
                &r.claimed_device_id,
                r.context.as_ref(),
                &r.proof_context,
            ) {
                Ok(verified) => Ok(candidate(verified.device_id, Some(verified))),
                Err(problem) => {
                    let device_id = PublicKey::from_sec1(&r.epk)
                        .map(|k| DeviceId::from_public_key(&k).to_string())
                        .unwrap_or_default();
                    let message = match problem {
                        RegistrationProblem::Field(field, message) => {
                            format!("registration.{field}: {message}")
                        }
                        RegistrationProblem::BadSignature => {
                            "registration.proof_signature does not verify under the EPK".into()
                        }
                    };
                    Err(Refused::new(
                        device_id,
                        Reason::InvalidRegistration,
                        message,
                    ))
                }
            }
        }
    }
}

/// What a chunk's commit came to.
#[derive(Default)]
struct ChunkOutcome {
    accepted: u64,
    unchanged: u64,
    /// Records naming another owner's device (refused UNAVAILABLE, audited for the platform).
    unavailable: u64,
    /// Refusals decided on the devices' records, with positions and lines.
    rejected: Vec<(u64, u64, Refused)>,
}

/// Adds records to one batch, chunk by chunk, and builds the report.
pub(super) struct Importer<'a> {
    service: &'a OperatorService,
    /// Who imports (the audit actor and the offline registrations' actor).
    caller: &'a Caller,
    /// The target batch.
    batch: BatchRecord,
    /// Groups every audit entry and event of this import.
    correlation: String,
    /// DeviceIds met so far in this import, for DUPLICATE.
    seen: HashSet<DeviceId>,
    /// Records met so far, for the call limit and automatic line numbers.
    records: usize,
    /// The current chunk's rejections with their positions: a chunk judges records in two
    /// passes, and the report lists them in input order.
    pending: Vec<(u64, u64, Refused)>,
    report: v1::ImportReport,
}

impl<'a> Importer<'a> {
    /// An import into `batch` (which the caller may see) by `caller`.
    pub(super) fn new(
        service: &'a OperatorService,
        caller: &'a Caller,
        batch: BatchRecord,
        correlation: String,
    ) -> Self {
        Self {
            service,
            caller,
            batch,
            correlation,
            seen: HashSet::new(),
            records: 0,
            pending: Vec::new(),
            report: v1::ImportReport::default(),
        }
    }

    /// Records seen so far.
    pub(super) fn records(&self) -> usize {
        self.records
    }

    fn reject(&mut self, position: u64, line: u64, refused: Refused) {
        self.pending.push((position, line, refused));
    }

    /// Moves the chunk's rejections into the report, in input order.
    fn flush_rejections(&mut self) {
        self.pending.sort_by_key(|(position, _, _)| *position);
        for (_, line, refused) in self.pending.drain(..) {
            self.report.rejected += 1;
            if self.report.rejections.len() < MAX_LISTED_REJECTIONS {
                self.report.rejections.push(v1::ImportRejection {
                    line,
                    device_id: refused.device_id,
                    reason: refused.reason as i32,
                    message: refused.message.chars().take(MAX_MESSAGE).collect(),
                });
            } else {
                self.report.rejections_truncated = true;
            }
        }
    }

    /// Adds one chunk of records and commits it.
    ///
    /// # Errors
    /// Registry failures; records are judged individually and never fail the call.
    pub(super) async fn add(&mut self, records: Vec<v1::ImportRecord>) -> Result<(), ServiceError> {
        let mut candidates = Vec::with_capacity(records.len());
        for record in records {
            self.records += 1;
            let position = self.records as u64;
            // Line 0 means "number them for me": the record's position in the whole import.
            let line = if record.line == 0 {
                position
            } else {
                record.line
            };
            match parse(record.record) {
                Err(refused) => self.reject(position, line, refused),
                Ok(candidate) if !self.seen.insert(candidate.device_id) => {
                    let refused = Refused::new(
                        candidate.device_id.to_string(),
                        Reason::Duplicate,
                        "the device appears earlier in this import",
                    );
                    self.reject(position, line, refused);
                }
                Ok(candidate) => candidates.push(Candidate {
                    position,
                    line,
                    ..candidate
                }),
            }
        }
        self.register_offline(&candidates).await?;
        self.stage_and_commit(candidates).await?;
        self.flush_rejections();
        Ok(())
    }

    /// Registers the chunk's offline registrations whose devices would be accepted (or are in
    /// this batch already), concurrently so their commits share fsyncs. Done before the chunk
    /// takes its locks: Register takes the device's lock itself.
    async fn register_offline(&self, candidates: &[Candidate]) -> Result<(), ServiceError> {
        let core = &self.service.core;
        let actor = self.caller.actor();
        let mut tasks = JoinSet::new();
        for candidate in candidates {
            let Some(registration) = &candidate.registration else {
                continue;
            };
            let existing = core.registry.device(&candidate.device_id).await?;
            if matches!(
                decide(existing, &self.batch, candidate.device_id),
                Decision::Reject(..) | Decision::Unavailable { .. }
            ) {
                // A record that will be rejected has no effect, registration included.
                continue;
            }
            let (core, registration) = (core.clone(), registration.clone());
            let (actor, correlation) = (actor.clone(), self.correlation.clone());
            tasks.spawn(async move { register(&core, &registration, &actor, &correlation).await });
        }
        while let Some(outcome) = tasks.join_next().await {
            outcome.map_err(|e| ServiceError::Internal(format!("registration task: {e}")))??;
        }
        Ok(())
    }

    /// Locks, reads and decides the chunk's devices, then commits the accepted ones at once;
    /// again, from the reads, if a device changed meanwhile.
    async fn stage_and_commit(&mut self, candidates: Vec<Candidate>) -> Result<(), ServiceError> {
        let core = &self.service.core;
        let guards = core
            .device_locks
            .lock_many(candidates.iter().map(|c| &c.device_id))
            .await;
        let this = &*self;
        let outcome = retry_device_changes(|| this.commit_chunk(&candidates)).await?;
        drop(guards);
        for (position, line, refused) in outcome.rejected {
            self.reject(position, line, refused);
        }
        self.report.accepted += outcome.accepted;
        self.report.unchanged += outcome.unchanged;
        Ok(())
    }

    /// Reads and decides the chunk's devices and commits the accepted ones in one change.
    async fn commit_chunk(
        &self,
        candidates: &[Candidate],
    ) -> Result<Result<ChunkOutcome, StoreError>, ServiceError> {
        let core = &self.service.core;
        let now = OffsetDateTime::now_utc();
        let batch_id = self.batch.batch_id.clone();
        let mut change = Change::new();
        let mut delta = CountsDelta::default();
        let mut outcome = ChunkOutcome::default();
        let lines = (
            candidates.first().map_or(0, |c| c.line),
            candidates.last().map_or(0, |c| c.line),
        );
        for candidate in candidates {
            let existing = core.registry.device(&candidate.device_id).await?;
            match decide(existing, &self.batch, candidate.device_id) {
                Decision::Unchanged => outcome.unchanged += 1,
                Decision::Reject(reason, message) => {
                    let refused = Refused::new(candidate.device_id.to_string(), reason, message);
                    outcome
                        .rejected
                        .push((candidate.position, candidate.line, refused));
                }
                Decision::Unavailable { holder } => {
                    change.audit(self.unavailable_entry(candidate, &holder, now));
                    let refused = Refused::new(
                        candidate.device_id.to_string(),
                        Reason::Unavailable,
                        format!(
                            "the device cannot be added to this owner's batches; a platform \
                             operator can look up why (reference {})",
                            self.correlation
                        ),
                    );
                    outcome
                        .rejected
                        .push((candidate.position, candidate.line, refused));
                    outcome.unavailable += 1;
                }
                Decision::Add(mut device) => {
                    device.owner = Some(self.batch.owner.clone());
                    device.batch_id = Some(batch_id.clone());
                    delta += CountsDelta::joined(device.state());
                    let event = DeviceEvent::new(
                        device.device_id,
                        DeviceEventKind::Added,
                        now,
                        &self.correlation,
                    );
                    change
                        .op(Op::AddToBatch {
                            batch_id: batch_id.clone(),
                            device_id: device.device_id,
                        })
                        .event(RegistryEvent::Device {
                            batch_id: batch_id.clone(),
                            event,
                        })
                        .op(Op::PutDevice(*device));
                    outcome.accepted += 1;
                }
            }
        }
        if outcome.accepted == 0 {
            if outcome.unavailable == 0 {
                return Ok(Ok(outcome));
            }
            // The platform's entries alone: the same one commit an added device costs.
            return Ok(core.registry.commit(change).await.map(|_| outcome));
        }
        // The chunk's devices joined together: one adjustment of the counts for all of them.
        let rejected = self.pending.len() + outcome.rejected.len();
        change.batch_moved(&batch_id, delta, None).audit(
            operator_audit(
                self.caller,
                now,
                &self.batch.owner,
                "batch.import",
                format!("batch:{batch_id}"),
                &self.correlation,
            )
            .detail("accepted", outcome.accepted.to_string())
            .detail("unchanged", outcome.unchanged.to_string())
            .detail("rejected", rejected.to_string())
            .detail("lines", format!("{}-{}", lines.0, lines.1)),
        );
        Ok(core.registry.commit(change).await.map(|_| outcome))
    }

    /// The platform's audit entry of a record answered UNAVAILABLE: the precise reason, which
    /// the importing owner does not see.
    fn unavailable_entry(
        &self,
        candidate: &Candidate,
        holder: &str,
        now: OffsetDateTime,
    ) -> AuditDraft {
        let mut entry = operator_audit(
            self.caller,
            now,
            PLATFORM_OWNER,
            UNAVAILABLE_ACTION,
            format!("device:{}", candidate.device_id),
            &self.correlation,
        );
        "refused".clone_into(&mut entry.outcome);
        entry
            .detail("reason", "other_owner")
            .detail("holder", holder)
            .detail("importing_owner", self.batch.owner.clone())
            .detail("batch", self.batch.batch_id.clone())
            .detail("line", candidate.line.to_string())
    }

    /// The batch as it is now (counts included) and the report.
    ///
    /// # Errors
    /// Registry failures.
    pub(super) async fn finish(self) -> Result<(BatchRecord, v1::ImportReport), ServiceError> {
        let batch = self
            .service
            .core
            .registry
            .batch(&self.batch.batch_id)
            .await?
            .unwrap_or(self.batch);
        Ok((batch, self.report))
    }
}

impl OperatorService {
    /// ImportDevices for an authenticated caller, over the client's message stream.
    pub(crate) async fn import_devices_as<S>(
        &self,
        caller: &Caller,
        mut stream: S,
    ) -> Result<v1::ImportDevicesResponse, ServiceError>
    where
        S: Stream<Item = Result<v1::ImportDevicesRequest, Status>> + Unpin + Send,
    {
        use v1::import_devices_request::Msg;
        caller.require("ImportDevices", OPERATORS)?;
        let header = match stream.next().await {
            None => {
                return Err(ServiceError::Protocol(
                    "the stream ended before the header".into(),
                ));
            }
            Some(Err(status)) => return Err(ServiceError::from_client_stream(&status)),
            Some(Ok(v1::ImportDevicesRequest {
                msg: Some(Msg::Header(header)),
            })) => header,
            Some(Ok(_)) => {
                return Err(ServiceError::Protocol(
                    "the first message must be an ImportHeader".into(),
                ));
            }
        };
        let batch = self
            .visible_batch(caller, "header.batch_id", &header.batch_id)
            .await?;
        let mut importer = Importer::new(self, caller, batch, random_hex(12)?);
        while let Some(message) = stream.next().await {
            match message
                .map_err(|s| ServiceError::from_client_stream(&s))?
                .msg
            {
                Some(Msg::Chunk(chunk)) => {
                    if chunk.records.len() > MAX_CHUNK {
                        return Err(ServiceError::invalid(
                            "chunk.records",
                            "at most 1,000 records per chunk",
                        ));
                    }
                    if importer.records() + chunk.records.len() > MAX_RECORDS {
                        return Err(ServiceError::invalid(
                            "chunk.records",
                            "at most 100,000 records per ImportDevices call; start another call",
                        ));
                    }
                    importer.add(chunk.records).await?;
                }
                Some(Msg::Header(_)) => {
                    return Err(ServiceError::Protocol(
                        "only the first message may be an ImportHeader".into(),
                    ));
                }
                None => {
                    return Err(ServiceError::Protocol(
                        "an ImportDevicesRequest must set header or chunk".into(),
                    ));
                }
            }
        }
        let (batch, report) = importer.finish().await?;
        tracing::info!(
            operator = %caller.name,
            batch_id = %batch.batch_id,
            accepted = report.accepted,
            unchanged = report.unchanged,
            rejected = report.rejected,
            "import finished"
        );
        Ok(v1::ImportDevicesResponse {
            batch_id: batch.batch_id,
            report: Some(report),
            counts: Some(v1::BatchCounts::from(&batch.counts)),
        })
    }
}
