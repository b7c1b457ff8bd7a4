//! `enroll`, `id`, `unlock` and `make-chip`: the commands that touch only the silicon and the
//! state directory.

use std::path::Path;

use rot_core::extractor::{self, Construction, ENROLMENT_READS, EnrolError, EnrolMode};

use super::{now_rfc3339, open_chip, open_silicon};
use crate::cli::SiliconArgs;
use crate::error::AgentError;
use crate::lockout::Lockout;
use crate::report::{Console, Report};
use crate::silicon;
use crate::state::{self, Identity, StateDir};
use crate::tls_signer::spki_der;
use oxroot_client::device::Chip;

/// First power-up: majority of several readouts → helper data of `construction`, stored with
/// the identity.
pub(super) fn enroll(
    state: &StateDir,
    args: &SiliconArgs,
    force: bool,
    construction: Construction,
    console: &mut Console<'_>,
) -> Result<(), AgentError> {
    let existing = state.raw_helper_data()?;
    let helper_path = state.path(state::HELPER_DATA);
    if existing.is_some() && !force {
        return Err(AgentError::AlreadyEnrolled { path: helper_path });
    }
    let silicon = open_silicon(args)?;
    state.create()?;
    let mode = if force {
        EnrolMode::ForceReEnrolment
    } else {
        EnrolMode::FirstEnrolment
    };
    let enrolment = extractor::enrol_with(
        &mut silicon.power_up()?,
        existing.as_deref(),
        mode,
        construction,
    )
    .map_err(|e| match e {
        EnrolError::AlreadyEnrolled => AgentError::AlreadyEnrolled {
            path: helper_path.clone(),
        },
        other => AgentError::Silicon {
            source_name: silicon.name().to_owned(),
            problem: other.to_string(),
        },
    })?;
    let epk = enrolment.seeds.enrolment_key().public_key();
    let identity = Identity::new(&epk, enrolment.helper_data.version(), now_rfc3339());
    if existing.is_some() {
        console.warn(
            "re-enrolling: this device gets a new identity; its registration and credentials \
             belong to the old one and are removed from the state directory",
        );
        state.remove_credentials()?;
    }
    // Helper data first: an identity file without it would describe nothing.
    state.save_helper_data(&enrolment.helper_data)?;
    state.save_identity(&identity)?;
    Lockout::new(state).clear()?;
    Report::new("enrolled")
        .field("device_id", identity.device_id)
        .field("silicon", silicon.name())
        .field("readouts", ENROLMENT_READS.get())
        .field("helper_data", helper_path.display().to_string())
        .field("helper_data_version", enrolment.helper_data.version())
        .field("construction", construction.number())
        .print(console)
}

/// Reconstructs and prints the DeviceId (text) or the identity in full (`--json`).
pub(super) fn id(
    state: &StateDir,
    args: &SiliconArgs,
    console: &mut Console<'_>,
) -> Result<(), AgentError> {
    let chip = open_chip(state, args)?;
    let device_id = chip.device_id().to_string();
    if state.identity()?.is_none() {
        // The identity is public and derived from the silicon: restore a lost record.
        state.save_identity(&Identity::new(
            chip.epk(),
            chip.helper_data_version(),
            format!("unknown (record restored {})", now_rfc3339()),
        ))?;
    }
    if !console.json {
        return writeln!(console.out, "{device_id}").map_err(AgentError::io("<stdout>"));
    }
    let spki = spki_der(chip.epk());
    // LF line endings: the PEM ends up in JSON and shell pipelines, not in a Windows file.
    let epk_pem = pem::encode_config(
        &pem::Pem::new("PUBLIC KEY", spki.as_ref().to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    );
    let conditions = chip.silicon().conditions();
    Report::new("identity")
        .field("device_id", device_id)
        .field("epk_pem", epk_pem)
        .field("epk_sec1_hex", hex::encode(chip.epk().as_bytes()))
        .field("silicon", chip.silicon().name())
        .field(
            "conditions",
            serde_json::json!({
                "temperature_c": conditions.temperature_c(),
                "voltage": conditions.supply(),
                "age_years": conditions.age_years(),
            }),
        )
        .field("helper_data_version", chip.helper_data_version())
        .print(console)
}

/// Clears the lockout counter.
pub(super) fn unlock(state: &StateDir, console: &mut Console<'_>) -> Result<(), AgentError> {
    state.helper_data()?;
    let lockout = Lockout::new(state);
    let before = lockout.failures().ok();
    lockout.clear()?;
    Report::new("lockout cleared")
        .field("failures_before", before)
        .print(console)
}

/// Writes a silicon file for a new (or given) chip seed.
pub(super) fn make_chip(
    out: &Path,
    seed: Option<&str>,
    force: bool,
    console: &mut Console<'_>,
) -> Result<(), AgentError> {
    let chip = match seed {
        Some(hex) => silicon::parse_chip_seed(hex).map_err(|()| {
            AgentError::Usage("--seed: the chip seed must be exactly 64 hex characters".to_owned())
        })?,
        None => silicon::random_chip()?,
    };
    silicon::make_chip(out, &chip, force)?;
    Report::new("chip written")
        .field("silicon", format!("file:{}", out.display()))
        .field("bytes", rot_core::silicon_file::SILICON_FILE_BYTES)
        .print(console)
}
