//! An attacker who can rewrite the agent's helper data (but not run commands on the device)
//! gets one answer per reconstruction: success or failure. With the key check binding every
//! helper-data field, any edit fails whatever the cells are, so each answer is the same
//! "failed" and carries no information; and the agent's lockout ends the queries after
//! `MAX_CONSECUTIVE_FAILURES` of them. Both constructions.
#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    reason = "scenario tests read top to bottom; a failed unwrap is a failed test"
)]

use aws_lc_rs::digest::{SHA256, digest};
use device_agent::AgentError;
use device_agent::chip::SiliconChip;
use device_agent::lockout::{Lockout, MAX_CONSECUTIVE_FAILURES};
use device_agent::silicon::{Silicon, SiliconSpec};
use device_agent::state::{self, StateDir};
use rot_core::emulator::OperatingConditions;
use rot_core::extractor::{Construction, EnrolMode, enrol_with};

const CHIP: &str = "emulated:5c0a5c0a5c0a5c0a5c0a5c0a5c0a5c0a5c0a5c0a5c0a5c0a5c0a5c0a5c0a5c0a";

fn silicon() -> Silicon {
    Silicon::open(
        &CHIP.parse::<SiliconSpec>().unwrap(),
        OperatingConditions::NOMINAL,
    )
    .unwrap()
}

/// What the attacker observes for one query.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Reconstructed,
    Failed,
    LockedOut,
}

fn query(state: &StateDir) -> Answer {
    match SiliconChip::open(state, silicon()) {
        Ok(_) => Answer::Reconstructed,
        Err(AgentError::ReconstructionFailed { .. }) => Answer::Failed,
        Err(AgentError::LockedOut { .. }) => Answer::LockedOut,
        Err(other) => panic!("unexpected {other:?}"),
    }
}

/// The genuine helper data with one bit flipped and the (unkeyed) integrity tag recomputed,
/// as an attacker with write access would do.
fn forged(genuine: &[u8], byte: usize, bit: u8) -> Vec<u8> {
    let mut bytes = genuine.to_vec();
    bytes[byte] ^= 1 << bit;
    let len = bytes.len();
    let tag = digest(&SHA256, &bytes[..len - 8]);
    bytes[len - 8..].copy_from_slice(&tag.as_ref()[..8]);
    bytes
}

#[test]
fn editing_helper_data_teaches_nothing_and_is_locked_out() {
    for construction in [Construction::V1, Construction::V2] {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        state.create().unwrap();
        let enrolment = enrol_with(
            &mut silicon().power_up().unwrap(),
            None,
            EnrolMode::FirstEnrolment,
            construction,
        )
        .unwrap();
        state.save_helper_data(&enrolment.helper_data).unwrap();
        let genuine = enrolment.helper_data.as_bytes().to_vec();
        assert_eq!(query(&state), Answer::Reconstructed);

        // Targets across every field the decoder reads: repetition offsets or von Neumann
        // flags and tuple offsets, the BCH syndrome, and the key check itself.
        let targets: &[(usize, u8)] = match construction {
            Construction::V1 => &[(4, 0), (100, 3), (300, 7), (460, 1), (483, 2), (490, 5)],
            Construction::V2 => &[(5, 0), (20, 4), (30, 1), (300, 6), (450, 2), (495, 3)],
        };
        let helper_path = state.path(state::HELPER_DATA);
        let lockout = Lockout::new(&state);
        for &(byte, bit) in targets {
            let forgery = forged(&genuine, byte, bit);
            if rot_core::helper_data::HelperData::from_bytes(&forgery).is_err() {
                // A version-2 flag edit can make the stream unparsable: refused before any
                // reconstruction, so not even a query.
                assert_eq!(construction, Construction::V2);
                continue;
            }
            std::fs::write(&helper_path, &forgery).unwrap();
            // Each edit: the same answer on every query, then the lockout.
            let answers: Vec<Answer> = (0..MAX_CONSECUTIVE_FAILURES + 2)
                .map(|_| query(&state))
                .collect();
            let limit = MAX_CONSECUTIVE_FAILURES as usize;
            assert!(
                answers[..limit].iter().all(|a| *a == Answer::Failed),
                "construction {construction}, byte {byte}: {answers:?}"
            );
            assert!(answers[limit..].iter().all(|a| *a == Answer::LockedOut));
            // Locked queries never ran the extractor: the count stopped at the limit.
            assert_eq!(lockout.failures().unwrap(), MAX_CONSECUTIVE_FAILURES);
            // The operator unlocks; the device works again with its genuine helper data.
            lockout.clear().unwrap();
        }
        std::fs::write(&helper_path, &genuine).unwrap();
        assert_eq!(query(&state), Answer::Reconstructed);
        assert_eq!(lockout.failures().unwrap(), 0);
    }
}
