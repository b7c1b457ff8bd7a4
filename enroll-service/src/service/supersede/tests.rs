//! Superseded credentials end when the device proves a later one, or when their grace ends;
//! never the credential the device may still be using, and never twice.
#![allow(clippy::expect_used, reason = "a failed expect is a failed test")]

use time::OffsetDateTime;

use super::{successor_proved, sweep};
use crate::model::{CredentialStatus, CrlEntryRecord};
use crate::pki::{RevocationReason, Serial};
use crate::service::ServiceConfig;
use crate::service::testing::{Fixture, OWNER, chip};
use crate::store::{Change, Op, commit};

async fn schedule(f: &Fixture, serial: Serial, due: OffsetDateTime) {
    let mut change = Change::new();
    change.op(Op::ScheduleRevocation { serial, due });
    commit(f.core.registry(), change).await.expect("commit");
}

async fn scheduled(f: &Fixture, serial: Serial) -> Option<OffsetDateTime> {
    f.core
        .registry()
        .scheduled_revocation(serial)
        .await
        .expect("read")
}

/// The revocation entries of the supersede audit action.
async fn supersede_entries(f: &Fixture) -> Vec<crate::audit::AuditRecord> {
    f.audit()
        .await
        .into_iter()
        .filter(|e| e.action == "credential.revoke_superseded")
        .collect()
}

async fn on_crl(f: &Fixture, serial: Serial) -> Option<CrlEntryRecord> {
    f.crl_entries()
        .await
        .into_iter()
        .find(|(s, _)| *s == serial)
        .map(|(_, entry)| entry)
}

#[tokio::test]
async fn proving_a_successor_revokes_what_it_superseded_and_nothing_else() {
    let f = Fixture::new(ServiceConfig::default()).await;
    let seeds = chip(0);
    let id = f.register(seeds).await;
    let first = f.issue(seeds, 1).await;
    let second = f.issue(seeds, 2).await;
    let due = OffsetDateTime::now_utc() + time::Duration::days(7);
    schedule(&f, first, due).await;
    let other = f.register(chip(1)).await;
    let foreign = f.issue(chip(1), 1).await;

    // Naming the superseded credential itself, or another device's, retires nothing.
    for successor in [first, foreign] {
        let revoked = successor_proved(&f.core, &id, successor, "status", "c0")
            .await
            .expect("proved");
        assert!(revoked.is_empty(), "{successor}");
    }
    assert_eq!(
        f.credential(first).await.status,
        CredentialStatus::Superseded
    );
    assert_eq!(
        scheduled(&f, first).await,
        Some(due.replace_nanosecond(0).expect("0"))
    );
    assert!(on_crl(&f, first).await.is_none());

    // Naming the current one: the superseded credential goes on the CRL, reason superseded.
    let revoked = successor_proved(&f.core, &id, second, "status", "c1")
        .await
        .expect("proved");
    assert_eq!(revoked, vec![first]);
    let retired = f.credential(first).await;
    assert_eq!(retired.status, CredentialStatus::Revoked);
    let entry = on_crl(&f, first).await.expect("on the CRL");
    assert_eq!(entry.reason, RevocationReason::Superseded);
    assert_eq!(retired.revocation, Some(entry));
    assert_eq!(scheduled(&f, first).await, None);
    // The credential in use, and the other device's, are untouched.
    assert_eq!(f.credential(second).await.status, CredentialStatus::Active);
    assert_eq!(f.credential(foreign).await.status, CredentialStatus::Active);
    assert_eq!(f.device(&other).await.current_serial, Some(foreign));

    let entries = supersede_entries(&f).await;
    assert_eq!(entries.len(), 1);
    let audited = &entries[0];
    assert_eq!(audited.owner, OWNER);
    assert_eq!(audited.actor, format!("device:{id}"));
    assert_eq!(audited.correlation_id, "c1");
    for (key, value) in [
        ("cause", "successor_proved"),
        ("successor", second.to_string().as_str()),
        ("serials", first.to_string().as_str()),
        ("rpc", "status"),
        ("reason", "superseded"),
    ] {
        assert_eq!(audited.details[key], value, "{key}");
    }

    // Proving it again changes nothing and writes nothing.
    let again = successor_proved(&f.core, &id, second, "status", "c2")
        .await
        .expect("proved");
    assert!(again.is_empty());
    assert_eq!(supersede_entries(&f).await.len(), 1);
}

#[tokio::test]
async fn the_sweep_revokes_superseded_credentials_once_their_grace_ended() {
    let f = Fixture::new(ServiceConfig::default()).await;
    let now = OffsetDateTime::now_utc();
    let due = now + time::Duration::hours(1);

    // A: superseded, due in an hour. B: superseded, then revoked by an operator before its
    // grace ended. C: superseded and expired meanwhile.
    let a = f.register(chip(0)).await;
    let a_old = f.issue(chip(0), 1).await;
    let a_new = f.issue(chip(0), 2).await;
    schedule(&f, a_old, due).await;
    f.register(chip(1)).await;
    let b_old = f.issue(chip(1), 1).await;
    f.issue(chip(1), 2).await;
    schedule(&f, b_old, due).await;
    let mut b_record = f.credential(b_old).await;
    b_record.status = CredentialStatus::Revoked;
    f.register(chip(2)).await;
    let c_old = f.issue(chip(2), 1).await;
    f.issue(chip(2), 2).await;
    schedule(&f, c_old, due).await;
    let mut c_record = f.credential(c_old).await;
    c_record.not_after = now - time::Duration::minutes(1);
    let mut change = Change::new();
    change
        .op(Op::PutCredential(Box::new(b_record)))
        .op(Op::PutCredential(Box::new(c_record)));
    commit(f.core.registry(), change).await.expect("commit");

    // Before the grace ends: nothing.
    assert!(sweep(&f.core, now).await.expect("sweep").is_empty());
    assert_eq!(
        f.credential(a_old).await.status,
        CredentialStatus::Superseded
    );
    assert!(scheduled(&f, a_old).await.is_some());

    // After: A is revoked; B and C only lose their schedule (B is revoked already, C expired).
    let later = due + time::Duration::seconds(1);
    assert_eq!(sweep(&f.core, later).await.expect("sweep"), vec![a_old]);
    assert_eq!(f.credential(a_old).await.status, CredentialStatus::Revoked);
    assert_eq!(
        on_crl(&f, a_old).await.expect("on the CRL").reason,
        RevocationReason::Superseded
    );
    assert!(
        on_crl(&f, b_old).await.is_none(),
        "not revoked a second time"
    );
    assert!(
        on_crl(&f, c_old).await.is_none(),
        "an expired certificate needs no CRL entry"
    );
    for serial in [a_old, b_old, c_old] {
        assert_eq!(scheduled(&f, serial).await, None, "{serial}");
    }
    assert_eq!(f.credential(a_new).await.status, CredentialStatus::Active);
    let entries = supersede_entries(&f).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].actor, "system");
    assert_eq!(entries[0].subject, format!("device:{a}"));
    assert_eq!(entries[0].details["cause"], "grace_ended");
    assert_eq!(entries[0].details["serials"], a_old.to_string());

    // Idempotent: a second pass finds nothing and writes nothing.
    let head = f.core.registry().audit_head().await.expect("head");
    assert!(sweep(&f.core, later).await.expect("sweep").is_empty());
    assert_eq!(f.core.registry().audit_head().await.expect("head"), head);
}
