//! `GET /batches/{id}/events`: WatchBatch as server-sent events, for the batch page's script.
//!
//! Each `progress` event carries the batch's counts and its percentage, each `device` event one
//! device's change (with the precise refusal cause, which WatchBatch gives operators of every
//! role). The data is JSON that the script puts into the page with `textContent` only, so
//! nothing in it is ever parsed as HTML. If the watch fails, one `failed` event says why and
//! the stream ends; the script then stops (an `EventSource` would otherwise reconnect for
//! ever).
//!
//! Each open view holds a WatchBatch stream on the operator's connection, so their number is
//! bounded ([`super::MAX_LIVE_VIEWS`]); closing the page drops the stream and cancels the call.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use oxroot_proto::v1::{
    BatchProgress, DeviceEvent, DeviceEventKind, WatchBatchRequest, WatchBatchResponse,
    watch_batch_response,
};
use serde_json::json;
use tokio_stream::{Stream, StreamExt as _};

use super::SharedConsole;
use super::devices::url_component;
use super::page::{PageError, percent, shown, when};
use crate::error::code_name;
use crate::output::{event_name, refusal_detail_name};

/// `GET /batches/{id}/events`.
pub(crate) async fn events(
    State(console): State<SharedConsole>,
    Path(batch_id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, PageError> {
    let permit = console
        .live_views
        .clone()
        .try_acquire_owned()
        .map_err(|_| PageError::Busy)?;
    let stream = console
        .client()
        .watch_batch(WatchBatchRequest {
            batch_id,
            device_events: true,
            until_settled: false,
        })
        .await
        .map_err(PageError::rpc("WatchBatch"))?
        .into_inner();
    // After an error status the call is over and the stream ends by itself.
    let events =
        stream.filter_map(move |message| {
            // The permit lives as long as the stream: dropped with it when the page closes.
            let _view = &permit;
            let event = match message {
            Ok(message) => event(&message),
            // JSON, like every event: a raw status message could hold a carriage return, which
            // server-sent events cannot carry.
            Err(status) => Some(Event::default().event("failed").data(
                json!({
                    "message": format!("{}: {}", code_name(status.code()), status.message()),
                })
                .to_string(),
            )),
        };
            event.map(Ok::<_, Infallible>)
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The server-sent event for one WatchBatch message; `None` for an empty one.
fn event(message: &WatchBatchResponse) -> Option<Event> {
    match message.event.as_ref()? {
        watch_batch_response::Event::Progress(progress) => Some(
            Event::default()
                .event("progress")
                .data(progress_json(progress).to_string()),
        ),
        watch_batch_response::Event::Device(device) => Some(
            Event::default()
                .event("device")
                .data(device_json(device).to_string()),
        ),
    }
}

/// A progress snapshot: the counts the page shows (keys as its `data-count` attributes).
fn progress_json(progress: &BatchProgress) -> serde_json::Value {
    let c = progress.counts.unwrap_or_default();
    json!({
        "counts": {
            "total": c.total,
            "awaiting": c.awaiting_registration,
            "registered": c.registered,
            "onboarded": c.onboarded,
            "reonboard": c.reonboard_pending,
            "revoked": c.revoked,
            "refusals": c.refusals,
        },
        "percent": percent(c.onboarded, c.total),
        "time": when(progress.time.as_ref()),
        "dropped_events": progress.dropped_events,
    })
}

/// One device event, as a table row's cells.
fn device_json(device: &DeviceEvent) -> serde_json::Value {
    let refused = device.kind == DeviceEventKind::Refused as i32;
    let detail = if refused {
        refusal_detail_name(device.refusal_detail)
    } else if device.serial.is_empty() {
        String::new()
    } else {
        format!("serial {}", shown(&device.serial))
    };
    json!({
        "device_id": shown(&device.device_id),
        "href": format!("/devices/{}", url_component(&device.device_id)),
        "kind": event_name(device.kind),
        "refused": refused,
        "detail": detail,
        "reference": shown(&device.correlation_id),
        "time": when(device.time.as_ref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxroot_proto::v1::{BatchCounts, RefusalDetail};

    #[test]
    fn progress_carries_the_counts_and_the_percentage() {
        let value = progress_json(&BatchProgress {
            counts: Some(BatchCounts {
                total: 8,
                onboarded: 6,
                refusals: 1,
                ..BatchCounts::default()
            }),
            time: None,
            dropped_events: 0,
        });
        assert_eq!(value["percent"], 75);
        assert_eq!(value["counts"]["onboarded"], 6);
        assert_eq!(value["counts"]["refusals"], 1);
    }

    #[test]
    fn refusals_carry_their_precise_cause_and_text_stays_data() {
        let value = device_json(&DeviceEvent {
            device_id: "<img src=x>".into(),
            kind: DeviceEventKind::Refused as i32,
            refusal_detail: RefusalDetail::NonceReplayed as i32,
            correlation_id: "ref-1".into(),
            ..DeviceEvent::default()
        });
        assert_eq!(value["kind"], "refused");
        assert_eq!(value["detail"], "nonce-replayed");
        assert_eq!(value["refused"], true);
        // JSON carries the text as it is; the script only ever assigns it to textContent.
        assert_eq!(value["device_id"], "<img src=x>");
        let onboarded = device_json(&DeviceEvent {
            kind: DeviceEventKind::Onboarded as i32,
            serial: "0a1b".into(),
            ..DeviceEvent::default()
        });
        assert_eq!(onboarded["detail"], "serial 0a1b");
    }
}
