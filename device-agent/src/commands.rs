//! The commands, one module each, and what they share: opening the silicon and the chip,
//! reaching the service, turning exchange failures and refusals into [`AgentError`]s.

mod connect;
mod enroll;
mod onboard;
mod register;
mod status;
mod update;

use std::fmt::Write as _;
use std::time::Duration;

use oxroot_proto::v1;
use rot_core::keys::KeySlot;

use crate::chip::SiliconChip;
use crate::cli::{Cli, Command, ServiceArgs, SiliconArgs};
use crate::error::AgentError;
use crate::firmware::Slots;
use crate::report::Console;
use crate::service::{Retry, ServiceTarget};
use crate::silicon::{self, Silicon, SiliconSpec};
use crate::state::StateDir;
use oxroot_client::device::ExchangeError;

/// Runs a parsed command line.
///
/// # Errors
/// The command's [`AgentError`]; its exit code is [`AgentError::exit_code`].
pub async fn execute(cli: Cli, console: &mut Console<'_>) -> Result<(), AgentError> {
    let state = StateDir::new(&cli.state);
    match cli.command {
        Command::Enroll {
            silicon,
            force,
            construction,
        } => enroll::enroll(&state, &silicon, force, construction, console),
        Command::Id { silicon } => enroll::id(&state, &silicon, console),
        Command::Register {
            silicon,
            service,
            export,
            context,
        } => {
            register::register(
                &state,
                &silicon,
                &service,
                export.as_deref(),
                &context,
                console,
            )
            .await
        }
        Command::Onboard { silicon, service } => {
            onboard::onboard(&state, &silicon, &service, console).await
        }
        Command::Renew {
            silicon,
            service,
            rotate,
        } => onboard::renew(&state, &silicon, &service, rotate, console).await,
        Command::Status { silicon, service } => {
            status::status(&state, &silicon, &service, console).await
        }
        Command::Connect {
            silicon,
            topic,
            message,
            timeout,
            previous,
        } => {
            let options = connect::Options {
                topic,
                message,
                timeout: Duration::from_secs(timeout),
                previous,
            };
            connect::connect(&state, &silicon, &options, console).await
        }
        Command::Update {
            release: Some(release),
            ..
        } => update::from_release(&state, &release, console),
        Command::Update {
            release: None,
            silicon,
            service,
        } => update::from_service(&state, &silicon, &service, console).await,
        Command::Unlock => enroll::unlock(&state, console),
        Command::MakeChip { out, seed, force } => {
            enroll::make_chip(&out, seed.as_ref().map(|s| s.0.as_str()), force, console)
        }
    }
}

/// The silicon named by `--silicon` / `OXROOT_SILICON`, at the given conditions.
fn open_silicon(args: &SiliconArgs) -> Result<Silicon, AgentError> {
    let spec: SiliconSpec = args
        .silicon
        .as_ref()
        .ok_or_else(|| {
            AgentError::Usage(
                "no silicon: pass --silicon emulated:<hex> | file:<path> | fwcfg, or set \
                 OXROOT_SILICON"
                    .to_owned(),
            )
        })?
        .0
        .parse()?;
    let conditions = silicon::conditions(args.temperature, args.voltage, args.age)?;
    Silicon::open(&spec, conditions)
}

/// The enrolled chip of the state directory. Checks the state before touching the silicon,
/// so a missing state directory is reported as such, not as a silicon problem.
fn open_chip(state: &StateDir, args: &SiliconArgs) -> Result<SiliconChip, AgentError> {
    state.helper_data()?;
    // What a boot loader would measure: the slot an update installed, else the factory image.
    let firmware = Slots::of(state)
        .active_image()?
        .or_else(|| args.firmware.clone());
    Ok(SiliconChip::open(state, open_silicon(args)?)?.running(firmware))
}

/// The service target and retry policy; both `--service` and `--ca` are required.
fn service(args: &ServiceArgs) -> Result<(ServiceTarget, Retry), AgentError> {
    let url = args.service.as_deref().ok_or_else(|| {
        AgentError::Usage(
            "no service: pass --service https://HOST:PORT or set OXROOT_SERVICE".into(),
        )
    })?;
    let ca = args.ca.as_deref().ok_or_else(|| {
        AgentError::Usage(
            "no root certificate to pin: pass --ca root.pem or set OXROOT_CA".to_owned(),
        )
    })?;
    Ok((
        ServiceTarget::new(url, ca)?,
        Retry {
            retries: args.retries,
            initial_backoff: Duration::from_millis(args.backoff_ms),
        },
    ))
}

/// An exchange failure as an agent error; gRPC statuses are classified by the target.
fn exchange_error(error: ExchangeError<AgentError>, target: &ServiceTarget) -> AgentError {
    match error {
        ExchangeError::Chip(error) => error,
        ExchangeError::Protocol(text) => AgentError::Protocol(text),
        ExchangeError::Rpc(status) => target.status_error(&status),
    }
}

/// A refusal as an agent error, with the contract's reason name and the reference an operator
/// looks up in the audit log.
fn refused(refusal: &v1::Refusal) -> AgentError {
    let reason = refusal.reason();
    let mut message = refusal.message.clone();
    if let Some(after) = &refusal.retry_after {
        let _ = write!(message, "; retry after {} s", after.seconds);
    }
    AgentError::Refused {
        reason: reason
            .as_str_name()
            .trim_start_matches("REFUSAL_REASON_")
            .to_owned(),
        message,
        reference: refusal.reference.clone(),
    }
}

/// A stored key slot as a [`KeySlot`].
fn key_slot(slot: u8) -> Result<KeySlot, AgentError> {
    KeySlot::new(slot)
        .ok_or_else(|| AgentError::Credential(format!("key slot {slot} outside 1..=7")))
}

/// Now, RFC 3339.
fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
