//! What the registry conformance suite (`tests/registry_conformance.rs`) shares between its
//! checks: how a backend hands over stores ([`Opener`], [`Opened`]), the [`Store`] a check
//! works on (with [`Store::reopen`] for durability), and records built the way the service
//! builds them.
//!
//! ```text
//!  backend ──Opener()──▶ Opened { registry, reopen, keep } ──▶ Store ──registry()──▶ checks
//!                                                               └──reopen(): drop the registry,
//!                                                                  open the same data again
//! ```
#![allow(
    dead_code,
    unreachable_pub,
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test support; a failed expect is a failed test"
)]

// The throwaway-cluster helper loadgen and the replica tests use too.
#[path = "../../../tests/src/postgres.rs"]
mod postgres;

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use enroll_service::audit::{AuditDraft, StoredAuditEntry, verify_chain};
use enroll_service::model::{
    AuthorityRecord, AuthorityState, BatchCounts, BatchRecord, CaMode, CredentialRecord,
    CredentialStatus, CrlEntryRecord, CrlRecord, DeviceRecord, DeviceState,
    OperatorCertificateRecord, OwnerRecord, Registration, RegistrationMetadata, RevocationRecord,
};
use enroll_service::pki::{KeyReference, RevocationReason, Role, Serial};
use enroll_service::policy::PolicySpec;
use enroll_service::store::{
    Change, Conflict, PostgresRegistry, Published, Receipt, Registry, RegistryEvent, SledRegistry,
    StoreError, Subscription,
};
use oxroot_proto::v1;
use rot_core::keys::{DeviceId, PublicKey};
use time::OffsetDateTime;
use time::macros::datetime;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Opens the same store again once its previous registry was dropped: the same data behind a
/// new registry, as after a restart (or on another replica).
pub type Reopen = Box<dyn FnMut() -> BoxFuture<Arc<dyn Registry>> + Send>;

/// A fresh, empty store, as a backend's [`Opener`] makes it.
pub struct Opened {
    /// The registry over it.
    pub registry: Arc<dyn Registry>,
    /// Opens its data again (called only after every clone of the previous registry was
    /// dropped).
    pub reopen: Reopen,
    /// Whatever must outlive every registry of the store (a temporary directory, a database or
    /// schema, a test cluster). Dropped after the last registry.
    pub keep: Box<dyn Any + Send>,
}

/// Makes a fresh, empty store of one backend per call. Checks call it once each.
pub type Opener = Box<dyn Fn() -> BoxFuture<Opened> + Send + Sync>;

/// The store a check works on.
pub struct Store {
    // Field order is drop order: the registry goes before what keeps its data.
    registry: Option<Arc<dyn Registry>>,
    reopen: Mutex<Reopen>,
    _keep: Mutex<Box<dyn Any + Send>>,
}

impl Store {
    /// A fresh, empty store of `opener`'s backend.
    pub async fn open(opener: &Opener) -> Self {
        let opened = opener().await;
        Self {
            registry: Some(opened.registry),
            reopen: Mutex::new(opened.reopen),
            _keep: Mutex::new(opened.keep),
        }
    }

    /// The registry.
    pub fn registry(&self) -> &dyn Registry {
        self.registry.as_deref().expect("a registry")
    }

    /// A clone of the registry for a spawned task (which must end before [`Store::reopen`]).
    pub fn shared(&self) -> Arc<dyn Registry> {
        self.registry.clone().expect("a registry")
    }

    /// Drops the registry and opens the same data again: what a restart keeps.
    pub async fn reopen(&mut self) {
        let registry = self.registry.take().expect("a registry");
        assert_eq!(
            Arc::strong_count(&registry),
            1,
            "the check still holds a clone of the registry it reopens"
        );
        drop(registry);
        let reopened = {
            let mut reopen = self.reopen.lock().expect("reopen");
            reopen()
        };
        self.registry = Some(reopened.await);
    }
}

/// The sled backend: a store per temporary directory.
pub fn sled_opener() -> Opener {
    Box::new(|| {
        Box::pin(async {
            let dir = tempfile::tempdir().expect("temporary directory");
            let path = dir.path().to_path_buf();
            let registry: Arc<dyn Registry> = SledRegistry::open(&path).expect("open sled");
            let reopen: Reopen = Box::new(move || {
                let path = path.clone();
                Box::pin(async move { reopen_sled(path).await })
            });
            Opened {
                registry,
                reopen,
                keep: Box::new(dir),
            }
        })
    })
}

/// Fresh PostgreSQL stores: a throwaway cluster per store (initdb + pg_ctl, as an
/// unprivileged user when the tests run as root), migrated, stopped when the store is dropped.
pub fn postgres_opener() -> Opener {
    Box::new(|| {
        Box::pin(async {
            let cluster = tokio::task::spawn_blocking(postgres::Cluster::start)
                .await
                .expect("cluster");
            let config = cluster.config();
            enroll_service::store::postgres::migrate(&config)
                .await
                .expect("migrate");
            let registry: Arc<dyn Registry> =
                PostgresRegistry::connect(&config).await.expect("connect");
            let reopen: Reopen = Box::new(move || {
                let config = config.clone();
                Box::pin(async move {
                    let registry: Arc<dyn Registry> = PostgresRegistry::connect(&config)
                        .await
                        .expect("connect again");
                    registry
                })
            });
            Opened {
                registry,
                reopen,
                keep: Box::new(cluster),
            }
        })
    })
}

/// Opens a sled registry again. The dropped registry's writer thread lets go of the database
/// (and sled of its file lock) a moment after the registry is dropped, so opening is retried
/// for a while.
async fn reopen_sled(path: PathBuf) -> Arc<dyn Registry> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match SledRegistry::open(&path) {
            Ok(registry) => return registry,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("reopening the sled registry: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running checks

/// A backend's deviation from the contract that is known and reported: the check must fail,
/// with a panic message containing `expect`.
pub type KnownDeviation = (&'static str, &'static str);

/// Runs one check on its own task: a panic fails the test with the check's own message, unless
/// the check is a known deviation of this backend, which must then fail as described (and a
/// deviation that passes fails the test, so that the list is kept up to date).
pub async fn run(name: &str, known: &[KnownDeviation], check: BoxFuture<()>) {
    let outcome = tokio::spawn(check).await;
    let expected = known.iter().find(|(check, _)| *check == name);
    match (outcome, expected) {
        (Ok(()), None) => {}
        (Ok(()), Some((_, why))) => panic!(
            "{name} is listed as a known deviation ({why:?}) but passed: remove it from the \
             backend's known_deviations"
        ),
        (Err(e), None) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        (Err(e), Some((_, why))) if e.is_panic() => {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or_default()
                .to_owned();
            assert!(
                message.contains(why),
                "{name} is a known deviation expected to fail with {why:?}, but it failed \
                 otherwise: {message}"
            );
        }
        (Err(e), _) => panic!("{name} did not finish: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Commits and events

/// How long a check waits for an event (a networked store's tail polls).
pub const EVENT_WAIT: Duration = Duration::from_secs(20);

/// Commits a change that must be accepted.
pub async fn commit_ok(registry: &dyn Registry, change: Change) -> Receipt {
    match registry.commit(change).await {
        Ok(receipt) => receipt,
        Err(e) => panic!("commit refused: {e}"),
    }
}

/// The conflict a refused commit names.
pub fn conflict_of(result: Result<Receipt, StoreError>) -> Conflict {
    match result {
        Ok(receipt) => panic!("the change was accepted ({receipt:?}); a conflict was expected"),
        Err(StoreError::Conflict(conflict)) => conflict,
        Err(e) => panic!("a conflict was expected, got {e}"),
    }
}

/// The next event of a subscription.
pub async fn next_event(subscription: &mut Subscription) -> Published {
    match tokio::time::timeout(EVENT_WAIT, subscription.recv()).await {
        Ok(Ok(published)) => published,
        Ok(Err(e)) => panic!("subscription failed: {e}"),
        Err(elapsed) => panic!("no event within {EVENT_WAIT:?}: {elapsed}"),
    }
}

/// Every event up to and including the first one equal to `marker`.
pub async fn events_until(
    subscription: &mut Subscription,
    marker: &RegistryEvent,
) -> Vec<Published> {
    let mut out = Vec::new();
    loop {
        let published = next_event(subscription).await;
        let done = &published.event == marker;
        out.push(published);
        if done {
            return out;
        }
    }
}

/// An event that names `tag` (carried as a batch ID: the store does not look inside events).
pub fn tag_event(tag: &str) -> RegistryEvent {
    RegistryEvent::CountsChanged {
        batch_id: tag.to_owned(),
    }
}

/// The whole audit log, checked: contiguous from 1, each record's seq its position, the hash
/// chain intact from the genesis hash, and as long as the head says.
pub async fn verified_audit(registry: &dyn Registry) -> Vec<(u64, StoredAuditEntry)> {
    let head = registry.audit_head().await.expect("audit head");
    let entries = registry.audit(1, usize::MAX).await.expect("audit");
    let seqs: Vec<u64> = entries.iter().map(|(seq, _)| *seq).collect();
    let expected: Vec<u64> = (1..=head).collect();
    assert_eq!(seqs, expected, "audit sequence numbers are 1..=audit_head");
    let report = verify_chain(entries.clone(), None);
    assert_eq!(report.failure, None, "the audit chain verifies");
    assert_eq!(report.checked, head);
    entries
}

// ---------------------------------------------------------------------------------------------
// Records

/// The time every fixture is built at (whole seconds: every backend keeps those exactly).
pub const T0: OffsetDateTime = datetime!(2030-01-01 00:00:00 UTC);

/// The P-256 base point (SEC 2 §2.4.2): a valid public key with a published value.
pub fn base_point() -> PublicKey {
    const G: &str = "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296\
                     4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";
    PublicKey::from_sec1(&hex::decode(G).unwrap()).unwrap()
}

/// DeviceId number `n`: IDs sort as their numbers do.
pub fn device_id(n: u32) -> DeviceId {
    let mut bytes = [0x5a; 32];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    DeviceId::from_bytes(bytes)
}

/// A serial from a number.
pub fn serial(n: u128) -> Serial {
    Serial::new(n).expect("a non-zero serial")
}

/// A serial as the service makes them (random, 32 hex digits).
pub fn random_serial() -> Serial {
    Serial::random().expect("serial")
}

/// A registration with metadata.
pub fn registration() -> Registration {
    Registration {
        epk: base_point(),
        registered_at: T0,
        proof_context_hex: "00ff".into(),
        metadata: RegistrationMetadata {
            site: "fab-1".into(),
            station: "line-3".into(),
            firmware_version: "1.2.3".into(),
            labels: BTreeMap::from([("lot".to_owned(), "42".to_owned())]),
        },
    }
}

/// Device `n` of `owner` in `batch`, in `state` (a batch is needed for every state but
/// UNASSIGNED; an unassigned device has none).
pub fn device(
    n: u32,
    owner: Option<&str>,
    batch: Option<&str>,
    state: DeviceState,
) -> DeviceRecord {
    let mut device = DeviceRecord::new(device_id(n));
    device.owner = owner.map(str::to_owned);
    device.batch_id = batch.map(str::to_owned);
    if state != DeviceState::AwaitingRegistration {
        device.registration = Some(registration());
    }
    if state == DeviceState::Unassigned {
        device.batch_id = None;
    }
    if matches!(
        state,
        DeviceState::Onboarded | DeviceState::ReonboardPending | DeviceState::Revoked
    ) {
        let serial = serial(u128::from(n) + 1);
        device.current_serial = Some(serial);
        device.serials = vec![serial];
        device.slot_keys.insert(1, base_point());
        device.credential_assignment = Some(0);
        device.onboarded_at = Some(T0);
        device.last_seen = Some(T0 + time::Duration::minutes(1));
    }
    if state == DeviceState::ReonboardPending {
        device.assignment = 1;
    }
    if state == DeviceState::Revoked {
        device.revocation = Some(RevocationRecord {
            revoked_at: T0,
            reason: RevocationReason::KeyCompromise,
            comment: "lost".into(),
            revoked_by: "operator:alice".into(),
        });
    }
    assert_eq!(
        device.state(),
        state,
        "the fixture device is in the state asked for"
    );
    device
}

/// A policy `name` of `owner` (Mosquitto).
pub fn policy(owner: &str, name: &str) -> PolicySpec {
    PolicySpec::from_proto(
        &v1::Policy {
            name: name.into(),
            description: format!("{owner}'s {name}"),
            params: Some(v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
                host: "127.0.0.1".into(),
                ..Default::default()
            })),
            ..Default::default()
        },
        owner,
        "operator:alice",
        T0,
        time::Duration::days(3650),
    )
    .expect("policy")
}

/// Batch ID number `n`, as the service makes them (`bt` + creation millis + random): later
/// numbers are newer batches.
pub fn batch_id(n: u32) -> String {
    let millis = (T0.unix_timestamp() as u64) * 1000 + u64::from(n) * 1000;
    format!("bt{millis:013x}{:08x}", n.wrapping_mul(2_654_435_761))
}

/// Batch `batch_id` of `owner`, created `n` seconds after [`T0`].
pub fn batch(batch_id: &str, owner: &str, n: u32) -> BatchRecord {
    BatchRecord {
        batch_id: batch_id.to_owned(),
        owner: owner.to_owned(),
        name: format!("batch {n}"),
        policy_name: "broker".into(),
        description: format!("batch {n} of {owner}"),
        created_at: T0 + time::Duration::seconds(i64::from(n)),
        created_by: "operator:alice".into(),
        counts: BatchCounts::default(),
    }
}

/// A credential `serial` of `device` in `batch`.
pub fn credential(serial: Serial, device: DeviceId, batch: &str) -> CredentialRecord {
    CredentialRecord {
        serial,
        device_id: device,
        key_slot: 1,
        dpk: base_point(),
        owner: "acme".into(),
        policy_name: "broker".into(),
        batch_id: batch.to_owned(),
        assignment: 0,
        subject_cn: device.to_string(),
        issued_at: T0,
        not_before: T0 - time::Duration::minutes(1),
        not_after: T0 + time::Duration::days(30),
        renew_after: Some(T0 + time::Duration::days(20)),
        certificate_pem: format!(
            "-----BEGIN CERTIFICATE-----\n{serial}\n-----END CERTIFICATE-----\n"
        ),
        status: CredentialStatus::Active,
        revocation: None,
    }
}

/// A CRL entry.
pub fn crl_entry(reason: RevocationReason) -> CrlEntryRecord {
    CrlEntryRecord {
        revoked_at: T0,
        reason,
    }
}

/// A CRL numbered `number`.
pub fn crl(number: u64) -> CrlRecord {
    CrlRecord {
        number,
        this_update: T0 + time::Duration::hours(number as i64),
        next_update: T0 + time::Duration::hours(number as i64 + 24),
        der_hex: format!("30{number:04x}"),
        pem: format!("-----BEGIN X509 CRL-----\n{number}\n-----END X509 CRL-----\n"),
        revoked_count: number,
    }
}

/// An owner with a managed root and one active issuing CA.
pub fn owner(name: &str) -> OwnerRecord {
    let authority = |id: String, key: KeyReference| AuthorityRecord {
        certificate_pem: format!("-----BEGIN CERTIFICATE-----\n{id}\n-----END CERTIFICATE-----\n"),
        id,
        state: AuthorityState::Active,
        chain_pem: String::new(),
        csr_pem: String::new(),
        key,
        created_at: T0,
    };
    OwnerRecord {
        name: name.to_owned(),
        ca_mode: CaMode::Managed,
        root: Some(authority(
            format!("{name}/root"),
            KeyReference::Pkcs11(format!("pkcs11:token=oxroot;object={name}-root")),
        )),
        issuing: vec![authority(
            format!("{name}/1"),
            KeyReference::Sealed(vec![1, 2, 3, 4]),
        )],
        created_at: T0,
        created_by: "system:test".into(),
        version: 0,
    }
}

/// An operator certificate `serial` of `owner`, not revoked.
pub fn operator_certificate(serial: Serial, owner: &str, name: &str) -> OperatorCertificateRecord {
    OperatorCertificateRecord {
        serial,
        name: name.to_owned(),
        owner: owner.to_owned(),
        role: Role::Operator,
        issued_at: T0,
        not_after: T0 + time::Duration::days(365),
        issued_by: "init".into(),
        revocation: None,
    }
}

/// The same operator certificate, revoked.
pub fn revoked(mut record: OperatorCertificateRecord) -> OperatorCertificateRecord {
    record.revocation = Some(RevocationRecord {
        revoked_at: T0 + time::Duration::hours(1),
        reason: RevocationReason::PrivilegeWithdrawn,
        comment: "left".into(),
        revoked_by: "operator:root".into(),
    });
    record
}

/// An audit draft of `action` on `subject`.
pub fn draft(action: &str, subject: &str) -> AuditDraft {
    AuditDraft::new(T0, "operator:alice", "acme", action, subject, "ok")
        .role("admin")
        .detail("subject", subject)
        .correlation("corr-1")
}

/// The action and subject of an audit entry.
pub fn action_subject(entry: &StoredAuditEntry) -> (String, String) {
    let record = entry.decode().expect("an audit record");
    (record.action, record.subject)
}
