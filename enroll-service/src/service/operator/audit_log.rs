//! QueryAudit and VerifyAudit.
//!
//! Owner-scoped callers see only their owner's entries, so the sequence numbers they see have
//! gaps; VerifyAudit nevertheless checks the *whole* log over the range (other owners' entries
//! included) and discloses only counts and hashes. Verification reads the log in blocks on a
//! blocking thread, so a long log neither fills memory nor stalls the async workers.

use time::OffsetDateTime;

use oxroot_proto::v1;

use super::paging::Pager;
use super::{AUDITORS, OperatorService};
use crate::audit::{AuditRecord, StoredAuditEntry, verify_chain};
use crate::error::ServiceError;
use crate::service::Caller;
use crate::store::Registry;

/// Entries read per registry call while verifying.
const VERIFY_BLOCK: usize = 4096;

/// An instant from a request timestamp.
fn instant(field: &str, at: &prost_types::Timestamp) -> Result<OffsetDateTime, ServiceError> {
    let nanos = i128::from(at.seconds) * 1_000_000_000 + i128::from(at.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map_err(|_| ServiceError::invalid(field, "is out of range"))
}

/// A decoded entry, with the stored form kept for the answer.
struct Decoded {
    /// Position in the log.
    seq: u64,
    /// The decoded record, for the filters.
    record: AuditRecord,
    /// The entry as stored, for the answer.
    stored: StoredAuditEntry,
}

/// Checks the hash chain over `[start, end]` (`end` 0: the newest entry).
async fn verify_range(
    registry: &dyn Registry,
    start: u64,
    end: u64,
) -> Result<v1::VerifyAuditResponse, ServiceError> {
    let head = registry.audit_head().await?;
    let end = if end == 0 { head } else { end.min(head) };
    let mut response = v1::VerifyAuditResponse {
        ok: true,
        first_seq: start,
        ..v1::VerifyAuditResponse::default()
    };
    if start > end {
        return Ok(response);
    }
    // The first entry must link to its predecessor as stored (or to the genesis hash).
    let mut prev = match start {
        1 => None,
        _ => registry
            .audit(start - 1, 1)
            .await?
            .into_iter()
            .find(|(seq, _)| *seq == start - 1)
            .map(|(_, entry)| entry.hash),
    };
    let mut next = start;
    while next <= end {
        let limit = usize::try_from(end - next + 1)
            .unwrap_or(usize::MAX)
            .min(VERIFY_BLOCK);
        let block = registry.audit(next, limit).await?;
        let first = block.first().map(|(seq, _)| *seq);
        let last = block.last().map(|(seq, _)| *seq);
        let report = if first == Some(next) {
            verify_chain(block, prev.clone())
        } else {
            crate::audit::ChainReport {
                checked: 0,
                last_hash: Vec::new(),
                failure: Some((next, "entry missing".to_owned())),
            }
        };
        response.entries_checked += report.checked;
        if let Some((seq, problem)) = report.failure {
            response.ok = false;
            response.first_bad_seq = seq;
            response.last_seq = seq;
            response.problem = problem;
            return Ok(response);
        }
        response.last_seq = last.unwrap_or(next);
        response.last_hash.clone_from(&report.last_hash);
        prev = Some(report.last_hash);
        next = response.last_seq + 1;
    }
    Ok(response)
}

impl OperatorService {
    /// QueryAudit for an authenticated caller.
    pub(crate) async fn query_audit_as(
        &self,
        caller: &Caller,
        request: &v1::QueryAuditRequest,
    ) -> Result<v1::QueryAuditResponse, ServiceError> {
        caller.require("QueryAudit", AUDITORS)?;
        let since = request
            .since
            .as_ref()
            .map(|t| instant("since", t))
            .transpose()?;
        let until = request
            .until
            .as_ref()
            .map(|t| instant("until", t))
            .transpose()?;
        let stamp = |t: Option<OffsetDateTime>| {
            t.map_or_else(String::new, |t| t.unix_timestamp_nanos().to_string())
        };
        let pager = Pager::new(
            "QueryAudit",
            &[
                &caller.owner,
                &request.start_seq.to_string(),
                &stamp(since),
                &stamp(until),
                &request.actor,
                &request.action,
                &request.subject,
                &request.correlation_id,
            ],
            request.page_size,
        );
        let start: Option<u64> = pager.resume(&request.page_token)?;
        let registry = self.core.registry.as_ref();
        let keep = |d: &Decoded| {
            let r = &d.record;
            (caller.is_platform() || r.owner == caller.owner)
                && since.is_none_or(|s| r.time >= s)
                && until.is_none_or(|u| r.time < u)
                && (request.actor.is_empty() || r.actor == request.actor)
                && (request.action.is_empty() || r.action == request.action)
                && (request.subject.is_empty() || r.subject == request.subject)
                && (request.correlation_id.is_empty() || r.correlation_id == request.correlation_id)
        };
        let (page, next) = pager
            .collect(
                start,
                |after: Option<u64>, n| async move {
                    let from = after.map_or(request.start_seq.max(1), |s| s + 1);
                    registry
                        .audit(from, n)
                        .await?
                        .into_iter()
                        .map(|(seq, stored)| {
                            let record = stored.decode().map_err(|e| {
                                ServiceError::Internal(format!(
                                    "audit entry {seq} does not decode: {e}"
                                ))
                            })?;
                            Ok(Decoded {
                                seq,
                                record,
                                stored,
                            })
                        })
                        .collect()
                },
                |d: &Decoded| d.seq,
                keep,
            )
            .await?;
        let entries = page
            .iter()
            .map(|d| {
                d.stored.to_proto().map_err(|e| {
                    ServiceError::Internal(format!("audit entry {} does not decode: {e}", d.seq))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(v1::QueryAuditResponse {
            entries,
            next_page_token: pager.token(next.as_ref()),
            head_seq: registry.audit_head().await?,
        })
    }

    /// VerifyAudit for an authenticated caller.
    pub(crate) async fn verify_audit_as(
        &self,
        caller: &Caller,
        request: &v1::VerifyAuditRequest,
    ) -> Result<v1::VerifyAuditResponse, ServiceError> {
        caller.require("VerifyAudit", AUDITORS)?;
        if request.end_seq != 0 && request.end_seq < request.start_seq {
            return Err(ServiceError::invalid(
                "end_seq",
                "must not be below start_seq",
            ));
        }
        let (start, end) = (request.start_seq.max(1), request.end_seq);
        verify_range(self.core.registry.as_ref(), start, end).await
    }
}
