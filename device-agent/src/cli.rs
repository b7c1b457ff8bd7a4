//! Command-line arguments (clap). Parsing only: the commands live in [`crate::commands`].

use std::fmt;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// oxroot device agent: enrol the PUF, register, onboard, renew, and use the credential with
/// keys derived from the silicon on demand.
///
/// Exit codes: 0 ok, 1 internal error, 2 usage, input or state problem, 3 refused (service,
/// broker or a safety check), 4 service or broker unreachable or not trusted, 5 silicon
/// (unreadable, reconstruction failed, locked out).
#[derive(Debug, Parser)]
#[command(name = "device-agent", version)]
pub struct Cli {
    /// State directory: helper data, identity, credentials (public data only).
    #[arg(
        long,
        env = "OXROOT_AGENT_STATE",
        global = true,
        default_value = "/var/lib/oxroot-agent"
    )]
    pub state: PathBuf,
    /// Print results as one JSON object instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// First power-up: read the silicon several times and store helper data.
    Enroll {
        /// The silicon.
        #[command(flatten)]
        silicon: SiliconArgs,
        /// Re-enrol even though helper data exists (the device gets a new identity).
        #[arg(long)]
        force: bool,
        /// Fuzzy-extractor construction: 2 (debiased, soft-decision; the default) or 1 (the
        /// original repetition code, full strength only on unbiased cells). The helper data
        /// records it, so later commands need no option.
        #[arg(long, default_value = "2", value_name = "1|2")]
        construction: rot_core::extractor::Construction,
    },
    /// Reconstruct the seeds and print the DeviceId (--json: EPK, silicon, helper data).
    Id {
        /// The silicon.
        #[command(flatten)]
        silicon: SiliconArgs,
    },
    /// Register the EPK with its proof, online or as a JSON line for an offline import.
    Register {
        /// The silicon.
        #[command(flatten)]
        silicon: SiliconArgs,
        /// The service (unless --export).
        #[command(flatten)]
        service: ServiceArgs,
        /// Write the registration record as one JSON line (enrollctl's offline import format)
        /// to FILE ('-' for stdout) instead of sending it.
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
        /// Where and how the chip is registered.
        #[command(flatten)]
        context: ContextArgs,
    },
    /// Answer the service's challenge and store the credential it issues.
    Onboard {
        /// The silicon.
        #[command(flatten)]
        silicon: SiliconArgs,
        /// The service.
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// Show the local state and, with --service, what the service says (asked with a request
    /// signed by the current credential's device key, or the enrolment key before onboarding:
    /// needs the silicon).
    Status {
        /// The silicon (with --service only).
        #[command(flatten)]
        silicon: SiliconArgs,
        /// The service (optional).
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// Install a signed firmware release into the inactive slot and make it the one that runs
    /// (checked first against the owner root pinned at onboarding; never below the security
    /// counter installed before). Then reboot and renew, for a certificate naming the new
    /// firmware. With --release, from a release directory; otherwise from the service: report
    /// an update installed before (now that it runs), ask which release a rollout offers
    /// (signed by the credential's device key), install it, and report the outcome.
    Update {
        /// The release directory (enrollctl firmware get NAME VERSION --release DIR); no
        /// silicon or service needed.
        #[arg(long, value_name = "DIR")]
        release: Option<PathBuf>,
        /// The silicon (with the service).
        #[command(flatten)]
        silicon: SiliconArgs,
        /// The service (without --release).
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// Renew the credential; the old one stays usable until the new one is stored.
    Renew {
        /// The silicon.
        #[command(flatten)]
        silicon: SiliconArgs,
        /// The service.
        #[command(flatten)]
        service: ServiceArgs,
        /// Move to the next key slot (7 wraps to 1).
        #[arg(long)]
        rotate: bool,
    },
    /// Use the stored credential: MQTT over mutual TLS for Mosquitto; a local consistency
    /// check and the connection parameters for AWS IoT and Azure DPS.
    Connect {
        /// The silicon.
        #[command(flatten)]
        silicon: SiliconArgs,
        /// Topic to publish to and read back: relative to the device's prefix, or absolute
        /// when it starts with '/' (the leading '/' is dropped).
        #[arg(long, default_value = "agent/hello")]
        topic: String,
        /// Message to publish (default: a fresh random one).
        #[arg(long)]
        message: Option<String>,
        /// Seconds allowed for connecting, subscribing, publishing and reading back.
        #[arg(long, default_value_t = 15)]
        timeout: u64,
        /// Use the previous credential (kept after a renewal) instead of the current one.
        #[arg(long)]
        previous: bool,
    },
    /// Clear the key-reconstruction lockout after checking the device.
    Unlock,
    /// Manufacture an emulated chip: write a silicon file (it is the chip's secret).
    MakeChip {
        /// The silicon file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Chip seed, 64 hex characters (default: random).
        #[arg(long, value_name = "HEX", hide_env_values = true)]
        seed: Option<Secret>,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
}

/// Where the silicon is read.
#[derive(Debug, Args)]
pub struct SiliconArgs {
    /// emulated:<chip seed hex>, file:<path> or fwcfg.
    #[arg(long, env = "OXROOT_SILICON", hide_env_values = true)]
    pub silicon: Option<Secret>,
    /// Emulated die temperature, °C (-40..125).
    #[arg(long, default_value_t = 25.0, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Emulated supply, relative to nominal (0.8..1.2).
    #[arg(long, default_value_t = 1.0)]
    pub voltage: f32,
    /// Emulated age, years (0..20).
    #[arg(long, default_value_t = 0.0)]
    pub age: f32,
    /// The firmware image this device runs until `update` installs one (its factory image).
    /// What runs is measured (SHA-256) at every onboarding, renewal and handshake: the
    /// certificate then certifies an alias key bound to it (TCG DICE layering) and names it;
    /// after an update, renew. Once `update` has installed a slot, the active slot runs.
    /// Neither: no firmware is proved.
    #[arg(long, env = "OXROOT_FIRMWARE", value_name = "IMAGE")]
    pub firmware: Option<PathBuf>,
}

/// How to reach the enrolment service.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// The service, https://HOST:PORT.
    #[arg(long, env = "OXROOT_SERVICE")]
    pub service: Option<String>,
    /// The oxroot root certificate (PEM) to pin.
    #[arg(long, env = "OXROOT_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Retries after a dropped or refused connection.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// Pause before the first retry, doubled each time (at most 30 s).
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub backoff_ms: u64,
}

/// Registration metadata.
#[derive(Debug, Args)]
pub struct ContextArgs {
    /// Bytes signed into the proof (e.g. the station's ID), at most 128.
    #[arg(long, default_value = "")]
    pub proof_context: String,
    /// Factory or programming-house site.
    #[arg(long, default_value = "")]
    pub site: String,
    /// Production line or programming station.
    #[arg(long, default_value = "")]
    pub station: String,
    /// Firmware version at registration.
    #[arg(long, default_value = "")]
    pub firmware_version: String,
    /// A label KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
}

/// An argument that may hold a chip seed: never shown by `Debug`, and parsed by the agent,
/// not clap, so a malformed value is never echoed in an error message.
#[derive(Clone)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let cli = Cli::try_parse_from([
            "device-agent",
            "id",
            "--silicon",
            "emulated:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        ])
        .unwrap();
        let debug = format!("{cli:?}");
        assert!(!debug.contains("00112233"), "{debug}");
    }

    #[test]
    fn negative_temperatures_parse() {
        let cli = Cli::try_parse_from(["device-agent", "id", "--temperature", "-40"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Id { silicon } if (silicon.temperature + 40.0).abs() < f32::EPSILON
        ));
    }
}
