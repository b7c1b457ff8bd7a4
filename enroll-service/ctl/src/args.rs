//! The command line, as clap derive types. Parsing only: nothing here touches the network or
//! the file system.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use oxroot_proto::v1::{DeviceState, PolicyKind, RevocationReason, Role};

use super::duration::parse_duration;
use super::import::ImportFormat;

/// Operator and factory-MES command line for the oxroot enrolment service.
///
/// Connects over mutual TLS with an operator certificate issued by the service; the service's
/// root CA is the only trust anchor.
#[derive(Debug, Parser)]
#[command(name = "enrollctl", version, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 success, 1 other failure, 2 usage or invalid \
    argument, 3 refused (permission, not found, already exists, failed precondition, broken \
    audit chain), 4 service unavailable or unreachable (retry later)."
)]
pub struct Cli {
    /// How to reach and authenticate to the service.
    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// Print one JSON document on stdout (JSON lines for streams) and nothing else; errors go
    /// to stderr as one JSON object.
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Service address and operator credentials. An explicit `--ca`, `--cert` or `--key` (or its
/// environment variable) wins over the file of the same role in `--profile`.
#[derive(Debug, Default, Args)]
pub struct ConnectionArgs {
    /// Service URL, e.g. https://127.0.0.1:50051.
    #[arg(long, env = "OXROOT_SERVICE", global = true, value_name = "URL")]
    pub service: Option<String>,
    /// The service's root CA certificate (PEM): the only trust anchor.
    #[arg(long, env = "OXROOT_CA", global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Operator certificate chain (PEM, leaf first).
    #[arg(long, env = "OXROOT_CERT", global = true, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Operator private key (PKCS#8 PEM).
    #[arg(long, env = "OXROOT_KEY", global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Directory holding root.pem, operator.pem and operator.key (as written by
    /// `operator issue`).
    #[arg(long, env = "OXROOT_PROFILE", global = true, value_name = "DIR")]
    pub profile: Option<PathBuf>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the caller's identity as the service sees it.
    Whoami,
    /// Security policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Batches of devices.
    #[command(subcommand)]
    Batch(BatchCommand),
    /// Single devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Write the cloud-side configuration of a policy into a directory.
    Export(ExportArgs),
    /// Fetch the current certificate revocation list.
    Crl(CrlArgs),
    /// The hash-chained audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Operator certificates.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Owners (tenants) and their certificate authorities.
    #[command(subcommand)]
    Owner(OwnerCommand),
    /// Firmware images signed by the owner's firmware-signing key.
    #[command(subcommand)]
    Firmware(FirmwareCommand),
    /// Staged rollouts of signed firmware to a policy's devices.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Serve the web console on loopback, acting as this profile's operator.
    Console(ConsoleArgs),
}

/// `console`
#[derive(Debug, Args)]
#[command(
    after_help = "The console prints a login link with a one-time token. Open it in a browser \
    on this machine: the token is exchanged once for a session cookie. Everything the console \
    does is an Operator call with this profile's certificate, so it can do nothing the \
    operator's role cannot."
)]
pub struct ConsoleArgs {
    /// Loopback address to serve on (127.0.0.0/8 or [::1]); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// How old the fleet overview and device search may get before the console re-reads the
    /// device list (in the background; pages show the time of the data).
    #[arg(long, default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    pub fleet_refresh: Duration,
}

/// `firmware …`
#[derive(Debug, Subcommand)]
pub enum FirmwareCommand {
    /// Sign an image for a policy's devices (admins): an MCUboot image, and a manifest.
    Sign(FirmwareSignArgs),
    /// Show one signed image; with --out, write the signed file.
    Get {
        /// Image name.
        name: String,
        /// Version, major.minor.revision[+build].
        #[arg(value_name = "VERSION")]
        image_version: String,
        /// Write the signed image file here.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Write the whole release here, for `device-agent update --release DIR`: image.bin,
        /// manifest.bin, manifest.sig and signer.pem (the directory is made if missing).
        #[arg(long, value_name = "DIR")]
        release: Option<PathBuf>,
        /// Replace --out or the release's files if they exist.
        #[arg(long)]
        force: bool,
        /// Owner (platform operators must name one).
        #[arg(long)]
        owner: Option<String>,
    },
    /// List signed images (all pages).
    List {
        /// Owner filter.
        #[arg(long)]
        owner: Option<String>,
        /// Only images of this name.
        #[arg(long)]
        name: Option<String>,
    },
}

/// `rollout …`
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Start offering a signed image to its policy's devices in stages (admins). A device is
    /// in a stage when its cohort (from SHA-256 of the rollout id and its DeviceId, 0..100) is
    /// below the stage's percentage.
    Create {
        /// Image name.
        name: String,
        /// Version, major.minor.revision[+build].
        #[arg(value_name = "VERSION")]
        image_version: String,
        /// Only this batch's devices (a batch of the image's policy).
        #[arg(long, value_name = "BATCH_ID")]
        batch: Option<String>,
        /// Stage percentages, comma-separated, increasing, the last 100.
        #[arg(long, value_delimiter = ',', default_values_t = [10u32, 50, 100])]
        stages: Vec<u32>,
        /// Failure reports at which the rollout halts by itself.
        #[arg(long, default_value_t = 5)]
        failure_threshold: u64,
        /// Owner (platform admins must name one).
        #[arg(long)]
        owner: Option<String>,
    },
    /// Show one rollout and its devices' outcomes.
    Get {
        /// The rollout (ro-…).
        rollout_id: String,
        /// Owner (platform operators must name one).
        #[arg(long)]
        owner: Option<String>,
    },
    /// List rollouts (all pages).
    List {
        /// Owner filter.
        #[arg(long)]
        owner: Option<String>,
        /// Only rollouts of this policy.
        #[arg(long = "policy", value_name = "POLICY")]
        policy_name: Option<String>,
    },
    /// Go to the next stage (admins).
    Advance(RolloutStepArgs),
    /// Stop offering the image for now (admins).
    Pause(RolloutStepArgs),
    /// Offer it again: a paused rollout, or one halted by failures (with a
    /// --failure-threshold above its failures) (admins).
    Resume(RolloutStepArgs),
    /// Stop the rollout for good (admins).
    Abort(RolloutStepArgs),
}

/// A rollout step's arguments.
#[derive(Debug, Args)]
pub struct RolloutStepArgs {
    /// The rollout (ro-…).
    pub rollout_id: String,
    /// A new failure threshold, applied before the step.
    #[arg(long)]
    pub failure_threshold: Option<u64>,
    /// Owner (platform admins must name one).
    #[arg(long)]
    pub owner: Option<String>,
}

/// `firmware sign`
#[derive(Debug, Args)]
#[command(disable_version_flag = true)]
pub struct FirmwareSignArgs {
    /// The firmware as the build produced it (no MCUboot header), at most 3 MiB.
    #[arg(long, value_name = "FILE")]
    pub payload: PathBuf,
    /// Image name: one product's firmware line, [a-z0-9-_.].
    #[arg(long)]
    pub name: String,
    /// Version, major.minor.revision[+build] (as imgtool writes it).
    #[arg(long = "version", value_name = "VERSION")]
    pub image_version: String,
    /// Security counter: devices refuse an image whose counter is below the one they run.
    #[arg(long, default_value_t = 0)]
    pub security_counter: u32,
    /// The policy whose devices may install it.
    #[arg(long = "policy", value_name = "POLICY")]
    pub policy_name: String,
    /// Write the signed image file here.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
    /// Owner (platform admins must name one).
    #[arg(long)]
    pub owner: Option<String>,
}

/// `policy …`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Create a policy (policies are immutable).
    Create(Box<PolicyCreateArgs>),
    /// Show one policy.
    Get {
        /// Policy name.
        name: String,
        /// Owner of the policy (platform operators must name one).
        #[arg(long)]
        owner: Option<String>,
    },
    /// List policies (all pages).
    List {
        /// Owner filter.
        #[arg(long)]
        owner: Option<String>,
        /// Only policies of this kind.
        #[arg(long)]
        kind: Option<KindArg>,
    },
}

/// `policy create`: exactly one of `--mosquitto-host`, `--aws-endpoint`, `--azure-id-scope`
/// chooses the kind; the other options of that kind refine it.
///
/// Each kind's options are one flattened struct and one clap group, and the rules are stated
/// once per group: a group needs its kind's choosing option, and conflicts with the other
/// kinds' groups. The conflict matters: clap waives a `requires` whose target conflicts with a
/// present argument, so `requires` alone would let `--azure-id-scope S --mosquitto-port 1`
/// through.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("kind")
        .required(true)
        .args(["mosquitto_host", "aws_endpoint", "azure_id_scope"])
))]
pub struct PolicyCreateArgs {
    /// Policy name: [a-z0-9-_.], starting with a letter or digit.
    #[arg(long)]
    pub name: String,
    /// Owner of the policy (platform operators must name one).
    #[arg(long)]
    pub owner: Option<String>,
    /// Free text.
    #[arg(long)]
    pub description: Option<String>,
    /// Device certificate validity, e.g. 365d (service default 365d).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub lifetime: Option<Duration>,
    /// Auto-renew window before expiry, e.g. 30d; 0s disables (service default 30d).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub renew_window: Option<Duration>,
    /// How long a certificate a renewal replaced stays valid if the device does not prove its
    /// successor sooner, e.g. 3d (service default 7d, at most 30d).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub superseded_grace: Option<Duration>,
    /// Subject CN template; must contain {device_id} (default "{device_id}").
    #[arg(long, value_name = "TEMPLATE")]
    pub cn_template: Option<String>,
    /// Base URL of the service's CRL endpoint as relying parties reach it, e.g.
    /// http://pki.example.com/crl: device certificates then name their CA's CRL there.
    #[arg(long, value_name = "URL")]
    pub crl_base_url: Option<String>,
    /// Firmware the policy accepts: the SHA-256 of an image, 64 hex characters as sha256sum
    /// prints it; repeat for each image. Devices that prove other firmware, or none, are
    /// refused. Unset: no requirement.
    #[arg(long = "firmware-measurement", value_name = "SHA256")]
    pub firmware_measurements: Vec<String>,
    /// First topic level of device topics (Mosquitto and AWS; default "devices").
    #[arg(long, conflicts_with = AzureDpsArgs::GROUP)]
    pub topic_root: Option<String>,

    /// Mosquitto options.
    #[command(flatten)]
    pub mosquitto: MosquittoArgs,
    /// AWS IoT options.
    #[command(flatten)]
    pub aws: AwsIotArgs,
    /// Azure DPS options.
    #[command(flatten)]
    pub azure: AzureDpsArgs,
}

/// `policy create` for a Mosquitto broker.
#[derive(Debug, Args)]
#[group(
    id = MosquittoArgs::GROUP,
    multiple = true,
    requires = "mosquitto_host",
    conflicts_with_all = [AwsIotArgs::GROUP, AzureDpsArgs::GROUP],
)]
#[command(next_help_heading = "Mosquitto")]
pub struct MosquittoArgs {
    /// Mosquitto: broker host devices connect to.
    #[arg(long, value_name = "HOST")]
    pub mosquitto_host: Option<String>,
    /// Mosquitto: broker port (default 8883).
    #[arg(long, value_name = "PORT")]
    pub mosquitto_port: Option<u16>,
    /// Mosquitto: PEM CA of the broker's server certificate (default: the oxroot root).
    #[arg(long, value_name = "FILE")]
    pub broker_ca: Option<PathBuf>,
    /// Mosquitto: a TLS version the broker accepts and devices offer (repeatable; default
    /// both).
    #[arg(long, value_name = "VERSION", value_parser = ["1.2", "1.3"])]
    pub mosquitto_tls: Vec<String>,
}

impl MosquittoArgs {
    /// The clap group of these options.
    pub const GROUP: &str = "mosquitto";
}

/// `policy create` for AWS IoT Core.
#[derive(Debug, Args)]
#[group(
    id = AwsIotArgs::GROUP,
    multiple = true,
    requires = "aws_endpoint",
    conflicts_with_all = [MosquittoArgs::GROUP, AzureDpsArgs::GROUP],
)]
#[command(next_help_heading = "AWS IoT")]
pub struct AwsIotArgs {
    /// AWS IoT: device data endpoint, PREFIX-ats.iot.REGION.amazonaws.com.
    #[arg(long, requires = "aws_root_ca", value_name = "HOST")]
    pub aws_endpoint: Option<String>,
    /// AWS IoT: port (default 8883; 443 needs --alpn x-amzn-mqtt-ca).
    #[arg(long, value_name = "PORT")]
    pub aws_port: Option<u16>,
    /// AWS IoT: PEM trust anchor for AWS's server certificate (normally Amazon Root CA 1).
    #[arg(long, value_name = "FILE")]
    pub aws_root_ca: Option<PathBuf>,
    /// AWS IoT: thing name template (default "{device_id}").
    #[arg(long, value_name = "TEMPLATE")]
    pub thing_name_template: Option<String>,
    /// AWS IoT: region for the exported policy's ARNs (default "*").
    #[arg(long, value_name = "REGION")]
    pub aws_region: Option<String>,
    /// AWS IoT: 12-digit account ID for the exported policy's ARNs (default "*").
    #[arg(long, value_name = "ACCOUNT")]
    pub aws_account: Option<String>,
    /// AWS IoT: ALPN protocol handed to devices (repeatable).
    #[arg(long, value_name = "PROTOCOL")]
    pub alpn: Vec<String>,
}

impl AwsIotArgs {
    /// The clap group of these options.
    pub const GROUP: &str = "aws_iot";
}

/// `policy create` for Azure IoT Hub through DPS.
#[derive(Debug, Args)]
#[group(
    id = AzureDpsArgs::GROUP,
    multiple = true,
    requires = "azure_id_scope",
    conflicts_with_all = [MosquittoArgs::GROUP, AwsIotArgs::GROUP],
)]
#[command(next_help_heading = "Azure DPS")]
pub struct AzureDpsArgs {
    /// Azure DPS: the instance's ID scope.
    #[arg(long, value_name = "SCOPE")]
    pub azure_id_scope: Option<String>,
    /// Azure DPS: global endpoint (default global.azure-devices-provisioning.net).
    #[arg(long, value_name = "HOST")]
    pub azure_endpoint: Option<String>,
    /// Azure DPS: port (default 8883).
    #[arg(long, value_name = "PORT")]
    pub azure_port: Option<u16>,
    /// Azure DPS: PEM trust anchor(s) for the DPS and IoT Hub servers.
    #[arg(long, value_name = "FILE")]
    pub azure_root_ca: Option<PathBuf>,
    /// Azure DPS: enrollment group ID (default: the policy name).
    #[arg(long, value_name = "ID")]
    pub enrollment_group_id: Option<String>,
    /// Azure DPS: IoT hub host the enrollment group may allocate to (repeatable).
    #[arg(long, value_name = "HOST")]
    pub iot_hub: Vec<String>,
}

impl AzureDpsArgs {
    /// The clap group of these options.
    pub const GROUP: &str = "azure_dps";
}

/// `batch …`
#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Create a batch, optionally with its first devices.
    Create {
        /// Label of the batch.
        #[arg(long)]
        name: String,
        /// Policy the batch's devices get.
        #[arg(long)]
        policy: String,
        /// Owner of the batch (platform operators must name one).
        #[arg(long)]
        owner: Option<String>,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
        /// Idempotency key: a retry with the same key returns the first batch.
        #[arg(long, value_name = "ID")]
        request_id: Option<String>,
        /// Initial DeviceIds (at most 10,000; use `batch import` for more or for offline
        /// registrations).
        #[arg(long, value_name = "FILE")]
        devices: Option<PathBuf>,
        /// Format of --devices.
        #[arg(long, value_enum, default_value_t = ImportFormat::Auto)]
        format: ImportFormat,
    },
    /// Add devices from a QuarkLink JSON, JSON lines or CSV file.
    Import {
        /// The batch.
        batch_id: String,
        /// The file.
        file: PathBuf,
        /// Format of the file.
        #[arg(long, value_enum, default_value_t = ImportFormat::Auto)]
        format: ImportFormat,
    },
    /// Show one batch with its counts.
    Get {
        /// The batch.
        batch_id: String,
    },
    /// List batches, newest first (all pages).
    List {
        /// Owner filter.
        #[arg(long)]
        owner: Option<String>,
        /// Only batches of this policy.
        #[arg(long)]
        policy: Option<String>,
    },
    /// Follow a batch's progress until interrupted (or settled).
    Watch {
        /// The batch.
        batch_id: String,
        /// Also show one line per device state change.
        #[arg(long)]
        events: bool,
        /// Stop once no device is waiting to register or onboard.
        #[arg(long)]
        until_settled: bool,
    },
    /// Same as `enrollctl export`.
    Export(ExportArgs),
}

/// `device …`
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// List devices (all pages).
    List {
        /// Only devices of this batch.
        #[arg(long)]
        batch: Option<String>,
        /// Only devices in this state.
        #[arg(long)]
        state: Option<StateArg>,
        /// Owner filter.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Show one device with its credential history.
    Get {
        /// DeviceId (64 hex characters).
        device_id: String,
    },
    /// Revoke a device (final): its certificates go on the CRL at once.
    Revoke {
        /// DeviceId (64 hex characters).
        device_id: String,
        /// CRL reason code.
        #[arg(long, value_enum, default_value_t = ReasonArg::Unspecified)]
        reason: ReasonArg,
        /// Comment for the audit log.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Move a device to another batch or owner; it then re-onboards.
    #[command(group(ArgGroup::new("target").required(true).multiple(true).args(["owner", "batch"])))]
    Transfer {
        /// DeviceId (64 hex characters).
        device_id: String,
        /// New owner (default: the current one).
        #[arg(long)]
        owner: Option<String>,
        /// Target batch (required within the same owner).
        #[arg(long)]
        batch: Option<String>,
        /// Comment for the audit log.
        #[arg(long)]
        comment: Option<String>,
    },
}

/// `export` and `batch export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The policy to render artefacts for.
    pub policy: String,
    /// Owner of the policy (platform operators must name one).
    #[arg(long)]
    pub owner: Option<String>,
    /// Directory to write the files into (created if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Replace files that already exist.
    #[arg(long)]
    pub force: bool,
    /// AWS IoT: registration code, to get a verification certificate.
    #[arg(long, value_name = "CODE")]
    pub aws_registration_code: Option<String>,
    /// AWS IoT: IAM role ARN that just-in-time provisioning assumes, to get the complete JITP
    /// registration config (jitp-template.json).
    #[arg(long, value_name = "ARN")]
    pub aws_role_arn: Option<String>,
    /// Azure DPS: verification code, to get a proof-of-possession certificate.
    #[arg(long, value_name = "CODE")]
    pub azure_verification_code: Option<String>,
    /// Mosquitto: directory on the broker host the config will point to.
    #[arg(long, value_name = "DIR")]
    pub mosquitto_config_dir: Option<String>,
    /// Mosquitto: the broker's CSR (PEM), to get its server certificate.
    #[arg(long, value_name = "FILE")]
    pub broker_csr: Option<PathBuf>,
}

/// `crl`: fetch once, or `crl sync` to keep a broker's CRL file current.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CrlArgs {
    /// Keep a CRL file current instead of fetching once.
    #[command(subcommand)]
    pub sync: Option<CrlCommand>,
    /// Whose CRL: an owner (default: the caller's), or "*" for the platform's (operator
    /// certificates; the default for platform operators).
    #[arg(long)]
    pub owner: Option<String>,
    /// One issuing CA of the owner (as `owner get` lists them); default: all live ones.
    #[arg(long, value_name = "ID")]
    pub issuer: Option<String>,
    /// DER instead of PEM (one issuing CA's: needs --issuer during a rotation's overlap).
    #[arg(long)]
    pub der: bool,
    /// Write the CRL to this file (atomically replaced) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `crl sync`
#[derive(Debug, Subcommand)]
pub enum CrlCommand {
    /// Keep a broker's CRL file current: fetch the owner's CRLs, verify each against the
    /// pinned trust, write the file atomically, and run the reload command; again at once
    /// when a CRL is signed (a revocation, a scheduled re-signing) and every --interval.
    /// Runs until stopped; errors are logged and retried, and the file is never replaced by
    /// one that does not verify.
    Sync(CrlSyncArgs),
}

/// `crl sync` options.
#[derive(Debug, Args)]
pub struct CrlSyncArgs {
    /// Whose CRLs (default: the caller's owner; "*" for the platform's).
    #[arg(long)]
    pub owner: Option<String>,
    /// The CRL file to keep current (PEM; every live issuing CA's CRL).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The pinned trust the CRLs must verify against: the broker's CA file (`ca.pem` of the
    /// owner's export).
    #[arg(long, value_name = "FILE")]
    pub trust: PathBuf,
    /// Run this (with `sh -c`) after each new file, e.g. 'kill -HUP $(pidof mosquitto)'.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// Fetch at least this often even without a notice, e.g. 60s.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Duration,
    /// Fetch, verify, write and run the command once, then exit.
    #[arg(long)]
    pub once: bool,
}

/// `audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Show audit entries, oldest first (all pages unless --limit).
    Query(AuditQueryArgs),
    /// Check the hash chain on the service side.
    Verify {
        /// First entry to check (default: the beginning).
        #[arg(long, value_name = "SEQ")]
        start: Option<u64>,
        /// Last entry to check (default: the newest).
        #[arg(long, value_name = "SEQ")]
        end: Option<u64>,
    },
}

/// Filters of `audit query`; they combine with AND.
#[derive(Debug, Args)]
pub struct AuditQueryArgs {
    /// Only entries with this sequence number or later.
    #[arg(long, value_name = "SEQ")]
    pub start: Option<u64>,
    /// Only entries at or after this time: RFC 3339, or a span ago such as 24h.
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    pub since: Option<TimeArg>,
    /// Only entries before this time: RFC 3339, or a span ago such as 1h.
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    pub until: Option<TimeArg>,
    /// Only this actor, e.g. operator:alice or device:DEVICE_ID.
    #[arg(long)]
    pub actor: Option<String>,
    /// Only this action, e.g. device.revoke.
    #[arg(long)]
    pub action: Option<String>,
    /// Only this subject, e.g. batch:ID.
    #[arg(long)]
    pub subject: Option<String>,
    /// Only this correlation ID (a refusal's reference).
    #[arg(long, value_name = "ID")]
    pub correlation_id: Option<String>,
    /// Stop after this many entries.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// `operator …`
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Make a key here, have the service certify it, and write a profile directory.
    Issue {
        /// Operator name: the certificate's CN and the audit log's actor.
        #[arg(long)]
        name: String,
        /// Role to grant.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Owner to bind to (default: the caller's; "*" makes a platform operator).
        #[arg(long)]
        owner: Option<String>,
        /// Validity, e.g. 90d (service default 90d, at most 397d).
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        validity: Option<Duration>,
        /// Directory for operator.key, operator.pem and root.pem (usable as --profile).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Revoke an operator certificate: its calls are refused from now on.
    Revoke {
        /// Serial (hex), as `operator issue`, `operator list` and `whoami` print it.
        serial: String,
        /// CRL reason code.
        #[arg(long, value_enum, default_value_t = ReasonArg::Unspecified)]
        reason: ReasonArg,
        /// Comment for the audit log.
        #[arg(long)]
        comment: Option<String>,
    },
    /// List the operator certificates the service issued, revoked ones included.
    List {
        /// Owner (platform admins: default every owner, "*" the platform's own operators).
        #[arg(long)]
        owner: Option<String>,
    },
}

/// A point in time given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeArg {
    /// An absolute instant.
    At(time::OffsetDateTime),
    /// This long before the command runs.
    Ago(Duration),
}

/// Parses RFC 3339 (`2025-01-31T12:00:00Z`) or a span ago (`24h`).
///
/// # Errors
/// A message naming both accepted forms.
pub fn parse_time(text: &str) -> Result<TimeArg, String> {
    if let Ok(ago) = parse_duration(text) {
        return Ok(TimeArg::Ago(ago));
    }
    time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
        .map(TimeArg::At)
        .map_err(|e| {
            format!("{text:?} is neither RFC 3339 (2025-01-31T12:00:00Z) nor a span ago (24h): {e}")
        })
}

/// Policy kinds as typed on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// AWS IoT Core.
    AwsIot,
    /// Azure DPS.
    AzureDps,
    /// Mosquitto.
    Mosquitto,
}

impl From<KindArg> for PolicyKind {
    fn from(kind: KindArg) -> Self {
        match kind {
            KindArg::AwsIot => Self::AwsIot,
            KindArg::AzureDps => Self::AzureDps,
            KindArg::Mosquitto => Self::Mosquitto,
        }
    }
}

/// Device states as typed on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    /// Listed, not registered yet.
    AwaitingRegistration,
    /// Registered, in no batch.
    Unassigned,
    /// Registered, not onboarded yet.
    Ready,
    /// Holding a credential.
    Onboarded,
    /// Moved; must onboard again.
    ReonboardPending,
    /// Revoked.
    Revoked,
}

impl From<StateArg> for DeviceState {
    fn from(state: StateArg) -> Self {
        match state {
            StateArg::AwaitingRegistration => Self::AwaitingRegistration,
            StateArg::Unassigned => Self::Unassigned,
            StateArg::Ready => Self::Ready,
            StateArg::Onboarded => Self::Onboarded,
            StateArg::ReonboardPending => Self::ReonboardPending,
            StateArg::Revoked => Self::Revoked,
        }
    }
}

/// CRL reason codes as typed on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReasonArg {
    /// keyCompromise.
    KeyCompromise,
    /// affiliationChanged.
    AffiliationChanged,
    /// superseded.
    Superseded,
    /// cessationOfOperation.
    CessationOfOperation,
    /// privilegeWithdrawn.
    PrivilegeWithdrawn,
    /// unspecified.
    Unspecified,
}

impl From<ReasonArg> for RevocationReason {
    fn from(reason: ReasonArg) -> Self {
        match reason {
            ReasonArg::KeyCompromise => Self::KeyCompromise,
            ReasonArg::AffiliationChanged => Self::AffiliationChanged,
            ReasonArg::Superseded => Self::Superseded,
            ReasonArg::CessationOfOperation => Self::CessationOfOperation,
            ReasonArg::PrivilegeWithdrawn => Self::PrivilegeWithdrawn,
            ReasonArg::Unspecified => Self::Unspecified,
        }
    }
}

/// Operator roles as typed on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Everything, including policies and operator certificates.
    Admin,
    /// Batches, imports, revocation, transfers, exports.
    Operator,
    /// Read only, plus the audit log.
    Auditor,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Admin => Self::Admin,
            RoleArg::Operator => Self::Operator,
            RoleArg::Auditor => Self::Auditor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("enrollctl").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn policy_create_needs_exactly_one_kind() {
        assert!(parse(&["policy", "create", "--name", "p"]).is_err());
        assert!(
            parse(&[
                "policy",
                "create",
                "--name",
                "p",
                "--mosquitto-host",
                "h",
                "--azure-id-scope",
                "s"
            ])
            .is_err()
        );
        assert!(parse(&["policy", "create", "--name", "p", "--mosquitto-host", "h"]).is_ok());
    }

    #[test]
    fn kind_specific_options_need_their_kind() {
        // An AWS endpoint without the trust anchor the service insists on.
        assert!(parse(&["policy", "create", "--name", "p", "--aws-endpoint", "h"]).is_err());
        // A Mosquitto port on an Azure policy.
        assert!(
            parse(&[
                "policy",
                "create",
                "--name",
                "p",
                "--azure-id-scope",
                "s",
                "--mosquitto-port",
                "1"
            ])
            .is_err()
        );
        // Azure has no topic root.
        assert!(
            parse(&[
                "policy",
                "create",
                "--name",
                "p",
                "--azure-id-scope",
                "s",
                "--topic-root",
                "t"
            ])
            .is_err()
        );
    }

    /// Every option of a kind, with a value clap accepts.
    const KINDS: [(&str, &[&str]); 3] = [
        ("--mosquitto-host", &["--mosquitto-port", "--broker-ca"]),
        (
            "--aws-endpoint",
            &[
                "--aws-port",
                "--aws-root-ca",
                "--thing-name-template",
                "--aws-region",
                "--aws-account",
                "--alpn",
            ],
        ),
        (
            "--azure-id-scope",
            &[
                "--azure-endpoint",
                "--azure-port",
                "--azure-root-ca",
                "--enrollment-group-id",
                "--iot-hub",
            ],
        ),
    ];

    /// `policy create --name p` choosing `kind` (AWS with the root CA it requires).
    fn create_with(kind: &str, extra: &[&str]) -> Result<Cli, clap::Error> {
        let mut args = vec!["policy", "create", "--name", "p", kind, "1"];
        if kind == "--aws-endpoint" && !extra.contains(&"--aws-root-ca") {
            args.extend(["--aws-root-ca", "1"]);
        }
        args.extend(extra);
        parse(&args)
    }

    #[test]
    fn every_kind_specific_option_needs_its_kind_and_no_other() {
        for (kind, options) in KINDS {
            for &option in options {
                let own = create_with(kind, &[option, "1"]);
                assert!(own.is_ok(), "{kind} {option}: {:?}", own.err());
                let alone = parse(&["policy", "create", "--name", "p", option, "1"])
                    .expect_err("an option without its kind");
                assert_eq!(alone.exit_code(), 2, "{option}: {alone}");
                for (other, _) in KINDS.iter().filter(|(other, _)| *other != kind) {
                    let error =
                        create_with(other, &[option, "1"]).expect_err("an option of another kind");
                    assert_eq!(error.exit_code(), 2, "{other} {option}: {error}");
                }
            }
        }
    }

    #[test]
    fn durations_are_checked_by_clap() {
        let err = parse(&[
            "policy",
            "create",
            "--name",
            "p",
            "--mosquitto-host",
            "h",
            "--lifetime",
            "365",
        ])
        .expect_err("a bare number is ambiguous");
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = parse(&["whoami", "--json", "--profile", "p"]).expect("parses");
        assert!(cli.json);
        assert_eq!(cli.connection.profile, Some(PathBuf::from("p")));
    }

    #[test]
    fn enum_names_match_the_contract() {
        let cli = parse(&[
            "device",
            "revoke",
            "x",
            "--reason",
            "cessation-of-operation",
        ])
        .expect("parses");
        let Command::Device(DeviceCommand::Revoke { reason, .. }) = cli.command else {
            panic!()
        };
        assert_eq!(
            RevocationReason::from(reason),
            RevocationReason::CessationOfOperation
        );
        assert!(parse(&["device", "list", "--state", "reonboard-pending"]).is_ok());
        assert!(parse(&["policy", "list", "--kind", "aws-iot"]).is_ok());
        assert!(
            parse(&[
                "operator", "issue", "--name", "n", "--role", "auditor", "--out", "d"
            ])
            .is_ok()
        );
        let cli = parse(&["operator", "revoke", "1f2e", "--reason", "key-compromise"])
            .expect("operator revoke parses");
        let Command::Operator(OperatorCommand::Revoke { serial, reason, .. }) = cli.command else {
            panic!()
        };
        assert_eq!(
            (serial.as_str(), RevocationReason::from(reason)),
            ("1f2e", RevocationReason::KeyCompromise)
        );
        assert!(parse(&["operator", "list", "--owner", "*"]).is_ok());
    }

    #[test]
    fn the_console_listens_on_a_free_loopback_port_by_default() {
        let cli = parse(&["console"]).expect("parses");
        let Command::Console(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.listen, "127.0.0.1:0".parse().expect("address"));
        assert_eq!(args.fleet_refresh, Duration::from_secs(15));
        assert!(parse(&["console", "--listen", "localhost:80"]).is_err());
    }

    #[test]
    fn transfer_needs_a_target() {
        assert!(parse(&["device", "transfer", "x"]).is_err());
        assert!(parse(&["device", "transfer", "x", "--batch", "b"]).is_ok());
    }

    #[test]
    fn times_are_rfc3339_or_ago() {
        assert_eq!(
            parse_time("24h"),
            Ok(TimeArg::Ago(Duration::from_secs(86_400)))
        );
        assert!(matches!(
            parse_time("2025-01-31T12:00:00Z"),
            Ok(TimeArg::At(_))
        ));
        assert!(parse_time("yesterday").is_err());
    }
}

/// `owner …`
#[derive(Debug, Subcommand)]
pub enum OwnerCommand {
    /// Create an owner with its own root and issuing CA (platform admins).
    Create {
        /// Owner name: [a-z0-9-], starting with a letter or digit.
        name: String,
        /// Bring your own CA: the service makes the issuing CA's key and a CSR, written to
        /// --csr-out, for the owner's root to sign; `owner import-ca` brings the certificate
        /// back.
        #[arg(long, requires = "csr_out")]
        own_ca: bool,
        /// The subject O of the owner's CAs (default: the owner's name).
        #[arg(long)]
        organisation: Option<String>,
        /// Where to write the CSR (with --own-ca).
        #[arg(long, value_name = "FILE")]
        csr_out: Option<PathBuf>,
    },
    /// Show an owner and its CAs.
    Get {
        /// Owner (default: the caller's).
        name: Option<String>,
        /// Write the owner's root certificate (its devices' trust anchor) to this file.
        #[arg(long, value_name = "FILE")]
        root_out: Option<PathBuf>,
    },
    /// List owners (platform operators: all; others: their own).
    List,
    /// Bring back the certificate the owner's root issued for its pending issuing CA.
    ImportCa {
        /// Owner (default: the caller's).
        #[arg(long)]
        owner: Option<String>,
        /// The issuing CA's certificate (PEM).
        #[arg(long, value_name = "FILE")]
        certificate: PathBuf,
        /// The certificates above it up to the owner's root (PEM, issuer order).
        #[arg(long, value_name = "FILE")]
        chain: PathBuf,
    },
    /// Rotate the owner's issuing CA (the old one stays trusted until it expires).
    Rotate {
        /// Owner (default: the caller's).
        #[arg(long)]
        owner: Option<String>,
        /// Where to write the new CSR, for an owner with its own CA.
        #[arg(long, value_name = "FILE")]
        csr_out: Option<PathBuf>,
    },
}
