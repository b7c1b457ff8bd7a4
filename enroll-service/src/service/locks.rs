//! Per-device locks: a write that concerns one device holds its lock from the read to the
//! durable commit, so two streams (or an import and a stream) of the same device cannot both
//! act on the same old record.

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::sync::Arc;

use rot_core::keys::DeviceId;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::store::{Change, Receipt, Registry, StoreError};

/// A held device lock. Owned (not borrowed from the lock table) so that it can outlive the
/// handler that took it: see [`commit_locked`].
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

/// Commits `change` and holds `guards` until it is durable, *even if the caller is cancelled*
/// (a client reset or deadline drops the handler's future): the wait runs in its own task.
/// Releasing a device lock while its change is queued but not applied would let another
/// handler read the old record and overwrite the change. The guards come back to the caller
/// (for a retry under the same locks) unless it was cancelled.
pub(crate) async fn commit_locked(
    registry: &dyn Registry,
    change: Change,
    guards: Vec<DeviceGuard>,
) -> (Result<Receipt, StoreError>, Vec<DeviceGuard>) {
    let pending = registry.submit(change);
    let waiter = tokio::spawn(async move {
        let outcome = pending.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the registry writer stopped".into(),
            ))
        });
        (outcome, guards)
    });
    waiter.await.unwrap_or_else(|e| {
        (
            Err(StoreError::Unavailable(format!("commit task failed: {e}"))),
            Vec::new(),
        )
    })
}
