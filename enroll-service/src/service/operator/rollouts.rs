//! CreateRollout, GetRollout, ListRollouts, UpdateRollout: staged firmware rollouts (the rules
//! are [`crate::firmware::rollout`]'s; devices meet them in `service/device/firmware.rs`).
//!
//! Creating and stepping a rollout is an admin's act, audited; the record is rewritten with
//! compare-and-set on its version, so two operators' steps never both apply to one reading.

use time::OffsetDateTime;

use oxroot_proto::v1;

use super::paging::Pager;
use super::policies::check_policy_name;
use super::{ADMINS, ANY_ROLE, OperatorService, operator_audit};
use crate::error::ServiceError;
use crate::firmware::rollout::{self, RolloutStanding, RolloutState, RolloutStep, Stages};
use crate::model::{RolloutOutcomes, RolloutRecord};
use crate::service::{Caller, check_rollout_id, random_hex};
use crate::store::{Change, Conflict, Op, StoreError, commit};
use crate::wire::timestamp;

/// Stages of a rollout created without any.
const DEFAULT_STAGES: [u8; 3] = [10, 50, 100];
/// Failure threshold of a rollout created without one.
const DEFAULT_FAILURE_THRESHOLD: u64 = 5;
/// How often an update re-reads a rollout another writer changed before giving up.
const UPDATE_ATTEMPTS: usize = 8;

/// The API view of a rollout.
pub(crate) fn rollout_view(record: &RolloutRecord) -> v1::Rollout {
    let standing = match record.standing() {
        RolloutStanding::Active => v1::RolloutStanding::Active,
        RolloutStanding::Paused => v1::RolloutStanding::Paused,
        RolloutStanding::Halted => v1::RolloutStanding::Halted,
        RolloutStanding::Aborted => v1::RolloutStanding::Aborted,
    };
    v1::Rollout {
        owner: record.owner.clone(),
        id: record.id.clone(),
        policy_name: record.policy_name.clone(),
        batch_id: record.batch_id.clone().unwrap_or_default(),
        firmware_name: record.firmware_name.clone(),
        firmware_version: record.firmware_version.clone(),
        measurement: record.measurement.clone(),
        stages: record.stages.iter().map(|p| u32::from(*p)).collect(),
        current_stage: record.current_stage,
        standing: standing as i32,
        failure_threshold: record.failure_threshold,
        installed: record.outcomes.installed,
        failed: record.outcomes.failed,
        created_at: Some(timestamp(record.created_at)),
        created_by: record.created_by.clone(),
        updated_at: Some(timestamp(record.updated_at)),
    }
}

fn stages_of(requested: &[u32]) -> Result<Stages, ServiceError> {
    let percents = if requested.is_empty() {
        DEFAULT_STAGES.to_vec()
    } else {
        requested
            .iter()
            .map(|p| u8::try_from(*p).unwrap_or(u8::MAX))
            .collect()
    };
    Stages::new(percents).map_err(|e| ServiceError::invalid("stages", e.to_string()))
}

fn step_of(step: i32) -> Result<Option<RolloutStep>, ServiceError> {
    match v1::RolloutStep::try_from(step) {
        Ok(v1::RolloutStep::Unspecified) => Ok(None),
        Ok(v1::RolloutStep::Advance) => Ok(Some(RolloutStep::Advance)),
        Ok(v1::RolloutStep::Pause) => Ok(Some(RolloutStep::Pause)),
        Ok(v1::RolloutStep::Resume) => Ok(Some(RolloutStep::Resume)),
        Ok(v1::RolloutStep::Abort) => Ok(Some(RolloutStep::Abort)),
        Err(_) => Err(ServiceError::invalid("step", "unknown step")),
    }
}

fn step_name(step: Option<RolloutStep>) -> &'static str {
    match step {
        None => "threshold",
        Some(RolloutStep::Advance) => "advance",
        Some(RolloutStep::Pause) => "pause",
        Some(RolloutStep::Resume) => "resume",
        Some(RolloutStep::Abort) => "abort",
    }
}

fn not_found(owner: &str, id: &str) -> ServiceError {
    ServiceError::NotFound(format!("rollout {owner}/{id}"))
}

impl OperatorService {
    /// CreateRollout for an authenticated caller.
    pub(crate) async fn create_rollout_as(
        &self,
        caller: &Caller,
        request: &v1::CreateRolloutRequest,
    ) -> Result<v1::CreateRolloutResponse, ServiceError> {
        caller.require("CreateRollout", ADMINS)?;
        let owner = caller.owner_for("owner", &request.owner)?;
        check_policy_name("firmware_name", &request.firmware_name)?;
        let version =
            super::firmware::parse_version("firmware_version", &request.firmware_version)?
                .to_string();
        let stages = stages_of(&request.stages)?;
        let failure_threshold = match request.failure_threshold {
            0 => DEFAULT_FAILURE_THRESHOLD,
            n => n,
        };
        let registry = self.core.registry.as_ref();
        let firmware = registry
            .firmware(&owner, &request.firmware_name, &version)
            .await?
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "firmware {owner}/{} {version}",
                    request.firmware_name
                ))
            })?;
        let batch_id = if request.batch_id.is_empty() {
            None
        } else {
            let batch = registry
                .batch(&request.batch_id)
                .await?
                .filter(|b| b.owner == owner)
                .ok_or_else(|| ServiceError::NotFound(format!("batch {:?}", request.batch_id)))?;
            if batch.policy_name != firmware.policy_name {
                return Err(ServiceError::invalid(
                    "batch_id",
                    format!(
                        "the batch is of policy {:?}, the image of policy {:?}",
                        batch.policy_name, firmware.policy_name
                    ),
                ));
            }
            Some(batch.batch_id)
        };
        let now = OffsetDateTime::now_utc();
        let record = RolloutRecord {
            owner: owner.clone(),
            id: format!("ro-{}", random_hex(8)?),
            policy_name: firmware.policy_name.clone(),
            batch_id,
            firmware_name: firmware.name.clone(),
            firmware_version: firmware.version.clone(),
            measurement: firmware.measurement.clone(),
            stages: stages.percents,
            current_stage: 0,
            state: RolloutState::Active,
            failure_threshold,
            halt_recorded: false,
            created_at: now,
            created_by: caller.qualified_name(),
            updated_at: now,
            version: 0,
            outcomes: RolloutOutcomes::default(),
        };
        let mut change = Change::new();
        change.op(Op::PutRollout(Box::new(record.clone()))).audit(
            operator_audit(
                caller,
                now,
                &owner,
                "firmware.rollout.create",
                format!("rollout:{owner}/{}", record.id),
                &random_hex(12)?,
            )
            .detail("policy", record.policy_name.clone())
            .detail("batch", record.batch_id.clone().unwrap_or_default())
            .detail(
                "firmware",
                format!("{} {}", record.firmware_name, record.firmware_version),
            )
            .detail("measurement", record.measurement.clone())
            .detail("stages", format!("{:?}", record.stages))
            .detail("failure_threshold", failure_threshold.to_string()),
        );
        commit(registry, change).await?;
        tracing::info!(operator = %caller.name, %owner, rollout = %record.id, firmware = %record.firmware_name, version = %record.firmware_version, "rollout created");
        Ok(v1::CreateRolloutResponse {
            rollout: Some(rollout_view(&RolloutRecord {
                version: 1,
                ..record
            })),
        })
    }

    /// GetRollout for an authenticated caller.
    pub(crate) async fn get_rollout_as(
        &self,
        caller: &Caller,
        request: &v1::GetRolloutRequest,
    ) -> Result<v1::GetRolloutResponse, ServiceError> {
        caller.require("GetRollout", ANY_ROLE)?;
        let owner = caller.owner_for("owner", &request.owner)?;
        check_rollout_id("rollout_id", &request.rollout_id)?;
        let record = self
            .core
            .registry
            .rollout(&owner, &request.rollout_id)
            .await?
            .ok_or_else(|| not_found(&owner, &request.rollout_id))?;
        Ok(v1::GetRolloutResponse {
            rollout: Some(rollout_view(&record)),
        })
    }

    /// ListRollouts for an authenticated caller.
    pub(crate) async fn list_rollouts_as(
        &self,
        caller: &Caller,
        request: &v1::ListRolloutsRequest,
    ) -> Result<v1::ListRolloutsResponse, ServiceError> {
        caller.require("ListRollouts", ANY_ROLE)?;
        let owner = caller.owner_filter("owner", &request.owner)?;
        if !request.policy_name.is_empty() {
            check_policy_name("policy_name", &request.policy_name)?;
        }
        let pager = Pager::new(
            "ListRollouts",
            &[owner.as_deref().unwrap_or_default(), &request.policy_name],
            request.page_size,
        );
        let start: Option<(String, String)> = pager.resume(&request.page_token)?;
        let registry = self.core.registry.as_ref();
        let (records, next) = pager
            .collect(
                start,
                |after: Option<(String, String)>, n| {
                    let owner = owner.as_deref();
                    async move {
                        let after = after.as_ref().map(|(o, id)| (o.as_str(), id.as_str()));
                        Ok(registry.rollouts(owner, after, n).await?)
                    }
                },
                |r: &RolloutRecord| (r.owner.clone(), r.id.clone()),
                |r| request.policy_name.is_empty() || r.policy_name == request.policy_name,
            )
            .await?;
        Ok(v1::ListRolloutsResponse {
            rollouts: records.iter().map(rollout_view).collect(),
            next_page_token: pager.token(next.as_ref()),
        })
    }

    /// UpdateRollout for an authenticated caller.
    pub(crate) async fn update_rollout_as(
        &self,
        caller: &Caller,
        request: &v1::UpdateRolloutRequest,
    ) -> Result<v1::UpdateRolloutResponse, ServiceError> {
        caller.require("UpdateRollout", ADMINS)?;
        let owner = caller.owner_for("owner", &request.owner)?;
        check_rollout_id("rollout_id", &request.rollout_id)?;
        let step = step_of(request.step)?;
        let threshold = (request.failure_threshold > 0).then_some(request.failure_threshold);
        if step.is_none() && threshold.is_none() {
            return Err(ServiceError::invalid(
                "step",
                "give a step, a new failure_threshold, or both",
            ));
        }
        let registry = self.core.registry.as_ref();
        for _ in 0..UPDATE_ATTEMPTS {
            let record = registry
                .rollout(&owner, &request.rollout_id)
                .await?
                .ok_or_else(|| not_found(&owner, &request.rollout_id))?;
            let next = rollout::update(&record.control(), record.outcomes.failed, step, threshold)
                .map_err(|refused| {
                    ServiceError::FailedPrecondition(format!(
                        "rollout {owner}/{}: {refused}",
                        record.id
                    ))
                })?;
            let now = OffsetDateTime::now_utc();
            let updated = RolloutRecord {
                state: next.state,
                current_stage: u32::try_from(next.stages.current).unwrap_or(u32::MAX),
                failure_threshold: next.failure_threshold,
                // A halt at a new threshold is a new halt, recorded when it happens.
                halt_recorded: record.halt_recorded
                    && next.failure_threshold == record.failure_threshold,
                updated_at: now,
                ..record.clone()
            };
            let mut change = Change::new();
            change.op(Op::PutRollout(Box::new(updated.clone()))).audit(
                operator_audit(
                    caller,
                    now,
                    &owner,
                    "firmware.rollout.update",
                    format!("rollout:{owner}/{}", record.id),
                    &random_hex(12)?,
                )
                .detail("step", step_name(step))
                .detail("stage_percent", updated.stages().percent().to_string())
                .detail("failure_threshold", updated.failure_threshold.to_string())
                .detail("failed", record.outcomes.failed.to_string())
                .detail("installed", record.outcomes.installed.to_string()),
            );
            match commit(registry, change).await {
                Ok(_) => {
                    tracing::info!(operator = %caller.name, %owner, rollout = %record.id, step = step_name(step), "rollout updated");
                    return Ok(v1::UpdateRolloutResponse {
                        rollout: Some(rollout_view(&RolloutRecord {
                            version: record.version + 1,
                            ..updated
                        })),
                    });
                }
                Err(StoreError::Conflict(Conflict::RolloutChanged { .. })) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Unavailable(format!(
            "rollout {owner}/{} kept changing while it was updated; retry",
            request.rollout_id
        )))
    }
}
