//! `export` (cloud-side artefacts of a policy) and `crl`.

use std::io;
use std::path::{Path, PathBuf};

use oxroot_proto::v1::{ExportArtifactsResponse, GetCrlResponse};

use crate::output::{Human, Table, kind_name, timestamp_text};

/// `export`: the files written, with what each one is for.
pub(crate) fn artifacts(
    out: &mut Human<'_>,
    policy: &str,
    response: &ExportArtifactsResponse,
    paths: &[PathBuf],
) -> io::Result<()> {
    out.line(&format!(
        "wrote {} file(s) for {} policy {policy}",
        paths.len(),
        kind_name(response.kind),
    ))?;
    let mut table = Table::new(&["FILE", "BYTES", "WHAT"]);
    for (artifact, path) in response.artifacts.iter().zip(paths) {
        table.row(vec![
            path.display().to_string(),
            artifact.content.len().to_string(),
            artifact.description.clone(),
        ]);
    }
    out.table(&table)
}

/// `crl --out FILE`: which CRL was written where.
pub(crate) fn crl_written(
    out: &mut Human<'_>,
    response: &GetCrlResponse,
    path: &Path,
) -> io::Result<()> {
    out.line(&format!(
        "wrote CRL #{} ({} revoked, next update {}) to {}",
        response.crl_number,
        response.revoked_count,
        timestamp_text(response.next_update.as_ref()),
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::testing::{HOSTILE, assert_escaped, human, json_of};
    use oxroot_proto::v1::{Artifact, PolicyKind};

    #[test]
    fn hostile_artefact_descriptions_are_escaped_for_humans_and_exact_in_json() {
        let response = ExportArtifactsResponse {
            kind: PolicyKind::Mosquitto as i32,
            artifacts: vec![Artifact {
                file_name: "acl".into(),
                media_type: "text/plain".into(),
                content: b"topic readwrite devices/%c/#\n".to_vec(),
                description: HOSTILE.into(),
            }],
        };
        let text = human(|out| artifacts(out, "broker", &response, &[PathBuf::from("out/acl")]));
        assert_escaped(&text, 1);
        assert!(
            text.starts_with("wrote 1 file(s) for mosquitto policy broker\n"),
            "{text}"
        );
        assert!(text.contains("out/acl  29     "), "{text}");
        let json = json_of(&response);
        assert_eq!(json["artifacts"][0]["description"], HOSTILE);
        assert_eq!(json["kind"], "POLICY_KIND_MOSQUITTO");
        assert_eq!(
            json["artifacts"][0]["content"],
            "dG9waWMgcmVhZHdyaXRlIGRldmljZXMvJWMvIwo="
        );
    }

    #[test]
    fn a_written_crl_is_one_line() {
        let response = GetCrlResponse {
            crl_number: 12,
            revoked_count: 1,
            ..GetCrlResponse::default()
        };
        assert_eq!(
            human(|out| crl_written(out, &response, Path::new("crl.pem"))),
            "wrote CRL #12 (1 revoked, next update ) to crl.pem\n"
        );
        let json = json_of(&response);
        assert_eq!(json["crl_number"], "12");
        assert_eq!(json["crl"], "");
    }
}
