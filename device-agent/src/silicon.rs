//! Where the agent reads its silicon, and at which operating conditions.
//!
//! ```text
//!  --silicon emulated:<chip seed, 64 hex>   the chip seed given directly (development)
//!  --silicon file:<path>                    a silicon file v1 (rot_core::silicon_file)
//!  --silicon fwcfg                          the silicon file QEMU hands the guest through fw_cfg
//!                                           (/sys/firmware/qemu_fw_cfg/by_name/opt/oxroot/silicon/raw)
//! ```
//!
//! All three are emulated oxide-tunnelling arrays: a chip seed *is* the silicon in emulation,
//! so it is handled like a secret. It is never printed, logged or written to the state
//! directory, and a malformed `--silicon` value is reported without echoing it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rot_core::emulator::{ChipSeed, EmulatedChip, OperatingConditions};
use rot_core::silicon_file::{self, SILICON_FILE_BYTES};
use zeroize::Zeroizing;

use crate::error::AgentError;
use crate::state;

/// Where QEMU's fw_cfg exposes the silicon file in the guest (module `qemu_fw_cfg`).
pub const FW_CFG_PATH: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/oxroot/silicon/raw";

/// A `--silicon` value, parsed.
#[derive(Clone)]
pub enum SiliconSpec {
    /// A chip seed given on the command line or in `OXROOT_SILICON`.
    Emulated(ChipSeed),
    /// A silicon file on disk.
    File(PathBuf),
    /// The silicon file QEMU passes through fw_cfg.
    FwCfg,
}

// The emulated variant carries the chip's secret.
impl fmt::Debug for SiliconSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl SiliconSpec {
    /// A name for reports and errors that never contains the chip seed.
    #[must_use]
    pub fn name(&self) -> String {
        match self {
            Self::Emulated(_) => "emulated".to_owned(),
            Self::File(path) => format!("file:{}", path.display()),
            Self::FwCfg => "fwcfg".to_owned(),
        }
    }
}

impl FromStr for SiliconSpec {
    type Err = AgentError;

    /// Parses `emulated:<64 hex>`, `file:<path>` or `fwcfg`.
    ///
    /// The error never repeats the value: it may hold a chip seed.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage = |problem: &str| {
            AgentError::Usage(format!(
                "--silicon: {problem} (expected emulated:<chip seed, 64 hex>, file:<path> or fwcfg)"
            ))
        };
        if text == "fwcfg" {
            return Ok(Self::FwCfg);
        }
        if let Some(path) = text.strip_prefix("file:") {
            if path.is_empty() {
                return Err(usage("file: needs a path"));
            }
            return Ok(Self::File(PathBuf::from(path)));
        }
        if let Some(seed) = text.strip_prefix("emulated:") {
            return parse_chip_seed(seed).map(Self::Emulated).map_err(|()| {
                usage("the chip seed after emulated: must be exactly 64 hex characters")
            });
        }
        Err(usage("unknown silicon source"))
    }
}

/// Parses a 32-byte chip seed from hex without keeping a stray copy of it.
pub(crate) fn parse_chip_seed(text: &str) -> Result<ChipSeed, ()> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), bytes.as_mut()).map_err(|_| ())?;
    Ok(ChipSeed::from_bytes(*bytes))
}

/// Operating conditions from `--temperature`, `--voltage` and `--age`.
///
/// # Errors
/// [`AgentError::Usage`] naming the value outside the emulated range.
pub fn conditions(
    temperature_c: f32,
    voltage: f32,
    age_years: f32,
) -> Result<OperatingConditions, AgentError> {
    OperatingConditions::new(temperature_c, voltage, age_years)
        .map_err(|e| AgentError::Usage(format!("operating conditions: {e}")))
}

/// Opened silicon: the chip and the conditions it is read at. Each [`Silicon::power_up`] is
/// one fresh power-up with its own thermal noise.
pub struct Silicon {
    chip: ChipSeed,
    conditions: OperatingConditions,
    name: String,
}

impl fmt::Debug for Silicon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Silicon")
            .field("source", &self.name)
            .field("conditions", &self.conditions)
            .finish_non_exhaustive()
    }
}

impl Silicon {
    /// Opens a silicon source (reads and checks a silicon file).
    ///
    /// # Errors
    /// [`AgentError::Silicon`] if the file cannot be read or is not a valid silicon file.
    pub fn open(spec: &SiliconSpec, conditions: OperatingConditions) -> Result<Self, AgentError> {
        let chip = match spec {
            SiliconSpec::Emulated(chip) => chip.clone(),
            SiliconSpec::File(path) => read_silicon_file(path, &spec.name())?,
            SiliconSpec::FwCfg => read_silicon_file(Path::new(FW_CFG_PATH), &spec.name())?,
        };
        Ok(Self {
            chip,
            conditions,
            name: spec.name(),
        })
    }

    /// The source's name, as `id --json` reports it (never the chip seed).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operating conditions the silicon is read at.
    #[must_use]
    pub fn conditions(&self) -> OperatingConditions {
        self.conditions
    }

    /// Powers the cell array up: the returned source yields fresh noisy readouts.
    ///
    /// # Errors
    /// [`AgentError::Silicon`] if the system's random generator fails (it seeds the noise).
    pub fn power_up(&self) -> Result<EmulatedChip, AgentError> {
        let mut noise = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(noise.as_mut()).map_err(|_| AgentError::Silicon {
            source_name: self.name.clone(),
            problem: "the system random generator failed".to_owned(),
        })?;
        Ok(EmulatedChip::new(&self.chip, self.conditions, *noise))
    }
}

/// Reads and decodes a silicon file. The file holds the chip seed: its bytes are zeroized.
fn read_silicon_file(path: &Path, name: &str) -> Result<ChipSeed, AgentError> {
    let problem = |problem: String| AgentError::Silicon {
        source_name: name.to_owned(),
        problem,
    };
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| {
        problem(if e.kind() == std::io::ErrorKind::NotFound && name == "fwcfg" {
            format!(
                "{FW_CFG_PATH} does not exist (is the qemu_fw_cfg module loaded and the VM started \
                 with -fw_cfg name=opt/oxroot/silicon,file=...?)"
            )
        } else {
            format!("{}: {e}", path.display())
        })
    })?);
    silicon_file::decode(&bytes).map_err(|e| problem(format!("{}: {e}", path.display())))
}

/// Writes a new silicon file for `chip` at `out`, readable by its owner only: in emulation
/// the file is the chip, and whoever reads it can compute every key the chip will derive.
///
/// # Errors
/// [`AgentError::File`] if `out` exists and `force` is false; [`AgentError::Io`] if writing fails.
pub fn make_chip(out: &Path, chip: &ChipSeed, force: bool) -> Result<(), AgentError> {
    if out.exists() && !force {
        return Err(AgentError::File {
            path: out.to_owned(),
            problem: "exists; pass --force to replace that chip with a new one".to_owned(),
        });
    }
    let file = silicon_file::encode(chip);
    debug_assert_eq!(file.len(), SILICON_FILE_BYTES);
    state::write_atomic(out, file.as_ref(), 0o600)
}

/// A fresh random chip seed (manufacturing a new emulated chip).
///
/// # Errors
/// [`AgentError::Silicon`] if the system random generator fails.
pub fn random_chip() -> Result<ChipSeed, AgentError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(seed.as_mut()).map_err(|_| AgentError::Silicon {
        source_name: "make-chip".to_owned(),
        problem: "the system random generator failed".to_owned(),
    })?;
    Ok(ChipSeed::from_bytes(*seed))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use rot_core::extractor::{EnrolMode, enrol, reconstruct};

    const SEED_HEX: &str = "0707070707070707070707070707070707070707070707070707070707070707";

    #[test]
    fn specs_parse_and_never_echo_the_seed() {
        let spec: SiliconSpec = format!("emulated:{SEED_HEX}").parse().unwrap();
        assert!(matches!(&spec, SiliconSpec::Emulated(seed) if seed.as_bytes() == &[7; 32]));
        assert_eq!(spec.name(), "emulated");
        assert_eq!(format!("{spec:?}"), "emulated");
        assert!(matches!(
            "file:/tmp/chip.bin".parse::<SiliconSpec>().unwrap(),
            SiliconSpec::File(path) if path == Path::new("/tmp/chip.bin")
        ));
        assert!(matches!(
            "fwcfg".parse::<SiliconSpec>().unwrap(),
            SiliconSpec::FwCfg
        ));

        let short = &SEED_HEX[..62];
        for bad in [
            format!("emulated:{short}"),
            format!("emulated:{SEED_HEX}zz"),
            format!("emulate:{SEED_HEX}"),
            "file:".to_owned(),
        ] {
            let message = bad.parse::<SiliconSpec>().unwrap_err().to_string();
            assert!(message.starts_with("--silicon:"), "{message}");
            assert!(!message.contains(short), "the seed leaked: {message}");
        }
    }

    #[test]
    fn a_silicon_file_round_trips_and_reconstructs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chip.bin");
        make_chip(&path, &ChipSeed::from_bytes([7; 32]), false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A second chip at the same path needs --force.
        assert!(matches!(
            make_chip(&path, &ChipSeed::from_bytes([8; 32]), false),
            Err(AgentError::File { .. })
        ));

        let from_file = Silicon::open(
            &SiliconSpec::File(path.clone()),
            OperatingConditions::NOMINAL,
        )
        .unwrap();
        let direct = Silicon::open(
            &format!("emulated:{SEED_HEX}").parse().unwrap(),
            OperatingConditions::NOMINAL,
        )
        .unwrap();
        let enrolment = enrol(
            &mut from_file.power_up().unwrap(),
            None,
            EnrolMode::FirstEnrolment,
        )
        .unwrap();
        // The same chip from either source, at a hot corner, reconstructs the same identity.
        let hot = Silicon::open(
            &SiliconSpec::File(path),
            conditions(85.0, 1.1, 5.0).unwrap(),
        )
        .unwrap();
        for silicon in [&direct, &hot] {
            let seeds =
                reconstruct(&mut silicon.power_up().unwrap(), &enrolment.helper_data).unwrap();
            assert_eq!(
                seeds.enrolment_key().device_id(),
                enrolment.seeds.enrolment_key().device_id()
            );
        }
    }

    #[test]
    fn broken_silicon_files_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.bin");
        let error =
            Silicon::open(&SiliconSpec::File(missing), OperatingConditions::NOMINAL).unwrap_err();
        assert!(error.to_string().contains("missing.bin"), "{error}");

        let path = dir.path().join("chip.bin");
        make_chip(&path, &ChipSeed::from_bytes([7; 32]), false).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let error =
            Silicon::open(&SiliconSpec::File(path), OperatingConditions::NOMINAL).unwrap_err();
        assert!(error.to_string().contains("checksum"), "{error}");
        assert_eq!(error.exit_code(), crate::error::EXIT_SILICON);
    }

    #[test]
    fn fw_cfg_is_read_from_the_qemu_path() {
        let opened = Silicon::open(&SiliconSpec::FwCfg, OperatingConditions::NOMINAL);
        if Path::new(FW_CFG_PATH).exists() {
            // Inside a QEMU guest started with the chip's fw_cfg blob.
            assert_eq!(opened.unwrap().name(), "fwcfg");
        } else {
            let message = opened.unwrap_err().to_string();
            assert!(message.contains(FW_CFG_PATH), "{message}");
            assert!(message.contains("qemu_fw_cfg"), "{message}");
        }
    }

    #[test]
    fn conditions_outside_the_emulated_range_are_usage_errors() {
        assert!(conditions(25.0, 1.0, 0.0).is_ok());
        let error = conditions(200.0, 1.0, 0.0).unwrap_err();
        assert!(error.to_string().contains("temperature"), "{error}");
        assert!(conditions(25.0, 2.0, 0.0).is_err());
        assert!(conditions(25.0, 1.0, -1.0).is_err());
    }
}
