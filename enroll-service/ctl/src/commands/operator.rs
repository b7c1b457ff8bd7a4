//! `operator issue | revoke | list`.
//!
//! `issue` makes a new operator identity whose private key never leaves this machine: the key
//! is generated here, only a CSR goes to the service, and the key is written once, owner-only,
//! to a file that must not exist yet. The three files form a profile directory
//! (`--profile DIR`).

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use oxroot_proto::v1::{
    IssueOperatorCertificateRequest, IssueOperatorCertificateResponse,
    ListOperatorCertificatesRequest, ListOperatorCertificatesResponse, RevocationReason,
    RevokeOperatorCertificateRequest, Role, issue_operator_certificate_request::Key,
};
use serde_json::json;

use super::{Ctx, PAGE_SIZE, all_pages, owner};
use crate::args::OperatorCommand;
use crate::connect::{PROFILE_CERT, PROFILE_KEY, PROFILE_ROOT, check_certificates};
use crate::duration::to_proto;
use crate::error::CtlError;
use crate::operator_key::OperatorKey;
use crate::output::json;
use crate::view;

pub(super) async fn run(command: OperatorCommand, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    match command {
        OperatorCommand::Issue {
            name,
            role,
            owner: o,
            validity,
            out,
        } => {
            let request = IssueOperatorCertificateRequest {
                key: None,
                name,
                role: Role::from(role) as i32,
                owner: owner(o),
                validity: validity.map(to_proto),
            };
            issue(request, &out, ctx).await
        }
        OperatorCommand::Revoke {
            serial,
            reason,
            comment,
        } => {
            let request = RevokeOperatorCertificateRequest {
                serial,
                reason: RevocationReason::from(reason) as i32,
                comment: comment.unwrap_or_default(),
            };
            revoke(request, ctx).await
        }
        OperatorCommand::List { owner: o } => list(owner(o), ctx).await,
    }
}

async fn revoke(
    request: RevokeOperatorCertificateRequest,
    ctx: &mut Ctx<'_>,
) -> Result<(), CtlError> {
    let response = ctx
        .client()
        .await?
        .revoke_operator_certificate(request)
        .await
        .map_err(CtlError::rpc("RevokeOperatorCertificate"))?
        .into_inner();
    let certificate = response.certificate.as_ref().ok_or_else(|| {
        CtlError::BadAnswer("RevokeOperatorCertificate without a certificate".into())
    })?;
    ctx.emit(
        || json::message(&response),
        |out| view::operator::revoked(out, certificate),
    )
}

async fn list(owner: String, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    let client = ctx.client().await?;
    let certificates = all_pages("ListOperatorCertificates", None, |page_token| {
        let mut client = client.clone();
        let request = ListOperatorCertificatesRequest {
            owner: owner.clone(),
            page_size: PAGE_SIZE,
            page_token,
        };
        async move {
            let page = client
                .list_operator_certificates(request)
                .await?
                .into_inner();
            Ok((page.certificates, page.next_page_token))
        }
    })
    .await?;
    let all = ListOperatorCertificatesResponse {
        certificates,
        next_page_token: String::new(),
    };
    ctx.emit(
        || json::message(&all),
        |out| out.table(&view::operator::table(&all.certificates)),
    )
}

async fn issue(
    mut request: IssueOperatorCertificateRequest,
    out: &Path,
    ctx: &mut Ctx<'_>,
) -> Result<(), CtlError> {
    // Everything local happens before the RPC, so that a name clash or an unwritable
    // directory does not cost an issued (and audited) certificate.
    let key = OperatorKey::generate()?;
    request.key = Some(Key::CsrPem(key.csr_pem(&request.name)?));
    let profile = Profile::reserve(out)?;
    profile.write_key(&key.to_pem()?)?;

    let issued = ctx
        .client()
        .await?
        .issue_operator_certificate(request)
        .await
        .map_err(CtlError::rpc("IssueOperatorCertificate"))?
        .into_inner();
    check_issued(&issued, &key)?;
    profile.write_certificates(&issued)?;
    let paths = profile.commit();

    let files = view::operator::ProfileFiles {
        dir: out,
        key: &paths.key,
        certificate: &paths.certificate,
        root: &paths.root,
    };
    ctx.emit(
        || {
            let profile = json!({
                "dir": out.to_string_lossy(),
                "key": paths.key.to_string_lossy(),
                "certificate": paths.certificate.to_string_lossy(),
                "root": paths.root.to_string_lossy(),
            });
            json::message_with(&issued, [("profile", profile)])
        },
        |w| view::operator::issued(w, &issued, files),
    )
}

/// Checks that the service certified this key: a certificate for any other key would leave a
/// profile that cannot authenticate, or worse, one bound to a key someone else holds.
fn check_issued(
    issued: &IssueOperatorCertificateResponse,
    key: &OperatorKey,
) -> Result<(), CtlError> {
    let leaf = pem::parse(&issued.certificate_pem)
        .map_err(|e| CtlError::BadAnswer(format!("operator certificate is not PEM: {e}")))?;
    let (_, certificate) = x509_parser::parse_x509_certificate(leaf.contents())
        .map_err(|e| CtlError::BadAnswer(format!("operator certificate does not parse: {e}")))?;
    if certificate.public_key().subject_public_key.data.as_ref() != key.public_key_sec1() {
        return Err(CtlError::BadAnswer(
            "the operator certificate is for a different key than the one sent".into(),
        ));
    }
    check_certificates(
        Path::new("<root_pem from the service>"),
        issued.root_pem.as_bytes(),
    )
    .map_err(|e| CtlError::BadAnswer(e.to_string()))?;
    Ok(())
}

/// Where a profile was written.
struct ProfilePaths {
    key: PathBuf,
    certificate: PathBuf,
    root: PathBuf,
}

/// The three profile files, created empty and exclusively up front and removed again unless
/// the issue completes: no half profile is left behind, and no existing file is touched.
struct Profile {
    paths: ProfilePaths,
    /// The reserved files and their permission bits.
    files: Vec<(PathBuf, u32)>,
    committed: bool,
}

impl Profile {
    fn reserve(dir: &Path) -> Result<Self, CtlError> {
        create_private_dir(dir)?;
        let paths = ProfilePaths {
            key: dir.join(PROFILE_KEY),
            certificate: dir.join(PROFILE_CERT),
            root: dir.join(PROFILE_ROOT),
        };
        let mut profile = Self {
            files: Vec::with_capacity(3),
            committed: false,
            paths,
        };
        // On failure part way, Drop removes the files already created.
        for (path, mode) in [
            (profile.paths.key.clone(), 0o600),
            (profile.paths.certificate.clone(), 0o644),
            (profile.paths.root.clone(), 0o644),
        ] {
            create_exclusive(&path, mode)?;
            profile.files.push((path, mode));
        }
        Ok(profile)
    }

    /// Fills a reserved file, atomically and durably (the one writer, [`oxroot_files`]).
    fn write(&self, index: usize, content: &[u8]) -> Result<(), CtlError> {
        let (path, mode) = &self.files[index];
        oxroot_files::write_atomically(path, content, *mode, oxroot_files::Existing::Replace)
            .map_err(CtlError::io(path))
    }

    fn write_key(&self, pem: &str) -> Result<(), CtlError> {
        self.write(0, pem.as_bytes())
    }

    fn write_certificates(
        &self,
        issued: &IssueOperatorCertificateResponse,
    ) -> Result<(), CtlError> {
        // Leaf first, then the intermediates the service listed issuer first: the order a TLS
        // client presents them in.
        let mut chain = String::new();
        for pem in std::iter::once(&issued.certificate_pem).chain(&issued.intermediate_pems) {
            chain.push_str(pem.trim_end());
            chain.push('\n');
        }
        self.write(1, chain.as_bytes())?;
        let root = format!("{}\n", issued.root_pem.trim_end());
        self.write(2, root.as_bytes())
    }

    fn commit(mut self) -> ProfilePaths {
        self.committed = true;
        ProfilePaths {
            key: self.paths.key.clone(),
            certificate: self.paths.certificate.clone(),
            root: self.paths.root.clone(),
        }
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        if !self.committed {
            for (path, _) in &self.files {
                // Best effort: these are files this run created and nobody else uses yet.
                let _ = fs::remove_file(path);
            }
        }
    }
}

/// Creates the directory owner-only if it does not exist; an existing one is left as it is.
fn create_private_dir(dir: &Path) -> Result<(), CtlError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(CtlError::io(dir))
}

/// Reserves a profile file: O_EXCL creation of an empty file with its final mode, so that a
/// clash is found before the certificate is issued.
fn create_exclusive(path: &Path, mode: u32) -> Result<(), CtlError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    options.open(path).map(drop).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CtlError::Exists(path.to_owned())
        } else {
            CtlError::io(path)(e)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator_key::tests::self_signed_pem;

    #[test]
    fn a_failed_issue_leaves_no_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("profile");
        {
            let profile = Profile::reserve(&out).expect("reserves");
            profile
                .write_key("-----BEGIN PRIVATE KEY-----\n")
                .expect("writes");
        }
        assert_eq!(fs::read_dir(&out).expect("lists").count(), 0);
    }

    #[test]
    fn existing_files_are_never_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(PROFILE_ROOT), b"keep me").expect("writes");
        let error = Profile::reserve(dir.path()).err().expect("refuses");
        assert!(matches!(error, CtlError::Exists(_)), "{error}");
        // The files created before the clash are removed again; the existing one is intact.
        assert!(!dir.path().join(PROFILE_KEY).exists());
        assert!(!dir.path().join(PROFILE_CERT).exists());
        assert_eq!(
            fs::read(dir.path().join(PROFILE_ROOT)).expect("reads"),
            b"keep me"
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_key_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("p");
        let profile = Profile::reserve(&out).expect("reserves");
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&profile.paths.key), 0o600);
        assert_eq!(mode(&out), 0o700);
        drop(profile.commit());
    }

    #[test]
    fn a_certificate_for_another_key_is_refused() {
        let ours = OperatorKey::generate().expect("key");
        let theirs = OperatorKey::generate().expect("key");
        let cert = self_signed_pem(&theirs);
        let issued = IssueOperatorCertificateResponse {
            certificate_pem: cert.clone(),
            root_pem: cert,
            ..IssueOperatorCertificateResponse::default()
        };
        assert!(check_issued(&issued, &theirs).is_ok());
        let error = check_issued(&issued, &ours).expect_err("different key");
        assert!(error.to_string().contains("different key"), "{error}");
    }
}
