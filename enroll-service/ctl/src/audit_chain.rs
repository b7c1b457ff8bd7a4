//! Checking audit entries on this side of the wire, without trusting the service's word.
//!
//! The chain rule is the contract's (`AuditEntry` in `operator.proto`):
//!
//! ```text
//!  hash_n = SHA-256(prev_hash_n ‖ record_n)        prev_hash_1 = 32 zero bytes
//!  prev_hash_n = hash_{n-1}                         record = the hashed canonical JSON
//! ```
//!
//! A list of entries picked by a filter (one device's, say) has gaps, so [`check_entries`]
//! checks each entry's own hash everywhere and the link wherever two entries are consecutive;
//! and since the displayed fields are decoded from `record`, it checks that the record says
//! what the entry shows. Tying the gaps to the whole log is the service's `VerifyAudit`: its
//! `last_hash` for a range ending at an entry must equal that entry's hash.

use oxroot_proto::v1::AuditEntry;
use sha2::{Digest, Sha256};

/// The `prev_hash` of entry 1.
const GENESIS: [u8; 32] = [0; 32];

/// What [`check_entries`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainCheck {
    /// Entries checked.
    pub checked: usize,
    /// Pairs of consecutive entries (seq n and n+1) whose link was checked.
    pub links_checked: usize,
    /// Every failure, in entry order; empty when everything holds.
    pub problems: Vec<ChainProblem>,
}

impl ChainCheck {
    /// True if no check failed.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One failed check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainProblem {
    /// The entry's sequence number.
    pub seq: u64,
    /// What failed.
    pub problem: String,
}

/// `SHA-256(prev_hash ‖ record)`.
#[must_use]
pub fn chain_hash(prev_hash: &[u8], record: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(prev_hash)
        .chain_update(record)
        .finalize()
        .into()
}

/// Checks entries given in ascending sequence order (as QueryAudit returns them).
#[must_use]
pub fn check_entries(entries: &[AuditEntry]) -> ChainCheck {
    let mut check = ChainCheck::default();
    let mut previous: Option<&AuditEntry> = None;
    for entry in entries {
        check.checked += 1;
        let mut fail = |problem: String| {
            check.problems.push(ChainProblem {
                seq: entry.seq,
                problem,
            });
        };
        if entry.hash.len() != 32 || entry.prev_hash.len() != 32 {
            fail("hash or prev_hash is not 32 bytes".into());
        } else if chain_hash(&entry.prev_hash, &entry.record) != entry.hash.as_slice() {
            fail("hash mismatch: SHA-256(prev_hash ‖ record) differs".into());
        }
        if let Some(field) = record_disagrees(entry) {
            fail(format!(
                "the hashed record does not say what the entry shows ({field})"
            ));
        }
        if entry.seq == 1 && entry.prev_hash != GENESIS {
            fail("entry 1 does not start from 32 zero bytes".into());
        }
        if let Some(previous) = previous {
            if previous.seq >= entry.seq {
                fail(format!("out of order after seq {}", previous.seq));
            } else if previous.seq + 1 == entry.seq {
                check.links_checked += 1;
                if entry.prev_hash != previous.hash {
                    fail("prev_hash does not link to the previous entry's hash".into());
                }
            }
        }
        previous = Some(entry);
    }
    check
}

/// The first field the hashed record and the entry disagree on, if any.
fn record_disagrees(entry: &AuditEntry) -> Option<&'static str> {
    let Ok(record) = serde_json::from_slice::<serde_json::Value>(&entry.record) else {
        return Some("record is not JSON");
    };
    if record.get("seq").and_then(serde_json::Value::as_u64) != Some(entry.seq) {
        return Some("seq");
    }
    let text_fields = [
        ("actor", &entry.actor),
        ("owner", &entry.owner),
        ("action", &entry.action),
        ("subject", &entry.subject),
        ("outcome", &entry.outcome),
        ("correlation_id", &entry.correlation_id),
    ];
    text_fields
        .into_iter()
        .find(|(name, value)| record.get(name).and_then(serde_json::Value::as_str) != Some(value))
        .map(|(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain of `n` entries from seq 1, as the service would seal them.
    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut prev = GENESIS.to_vec();
        (1..=n)
            .map(|seq| {
                let record = serde_json::json!({
                    "seq": seq, "actor": "system", "owner": "*", "action": "crl.sign",
                    "subject": "crl", "outcome": "ok", "correlation_id": format!("c{seq}"),
                })
                .to_string()
                .into_bytes();
                let hash = chain_hash(&prev, &record).to_vec();
                let entry = AuditEntry {
                    seq,
                    actor: "system".into(),
                    owner: "*".into(),
                    action: "crl.sign".into(),
                    subject: "crl".into(),
                    outcome: "ok".into(),
                    correlation_id: format!("c{seq}"),
                    record,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                    ..AuditEntry::default()
                };
                prev = hash;
                entry
            })
            .collect()
    }

    #[test]
    fn the_chain_hash_is_sha256_of_prev_then_record() {
        // FIPS 180-2 appendix B.1: SHA-256("abc"), split between the two parts.
        assert_eq!(
            hex::encode(chain_hash(b"ab", b"c")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_sealed_chain_checks_out_whole_or_with_gaps() {
        let entries = chain(5);
        let whole = check_entries(&entries);
        assert!(whole.ok(), "{whole:?}");
        assert_eq!((whole.checked, whole.links_checked), (5, 4));
        let gappy = [entries[0].clone(), entries[2].clone(), entries[3].clone()];
        let gappy = check_entries(&gappy);
        assert!(gappy.ok(), "{gappy:?}");
        assert_eq!(gappy.links_checked, 1);
    }

    #[test]
    fn an_edited_record_breaks_its_hash() {
        let mut entries = chain(3);
        // The same JSON value, other bytes: only the hash can tell.
        entries[1].record.insert(1, b' ');
        let check = check_entries(&entries);
        assert_eq!(check.problems.len(), 1, "{check:?}");
        assert_eq!(check.problems[0].seq, 2);
        assert!(check.problems[0].problem.contains("hash mismatch"));
    }

    #[test]
    fn a_shown_field_the_record_does_not_hold_is_caught() {
        let mut entries = chain(2);
        entries[1].action = "device.revoke".into();
        let check = check_entries(&entries);
        assert_eq!(check.problems.len(), 1, "{check:?}");
        assert!(check.problems[0].problem.contains("(action)"), "{check:?}");
    }

    #[test]
    fn a_rehashed_entry_still_fails_to_link() {
        let mut entries = chain(3);
        // Someone rewrote entry 2 and recomputed its own hash: entry 3 no longer links.
        entries[1].record = b"{}".to_vec();
        entries[1].hash = chain_hash(&entries[1].prev_hash, &entries[1].record).to_vec();
        let check = check_entries(&entries);
        let seqs: Vec<u64> = check.problems.iter().map(|p| p.seq).collect();
        assert_eq!(seqs, [2, 3], "{check:?}");
        assert!(check.problems[1].problem.contains("does not link"));
    }

    #[test]
    fn the_first_entry_starts_from_zeros_and_order_is_ascending() {
        let mut entries = chain(2);
        entries[0].prev_hash = vec![1; 32];
        entries[0].hash = chain_hash(&entries[0].prev_hash, &entries[0].record).to_vec();
        assert!(!check_entries(&entries[..1]).ok());
        let entries = chain(2);
        let reversed = [entries[1].clone(), entries[0].clone()];
        let check = check_entries(&reversed);
        assert!(
            check
                .problems
                .iter()
                .any(|p| p.problem.contains("out of order"))
        );
    }
}
