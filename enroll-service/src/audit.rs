//! The append-only, hash-chained audit log.
//!
//! ```text
//!  entry n: record_n = canonical JSON {seq, time, actor, actor_role, owner, action, subject,
//!                                      outcome, details, correlation_id}
//!           hash_n   = SHA-256(hash_{n-1} ‖ record_n)        hash_0 = 32 zero bytes
//! ```
//!
//! The registry appends entries in the same atomic commit as the state change they describe, so
//! the log and the state cannot disagree after a crash. [`verify_chain`] recomputes every hash:
//! editing, inserting, removing or reordering an entry breaks the chain at that entry.

use std::collections::BTreeMap;

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use oxroot_proto::v1;

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// An audit entry before the registry gives it a place in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditDraft {
    /// When it happened.
    pub time: OffsetDateTime,
    /// `operator:<name>`, `device:<DeviceId>` or `system`.
    pub actor: String,
    /// Role name for operator actors, else empty.
    pub actor_role: String,
    /// Owner the entry belongs to (`*` for platform-wide entries).
    pub owner: String,
    /// Dotted action name, e.g. `device.onboard`.
    pub action: String,
    /// Object acted on, e.g. `device:<id>`.
    pub subject: String,
    /// `ok`, `refused` or `denied`.
    pub outcome: String,
    /// Further facts.
    pub details: BTreeMap<String, String>,
    /// Groups one request's entries; a refusal's reference.
    pub correlation_id: String,
}

impl AuditDraft {
    /// A draft with no details.
    #[must_use]
    pub fn new(
        time: OffsetDateTime,
        actor: impl Into<String>,
        owner: impl Into<String>,
        action: impl Into<String>,
        subject: impl Into<String>,
        outcome: impl Into<String>,
    ) -> Self {
        Self {
            time,
            actor: actor.into(),
            actor_role: String::new(),
            owner: owner.into(),
            action: action.into(),
            subject: subject.into(),
            outcome: outcome.into(),
            details: BTreeMap::new(),
            correlation_id: String::new(),
        }
    }

    /// Adds a detail.
    #[must_use]
    pub fn detail(mut self, key: &str, value: impl Into<String>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// Sets the actor's role.
    #[must_use]
    pub fn role(mut self, role: &str) -> Self {
        role.clone_into(&mut self.actor_role);
        self
    }

    /// Sets the correlation ID.
    #[must_use]
    pub fn correlation(mut self, id: &str) -> Self {
        id.clone_into(&mut self.correlation_id);
        self
    }
}

/// The hashed record. Field order is fixed by this struct and `details` is a sorted map, so
/// serde_json writes one canonical byte string for each entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the log, from 1.
    pub seq: u64,
    /// RFC 3339 time.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Who.
    pub actor: String,
    /// Operator role, or empty.
    pub actor_role: String,
    /// Owner.
    pub owner: String,
    /// What.
    pub action: String,
    /// On what.
    pub subject: String,
    /// Outcome.
    pub outcome: String,
    /// Facts.
    pub details: BTreeMap<String, String>,
    /// Request correlation.
    pub correlation_id: String,
}

/// A chained entry as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAuditEntry {
    /// The exact hashed bytes (canonical JSON of an [`AuditRecord`]).
    #[serde(with = "hex_bytes")]
    pub record: Vec<u8>,
    /// Hash of the previous entry.
    #[serde(with = "hex_bytes")]
    pub prev_hash: Vec<u8>,
    /// SHA-256(prev_hash ‖ record).
    #[serde(with = "hex_bytes")]
    pub hash: Vec<u8>,
}

/// Hex in JSON (and every human-readable format), raw bytes in the registry's binary encoding.
mod hex_bytes {
    use serde::{Deserializer, Serializer, de};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(bytes))
        } else {
            s.serialize_bytes(bytes)
        }
    }

    struct Visitor;

    impl de::Visitor<'_> for Visitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("hex text or bytes")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<u8>, E> {
            hex::decode(text).map_err(E::custom)
        }

        fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            d.deserialize_str(Visitor)
        } else {
            d.deserialize_bytes(Visitor)
        }
    }
}

/// `SHA-256(prev_hash ‖ record)`.
#[must_use]
pub fn chain_hash(prev_hash: &[u8], record: &[u8]) -> [u8; 32] {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(prev_hash);
    context.update(record);
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// An audit entry that cannot be written down as canonical JSON: its time has no RFC 3339
/// form (a year outside 0000..=9999, or an offset with seconds).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the audit entry cannot be recorded: {0}")]
pub struct UnrecordableEntry(String);

/// Seals a draft as entry `seq` after `prev_hash`.
///
/// # Errors
/// [`UnrecordableEntry`] if the draft's time has no RFC 3339 form; the change that carries it
/// must then not be applied, since every change is on record.
pub fn seal(
    draft: &AuditDraft,
    seq: u64,
    prev_hash: &[u8; 32],
) -> Result<StoredAuditEntry, UnrecordableEntry> {
    let record = AuditRecord {
        seq,
        time: draft.time,
        actor: draft.actor.clone(),
        actor_role: draft.actor_role.clone(),
        owner: draft.owner.clone(),
        action: draft.action.clone(),
        subject: draft.subject.clone(),
        outcome: draft.outcome.clone(),
        details: draft.details.clone(),
        correlation_id: draft.correlation_id.clone(),
    };
    let record = serde_json::to_vec(&record).map_err(|e| UnrecordableEntry(e.to_string()))?;
    let hash = chain_hash(prev_hash, &record);
    Ok(StoredAuditEntry {
        record,
        prev_hash: prev_hash.to_vec(),
        hash: hash.to_vec(),
    })
}

impl StoredAuditEntry {
    /// The decoded record.
    ///
    /// # Errors
    /// The record bytes are not a valid [`AuditRecord`].
    pub fn decode(&self) -> Result<AuditRecord, serde_json::Error> {
        serde_json::from_slice(&self.record)
    }

    /// The wire form.
    ///
    /// # Errors
    /// The record bytes are not a valid [`AuditRecord`].
    pub fn to_proto(&self) -> Result<v1::AuditEntry, serde_json::Error> {
        let record = self.decode()?;
        Ok(v1::AuditEntry {
            seq: record.seq,
            time: Some(crate::wire::timestamp(record.time)),
            actor: record.actor,
            actor_role: role_to_proto(&record.actor_role) as i32,
            owner: record.owner,
            action: record.action,
            subject: record.subject,
            outcome: record.outcome,
            details: record.details.into_iter().collect(),
            correlation_id: record.correlation_id,
            record: self.record.clone(),
            prev_hash: self.prev_hash.clone(),
            hash: self.hash.clone(),
        })
    }
}

/// The wire role of a recorded role name (empty for entries of devices and the system).
fn role_to_proto(role: &str) -> v1::Role {
    role.parse::<crate::pki::Role>()
        .map_or(v1::Role::Unspecified, v1::Role::from)
}

/// Outcome of [`verify_chain`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    /// Entries checked.
    pub checked: u64,
    /// Hash of the last entry checked.
    pub last_hash: Vec<u8>,
    /// The first failing entry and what failed.
    pub failure: Option<(u64, String)>,
}

/// Checks consecutive entries `(seq, entry)`: each record hashes to its hash, each record's own
/// `seq` matches its position, and each `prev_hash` equals the previous entry's hash (or
/// `expected_prev` for the first). Stops at the first failure.
pub fn verify_chain<I>(entries: I, expected_prev: Option<Vec<u8>>) -> ChainReport
where
    I: IntoIterator<Item = (u64, StoredAuditEntry)>,
{
    let mut report = ChainReport {
        checked: 0,
        last_hash: expected_prev.clone().unwrap_or_default(),
        failure: None,
    };
    let mut prev = expected_prev;
    let mut expected_seq = None;
    for (seq, entry) in entries {
        report.checked += 1;
        let fail = |why: String| Some((seq, why));
        if expected_seq.is_some_and(|e| e != seq) {
            report.failure = fail(format!(
                "sequence gap: expected {}, found {seq}",
                expected_seq.unwrap_or_default()
            ));
            break;
        }
        match entry.decode() {
            Ok(record) if record.seq == seq => {}
            Ok(record) => {
                report.failure = fail(format!("record says seq {}", record.seq));
                break;
            }
            Err(e) => {
                report.failure = fail(format!("record is not valid JSON: {e}"));
                break;
            }
        }
        if chain_hash(&entry.prev_hash, &entry.record).as_slice() != entry.hash.as_slice() {
            report.failure = fail("hash mismatch".to_owned());
            break;
        }
        if let Some(prev) = &prev
            && prev != &entry.prev_hash
        {
            report.failure = fail("prev_hash does not link".to_owned());
            break;
        }
        if seq == 1 && entry.prev_hash != GENESIS_HASH {
            report.failure = fail("first entry does not start from the genesis hash".to_owned());
            break;
        }
        prev = Some(entry.hash.clone());
        report.last_hash.clone_from(&entry.hash);
        expected_seq = Some(seq + 1);
    }
    report
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<(u64, StoredAuditEntry)> {
        let mut prev = GENESIS_HASH;
        (1..=n)
            .map(|seq| {
                let draft = AuditDraft::new(
                    OffsetDateTime::UNIX_EPOCH,
                    "system",
                    "*",
                    "test.step",
                    format!("n:{seq}"),
                    "ok",
                )
                .detail("k", seq.to_string());
                let entry = seal(&draft, seq, &prev).expect("a recordable time");
                prev.copy_from_slice(&entry.hash);
                (seq, entry)
            })
            .collect()
    }

    #[test]
    fn intact_chain_verifies() {
        let report = verify_chain(chain(5), None);
        assert_eq!(report.checked, 5);
        assert!(report.failure.is_none());
    }

    #[test]
    fn edited_record_is_found() {
        let mut entries = chain(5);
        let text = String::from_utf8(entries[2].1.record.clone()).unwrap();
        entries[2].1.record = text.replace("n:3", "n:X").into_bytes();
        let report = verify_chain(entries, None);
        assert_eq!(report.failure, Some((3, "hash mismatch".to_owned())));
    }

    #[test]
    fn rehashed_edit_breaks_the_link() {
        let mut entries = chain(5);
        let text = String::from_utf8(entries[2].1.record.clone()).unwrap();
        entries[2].1.record = text.replace("n:3", "n:X").into_bytes();
        entries[2].1.hash = chain_hash(&entries[2].1.prev_hash, &entries[2].1.record).to_vec();
        let report = verify_chain(entries, None);
        assert_eq!(
            report.failure,
            Some((4, "prev_hash does not link".to_owned()))
        );
    }

    #[test]
    fn removed_entry_is_found() {
        let mut entries = chain(5);
        entries.remove(1);
        let report = verify_chain(entries, None);
        assert_eq!(report.failure.map(|f| f.0), Some(3));
    }
}
