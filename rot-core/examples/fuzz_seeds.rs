//! Writes one valid helper-data record and one valid silicon file into a
//! directory, as starting points for the fuzz targets in `rot-core/fuzz`.
//!
//! `cargo run -p rot-core --example fuzz_seeds -- <dir>`

use rot_core::emulator::{ChipSeed, EmulatedChip, OperatingConditions};
use rot_core::extractor::{EnrolMode, enrol};
use rot_core::silicon_file;

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    let chip = ChipSeed::from_bytes(*b"oxroot fuzz seed corpus chip 001");
    let mut source = EmulatedChip::new(&chip, OperatingConditions::NOMINAL, [3; 32]);
    let enrolment =
        enrol(&mut source, None, EnrolMode::FirstEnrolment).expect("the emulator always enrols");
    std::fs::write(
        format!("{dir}/helper_data"),
        enrolment.helper_data.as_bytes(),
    )?;
    std::fs::write(
        format!("{dir}/silicon_file"),
        silicon_file::encode(&chip).as_ref(),
    )?;
    Ok(())
}
