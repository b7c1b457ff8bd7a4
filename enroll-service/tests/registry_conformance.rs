//! Conformance of every [`Registry`] backend to the contract in `src/store.rs` ("The
//! contract"): one suite of checks, run against each backend.
//!
//! ```text
//!  check_xxx(&Opener) ──Store::open──▶ fresh, empty store of the backend
//!       │                                  ├─ registry(): commits, reads, subscriptions
//!       │                                  └─ reopen(): drop the registry, open the same data
//!  conformance!(sled, sled_opener())  ──▶ mod sled { #[tokio::test] one per check }
//!  conformance!(postgres, pg_opener()) (later: one more invocation)
//! ```
//!
//! A backend's opener is a `conformance::Opener`: `Box<dyn Fn() -> BoxFuture<Opened>>`, where
//! `Opened { registry, reopen, keep }` is a fresh, empty store, a way to open its data again
//! after the registry was dropped, and whatever keeps the data alive (dropped last).
//!
//! A check that finds a known, reported deviation of one backend is listed in that backend's
//! `known_deviations` with the text its failure must contain: the test then passes only while
//! the check fails that way, and fails once the deviation is gone (so the list stays true).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "conformance checks read top to bottom; a failed unwrap is a failed check"
)]

mod conformance;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use conformance::{
    Opener, Store, T0, action_subject, batch, batch_id, commit_ok, conflict_of, credential, crl,
    crl_entry, device, device_id, draft, events_until, next_event, operator_certificate, owner,
    policy, random_serial, revoked, serial, tag_event, verified_audit,
};
use enroll_service::audit::{AuditDraft, StoredAuditEntry};
use enroll_service::firmware::rollout::RolloutState;
use enroll_service::model::{
    BatchRecord, CountsDelta, CredentialRecord, CredentialStatus, CrlEntryRecord, CrlRecord,
    DeviceEvent, DeviceEventKind, DeviceRecord, DeviceState, FirmwareRecord, FirmwareSignerRecord,
    OperatorCertificateRecord, OwnerRecord, RolloutOutcomes, RolloutRecord, RolloutReportRecord,
};
use enroll_service::pki::{RevocationReason, Serial};
use enroll_service::policy::PolicySpec;
use enroll_service::store::{
    Change, Conflict, CrlNotice, DeviceFilter, Guard, Op, Published, Receipt, Registry,
    RegistryEvent, StoreError,
};
use rot_core::keys::DeviceId;
use time::OffsetDateTime;

/// One `#[tokio::test]` per check for a backend: `conformance!(name, opener_expression)`, or
/// with the backend's known deviations: `conformance!(name, opener, known_deviations: [check:
/// "text its failure contains", …])`.
macro_rules! conformance {
    ($backend:ident, $opener:expr $(,)?) => {
        conformance!($backend, $opener, known_deviations: []);
    };
    ($backend:ident, $opener:expr, known_deviations: [$($known:ident : $why:literal),* $(,)?] $(,)?) => {
        mod $backend {
            #[allow(clippy::wildcard_imports, reason = "the checks and the opener's names")]
            use super::*;

            const KNOWN_DEVIATIONS: &[conformance::KnownDeviation] =
                &[$((stringify!($known), $why)),*];

            fn opener() -> Opener {
                $opener
            }

            // Every listed deviation names a check.
            $(const _: () = { let _ = super::$known; };)*

            conformance!(@tests
                check_device_is_readable_after_commit,
                check_policy_is_readable_after_commit,
                check_batch_and_membership_are_readable_after_commit,
                check_credential_is_readable_after_commit,
                check_owner_is_readable_after_commit,
                check_operator_certificate_is_readable_after_commit,
                check_request_id_is_readable_after_commit,
                check_crl_and_revocations_are_readable_after_commit,
                check_scheduled_revocation_is_readable_after_commit,
                check_ops_apply_in_order,
                check_reads_never_see_part_of_a_change,
                check_reads_see_only_committed_changes,
                check_refused_change_leaves_no_trace,
                check_refused_changes_among_concurrent_commits_leave_no_trace,
                check_guard_policy_absent,
                check_guard_batch_absent,
                check_guard_owner_absent,
                check_guard_serial_absent,
                check_guard_request_id_absent,
                check_guard_operator_unrevoked,
                check_firmware_signer_and_images,
                check_firmware_listing,
                check_rollout_versions_and_listing,
                check_rollout_reports_count_once_and_compose,
                check_racing_inserts_admit_exactly_one,
                check_device_versions,
                check_device_second_writer_loses,
                check_concurrent_device_updates_lose_nothing,
                check_owner_versions,
                check_adjust_counts_of_absent_batch,
                check_concurrent_adjust_counts_compose,
                check_put_batch_keeps_counts,
                check_crl_numbers_increase_per_issuer,
                check_racing_crls_keep_the_highest,
                check_audit_chain_in_commit_order,
                check_concurrent_commits_form_one_chain,
                check_events_reach_every_subscriber_in_commit_order,
                check_events_follow_commit_order_under_concurrency,
                check_devices_listing,
                check_policies_listing,
                check_policies_ordered_by_owner_then_name,
                check_batches_listing,
                check_owners_listing,
                check_operator_certificates_listing,
                check_operator_certificates_ordered_by_serial_value,
                check_revocations_per_issuer,
                check_revocations_of_platform_and_an_owner_named_platform,
                check_credential_count_counts_distinct_serials,
                check_scheduled_revocations_due,
                check_limit_zero_returns_nothing,
                check_commits_survive_reopen,
                check_concurrent_commits_survive_reopen,
                check_two_thousand_concurrent_commits,
                check_commits_beyond_the_queue_bound,
            );
        }
    };
    (@tests $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let opener = opener();
                conformance::run(
                    stringify!($check),
                    KNOWN_DEVIATIONS,
                    Box::pin(async move { super::$check(&opener).await }),
                )
                .await;
            }
        )*
    };
}

conformance!(
    sled,
    conformance::sled_opener(),
    known_deviations: [
        // Keys are `p/<owner>/<name>`: `-` sorts before `/`, so owner `acme-2`'s policies come
        // before `acme`'s. Paging stays complete (the order is consistent), but it is not
        // (owner, name) order.
        check_policies_ordered_by_owner_then_name: "policies are listed in (owner, name) order",
        // Keys are `o/<serial as unpadded hex>`: serials of different lengths list in text
        // order (0x10 before 0x2). Latent: the service's operator serials are all 32 digits.
        check_operator_certificates_ordered_by_serial_value:
            "operator certificates are listed in serial order",
        // SLED BUG (reads of not yet durable state): the writer applies a group to the tree
        // (`apply_batch`) before its flush and `fdatasync`, and advances the audit head only
        // after them; the point reads (device, policy, batch, credential, …) read the tree, so
        // in between they show a change whose commit has not returned, whose audit entry
        // `audit()` does not show yet, and which a crash or a failed sync would lose.
        check_reads_see_only_committed_changes: "is not committed",
    ],
);

// ---------------------------------------------------------------------------------------------
// Helpers

/// A change of these ops.
fn change(ops: impl IntoIterator<Item = Op>) -> Change {
    Change {
        guards: Vec::new(),
        ops: ops.into_iter().collect(),
        events: Vec::new(),
    }
}

/// A record as written (version 0), to compare a read with what was committed.
fn unversioned_device(mut record: DeviceRecord) -> DeviceRecord {
    record.version = 0;
    record
}

fn unversioned_owner(mut record: OwnerRecord) -> OwnerRecord {
    record.version = 0;
    record
}

/// Device `n` of `acme`, READY in `batch`, with the ops that store it (version 0).
fn insert_device(n: u32, batch: &str) -> Vec<Op> {
    vec![
        Op::PutDevice(device(n, Some("acme"), Some(batch), DeviceState::Ready)),
        Op::AddToBatch {
            batch_id: batch.to_owned(),
            device_id: device_id(n),
        },
    ]
}

/// Every device matching `filter`, read page by page with `page` devices a page.
async fn all_devices(
    registry: &dyn Registry,
    filter: &DeviceFilter,
    page: usize,
) -> Vec<DeviceRecord> {
    let mut out: Vec<DeviceRecord> = Vec::new();
    loop {
        let after = out.last().map(|d| d.device_id);
        let next = registry
            .devices(filter, after.as_ref(), page)
            .await
            .unwrap();
        assert!(next.len() <= page, "a page holds at most `limit` devices");
        if next.is_empty() {
            return out;
        }
        out.extend(next);
    }
}

/// Spawns one commit per change, all at once; their outcomes in the order given.
async fn commit_all(store: &Store, changes: Vec<Change>) -> Vec<Result<Receipt, StoreError>> {
    let tasks: Vec<_> = changes
        .into_iter()
        .map(|change| {
            let registry = store.shared();
            tokio::spawn(async move { registry.commit(change).await })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.expect("commit task"));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// A committed change is readable after commit

async fn check_device_is_readable_after_commit(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    assert!(!r.failed(), "a fresh store serves");
    assert_eq!(r.device(&device_id(1)).await.unwrap(), None);
    let states = [
        DeviceState::AwaitingRegistration,
        DeviceState::Unassigned,
        DeviceState::Ready,
        DeviceState::Onboarded,
        DeviceState::ReonboardPending,
        DeviceState::Revoked,
    ];
    let records: Vec<DeviceRecord> = (1u32..)
        .zip(states)
        .map(|(n, state)| device(n, Some("acme"), Some(&batch_id(1)), state))
        .collect();
    commit_ok(r, change(records.iter().cloned().map(Op::PutDevice))).await;
    for record in &records {
        let read = r
            .device(&record.device_id)
            .await
            .unwrap()
            .expect("a committed device is readable");
        assert_eq!(read.version, 1, "an inserted device is stored at version 1");
        assert_eq!(read.state(), record.state());
        assert_eq!(&unversioned_device(read), record);
    }
    assert_eq!(r.device(&device_id(99)).await.unwrap(), None);
}

async fn check_policy_is_readable_after_commit(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    assert_eq!(r.policy("acme", "broker").await.unwrap(), None);
    let spec = policy("acme", "broker");
    commit_ok(r, change([Op::PutPolicy(Box::new(spec.clone()))])).await;
    assert_eq!(r.policy("acme", "broker").await.unwrap(), Some(spec));
    assert_eq!(r.policy("globex", "broker").await.unwrap(), None);
    assert_eq!(r.policy("acme", "broker-2").await.unwrap(), None);
}

async fn check_batch_and_membership_are_readable_after_commit(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let id = batch_id(1);
    assert_eq!(r.batch(&id).await.unwrap(), None);
    let record = batch(&id, "acme", 1);
    let mut c = change([Op::PutBatch(record.clone())]);
    c.ops.extend(insert_device(7, &id));
    c.op(Op::AdjustCounts {
        batch_id: id.clone(),
        delta: CountsDelta::joined(DeviceState::Ready),
    });
    commit_ok(r, c).await;
    let read = r
        .batch(&id)
        .await
        .unwrap()
        .expect("a committed batch is readable");
    let mut expected = record;
    expected
        .counts
        .apply(&CountsDelta::joined(DeviceState::Ready));
    assert_eq!(read, expected);
    let members = r
        .devices(
            &DeviceFilter {
                batch_id: Some(id.clone()),
                ..DeviceFilter::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        members.iter().map(|d| d.device_id).collect::<Vec<_>>(),
        vec![device_id(7)]
    );
    assert_eq!(r.batch(&batch_id(2)).await.unwrap(), None);
}

async fn check_credential_is_readable_after_commit(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let (s1, s2) = (random_serial(), random_serial());
    assert_eq!(r.credential(s1).await.unwrap(), None);
    assert_eq!(r.credential_count().await.unwrap(), 0);
    let active = credential(s1, device_id(1), &batch_id(1));
    let mut revoked = credential(s2, device_id(1), &batch_id(1));
    revoked.status = CredentialStatus::Revoked;
    revoked.revocation = Some(crl_entry(RevocationReason::Superseded));
    revoked.renew_after = None;
    commit_ok(
        r,
        change([
            Op::PutCredential(Box::new(active.clone())),
            Op::PutCredential(Box::new(revoked.clone())),
        ]),
    )
    .await;
    assert_eq!(r.credential(s1).await.unwrap(), Some(active));
    assert_eq!(r.credential(s2).await.unwrap(), Some(revoked));
    assert_eq!(r.credential_count().await.unwrap(), 2);
    assert_eq!(r.credential(serial(5)).await.unwrap(), None);
}

async fn check_owner_is_readable_after_commit(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    assert_eq!(r.owner("acme").await.unwrap(), None);
    let record = owner("acme");
    commit_ok(r, change([Op::PutOwner(Box::new(record.clone()))])).await;
    let read = r
        .owner("acme")
        .await
        .unwrap()
        .expect("a committed owner is readable");
    assert_eq!(read.version, 1, "an inserted owner is stored at version 1");
    assert_eq!(unversioned_owner(read), record);
    assert_eq!(r.owner("globex").await.unwrap(), None);
}

async fn check_operator_certificate_is_readable_after_commit(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let (s1, s2) = (random_serial(), random_serial());
    assert_eq!(r.operator_certificate(s1).await.unwrap(), None);
    let live = operator_certificate(s1, "acme", "alice");
    let gone = revoked(operator_certificate(s2, "*", "root"));
    commit_ok(
        r,
        change([
            Op::PutOperatorCertificate(Box::new(live.clone())),
            Op::PutOperatorCertificate(Box::new(gone.clone())),
        ]),
    )
    .await;
    assert_eq!(r.operator_certificate(s1).await.unwrap(), Some(live));
    assert_eq!(r.operator_certificate(s2).await.unwrap(), Some(gone));
    assert_eq!(r.operator_certificate(serial(3)).await.unwrap(), None);
}

async fn check_request_id_is_readable_after_commit(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    assert_eq!(r.request_id("acme", "rq-1").await.unwrap(), None);
    commit_ok(
        r,
        change([Op::PutRequestId {
            owner: "acme".into(),
            request_id: "rq-1".into(),
            batch_id: batch_id(1),
        }]),
    )
    .await;
    assert_eq!(
        r.request_id("acme", "rq-1").await.unwrap(),
        Some(batch_id(1))
    );
    assert_eq!(r.request_id("globex", "rq-1").await.unwrap(), None);
    assert_eq!(r.request_id("acme", "rq-2").await.unwrap(), None);
}

async fn check_crl_and_revocations_are_readable_after_commit(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    assert_eq!(r.crl("acme/1").await.unwrap(), None);
    assert_eq!(r.revoked("acme/1").await.unwrap(), Vec::new());
    assert_eq!(r.revoked_count("acme/1").await.unwrap(), 0);
    let (s1, s2) = (random_serial(), random_serial());
    let e1 = crl_entry(RevocationReason::KeyCompromise);
    let e2 = crl_entry(RevocationReason::CessationOfOperation);
    commit_ok(
        r,
        change([
            Op::Revoke {
                issuer: "acme/1".into(),
                serial: s1,
                entry: e1,
            },
            Op::Revoke {
                issuer: "acme/1".into(),
                serial: s2,
                entry: e2,
            },
            Op::PutCrl {
                issuer: "acme/1".into(),
                record: crl(1),
            },
        ]),
    )
    .await;
    assert_eq!(r.crl("acme/1").await.unwrap(), Some(crl(1)));
    assert_eq!(r.crl("acme/2").await.unwrap(), None);
    let mut listed = r.revoked("acme/1").await.unwrap();
    listed.sort_by_key(|(s, _)| *s);
    let mut expected = vec![(s1, e1), (s2, e2)];
    expected.sort_by_key(|(s, _)| *s);
    assert_eq!(listed, expected);
    assert_eq!(r.revoked_count("acme/1").await.unwrap(), 2);
}

async fn check_scheduled_revocation_is_readable_after_commit(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let s = random_serial();
    assert_eq!(r.scheduled_revocation(s).await.unwrap(), None);
    let due = T0 + time::Duration::hours(3);
    commit_ok(r, change([Op::ScheduleRevocation { serial: s, due }])).await;
    assert_eq!(r.scheduled_revocation(s).await.unwrap(), Some(due));
    assert_eq!(r.scheduled_revocation(random_serial()).await.unwrap(), None);
}

/// Ops apply in order, later ones seeing the earlier ones of the same change.
async fn check_ops_apply_in_order(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let (s1, s2, s3) = (random_serial(), random_serial(), random_serial());
    commit_ok(
        r,
        change([
            Op::ScheduleRevocation {
                serial: s1,
                due: T0,
            },
            Op::CancelScheduledRevocation(s1),
            Op::CancelScheduledRevocation(s2),
            Op::ScheduleRevocation {
                serial: s2,
                due: T0,
            },
        ]),
    )
    .await;
    assert_eq!(r.scheduled_revocation(s1).await.unwrap(), None);
    assert_eq!(r.scheduled_revocation(s2).await.unwrap(), Some(T0));

    // The second write of a credential replaces the first; it is one credential.
    let first = credential(s3, device_id(1), &batch_id(1));
    let mut second = first.clone();
    second.status = CredentialStatus::Superseded;
    commit_ok(
        r,
        change([
            Op::PutCredential(Box::new(first)),
            Op::PutCredential(Box::new(second.clone())),
        ]),
    )
    .await;
    assert_eq!(r.credential(s3).await.unwrap(), Some(second));
    assert_eq!(r.credential_count().await.unwrap(), 1);

    // A CRL after a higher one of the same change is refused: it sees the first.
    commit_ok(
        r,
        change([
            Op::PutCrl {
                issuer: "acme/1".into(),
                record: crl(1),
            },
            Op::PutCrl {
                issuer: "acme/1".into(),
                record: crl(2),
            },
        ]),
    )
    .await;
    assert_eq!(r.crl("acme/1").await.unwrap(), Some(crl(2)));
    let refused = r
        .commit(change([
            Op::PutCrl {
                issuer: "acme/2".into(),
                record: crl(7),
            },
            Op::PutCrl {
                issuer: "acme/2".into(),
                record: crl(6),
            },
        ]))
        .await;
    assert_eq!(
        conflict_of(refused),
        Conflict::CrlNumberTaken {
            issuer: "acme/2".into(),
            number: 6,
            stored: 7
        }
    );
    assert_eq!(r.crl("acme/2").await.unwrap(), None);

    // A batch made earlier in the change can have its counts adjusted later in it.
    let id = batch_id(3);
    commit_ok(
        r,
        change([
            Op::PutBatch(batch(&id, "acme", 3)),
            Op::AdjustCounts {
                batch_id: id.clone(),
                delta: CountsDelta::joined(DeviceState::AwaitingRegistration),
            },
        ]),
    )
    .await;
    assert_eq!(r.batch(&id).await.unwrap().unwrap().counts.total, 1);
}

/// Reads see committed changes whole: while pairs of devices are committed (one change a
/// pair), a reader that finds a pair's second device finds its first; the audit log never
/// shows entries past the head it reports next; a writer reads its own commit at once.
async fn check_reads_never_see_part_of_a_change(open: &Opener) {
    const PAIRS: u32 = 150;
    let store = Store::open(open).await;
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let registry = store.shared();
        let done = done.clone();
        tokio::spawn(async move {
            let mut rounds = 0u32;
            while !done.load(Ordering::Acquire) || rounds == 0 {
                for i in (0..PAIRS).rev() {
                    let second = registry.device(&device_id(2 * i + 1)).await.unwrap();
                    let first = registry.device(&device_id(2 * i)).await.unwrap();
                    assert!(
                        second.is_none() || first.is_some(),
                        "pair {i}: the second device is visible without the first"
                    );
                }
                let entries = registry.audit(1, usize::MAX).await.unwrap();
                let head = registry.audit_head().await.unwrap();
                assert!(
                    entries.len() as u64 <= head,
                    "audit() returned entries past the head"
                );
                for (k, (seq, _)) in entries.iter().enumerate() {
                    assert_eq!(*seq, k as u64 + 1, "audit() has no gaps");
                }
                rounds += 1;
                tokio::task::yield_now().await;
            }
            rounds
        })
    };
    let r = store.registry();
    for i in 0..PAIRS {
        let mut c = change([
            Op::PutDevice(device(2 * i, Some("acme"), None, DeviceState::Unassigned)),
            Op::PutDevice(device(
                2 * i + 1,
                Some("acme"),
                None,
                DeviceState::Unassigned,
            )),
        ]);
        c.audit(draft("device.pair", &format!("pair:{i}")));
        let receipt = commit_ok(r, c).await;
        assert!(r.device(&device_id(2 * i)).await.unwrap().is_some());
        assert!(r.device(&device_id(2 * i + 1)).await.unwrap().is_some());
        assert!(r.audit_head().await.unwrap() >= receipt.audit_seqs[0]);
    }
    done.store(true, Ordering::Release);
    let rounds = reader.await.expect("reader");
    assert!(rounds > 0);
}

/// Reads show a change only once it is committed, audit entries included: while changes of
/// one device and one audit entry each are committed one after another (change `i` seals entry
/// `i + 1`), a reader that finds change `i`'s device finds an audit head of at least `i + 1`.
async fn check_reads_see_only_committed_changes(open: &Opener) {
    const CHANGES: u32 = 400;
    let store = Store::open(open).await;
    let done = Arc::new(AtomicBool::new(false));
    let committing = Arc::new(AtomicU32::new(0));
    let reader = {
        let registry = store.shared();
        let (done, committing) = (done.clone(), committing.clone());
        tokio::spawn(async move {
            let mut seen = 0u32;
            while !done.load(Ordering::Acquire) {
                let current = committing.load(Ordering::Acquire);
                // The change before was answered Ok before `current` was stored: readable.
                if let Some(previous) = current.checked_sub(1) {
                    assert!(
                        registry
                            .device(&device_id(previous))
                            .await
                            .unwrap()
                            .is_some(),
                        "change {previous} is not readable after its commit"
                    );
                    seen += 1;
                }
                // The change being committed: all of it, or none of it.
                if registry
                    .device(&device_id(current))
                    .await
                    .unwrap()
                    .is_some()
                {
                    let head = registry.audit_head().await.unwrap();
                    assert!(
                        head > u64::from(current),
                        "change {current}'s device is visible while the audit head is {head}: \
                         a read saw a change whose audit entry {} is not committed",
                        current + 1
                    );
                    let entries = registry.audit(u64::from(current) + 1, 1).await.unwrap();
                    assert_eq!(
                        entries.len(),
                        1,
                        "change {current}'s device is visible without its audit entry"
                    );
                }
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    let r = store.registry();
    for i in 0..CHANGES {
        committing.store(i, Ordering::Release);
        let mut c = change([Op::PutDevice(device(
            i,
            Some("acme"),
            None,
            DeviceState::Unassigned,
        ))]);
        c.audit(draft("device.put", &format!("device:{i}")));
        let receipt = commit_ok(r, c).await;
        assert_eq!(receipt.audit_seqs, vec![u64::from(i) + 1]);
    }
    done.store(true, Ordering::Release);
    let seen = reader.await.expect("reader");
    assert!(seen > 0, "the reader saw committed devices");
}

// ---------------------------------------------------------------------------------------------
// Atomicity

/// What `check_refused_change_leaves_no_trace` sets up, and the change it then refuses in
/// every way a change can be refused.
struct Refusals {
    taken_batch: String,
    new_batch: String,
    taken_serial: Serial,
    new_serial: Serial,
    revoked_operator: Serial,
    new_operator: Serial,
}

impl Refusals {
    /// A change that touches everything; valid on the set-up store.
    fn full(&self, tag: &str) -> Change {
        let dev = device_id(1);
        let mut updated = device(
            901,
            Some("acme"),
            Some(&self.taken_batch),
            DeviceState::Ready,
        );
        updated.refusals = 3;
        updated.version = 1;
        let mut c = Change::new();
        c.guard(Guard::PolicyAbsent {
            owner: "acme".into(),
            name: "new-policy".into(),
        })
        .guard(Guard::BatchAbsent(self.new_batch.clone()))
        .guard(Guard::OwnerAbsent("new-owner".into()))
        .guard(Guard::SerialAbsent(self.new_serial))
        .guard(Guard::RequestIdAbsent {
            owner: "acme".into(),
            request_id: "rq-new".into(),
        });
        c.op(Op::PutDevice(device(
            1,
            Some("acme"),
            Some(&self.new_batch),
            DeviceState::Ready,
        )))
        .op(Op::PutPolicy(Box::new(policy("acme", "new-policy"))))
        .op(Op::PutBatch(batch(&self.new_batch, "acme", 2)))
        .op(Op::AddToBatch {
            batch_id: self.new_batch.clone(),
            device_id: dev,
        })
        .op(Op::PutCredential(Box::new(credential(
            self.new_serial,
            dev,
            &self.new_batch,
        ))))
        .op(Op::PutOperatorCertificate(Box::new(operator_certificate(
            self.new_operator,
            "acme",
            "bob",
        ))))
        .op(Op::Revoke {
            issuer: "acme/1".into(),
            serial: self.new_serial,
            entry: crl_entry(RevocationReason::KeyCompromise),
        })
        .op(Op::PutOwner(Box::new(owner("new-owner"))))
        .op(Op::ScheduleRevocation {
            serial: self.new_serial,
            due: T0,
        })
        .op(Op::PutCrl {
            issuer: "acme/1".into(),
            record: crl(1),
        })
        .op(Op::PutRequestId {
            owner: "acme".into(),
            request_id: "rq-new".into(),
            batch_id: self.new_batch.clone(),
        })
        .op(Op::AdjustCounts {
            batch_id: self.taken_batch.clone(),
            delta: CountsDelta::joined(DeviceState::Ready),
        })
        .op(Op::AdjustCounts {
            batch_id: self.new_batch.clone(),
            delta: CountsDelta::joined(DeviceState::Ready),
        })
        .op(Op::PutDevice(updated))
        .audit(draft("full.one", tag))
        .audit(draft("full.two", tag))
        .event(tag_event(tag))
        .event(RegistryEvent::Device {
            batch_id: self.new_batch.clone(),
            event: DeviceEvent::new(dev, DeviceEventKind::Added, T0, tag),
        });
        c
    }
}

async fn check_refused_change_leaves_no_trace(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let setup = Refusals {
        taken_batch: batch_id(1),
        new_batch: batch_id(2),
        taken_serial: random_serial(),
        new_serial: random_serial(),
        revoked_operator: random_serial(),
        new_operator: random_serial(),
    };
    let mut c = change([
        Op::PutPolicy(Box::new(policy("acme", "taken"))),
        Op::PutBatch(batch(&setup.taken_batch, "acme", 1)),
        Op::PutOwner(Box::new(owner("taken-owner"))),
        Op::PutCredential(Box::new(credential(
            setup.taken_serial,
            device_id(900),
            &setup.taken_batch,
        ))),
        Op::PutRequestId {
            owner: "acme".into(),
            request_id: "rq-taken".into(),
            batch_id: setup.taken_batch.clone(),
        },
        Op::PutOperatorCertificate(Box::new(revoked(operator_certificate(
            setup.revoked_operator,
            "acme",
            "carol",
        )))),
        Op::PutCrl {
            issuer: "acme/9".into(),
            record: crl(5),
        },
    ]);
    c.ops.extend(insert_device(901, &setup.taken_batch));
    c.audit(draft("setup", "store"));
    commit_ok(r, c).await;

    let head = r.audit_head().await.unwrap();
    let count = r.credential_count().await.unwrap();
    let counts = r.batch(&setup.taken_batch).await.unwrap().unwrap().counts;
    let device_901 = r.device(&device_id(901)).await.unwrap().unwrap();
    let mut subscription = r.subscribe();

    let with_guard = |guard: Guard| {
        let mut c = setup.full("refused");
        c.guard(guard);
        c
    };
    let with_op = |op: Op| {
        let mut c = setup.full("refused");
        c.op(op);
        c
    };
    let refusals: Vec<(&str, Change, StoreError)> = vec![
        (
            "PolicyAbsent",
            with_guard(Guard::PolicyAbsent {
                owner: "acme".into(),
                name: "taken".into(),
            }),
            Conflict::PolicyExists {
                owner: "acme".into(),
                name: "taken".into(),
            }
            .into(),
        ),
        (
            "BatchAbsent",
            with_guard(Guard::BatchAbsent(setup.taken_batch.clone())),
            Conflict::BatchExists(setup.taken_batch.clone()).into(),
        ),
        (
            "OwnerAbsent",
            with_guard(Guard::OwnerAbsent("taken-owner".into())),
            Conflict::OwnerExists("taken-owner".into()).into(),
        ),
        (
            "SerialAbsent",
            with_guard(Guard::SerialAbsent(setup.taken_serial)),
            Conflict::SerialTaken(setup.taken_serial).into(),
        ),
        (
            "RequestIdAbsent",
            with_guard(Guard::RequestIdAbsent {
                owner: "acme".into(),
                request_id: "rq-taken".into(),
            }),
            Conflict::RequestIdUsed {
                owner: "acme".into(),
                request_id: "rq-taken".into(),
            }
            .into(),
        ),
        (
            "OperatorUnrevoked",
            with_guard(Guard::OperatorUnrevoked(setup.revoked_operator)),
            Conflict::OperatorRevoked(setup.revoked_operator).into(),
        ),
        (
            "AdjustCounts of an absent batch",
            with_op(Op::AdjustCounts {
                batch_id: "missing".into(),
                delta: CountsDelta::refusal(),
            }),
            Conflict::BatchAbsent("missing".into()).into(),
        ),
        (
            "stale PutDevice",
            with_op(Op::PutDevice({
                let mut d = device(902, None, None, DeviceState::Unassigned);
                d.version = 3;
                d
            })),
            Conflict::DeviceChanged {
                device_id: device_id(902),
                expected: 3,
                found: 0,
            }
            .into(),
        ),
        (
            "stale PutOwner",
            with_op(Op::PutOwner(Box::new(owner("taken-owner")))),
            Conflict::OwnerChanged {
                name: "taken-owner".into(),
                expected: 0,
                found: 1,
            }
            .into(),
        ),
        (
            "PutCrl with a taken number",
            with_op(Op::PutCrl {
                issuer: "acme/9".into(),
                record: crl(5),
            }),
            Conflict::CrlNumberTaken {
                issuer: "acme/9".into(),
                number: 5,
                stored: 5,
            }
            .into(),
        ),
    ];
    for (what, change, expected) in refusals {
        let outcome = r.commit(change).await;
        assert_eq!(outcome, Err(expected), "{what}");
    }
    // An audit entry with no canonical form (an offset with seconds has no RFC 3339 form).
    let mut unrecordable = draft("full.bad", "refused");
    unrecordable.time = T0.to_offset(time::UtcOffset::from_hms(1, 0, 30).unwrap());
    let outcome = r.commit(with_op(Op::Audit(unrecordable))).await;
    assert!(
        matches!(outcome, Err(StoreError::Unrecordable(_))),
        "an unrecordable audit entry refuses the change: {outcome:?}"
    );

    // Nothing of any refused change is visible.
    assert_eq!(r.device(&device_id(1)).await.unwrap(), None);
    assert_eq!(r.device(&device_id(902)).await.unwrap(), None);
    assert_eq!(r.device(&device_id(901)).await.unwrap(), Some(device_901));
    assert_eq!(r.policy("acme", "new-policy").await.unwrap(), None);
    assert_eq!(r.batch(&setup.new_batch).await.unwrap(), None);
    let members = DeviceFilter {
        batch_id: Some(setup.new_batch.clone()),
        ..DeviceFilter::default()
    };
    assert_eq!(r.devices(&members, None, 10).await.unwrap(), Vec::new());
    assert_eq!(r.credential(setup.new_serial).await.unwrap(), None);
    assert_eq!(r.credential_count().await.unwrap(), count);
    assert_eq!(
        r.operator_certificate(setup.new_operator).await.unwrap(),
        None
    );
    assert_eq!(r.revoked("acme/1").await.unwrap(), Vec::new());
    assert_eq!(r.revoked_count("acme/1").await.unwrap(), 0);
    assert_eq!(r.owner("new-owner").await.unwrap(), None);
    assert_eq!(r.owner("taken-owner").await.unwrap().unwrap().version, 1);
    assert_eq!(
        r.scheduled_revocation(setup.new_serial).await.unwrap(),
        None
    );
    assert_eq!(r.crl("acme/1").await.unwrap(), None);
    assert_eq!(r.crl("acme/9").await.unwrap(), Some(crl(5)));
    assert_eq!(r.request_id("acme", "rq-new").await.unwrap(), None);
    assert_eq!(
        r.batch(&setup.taken_batch).await.unwrap().unwrap().counts,
        counts
    );
    assert_eq!(
        r.audit_head().await.unwrap(),
        head,
        "no audit entry was sealed"
    );
    assert_eq!(r.audit(1, usize::MAX).await.unwrap().len() as u64, head);

    // The same change without the failing part commits, right after the head: the refused
    // ones took no sequence numbers. Its events are the first the subscriber hears.
    let receipt = commit_ok(r, setup.full("accepted")).await;
    assert_eq!(receipt.audit_seqs, vec![head + 1, head + 2]);
    verified_audit(r).await;
    assert_eq!(
        next_event(&mut subscription).await.event,
        tag_event("accepted")
    );
    assert!(r.device(&device_id(1)).await.unwrap().is_some());
    assert_eq!(r.credential_count().await.unwrap(), count + 1);
}

/// Refused and accepted changes committed at once: the accepted ones are all there, in one
/// gapless chain; nothing of the refused ones is, not even an event.
async fn check_refused_changes_among_concurrent_commits_leave_no_trace(open: &Opener) {
    const TASKS: u32 = 200;
    let store = Store::open(open).await;
    let r = store.registry();
    let taken = random_serial();
    commit_ok(
        r,
        change([Op::PutCredential(Box::new(credential(
            taken,
            device_id(100_000),
            &batch_id(1),
        )))]),
    )
    .await;
    let mut subscription = r.subscribe();
    let serials: Vec<Serial> = (0..TASKS).map(|_| random_serial()).collect();
    let changes = (0..TASKS)
        .map(|i| {
            let mut c = change([
                Op::PutDevice(device(i, Some("acme"), None, DeviceState::Unassigned)),
                Op::PutCredential(Box::new(credential(
                    serials[i as usize],
                    device_id(i),
                    &batch_id(1),
                ))),
            ]);
            c.guard(Guard::SerialAbsent(serials[i as usize]));
            if i % 2 == 1 {
                c.guard(Guard::SerialAbsent(taken));
            }
            c.audit(draft("device.put", &format!("t{i}")))
                .event(tag_event(&format!("t{i}")));
            c
        })
        .collect();
    let outcomes = commit_all(&store, changes).await;
    for (i, outcome) in (0u32..).zip(outcomes) {
        if i % 2 == 1 {
            assert_eq!(
                outcome,
                Err(Conflict::SerialTaken(taken).into()),
                "task {i}"
            );
        } else {
            assert_eq!(outcome.expect("accepted").audit_seqs.len(), 1, "task {i}");
        }
    }
    commit_ok(r, {
        let mut c = Change::new();
        c.event(tag_event("marker"));
        c
    })
    .await;
    for i in 0..TASKS {
        let present = r.device(&device_id(i)).await.unwrap().is_some();
        assert_eq!(present, i % 2 == 0, "device {i}");
        let credential = r.credential(serials[i as usize]).await.unwrap();
        assert_eq!(credential.is_some(), i % 2 == 0, "credential {i}");
    }
    assert_eq!(
        r.credential_count().await.unwrap(),
        1 + u64::from(TASKS / 2)
    );
    let entries = verified_audit(r).await;
    assert_eq!(entries.len() as u32, TASKS / 2);
    let audited: BTreeSet<String> = entries.iter().map(|(_, e)| action_subject(e).1).collect();
    let expected: BTreeSet<String> = (0..TASKS).step_by(2).map(|i| format!("t{i}")).collect();
    assert_eq!(audited, expected);
    let events = events_until(&mut subscription, &tag_event("marker")).await;
    let heard: Vec<RegistryEvent> = events[..events.len() - 1]
        .iter()
        .map(|p| p.event.clone())
        .collect();
    assert_eq!(
        heard.len() as u32,
        TASKS / 2,
        "one event per accepted change"
    );
    for event in heard {
        let RegistryEvent::CountsChanged { batch_id: tag } = event else {
            panic!("unexpected event {event:?}");
        };
        assert!(expected.contains(&tag), "event {tag} of a refused change");
    }
}

// ---------------------------------------------------------------------------------------------
// Guards

async fn check_guard_policy_absent(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let put = |owner: &str, name: &str, description: &str| {
        let mut spec = policy(owner, name);
        description.clone_into(&mut spec.description);
        let mut c = change([Op::PutPolicy(Box::new(spec))]);
        c.guard(Guard::PolicyAbsent {
            owner: owner.into(),
            name: name.into(),
        });
        c
    };
    commit_ok(r, put("acme", "broker", "first")).await;
    assert_eq!(
        conflict_of(r.commit(put("acme", "broker", "second")).await),
        Conflict::PolicyExists {
            owner: "acme".into(),
            name: "broker".into()
        }
    );
    assert_eq!(
        r.policy("acme", "broker")
            .await
            .unwrap()
            .unwrap()
            .description,
        "first"
    );
    // The guard names one owner's one policy.
    commit_ok(r, put("globex", "broker", "globex's")).await;
    commit_ok(r, put("acme", "broker-2", "another")).await;
}

async fn check_guard_batch_absent(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let put = |id: &str, name: &str| {
        let mut record = batch(id, "acme", 1);
        name.clone_into(&mut record.name);
        let mut c = change([Op::PutBatch(record)]);
        c.guard(Guard::BatchAbsent(id.to_owned()));
        c
    };
    commit_ok(r, put(&batch_id(1), "first")).await;
    assert_eq!(
        conflict_of(r.commit(put(&batch_id(1), "second")).await),
        Conflict::BatchExists(batch_id(1))
    );
    assert_eq!(r.batch(&batch_id(1)).await.unwrap().unwrap().name, "first");
    commit_ok(r, put(&batch_id(2), "other")).await;
}

async fn check_guard_owner_absent(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let put = |name: &str, created_by: &str| {
        let mut record = owner(name);
        created_by.clone_into(&mut record.created_by);
        let mut c = change([Op::PutOwner(Box::new(record))]);
        c.guard(Guard::OwnerAbsent(name.to_owned()));
        c
    };
    commit_ok(r, put("acme", "first")).await;
    // The guard answers before the version does: the caller hears that the owner exists.
    assert_eq!(
        conflict_of(r.commit(put("acme", "second")).await),
        Conflict::OwnerExists("acme".into())
    );
    let stored = r.owner("acme").await.unwrap().unwrap();
    assert_eq!((stored.created_by.as_str(), stored.version), ("first", 1));
    commit_ok(r, put("globex", "other")).await;
}

async fn check_guard_serial_absent(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let s = random_serial();
    let put = |s: Serial, cn: &str| {
        let mut record = credential(s, device_id(1), &batch_id(1));
        cn.clone_into(&mut record.subject_cn);
        let mut c = change([Op::PutCredential(Box::new(record))]);
        c.guard(Guard::SerialAbsent(s));
        c
    };
    commit_ok(r, put(s, "first")).await;
    assert_eq!(
        conflict_of(r.commit(put(s, "second")).await),
        Conflict::SerialTaken(s)
    );
    assert_eq!(r.credential(s).await.unwrap().unwrap().subject_cn, "first");
    assert_eq!(r.credential_count().await.unwrap(), 1);
    // A serial stays taken once its credential was rewritten (superseded, revoked).
    let mut superseded = r.credential(s).await.unwrap().unwrap();
    superseded.status = CredentialStatus::Superseded;
    commit_ok(r, change([Op::PutCredential(Box::new(superseded))])).await;
    assert_eq!(
        conflict_of(r.commit(put(s, "third")).await),
        Conflict::SerialTaken(s)
    );
    commit_ok(r, put(random_serial(), "other")).await;
    assert_eq!(r.credential_count().await.unwrap(), 2);
}

async fn check_guard_request_id_absent(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let put = |owner: &str, request_id: &str, batch: String| {
        let mut c = change([Op::PutRequestId {
            owner: owner.into(),
            request_id: request_id.into(),
            batch_id: batch,
        }]);
        c.guard(Guard::RequestIdAbsent {
            owner: owner.into(),
            request_id: request_id.into(),
        });
        c
    };
    commit_ok(r, put("acme", "rq-1", batch_id(1))).await;
    assert_eq!(
        conflict_of(r.commit(put("acme", "rq-1", batch_id(2))).await),
        Conflict::RequestIdUsed {
            owner: "acme".into(),
            request_id: "rq-1".into()
        }
    );
    assert_eq!(
        r.request_id("acme", "rq-1").await.unwrap(),
        Some(batch_id(1))
    );
    // The key is per owner.
    commit_ok(r, put("globex", "rq-1", batch_id(3))).await;
    assert_eq!(
        r.request_id("globex", "rq-1").await.unwrap(),
        Some(batch_id(3))
    );
    commit_ok(r, put("acme", "rq-2", batch_id(4))).await;
}

async fn check_guard_operator_unrevoked(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let s = random_serial();
    let revoke = |comment: &str| {
        let mut record = revoked(operator_certificate(s, "acme", "alice"));
        if let Some(revocation) = &mut record.revocation {
            comment.clone_into(&mut revocation.comment);
        }
        let mut c = change([Op::PutOperatorCertificate(Box::new(record))]);
        c.guard(Guard::OperatorUnrevoked(s));
        c
    };
    // Not on record.
    assert_eq!(
        conflict_of(r.commit(revoke("unknown")).await),
        Conflict::OperatorRevoked(s)
    );
    assert_eq!(r.operator_certificate(s).await.unwrap(), None);
    // On record and live: the revocation commits, once.
    commit_ok(
        r,
        change([Op::PutOperatorCertificate(Box::new(operator_certificate(
            s, "acme", "alice",
        )))]),
    )
    .await;
    commit_ok(r, revoke("first")).await;
    assert_eq!(
        conflict_of(r.commit(revoke("second")).await),
        Conflict::OperatorRevoked(s)
    );
    let stored = r.operator_certificate(s).await.unwrap().unwrap();
    assert_eq!(stored.revocation.unwrap().comment, "first");
}

/// Makes the change of racing writer `i`.
type Make = Box<dyn Fn(u32) -> Change + Send + Sync>;

/// Guards and versions are checked against the state each change is applied to: of writers
/// racing to insert the same thing, exactly one wins and every other hears the typed conflict.
fn firmware_signer(owner: &str, id: &str) -> FirmwareSignerRecord {
    FirmwareSignerRecord {
        owner: owner.into(),
        id: id.into(),
        certificate_pem: format!("-----BEGIN CERTIFICATE-----\n{id}\n-----END CERTIFICATE-----\n"),
        chain_pem: String::new(),
        key: enroll_service::pki::KeyReference::Sealed(vec![9, 8, 7]),
        created_at: T0,
    }
}

fn firmware(owner: &str, name: &str, version: &str, counter: u32) -> FirmwareRecord {
    FirmwareRecord {
        owner: owner.into(),
        name: name.into(),
        version: version.into(),
        security_counter: counter,
        policy_name: "line".into(),
        measurement: "ab".repeat(32),
        image_size: 3,
        payload_size: 1,
        manifest_hex: "00".into(),
        manifest_signature_hex: "01".into(),
        signer: format!("{owner}/firmware-1"),
        created_at: T0,
        created_by: format!("{owner}/alice"),
    }
}

fn put_firmware(record: FirmwareRecord, image: &[u8]) -> Change {
    let mut c = change([]);
    c.guard(Guard::FirmwareAbsent {
        owner: record.owner.clone(),
        name: record.name.clone(),
        version: record.version.clone(),
    })
    .op(Op::PutFirmware {
        record: Box::new(record),
        image: image.to_vec(),
    });
    c
}

async fn check_firmware_signer_and_images(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let put_signer = |record: FirmwareSignerRecord| {
        let mut c = change([]);
        c.guard(Guard::FirmwareSignerAbsent(record.owner.clone()))
            .op(Op::PutFirmwareSigner(Box::new(record)));
        c
    };
    assert_eq!(r.firmware_signer("acme").await.unwrap(), None);
    commit_ok(r, put_signer(firmware_signer("acme", "acme/firmware-1"))).await;
    assert_eq!(
        conflict_of(
            r.commit(put_signer(firmware_signer("acme", "acme/firmware-2")))
                .await
        ),
        Conflict::FirmwareSignerExists("acme".into())
    );
    assert_eq!(
        r.firmware_signer("acme").await.unwrap().unwrap().id,
        "acme/firmware-1"
    );
    commit_ok(
        r,
        put_signer(firmware_signer("globex", "globex/firmware-1")),
    )
    .await;

    // Images: stored byte for byte beside their record; a version is signed once.
    let image: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    commit_ok(
        r,
        put_firmware(firmware("acme", "app", "1.0.0+0", 1), &image),
    )
    .await;
    assert_eq!(
        conflict_of(
            r.commit(put_firmware(
                firmware("acme", "app", "1.0.0+0", 2),
                b"other"
            ))
            .await
        ),
        Conflict::FirmwareExists {
            owner: "acme".into(),
            name: "app".into(),
            version: "1.0.0+0".into(),
        }
    );
    let stored = r.firmware("acme", "app", "1.0.0+0").await.unwrap().unwrap();
    assert_eq!(stored, firmware("acme", "app", "1.0.0+0", 1));
    assert_eq!(
        r.firmware_image("acme", "app", "1.0.0+0").await.unwrap(),
        Some(image)
    );
    assert_eq!(r.firmware("acme", "app", "1.0.1+0").await.unwrap(), None);
    assert_eq!(
        r.firmware_image("globex", "app", "1.0.0+0").await.unwrap(),
        None
    );
    // The guard names one owner's one name and version.
    commit_ok(
        r,
        put_firmware(firmware("globex", "app", "1.0.0+0", 1), b"g"),
    )
    .await;
    commit_ok(r, put_firmware(firmware("acme", "app", "1.0.1+0", 1), b"a")).await;
}

async fn check_firmware_listing(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let mut expected = Vec::new();
    for owner in ["acme", "globex"] {
        for name in ["app", "boot"] {
            for version in ["1.0.0+0", "1.0.1+0", "2.0.0+0"] {
                commit_ok(r, put_firmware(firmware(owner, name, version, 1), b"x")).await;
                expected.push((owner.to_owned(), name.to_owned(), version.to_owned()));
            }
        }
    }
    let keys = |records: &[FirmwareRecord]| {
        records
            .iter()
            .map(|f| (f.owner.clone(), f.name.clone(), f.version.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&r.firmwares(None, None, 100).await.unwrap()), expected);
    let acme: Vec<_> = expected.iter().filter(|k| k.0 == "acme").cloned().collect();
    assert_eq!(
        keys(&r.firmwares(Some("acme"), None, 100).await.unwrap()),
        acme
    );
    // Pages of two, resumed after the last key, list everything once.
    let mut paged = Vec::new();
    let mut after: Option<(String, String, String)> = None;
    loop {
        let page = r
            .firmwares(
                None,
                after
                    .as_ref()
                    .map(|(o, n, v)| (o.as_str(), n.as_str(), v.as_str())),
                2,
            )
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        paged.extend(keys(&page));
        after = paged.last().cloned();
    }
    assert_eq!(paged, expected);
    assert!(r.firmwares(None, None, 0).await.unwrap().is_empty());
}

fn rollout(owner: &str, id: &str) -> RolloutRecord {
    RolloutRecord {
        owner: owner.into(),
        id: id.into(),
        policy_name: "line".into(),
        batch_id: None,
        firmware_name: "app".into(),
        firmware_version: "1.0.0+0".into(),
        measurement: "ab".repeat(32),
        stages: vec![10, 50, 100],
        current_stage: 0,
        state: RolloutState::Active,
        failure_threshold: 5,
        halt_recorded: false,
        created_at: T0,
        created_by: format!("{owner}/alice"),
        updated_at: T0,
        version: 0,
        outcomes: RolloutOutcomes::default(),
    }
}

fn rollout_report(device: u32, installed: bool) -> RolloutReportRecord {
    RolloutReportRecord {
        device_id: device_id(device).to_string(),
        installed,
        reason: if installed {
            String::new()
        } else {
            "rollback".into()
        },
        running_measurement: "cd".repeat(32),
        reported_at: T0,
    }
}

fn report_op(owner: &str, id: &str, report: RolloutReportRecord) -> Change {
    change([Op::ReportRollout {
        owner: owner.into(),
        rollout_id: id.into(),
        report: Box::new(report),
    }])
}

async fn check_rollout_versions_and_listing(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let put = |record: RolloutRecord| change([Op::PutRollout(Box::new(record))]);
    commit_ok(r, put(rollout("acme", "ro-0000000000000001"))).await;
    let stored = r
        .rollout("acme", "ro-0000000000000001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.version, 1);
    assert_eq!(stored.outcomes, RolloutOutcomes::default());
    assert_eq!(
        RolloutRecord {
            version: 0,
            ..stored.clone()
        },
        rollout("acme", "ro-0000000000000001")
    );
    // A second create of the same id, and a write from a stale read, lose.
    assert_eq!(
        conflict_of(r.commit(put(rollout("acme", "ro-0000000000000001"))).await),
        Conflict::RolloutChanged {
            owner: "acme".into(),
            id: "ro-0000000000000001".into(),
            expected: 0,
            found: 1,
        }
    );
    let paused = RolloutRecord {
        state: RolloutState::Paused,
        ..stored.clone()
    };
    commit_ok(r, put(paused)).await;
    assert_eq!(
        conflict_of(r.commit(put(stored)).await),
        Conflict::RolloutChanged {
            owner: "acme".into(),
            id: "ro-0000000000000001".into(),
            expected: 1,
            found: 2,
        }
    );
    let now = r
        .rollout("acme", "ro-0000000000000001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((now.version, now.state), (2, RolloutState::Paused));
    assert_eq!(
        r.rollout("globex", "ro-0000000000000001").await.unwrap(),
        None
    );

    // Listing: by owner, then id; an owner's prefix does not reach another owner's.
    let mut expected = Vec::new();
    for owner in ["acme", "acme-2", "globex"] {
        for n in 2..5 {
            let id = format!("ro-{n:016x}");
            commit_ok(r, put(rollout(owner, &id))).await;
        }
    }
    for owner in ["acme", "acme-2", "globex"] {
        let first = if owner == "acme" { 1 } else { 2 };
        for n in first..5 {
            expected.push((owner.to_owned(), format!("ro-{n:016x}")));
        }
    }
    let keys = |records: &[RolloutRecord]| {
        records
            .iter()
            .map(|x| (x.owner.clone(), x.id.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&r.rollouts(None, None, 100).await.unwrap()), expected);
    let acme: Vec<_> = expected.iter().filter(|k| k.0 == "acme").cloned().collect();
    assert_eq!(
        keys(&r.rollouts(Some("acme"), None, 100).await.unwrap()),
        acme
    );
    let mut paged = Vec::new();
    let mut after: Option<(String, String)> = None;
    loop {
        let page = r
            .rollouts(
                None,
                after.as_ref().map(|(o, id)| (o.as_str(), id.as_str())),
                2,
            )
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        paged.extend(keys(&page));
        after = paged.last().cloned();
    }
    assert_eq!(paged, expected);
    assert!(r.rollouts(None, None, 0).await.unwrap().is_empty());
}

async fn check_rollout_reports_count_once_and_compose(open: &Opener) {
    const DEVICES: u32 = 200;
    let store = Store::open(open).await;
    let r = store.registry();
    let id = "ro-00000000000000aa";
    assert_eq!(
        conflict_of(
            r.commit(report_op("acme", id, rollout_report(1, true)))
                .await
        ),
        Conflict::RolloutAbsent {
            owner: "acme".into(),
            id: id.into(),
        }
    );
    commit_ok(r, change([Op::PutRollout(Box::new(rollout("acme", id)))])).await;
    // Concurrent reports of distinct devices all count.
    let registry = store.shared();
    let mut tasks = Vec::new();
    for n in 0..DEVICES {
        let registry = Arc::clone(&registry);
        tasks.push(tokio::spawn(async move {
            commit_ok(
                registry.as_ref(),
                report_op("acme", id, rollout_report(n, n % 4 != 0)),
            )
            .await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let counted = r.rollout("acme", id).await.unwrap().unwrap();
    assert_eq!(
        counted.outcomes,
        RolloutOutcomes {
            installed: u64::from(DEVICES) * 3 / 4,
            failed: u64::from(DEVICES) / 4,
        }
    );
    // Reports never move the record's version, and an operator's write keeps the outcomes.
    assert_eq!(counted.version, 1);
    commit_ok(
        r,
        change([Op::PutRollout(Box::new(RolloutRecord {
            state: RolloutState::Paused,
            ..counted.clone()
        }))]),
    )
    .await;
    assert_eq!(
        r.rollout("acme", id).await.unwrap().unwrap().outcomes,
        counted.outcomes
    );
    // A device reports once: the second report is refused and counts nothing; eight racing
    // first reports of one device admit one.
    assert_eq!(
        conflict_of(
            r.commit(report_op("acme", id, rollout_report(0, true)))
                .await
        ),
        Conflict::RolloutReported {
            id: id.into(),
            device_id: device_id(0).to_string(),
        }
    );
    assert_eq!(
        r.rollout_report("acme", id, &device_id(0)).await.unwrap(),
        Some(rollout_report(0, false))
    );
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let registry = Arc::clone(&registry);
            tokio::spawn(async move {
                registry
                    .commit(report_op("acme", id, rollout_report(DEVICES, false)))
                    .await
                    .is_ok()
            })
        })
        .collect();
    let mut admitted = 0;
    for racer in racers {
        admitted += usize::from(racer.await.unwrap());
    }
    assert_eq!(admitted, 1);
    let after = r.rollout("acme", id).await.unwrap().unwrap().outcomes;
    assert_eq!(after.failed, counted.outcomes.failed + 1);
    assert_eq!(after.installed, counted.outcomes.installed);
    assert_eq!(
        r.rollout_report("acme", id, &device_id(DEVICES + 1))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        r.rollout_report("globex", id, &device_id(0)).await.unwrap(),
        None
    );
}

async fn check_racing_inserts_admit_exactly_one(open: &Opener) {
    const WRITERS: u32 = 16;
    let store = Store::open(open).await;
    let r = store.registry();
    let s = random_serial();
    let operator = random_serial();
    commit_ok(
        r,
        change([Op::PutOperatorCertificate(Box::new(operator_certificate(
            operator, "acme", "alice",
        )))]),
    )
    .await;

    let races: Vec<(&str, Make, Conflict)> = vec![
        (
            "policy",
            Box::new(|i: u32| {
                let mut spec = policy("acme", "broker");
                spec.description = format!("writer {i}");
                let mut c = change([Op::PutPolicy(Box::new(spec))]);
                c.guard(Guard::PolicyAbsent {
                    owner: "acme".into(),
                    name: "broker".into(),
                });
                c
            }),
            Conflict::PolicyExists {
                owner: "acme".into(),
                name: "broker".into(),
            },
        ),
        (
            "batch",
            Box::new(|i: u32| {
                let mut record = batch(&batch_id(1), "acme", 1);
                record.name = format!("writer {i}");
                let mut c = change([Op::PutBatch(record)]);
                c.guard(Guard::BatchAbsent(batch_id(1)));
                c
            }),
            Conflict::BatchExists(batch_id(1)),
        ),
        (
            "owner",
            Box::new(|i: u32| {
                let mut record = owner("acme");
                record.created_by = format!("writer {i}");
                let mut c = change([Op::PutOwner(Box::new(record))]);
                c.guard(Guard::OwnerAbsent("acme".into()));
                c
            }),
            Conflict::OwnerExists("acme".into()),
        ),
        (
            "serial",
            Box::new(move |i: u32| {
                let mut record = credential(s, device_id(1), &batch_id(1));
                record.subject_cn = format!("writer {i}");
                let mut c = change([Op::PutCredential(Box::new(record))]);
                c.guard(Guard::SerialAbsent(s));
                c
            }),
            Conflict::SerialTaken(s),
        ),
        (
            "request id",
            Box::new(|i: u32| {
                let mut c = change([Op::PutRequestId {
                    owner: "acme".into(),
                    request_id: "rq".into(),
                    batch_id: format!("writer {i}"),
                }]);
                c.guard(Guard::RequestIdAbsent {
                    owner: "acme".into(),
                    request_id: "rq".into(),
                });
                c
            }),
            Conflict::RequestIdUsed {
                owner: "acme".into(),
                request_id: "rq".into(),
            },
        ),
        (
            "operator revocation",
            Box::new(move |i: u32| {
                let mut record = revoked(operator_certificate(operator, "acme", "alice"));
                if let Some(revocation) = &mut record.revocation {
                    revocation.comment = format!("writer {i}");
                }
                let mut c = change([Op::PutOperatorCertificate(Box::new(record))]);
                c.guard(Guard::OperatorUnrevoked(operator));
                c
            }),
            Conflict::OperatorRevoked(operator),
        ),
        (
            "device at version 0",
            Box::new(|i: u32| {
                let mut record = device(1, Some("acme"), None, DeviceState::Unassigned);
                record.refusals = u64::from(i);
                change([Op::PutDevice(record)])
            }),
            Conflict::DeviceChanged {
                device_id: device_id(1),
                expected: 0,
                found: 1,
            },
        ),
    ];
    for (what, make, expected) in races {
        let outcomes = commit_all(&store, (0..WRITERS).map(&make).collect()).await;
        let mut winners = Vec::new();
        for (i, outcome) in (0u32..).zip(outcomes) {
            match outcome {
                Ok(_) => winners.push(i),
                Err(e) => assert_eq!(e, StoreError::Conflict(expected.clone()), "{what}"),
            }
        }
        assert_eq!(winners.len(), 1, "{what}: exactly one racing writer wins");
        let winner = format!("writer {}", winners[0]);
        let stored = match what {
            "policy" => {
                r.policy("acme", "broker")
                    .await
                    .unwrap()
                    .unwrap()
                    .description
            }
            "batch" => r.batch(&batch_id(1)).await.unwrap().unwrap().name,
            "owner" => r.owner("acme").await.unwrap().unwrap().created_by,
            "serial" => r.credential(s).await.unwrap().unwrap().subject_cn,
            "request id" => r.request_id("acme", "rq").await.unwrap().unwrap(),
            "operator revocation" => {
                let record = r.operator_certificate(operator).await.unwrap().unwrap();
                record.revocation.unwrap().comment
            }
            _ => {
                let record = r.device(&device_id(1)).await.unwrap().unwrap();
                format!("writer {}", record.refusals)
            }
        };
        assert_eq!(stored, winner, "{what}: the winner's write is stored");
    }
}

// ---------------------------------------------------------------------------------------------
// Versions

async fn check_device_versions(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let id = device_id(1);
    let fresh = device(1, Some("acme"), None, DeviceState::Unassigned);
    commit_ok(r, change([Op::PutDevice(fresh.clone())])).await;
    let read = r.device(&id).await.unwrap().unwrap();
    assert_eq!(read.version, 1);

    // Inserting again at version 0 is a stale write.
    assert_eq!(
        conflict_of(r.commit(change([Op::PutDevice(fresh)])).await),
        Conflict::DeviceChanged {
            device_id: id,
            expected: 0,
            found: 1
        }
    );

    // A write at the version read succeeds and stores the next version.
    let mut next = read.clone();
    next.refusals = 1;
    commit_ok(r, change([Op::PutDevice(next)])).await;
    let read2 = r.device(&id).await.unwrap().unwrap();
    assert_eq!((read2.version, read2.refusals), (2, 1));

    // The old version is stale now; the refused write changes nothing.
    let mut stale = read;
    stale.refusals = 99;
    assert_eq!(
        conflict_of(r.commit(change([Op::PutDevice(stale)])).await),
        Conflict::DeviceChanged {
            device_id: id,
            expected: 1,
            found: 2
        }
    );
    assert_eq!(r.device(&id).await.unwrap(), Some(read2));

    // A version for a device that is not stored.
    let mut ghost = device(2, None, None, DeviceState::Unassigned);
    ghost.version = 7;
    assert_eq!(
        conflict_of(r.commit(change([Op::PutDevice(ghost)])).await),
        Conflict::DeviceChanged {
            device_id: device_id(2),
            expected: 7,
            found: 0
        }
    );
    assert_eq!(r.device(&device_id(2)).await.unwrap(), None);

    // Listings carry versions too.
    let listed = r.devices(&DeviceFilter::default(), None, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].version, 2);
}

async fn check_device_second_writer_loses(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let id = device_id(1);
    commit_ok(
        r,
        change([Op::PutDevice(device(
            1,
            Some("acme"),
            None,
            DeviceState::Unassigned,
        ))]),
    )
    .await;
    let mut a = r.device(&id).await.unwrap().unwrap();
    let mut b = r.device(&id).await.unwrap().unwrap();
    assert_eq!((a.version, b.version), (1, 1));
    a.refusals = 10;
    b.refusals = 20;
    commit_ok(r, change([Op::PutDevice(a)])).await;
    assert_eq!(
        conflict_of(r.commit(change([Op::PutDevice(b)])).await),
        Conflict::DeviceChanged {
            device_id: id,
            expected: 1,
            found: 2
        }
    );
    let stored = r.device(&id).await.unwrap().unwrap();
    assert_eq!((stored.version, stored.refusals), (2, 10));
    // The loser reads again and decides again.
    let mut again = stored;
    again.refusals += 20;
    commit_ok(r, change([Op::PutDevice(again)])).await;
    let stored = r.device(&id).await.unwrap().unwrap();
    assert_eq!((stored.version, stored.refusals), (3, 30));

    // Two writers of the same version at the same moment: one wins.
    let mut c = stored.clone();
    let mut d = stored;
    c.refusals = 100;
    d.refusals = 200;
    let outcomes = commit_all(
        &store,
        vec![change([Op::PutDevice(c)]), change([Op::PutDevice(d)])],
    )
    .await;
    let lost: Vec<_> = outcomes.iter().filter(|o| o.is_err()).collect();
    assert_eq!(
        lost.len(),
        1,
        "one of two concurrent writers loses: {outcomes:?}"
    );
    assert_eq!(
        lost[0].clone().unwrap_err(),
        Conflict::DeviceChanged {
            device_id: id,
            expected: 3,
            found: 4
        }
        .into()
    );
    let stored = r.device(&id).await.unwrap().unwrap();
    assert_eq!(stored.version, 4);
    assert!(matches!(stored.refusals, 100 | 200));
}

/// Read-modify-write with retry on `DeviceChanged` loses no update, however many writers.
async fn check_concurrent_device_updates_lose_nothing(open: &Opener) {
    const WRITERS: u64 = 40;
    let store = Store::open(open).await;
    let r = store.registry();
    let id = device_id(1);
    commit_ok(
        r,
        change([Op::PutDevice(device(
            1,
            Some("acme"),
            None,
            DeviceState::Unassigned,
        ))]),
    )
    .await;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let registry = store.shared();
            tokio::spawn(async move {
                let mut conflicts = 0u32;
                loop {
                    let mut record = registry.device(&id).await.unwrap().unwrap();
                    record.refusals += 1;
                    match registry.commit(change([Op::PutDevice(record)])).await {
                        Ok(_) => return conflicts,
                        Err(e) if e.is_device_changed() => conflicts += 1,
                        Err(e) => panic!("unexpected {e}"),
                    }
                    assert!(conflicts < 10_000, "a writer never gets through");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stored = r.device(&id).await.unwrap().unwrap();
    assert_eq!(stored.refusals, WRITERS, "every increment counted once");
    assert_eq!(
        stored.version,
        WRITERS + 1,
        "one version per accepted write"
    );
}

async fn check_owner_versions(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    commit_ok(r, change([Op::PutOwner(Box::new(owner("acme")))])).await;
    let read = r.owner("acme").await.unwrap().unwrap();
    assert_eq!(read.version, 1);
    assert_eq!(
        conflict_of(
            r.commit(change([Op::PutOwner(Box::new(owner("acme")))]))
                .await
        ),
        Conflict::OwnerChanged {
            name: "acme".into(),
            expected: 0,
            found: 1
        }
    );
    // Two writers read version 1; the second loses.
    let mut a = read.clone();
    let mut b = read;
    a.created_by = "a".into();
    b.created_by = "b".into();
    commit_ok(r, change([Op::PutOwner(Box::new(a))])).await;
    assert_eq!(
        conflict_of(r.commit(change([Op::PutOwner(Box::new(b))])).await),
        Conflict::OwnerChanged {
            name: "acme".into(),
            expected: 1,
            found: 2
        }
    );
    let stored = r.owner("acme").await.unwrap().unwrap();
    assert_eq!((stored.version, stored.created_by.as_str()), (2, "a"));
    // An owner that is not stored, at a version.
    let mut ghost = owner("globex");
    ghost.version = 4;
    assert_eq!(
        conflict_of(r.commit(change([Op::PutOwner(Box::new(ghost))])).await),
        Conflict::OwnerChanged {
            name: "globex".into(),
            expected: 4,
            found: 0
        }
    );
    assert_eq!(r.owner("globex").await.unwrap(), None);
    // Concurrent read-modify-write loses nothing.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let registry = store.shared();
            tokio::spawn(async move {
                loop {
                    let mut record = registry.owner("acme").await.unwrap().unwrap();
                    record.issuing.push(record.issuing[0].clone());
                    record.issuing.last_mut().unwrap().id = format!("acme/{}", i + 2);
                    match registry
                        .commit(change([Op::PutOwner(Box::new(record))]))
                        .await
                    {
                        Ok(_) => return,
                        Err(StoreError::Conflict(Conflict::OwnerChanged { .. })) => {}
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stored = r.owner("acme").await.unwrap().unwrap();
    assert_eq!(stored.issuing.len(), 21);
    assert_eq!(stored.version, 22);
    assert_eq!(
        r.owners(None, 10).await.unwrap()[0].version,
        22,
        "listings carry versions too"
    );
}

// ---------------------------------------------------------------------------------------------
// Batch counts

async fn check_adjust_counts_of_absent_batch(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let mut c = change([Op::PutDevice(device(
        1,
        Some("acme"),
        None,
        DeviceState::Unassigned,
    ))]);
    c.op(Op::AdjustCounts {
        batch_id: "nope".into(),
        delta: CountsDelta::joined(DeviceState::Ready),
    });
    assert_eq!(
        conflict_of(r.commit(c).await),
        Conflict::BatchAbsent("nope".into())
    );
    assert_eq!(r.device(&device_id(1)).await.unwrap(), None);
    assert_eq!(r.batch("nope").await.unwrap(), None, "no batch springs up");
}

async fn check_concurrent_adjust_counts_compose(open: &Opener) {
    const TASKS: i64 = 300;
    let store = Store::open(open).await;
    let r = store.registry();
    let id = batch_id(1);
    commit_ok(
        r,
        change([
            Op::PutBatch(batch(&id, "acme", 1)),
            Op::AdjustCounts {
                batch_id: id.clone(),
                delta: CountsDelta {
                    revoked: 10_000,
                    ..CountsDelta::default()
                },
            },
        ]),
    )
    .await;
    let delta = |i: i64| CountsDelta {
        total: 1,
        awaiting_registration: i % 5,
        registered: i % 3,
        onboarded: 2,
        reonboard_pending: 0,
        revoked: -1,
        refusals: 1,
    };
    let changes = (0..TASKS)
        .map(|i| {
            change([Op::AdjustCounts {
                batch_id: id.clone(),
                delta: delta(i),
            }])
        })
        .collect();
    for outcome in commit_all(&store, changes).await {
        outcome.expect("adjust");
    }
    let mut sum = CountsDelta {
        revoked: 10_000,
        ..CountsDelta::default()
    };
    for i in 0..TASKS {
        sum += delta(i);
    }
    let counts = r.batch(&id).await.unwrap().unwrap().counts;
    let got = [
        counts.total,
        counts.awaiting_registration,
        counts.registered,
        counts.onboarded,
        counts.reonboard_pending,
        counts.revoked,
        counts.refusals,
    ];
    let want = [
        sum.total,
        sum.awaiting_registration,
        sum.registered,
        sum.onboarded,
        sum.reonboard_pending,
        sum.revoked,
        sum.refusals,
    ]
    .map(|v| v as u64);
    assert_eq!(got, want, "concurrent deltas add up exactly");
}

/// PutBatch replaces a batch's descriptive fields and keeps its counts.
async fn check_put_batch_keeps_counts(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let id = batch_id(1);
    let five = CountsDelta {
        total: 5,
        registered: 5,
        ..CountsDelta::default()
    };
    commit_ok(
        r,
        change([
            Op::PutBatch(batch(&id, "acme", 1)),
            Op::AdjustCounts {
                batch_id: id.clone(),
                delta: five,
            },
        ]),
    )
    .await;
    let mut edited = batch(&id, "acme", 1);
    edited.description = "edited".into();
    edited.counts.total = 999;
    commit_ok(r, change([Op::PutBatch(edited.clone())])).await;
    let stored = r.batch(&id).await.unwrap().unwrap();
    assert_eq!(stored.description, "edited");
    assert_eq!((stored.counts.total, stored.counts.registered), (5, 5));
    // Within one change too: counts adjusted, then the batch put again.
    commit_ok(
        r,
        change([
            Op::AdjustCounts {
                batch_id: id.clone(),
                delta: CountsDelta::refusal(),
            },
            Op::PutBatch(edited),
        ]),
    )
    .await;
    let stored = r.batch(&id).await.unwrap().unwrap();
    assert_eq!((stored.counts.total, stored.counts.refusals), (5, 1));
}

// ---------------------------------------------------------------------------------------------
// CRL numbers

async fn check_crl_numbers_increase_per_issuer(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let put = |issuer: &str, number: u64| {
        change([Op::PutCrl {
            issuer: issuer.into(),
            record: crl(number),
        }])
    };
    commit_ok(r, put("acme/1", 5)).await;
    for number in [5, 3, 1] {
        assert_eq!(
            conflict_of(r.commit(put("acme/1", number)).await),
            Conflict::CrlNumberTaken {
                issuer: "acme/1".into(),
                number,
                stored: 5
            }
        );
    }
    assert_eq!(r.crl("acme/1").await.unwrap(), Some(crl(5)));
    commit_ok(r, put("acme/1", 6)).await;
    // Another issuer's numbers are its own.
    commit_ok(r, put("platform", 1)).await;
    commit_ok(r, put("acme/10", 2)).await;
    assert_eq!(
        conflict_of(r.commit(put("acme/10", 2)).await),
        Conflict::CrlNumberTaken {
            issuer: "acme/10".into(),
            number: 2,
            stored: 2
        }
    );
    commit_ok(r, put("acme/1", 100)).await;
    assert_eq!(r.crl("acme/1").await.unwrap(), Some(crl(100)));
    assert_eq!(r.crl("platform").await.unwrap(), Some(crl(1)));
    assert_eq!(r.crl("acme/10").await.unwrap(), Some(crl(2)));
}

async fn check_racing_crls_keep_the_highest(open: &Opener) {
    const SIGNERS: u64 = 24;
    let store = Store::open(open).await;
    let r = store.registry();
    let changes = (1..=SIGNERS)
        .map(|n| {
            change([Op::PutCrl {
                issuer: "acme/1".into(),
                record: crl(n),
            }])
        })
        .collect();
    let outcomes = commit_all(&store, changes).await;
    let mut accepted = 0;
    for (number, outcome) in (1..=SIGNERS).zip(outcomes) {
        match outcome {
            Ok(_) => accepted += 1,
            Err(StoreError::Conflict(Conflict::CrlNumberTaken {
                issuer,
                number: refused,
                stored,
            })) => {
                assert_eq!((issuer.as_str(), refused), ("acme/1", number));
                assert!(stored > number, "refused {number} below stored {stored}");
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(accepted >= 1);
    assert_eq!(r.crl("acme/1").await.unwrap(), Some(crl(SIGNERS)));
}

// ---------------------------------------------------------------------------------------------
// Audit

async fn check_audit_chain_in_commit_order(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    assert_eq!(r.audit_head().await.unwrap(), 0);
    assert_eq!(r.audit(1, 10).await.unwrap(), Vec::new());
    let sizes = [1usize, 3, 0, 2, 1];
    let mut drafts: Vec<AuditDraft> = Vec::new();
    let mut next = 1u64;
    for (k, size) in sizes.into_iter().enumerate() {
        let mut c = change([Op::PutDevice(device(
            k as u32,
            Some("acme"),
            None,
            DeviceState::Unassigned,
        ))]);
        for j in 0..size {
            let d =
                draft(&format!("step.{k}"), &format!("entry:{k}.{j}")).detail("j", j.to_string());
            drafts.push(d.clone());
            c.audit(d);
        }
        let receipt = commit_ok(r, c).await;
        let expected: Vec<u64> = (next..next + size as u64).collect();
        assert_eq!(receipt.audit_seqs, expected, "change {k}");
        next += size as u64;
        assert_eq!(r.audit_head().await.unwrap(), next - 1);
    }
    let entries = verified_audit(r).await;
    assert_eq!(entries.len(), drafts.len());
    for ((seq, entry), d) in entries.iter().zip(&drafts) {
        let record = entry.decode().unwrap();
        assert_eq!(record.seq, *seq);
        assert_eq!(record.time, d.time);
        assert_eq!(
            (
                &record.actor,
                &record.actor_role,
                &record.owner,
                &record.action,
                &record.subject,
                &record.outcome,
                &record.details,
                &record.correlation_id
            ),
            (
                &d.actor,
                &d.actor_role,
                &d.owner,
                &d.action,
                &d.subject,
                &d.outcome,
                &d.details,
                &d.correlation_id
            )
        );
    }
    // audit(start, limit): seq >= start, ascending, at most limit.
    let seqs =
        |page: Vec<(u64, StoredAuditEntry)>| page.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
    assert_eq!(seqs(r.audit(3, 2).await.unwrap()), vec![3, 4]);
    assert_eq!(seqs(r.audit(6, 10).await.unwrap()), vec![6, 7]);
    assert_eq!(seqs(r.audit(8, 10).await.unwrap()), Vec::<u64>::new());
    assert_eq!(seqs(r.audit(0, 2).await.unwrap()), vec![1, 2]);
    let mut paged = Vec::new();
    loop {
        let start = paged
            .last()
            .map_or(1, |(s, _): &(u64, StoredAuditEntry)| s + 1);
        let page = r.audit(start, 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        paged.extend(page);
    }
    assert_eq!(paged, entries);
}

/// Concurrent commits from many tasks still form one gapless, verifiable chain; each
/// change's entries are adjacent, in the order of the change.
async fn check_concurrent_commits_form_one_chain(open: &Opener) {
    const TASKS: u32 = 400;
    let store = Store::open(open).await;
    let r = store.registry();
    let changes = (0..TASKS)
        .map(|i| {
            let mut c = Change::new();
            c.audit(draft("step", &format!("t{i}/a")))
                .audit(draft("step", &format!("t{i}/b")));
            c
        })
        .collect();
    let outcomes = commit_all(&store, changes).await;
    let mut seen = BTreeSet::new();
    let mut by_seq = BTreeMap::new();
    for (i, outcome) in (0u32..).zip(outcomes) {
        let seqs = outcome.expect("commit").audit_seqs;
        assert_eq!(seqs.len(), 2);
        assert_eq!(seqs[1], seqs[0] + 1, "a change's entries are adjacent");
        for (seq, part) in seqs.into_iter().zip(["a", "b"]) {
            assert!(seen.insert(seq), "seq {seq} given twice");
            by_seq.insert(seq, format!("t{i}/{part}"));
        }
    }
    let total = u64::from(TASKS) * 2;
    assert_eq!(seen, (1..=total).collect::<BTreeSet<_>>());
    assert_eq!(r.audit_head().await.unwrap(), total);
    let entries = verified_audit(r).await;
    for (seq, entry) in &entries {
        assert_eq!(
            &action_subject(entry).1,
            &by_seq[seq],
            "entry {seq} is its receipt's"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Events

async fn check_events_reach_every_subscriber_in_commit_order(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let id = batch_id(1);
    commit_ok(r, change([Op::PutBatch(batch(&id, "acme", 1))])).await;
    let mut first = r.subscribe();
    let mut second = r.subscribe();
    let added = RegistryEvent::Device {
        batch_id: id.clone(),
        event: DeviceEvent::new(device_id(1), DeviceEventKind::Added, T0, "c-1"),
    };
    let onboarded = RegistryEvent::Device {
        batch_id: id.clone(),
        event: DeviceEvent::new(
            device_id(1),
            DeviceEventKind::Onboarded {
                serial: serial(0x77),
                key_slot: 2,
            },
            T0,
            "c-2",
        ),
    };
    let counts = RegistryEvent::CountsChanged {
        batch_id: id.clone(),
    };
    let crl_signed = RegistryEvent::CrlSigned(CrlNotice::of("acme/1", &crl(1)));

    let mut c1 = change(insert_device(1, &id));
    c1.batch_moved(&id, CountsDelta::joined(DeviceState::Ready), None);
    c1.events.insert(0, added.clone());
    commit_ok(r, c1).await;
    // Refused: its events are never heard.
    let mut refused = Change::new();
    refused
        .guard(Guard::BatchAbsent(id.clone()))
        .event(tag_event("refused"));
    assert_eq!(
        conflict_of(r.commit(refused).await),
        Conflict::BatchExists(id.clone())
    );
    let mut c3 = change([Op::PutCrl {
        issuer: "acme/1".into(),
        record: crl(1),
    }]);
    c3.event(crl_signed.clone());
    commit_ok(r, c3).await;
    // No events at all.
    commit_ok(r, change(insert_device(2, &id))).await;
    let mut c5 = Change::new();
    c5.event(onboarded.clone()).event(counts.clone());
    commit_ok(r, c5).await;
    let mut marker = Change::new();
    marker.event(tag_event("marker"));
    commit_ok(r, marker).await;

    let heard = events_until(&mut first, &tag_event("marker")).await;
    let events: Vec<RegistryEvent> = heard.iter().map(|p| p.event.clone()).collect();
    assert_eq!(
        events,
        vec![
            added,
            counts.clone(),
            crl_signed,
            onboarded,
            counts,
            tag_event("marker")
        ],
        "every event of a committed change, in commit order, none of a refused one"
    );
    for pair in heard.windows(2) {
        assert!(
            pair[0].seq < pair[1].seq,
            "Published.seq strictly increases"
        );
    }
    let heard_too = events_until(&mut second, &tag_event("marker")).await;
    assert_eq!(
        heard_too, heard,
        "a second subscriber hears the same sequence"
    );

    // A subscription taken now hears what is committed from now on.
    let mut late = r.subscribe();
    let mut after = Change::new();
    after.event(tag_event("after"));
    commit_ok(r, after).await;
    let next = next_event(&mut late).await;
    assert_eq!(next.event, tag_event("after"));
    assert!(next.seq > heard.last().unwrap().seq);
    assert_eq!(next_event(&mut first).await, next);
}

/// Under concurrent commits, the event order is the commit order: the order of the changes'
/// audit entries.
async fn check_events_follow_commit_order_under_concurrency(open: &Opener) {
    const TASKS: u32 = 300;
    let store = Store::open(open).await;
    let r = store.registry();
    let mut first = r.subscribe();
    let mut second = r.subscribe();
    let changes = (0..TASKS)
        .map(|i| {
            let mut c = Change::new();
            c.audit(draft("step", &format!("t{i}")))
                .event(tag_event(&format!("t{i}")));
            c
        })
        .collect();
    let outcomes = commit_all(&store, changes).await;
    let seq_of: BTreeMap<String, u64> = (0u32..)
        .zip(outcomes)
        .map(|(i, o)| (format!("t{i}"), o.expect("commit").audit_seqs[0]))
        .collect();
    let mut heard: Vec<Published> = Vec::new();
    for _ in 0..TASKS {
        heard.push(next_event(&mut first).await);
    }
    let mut previous: Option<(u64, u64)> = None;
    for published in &heard {
        let RegistryEvent::CountsChanged { batch_id: tag } = &published.event else {
            panic!("unexpected event {published:?}");
        };
        let audit_seq = seq_of[tag];
        if let Some((event_seq, last_audit)) = previous {
            assert!(
                published.seq > event_seq,
                "Published.seq strictly increases"
            );
            assert!(
                audit_seq > last_audit,
                "event {tag} is heard in commit order (audit {audit_seq} after {last_audit})"
            );
        }
        previous = Some((published.seq, audit_seq));
    }
    let mut heard_too = Vec::new();
    for _ in 0..TASKS {
        heard_too.push(next_event(&mut second).await);
    }
    assert_eq!(heard_too, heard);
}

// ---------------------------------------------------------------------------------------------
// Listings

async fn check_devices_listing(open: &Opener) {
    const DEVICES: u32 = 40;
    let store = Store::open(open).await;
    let r = store.registry();
    let (b1, b2, b3) = (batch_id(1), batch_id(2), batch_id(3));
    let placement = |n: u32| -> (Option<&'static str>, Option<u32>, DeviceState) {
        match n % 5 {
            0 => (Some("acme"), Some(1), DeviceState::Ready),
            1 => (Some("acme"), Some(2), DeviceState::Onboarded),
            2 => (Some("globex"), Some(3), DeviceState::AwaitingRegistration),
            3 => (Some("acme"), None, DeviceState::Unassigned),
            _ => (None, None, DeviceState::Unassigned),
        }
    };
    let mut records = Vec::new();
    // Committed out of order: listings follow DeviceId, not commit order.
    for n in (0..DEVICES).rev().step_by(2).chain((0..DEVICES).step_by(2)) {
        let (owner, batch, state) = placement(n);
        let batch = batch.map(batch_id);
        let record = device(n, owner, batch.as_deref(), state);
        let mut c = change([Op::PutDevice(record.clone())]);
        if let Some(batch) = batch {
            c.op(Op::AddToBatch {
                batch_id: batch,
                device_id: record.device_id,
            });
        }
        commit_ok(r, c).await;
        records.push(record);
    }
    // Device 0 moves from b1 to b2.
    let mut moved = r.device(&device_id(0)).await.unwrap().unwrap();
    moved.batch_id = Some(b2.clone());
    moved.assignment += 1;
    commit_ok(
        r,
        change([
            Op::RemoveFromBatch {
                batch_id: b1.clone(),
                device_id: device_id(0),
            },
            Op::AddToBatch {
                batch_id: b2.clone(),
                device_id: device_id(0),
            },
            Op::PutDevice(moved.clone()),
        ]),
    )
    .await;
    records.retain(|d| d.device_id != device_id(0));
    records.push(unversioned_device(moved));
    records.sort_by_key(|d| d.device_id);

    let filter =
        |batch: Option<&str>, owner: Option<&str>, state: Option<DeviceState>| DeviceFilter {
            batch_id: batch.map(str::to_owned),
            owner: owner.map(str::to_owned),
            state,
        };
    let filters = [
        DeviceFilter::default(),
        filter(Some(&b1), None, None),
        filter(Some(&b2), None, None),
        filter(Some(&b3), None, None),
        filter(Some(&batch_id(9)), None, None),
        filter(None, Some("acme"), None),
        filter(None, Some("globex"), None),
        filter(None, Some("initech"), None),
        filter(None, None, Some(DeviceState::Ready)),
        filter(None, None, Some(DeviceState::Unassigned)),
        filter(None, None, Some(DeviceState::Revoked)),
        filter(Some(&b2), None, Some(DeviceState::Onboarded)),
        filter(Some(&b2), None, Some(DeviceState::ReonboardPending)),
        filter(None, Some("acme"), Some(DeviceState::Unassigned)),
        filter(Some(&b1), Some("globex"), None),
        filter(
            Some(&b3),
            Some("globex"),
            Some(DeviceState::AwaitingRegistration),
        ),
    ];
    for f in &filters {
        let expected: Vec<DeviceId> = records
            .iter()
            .filter(|d| {
                f.batch_id
                    .as_ref()
                    .is_none_or(|b| d.batch_id.as_ref() == Some(b))
                    && f.owner.as_ref().is_none_or(|o| d.owner.as_ref() == Some(o))
                    && f.state.is_none_or(|s| d.state() == s)
            })
            .map(|d| d.device_id)
            .collect();
        let whole = r.devices(f, None, usize::MAX).await.unwrap();
        let ids = |list: &[DeviceRecord]| list.iter().map(|d| d.device_id).collect::<Vec<_>>();
        assert_eq!(ids(&whole), expected, "{f:?}");
        for page in [1, 3, 7] {
            let paged = all_devices(r, f, page).await;
            assert_eq!(ids(&paged), expected, "{f:?} in pages of {page}");
        }
        // After a key that is not itself listed.
        if let Some(middle) = expected.get(expected.len() / 2) {
            let mut after = *middle.as_bytes();
            after[31] = 0xff;
            let after = DeviceId::from_bytes(after);
            let rest = r.devices(f, Some(&after), usize::MAX).await.unwrap();
            let want: Vec<DeviceId> = expected.iter().copied().filter(|id| *id > after).collect();
            assert_eq!(ids(&rest), want, "{f:?} after {after}");
        }
    }
    // Listed records are the stored ones, with their versions.
    let all = r
        .devices(&DeviceFilter::default(), None, usize::MAX)
        .await
        .unwrap();
    for (listed, record) in all.iter().zip(&records) {
        let version = if listed.device_id == device_id(0) {
            2
        } else {
            1
        };
        assert_eq!(listed.version, version);
        assert_eq!(&unversioned_device(listed.clone()), record);
    }
}

/// Policies of owners whose names are not prefixes of each other (the order of owner names
/// that share a prefix is `check_policies_ordered_by_owner_then_name`'s).
async fn check_policies_listing(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let owners = ["initech", "acme", "globex"];
    let names = ["zeta.v2", "broker", "alpha", "m-1", "m_2"];
    let mut all = Vec::new();
    for name in names {
        for owner in owners {
            let spec = policy(owner, name);
            commit_ok(r, change([Op::PutPolicy(Box::new(spec.clone()))])).await;
            all.push(spec);
        }
    }
    all.sort_by(|a, b| (&a.owner, &a.name).cmp(&(&b.owner, &b.name)));
    let keys = |list: &[PolicySpec]| {
        list.iter()
            .map(|p| (p.owner.clone(), p.name.clone()))
            .collect::<Vec<_>>()
    };
    for owner in [
        None,
        Some("acme"),
        Some("globex"),
        Some("initech"),
        Some("umbrella"),
    ] {
        let expected: Vec<PolicySpec> = all
            .iter()
            .filter(|p| owner.is_none_or(|o| p.owner == o))
            .cloned()
            .collect();
        assert_eq!(
            r.policies(owner, None, usize::MAX).await.unwrap(),
            expected,
            "{owner:?}"
        );
        for page in [1, 2, 4] {
            let mut paged: Vec<PolicySpec> = Vec::new();
            loop {
                let last = paged.last().map(|p| (p.owner.clone(), p.name.clone()));
                let after = last.as_ref().map(|(o, n)| (o.as_str(), n.as_str()));
                let next = r.policies(owner, after, page).await.unwrap();
                assert!(next.len() <= page);
                if next.is_empty() {
                    break;
                }
                paged.extend(next);
            }
            assert_eq!(
                keys(&paged),
                keys(&expected),
                "{owner:?} in pages of {page}"
            );
        }
    }
    // After a key that is not itself a policy.
    let rest = r
        .policies(Some("acme"), Some(("acme", "c")), usize::MAX)
        .await
        .unwrap();
    assert_eq!(
        keys(&rest),
        ["m-1", "m_2", "zeta.v2"]
            .map(|n| ("acme".to_owned(), n.to_owned()))
            .to_vec()
    );
}

/// Policies list in (owner, name) order also when one owner's name is a prefix of another's.
async fn check_policies_ordered_by_owner_then_name(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    for owner in ["acme-2", "acmf", "acme"] {
        for name in ["b", "a"] {
            commit_ok(r, change([Op::PutPolicy(Box::new(policy(owner, name)))])).await;
        }
    }
    let listed: Vec<(String, String)> = r
        .policies(None, None, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.owner, p.name))
        .collect();
    let expected: Vec<(String, String)> = [
        ("acme", "a"),
        ("acme", "b"),
        ("acme-2", "a"),
        ("acme-2", "b"),
        ("acmf", "a"),
        ("acmf", "b"),
    ]
    .map(|(o, n)| (o.to_owned(), n.to_owned()))
    .to_vec();
    assert_eq!(
        listed, expected,
        "policies are listed in (owner, name) order"
    );
}

async fn check_batches_listing(open: &Opener) {
    const BATCHES: u32 = 12;
    let store = Store::open(open).await;
    let r = store.registry();
    let owner_of = |n: u32| {
        if n.is_multiple_of(3) {
            "globex"
        } else {
            "acme"
        }
    };
    // Committed out of order.
    for n in (1..=BATCHES)
        .rev()
        .step_by(2)
        .chain((1..=BATCHES).rev().skip(1).step_by(2))
    {
        commit_ok(
            r,
            change([Op::PutBatch(batch(&batch_id(n), owner_of(n), n))]),
        )
        .await;
    }
    for owner in [None, Some("acme"), Some("globex"), Some("initech")] {
        let newest_first: Vec<String> = (1..=BATCHES)
            .rev()
            .filter(|n| owner.is_none_or(|o| owner_of(*n) == o))
            .map(batch_id)
            .collect();
        let ids = |list: Vec<BatchRecord>| list.into_iter().map(|b| b.batch_id).collect::<Vec<_>>();
        assert_eq!(
            ids(r.batches(owner, None, usize::MAX).await.unwrap()),
            newest_first,
            "{owner:?}: newest first"
        );
        for page in [1, 2, 5] {
            let mut paged: Vec<String> = Vec::new();
            loop {
                let next = ids(r
                    .batches(owner, paged.last().map(String::as_str), page)
                    .await
                    .unwrap());
                assert!(next.len() <= page);
                if next.is_empty() {
                    break;
                }
                paged.extend(next);
            }
            assert_eq!(paged, newest_first, "{owner:?} in pages of {page}");
        }
        // Strictly older than `before`.
        let before = batch_id(7);
        let older: Vec<String> = newest_first
            .iter()
            .filter(|id| **id < before)
            .cloned()
            .collect();
        assert_eq!(
            ids(r.batches(owner, Some(&before), usize::MAX).await.unwrap()),
            older,
            "{owner:?} before {before}"
        );
    }
    assert_eq!(
        r.batches(None, None, 1).await.unwrap(),
        vec![batch(&batch_id(BATCHES), owner_of(BATCHES), BATCHES)]
    );
}

async fn check_owners_listing(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let names = ["zeta", "acme", "globex", "acme-2", "b", "acme0"];
    for name in names {
        commit_ok(r, change([Op::PutOwner(Box::new(owner(name)))])).await;
    }
    let mut sorted = names.map(str::to_owned).to_vec();
    sorted.sort();
    let listed = r.owners(None, usize::MAX).await.unwrap();
    assert_eq!(
        listed.iter().map(|o| o.name.clone()).collect::<Vec<_>>(),
        sorted
    );
    for record in &listed {
        assert_eq!(record.version, 1);
        assert_eq!(unversioned_owner(record.clone()), owner(&record.name));
    }
    for page in [1, 2, 4] {
        let mut paged: Vec<String> = Vec::new();
        loop {
            let next = r
                .owners(paged.last().map(String::as_str), page)
                .await
                .unwrap();
            assert!(next.len() <= page);
            if next.is_empty() {
                break;
            }
            paged.extend(next.into_iter().map(|o| o.name));
        }
        assert_eq!(paged, sorted, "in pages of {page}");
    }
    let rest: Vec<String> = r
        .owners(Some("acme-1"), usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    let want: Vec<String> = sorted
        .iter()
        .filter(|n| n.as_str() > "acme-1")
        .cloned()
        .collect();
    assert_eq!(rest, want);
}

/// Operator certificates with serials as the service makes them (random, 32 hex digits).
async fn check_operator_certificates_listing(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let owners = ["acme", "globex", "*"];
    let mut records: Vec<OperatorCertificateRecord> = (0..15)
        .map(|i| operator_certificate(random_serial(), owners[i % 3], &format!("op{i}")))
        .collect();
    records[4] = revoked(records[4].clone());
    for record in &records {
        commit_ok(
            r,
            change([Op::PutOperatorCertificate(Box::new(record.clone()))]),
        )
        .await;
    }
    records.sort_by_key(|o| o.serial);
    for owner in [
        None,
        Some("acme"),
        Some("globex"),
        Some("*"),
        Some("initech"),
    ] {
        let expected: Vec<OperatorCertificateRecord> = records
            .iter()
            .filter(|o| owner.is_none_or(|w| o.owner == w))
            .cloned()
            .collect();
        assert_eq!(
            r.operator_certificates(owner, None, usize::MAX)
                .await
                .unwrap(),
            expected,
            "{owner:?}"
        );
        for page in [1, 2, 4] {
            let mut paged: Vec<OperatorCertificateRecord> = Vec::new();
            loop {
                let next = r
                    .operator_certificates(owner, paged.last().map(|o| o.serial), page)
                    .await
                    .unwrap();
                assert!(next.len() <= page);
                if next.is_empty() {
                    break;
                }
                paged.extend(next);
            }
            assert_eq!(paged, expected, "{owner:?} in pages of {page}");
        }
    }
}

/// Operator certificates list in serial order, serials compared as numbers.
async fn check_operator_certificates_ordered_by_serial_value(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    for value in [0x10, 0x2, 0xabc, 0x3] {
        commit_ok(
            r,
            change([Op::PutOperatorCertificate(Box::new(operator_certificate(
                serial(value),
                "acme",
                "op",
            )))]),
        )
        .await;
    }
    let listed: Vec<u128> = r
        .operator_certificates(None, None, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.serial.get())
        .collect();
    assert_eq!(
        listed,
        vec![0x2, 0x3, 0x10, 0xabc],
        "operator certificates are listed in serial order"
    );
    let after: Vec<u128> = r
        .operator_certificates(None, Some(serial(0x3)), usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.serial.get())
        .collect();
    assert_eq!(after, vec![0x10, 0xabc]);
}

async fn check_revocations_per_issuer(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let serials: Vec<Serial> = (0..7).map(|_| random_serial()).collect();
    let lists: [(&str, &[usize]); 4] = [
        ("platform", &[0, 1]),
        ("acme/1", &[2]),
        ("acme/10", &[3, 4, 5, 0]),
        ("acme-2/1", &[6]),
    ];
    revoke_all(r, &serials, &lists).await;
    for (issuer, members) in lists {
        assert_revoked(r, issuer, &serials, members).await;
    }
    for issuer in ["acme/2", "acme-2/10", "globex/1"] {
        assert_revoked(r, issuer, &serials, &[]).await;
    }
    // A serial revoked again is still one entry.
    commit_ok(
        r,
        change([Op::Revoke {
            issuer: "acme/1".into(),
            serial: serials[2],
            entry: revocation_entry(2),
        }]),
    )
    .await;
    assert_revoked(r, "acme/1", &serials, &[2]).await;
}

/// The platform CA's revocations are its own when an owner is named `platform` (a valid
/// owner name), whose issuing CA is then `platform/1`.
async fn check_revocations_of_platform_and_an_owner_named_platform(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let serials: Vec<Serial> = (0..3).map(|_| random_serial()).collect();
    let lists: [(&str, &[usize]); 2] = [("platform", &[0, 1]), ("platform/1", &[2])];
    revoke_all(r, &serials, &lists).await;
    for (issuer, members) in lists {
        assert_revoked(r, issuer, &serials, members).await;
    }
}

/// The CRL entry of revoked serial number `i` of a check.
fn revocation_entry(i: usize) -> CrlEntryRecord {
    crl_entry(if i.is_multiple_of(2) {
        RevocationReason::KeyCompromise
    } else {
        RevocationReason::Superseded
    })
}

/// Revokes `serials[i]` for each issuer's members, a commit each.
async fn revoke_all(registry: &dyn Registry, serials: &[Serial], lists: &[(&str, &[usize])]) {
    for (issuer, members) in lists {
        for &i in *members {
            commit_ok(
                registry,
                change([Op::Revoke {
                    issuer: (*issuer).to_owned(),
                    serial: serials[i],
                    entry: revocation_entry(i),
                }]),
            )
            .await;
        }
    }
}

/// `revoked(issuer)` lists exactly `serials[i]` of `members`, and `revoked_count` counts them.
async fn assert_revoked(
    registry: &dyn Registry,
    issuer: &str,
    serials: &[Serial],
    members: &[usize],
) {
    let mut expected: Vec<(Serial, CrlEntryRecord)> = members
        .iter()
        .map(|&i| (serials[i], revocation_entry(i)))
        .collect();
    expected.sort_by_key(|(s, _)| *s);
    let mut listed = registry
        .revoked(issuer)
        .await
        .unwrap_or_else(|e| panic!("revoked({issuer:?}) failed: {e}"));
    listed.sort_by_key(|(s, _)| *s);
    assert_eq!(listed, expected, "revoked({issuer:?})");
    assert_eq!(
        registry.revoked_count(issuer).await.unwrap(),
        members.len() as u64,
        "revoked_count({issuer:?})"
    );
}

async fn check_credential_count_counts_distinct_serials(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let put = |s: Serial, status: CredentialStatus| {
        let mut record = credential(s, device_id(1), &batch_id(1));
        record.status = status;
        Op::PutCredential(Box::new(record))
    };
    let s: Vec<Serial> = (0..6).map(|_| random_serial()).collect();
    commit_ok(r, change([put(s[0], CredentialStatus::Active)])).await;
    assert_eq!(r.credential_count().await.unwrap(), 1);
    commit_ok(r, change([put(s[0], CredentialStatus::Superseded)])).await;
    assert_eq!(
        r.credential_count().await.unwrap(),
        1,
        "a rewrite is the same credential"
    );
    assert_eq!(
        r.credential(s[0]).await.unwrap().unwrap().status,
        CredentialStatus::Superseded
    );
    commit_ok(
        r,
        change([
            put(s[1], CredentialStatus::Active),
            put(s[2], CredentialStatus::Active),
        ]),
    )
    .await;
    assert_eq!(r.credential_count().await.unwrap(), 3);
    commit_ok(
        r,
        change([
            put(s[3], CredentialStatus::Active),
            put(s[3], CredentialStatus::Revoked),
        ]),
    )
    .await;
    assert_eq!(r.credential_count().await.unwrap(), 4);
    let mut refused = change([put(s[4], CredentialStatus::Active)]);
    refused.guard(Guard::SerialAbsent(s[0]));
    conflict_of(r.commit(refused).await);
    assert_eq!(r.credential_count().await.unwrap(), 4);
    // Concurrent: new serials and rewrites of one serial at once.
    let fresh: Vec<Serial> = (0..50).map(|_| random_serial()).collect();
    let mut changes: Vec<Change> = fresh
        .iter()
        .map(|s| change([put(*s, CredentialStatus::Active)]))
        .collect();
    changes.extend((0..20).map(|_| change([put(s[5], CredentialStatus::Active)])));
    for outcome in commit_all(&store, changes).await {
        outcome.expect("commit");
    }
    assert_eq!(r.credential_count().await.unwrap(), 4 + 50 + 1);
}

async fn check_scheduled_revocations_due(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let hour = time::Duration::hours(1);
    let s: Vec<Serial> = (0..5).map(|_| random_serial()).collect();
    let dues = [T0 - hour, T0, T0 + hour, T0 + time::Duration::days(1)];
    commit_ok(
        r,
        change(
            s.iter()
                .zip(dues)
                .map(|(serial, due)| Op::ScheduleRevocation {
                    serial: *serial,
                    due,
                }),
        ),
    )
    .await;
    let due_by = |when: OffsetDateTime, limit: usize| {
        let r = store.shared();
        async move {
            let mut list = r.scheduled_revocations(when, limit).await.unwrap();
            list.sort();
            list
        }
    };
    assert_eq!(due_by(T0, usize::MAX).await, {
        let mut v = vec![(s[0], dues[0]), (s[1], dues[1])];
        v.sort();
        v
    });
    assert_eq!(due_by(T0 - 2 * hour, usize::MAX).await, Vec::new());
    assert_eq!(
        due_by(T0 + time::Duration::days(2), usize::MAX).await.len(),
        4
    );
    let one = due_by(T0, 1).await;
    assert_eq!(one.len(), 1);
    assert!(one[0] == (s[0], dues[0]) || one[0] == (s[1], dues[1]));
    // Rescheduling replaces; cancelling removes; cancelling nothing is no error.
    commit_ok(
        r,
        change([
            Op::ScheduleRevocation {
                serial: s[2],
                due: T0 - 2 * hour,
            },
            Op::CancelScheduledRevocation(s[0]),
            Op::CancelScheduledRevocation(s[4]),
        ]),
    )
    .await;
    assert_eq!(r.scheduled_revocation(s[0]).await.unwrap(), None);
    assert_eq!(
        r.scheduled_revocation(s[2]).await.unwrap(),
        Some(T0 - 2 * hour)
    );
    assert_eq!(r.scheduled_revocation(s[4]).await.unwrap(), None);
    assert_eq!(due_by(T0, usize::MAX).await, {
        let mut v = vec![(s[1], dues[1]), (s[2], T0 - 2 * hour)];
        v.sort();
        v
    });
    assert_eq!(
        due_by(T0 + time::Duration::days(2), usize::MAX).await.len(),
        3
    );
}

/// `limit` 0 lists nothing, in every listing.
async fn check_limit_zero_returns_nothing(open: &Opener) {
    let store = Store::open(open).await;
    let r = store.registry();
    let mut c = change(insert_device(1, &batch_id(1)));
    c.op(Op::PutBatch(batch(&batch_id(1), "acme", 1)))
        .op(Op::PutPolicy(Box::new(policy("acme", "broker"))))
        .op(Op::PutOwner(Box::new(owner("acme"))))
        .op(Op::PutOperatorCertificate(Box::new(operator_certificate(
            random_serial(),
            "acme",
            "alice",
        ))))
        .op(Op::ScheduleRevocation {
            serial: random_serial(),
            due: T0,
        })
        .audit(draft("setup", "store"));
    commit_ok(r, c).await;
    let devices = r.devices(&DeviceFilter::default(), None, 0).await.unwrap();
    assert!(devices.is_empty(), "devices(limit 0) returned records");
    let policies = r.policies(None, None, 0).await.unwrap();
    assert!(policies.is_empty(), "policies(limit 0) returned records");
    let batches = r.batches(None, None, 0).await.unwrap();
    assert!(batches.is_empty(), "batches(limit 0) returned records");
    let owners = r.owners(None, 0).await.unwrap();
    assert!(owners.is_empty(), "owners(limit 0) returned records");
    let operators = r.operator_certificates(None, None, 0).await.unwrap();
    assert!(
        operators.is_empty(),
        "operator_certificates(limit 0) returned records"
    );
    let scheduled = r.scheduled_revocations(T0, 0).await.unwrap();
    assert!(
        scheduled.is_empty(),
        "scheduled_revocations(limit 0) returned records"
    );
    let audit = r.audit(1, 0).await.unwrap();
    assert!(audit.is_empty(), "audit(limit 0) returned records");
}

// ---------------------------------------------------------------------------------------------
// Durability

/// Everything a store answers about the records `populate` wrote.
#[derive(Debug, PartialEq)]
struct Snapshot {
    devices: Vec<DeviceRecord>,
    members: Vec<DeviceRecord>,
    policies: Vec<PolicySpec>,
    batches: Vec<BatchRecord>,
    owners: Vec<OwnerRecord>,
    operators: Vec<OperatorCertificateRecord>,
    credentials: Vec<Option<CredentialRecord>>,
    credential_count: u64,
    revoked: Vec<(Serial, CrlEntryRecord)>,
    revoked_count: u64,
    crls: Vec<Option<CrlRecord>>,
    scheduled: Vec<(Serial, OffsetDateTime)>,
    request_ids: Vec<Option<String>>,
    audit: Vec<(u64, StoredAuditEntry)>,
    audit_head: u64,
}

/// What `populate` wrote, to read it back.
struct Populated {
    serials: Vec<Serial>,
}

/// A store with some of everything, written by concurrent and sequential commits.
async fn populate(store: &Store) -> Populated {
    let r = store.registry();
    let b = batch_id(1);
    let serials: Vec<Serial> = (0..20).map(|_| random_serial()).collect();
    let mut c = change([
        Op::PutBatch(batch(&b, "acme", 1)),
        Op::PutPolicy(Box::new(policy("acme", "broker"))),
        Op::PutOwner(Box::new(owner("acme"))),
        Op::PutRequestId {
            owner: "acme".into(),
            request_id: "rq-1".into(),
            batch_id: b.clone(),
        },
        Op::PutOperatorCertificate(Box::new(operator_certificate(serials[19], "acme", "alice"))),
        Op::PutCrl {
            issuer: "acme/1".into(),
            record: crl(3),
        },
    ]);
    c.audit(draft("setup", "store"));
    commit_ok(r, c).await;
    let changes = (0..16u32)
        .map(|n| {
            let mut c = change(insert_device(n, &b));
            c.op(Op::AdjustCounts {
                batch_id: b.clone(),
                delta: CountsDelta::joined(DeviceState::Ready),
            })
            .op(Op::PutCredential(Box::new(credential(
                serials[n as usize],
                device_id(n),
                &b,
            ))))
            .audit(draft("device.add", &format!("device:{n}")));
            c
        })
        .collect();
    for outcome in commit_all(store, changes).await {
        outcome.expect("commit");
    }
    // Some updates, so that versions above 1 are kept too.
    for n in 0..4u32 {
        let mut record = r.device(&device_id(n)).await.unwrap().unwrap();
        record.refusals = u64::from(n) + 1;
        let mut c = change([
            Op::PutDevice(record),
            Op::Revoke {
                issuer: "acme/1".into(),
                serial: serials[n as usize],
                entry: crl_entry(RevocationReason::KeyCompromise),
            },
            Op::ScheduleRevocation {
                serial: serials[n as usize + 4],
                due: T0 + time::Duration::hours(i64::from(n)),
            },
        ]);
        c.audit(draft("device.refused", &format!("device:{n}")));
        commit_ok(r, c).await;
    }
    let mut acme = r.owner("acme").await.unwrap().unwrap();
    acme.created_by = "updated".into();
    commit_ok(r, change([Op::PutOwner(Box::new(acme))])).await;
    Populated { serials }
}

async fn snapshot(r: &dyn Registry, populated: &Populated) -> Snapshot {
    let mut revoked = r.revoked("acme/1").await.unwrap();
    revoked.sort_by_key(|(s, _)| *s);
    let mut scheduled = r
        .scheduled_revocations(T0 + time::Duration::days(365), usize::MAX)
        .await
        .unwrap();
    scheduled.sort();
    let mut credentials = Vec::new();
    for serial in &populated.serials {
        credentials.push(r.credential(*serial).await.unwrap());
    }
    Snapshot {
        devices: r
            .devices(&DeviceFilter::default(), None, usize::MAX)
            .await
            .unwrap(),
        members: r
            .devices(
                &DeviceFilter {
                    batch_id: Some(batch_id(1)),
                    ..DeviceFilter::default()
                },
                None,
                usize::MAX,
            )
            .await
            .unwrap(),
        policies: r.policies(None, None, usize::MAX).await.unwrap(),
        batches: r.batches(None, None, usize::MAX).await.unwrap(),
        owners: r.owners(None, usize::MAX).await.unwrap(),
        operators: r
            .operator_certificates(None, None, usize::MAX)
            .await
            .unwrap(),
        credentials,
        credential_count: r.credential_count().await.unwrap(),
        revoked,
        revoked_count: r.revoked_count("acme/1").await.unwrap(),
        crls: vec![
            r.crl("acme/1").await.unwrap(),
            r.crl("acme/2").await.unwrap(),
        ],
        scheduled,
        request_ids: vec![
            r.request_id("acme", "rq-1").await.unwrap(),
            r.request_id("acme", "rq-2").await.unwrap(),
        ],
        audit: r.audit(1, usize::MAX).await.unwrap(),
        audit_head: r.audit_head().await.unwrap(),
    }
}

/// After `commit` answers Ok, dropping and reopening the store keeps everything, and the
/// reopened store goes on from it: the chain, versions, guards, CRL numbers and counts.
async fn check_commits_survive_reopen(open: &Opener) {
    let mut store = Store::open(open).await;
    let populated = populate(&store).await;
    let before = snapshot(store.registry(), &populated).await;
    assert_eq!(before.devices.len(), 16);
    assert_eq!(before.credential_count, 16);
    assert_eq!(before.batches[0].counts.total, 16);
    verified_audit(store.registry()).await;

    store.reopen().await;
    let r = store.registry();
    assert!(!r.failed());
    let after = snapshot(r, &populated).await;
    assert_eq!(after, before, "a reopened store answers as before");
    verified_audit(r).await;

    // It goes on from what it kept.
    let mut subscription = r.subscribe();
    let head = before.audit_head;
    let mut c = Change::new();
    c.audit(draft("after", "reopen")).event(tag_event("after"));
    let receipt = commit_ok(r, c).await;
    assert_eq!(receipt.audit_seqs, vec![head + 1], "the chain continues");
    let entries = verified_audit(r).await;
    assert_eq!(
        entries[head as usize].1.prev_hash,
        before.audit[head as usize - 1].1.hash
    );
    assert_eq!(
        next_event(&mut subscription).await.event,
        tag_event("after")
    );

    let stale = device(0, Some("acme"), Some(&batch_id(1)), DeviceState::Ready);
    assert_eq!(
        conflict_of(r.commit(change([Op::PutDevice(stale)])).await),
        Conflict::DeviceChanged {
            device_id: device_id(0),
            expected: 0,
            found: 2
        }
    );
    let mut current = r.device(&device_id(0)).await.unwrap().unwrap();
    current.refusals += 1;
    commit_ok(r, change([Op::PutDevice(current)])).await;
    assert_eq!(r.device(&device_id(0)).await.unwrap().unwrap().version, 3);
    assert_eq!(
        conflict_of(
            r.commit(change([Op::PutOwner(Box::new(owner("acme")))]))
                .await
        ),
        Conflict::OwnerChanged {
            name: "acme".into(),
            expected: 0,
            found: 2
        }
    );
    let mut taken = Change::new();
    taken.guard(Guard::SerialAbsent(populated.serials[0]));
    assert_eq!(
        conflict_of(r.commit(taken).await),
        Conflict::SerialTaken(populated.serials[0])
    );
    let mut used = Change::new();
    used.guard(Guard::RequestIdAbsent {
        owner: "acme".into(),
        request_id: "rq-1".into(),
    });
    assert_eq!(
        conflict_of(r.commit(used).await),
        Conflict::RequestIdUsed {
            owner: "acme".into(),
            request_id: "rq-1".into()
        }
    );
    assert_eq!(
        conflict_of(
            r.commit(change([Op::PutCrl {
                issuer: "acme/1".into(),
                record: crl(3)
            }]))
            .await
        ),
        Conflict::CrlNumberTaken {
            issuer: "acme/1".into(),
            number: 3,
            stored: 3
        }
    );
    commit_ok(
        r,
        change([
            Op::AdjustCounts {
                batch_id: batch_id(1),
                delta: CountsDelta::refusal(),
            },
            Op::PutCredential(Box::new(credential(
                random_serial(),
                device_id(0),
                &batch_id(1),
            ))),
        ]),
    )
    .await;
    let counts = r.batch(&batch_id(1)).await.unwrap().unwrap().counts;
    assert_eq!((counts.total, counts.refusals), (16, 1));
    assert_eq!(r.credential_count().await.unwrap(), 17);

    // And that too survives another reopen.
    let before = snapshot(r, &populated).await;
    store.reopen().await;
    assert_eq!(snapshot(store.registry(), &populated).await, before);
    verified_audit(store.registry()).await;
}

/// Many concurrent commits, each answered Ok, then a reopen: every one is there.
async fn check_concurrent_commits_survive_reopen(open: &Opener) {
    const TASKS: u32 = 500;
    let mut store = Store::open(open).await;
    let b = batch_id(1);
    commit_ok(
        store.registry(),
        change([Op::PutBatch(batch(&b, "acme", 1))]),
    )
    .await;
    let serials: Vec<Serial> = (0..TASKS).map(|_| random_serial()).collect();
    let changes = (0..TASKS)
        .map(|n| {
            let mut c = change(insert_device(n, &b));
            c.op(Op::AdjustCounts {
                batch_id: b.clone(),
                delta: CountsDelta::joined(DeviceState::Ready),
            })
            .op(Op::PutCredential(Box::new(credential(
                serials[n as usize],
                device_id(n),
                &b,
            ))))
            .audit(draft("device.add", &format!("device:{n}")));
            c
        })
        .collect();
    for outcome in commit_all(&store, changes).await {
        outcome.expect("commit");
    }
    store.reopen().await;
    let r = store.registry();
    for n in 0..TASKS {
        assert!(
            r.device(&device_id(n)).await.unwrap().is_some(),
            "device {n}"
        );
        assert!(
            r.credential(serials[n as usize]).await.unwrap().is_some(),
            "credential {n}"
        );
    }
    assert_eq!(r.credential_count().await.unwrap(), u64::from(TASKS));
    assert_eq!(
        r.batch(&b).await.unwrap().unwrap().counts.total,
        u64::from(TASKS)
    );
    let members = DeviceFilter {
        batch_id: Some(b.clone()),
        ..DeviceFilter::default()
    };
    assert_eq!(all_devices(r, &members, 97).await.len() as u32, TASKS);
    assert_eq!(verified_audit(r).await.len() as u32, TASKS);
}

// ---------------------------------------------------------------------------------------------
// Back-pressure

/// 2,000 commits spawned at once all complete, and the result adds up.
async fn check_two_thousand_concurrent_commits(open: &Opener) {
    const TASKS: u32 = 2000;
    let store = Store::open(open).await;
    let r = store.registry();
    let b = batch_id(1);
    commit_ok(r, change([Op::PutBatch(batch(&b, "acme", 1))])).await;
    let listener = {
        let mut subscription = r.subscribe();
        tokio::spawn(async move {
            let mut heard = Vec::with_capacity(TASKS as usize);
            while heard.len() < TASKS as usize {
                heard.push(next_event(&mut subscription).await);
            }
            heard
        })
    };
    let serials: Vec<Serial> = (0..TASKS).map(|_| random_serial()).collect();
    let changes: Vec<Change> = (0..TASKS)
        .map(|n| {
            let mut c = change(insert_device(n, &b));
            c.guard(Guard::SerialAbsent(serials[n as usize]))
                .op(Op::PutCredential(Box::new(credential(
                    serials[n as usize],
                    device_id(n),
                    &b,
                ))))
                .audit(draft("device.add", &format!("device:{n}")))
                .batch_moved(
                    &b,
                    CountsDelta::joined(DeviceState::Ready),
                    Some(DeviceEvent::new(
                        device_id(n),
                        DeviceEventKind::Added,
                        T0,
                        "c",
                    )),
                );
            c
        })
        .collect();
    let outcomes = tokio::time::timeout(Duration::from_secs(300), commit_all(&store, changes))
        .await
        .expect("2,000 concurrent commits complete");
    let mut seqs = BTreeSet::new();
    for outcome in outcomes {
        seqs.extend(outcome.expect("commit").audit_seqs);
    }
    assert_eq!(seqs, (1..=u64::from(TASKS)).collect::<BTreeSet<_>>());
    let counts = r.batch(&b).await.unwrap().unwrap().counts;
    assert_eq!(
        (counts.total, counts.registered),
        (u64::from(TASKS), u64::from(TASKS))
    );
    assert_eq!(r.credential_count().await.unwrap(), u64::from(TASKS));
    let members = DeviceFilter {
        batch_id: Some(b.clone()),
        ..DeviceFilter::default()
    };
    let listed = all_devices(r, &members, 333).await;
    let expected: Vec<DeviceId> = (0..TASKS).map(device_id).collect();
    assert_eq!(
        listed.iter().map(|d| d.device_id).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(verified_audit(r).await.len() as u32, TASKS);
    // Each change's two events (the device's, then the counts'), 2,000 changes: the listener
    // heard the first 2,000 of the 4,000, in order.
    let heard = listener.await.expect("listener");
    for pair in heard.windows(2) {
        assert!(pair[0].seq < pair[1].seq);
    }
    for pair in heard.chunks(2) {
        assert!(
            matches!(pair[0].event, RegistryEvent::Device { .. }),
            "{pair:?}"
        );
        assert_eq!(
            pair[1].event,
            RegistryEvent::CountsChanged {
                batch_id: b.clone()
            }
        );
    }
}

/// More commits at once than a backend is likely to queue (sled queues 8,192): every one is
/// waited for and completes.
async fn check_commits_beyond_the_queue_bound(open: &Opener) {
    const TASKS: u32 = 10_000;
    let store = Store::open(open).await;
    let r = store.registry();
    let b = batch_id(1);
    commit_ok(r, change([Op::PutBatch(batch(&b, "acme", 1))])).await;
    let changes: Vec<Change> = (0..TASKS)
        .map(|n| {
            let mut c = change([Op::AdjustCounts {
                batch_id: b.clone(),
                delta: CountsDelta::refusal(),
            }]);
            c.audit(draft("device.refused", &format!("n{n}")));
            c
        })
        .collect();
    let outcomes = tokio::time::timeout(Duration::from_secs(300), commit_all(&store, changes))
        .await
        .expect("10,000 concurrent commits complete");
    assert!(outcomes.iter().all(Result::is_ok));
    assert_eq!(
        r.batch(&b).await.unwrap().unwrap().counts.refusals,
        u64::from(TASKS)
    );
    assert_eq!(r.audit_head().await.unwrap(), u64::from(TASKS));
    verified_audit(r).await;
    // Reads answer as usual afterwards.
    assert!(!r.failed());
}

conformance!(
    postgres,
    conformance::postgres_opener(),
    known_deviations: [
        // Serials are stored as their text form (unpadded hex), ordered bytewise, as on sled.
        // Latent: the service's operator serials are all 32 digits.
        check_operator_certificates_ordered_by_serial_value:
            "operator certificates are listed in serial order",
    ],
);
