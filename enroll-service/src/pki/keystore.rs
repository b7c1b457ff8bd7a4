//! CA private keys at rest: passphrase-encrypted PKCS#8 (`OXKEY1`) and atomic file writes.
//!
//! File layout (all integers big-endian):
//!
//! ```text
//!  0..6    magic "OXKEY1"
//!  6..10   PBKDF2-HMAC-SHA256 iteration count (u32)
//! 10..26   salt (16 random bytes)
//! 26..38   AES-256-GCM nonce (12 random bytes)
//! 38..     ciphertext of the PKCS#8 DER ‖ 16-byte GCM tag
//! ```
//!
//! The whole 38-byte header is the GCM additional data, so lowering the iteration count or
//! swapping the salt is detected like any other modification.

use std::fmt;
use std::num::NonZeroU32;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::pbkdf2;
use zeroize::Zeroizing;

use super::PkiError;

const MAGIC: &[u8; 6] = b"OXKEY1";
const SALT_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + 4 + SALT_LEN + NONCE_LEN;
const TAG_LEN: usize = 16;

/// The PBKDF2 iteration count used by [`EncryptedKey::seal`] callers that do not choose one:
/// OWASP's 2023 recommendation for PBKDF2-HMAC-SHA256. Tests pass a small count instead,
/// because 600,000 iterations take around a second in a debug build.
pub const DEFAULT_PBKDF2_ITERATIONS: NonZeroU32 = NonZeroU32::new(600_000).expect("not zero");

/// The largest iteration count accepted when reading a key file, so that a crafted header
/// cannot make the service spin for hours before refusing it.
pub const MAX_PBKDF2_ITERATIONS: u32 = 100_000_000;

/// The operator's secret that protects the CA keys. Zeroized on drop; `Debug` is redacted.
#[derive(Clone)]
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// Wraps a passphrase, e.g. the value of an environment variable.
    ///
    /// # Errors
    /// [`PkiError::EmptyPassphrase`] if it is empty.
    pub fn new(passphrase: String) -> Result<Self, PkiError> {
        let passphrase = Zeroizing::new(passphrase);
        if passphrase.is_empty() {
            return Err(PkiError::EmptyPassphrase);
        }
        Ok(Self(passphrase))
    }

    /// Wraps the contents of a passphrase file. One trailing newline (`\n` or `\r\n`) is
    /// dropped, because editors and `echo` add it and the operator did not mean it.
    ///
    /// # Errors
    /// [`PkiError::EmptyPassphrase`] if nothing is left.
    pub fn from_file_contents(contents: String) -> Result<Self, PkiError> {
        let mut contents = Zeroizing::new(contents);
        if contents.ends_with('\n') {
            contents.pop();
            if contents.ends_with('\r') {
                contents.pop();
            }
        }
        Self::new(std::mem::take(&mut *contents))
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase([REDACTED])")
    }
}

/// A PKCS#8 (DER) private key. Zeroized on drop; `Debug` is redacted.
#[derive(Clone)]
pub struct PrivateKeyPkcs8(Zeroizing<Vec<u8>>);

impl PrivateKeyPkcs8 {
    /// Wraps PKCS#8 DER bytes (not validated here; the CA checks keys when it uses them).
    #[must_use]
    pub fn from_der(der: Vec<u8>) -> Self {
        Self(Zeroizing::new(der))
    }

    pub(crate) fn new(der: Vec<u8>) -> Self {
        Self::from_der(der)
    }

    /// The PKCS#8 DER bytes.
    #[must_use]
    pub fn der(&self) -> &[u8] {
        &self.0
    }

    /// The key as a `PRIVATE KEY` PEM block.
    #[must_use]
    pub fn to_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(pem_encode("PRIVATE KEY", &self.0))
    }
}

impl fmt::Debug for PrivateKeyPkcs8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPkcs8([REDACTED])")
    }
}

/// A private key encrypted under a [`Passphrase`] in the `OXKEY1` format (see the module docs).
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptedKey(Vec<u8>);

impl EncryptedKey {
    /// Encrypts `key` with a fresh random salt and nonce.
    ///
    /// `iterations` is the PBKDF2 work factor; use [`DEFAULT_PBKDF2_ITERATIONS`] (or more)
    /// for real keys.
    ///
    /// # Errors
    /// [`PkiError::InvalidIterations`] if `iterations` exceeds [`MAX_PBKDF2_ITERATIONS`],
    /// [`PkiError::Random`] if the system RNG fails.
    pub fn seal(
        key: &PrivateKeyPkcs8,
        passphrase: &Passphrase,
        iterations: NonZeroU32,
    ) -> Result<Self, PkiError> {
        if iterations.get() > MAX_PBKDF2_ITERATIONS {
            return Err(PkiError::InvalidIterations(iterations.get()));
        }
        let mut salt = [0u8; SALT_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut salt).map_err(|_| PkiError::Random)?;
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| PkiError::Random)?;

        let mut out = Vec::with_capacity(HEADER_LEN + key.der().len() + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&iterations.get().to_be_bytes());
        out.extend_from_slice(&salt);
        out.extend_from_slice(&nonce);

        let aead = derive_key(passphrase, &salt, iterations)?;
        let mut body = Zeroizing::new(key.der().to_vec());
        aead.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&out[..HEADER_LEN]),
            &mut *body,
        )
        // Sealing only fails for absurd lengths; treat it like an RNG-level failure.
        .map_err(|_| PkiError::Random)?;
        out.extend_from_slice(&body);
        Ok(Self(out))
    }

    /// Decrypts the key.
    ///
    /// # Errors
    /// [`PkiError::KeyDecryption`] for a wrong passphrase and for any malformed or modified
    /// file, deliberately without saying which.
    pub fn open(&self, passphrase: &Passphrase) -> Result<PrivateKeyPkcs8, PkiError> {
        let bytes = &self.0;
        if bytes.len() < HEADER_LEN + TAG_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return Err(PkiError::KeyDecryption);
        }
        let (header, sealed) = bytes.split_at(HEADER_LEN);
        let mut iterations = [0u8; 4];
        iterations.copy_from_slice(&header[6..10]);
        let iterations = u32::from_be_bytes(iterations);
        let iterations = NonZeroU32::new(iterations)
            .filter(|n| n.get() <= MAX_PBKDF2_ITERATIONS)
            .ok_or(PkiError::KeyDecryption)?;
        let salt = &header[10..10 + SALT_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&header[10 + SALT_LEN..HEADER_LEN]);

        let aead = derive_key(passphrase, salt, iterations)?;
        let mut body = Zeroizing::new(sealed.to_vec());
        let plain_len = aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(header),
                &mut body,
            )
            .map_err(|_| PkiError::KeyDecryption)?
            .len();
        Ok(PrivateKeyPkcs8::new(body[..plain_len].to_vec()))
    }

    /// Wraps the bytes of a key file for [`EncryptedKey::open`]. Nothing is checked here.
    #[must_use]
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The file contents.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The PBKDF2 iteration count recorded in the header, if the header is well formed.
    #[must_use]
    pub fn iterations(&self) -> Option<u32> {
        let field = self.0.get(6..10)?;
        Some(u32::from_be_bytes(field.try_into().ok()?))
    }
}

impl fmt::Debug for EncryptedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedKey")
            .field("len", &self.0.len())
            .field("iterations", &self.iterations())
            .finish_non_exhaustive()
    }
}

fn derive_key(
    passphrase: &Passphrase,
    salt: &[u8],
    iterations: NonZeroU32,
) -> Result<LessSafeKey, PkiError> {
    if passphrase.as_bytes().is_empty() {
        return Err(PkiError::EmptyPassphrase);
    }
    let mut key = Zeroizing::new([0u8; 32]);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        passphrase.as_bytes(),
        &mut *key,
    );
    let unbound = UnboundKey::new(&AES_256_GCM, &*key).map_err(|_| PkiError::KeyDecryption)?;
    Ok(LessSafeKey::new(unbound))
}

/// Writes a CA file with the one careful writer ([`oxroot_files`]): atomic, durable, and a
/// `secret` file is 0600 from its creation on, so a key never exists on disk with wider
/// permissions.
pub(crate) fn write_atomically(path: &Path, contents: &[u8], secret: bool) -> Result<(), PkiError> {
    let mode = if secret {
        oxroot_files::PRIVATE
    } else {
        oxroot_files::PUBLIC
    };
    oxroot_files::write_atomically(path, contents, mode, oxroot_files::Existing::Replace)
        .map_err(|source| PkiError::io(path, source))
}

pub(crate) fn pem_encode(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}
