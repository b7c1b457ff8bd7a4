//! Per-device locks: an *optimisation*, not a guard.
//!
//! What keeps two writers of one device from both acting on the same old record is the
//! registry: every device write is compare-and-set on the version that was read
//! ([`crate::store::Op::PutDevice`]), and the loser gets
//! [`Conflict::DeviceChanged`](crate::store::Conflict), reads again and decides again. That holds
//! across replicas, which share nothing but the registry, and for a handler cancelled halfway.
//!
//! Within one replica the lock spares that work: two streams (or an import and a stream) of
//! the same device take turns instead of both reading, both signing and one of them doing it
//! again. A handler holds the lock from its read to its commit; if it is cancelled meanwhile,
//! the lock is released while its change may still commit, and the next holder's stale read
//! simply loses the version check.
//!
//! [`MAX_ATTEMPTS`] bounds the re-reads of a handler that keeps losing (another replica writing
//! the same device in a loop); past it the conflict reaches the client as UNAVAILABLE, which it
//! retries.

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::sync::Arc;

use rot_core::keys::DeviceId;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::error::ServiceError;
use crate::store::StoreError;

/// Most times a handler reads, decides and commits one device's change before it gives up on a
/// device that keeps changing under it.
pub(crate) const MAX_ATTEMPTS: u32 = 5;

/// A held device lock (owned, so that an import chunk can hold many).
pub(crate) type DeviceGuard = OwnedMutexGuard<()>;

/// Per-device locks, striped: a fixed set of mutexes indexed by a hash of the DeviceId, so
/// memory does not grow with the fleet.
#[derive(Debug)]
pub(crate) struct DeviceLocks {
    stripes: Vec<Arc<Mutex<()>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl DeviceLocks {
    pub(crate) fn new(stripes: usize) -> Self {
        Self {
            stripes: (0..stripes).map(|_| Arc::new(Mutex::new(()))).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The stripe guarding `device_id`: the one place that maps devices to stripes, so single
    /// and multi-device lockers always agree.
    fn stripe(&self, device_id: &DeviceId) -> usize {
        (self.hasher.hash_one(device_id) % self.stripes.len() as u64) as usize
    }

    pub(crate) async fn lock(&self, device_id: &DeviceId) -> DeviceGuard {
        self.stripes[self.stripe(device_id)]
            .clone()
            .lock_owned()
            .await
    }

    /// Locks several devices for one commit (an import chunk). Each stripe is taken once and in
    /// ascending order: two devices sharing a stripe cannot deadlock their own holder, and two
    /// multi-device holders cannot deadlock each other. The caller must hold no device lock.
    pub(crate) async fn lock_many<'a>(
        &self,
        device_ids: impl IntoIterator<Item = &'a DeviceId>,
    ) -> Vec<DeviceGuard> {
        let stripes: BTreeSet<usize> = device_ids.into_iter().map(|id| self.stripe(id)).collect();
        let mut guards = Vec::with_capacity(stripes.len());
        for index in stripes {
            guards.push(self.stripes[index].clone().lock_owned().await);
        }
        guards
    }
}

/// Runs `attempt` (read the device, decide, commit) again while its commit loses the device's
/// version check ([`StoreError::is_device_changed`]), at most [`MAX_ATTEMPTS`] times.
/// `attempt` returns the commit's outcome inside its own result: `Ok(Err(_))` is a commit the
/// store refused, `Err(_)` a failure before it.
///
/// # Errors
/// `attempt`'s, the store's refusals other than a changed device, and a device that kept
/// changing (UNAVAILABLE: the client retries).
pub(crate) async fn retry_device_changes<T, F>(
    mut attempt: impl FnMut() -> F,
) -> Result<T, ServiceError>
where
    F: Future<Output = Result<Result<T, StoreError>, ServiceError>>,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        match attempt().await? {
            Ok(value) => return Ok(value),
            Err(e) if e.is_device_changed() && attempts < MAX_ATTEMPTS => {}
            Err(e) => return Err(e.into()),
        }
    }
}
