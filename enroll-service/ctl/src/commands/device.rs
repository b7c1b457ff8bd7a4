//! `device list | get | revoke | transfer`.

use oxroot_proto::v1::{
    DeviceState, GetDeviceRequest, ListDevicesRequest, ListDevicesResponse, RevocationReason,
    RevokeDeviceRequest, TransferDeviceRequest,
};

use super::{Ctx, PAGE_SIZE, all_pages, owner};
use crate::args::DeviceCommand;
use crate::error::CtlError;
use crate::output::json;
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
    let client = ctx.client().await?;
    let devices = all_pages("ListDevices", None, |page_token| {
        let mut client = client.clone();
        let request = ListDevicesRequest {
            page_token,
            ..request.clone()
        };
        async move {
            let page = client.list_devices(request).await?.into_inner();
            Ok((page.devices, page.next_page_token))
        }
    })
    .await?;
    let all = ListDevicesResponse {
        devices,
        next_page_token: String::new(),
    };
    ctx.emit(
        || json::message(&all),
        |out| out.table(&view::device::table(&all.devices)),
    )
}

async fn get(device_id: String, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    let response = ctx
        .client()
        .await?
        .get_device(GetDeviceRequest { device_id })
        .await
        .map_err(CtlError::rpc("GetDevice"))?
        .into_inner();
    let device = response
        .device
        .as_ref()
        .ok_or_else(|| CtlError::BadAnswer("GetDevice without a device".into()))?;
    ctx.emit(
        || json::message(&response),
        |out| view::device::get(out, device),
    )
}

/// `device revoke`: the revoked serials are what an operator must also remove from AWS or
/// Azure, which the service does not call.
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
        .as_ref()
        .ok_or_else(|| CtlError::BadAnswer("RevokeDevice without a device".into()))?;
    ctx.emit(
        || json::message(&response),
        |out| view::device::revoked(out, device, &response.revoked_serials),
    )
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
        .as_ref()
        .ok_or_else(|| CtlError::BadAnswer("TransferDevice without a device".into()))?;
    ctx.emit(
        || json::message(&response),
        |out| view::device::transferred(out, device, &response.revoked_serials),
    )
}
