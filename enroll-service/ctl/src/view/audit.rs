//! `audit query | verify`.

use std::io;

use oxroot_proto::v1::{AuditEntry, VerifyAuditResponse};

use crate::output::{Fields, Human, Table, timestamp_text};

/// `audit query`: the entries, and how far the log goes.
pub(crate) fn query(out: &mut Human<'_>, entries: &[AuditEntry], head_seq: u64) -> io::Result<()> {
    out.table(&table(entries))?;
    out.line(&format!(
        "({} entries; newest in the log: seq {head_seq})",
        entries.len()
    ))
}

/// Audit entries, one per row; details as sorted `key=value` pairs.
pub(crate) fn table(entries: &[AuditEntry]) -> Table {
    let mut table = Table::new(&[
        "SEQ", "TIME", "ACTOR", "OWNER", "ACTION", "SUBJECT", "OUTCOME", "DETAILS",
    ]);
    for entry in entries {
        let mut details: Vec<_> = entry
            .details
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        details.sort();
        table.row(vec![
            entry.seq.to_string(),
            timestamp_text(entry.time.as_ref()),
            entry.actor.clone(),
            entry.owner.clone(),
            entry.action.clone(),
            entry.subject.clone(),
            entry.outcome.clone(),
            details.join(" "),
        ]);
    }
    table
}

/// The result of `audit verify`.
pub(crate) fn verify_fields(result: &VerifyAuditResponse) -> Fields {
    let mut fields = Fields::new()
        .field("chain", if result.ok { "ok" } else { "BROKEN" })
        .field(
            "checked",
            format!(
                "{} entries, seq {}..={}",
                result.entries_checked, result.first_seq, result.last_seq
            ),
        )
        .field("last hash", hex::encode(&result.last_hash));
    if !result.ok {
        fields = fields
            .field("first bad seq", result.first_bad_seq.to_string())
            .field("problem", &result.problem);
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::testing::{HOSTILE, assert_escaped, human, json_of};
    use oxroot_proto::v1::{QueryAuditResponse, Role};

    #[test]
    fn hostile_audit_entries_are_escaped_for_humans_and_exact_in_json() {
        let entry = AuditEntry {
            seq: 7,
            actor: HOSTILE.into(),
            actor_role: Role::Operator as i32,
            subject: HOSTILE.into(),
            details: [
                ("comment".to_owned(), HOSTILE.to_owned()),
                (HOSTILE.to_owned(), "x".to_owned()),
            ]
            .into(),
            hash: vec![0xab; 4],
            ..AuditEntry::default()
        };
        let text = human(|out| query(out, std::slice::from_ref(&entry), 9));
        assert_escaped(&text, 4);
        assert!(
            text.ends_with("(1 entries; newest in the log: seq 9)\n"),
            "{text}"
        );
        let json = json_of(&QueryAuditResponse {
            entries: vec![entry],
            next_page_token: String::new(),
            head_seq: 9,
        });
        let printed = &json["entries"][0];
        assert_eq!(printed["actor"], HOSTILE);
        assert_eq!(printed["details"]["comment"], HOSTILE);
        assert_eq!(printed["details"][HOSTILE], "x");
        assert_eq!(printed["seq"], "7");
        assert_eq!(printed["actor_role"], "ROLE_OPERATOR");
        // Bytes are base64 in the mapping.
        assert_eq!(printed["hash"], "q6urqw==");
        assert_eq!(json["head_seq"], "9");
    }

    #[test]
    fn a_broken_chain_shows_its_hostile_problem_escaped() {
        let result = VerifyAuditResponse {
            ok: false,
            entries_checked: 3,
            first_seq: 1,
            last_seq: 3,
            first_bad_seq: 2,
            problem: HOSTILE.into(),
            last_hash: vec![1, 2],
        };
        let text = human(|out| out.fields(&verify_fields(&result)));
        assert_escaped(&text, 1);
        assert!(text.contains("chain:          BROKEN"), "{text}");
        assert!(
            text.contains("checked:        3 entries, seq 1..=3"),
            "{text}"
        );
        let json = json_of(&result);
        assert_eq!(json["ok"], false);
        assert_eq!(json["problem"], HOSTILE);
        assert_eq!(json["first_bad_seq"], "2");
    }
}
