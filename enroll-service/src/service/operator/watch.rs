//! WatchBatch: a batch's progress as a server stream.
//!
//! ```text
//!  subscribe to registry events ─▶ snapshot ─▶ first BatchProgress
//!  loop: CountsChanged(batch)  ─▶ mark dirty; progress at most every 250 ms
//!        Device(batch) event   ─▶ forwarded if asked for; dropped (and counted) if the client is behind
//!        broadcast lagged by n ─▶ n counted as dropped, counts re-read
//!        30 s without progress ─▶ heartbeat progress
//!        until_settled and settled after a progress ─▶ end (OK)
//! ```
//!
//! Progress is sent with back-pressure (it waits for the client); device events are sent only
//! if there is room, which is how a slow client loses events but never progress.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use oxroot_proto::v1;

use super::{ANY_ROLE, OperatorService};
use crate::error::ServiceError;
use crate::model::{BatchCounts, DeviceEvent};
use crate::service::{Caller, ServiceCore};
use crate::store::{RegistryEvent, StoreError, Subscription, SubscriptionError};
use crate::wire::timestamp;

/// The stream WatchBatch returns.
pub(crate) type WatchStream =
    Pin<Box<dyn Stream<Item = Result<v1::WatchBatchResponse, Status>> + Send>>;

/// Shortest interval between two progress messages caused by count changes.
const COALESCE: Duration = Duration::from_millis(250);
/// Longest interval without a progress message.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// How long a settled stream waits for further events before it ends...
const DRAIN_QUIET: Duration = Duration::from_millis(100);
/// ...and at most, however busy the registry is.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);
/// Messages buffered for the client; device events beyond this are dropped.
const OUTBOX: usize = 256;

/// One watcher task.
struct Watcher {
    core: Arc<ServiceCore>,
    /// The watched batch.
    batch_id: String,
    /// Whether the client asked for device events.
    device_events: bool,
    /// Whether the stream ends once the batch is settled.
    until_settled: bool,
    /// Registry events, subscribed before the snapshot was read.
    events: Subscription,
    /// Messages for the client.
    outbox: mpsc::Sender<Result<v1::WatchBatchResponse, Status>>,
    /// Device events lost since the last progress message.
    dropped: u64,
}

/// What woke the watcher.
enum Wake {
    /// The client cancelled the stream.
    ClientGone,
    /// A progress message (coalesced change or heartbeat) is due.
    Due,
    /// A registry event, or how many were missed.
    Event(Result<RegistryEvent, SubscriptionError>),
}

fn progress_message(counts: &BatchCounts, dropped: u64) -> v1::WatchBatchResponse {
    v1::WatchBatchResponse {
        event: Some(v1::watch_batch_response::Event::Progress(
            v1::BatchProgress {
                counts: Some(v1::BatchCounts::from(counts)),
                time: Some(timestamp(OffsetDateTime::now_utc())),
                dropped_events: dropped,
            },
        )),
    }
}

impl Watcher {
    async fn run(mut self) {
        let mut dirty = false;
        let mut last_progress = Instant::now();
        loop {
            let due = last_progress + if dirty { COALESCE } else { HEARTBEAT };
            let wake = tokio::select! {
                () = self.outbox.closed() => Wake::ClientGone,
                () = tokio::time::sleep_until(due) => Wake::Due,
                event = self.events.recv() => Wake::Event(event.map(|published| published.event)),
            };
            match wake {
                Wake::ClientGone => return,
                Wake::Due => {
                    match self.progress().await {
                        Some(true) if self.until_settled => {
                            self.drain().await;
                            return;
                        }
                        Some(_) => {}
                        None => return,
                    }
                    dirty = false;
                    last_progress = Instant::now();
                }
                Wake::Event(Ok(RegistryEvent::CountsChanged { batch_id }))
                    if batch_id == self.batch_id =>
                {
                    dirty = true;
                }
                Wake::Event(Ok(RegistryEvent::Device { batch_id, event }))
                    if self.device_events && batch_id == self.batch_id =>
                {
                    self.forward(&event);
                }
                Wake::Event(Ok(_)) => {}
                Wake::Event(Err(SubscriptionError::Missed(missed))) => {
                    // The missed events are gone, whichever batch they were for: count them
                    // all (an upper bound) and re-read the counts, which may have moved.
                    if self.device_events {
                        self.dropped += missed;
                    }
                    dirty = true;
                }
                Wake::Event(Err(SubscriptionError::Closed)) => {
                    let status = Status::unavailable("the registry stopped; reconnect");
                    let _ = self.outbox.send(Err(status)).await;
                    return;
                }
            }
        }
    }

    /// Before an until_settled stream ends: forwards the device events of the commit that
    /// settled the batch. Its counts are readable as soon as it is applied, but its events are
    /// published only once it is durable, so they may still be on their way.
    async fn drain(&mut self) {
        if !self.device_events {
            return;
        }
        let deadline = Instant::now() + DRAIN_LIMIT;
        while let Ok(Ok(event)) = tokio::time::timeout_at(
            deadline.min(Instant::now() + DRAIN_QUIET),
            self.events.recv(),
        )
        .await
        {
            if let RegistryEvent::Device { batch_id, event } = event.event
                && batch_id == self.batch_id
            {
                self.forward(&event);
            }
        }
    }

    /// Sends a device event if the client has room, else counts it as dropped.
    fn forward(&mut self, event: &DeviceEvent) {
        let message = v1::WatchBatchResponse {
            event: Some(v1::watch_batch_response::Event::Device(event.into())),
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = self.outbox.try_send(Ok(message)) {
            self.dropped += 1;
        }
    }

    /// Sends a progress message (waiting for the client); returns whether the batch is
    /// settled, or `None` if the stream is over.
    async fn progress(&mut self) -> Option<bool> {
        let counts = match self.core.registry.batch(&self.batch_id).await {
            Ok(Some(batch)) => batch.counts,
            Ok(None) => BatchCounts::default(),
            // The database is away (a restart, a failover): the stream stays open and the
            // next heartbeat reads again; no event is lost meanwhile, the registry's event
            // order resumes where it stopped.
            Err(StoreError::Unavailable(why)) => {
                tracing::warn!(batch_id = %self.batch_id, %why, "batch progress unavailable; retrying");
                return Some(false);
            }
            Err(e) => {
                let _ = self.outbox.send(Err(ServiceError::from(e).into())).await;
                return None;
            }
        };
        let message = progress_message(&counts, self.dropped);
        self.outbox.send(Ok(message)).await.ok()?;
        self.dropped = 0;
        Some(counts.settled())
    }
}

impl OperatorService {
    /// WatchBatch for an authenticated caller: checks access, sends the snapshot and starts
    /// the watcher task.
    pub(crate) async fn watch_batch_as(
        &self,
        caller: &Caller,
        request: &v1::WatchBatchRequest,
    ) -> Result<WatchStream, ServiceError> {
        caller.require("WatchBatch", ANY_ROLE)?;
        let batch_id = self
            .visible_batch(caller, "batch_id", &request.batch_id)
            .await?
            .batch_id;
        // Subscribe first: a change committed between the snapshot and the subscription would
        // otherwise never be reported.
        let events = self.core.registry.subscribe();
        let counts = self
            .core
            .registry
            .batch(&batch_id)
            .await?
            .map(|b| b.counts)
            .unwrap_or_default();
        let (outbox, inbox) = mpsc::channel(OUTBOX);
        // The channel is empty, so the snapshot always fits.
        let _ = outbox.try_send(Ok(progress_message(&counts, 0)));
        if !(request.until_settled && counts.settled()) {
            let watcher = Watcher {
                core: self.core.clone(),
                batch_id,
                device_events: request.device_events,
                until_settled: request.until_settled,
                events,
                outbox,
                dropped: 0,
            };
            tokio::spawn(watcher.run());
        }
        Ok(Box::pin(ReceiverStream::new(inbox)))
    }
}
