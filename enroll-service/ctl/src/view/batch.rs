//! `batch create | get | list | watch`.

use std::fmt::Write as _;
use std::io;

use oxroot_proto::v1::{Batch, BatchCounts, BatchProgress, DeviceEvent};

use super::by;
use super::import::ImportSummary;
use crate::output::{
    Fields, Human, Table, event_name, kind_name, refusal_detail_name, timestamp_text,
};

/// `batch create`: the new batch, and the outcome of `--devices` when a file was given.
pub(crate) fn created(
    out: &mut Human<'_>,
    batch: &Batch,
    devices: Option<&ImportSummary>,
) -> io::Result<()> {
    out.line(&format!("created batch {}", batch.batch_id))?;
    out.fields(&fields(batch))?;
    match devices {
        Some(summary) => summary.write(out),
        None => Ok(()),
    }
}

/// A batch.
pub(crate) fn fields(batch: &Batch) -> Fields {
    Fields::new()
        .field("batch", &batch.batch_id)
        .field("name", &batch.name)
        .field("owner", &batch.owner)
        .field(
            "policy",
            format!("{} ({})", batch.policy_name, kind_name(batch.policy_kind)),
        )
        .field("description", &batch.description)
        .field(
            "created",
            by(timestamp_text(batch.created_at.as_ref()), &batch.created_by),
        )
        .field("devices", counts_text(batch.counts.as_ref()))
}

/// Batches, one per row.
pub(crate) fn table(batches: &[Batch]) -> Table {
    let mut table = Table::new(&[
        "BATCH",
        "NAME",
        "OWNER",
        "POLICY",
        "TOTAL",
        "ONBOARDED",
        "REVOKED",
        "CREATED",
    ]);
    for batch in batches {
        let counts = batch.counts.unwrap_or_default();
        table.row(vec![
            batch.batch_id.clone(),
            batch.name.clone(),
            batch.owner.clone(),
            batch.policy_name.clone(),
            counts.total.to_string(),
            counts.onboarded.to_string(),
            counts.revoked.to_string(),
            timestamp_text(batch.created_at.as_ref()),
        ]);
    }
    table
}

/// Batch counts on one line.
pub(crate) fn counts_text(counts: Option<&BatchCounts>) -> String {
    let c = counts.copied().unwrap_or_default();
    format!(
        "{} total: {} awaiting registration, {} registered, {} onboarded, {} reonboard pending, \
         {} revoked; {} refusals",
        c.total,
        c.awaiting_registration,
        c.registered,
        c.onboarded,
        c.reonboard_pending,
        c.revoked,
        c.refusals
    )
}

/// One WatchBatch progress message on one line.
pub(crate) fn progress_line(progress: &BatchProgress) -> String {
    let mut line = joined(&[
        timestamp_text(progress.time.as_ref()),
        counts_text(progress.counts.as_ref()),
    ]);
    if progress.dropped_events > 0 {
        // Writing to a String cannot fail.
        let _ = write!(
            line,
            " ({} device events dropped: reading too slowly)",
            progress.dropped_events
        );
    }
    line
}

/// One WatchBatch device event on one line.
pub(crate) fn event_line(event: &DeviceEvent) -> String {
    let mut line = joined(&[
        timestamp_text(event.time.as_ref()),
        event.device_id.clone(),
        event_name(event.kind),
    ]);
    // Writing to a String cannot fail.
    if !event.serial.is_empty() {
        let _ = write!(line, "  serial {} slot {}", event.serial, event.key_slot);
    }
    if event.refusal_detail != 0 {
        let _ = write!(line, "  {}", refusal_detail_name(event.refusal_detail));
    }
    if !event.correlation_id.is_empty() {
        let _ = write!(line, "  ref {}", event.correlation_id);
    }
    line
}

/// The last line of a watch: why it ended and the last counts seen.
pub(crate) fn watch_ended(
    out: &mut Human<'_>,
    batch_id: &str,
    state: &str,
    counts: Option<&BatchCounts>,
) -> io::Result<()> {
    out.line(&format!(
        "batch {batch_id} {state}: {}",
        counts_text(counts)
    ))
}

/// The non-empty parts, two spaces apart (an unset timestamp leaves no gap).
fn joined(parts: &[String]) -> String {
    parts
        .iter()
        .filter(|part| !part.is_empty())
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("  ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::testing::{HOSTILE, assert_escaped, human, json_of};
    use oxroot_proto::v1::{
        DeviceEventKind, RefusalDetail, WatchBatchResponse, watch_batch_response::Event,
    };

    #[test]
    fn event_lines_have_no_gap_for_an_unset_time() {
        let event = DeviceEvent {
            device_id: "ab".into(),
            kind: DeviceEventKind::Refused as i32,
            refusal_detail: RefusalDetail::NonceReplayed as i32,
            correlation_id: "c-1".into(),
            ..DeviceEvent::default()
        };
        assert_eq!(event_line(&event), "ab  refused  nonce-replayed  ref c-1");
        let json = json_of(&WatchBatchResponse {
            event: Some(Event::Device(event)),
        });
        assert_eq!(
            json["device"]["refusal_detail"],
            "REFUSAL_DETAIL_NONCE_REPLAYED"
        );
        assert!(json.get("progress").is_none(), "{json}");
    }

    #[test]
    fn progress_lines_say_when_events_were_dropped() {
        let progress = BatchProgress {
            counts: Some(BatchCounts {
                total: 3,
                onboarded: 2,
                ..BatchCounts::default()
            }),
            time: None,
            dropped_events: 5,
        };
        assert_eq!(
            progress_line(&progress),
            "3 total: 0 awaiting registration, 0 registered, 2 onboarded, 0 reonboard pending, \
             0 revoked; 0 refusals (5 device events dropped: reading too slowly)"
        );
        let json = json_of(&WatchBatchResponse {
            event: Some(Event::Progress(progress)),
        });
        assert_eq!(json["progress"]["counts"]["onboarded"], "2");
        assert_eq!(json["progress"]["dropped_events"], "5");
    }

    #[test]
    fn a_hostile_batch_is_escaped_for_humans_and_exact_in_json() {
        let batch = Batch {
            batch_id: "bt-1".into(),
            name: HOSTILE.into(),
            description: HOSTILE.into(),
            policy_name: HOSTILE.into(),
            ..Batch::default()
        };
        assert_escaped(&human(|out| created(out, &batch, None)), 3);
        assert_escaped(&human(|out| out.fields(&fields(&batch))), 3);
        assert_escaped(
            &human(|out| out.table(&table(std::slice::from_ref(&batch)))),
            2,
        );
        let json = json_of(&batch);
        assert_eq!(json["name"], HOSTILE);
        assert_eq!(json["description"], HOSTILE);
    }

    #[test]
    fn a_hostile_event_is_escaped_for_humans_and_exact_in_json() {
        let event = DeviceEvent {
            device_id: HOSTILE.into(),
            serial: HOSTILE.into(),
            correlation_id: HOSTILE.into(),
            ..DeviceEvent::default()
        };
        assert_escaped(&human(|out| out.line(&event_line(&event))), 3);
        let json = json_of(&WatchBatchResponse {
            event: Some(Event::Device(event)),
        });
        assert_eq!(json["device"]["device_id"], HOSTILE);
        assert_eq!(json["device"]["correlation_id"], HOSTILE);
    }
}
