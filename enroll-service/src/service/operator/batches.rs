//! CreateBatch, GetBatch, ListBatches.
//!
//! Batch IDs sort chronologically (`bt` + 13 hex digits of Unix milliseconds + 8 random hex
//! digits) because the registry lists batches newest first by key. CreateBatch's `request_id`
//! is made safe against concurrent retries by a registry guard, not by a read-then-write.

use time::OffsetDateTime;

use oxroot_proto::v1;

use super::convert::Views;
use super::import::Importer;
use super::paging::Pager;
use super::policies::check_policy_name;
use super::{ANY_ROLE, OPERATORS, OperatorService, check_text, operator_audit};
use crate::error::ServiceError;
use crate::model::{BatchCounts, BatchRecord};
use crate::service::{Caller, random_hex};
use crate::store::{Change, Guard, Op, StoreError, commit};

/// Most device IDs one CreateBatch may list.
const MAX_CREATE_DEVICE_IDS: usize = 10_000;
/// Records committed together (the same bound as one ImportDevices chunk).
const CHUNK: usize = 1_000;
/// Longest batch ID this service issues (the contract allows 64).
const MAX_BATCH_ID: usize = 64;

/// A batch ID that sorts by creation time.
fn new_batch_id(now: OffsetDateTime) -> Result<String, ServiceError> {
    let millis = (now.unix_timestamp_nanos() / 1_000_000) as u64;
    Ok(format!("bt{millis:013x}{}", random_hex(4)?))
}

impl OperatorService {
    /// The batch `batch_id` if the caller may see it; another owner's batch is NOT_FOUND.
    pub(super) async fn visible_batch(
        &self,
        caller: &Caller,
        field: &str,
        batch_id: &str,
    ) -> Result<BatchRecord, ServiceError> {
        if batch_id.is_empty() {
            return Err(ServiceError::invalid(field, "is required"));
        }
        if batch_id.len() > MAX_BATCH_ID {
            return Err(ServiceError::invalid(
                field,
                "must be at most 64 characters",
            ));
        }
        self.core
            .registry
            .batch(batch_id)
            .await?
            .filter(|b| caller.can_see(Some(&b.owner)))
            .ok_or_else(|| ServiceError::NotFound(format!("batch {batch_id:?}")))
    }

    /// CreateBatch for an authenticated caller.
    pub(crate) async fn create_batch_as(
        &self,
        caller: &Caller,
        request: v1::CreateBatchRequest,
    ) -> Result<v1::CreateBatchResponse, ServiceError> {
        caller.require("CreateBatch", OPERATORS)?;
        let owner = caller.owner_for("owner", &request.owner)?;
        check_text("name", &request.name, 128)?;
        check_text("description", &request.description, 1024)?;
        check_text("request_id", &request.request_id, 64)?;
        if request.device_ids.len() > MAX_CREATE_DEVICE_IDS {
            return Err(ServiceError::invalid(
                "device_ids",
                "at most 10,000 per CreateBatch; add more with ImportDevices",
            ));
        }
        if request.policy_name.is_empty() {
            return Err(ServiceError::invalid("policy_name", "is required"));
        }
        check_policy_name("policy_name", &request.policy_name)?;
        if self
            .core
            .registry
            .policy(&owner, &request.policy_name)
            .await?
            .is_none()
        {
            return Err(ServiceError::NotFound(format!(
                "policy {:?}",
                request.policy_name
            )));
        }
        let correlation = random_hex(12)?;
        let batch = match self.earlier_attempt(&owner, &request.request_id).await? {
            Some(batch) => batch,
            None => {
                self.insert_batch(caller, &owner, &request, &correlation)
                    .await?
            }
        };
        let mut importer = Importer::new(self, caller, batch, correlation);
        let mut line = 0u64;
        let mut ids = request.device_ids.into_iter();
        loop {
            let records: Vec<v1::ImportRecord> = ids
                .by_ref()
                .take(CHUNK)
                .map(|id| {
                    line += 1;
                    v1::ImportRecord {
                        line,
                        record: Some(v1::import_record::Record::DeviceId(id)),
                    }
                })
                .collect();
            if records.is_empty() {
                break;
            }
            importer.add(records).await?;
        }
        let (batch, report) = importer.finish().await?;
        let batch = Views::new(self.core.registry.as_ref())
            .batch(&batch)
            .await?;
        Ok(v1::CreateBatchResponse {
            batch: Some(batch),
            report: Some(report),
        })
    }

    /// The batch an earlier CreateBatch with this idempotency key created, if any.
    async fn earlier_attempt(
        &self,
        owner: &str,
        request_id: &str,
    ) -> Result<Option<BatchRecord>, ServiceError> {
        if request_id.is_empty() {
            return Ok(None);
        }
        let Some(batch_id) = self.core.registry.request_id(owner, request_id).await? else {
            return Ok(None);
        };
        self.core
            .registry
            .batch(&batch_id)
            .await?
            .map(Some)
            .ok_or_else(|| {
                ServiceError::Internal(format!(
                    "request id {request_id:?} names missing batch {batch_id}"
                ))
            })
    }

    /// Stores a new batch (and its idempotency key) with its audit entry. A concurrent retry
    /// with the same key loses the guard and gets the winner's batch.
    async fn insert_batch(
        &self,
        caller: &Caller,
        owner: &str,
        request: &v1::CreateBatchRequest,
        correlation: &str,
    ) -> Result<BatchRecord, ServiceError> {
        let now = OffsetDateTime::now_utc();
        let batch = BatchRecord {
            batch_id: new_batch_id(now)?,
            owner: owner.to_owned(),
            name: request.name.clone(),
            policy_name: request.policy_name.clone(),
            description: request.description.clone(),
            created_at: now,
            created_by: caller.qualified_name(),
            counts: BatchCounts::default(),
        };
        let mut change = Change::new();
        change.guard(Guard::BatchAbsent(batch.batch_id.clone()));
        if !request.request_id.is_empty() {
            change
                .guard(Guard::RequestIdAbsent {
                    owner: owner.to_owned(),
                    request_id: request.request_id.clone(),
                })
                .op(Op::PutRequestId {
                    owner: owner.to_owned(),
                    request_id: request.request_id.clone(),
                    batch_id: batch.batch_id.clone(),
                });
        }
        change.op(Op::PutBatch(batch.clone())).audit(
            operator_audit(
                caller,
                now,
                owner,
                "batch.create",
                format!("batch:{}", batch.batch_id),
                correlation,
            )
            .detail("policy", format!("{owner}/{}", batch.policy_name))
            .detail("name", batch.name.clone())
            .detail("request_id", request.request_id.clone())
            .detail("device_ids", request.device_ids.len().to_string()),
        );
        match commit(self.core.registry.as_ref(), change).await {
            Ok(_) => {
                tracing::info!(operator = %caller.name, %owner, batch_id = %batch.batch_id, "batch created");
                Ok(batch)
            }
            Err(StoreError::Conflict(why)) => self
                .earlier_attempt(owner, &request.request_id)
                .await?
                .ok_or(ServiceError::Unavailable(format!(
                    "batch creation collided ({why}); retry"
                ))),
            Err(e) => Err(e.into()),
        }
    }

    /// GetBatch for an authenticated caller.
    pub(crate) async fn get_batch_as(
        &self,
        caller: &Caller,
        request: &v1::GetBatchRequest,
    ) -> Result<v1::GetBatchResponse, ServiceError> {
        caller.require("GetBatch", ANY_ROLE)?;
        let batch = self
            .visible_batch(caller, "batch_id", &request.batch_id)
            .await?;
        Ok(v1::GetBatchResponse {
            batch: Some(
                Views::new(self.core.registry.as_ref())
                    .batch(&batch)
                    .await?,
            ),
        })
    }

    /// ListBatches for an authenticated caller.
    pub(crate) async fn list_batches_as(
        &self,
        caller: &Caller,
        request: &v1::ListBatchesRequest,
    ) -> Result<v1::ListBatchesResponse, ServiceError> {
        caller.require("ListBatches", ANY_ROLE)?;
        let owner = caller.owner_filter("owner", &request.owner)?;
        if !request.policy_name.is_empty() {
            check_policy_name("policy_name", &request.policy_name)?;
        }
        let pager = Pager::new(
            "ListBatches",
            &[owner.as_deref().unwrap_or_default(), &request.policy_name],
            request.page_size,
        );
        let start: Option<String> = pager.resume(&request.page_token)?;
        let registry = self.core.registry.as_ref();
        let (batches, next) = pager
            .collect(
                start,
                |before: Option<String>, n| {
                    let owner = owner.as_deref();
                    async move { Ok(registry.batches(owner, before.as_deref(), n).await?) }
                },
                |b: &BatchRecord| b.batch_id.clone(),
                |b| request.policy_name.is_empty() || b.policy_name == request.policy_name,
            )
            .await?;
        let mut views = Views::new(registry);
        let mut listed = Vec::with_capacity(batches.len());
        for batch in &batches {
            listed.push(views.batch(batch).await?);
        }
        Ok(v1::ListBatchesResponse {
            batches: listed,
            next_page_token: pager.token(next.as_ref()),
        })
    }
}
