//! `batch create | import | get | list | watch`.

use std::path::Path;

use oxroot_proto::v1::{
    CreateBatchRequest, GetBatchRequest, ImportChunk, ImportDevicesRequest, ImportDevicesResponse,
    ImportHeader, ListBatchesRequest, ListBatchesResponse, WatchBatchRequest,
    import_devices_request::Msg, import_record::Record, watch_batch_response::Event,
};
use tokio_stream::StreamExt as _;

use super::{Ctx, PAGE_SIZE, all_pages, owner};
use crate::args::BatchCommand;
use crate::error::CtlError;
use crate::import::{ImportFormat, ParsedImport, parse_import};
use crate::output::json::{self, json_line};
use crate::view::{
    self,
    import::{ImportSummary, local_rejection},
};

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
            let response = ctx
                .client()
                .await?
                .get_batch(GetBatchRequest { batch_id })
                .await
                .map_err(CtlError::rpc("GetBatch"))?
                .into_inner();
            let batch = response
                .batch
                .as_ref()
                .ok_or_else(|| CtlError::BadAnswer("GetBatch without a batch".into()))?;
            ctx.emit(
                || json::message(&response),
                |out| out.fields(&view::batch::fields(batch)),
            )
        }
        BatchCommand::List { owner: o, policy } => {
            let client = ctx.client().await?;
            let request = ListBatchesRequest {
                owner: owner(o),
                policy_name: policy.unwrap_or_default(),
                page_size: PAGE_SIZE,
                page_token: String::new(),
            };
            let batches = all_pages("ListBatches", None, |page_token| {
                let mut client = client.clone();
                let request = ListBatchesRequest {
                    page_token,
                    ..request.clone()
                };
                async move {
                    let page = client.list_batches(request).await?.into_inner();
                    Ok((page.batches, page.next_page_token))
                }
            })
            .await?;
            let all = ListBatchesResponse {
                batches,
                next_page_token: String::new(),
            };
            ctx.emit(
                || json::message(&all),
                |out| out.table(&view::batch::table(&all.batches)),
            )
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
        summary.local = parsed.rejections.iter().map(local_rejection).collect();
    }
    let mut response = ctx
        .client()
        .await?
        .create_batch(request)
        .await
        .map_err(CtlError::rpc("CreateBatch"))?
        .into_inner();
    // The service numbers rejections by position in device_ids; the operator needs the line
    // of the file (in the JSON too, as documented).
    if let Some(report) = &mut response.report {
        for rejection in &mut report.rejections {
            let position = usize::try_from(rejection.line).unwrap_or(usize::MAX);
            if let Some(&line) = position.checked_sub(1).and_then(|i| source_lines.get(i)) {
                rejection.line = line;
            }
        }
    }
    let batch = response
        .batch
        .as_ref()
        .ok_or_else(|| CtlError::BadAnswer("CreateBatch without a batch".into()))?;
    summary.batch_id.clone_from(&batch.batch_id);
    summary.counts.clone_from(&batch.counts);
    summary.add(response.report.clone().unwrap_or_default());
    ctx.emit(
        || {
            json::message_with(
                &response,
                [
                    ("format", summary.format.into()),
                    ("local_rejections", json::messages(&summary.local)?),
                ],
            )
        },
        |out| view::batch::created(out, batch, devices.is_some().then_some(&summary)),
    )?;
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
        local: parsed.rejections.iter().map(local_rejection).collect(),
        ..ImportSummary::default()
    };
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
            summary.add(response.report.unwrap_or_default());
        }
        bar.finish_and_clear();
    }
    // The calls' responses as one: the reports summed, the counts after the last.
    let all = ImportDevicesResponse {
        batch_id,
        report: Some(summary.report.clone()),
        counts: summary.counts,
    };
    ctx.emit(
        || {
            json::message_with(
                &all,
                [
                    ("format", summary.format.into()),
                    ("local_rejections", json::messages(&summary.local)?),
                ],
            )
        },
        |out| summary.write(out),
    )?;
    rejected(&summary)
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
        // A message kind newer than this client: skipped, as the contract asks.
        let Some(event) = &message.event else {
            continue;
        };
        if ctx.json {
            json_line(ctx.out, &json::message(&message)?)?;
            continue;
        }
        match event {
            Event::Progress(progress) => {
                if bar.is_hidden() {
                    let mut out = ctx.human();
                    out.line(&view::batch::progress_line(progress))?;
                    out.flush()?;
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
                last = Some(*progress);
            }
            Event::Device(device) => {
                let line = view::batch::event_line(device);
                let mut out = ctx.human();
                bar.suspend(|| out.line(&line).and_then(|()| out.flush()))?;
            }
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
        let mut out = ctx.human();
        view::batch::watch_ended(&mut out, &batch_id, state, counts)?;
        out.flush()?;
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
