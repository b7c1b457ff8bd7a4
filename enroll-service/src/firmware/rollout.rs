//! Staged rollouts, as pure rules: who is offered a rollout's firmware now, and which operator
//! steps a rollout admits. The registry keeps the records; the service applies these rules.
//!
//! ```text
//!  ACTIVE ──pause──▶ PAUSED ──resume──▶ ACTIVE ──advance──▶ next stage (10 → 50 → 100 %)
//!  ACTIVE / PAUSED ──abort──▶ ABORTED (final)
//!  ACTIVE with failures ≥ threshold ──▶ HALTED (derived: no offers until resumed with a
//!                                       higher threshold, or aborted)
//!  any update may set a new failure threshold, applied before its step
//! ```
//!
//! A device's cohort is a number in 0..100 from SHA-256("oxroot-rollout-cohort" ‖ rollout id ‖
//! DeviceId): stable for the device within a rollout, independent between rollouts, and
//! uniform, so a stage of p % reaches about p % of the devices and every device offered at one
//! stage stays offered at the next.

use aws_lc_rs::digest::{Context, SHA256};
use rot_core::keys::DeviceId;
use serde::{Deserialize, Serialize};

/// Domain label of the cohort hash.
const COHORT_LABEL: &[u8] = b"oxroot-rollout-cohort";

/// What an operator set a rollout to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolloutState {
    /// Offering to the current stage's cohort (unless halted by failures).
    Active,
    /// Offering to nobody until resumed.
    Paused,
    /// Stopped for good.
    Aborted,
}

/// What a rollout does now, with its failures counted in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutStanding {
    /// Offering to the current stage's cohort.
    Active,
    /// Paused by an operator.
    Paused,
    /// Failures reached the threshold: no offers.
    Halted,
    /// Aborted by an operator.
    Aborted,
}

/// An operator step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutStep {
    /// To the next stage.
    Advance,
    /// Stop offering for now.
    Pause,
    /// Offer again: a paused rollout, or one halted by failures whose threshold the same
    /// update raises above them.
    Resume,
    /// Stop for good.
    Abort,
}

/// Why a step is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StepRefused {
    /// The rollout is aborted.
    #[error("the rollout is aborted")]
    Aborted,
    /// Advance at the last stage.
    #[error("the rollout is at its last stage")]
    LastStage,
    /// Advance or resume while failures hold the rollout halted.
    #[error(
        "the rollout is halted: its failures reached the failure threshold; resume it with a \
         higher threshold"
    )]
    Halted,
    /// Pause of a paused rollout, resume of an active one.
    #[error("the rollout is already {0}")]
    Already(&'static str),
}

/// The parts of a rollout the rules read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stages {
    /// Percentages of the fleet per stage, strictly increasing, the last 100.
    pub percents: Vec<u8>,
    /// Index of the current stage.
    pub current: usize,
}

/// Why a stage list is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stages are 1 to 10 percentages, each 1..=100, strictly increasing, the last 100")]
pub struct BadStages;

impl Stages {
    /// Checks a stage list and starts at its first stage.
    ///
    /// # Errors
    /// [`BadStages`].
    pub fn new(percents: Vec<u8>) -> Result<Self, BadStages> {
        let increasing = percents.windows(2).all(|pair| pair.first() < pair.last());
        let ok = (1..=10).contains(&percents.len())
            && increasing
            && percents.first().is_some_and(|p| *p >= 1)
            && percents.last() == Some(&100);
        if ok {
            Ok(Self {
                percents,
                current: 0,
            })
        } else {
            Err(BadStages)
        }
    }

    /// The current stage's percentage.
    #[must_use]
    pub fn percent(&self) -> u8 {
        self.percents.get(self.current).copied().unwrap_or(100)
    }
}

/// The device's cohort in a rollout: 0..100.
#[must_use]
pub fn cohort(rollout_id: &str, device_id: &DeviceId) -> u8 {
    let mut hash = Context::new(&SHA256);
    hash.update(COHORT_LABEL);
    hash.update(&(rollout_id.len() as u16).to_be_bytes());
    hash.update(rollout_id.as_bytes());
    hash.update(device_id.as_bytes());
    let digest = hash.finish();
    // 2^64 mod 100 is 16: the bias is below 1e-18 per cohort.
    let value = digest
        .as_ref()
        .get(..8)
        .and_then(|first| first.try_into().ok())
        .map_or(0, u64::from_be_bytes);
    (value % 100) as u8
}

/// Whether `id` has a rollout id's shape: `ro-` and 16 lowercase hex digits.
#[must_use]
pub fn is_rollout_id(id: &str) -> bool {
    id.len() == 19
        && id.starts_with("ro-")
        && id
            .bytes()
            .skip(3)
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What a rollout does now.
#[must_use]
pub fn standing(state: RolloutState, failures: u64, threshold: u64) -> RolloutStanding {
    match state {
        RolloutState::Aborted => RolloutStanding::Aborted,
        RolloutState::Paused => RolloutStanding::Paused,
        RolloutState::Active if failures >= threshold => RolloutStanding::Halted,
        RolloutState::Active => RolloutStanding::Active,
    }
}

/// Whether a device is offered the rollout's firmware now.
#[must_use]
pub fn offers(
    standing: RolloutStanding,
    stages: &Stages,
    rollout_id: &str,
    device_id: &DeviceId,
) -> bool {
    standing == RolloutStanding::Active && cohort(rollout_id, device_id) < stages.percent()
}

/// What an operator's update acts on and yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Control {
    /// The operator's setting.
    pub state: RolloutState,
    /// The stages and the current one.
    pub stages: Stages,
    /// Failures at which the rollout halts.
    pub failure_threshold: u64,
}

/// Applies an operator's update: a new failure threshold (if given) first, then the step (if
/// given). `failures` is the count of failure reports so far.
///
/// # Errors
/// [`StepRefused`].
pub fn update(
    control: &Control,
    failures: u64,
    step: Option<RolloutStep>,
    failure_threshold: Option<u64>,
) -> Result<Control, StepRefused> {
    if control.state == RolloutState::Aborted {
        return Err(StepRefused::Aborted);
    }
    let threshold = failure_threshold.unwrap_or(control.failure_threshold);
    let was_halted =
        standing(control.state, failures, control.failure_threshold) == RolloutStanding::Halted;
    let halted = failures >= threshold;
    let mut next = Control {
        failure_threshold: threshold,
        ..control.clone()
    };
    match step {
        None => {}
        Some(RolloutStep::Abort) => next.state = RolloutState::Aborted,
        Some(RolloutStep::Pause) if control.state == RolloutState::Paused => {
            return Err(StepRefused::Already("paused"));
        }
        Some(RolloutStep::Pause) => next.state = RolloutState::Paused,
        Some(RolloutStep::Resume | RolloutStep::Advance) if halted => {
            return Err(StepRefused::Halted);
        }
        Some(RolloutStep::Resume) if control.state == RolloutState::Active && !was_halted => {
            return Err(StepRefused::Already("active"));
        }
        Some(RolloutStep::Resume) => next.state = RolloutState::Active,
        Some(RolloutStep::Advance)
            if control.stages.current + 1 >= control.stages.percents.len() =>
        {
            return Err(StepRefused::LastStage);
        }
        Some(RolloutStep::Advance) => next.stages.current += 1,
    }
    Ok(next)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn device(n: u32) -> DeviceId {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        DeviceId::from_bytes(bytes)
    }

    #[test]
    fn a_stage_reaches_about_its_share_and_keeps_it_at_the_next() {
        let mut stages = Stages::new(vec![10, 50, 100]).unwrap();
        let fleet: Vec<DeviceId> = (0..10_000).map(device).collect();
        let mut offered_before: Vec<bool> = vec![false; fleet.len()];
        for expected in [10.0, 50.0, 100.0] {
            let offered: Vec<bool> = fleet
                .iter()
                .map(|d| offers(RolloutStanding::Active, &stages, "r-1", d))
                .collect();
            let share = offered.iter().filter(|o| **o).count() as f64 / 100.0;
            assert!((share - expected).abs() < 2.0, "{share} % at {expected} %");
            // Nobody offered at one stage loses the offer at the next.
            assert!(offered_before.iter().zip(&offered).all(|(b, a)| !b || *a));
            offered_before = offered;
            if stages.current + 1 < stages.percents.len() {
                stages.current += 1;
            }
        }
        // Another rollout draws other cohorts.
        let same = fleet
            .iter()
            .filter(|d| cohort("r-1", d) == cohort("r-2", d))
            .count();
        assert!(
            same < 200,
            "{same} of 10,000 share a cohort across rollouts"
        );
    }

    #[test]
    fn nobody_is_offered_unless_active() {
        let stages = Stages::new(vec![100]).unwrap();
        for standing in [
            RolloutStanding::Paused,
            RolloutStanding::Halted,
            RolloutStanding::Aborted,
        ] {
            assert!(!offers(standing, &stages, "r", &device(1)));
        }
        assert!(offers(RolloutStanding::Active, &stages, "r", &device(1)));
        assert_eq!(
            standing(RolloutState::Active, 3, 3),
            RolloutStanding::Halted
        );
        assert_eq!(
            standing(RolloutState::Active, 2, 3),
            RolloutStanding::Active
        );
        assert_eq!(
            standing(RolloutState::Paused, 9, 3),
            RolloutStanding::Paused
        );
    }

    #[test]
    fn stage_lists_are_checked() {
        for bad in [
            vec![],
            vec![50],
            vec![0, 100],
            vec![50, 50, 100],
            vec![60, 40, 100],
        ] {
            assert_eq!(Stages::new(bad.clone()), Err(BadStages), "{bad:?}");
        }
        assert_eq!(Stages::new(vec![1, 100]).unwrap().percent(), 1);
    }

    #[test]
    #[allow(clippy::too_many_lines, reason = "one table of cases")]
    fn every_step_from_every_state() {
        use RolloutState as St;
        use RolloutStep as Step;
        let at = |state, current, threshold| Control {
            state,
            stages: Stages {
                percents: vec![10, 100],
                current,
            },
            failure_threshold: threshold,
        };
        // (step, new threshold, from, failures, expected (state, stage) or refusal)
        let table = [
            (
                Some(Step::Advance),
                None,
                at(St::Active, 0, 5),
                0,
                Ok((St::Active, 1)),
            ),
            (
                Some(Step::Advance),
                None,
                at(St::Paused, 0, 5),
                0,
                Ok((St::Paused, 1)),
            ),
            (
                Some(Step::Advance),
                None,
                at(St::Active, 1, 5),
                0,
                Err(StepRefused::LastStage),
            ),
            (
                Some(Step::Advance),
                None,
                at(St::Active, 0, 5),
                5,
                Err(StepRefused::Halted),
            ),
            (
                Some(Step::Advance),
                Some(9),
                at(St::Active, 0, 5),
                5,
                Ok((St::Active, 1)),
            ),
            (
                Some(Step::Pause),
                None,
                at(St::Active, 0, 5),
                0,
                Ok((St::Paused, 0)),
            ),
            (
                Some(Step::Pause),
                None,
                at(St::Active, 0, 5),
                7,
                Ok((St::Paused, 0)),
            ),
            (
                Some(Step::Pause),
                None,
                at(St::Paused, 0, 5),
                0,
                Err(StepRefused::Already("paused")),
            ),
            (
                Some(Step::Resume),
                None,
                at(St::Paused, 0, 5),
                0,
                Ok((St::Active, 0)),
            ),
            (
                Some(Step::Resume),
                None,
                at(St::Paused, 0, 5),
                5,
                Err(StepRefused::Halted),
            ),
            (
                Some(Step::Resume),
                None,
                at(St::Active, 0, 5),
                0,
                Err(StepRefused::Already("active")),
            ),
            (
                Some(Step::Resume),
                None,
                at(St::Active, 0, 5),
                5,
                Err(StepRefused::Halted),
            ),
            (
                Some(Step::Resume),
                Some(5),
                at(St::Active, 0, 5),
                5,
                Err(StepRefused::Halted),
            ),
            (
                Some(Step::Resume),
                Some(6),
                at(St::Active, 0, 5),
                5,
                Ok((St::Active, 0)),
            ),
            (
                Some(Step::Abort),
                None,
                at(St::Paused, 0, 5),
                0,
                Ok((St::Aborted, 0)),
            ),
            (
                Some(Step::Abort),
                None,
                at(St::Active, 0, 5),
                9,
                Ok((St::Aborted, 0)),
            ),
            (
                Some(Step::Abort),
                None,
                at(St::Aborted, 0, 5),
                0,
                Err(StepRefused::Aborted),
            ),
            (
                Some(Step::Resume),
                None,
                at(St::Aborted, 0, 5),
                0,
                Err(StepRefused::Aborted),
            ),
            (
                None,
                Some(2),
                at(St::Aborted, 0, 5),
                0,
                Err(StepRefused::Aborted),
            ),
            (None, Some(2), at(St::Active, 0, 5), 0, Ok((St::Active, 0))),
        ];
        for (action, threshold, from, failures, expected) in table {
            let outcome = update(&from, failures, action, threshold)
                .map(|next| (next.state, next.stages.current));
            assert_eq!(
                outcome, expected,
                "{action:?} (threshold {threshold:?}) from {from:?} with {failures} failures"
            );
        }
        let raised = update(&at(St::Active, 0, 5), 0, None, Some(2)).unwrap();
        assert_eq!(raised.failure_threshold, 2);
        assert_eq!(
            standing(raised.state, 2, raised.failure_threshold),
            RolloutStanding::Halted
        );
    }
}
