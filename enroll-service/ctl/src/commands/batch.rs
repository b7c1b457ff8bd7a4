//! `batch create | import | get | list | watch`.

use std::path::Path;

use oxroot_proto::v1::{
    CreateBatchRequest, GetBatchRequest, ImportChunk, ImportDevicesRequest, ImportHeader,
    ImportRejection, ImportReport, ListBatchesRequest, WatchBatchRequest,
    import_devices_request::Msg, import_record::Record, watch_batch_response::Event,
};
use serde_json::json;
use tokio_stream::StreamExt as _;

use super::{Ctx, PAGE_SIZE, all_pages, owner};
use crate::args::BatchCommand;
use crate::error::CtlError;
use crate::import::{ImportFormat, ParsedImport, parse_import};
use crate::output::json_line;
use crate::view::{self, ImportSummary, merge_rejections};

/// ImportDevices limits from the contract.
const RECORDS_PER_CHUNK: usize = 1_000;
const RECORDS_PER_CALL: usize = 100_000;
/// CreateBatch takes at most this many initial DeviceIds.
const CREATE_BATCH_MAX_IDS: usize = 10_000;

pub(super) async fn run(command: BatchCommand, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    match command {
        BatchCommand::Create {
            name,
            policy,
            owner: o,
            description,
            request_id,
            devices,
            format,
        } => {
            let request = CreateBatchRequest {
                owner: owner(o),
                name,
                policy_name: policy,
                description: description.unwrap_or_default(),
                device_ids: Vec::new(),
                request_id: request_id.unwrap_or_default(),
            };
            create(request, devices.as_deref(), format, ctx).await
        }
        BatchCommand::Import {
            batch_id,
            file,
            format,
        } => import(batch_id, &file, format, ctx).await,
        BatchCommand::Get { batch_id } => {
            let batch = ctx
                .client()
                .await?
                .get_batch(GetBatchRequest { batch_id })
                .await
                .map_err(CtlError::rpc("GetBatch"))?
                .into_inner()
                .batch
                .ok_or_else(|| CtlError::BadAnswer("GetBatch without a batch".into()))?;
            ctx.emit(&view::batch_json(&batch), |out| {
                view::batch_fields(&batch).write(out)
            })
        }
        BatchCommand::List { owner: o, policy } => {
            let mut client = ctx.client().await?;
            let request = ListBatchesRequest {
                owner: owner(o),
                policy_name: policy.unwrap_or_default(),
                page_size: PAGE_SIZE,
                page_token: String::new(),
            };
            let batches = all_pages("ListBatches", None, async |page_token| {
                let page = client
                    .list_batches(ListBatchesRequest {
                        page_token,
                        ..request.clone()
                    })
                    .await?
                    .into_inner();
                Ok((page.batches, page.next_page_token))
            })
            .await?;
            let json =
                json!({ "batches": batches.iter().map(view::batch_json).collect::<Vec<_>>() });
            ctx.emit(&json, |out| view::batch_table(&batches).write(out))
        }
        BatchCommand::Watch {
            batch_id,
            events,
            until_settled,
        } => watch(batch_id, events, until_settled, ctx).await,
        BatchCommand::Export(args) => super::export::artifacts(args, ctx).await,
    }
}

fn read_import(path: &Path, format: ImportFormat) -> Result<ParsedImport, CtlError> {
    let bytes = std::fs::read(path).map_err(CtlError::io(path))?;
    parse_import(&bytes, format).map_err(|source| CtlError::ImportFile {
        path: path.to_owned(),
        source,
    })
}

async fn create(
    mut request: CreateBatchRequest,
    devices: Option<&Path>,
    format: ImportFormat,
    ctx: &mut Ctx<'_>,
) -> Result<(), CtlError> {
    let mut summary = ImportSummary::default();
    let mut source_lines = Vec::new();
    let mut local = Vec::new();
    if let Some(path) = devices {
        let parsed = read_import(path, format)?;
        // CreateBatch carries bare ids only; refusing here keeps a batch from being created
        // without the devices the file meant to put in it.
        if let Some(record) = parsed
            .records
            .iter()
            .find(|r| matches!(r.record, Some(Record::Registration(_))))
        {
            return Err(CtlError::Usage(format!(
                "{}: line {} is an offline registration; create the batch without --devices, \
                 then use `enrollctl batch import`",
                path.display(),
                record.line
            )));
        }
        if parsed.records.len() > CREATE_BATCH_MAX_IDS {
            return Err(CtlError::Usage(format!(
                "{}: {} devices; batch create takes at most {CREATE_BATCH_MAX_IDS}, use \
                 `enrollctl batch import` for the rest",
                path.display(),
                parsed.records.len()
            )));
        }
        summary.format = parsed.format.as_str();
        for record in parsed.records {
            if let Some(Record::DeviceId(id)) = record.record {
                source_lines.push(record.line);
                request.device_ids.push(id);
            }
        }
        local = parsed.rejections;
    }
    let response = ctx
        .client()
        .await?
        .create_batch(request)
        .await
        .map_err(CtlError::rpc("CreateBatch"))?
        .into_inner();
    let batch = response
        .batch
        .ok_or_else(|| CtlError::BadAnswer("CreateBatch without a batch".into()))?;
    let mut report = response.report.unwrap_or_default();
    // The service numbers rejections by position in device_ids; the operator needs the line
    // of the file.
    for rejection in &mut report.rejections {
        let position = usize::try_from(rejection.line).unwrap_or(usize::MAX);
        if let Some(&line) = position.checked_sub(1).and_then(|i| source_lines.get(i)) {
            rejection.line = line;
        }
    }
    summary.batch_id.clone_from(&batch.batch_id);
    summary.counts.clone_from(&batch.counts);
    summary.rejected_locally = count(local.len());
    let service = add_report(&mut summary, report);
    summary.rejections = merge_rejections(&local, &service);
    let json = json!({ "batch": view::batch_json(&batch), "report": summary.to_json() });
    let has_devices = devices.is_some();
    ctx.emit(&json, |out| {
        writeln!(out, "created batch {}", batch.batch_id)?;
        view::batch_fields(&batch).write(out)?;
        if has_devices {
            summary.write(out)?;
        }
        Ok(())
    })?;
    rejected(&summary)
}

async fn import(
    batch_id: String,
    path: &Path,
    format: ImportFormat,
    ctx: &mut Ctx<'_>,
) -> Result<(), CtlError> {
    let parsed = read_import(path, format)?;
    let mut summary = ImportSummary {
        batch_id: batch_id.clone(),
        format: parsed.format.as_str(),
        rejected_locally: count(parsed.rejections.len()),
        ..ImportSummary::default()
    };
    let mut service = Vec::new();
    if !parsed.records.is_empty() {
        let mut client = ctx.client().await?;
        let bar = ctx.progress_bar(
            count(parsed.records.len()),
            "{spinner} importing [{bar:40}] {pos}/{len} records ({per_sec}, {eta} left)",
        );
        // The contract caps a call at 100,000 records; bigger files take several calls. A
        // device repeated across calls then counts as unchanged rather than duplicate.
        for call in chunks(parsed.records, RECORDS_PER_CALL) {
            let mut messages = vec![ImportDevicesRequest {
                msg: Some(Msg::Header(ImportHeader {
                    batch_id: batch_id.clone(),
                })),
            }];
            messages.extend(chunks(call, RECORDS_PER_CHUNK).into_iter().map(|records| {
                ImportDevicesRequest {
                    msg: Some(Msg::Chunk(ImportChunk { records })),
                }
            }));
            let bar_in_stream = bar.clone();
            // Counted when tonic takes a chunk off the stream to send it, which HTTP/2 flow
            // control paces to the service's consumption.
            let stream = tokio_stream::iter(messages).map(move |message| {
                if let Some(Msg::Chunk(chunk)) = &message.msg {
                    bar_in_stream.inc(count(chunk.records.len()));
                }
                message
            });
            let response = client.import_devices(stream).await.map_err(|status| {
                bar.abandon();
                CtlError::rpc("ImportDevices")(status)
            })?;
            let response = response.into_inner();
            summary.counts = response.counts;
            service.extend(add_report(
                &mut summary,
                response.report.unwrap_or_default(),
            ));
        }
        bar.finish_and_clear();
    }
    summary.rejections = merge_rejections(&parsed.rejections, &service);
    ctx.emit(&summary.to_json(), |out| summary.write(out))?;
    rejected(&summary)
}

/// Adds one service report's counts to the summary and hands back its rejections, which are
/// merged with the local ones once every call is done.
fn add_report(summary: &mut ImportSummary, report: ImportReport) -> Vec<ImportRejection> {
    summary.accepted += report.accepted;
    summary.unchanged += report.unchanged;
    summary.rejected_by_service += report.rejected;
    summary.truncated |= report.rejections_truncated;
    report.rejections
}

/// Rejected records make the command fail (exit 3) after the report is printed: a factory
/// script that only checks the exit status must not miss devices that did not get in.
fn rejected(summary: &ImportSummary) -> Result<(), CtlError> {
    match summary.rejected() {
        0 => Ok(()),
        n => Err(CtlError::Rejected(n)),
    }
}

async fn watch(
    batch_id: String,
    device_events: bool,
    until_settled: bool,
    ctx: &mut Ctx<'_>,
) -> Result<(), CtlError> {
    let mut stream = ctx
        .client()
        .await?
        .watch_batch(WatchBatchRequest {
            batch_id: batch_id.clone(),
            device_events,
            until_settled,
        })
        .await
        .map_err(CtlError::rpc("WatchBatch"))?
        .into_inner();
    let bar = ctx.progress_bar(0, "{spinner} [{bar:40}] {pos}/{len} settled  {msg}");
    let mut last = None;
    // One listener for the whole watch: a fresh ctrl_c() per message could miss a Ctrl-C
    // that arrives between two messages.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let interrupted = loop {
        let message = tokio::select! {
            message = stream.message() => message,
            _ = &mut ctrl_c => break true,
        };
        let message = match message {
            Ok(Some(message)) => message,
            Ok(None) => break false,
            Err(status) => {
                bar.abandon();
                return Err(CtlError::rpc("WatchBatch")(status));
            }
        };
        match message.event {
            Some(Event::Progress(progress)) => {
                if ctx.json {
                    json_line(ctx.out, &view::progress_json(&progress))?;
                } else if bar.is_hidden() {
                    writeln!(ctx.out, "{}", view::progress_line(&progress))?;
                    ctx.out.flush()?;
                } else {
                    let counts = progress.counts.unwrap_or_default();
                    bar.set_length(counts.total);
                    bar.set_position(counts.onboarded + counts.revoked);
                    bar.set_message(format!(
                        "{} awaiting registration, {} registered, {} reonboard pending, {} \
                         refusals",
                        counts.awaiting_registration,
                        counts.registered,
                        counts.reonboard_pending,
                        counts.refusals
                    ));
                }
                last = Some(progress);
            }
            Some(Event::Device(event)) => {
                if ctx.json {
                    json_line(ctx.out, &view::event_json(&event))?;
                } else {
                    let line = view::event_line(&event);
                    let out = &mut *ctx.out;
                    bar.suspend(|| writeln!(out, "{line}").and_then(|()| out.flush()))?;
                }
            }
            // A message kind newer than this client: skipped, as the contract asks.
            None => {}
        }
    };
    bar.finish_and_clear();
    if !ctx.json {
        let state = if interrupted {
            "stopped"
        } else if until_settled {
            "settled"
        } else {
            "stream ended"
        };
        let counts = last.as_ref().and_then(|p| p.counts.as_ref());
        writeln!(
            ctx.out,
            "batch {batch_id} {state}: {}",
            view::counts_text(counts)
        )?;
        ctx.out.flush()?;
    }
    Ok(())
}

/// Splits a vector into owned pieces of at most `size`, without cloning the records.
fn chunks<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut pieces = Vec::with_capacity(items.len().div_ceil(size));
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        pieces.push(items.by_ref().take(size).collect());
    }
    pieces
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_the_limit_and_keep_order() {
        let pieces = chunks((0..2_500).collect::<Vec<u32>>(), RECORDS_PER_CHUNK);
        assert_eq!(
            pieces.iter().map(Vec::len).collect::<Vec<_>>(),
            [1_000, 1_000, 500]
        );
        assert_eq!(pieces.concat(), (0..2_500).collect::<Vec<_>>());
        assert!(chunks(Vec::<u8>::new(), 10).is_empty());
        assert_eq!(chunks(vec![1], 10), [vec![1]]);
    }
}
