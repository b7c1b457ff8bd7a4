//! `register`: send the EPK with its proof, or write it as one JSON line for an air-gapped
//! station's batch import (`enrollctl batch import`, JSON lines, offline registration).

use std::collections::HashMap;
use std::path::Path;

use oxroot_proto::v1;
use serde_json::{Map, Value, json};

use super::{exchange_error, open_chip, service};
use crate::cli::{ContextArgs, ServiceArgs, SiliconArgs};
use crate::error::AgentError;
use crate::report::{Console, Report};
use crate::state::{self, StateDir};
use oxroot_client::device::{self, Chip, ExchangeError};

pub(super) async fn register(
    state: &StateDir,
    silicon: &SiliconArgs,
    service_args: &ServiceArgs,
    export: Option<&Path>,
    context_args: &ContextArgs,
    console: &mut Console<'_>,
) -> Result<(), AgentError> {
    if export.is_some() && service_args.service.is_some() {
        return Err(AgentError::Usage(
            "--export writes the registration for an offline import; it does not go with \
             --service"
                .to_owned(),
        ));
    }
    let context = registration_context(context_args)?;
    let proof_context = context_args.proof_context.as_bytes();
    // Where the registration goes is settled before any silicon read: a bad service URL or
    // CA file costs nothing.
    let destination = match export {
        Some(path) => Destination::File(path),
        None => Destination::Service(Box::new(service(service_args)?)),
    };
    let chip = open_chip(state, silicon)?;
    let device_id = chip.device_id().to_string();

    let (target, retry) = match destination {
        Destination::Service(online) => *online,
        Destination::File(path) => {
            let request = device::registration_request(&chip, proof_context, context).map_err(
                |e| match e {
                    ExchangeError::Chip(error) => error,
                    // Only the proof context can be wrong here, and the operator chose it.
                    other => AgentError::Usage(format!("--proof-context: {other}")),
                },
            )?;
            let mut line = export_line(&request).to_string();
            line.push('\n');
            if path == Path::new("-") {
                console
                    .out
                    .write_all(line.as_bytes())
                    .map_err(AgentError::io("<stdout>"))?;
                return Ok(());
            }
            state::write_atomic(path, line.as_bytes(), 0o644)?;
            return Report::new("registration exported")
                .field("device_id", device_id)
                .field("file", path.display().to_string())
                .field(
                    "import_with",
                    "enrollctl batch import <batch-id> FILE (JSON lines)",
                )
                .print(console);
        }
    };

    let response = retry
        .run(&target, console.err, async |client| {
            device::register(client, &chip, proof_context, context.clone())
                .await
                .map_err(|e| exchange_error(e, &target))
        })
        .await?;
    if response.device_id != device_id {
        return Err(AgentError::Protocol(format!(
            "the service registered DeviceId {}, but this chip is {device_id}",
            response.device_id
        )));
    }
    let registered_at = response
        .registered_at
        .as_ref()
        .map(crate::credential::timestamp)
        .transpose()?;
    Report::new(if response.newly_registered {
        "registered"
    } else {
        "already registered"
    })
    .field("device_id", device_id)
    .field("newly_registered", response.newly_registered)
    .field("registered_at", registered_at)
    .field("service", target.url())
    .print(console)
}

/// Where a registration goes: the service, or a file (`-`: stdout) for an offline import.
enum Destination<'a> {
    Service(Box<(crate::service::ServiceTarget, crate::service::Retry)>),
    File(&'a Path),
}

/// The `RegistrationContext`, or `None` when no field was given.
fn registration_context(args: &ContextArgs) -> Result<Option<v1::RegistrationContext>, AgentError> {
    let mut labels = HashMap::new();
    for label in &args.labels {
        let (key, value) = label
            .split_once('=')
            .ok_or_else(|| AgentError::Usage(format!("--label {label:?}: expected KEY=VALUE")))?;
        labels.insert(key.to_owned(), value.to_owned());
    }
    if args.site.is_empty()
        && args.station.is_empty()
        && args.firmware_version.is_empty()
        && labels.is_empty()
    {
        return Ok(None);
    }
    Ok(Some(v1::RegistrationContext {
        site: args.site.clone(),
        station: args.station.clone(),
        firmware_version: args.firmware_version.clone(),
        labels,
    }))
}

/// The JSON-lines record enrollctl's import reads as an offline registration: byte fields hex,
/// the same fields as `RegisterRequest`.
fn export_line(request: &v1::RegisterRequest) -> Value {
    let mut line = Map::new();
    line.insert("epk".into(), hex::encode(&request.epk).into());
    line.insert(
        "proof_signature".into(),
        hex::encode(&request.proof_signature).into(),
    );
    line.insert(
        "proof_context".into(),
        hex::encode(&request.proof_context).into(),
    );
    line.insert(
        "claimed_device_id".into(),
        request.claimed_device_id.clone().into(),
    );
    if let Some(context) = &request.context {
        // Sorted, so the same registration always exports the same line.
        let labels: std::collections::BTreeMap<_, _> = context.labels.iter().collect();
        line.insert(
            "context".into(),
            json!({
                "site": context.site,
                "station": context.station,
                "firmware_version": context.firmware_version,
                "labels": labels,
            }),
        );
    }
    Value::Object(line)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn the_export_line_has_the_import_field_names() {
        let request = v1::RegisterRequest {
            epk: vec![4; 65],
            proof_signature: vec![1; 64],
            claimed_device_id: "ab".repeat(32),
            proof_context: b"st-1".to_vec(),
            context: Some(v1::RegistrationContext {
                site: "fab".into(),
                station: "st-1".into(),
                firmware_version: "1.2".into(),
                labels: [("lot".to_owned(), "7".to_owned())].into(),
            }),
        };
        let line = export_line(&request);
        assert_eq!(line["epk"], "04".repeat(65));
        assert_eq!(line["proof_signature"], "01".repeat(64));
        assert_eq!(line["proof_context"], hex::encode("st-1"));
        assert_eq!(line["claimed_device_id"], "ab".repeat(32));
        assert_eq!(line["context"]["station"], "st-1");
        assert_eq!(line["context"]["labels"]["lot"], "7");
        assert!(!line.to_string().contains('\n'));
    }

    #[test]
    fn labels_need_an_equals_sign() {
        let args = ContextArgs {
            proof_context: String::new(),
            site: String::new(),
            station: String::new(),
            firmware_version: String::new(),
            labels: vec!["lot".into()],
        };
        assert!(matches!(
            registration_context(&args),
            Err(AgentError::Usage(_))
        ));
        let none = ContextArgs {
            labels: vec![],
            ..args
        };
        assert!(registration_context(&none).unwrap().is_none());
    }
}
