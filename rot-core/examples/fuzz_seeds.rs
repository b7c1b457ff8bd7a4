//! Writes valid helper-data records (construction 2, and construction 1 beside it)
//! and one valid silicon file into a directory, as starting points for the fuzz
//! targets in `rot-core/fuzz`.
//!
//! `cargo run -p rot-core --example fuzz_seeds -- <dir>`
#![allow(clippy::expect_used, reason = "a report fails loudly")]

use rot_core::emulator::{ChipSeed, EmulatedChip, OperatingConditions};
use rot_core::extractor::{Construction, EnrolMode, enrol_with};
use rot_core::silicon_file;

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    let chip = ChipSeed::from_bytes(*b"oxroot fuzz seed corpus chip 001");
    for (construction, name) in [
        (Construction::V2, "helper_data"),
        (Construction::V1, "helper_data_v1"),
    ] {
        let mut source = EmulatedChip::new(&chip, OperatingConditions::NOMINAL, [3; 32]);
        let enrolment = enrol_with(&mut source, None, EnrolMode::FirstEnrolment, construction)
            .expect("the emulator always enrols");
        std::fs::write(format!("{dir}/{name}"), enrolment.helper_data.as_bytes())?;
        if construction == Construction::V2 {
            // The v2 target takes the body between the header and the integrity tag.
            let bytes = enrolment.helper_data.as_bytes();
            std::fs::write(format!("{dir}/helper_data_v2"), &bytes[4..bytes.len() - 8])?;
        }
    }
    std::fs::write(
        format!("{dir}/silicon_file"),
        silicon_file::encode(&chip).as_ref(),
    )?;
    Ok(())
}
