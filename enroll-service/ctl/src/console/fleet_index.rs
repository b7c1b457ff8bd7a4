//! The device list behind the fleet overview and the device search.
//!
//! The contract has no per-state counts across batches, no search by prefix and no expiry
//! statistics, so the console reads every device (ListDevices, 1,000 per page) with the
//! policies and batches, and keeps a compact summary of each ([`DeviceSummary`]). Reading a
//! hundred thousand devices moves their certificates too and takes seconds (the console
//! benchmark measures it), far too long for every page load, so the list is read once at
//! start and then again in the background whenever a page finds it older than the refresh
//! interval: pages never wait for a refresh once a list is there, and say how old theirs is.
//! A revocation made in the console starts a refresh at once.
//!
//! ```text
//!  start ─▶ read ─▶ list v1 ─ page older than refresh? ─▶ read in the background ─▶ list v2
//!                      ▲ served to every page meanwhile (one read at a time)
//! ```
//!
//! The device page, the batch page's counts and an exact DeviceId search ask the service
//! directly, so what an operator acts on is never stale.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use oxroot_proto::v1::operator_client::OperatorClient;
use oxroot_proto::v1::{
    Device, DeviceState, ListBatchesRequest, ListDevicesRequest, ListPoliciesRequest,
};
use time::OffsetDateTime;
use tonic::transport::Channel;

use super::page::PageError;
use super::stats::{self, DeviceSummary, FleetStats, Validity};
use crate::commands::all_pages;

/// Devices per ListDevices call: the contract's largest page.
const PAGE_SIZE: u32 = 1_000;
/// The renew window of a policy that does not say (the contract's default, 30 days).
const DEFAULT_RENEW_WINDOW: i64 = 30 * 86_400;

/// One reading of the fleet.
#[derive(Debug)]
pub(crate) struct Fleet {
    /// When the reading started.
    pub(crate) taken_at: OffsetDateTime,
    /// How long it took.
    pub(crate) took: Duration,
    /// Every device the operator may see, ordered by DeviceId.
    pub(crate) devices: Vec<DeviceSummary>,
    /// (serial, index into `devices`), ordered by serial.
    serials: Vec<(String, usize)>,
    stats: OnceLock<FleetStats>,
}

impl Fleet {
    /// A fleet from its parts (sorted here).
    pub(crate) fn new(
        taken_at: OffsetDateTime,
        took: Duration,
        mut devices: Vec<DeviceSummary>,
    ) -> Self {
        devices.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        let mut serials: Vec<_> = devices
            .iter()
            .enumerate()
            .filter(|(_, d)| !d.serial.is_empty())
            .map(|(i, d)| (d.serial.clone(), i))
            .collect();
        serials.sort();
        Self {
            taken_at,
            took,
            devices,
            serials,
            stats: OnceLock::new(),
        }
    }

    /// The overview's figures, computed once per reading.
    pub(crate) fn stats(&self) -> &FleetStats {
        self.stats
            .get_or_init(|| stats::compute(&self.devices, self.taken_at.unix_timestamp()))
    }

    /// Devices whose DeviceId or current serial starts with `prefix` (lowercase hex), ordered
    /// by DeviceId, each once.
    pub(crate) fn search(&self, prefix: &str) -> Vec<&DeviceSummary> {
        let mut found: Vec<usize> = starting_with(&self.devices, prefix, |d| &d.device_id)
            .map(|(i, _)| i)
            .collect();
        found.extend(starting_with(&self.serials, prefix, |(s, _)| s).map(|(_, (_, i))| *i));
        found.sort_unstable();
        found.dedup();
        found.into_iter().map(|i| &self.devices[i]).collect()
    }
}

/// The items of a slice sorted by `key` whose key starts with `prefix`: a binary search to the
/// first, then a walk while they match.
fn starting_with<'a, T>(
    sorted: &'a [T],
    prefix: &'a str,
    key: impl Fn(&T) -> &str + 'a,
) -> impl Iterator<Item = (usize, &'a T)> + 'a {
    let first = sorted.partition_point(|item| key(item) < prefix);
    sorted[first..]
        .iter()
        .enumerate()
        .take_while(move |(_, item)| key(item).starts_with(prefix))
        .map(move |(i, item)| (first + i, item))
}

/// The latest reading, and the one background read at a time.
pub(crate) struct FleetIndex {
    client: OperatorClient<Channel>,
    refresh_after: Duration,
    current: Mutex<Option<Arc<Fleet>>>,
    /// Held while reading, so that at most one read runs.
    reading: tokio::sync::Mutex<()>,
    /// Set by [`FleetIndex::invalidate`]: the next page starts a refresh whatever the age.
    outdated: Mutex<bool>,
    /// Why the last read failed, until one succeeds.
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for FleetIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetIndex")
            .field("refresh_after", &self.refresh_after)
            .finish_non_exhaustive()
    }
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FleetIndex {
    pub(crate) fn new(client: OperatorClient<Channel>, refresh_after: Duration) -> Arc<Self> {
        Arc::new(Self {
            client,
            refresh_after,
            current: Mutex::new(None),
            reading: tokio::sync::Mutex::new(()),
            outdated: Mutex::new(false),
            last_error: Mutex::new(None),
        })
    }

    /// Starts the first read in the background.
    pub(crate) fn warm_up(self: &Arc<Self>) {
        self.refresh_in_background();
    }

    /// The latest reading. Only the very first waits for a read; later calls get the current
    /// one at once and start a background read if it is older than the refresh interval.
    ///
    /// # Errors
    /// The first read failed.
    pub(crate) async fn fleet(self: &Arc<Self>) -> Result<Arc<Fleet>, PageError> {
        if let Some(fleet) = self.latest() {
            let outdated = std::mem::take(&mut *locked(&self.outdated));
            let age = (OffsetDateTime::now_utc() - fleet.taken_at).unsigned_abs();
            if outdated || age > self.refresh_after {
                self.refresh_in_background();
            }
            return Ok(fleet);
        }
        let _reading = self.reading.lock().await;
        // Whoever held the lock may have read it meanwhile.
        if let Some(fleet) = self.latest() {
            return Ok(fleet);
        }
        self.read().await
    }

    /// Makes the next page start a refresh (after a change made through the console).
    pub(crate) fn invalidate(self: &Arc<Self>) {
        *locked(&self.outdated) = true;
        self.refresh_in_background();
    }

    /// How old a reading may get before a page starts a refresh.
    pub(crate) fn refresh_after(&self) -> Duration {
        self.refresh_after
    }

    /// Why the last read failed, if it did and none has succeeded since.
    pub(crate) fn last_error(&self) -> Option<String> {
        locked(&self.last_error).clone()
    }

    fn latest(&self) -> Option<Arc<Fleet>> {
        locked(&self.current).clone()
    }

    fn refresh_in_background(self: &Arc<Self>) {
        let index = Arc::clone(self);
        tokio::spawn(async move {
            // One read at a time; a page that finds one running does not start another.
            let Ok(_reading) = index.reading.try_lock() else {
                return;
            };
            *locked(&index.outdated) = false;
            let _ = index.read().await;
        });
    }

    /// Reads the fleet and makes it the latest; the caller holds `reading`.
    async fn read(&self) -> Result<Arc<Fleet>, PageError> {
        match read_fleet(self.client.clone()).await {
            Ok(fleet) => {
                let fleet = Arc::new(fleet);
                *locked(&self.current) = Some(fleet.clone());
                *locked(&self.last_error) = None;
                Ok(fleet)
            }
            Err(error) => {
                *locked(&self.last_error) = Some(error.to_string());
                Err(error.into())
            }
        }
    }
}

/// Reads every policy, batch and device the operator may see.
async fn read_fleet(client: OperatorClient<Channel>) -> Result<Fleet, crate::error::CtlError> {
    let started = Instant::now();
    let taken_at = OffsetDateTime::now_utc();
    let now = taken_at.unix_timestamp();

    let policies = all_pages("ListPolicies", None, |page_token| {
        let mut client = client.clone();
        async move {
            let page = client
                .list_policies(ListPoliciesRequest {
                    page_size: PAGE_SIZE,
                    page_token,
                    ..ListPoliciesRequest::default()
                })
                .await?
                .into_inner();
            Ok((page.policies, page.next_page_token))
        }
    })
    .await?;
    let renew_windows: HashMap<(String, String), i64> = policies
        .into_iter()
        .map(|p| {
            let window = p
                .renew_window
                .map_or(DEFAULT_RENEW_WINDOW, |d| d.seconds.max(0));
            ((p.owner, p.name), window)
        })
        .collect();

    let batches = all_pages("ListBatches", None, |page_token| {
        let mut client = client.clone();
        async move {
            let page = client
                .list_batches(ListBatchesRequest {
                    page_size: PAGE_SIZE,
                    page_token,
                    ..ListBatchesRequest::default()
                })
                .await?
                .into_inner();
            Ok((page.batches, page.next_page_token))
        }
    })
    .await?;
    let policy_of_batch: HashMap<String, String> = batches
        .iter()
        .map(|b| (b.batch_id.clone(), b.policy_name.clone()))
        .collect();

    // Each page is boiled down as it arrives: the full messages (certificates included) of a
    // large fleet would need far more memory than their summaries.
    let (policy_of_batch, renew_windows) = (&policy_of_batch, &renew_windows);
    let devices = all_pages("ListDevices", None, |page_token| {
        let mut client = client.clone();
        async move {
            let page = client
                .list_devices(ListDevicesRequest {
                    page_size: PAGE_SIZE,
                    page_token,
                    ..ListDevicesRequest::default()
                })
                .await?
                .into_inner();
            let summaries = page
                .devices
                .into_iter()
                .map(|device| summary(device, policy_of_batch, renew_windows, now))
                .collect::<Vec<_>>();
            Ok((summaries, page.next_page_token))
        }
    })
    .await?;
    Ok(Fleet::new(taken_at, started.elapsed(), devices))
}

/// A device's summary at `now`.
fn summary(
    device: Device,
    policy_of_batch: &HashMap<String, String>,
    renew_windows: &HashMap<(String, String), i64>,
    now: i64,
) -> DeviceSummary {
    let credential = device.current_credential.as_ref();
    let policy = policy_of_batch
        .get(&device.batch_id)
        .cloned()
        .or_else(|| credential.map(|c| c.policy_name.clone()))
        .unwrap_or_default();
    let validity = credential.and_then(|c| {
        let not_after = c.not_after.as_ref()?.seconds;
        let window = renew_windows
            .get(&(device.owner.clone(), c.policy_name.clone()))
            .copied()
            .unwrap_or(DEFAULT_RENEW_WINDOW);
        Some(Validity {
            not_after,
            // A zero window disables renewal reminders.
            renew_from: (window > 0).then(|| not_after - window),
        })
    });
    let state = DeviceState::try_from(device.state).unwrap_or_default();
    DeviceSummary {
        standing: stats::standing(state, validity, now),
        serial: credential.map(|c| c.serial.clone()).unwrap_or_default(),
        not_after: validity.map(|v| v.not_after),
        onboarded_at: device.onboarded_at.map(|t| t.seconds),
        refusals: device.refusals,
        device_id: device.device_id,
        owner: device.owner,
        batch_id: device.batch_id,
        policy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::stats::Standing;
    use oxroot_proto::v1::CredentialSummary;

    fn summary_of(id: &str, serial: &str) -> DeviceSummary {
        DeviceSummary {
            device_id: id.into(),
            owner: "acme".into(),
            batch_id: String::new(),
            policy: String::new(),
            standing: Standing::Onboarded,
            serial: serial.into(),
            not_after: None,
            onboarded_at: None,
            refusals: 0,
        }
    }

    #[test]
    fn search_finds_device_ids_and_serials_by_prefix_once_each() {
        let fleet = Fleet::new(
            OffsetDateTime::UNIX_EPOCH,
            Duration::ZERO,
            vec![
                summary_of("abc1", "ff01"),
                summary_of("ab00", "ab99"),
                summary_of("ffff", "a0"),
                summary_of("0abc", ""),
            ],
        );
        let ids = |prefix: &str| {
            fleet
                .search(prefix)
                .into_iter()
                .map(|d| d.device_id.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids("ab"),
            ["ab00", "abc1"],
            "ab00 matches twice, listed once"
        );
        assert_eq!(ids("ff0"), ["abc1"], "by serial");
        assert_eq!(ids("a"), ["ab00", "abc1", "ffff"]);
        assert_eq!(ids(""), ["0abc", "ab00", "abc1", "ffff"]);
        assert!(ids("z").is_empty());
    }

    #[test]
    fn summaries_take_the_batch_policy_and_its_renew_window() {
        let now = 1_000_000_000;
        let device = Device {
            device_id: "ab".repeat(32),
            owner: "acme".into(),
            batch_id: "b-1".into(),
            state: DeviceState::Onboarded as i32,
            current_credential: Some(CredentialSummary {
                serial: "0a".into(),
                policy_name: "old".into(),
                not_after: Some(prost_types::Timestamp {
                    seconds: now + 10 * 86_400,
                    nanos: 0,
                }),
                ..CredentialSummary::default()
            }),
            ..Device::default()
        };
        let batches = HashMap::from([("b-1".to_owned(), "new".to_owned())]);
        let mut windows = HashMap::new();
        let due = summary(device.clone(), &batches, &windows, now);
        assert_eq!(due.policy, "new");
        assert_eq!(due.standing, Standing::RenewalDue, "default 30-day window");
        assert_eq!(due.serial, "0a");
        windows.insert(("acme".to_owned(), "old".to_owned()), 0);
        let disabled = summary(device.clone(), &batches, &windows, now);
        assert_eq!(disabled.standing, Standing::Onboarded, "window disabled");
        windows.insert(("acme".to_owned(), "old".to_owned()), 86_400);
        let unassigned = Device {
            batch_id: String::new(),
            ..device
        };
        let outside = summary(unassigned, &batches, &windows, now);
        assert_eq!(outside.standing, Standing::Onboarded);
        assert_eq!(outside.policy, "old", "no batch: the certificate's policy");
    }
}
