//! `device list | get | revoke | transfer`.

use oxroot_proto::v1::{
    Device, DeviceState, GetDeviceRequest, ListDevicesRequest, RevocationReason,
    RevokeDeviceRequest, TransferDeviceRequest,
};
use serde_json::json;

use super::{Ctx, PAGE_SIZE, all_pages, owner};
use crate::args::DeviceCommand;
use crate::error::CtlError;
use crate::output::{reason_name, state_name};
use crate::view;

pub(super) async fn run(command: DeviceCommand, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    match command {
        DeviceCommand::List {
            batch,
            state,
            owner: o,
        } => {
            let request = ListDevicesRequest {
                batch_id: batch.unwrap_or_default(),
                state: state.map_or(DeviceState::Unspecified, DeviceState::from) as i32,
                owner: owner(o),
                page_size: PAGE_SIZE,
                page_token: String::new(),
            };
            list(request, ctx).await
        }
        DeviceCommand::Get { device_id } => get(device_id, ctx).await,
        DeviceCommand::Revoke {
            device_id,
            reason,
            comment,
        } => {
            let request = RevokeDeviceRequest {
                device_id,
                reason: RevocationReason::from(reason) as i32,
                comment: comment.unwrap_or_default(),
            };
            revoke(request, ctx).await
        }
        DeviceCommand::Transfer {
            device_id,
            owner: o,
            batch,
            comment,
        } => {
            let request = TransferDeviceRequest {
                device_id,
                target_owner: owner(o),
                target_batch_id: batch.unwrap_or_default(),
                comment: comment.unwrap_or_default(),
            };
            transfer(request, ctx).await
        }
    }
}

async fn list(request: ListDevicesRequest, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    let mut client = ctx.client().await?;
    let devices = all_pages("ListDevices", None, async |page_token| {
        let page = client
            .list_devices(ListDevicesRequest {
                page_token,
                ..request.clone()
            })
            .await?
            .into_inner();
        Ok((page.devices, page.next_page_token))
    })
    .await?;
    let json = json!({ "devices": devices.iter().map(view::device_json).collect::<Vec<_>>() });
    ctx.emit(&json, |out| view::device_table(&devices).write(out))
}

async fn get(device_id: String, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    let device = ctx
        .client()
        .await?
        .get_device(GetDeviceRequest { device_id })
        .await
        .map_err(CtlError::rpc("GetDevice"))?
        .into_inner()
        .device
        .ok_or_else(|| CtlError::BadAnswer("GetDevice without a device".into()))?;
    ctx.emit(&view::device_json(&device), |out| {
        let (fields, history) = view::device_fields(&device);
        fields.write(out)?;
        if let Some(history) = history {
            writeln!(out)?;
            history.write(out)?;
        }
        Ok(())
    })
}

async fn revoke(request: RevokeDeviceRequest, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    let response = ctx
        .client()
        .await?
        .revoke_device(request)
        .await
        .map_err(CtlError::rpc("RevokeDevice"))?
        .into_inner();
    let device = response
        .device
        .ok_or_else(|| CtlError::BadAnswer("RevokeDevice without a device".into()))?;
    changed(ctx, &device, &response.revoked_serials, |device| {
        let reason = device
            .revocation
            .as_ref()
            .map_or_else(String::new, |r| format!(" ({})", reason_name(r.reason)));
        format!("revoked {}{reason}", device.device_id)
    })
}

async fn transfer(request: TransferDeviceRequest, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    let response = ctx
        .client()
        .await?
        .transfer_device(request)
        .await
        .map_err(CtlError::rpc("TransferDevice"))?
        .into_inner();
    let device = response
        .device
        .ok_or_else(|| CtlError::BadAnswer("TransferDevice without a device".into()))?;
    changed(ctx, &device, &response.revoked_serials, |device| {
        let batch = if device.batch_id.is_empty() {
            "no batch (unassigned)".to_owned()
        } else {
            format!("batch {}", device.batch_id)
        };
        format!(
            "moved {} to owner {}, {batch}; now {}",
            device.device_id,
            device.owner,
            state_name(device.state)
        )
    })
}

/// Prints a device after a state change, with the serials the change put on the CRL: those
/// are what an operator must also remove from AWS or Azure, which the service does not call.
fn changed(
    ctx: &mut Ctx<'_>,
    device: &Device,
    revoked_serials: &[String],
    headline: impl FnOnce(&Device) -> String,
) -> Result<(), CtlError> {
    let json = json!({
        "device": view::device_json(device),
        "revoked_serials": revoked_serials,
    });
    ctx.emit(&json, |out| {
        writeln!(out, "{}", headline(device))?;
        if revoked_serials.is_empty() {
            writeln!(out, "no certificate revoked by this call")?;
        } else {
            writeln!(
                out,
                "revoked serials (now on the CRL; remove them from the cloud too): {}",
                revoked_serials.join(", ")
            )?;
        }
        Ok(())
    })
}
