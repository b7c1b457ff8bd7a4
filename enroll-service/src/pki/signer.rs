//! The one way a CA key signs: [`CaKey`]. Every CA signature (certificates of every kind,
//! CRLs, verification certificates) goes through it, whatever holds the key.
//!
//! ```text
//!  CaKey ─┬─ SealedKey   a software key, stored sealed under the CA passphrase (keystore.rs)
//!         └─ HsmKey      a key inside a PKCS#11 token (oxroot-hsm): signs, never leaves it
//!  rcgen ◀─ SigningKeyOf(CaKey)  rcgen builds and signs through this adapter
//! ```

use std::fmt;
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use rcgen::{PKCS_ECDSA_P256_SHA256, PublicKeyData, SignatureAlgorithm};

use super::{P256_PUBLIC_KEY_LEN, PkiError, PrivateKeyPkcs8};

/// Why a CA key did not sign.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignerError {
    /// The key's store cannot be reached now (a token that went away, a module that failed):
    /// the service answers UNAVAILABLE and turns NOT_SERVING until it is back.
    #[error("the CA key store is unavailable: {0}")]
    Unavailable(String),
    /// The store refused or failed for another reason.
    #[error("the CA key did not sign: {0}")]
    Failed(String),
}

/// A CA's private key, wherever it lives: it signs, and shows its public half.
pub trait CaKey: Send + Sync + fmt::Debug {
    /// The public key, SEC1 uncompressed.
    fn public_key(&self) -> &[u8; P256_PUBLIC_KEY_LEN];

    /// ECDSA P-256 with SHA-256 over `message`, DER-encoded as X.509 wants it.
    ///
    /// # Errors
    /// [`SignerError`].
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignerError>;

    /// Where the key lives, for `enroll-service ca` and the logs: a file name or a PKCS#11
    /// URI, never key material.
    fn location(&self) -> String;

    /// Whether the key's store answers now (a cheap check, for health).
    ///
    /// # Errors
    /// [`SignerError::Unavailable`] if it does not.
    fn probe(&self) -> Result<(), SignerError>;

    /// The key as a software key, which can be sealed to a file; `None` for a key that cannot
    /// leave its store.
    fn as_sealed(&self) -> Option<&SealedKey> {
        None
    }
}

/// A software CA key (the `sealed` backend). It lives in memory while the service runs and on
/// disk only sealed under the CA passphrase.
pub struct SealedKey {
    pkcs8: PrivateKeyPkcs8,
    pair: EcdsaKeyPair,
    public_key: [u8; P256_PUBLIC_KEY_LEN],
    location: String,
}

impl fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedKey")
            .field("location", &self.location)
            .field("private_key", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

impl SealedKey {
    /// A fresh key from the system RNG.
    ///
    /// # Errors
    /// [`PkiError::Random`] if the RNG fails.
    pub fn generate(location: impl Into<String>) -> Result<Self, PkiError> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                .map_err(|_| PkiError::Random)?;
        Self::from_pkcs8(PrivateKeyPkcs8::from_der(pkcs8.as_ref().to_vec()), location)
    }

    /// A key from its PKCS#8 DER.
    ///
    /// # Errors
    /// [`PkiError::Parse`] if it is not a P-256 PKCS#8 key.
    pub fn from_pkcs8(
        pkcs8: PrivateKeyPkcs8,
        location: impl Into<String>,
    ) -> Result<Self, PkiError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.der())
            .map_err(|e| PkiError::parse("CA private key", e))?;
        let public_key = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| PkiError::InvalidPublicKey)?;
        Ok(Self {
            pkcs8,
            pair,
            public_key,
            location: location.into(),
        })
    }

    /// The PKCS#8 DER, to be sealed (never written as it is).
    #[must_use]
    pub fn pkcs8(&self) -> &PrivateKeyPkcs8 {
        &self.pkcs8
    }
}

impl CaKey for SealedKey {
    fn public_key(&self) -> &[u8; P256_PUBLIC_KEY_LEN] {
        &self.public_key
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignerError> {
        self.pair
            .sign(&SystemRandom::new(), message)
            .map(|signature| signature.as_ref().to_vec())
            .map_err(|_| SignerError::Failed("the system RNG failed".into()))
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn probe(&self) -> Result<(), SignerError> {
        Ok(())
    }

    fn as_sealed(&self) -> Option<&SealedKey> {
        Some(self)
    }
}

/// A [`CaKey`] as rcgen's `SigningKey`. rcgen reports any signing failure as one opaque
/// error; the adapter keeps the key's own error, which [`SigningKeyOf::classify`] returns, so
/// the caller can tell a store that went away (UNAVAILABLE) from anything else, with its reason.
pub(crate) struct SigningKeyOf(pub(crate) Arc<dyn CaKey>, Mutex<Option<SignerError>>);

impl SigningKeyOf {
    pub(crate) fn new(key: Arc<dyn CaKey>) -> Self {
        Self(key, Mutex::new(None))
    }

    /// What the failed signature was: the key's own error, or (if rcgen failed without asking
    /// the key) whatever a probe of its store says now.
    pub(crate) fn classify(&self) -> SignerError {
        let kept = self
            .1
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        kept.unwrap_or_else(|| match self.0.probe() {
            Err(unavailable) => unavailable,
            Ok(()) => SignerError::Failed(format!("{} refused to sign", self.0.location())),
        })
    }
}

impl PublicKeyData for SigningKeyOf {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_key()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for SigningKeyOf {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(message).map_err(|error| {
            *self
                .1
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
            rcgen::Error::RemoteKeyError
        })
    }
}
