//! The CA directory: the CA certificates and their sealed keys as files, written with the one
//! careful writer and read back with every cross-check of an import.
//!
//! ```text
//!  <dir>/root.pem  intermediate.pem  intermediate.key.enc  [root.key.enc, until taken offline]
//! ```

use std::num::NonZeroU32;
use std::path::Path;

use std::sync::Arc;

use super::authority::cert_pem_to_der;
use super::keystore::write_atomically;
use super::{
    CaKey, CertificateAuthority, DEFAULT_PBKDF2_ITERATIONS, EncryptedKey, Passphrase, PkiError,
    SealedKey,
};

const ROOT_CERT_FILE: &str = "root.pem";
const INTERMEDIATE_CERT_FILE: &str = "intermediate.pem";
const ROOT_KEY_FILE: &str = "root.key.enc";
const INTERMEDIATE_KEY_FILE: &str = "intermediate.key.enc";

impl CertificateAuthority {
    /// Writes `root.pem`, `intermediate.pem`, `intermediate.key.enc` and, if the root key is
    /// held, `root.key.enc` into `dir` with [`DEFAULT_PBKDF2_ITERATIONS`].
    ///
    /// # Errors
    /// [`PkiError::Io`] naming the file that failed, [`PkiError::EmptyPassphrase`],
    /// [`PkiError::Random`].
    pub fn save(&self, dir: &Path, passphrase: &Passphrase) -> Result<(), PkiError> {
        self.save_with_iterations(dir, passphrase, DEFAULT_PBKDF2_ITERATIONS)
    }

    /// [`CertificateAuthority::save`] with an explicit PBKDF2 iteration count. Production keys
    /// should use at least [`DEFAULT_PBKDF2_ITERATIONS`]; tests use small counts for speed.
    ///
    /// # Errors
    /// As [`CertificateAuthority::save`], plus [`PkiError::InvalidIterations`].
    pub fn save_with_iterations(
        &self,
        dir: &Path,
        passphrase: &Passphrase,
        iterations: NonZeroU32,
    ) -> Result<(), PkiError> {
        std::fs::create_dir_all(dir).map_err(|e| PkiError::io(dir, e))?;
        let seal = |key: &Arc<dyn CaKey>, name: &str| -> Result<(), PkiError> {
            // A key held by a token stays there: nothing of it is written.
            let Some(sealed) = key.as_sealed() else {
                return Ok(());
            };
            let sealed = EncryptedKey::seal(sealed.pkcs8(), passphrase, iterations)?;
            write_atomically(&dir.join(name), sealed.as_bytes(), true)
        };
        // Keys first: a crash then leaves at worst keys without their new certificates,
        // which load refuses loudly (key mismatch) rather than silently.
        seal(&self.key, INTERMEDIATE_KEY_FILE)?;
        if let Some(root_key) = &self.root_key {
            seal(root_key, ROOT_KEY_FILE)?;
        }
        write_atomically(
            &dir.join(INTERMEDIATE_CERT_FILE),
            self.certificate_pem().as_bytes(),
            false,
        )?;
        write_atomically(&dir.join(ROOT_CERT_FILE), self.root_pem().as_bytes(), false)
    }

    /// Reads a directory written by [`CertificateAuthority::save`]. `root.key.enc` is
    /// optional: an online service normally runs without it.
    ///
    /// # Errors
    /// [`PkiError::Io`] for a missing or unreadable file, [`PkiError::KeyDecryption`] for a
    /// wrong passphrase or a modified key file, and the validation errors of
    /// [`CertificateAuthority::import_intermediate`].
    pub fn load(dir: &Path, passphrase: &Passphrase) -> Result<Self, PkiError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| PkiError::io(path, e))
        };
        let read_text = |name: &'static str| {
            String::from_utf8(read(name)?).map_err(|e| PkiError::parse(name, e))
        };
        let root_der = cert_pem_to_der("root certificate", &read_text(ROOT_CERT_FILE)?)?;
        let intermediate_der = cert_pem_to_der(
            "intermediate certificate",
            &read_text(INTERMEDIATE_CERT_FILE)?,
        )?;
        let open = |name: &'static str| -> Result<Arc<dyn CaKey>, PkiError> {
            let pkcs8 = EncryptedKey::from_bytes(read(name)?).open(passphrase)?;
            Ok(Arc::new(SealedKey::from_pkcs8(pkcs8, name)?))
        };
        let mut authority = Self::assemble(
            &intermediate_der,
            &[],
            &root_der,
            open(INTERMEDIATE_KEY_FILE)?,
        )?;
        if dir.join(ROOT_KEY_FILE).exists() {
            let root_key = open(ROOT_KEY_FILE)?;
            let root = super::authority::parse_cert("root certificate", &root_der)?;
            if root.public_key().subject_public_key.data.as_ref() != root_key.public_key() {
                return Err(PkiError::KeyMismatch("root"));
            }
            authority.root_key = Some(root_key);
        }
        Ok(authority)
    }
}
