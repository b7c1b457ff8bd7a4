//! `rollout …`: a rollout's stage, standing and outcomes.

use oxroot_proto::v1::{Rollout, RolloutStanding};

use crate::output::{Fields, Table, timestamp_text};

fn standing(rollout: &Rollout) -> &'static str {
    match rollout.standing() {
        RolloutStanding::Active => "active",
        RolloutStanding::Paused => "paused",
        RolloutStanding::Halted => "halted by failures",
        RolloutStanding::Aborted => "aborted",
        RolloutStanding::Unspecified => "unknown",
    }
}

/// The current stage as "50 % (stage 2 of 3)".
fn stage(rollout: &Rollout) -> String {
    let percent = rollout
        .stages
        .get(rollout.current_stage as usize)
        .copied()
        .unwrap_or_default();
    format!(
        "{percent} % (stage {} of {})",
        rollout.current_stage + 1,
        rollout.stages.len()
    )
}

/// One rollout.
pub(crate) fn fields(rollout: &Rollout) -> Fields {
    Fields::new()
        .field("rollout", &rollout.id)
        .field("owner", &rollout.owner)
        .field("policy", &rollout.policy_name)
        .field(
            "batch",
            if rollout.batch_id.is_empty() {
                "(every batch of the policy)"
            } else {
                &rollout.batch_id
            },
        )
        .field(
            "firmware",
            format!("{} {}", rollout.firmware_name, rollout.firmware_version),
        )
        .field("measurement", &rollout.measurement)
        .field("stage", stage(rollout))
        .field(
            "stages",
            rollout
                .stages
                .iter()
                .map(|p| format!("{p} %"))
                .collect::<Vec<_>>()
                .join(", "),
        )
        .field("standing", standing(rollout))
        .field("installed", rollout.installed.to_string())
        .field(
            "failed",
            format!(
                "{} (halts at {})",
                rollout.failed, rollout.failure_threshold
            ),
        )
        .field(
            "created",
            format!(
                "{} by {}",
                timestamp_text(rollout.created_at.as_ref()),
                rollout.created_by
            ),
        )
        .field("updated", timestamp_text(rollout.updated_at.as_ref()))
}

/// Rollouts, one per row.
pub(crate) fn table(rollouts: &[Rollout]) -> Table {
    let mut table = Table::new(&[
        "ROLLOUT",
        "OWNER",
        "POLICY",
        "FIRMWARE",
        "STAGE",
        "STANDING",
        "INSTALLED",
        "FAILED",
    ]);
    for rollout in rollouts {
        table.row(vec![
            rollout.id.clone(),
            rollout.owner.clone(),
            rollout.policy_name.clone(),
            format!("{} {}", rollout.firmware_name, rollout.firmware_version),
            stage(rollout),
            standing(rollout).to_owned(),
            rollout.installed.to_string(),
            rollout.failed.to_string(),
        ]);
    }
    table
}
