//! Staged rollouts, as pure rules: who is offered a rollout's firmware now, and which operator
//! steps a rollout admits. The registry keeps the records; the service applies these rules.
//!
//! ```text
//!  ACTIVE ──pause──▶ PAUSED ──resume──▶ ACTIVE ──advance──▶ next stage (10 → 50 → 100 %)
//!  ACTIVE / PAUSED ──abort──▶ ABORTED (final)
//!  ACTIVE with failures ≥ threshold ──▶ HALTED (derived: no offers until resumed with a
//!                                       higher threshold, or aborted)
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
    /// Offer again (a halted rollout needs a higher threshold first).
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
    #[error("the rollout is halted by failures; raise its failure threshold first")]
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

/// Applies an operator step: the new state and stages, or why not.
///
/// # Errors
/// [`StepRefused`].
pub fn step(
    step: RolloutStep,
    state: RolloutState,
    stages: &Stages,
    standing: RolloutStanding,
) -> Result<(RolloutState, Stages), StepRefused> {
    if state == RolloutState::Aborted {
        return Err(StepRefused::Aborted);
    }
    match step {
        RolloutStep::Abort => Ok((RolloutState::Aborted, stages.clone())),
        RolloutStep::Pause if state == RolloutState::Paused => Err(StepRefused::Already("paused")),
        RolloutStep::Pause => Ok((RolloutState::Paused, stages.clone())),
        RolloutStep::Resume if state == RolloutState::Active => Err(StepRefused::Already("active")),
        RolloutStep::Resume | RolloutStep::Advance if standing == RolloutStanding::Halted => {
            Err(StepRefused::Halted)
        }
        RolloutStep::Resume => Ok((RolloutState::Active, stages.clone())),
        RolloutStep::Advance if stages.current + 1 >= stages.percents.len() => {
            Err(StepRefused::LastStage)
        }
        RolloutStep::Advance => Ok((
            state,
            Stages {
                percents: stages.percents.clone(),
                current: stages.current + 1,
            },
        )),
    }
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
    fn every_step_from_every_state() {
        use RolloutStanding as S;
        use RolloutState as St;
        use RolloutStep as Step;
        let first = Stages::new(vec![10, 100]).unwrap();
        let last = Stages {
            current: 1,
            ..first.clone()
        };
        let table = [
            (Step::Advance, St::Active, &first, S::Active, Ok(1)),
            (
                Step::Advance,
                St::Active,
                &last,
                S::Active,
                Err(StepRefused::LastStage),
            ),
            (
                Step::Advance,
                St::Active,
                &first,
                S::Halted,
                Err(StepRefused::Halted),
            ),
            (Step::Pause, St::Active, &first, S::Active, Ok(0)),
            (
                Step::Pause,
                St::Paused,
                &first,
                S::Paused,
                Err(StepRefused::Already("paused")),
            ),
            (Step::Resume, St::Paused, &first, S::Paused, Ok(0)),
            (
                Step::Resume,
                St::Active,
                &first,
                S::Active,
                Err(StepRefused::Already("active")),
            ),
            (
                Step::Resume,
                St::Active,
                &first,
                S::Halted,
                Err(StepRefused::Already("active")),
            ),
            (Step::Abort, St::Paused, &first, S::Paused, Ok(0)),
            (
                Step::Abort,
                St::Aborted,
                &first,
                S::Aborted,
                Err(StepRefused::Aborted),
            ),
            (
                Step::Resume,
                St::Aborted,
                &first,
                S::Aborted,
                Err(StepRefused::Aborted),
            ),
        ];
        for (action, state, stages, standing, expected) in table {
            let outcome = step(action, state, stages, standing).map(|(_, s)| s.current);
            assert_eq!(
                outcome, expected,
                "{action:?} from {state:?} ({standing:?})"
            );
        }
        let (state, _) = step(Step::Abort, St::Active, &first, S::Active).unwrap();
        assert_eq!(state, St::Aborted);
    }
}
