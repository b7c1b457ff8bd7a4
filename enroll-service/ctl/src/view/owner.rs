//! `owner create | get | list | import-ca | rotate`.

use std::io;
use std::path::Path;

use oxroot_proto::v1::{IssuingCa, IssuingCaState, Owner};

use super::by;
use crate::output::{Fields, Human, Table, ca_mode_name, issuing_ca_state_name, timestamp_text};

/// `owner create`: the owner, and what to do next if its root is its own.
pub(crate) fn created(out: &mut Human<'_>, owner: &Owner, csr: Option<&Path>) -> io::Result<()> {
    out.line(&format!("created owner {}", owner.name))?;
    out.fields(&fields(owner))?;
    next_step(out, owner, csr)
}

/// `owner import-ca`: which CA issues now.
pub(crate) fn imported(out: &mut Human<'_>, owner: &Owner) -> io::Result<()> {
    out.line(&format!(
        "owner {}'s issuing CA {} issues from now on",
        owner.name,
        active_id(owner)
    ))?;
    out.fields(&fields(owner))
}

/// `owner rotate`: the new CA, or the CSR it waits for.
pub(crate) fn rotated(out: &mut Human<'_>, owner: &Owner, csr: Option<&Path>) -> io::Result<()> {
    out.line(&format!(
        "rotated owner {}'s issuing CA; {} issues now, retired CAs stay trusted until they \
         expire",
        owner.name,
        active_id(owner)
    ))?;
    out.fields(&fields(owner))?;
    next_step(out, owner, csr)
}

fn next_step(out: &mut Human<'_>, owner: &Owner, csr: Option<&Path>) -> io::Result<()> {
    let Some(csr) = csr else { return Ok(()) };
    out.line(&format!(
        "sign {} with {}'s root (a CA certificate, pathlen 0), then: enrollctl owner import-ca \
         --owner {} --certificate FILE --chain ROOT-CHAIN",
        csr.display(),
        owner.name,
        owner.name
    ))
}

fn active_id(owner: &Owner) -> String {
    owner
        .issuing_cas
        .iter()
        .find(|ca| ca.state == IssuingCaState::Active as i32)
        .map_or_else(|| "none".to_owned(), |ca| ca.id.clone())
}

/// An owner and each of its issuing CAs.
pub(crate) fn fields(owner: &Owner) -> Fields {
    let mut fields = Fields::new()
        .field("name", &owner.name)
        .field("ca mode", ca_mode_name(owner.ca_mode))
        .field("root", subject_summary(&owner.root_pem))
        .field(
            "created",
            by(timestamp_text(owner.created_at.as_ref()), &owner.created_by),
        );
    for ca in &owner.issuing_cas {
        fields = fields.field(&format!("issuing ca {}", ca.id), issuing_summary(ca));
    }
    fields
}

fn issuing_summary(ca: &IssuingCa) -> String {
    let mut text = issuing_ca_state_name(ca.state);
    if ca.not_after.is_some() {
        text.push_str(", valid until ");
        text.push_str(&timestamp_text(ca.not_after.as_ref()));
    }
    if !ca.key_location.is_empty() {
        text.push_str(", key ");
        text.push_str(&ca.key_location);
    }
    if !ca.csr_pem.is_empty() {
        text.push_str(", CSR waiting for the owner's root");
    }
    text
}

/// "PEM certificate" or nothing: the root itself is for files (`owner get --root-out`).
fn subject_summary(pem: &str) -> String {
    if pem.contains("-----BEGIN CERTIFICATE-----") {
        "PEM certificate (owner get --root-out FILE writes it)".to_owned()
    } else {
        String::new()
    }
}

/// Owners, one per row.
pub(crate) fn table(owners: &[Owner]) -> Table {
    let mut table = Table::new(&["NAME", "CA MODE", "ACTIVE CA", "CAS", "CREATED"]);
    for owner in owners {
        table.row(vec![
            owner.name.clone(),
            ca_mode_name(owner.ca_mode),
            active_id(owner),
            owner.issuing_cas.len().to_string(),
            timestamp_text(owner.created_at.as_ref()),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::testing::{HOSTILE, assert_escaped, human, json_of};
    use oxroot_proto::v1::CaMode;

    fn owner() -> Owner {
        Owner {
            name: "acme".into(),
            ca_mode: CaMode::OwnCa as i32,
            root_pem: String::new(),
            issuing_cas: vec![
                IssuingCa {
                    id: "acme/2".into(),
                    state: IssuingCaState::Pending as i32,
                    csr_pem: "-----BEGIN CERTIFICATE REQUEST-----".into(),
                    key_location: HOSTILE.into(),
                    ..IssuingCa::default()
                },
                IssuingCa {
                    id: "acme/1".into(),
                    state: IssuingCaState::Active as i32,
                    not_after: Some(prost_types::Timestamp {
                        seconds: 1_900_000_000,
                        nanos: 0,
                    }),
                    ..IssuingCa::default()
                },
            ],
            created_at: None,
            created_by: HOSTILE.into(),
        }
    }

    #[test]
    fn an_owner_shows_each_ca_and_escapes_what_it_did_not_choose() {
        let text = human(|out| out.fields(&fields(&owner())));
        assert!(text.contains("own-ca"), "{text}");
        assert!(text.contains("issuing ca acme/2"), "{text}");
        assert!(text.contains("pending"), "{text}");
        assert!(text.contains("CSR waiting"), "{text}");
        assert!(
            text.contains("active, valid until 2030-03-17T17:46:40Z"),
            "{text}"
        );
        assert_escaped(&text, 2);
        let json = json_of(&owner());
        assert_eq!(json["issuing_cas"][1]["state"], "ISSUING_CA_STATE_ACTIVE");
    }

    #[test]
    fn the_table_names_the_active_ca() {
        let text = human(|out| out.table(&table(&[owner()])));
        assert!(text.contains("acme/1"), "{text}");
        assert!(!text.contains("acme/2"), "{text}");
    }
}
