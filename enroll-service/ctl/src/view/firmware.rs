//! `firmware sign | get | list`.

use oxroot_proto::v1::Firmware;

use crate::output::{Fields, Table, timestamp_text};

/// A signed image.
pub(crate) fn fields(firmware: &Firmware) -> Fields {
    Fields::new()
        .field("name", &firmware.name)
        .field("version", &firmware.version)
        .field("owner", &firmware.owner)
        .field("policy", &firmware.policy_name)
        .field("security counter", firmware.security_counter.to_string())
        // What a policy's --firmware-measurement names to accept devices running it.
        .field("measurement", &firmware.measurement)
        .field(
            "size",
            format!(
                "{} bytes signed ({} bytes of payload)",
                firmware.image_size, firmware.payload_size
            ),
        )
        .field("signer", signer_subject(&firmware.signer_certificate_pem))
        .field(
            "signed",
            format!(
                "{} by {}",
                timestamp_text(firmware.created_at.as_ref()),
                firmware.created_by
            ),
        )
}

/// Signed images, one per row.
pub(crate) fn table(firmware: &[Firmware]) -> Table {
    let mut table = Table::new(&[
        "NAME",
        "VERSION",
        "OWNER",
        "POLICY",
        "SEC_CNT",
        "MEASUREMENT",
        "SIGNED",
    ]);
    for image in firmware {
        table.row(vec![
            image.name.clone(),
            image.version.clone(),
            image.owner.clone(),
            image.policy_name.clone(),
            image.security_counter.to_string(),
            image.measurement.clone(),
            timestamp_text(image.created_at.as_ref()),
        ]);
    }
    table
}

/// The subject of the signing key's certificate, or what is wrong with it.
fn signer_subject(pem_text: &str) -> String {
    use x509_parser::prelude::FromDer;
    let Ok(pem) = pem::parse(pem_text) else {
        return "(no certificate)".to_owned();
    };
    match x509_parser::certificate::X509Certificate::from_der(pem.contents()) {
        Ok((_, cert)) => cert.subject().to_string(),
        Err(_) => "(unreadable certificate)".to_owned(),
    }
}
