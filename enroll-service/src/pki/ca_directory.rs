//! The CA directory: the CA certificates and their sealed keys as files, written with the one
//! careful writer and read back with every cross-check of an import.
//!
//! ```text
//!  <dir>/root.pem  intermediate.pem
//!        intermediate.key.enc | intermediate.key.uri     the key sealed, or its PKCS#11 URI
//!        [root.key.enc | root.key.uri, until taken offline]
//! ```

use std::num::NonZeroU32;
use std::path::Path;

use std::sync::Arc;

use super::authority::cert_pem_to_der;
use super::backend::Sealing;
use super::keystore::write_atomically;
use super::{
    CaKey, CertificateAuthority, DEFAULT_PBKDF2_ITERATIONS, EncryptedKey, KeyBackend, KeyReference,
    Passphrase, PkiError,
};

const ROOT_CERT_FILE: &str = "root.pem";
const INTERMEDIATE_CERT_FILE: &str = "intermediate.pem";
/// The stems of the key files: `<stem>.key.enc` (sealed) or `<stem>.key.uri` (in a token).
const ROOT: &str = "root";
const INTERMEDIATE: &str = "intermediate";
const SEALED_SUFFIX: &str = ".key.enc";
const URI_SUFFIX: &str = ".key.uri";

impl CertificateAuthority {
    /// Writes the directory with the keys sealed with [`DEFAULT_PBKDF2_ITERATIONS`] (keys in a
    /// token: their URIs).
    ///
    /// # Errors
    /// As [`CertificateAuthority::save_with`].
    pub fn save(&self, dir: &Path, passphrase: &Passphrase) -> Result<(), PkiError> {
        self.save_with_iterations(dir, passphrase, DEFAULT_PBKDF2_ITERATIONS)
    }

    /// [`CertificateAuthority::save`] with an explicit PBKDF2 iteration count. Production keys
    /// should use at least [`DEFAULT_PBKDF2_ITERATIONS`]; tests use small counts for speed.
    ///
    /// # Errors
    /// As [`CertificateAuthority::save_with`].
    pub fn save_with_iterations(
        &self,
        dir: &Path,
        passphrase: &Passphrase,
        iterations: NonZeroU32,
    ) -> Result<(), PkiError> {
        self.save_with(
            dir,
            Some(&Sealing {
                passphrase: passphrase.clone(),
                iterations,
            }),
        )
    }

    /// Writes `root.pem`, `intermediate.pem` and each held key: a software key sealed
    /// (`intermediate.key.enc`, `root.key.enc`), a key in a token as its URI
    /// (`intermediate.key.uri`, `root.key.uri`), which holds no secret.
    ///
    /// # Errors
    /// [`PkiError::Io`] naming the file that failed, [`PkiError::EmptyPassphrase`],
    /// [`PkiError::Random`], and [`PkiError::Parse`] for a software key with no `sealing`.
    pub fn save_with(&self, dir: &Path, sealing: Option<&Sealing>) -> Result<(), PkiError> {
        std::fs::create_dir_all(dir).map_err(|e| PkiError::io(dir, e))?;
        let save_key = |key: &Arc<dyn CaKey>, stem: &str| -> Result<(), PkiError> {
            let Some(software) = key.as_sealed() else {
                // A key held by a token stays there: only where it is gets written.
                let uri = format!("{}\n", key.location());
                return write_atomically(
                    &dir.join(format!("{stem}{URI_SUFFIX}")),
                    uri.as_bytes(),
                    false,
                );
            };
            let sealing = sealing.ok_or_else(|| {
                PkiError::parse("CA directory", "a software CA key needs the CA passphrase")
            })?;
            let sealed =
                EncryptedKey::seal(software.pkcs8(), &sealing.passphrase, sealing.iterations)?;
            write_atomically(
                &dir.join(format!("{stem}{SEALED_SUFFIX}")),
                sealed.as_bytes(),
                true,
            )
        };
        // Keys first: a crash then leaves at worst keys without their new certificates,
        // which load refuses loudly (key mismatch) rather than silently.
        save_key(&self.key, INTERMEDIATE)?;
        if let Some(root_key) = &self.root_key {
            save_key(root_key, ROOT)?;
        }
        write_atomically(
            &dir.join(INTERMEDIATE_CERT_FILE),
            self.certificate_pem().as_bytes(),
            false,
        )?;
        write_atomically(&dir.join(ROOT_CERT_FILE), self.root_pem().as_bytes(), false)
    }

    /// Reads a directory written with sealed keys under `passphrase`.
    ///
    /// # Errors
    /// As [`CertificateAuthority::load_with`].
    pub fn load(dir: &Path, passphrase: &Passphrase) -> Result<Self, PkiError> {
        Self::load_with(
            dir,
            &KeyBackend::sealed(passphrase.clone(), DEFAULT_PBKDF2_ITERATIONS),
        )
    }

    /// Reads a directory written by [`CertificateAuthority::save_with`], opening each key
    /// from the store its file names (a sealed file, or a URI into the token). The root's key
    /// is optional: an online service normally runs without it.
    ///
    /// # Errors
    /// [`PkiError::Io`] for a missing or unreadable file, [`PkiError::KeyDecryption`] for a
    /// wrong passphrase or a modified key file, the token's errors, and the validation errors
    /// of [`CertificateAuthority::import_intermediate`].
    pub fn load_with(dir: &Path, keys: &KeyBackend) -> Result<Self, PkiError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| PkiError::io(path, e))
        };
        let read_text = |name: &str| {
            String::from_utf8(read(name)?).map_err(|e| PkiError::parse("CA directory file", e))
        };
        let root_der = cert_pem_to_der("root certificate", &read_text(ROOT_CERT_FILE)?)?;
        let intermediate_der = cert_pem_to_der(
            "intermediate certificate",
            &read_text(INTERMEDIATE_CERT_FILE)?,
        )?;
        let held = |stem: &str| {
            dir.join(format!("{stem}{URI_SUFFIX}")).exists()
                || dir.join(format!("{stem}{SEALED_SUFFIX}")).exists()
        };
        let open = |stem: &str| -> Result<Arc<dyn CaKey>, PkiError> {
            let uri_file = format!("{stem}{URI_SUFFIX}");
            let reference = if dir.join(&uri_file).exists() {
                KeyReference::Pkcs11(read_text(&uri_file)?.trim().to_owned())
            } else {
                KeyReference::Sealed(read(&format!("{stem}{SEALED_SUFFIX}"))?)
            };
            keys.open(&format!("platform/{stem}"), &reference)
        };
        let mut authority = Self::assemble(&intermediate_der, &[], &root_der, open(INTERMEDIATE)?)?;
        if held(ROOT) {
            let root_key = open(ROOT)?;
            let root = super::authority::parse_cert("root certificate", &root_der)?;
            if root.public_key().subject_public_key.data.as_ref() != root_key.public_key() {
                return Err(PkiError::KeyMismatch("root"));
            }
            authority.root_key = Some(root_key);
        }
        Ok(authority)
    }
}
