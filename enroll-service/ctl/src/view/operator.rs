//! `operator issue | revoke | list`.

use std::io;
use std::path::Path;

use oxroot_proto::v1::{IssueOperatorCertificateResponse, OperatorCertificate};

use crate::output::{Fields, Human, Table, reason_name, role_name, timestamp_text};

/// The files of a profile directory that `operator issue` wrote.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProfileFiles<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) key: &'a Path,
    pub(crate) certificate: &'a Path,
    pub(crate) root: &'a Path,
}

/// `operator issue`: who was certified and where the profile is.
pub(crate) fn issued(
    out: &mut Human<'_>,
    issued: &IssueOperatorCertificateResponse,
    profile: ProfileFiles<'_>,
) -> io::Result<()> {
    out.line(&format!(
        "issued an operator certificate for {} ({} of {})",
        issued.name,
        role_name(issued.role),
        issued.owner
    ))?;
    out.fields(
        &Fields::new()
            .field("serial", &issued.serial)
            .field("not after", timestamp_text(issued.not_after.as_ref()))
            .field(
                "private key",
                format!("{} (mode 0600, never sent)", profile.key.display()),
            )
            .field("certificate", profile.certificate.display().to_string())
            .field("root", profile.root.display().to_string()),
    )?;
    out.line(&format!(
        "use it with: enrollctl --profile {} …",
        profile.dir.display()
    ))
}

/// `operator revoke`: whose certificate, and what that means.
pub(crate) fn revoked(out: &mut Human<'_>, certificate: &OperatorCertificate) -> io::Result<()> {
    let reason = certificate
        .revocation
        .as_ref()
        .map_or_else(String::new, |r| format!(" ({})", reason_name(r.reason)));
    out.line(&format!(
        "revoked the operator certificate {} of {}{reason}; its calls are refused and its \
         serial is on the CRL",
        certificate.serial, certificate.name
    ))
}

/// Operator certificates, one per row; STATUS says revoked (with the reason) or valid.
pub(crate) fn table(certificates: &[OperatorCertificate]) -> Table {
    let mut table = Table::new(&[
        "SERIAL",
        "NAME",
        "OWNER",
        "ROLE",
        "NOT AFTER",
        "ISSUED BY",
        "STATUS",
    ]);
    for certificate in certificates {
        let status = certificate.revocation.as_ref().map_or_else(
            || "valid".to_owned(),
            |r| format!("revoked ({})", reason_name(r.reason)),
        );
        table.row(vec![
            certificate.serial.clone(),
            certificate.name.clone(),
            certificate.owner.clone(),
            role_name(certificate.role),
            timestamp_text(certificate.not_after.as_ref()),
            certificate.issued_by.clone(),
            status,
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::testing::{HOSTILE, assert_escaped, human, json_of};
    use oxroot_proto::v1::{ListOperatorCertificatesResponse, Revocation, RevocationReason, Role};

    #[test]
    fn hostile_operator_certificates_are_escaped_for_humans_and_exact_in_json() {
        let certificate = OperatorCertificate {
            serial: "1f".into(),
            name: HOSTILE.into(),
            owner: HOSTILE.into(),
            issued_by: HOSTILE.into(),
            role: Role::Auditor as i32,
            revocation: Some(Revocation {
                reason: RevocationReason::KeyCompromise as i32,
                comment: HOSTILE.into(),
                ..Revocation::default()
            }),
            ..OperatorCertificate::default()
        };
        let text = human(|out| out.table(&table(std::slice::from_ref(&certificate))));
        assert_escaped(&text, 3);
        assert!(text.contains("revoked (key-compromise)"), "{text}");
        assert_escaped(&human(|out| revoked(out, &certificate)), 1);
        let json = json_of(&ListOperatorCertificatesResponse {
            certificates: vec![certificate],
            next_page_token: String::new(),
        });
        let listed = &json["certificates"][0];
        assert_eq!(listed["name"], HOSTILE);
        assert_eq!(listed["role"], "ROLE_AUDITOR");
        assert_eq!(listed["revocation"]["comment"], HOSTILE);
        assert_eq!(json["next_page_token"], "");
    }

    #[test]
    fn an_issued_profile_names_its_files() {
        let response = IssueOperatorCertificateResponse {
            name: HOSTILE.into(),
            owner: "acme".into(),
            role: Role::Admin as i32,
            serial: "2a".into(),
            ..IssueOperatorCertificateResponse::default()
        };
        let files = ProfileFiles {
            dir: Path::new("acme"),
            key: Path::new("acme/operator.key"),
            certificate: Path::new("acme/operator.pem"),
            root: Path::new("acme/root.pem"),
        };
        let text = human(|out| issued(out, &response, files));
        assert_escaped(&text, 1);
        assert!(text.contains("(admin of acme)"), "{text}");
        assert!(
            text.contains("private key:  acme/operator.key (mode 0600, never sent)"),
            "{text}"
        );
        assert!(
            text.ends_with("use it with: enrollctl --profile acme …\n"),
            "{text}"
        );
    }
}
