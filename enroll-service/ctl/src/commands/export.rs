//! `export` (cloud-side artefacts of a policy) and `crl`.

use std::fs;
use std::io::IsTerminal as _;
use std::path::{Component, Path};

use oxroot_proto::v1::{CrlFormat, ExportArtifactsRequest, GetCrlRequest, MosquittoExportOptions};
use serde_json::Value;

use super::{Ctx, owner};
use crate::args::{CrlArgs, ExportArgs};
use crate::error::CtlError;
use crate::output::{crl_format_name, json};
use crate::view;

pub(super) async fn artifacts(args: ExportArgs, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    let broker_csr_pem = match &args.broker_csr {
        Some(path) => fs::read_to_string(path).map_err(CtlError::io(path))?,
        None => String::new(),
    };
    let mosquitto =
        (args.mosquitto_config_dir.is_some() || !broker_csr_pem.is_empty()).then(|| {
            MosquittoExportOptions {
                config_dir: args.mosquitto_config_dir.clone().unwrap_or_default(),
                broker_csr_pem,
            }
        });
    let response = ctx
        .client()
        .await?
        .export_artifacts(ExportArtifactsRequest {
            owner: owner(args.owner),
            policy_name: args.policy.clone(),
            aws_registration_code: args.aws_registration_code.unwrap_or_default(),
            aws_role_arn: args.aws_role_arn.unwrap_or_default(),
            azure_verification_code: args.azure_verification_code.unwrap_or_default(),
            mosquitto,
        })
        .await
        .map_err(CtlError::rpc("ExportArtifacts"))?
        .into_inner();

    // Every name is checked, and every target looked at, before the first file is written:
    // a half-written export directory is worse than none.
    let mut targets = Vec::with_capacity(response.artifacts.len());
    for artifact in &response.artifacts {
        if !is_safe_file_name(&artifact.file_name) {
            return Err(CtlError::BadAnswer(format!(
                "refusing artefact file name {:?}: not a plain file name",
                artifact.file_name
            )));
        }
        let path = args.out.join(&artifact.file_name);
        if targets.contains(&path) {
            return Err(CtlError::BadAnswer(format!(
                "artefact {:?} appears twice",
                artifact.file_name
            )));
        }
        if !args.force && path.exists() {
            return Err(CtlError::Exists(path));
        }
        targets.push(path);
    }
    fs::create_dir_all(&args.out).map_err(CtlError::io(&args.out))?;
    for (artifact, path) in response.artifacts.iter().zip(&targets) {
        write_file(path, &artifact.content, args.force)?;
    }

    ctx.emit(
        || {
            let paths = targets
                .iter()
                .map(|path| Value::from(path.to_string_lossy()))
                .collect();
            json::message_with(&response, [("paths", Value::Array(paths))])
        },
        |out| view::export::artifacts(out, &args.policy, &response, &targets),
    )
}

/// A plain file name the service may ask for: one normal path component, no `..`, no
/// separators of either platform, nothing hidden or empty. The names come from the network,
/// and writing `../../.ssh/authorized_keys` on an operator's machine must be impossible.
pub(crate) fn is_safe_file_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(components.next(), Some(Component::Normal(_)))
        && components.next().is_none()
        && !name.contains(['/', '\\', '\0', ':'])
        && !name.contains("..")
        && !name.starts_with('.')
        && !name.chars().any(char::is_control)
}

/// Writes an exported file with the one writer ([`oxroot_files`]): atomically, and over an
/// existing file only if `replace` (`--force`); without it an existing file is never touched,
/// even one that appeared since the check before the first write.
pub(super) fn write_file(path: &Path, content: &[u8], replace: bool) -> Result<(), CtlError> {
    let existing = if replace {
        oxroot_files::Existing::Replace
    } else {
        oxroot_files::Existing::Refuse
    };
    oxroot_files::write_atomically(path, content, oxroot_files::PUBLIC, existing).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CtlError::Exists(path.to_owned())
        } else {
            CtlError::io(path)(e)
        }
    })
}

pub(super) async fn crl(args: CrlArgs, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    let format = if args.der {
        CrlFormat::Der
    } else {
        CrlFormat::Pem
    };
    let response = ctx
        .client()
        .await?
        .get_crl(GetCrlRequest {
            format: format as i32,
            owner: owner(args.owner),
            issuer_id: args.issuer.unwrap_or_default(),
        })
        .await
        .map_err(CtlError::rpc("GetCrl"))?
        .into_inner();
    let answered = CrlFormat::try_from(response.format).unwrap_or(CrlFormat::Pem);
    let answered = if answered == CrlFormat::Der {
        CrlFormat::Der
    } else {
        CrlFormat::Pem
    };
    if answered != format {
        return Err(CtlError::BadAnswer(format!(
            "asked for a {} CRL, got {}",
            crl_format_name(format as i32),
            crl_format_name(response.format)
        )));
    }
    if let Some(path) = &args.out {
        replace_atomically(path, &response.crl)?;
        return ctx.emit(
            || json::message_with(&response, [("path", path.to_string_lossy().into())]),
            |out| view::export::crl_written(out, &response, path),
        );
    }
    if ctx.json {
        return ctx.emit(|| json::message(&response), |_| Ok(()));
    }
    // Without --out the CRL itself is the output, so that `enrollctl crl > crl.pem` works. A
    // PEM CRL is text that may reach a terminal: it must be PEM and nothing else.
    if answered == CrlFormat::Der && std::io::stdout().is_terminal() {
        // DER is binary, and the issuer names in it come from the owner's certificates.
        return Err(CtlError::Usage(
            "a DER CRL is binary: write it with --out FILE or redirect standard output".into(),
        ));
    }
    if answered == CrlFormat::Pem && !is_pem_text(&response.crl) {
        return Err(CtlError::BadAnswer(
            "the PEM CRL holds characters that PEM does not use".into(),
        ));
    }
    ctx.out.write_all(&response.crl)?;
    ctx.out.flush()?;
    Ok(())
}

/// Printable ASCII and line breaks only: what PEM is made of, and nothing a terminal acts on.
fn is_pem_text(pem: &[u8]) -> bool {
    pem.iter()
        .all(|&b| b == b'\n' || b == b'\r' || b == b'\t' || (b' '..=b'~').contains(&b))
}

/// Replaces a CRL file atomically. Mosquitto re-reads its `crlfile` on SIGHUP and rejects
/// every client if the CRL is broken, so a reader must never see a half-written one.
fn replace_atomically(path: &Path, content: &[u8]) -> Result<(), CtlError> {
    write_file(path, content, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_file_names_are_written() {
        for good in [
            "aws-iot-policy.json",
            "ca.pem",
            "acl",
            "mosquitto.conf",
            "verification-certificate.pem",
        ] {
            assert!(is_safe_file_name(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/../b",
            "/etc/passwd",
            "dir/file",
            "a\\b",
            "..\\x",
            "x..y",
            ".hidden",
            "C:evil",
            "nul\0byte",
            "line\nbreak",
        ] {
            assert!(!is_safe_file_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn files_are_not_overwritten_unless_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        write_file(&path, b"one", false).expect("new file");
        assert!(matches!(
            write_file(&path, b"two", false),
            Err(CtlError::Exists(_))
        ));
        assert_eq!(fs::read(&path).expect("reads"), b"one");
        write_file(&path, b"three", true).expect("replaces");
        assert_eq!(fs::read(&path).expect("reads"), b"three");
    }

    #[test]
    fn only_pem_text_goes_to_stdout() {
        assert!(is_pem_text(
            b"-----BEGIN X509 CRL-----\r\nMIIB\n-----END X509 CRL-----\n"
        ));
        assert!(!is_pem_text(b"-----BEGIN X509 CRL-----\n\x1b[2J\n"));
        assert!(!is_pem_text("\u{202e}".as_bytes()));
        assert!(!is_pem_text(b"\x07"));
    }

    #[test]
    fn crl_files_are_replaced_without_leftovers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("crl.pem");
        fs::write(&path, b"old").expect("writes");
        replace_atomically(&path, b"new").expect("replaces");
        assert_eq!(fs::read(&path).expect("reads"), b"new");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("lists")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["crl.pem"]);
    }
}
