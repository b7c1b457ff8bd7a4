//! Where CA keys are made and kept: the configured key backend.
//!
//! ```text
//!  sealed   a software key, sealed under the CA passphrase (OXKEY1, keystore.rs); the sealed
//!           bytes are what the registry or the CA directory stores
//!  pkcs11   a key generated inside a PKCS#11 token (CKA_SENSITIVE, never extractable); what is
//!           stored is its RFC 7512 URI, never key material
//! ```
//!
//! A [`KeyReference`] is what a record keeps of a key; [`KeyBackend::open`] turns it back into a
//! [`CaKey`] that signs.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::signer::{CaKey, SealedKey};
use super::{EncryptedKey, Passphrase, PkiError};

/// What a record keeps of a CA key: the key sealed under the CA passphrase, or where in a
/// token it lives.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyReference {
    /// The key, sealed (OXKEY1).
    Sealed(#[serde(with = "sealed_bytes")] Vec<u8>),
    /// The key's PKCS#11 URI (RFC 7512), without any PIN.
    Pkcs11(String),
}

impl fmt::Debug for KeyReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sealed(_) => f.write_str("Sealed([sealed key])"),
            Self::Pkcs11(uri) => write!(f, "Pkcs11({uri})"),
        }
    }
}

impl KeyReference {
    /// Where the key is, for operators: `sealed` or the URI.
    #[must_use]
    pub fn location(&self) -> String {
        match self {
            Self::Sealed(_) => "sealed".to_owned(),
            Self::Pkcs11(uri) => uri.clone(),
        }
    }
}

/// The sealed bytes as hex in JSON, raw in the binary encoding.
mod sealed_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&hex::encode(bytes))
        } else {
            serializer.serialize_bytes(bytes)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        if deserializer.is_human_readable() {
            hex::decode(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
        } else {
            <Vec<u8>>::deserialize(deserializer)
        }
    }
}

/// The configured key backend: where new CA keys are generated and how stored ones open.
#[derive(Clone)]
pub enum KeyBackend {
    /// Software keys sealed under the CA passphrase.
    Sealed {
        /// Seals and opens the keys.
        passphrase: Passphrase,
        /// PBKDF2 work factor for new keys.
        iterations: NonZeroU32,
    },
}

impl fmt::Debug for KeyBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sealed { iterations, .. } => f
                .debug_struct("Sealed")
                .field("iterations", iterations)
                .finish_non_exhaustive(),
        }
    }
}

impl KeyBackend {
    /// A new key for the CA called `label`, and what a record keeps of it.
    ///
    /// # Errors
    /// [`PkiError`] from the RNG, the sealing or the token.
    pub fn generate(&self, label: &str) -> Result<(Arc<dyn CaKey>, KeyReference), PkiError> {
        match self {
            Self::Sealed {
                passphrase,
                iterations,
            } => {
                let key = SealedKey::generate(format!("sealed:{label}"))?;
                let sealed = EncryptedKey::seal(key.pkcs8(), passphrase, *iterations)?;
                Ok((
                    Arc::new(key),
                    KeyReference::Sealed(sealed.as_bytes().to_vec()),
                ))
            }
        }
    }

    /// The key a record refers to.
    ///
    /// # Errors
    /// [`PkiError::KeyDecryption`] for a sealed key the passphrase does not open;
    /// [`PkiError::Parse`] for a reference this backend cannot open.
    pub fn open(&self, label: &str, reference: &KeyReference) -> Result<Arc<dyn CaKey>, PkiError> {
        match (self, reference) {
            (Self::Sealed { passphrase, .. }, KeyReference::Sealed(bytes)) => {
                let pkcs8 = EncryptedKey::from_bytes(bytes.clone()).open(passphrase)?;
                Ok(Arc::new(SealedKey::from_pkcs8(
                    pkcs8,
                    format!("sealed:{label}"),
                )?))
            }
            (Self::Sealed { .. }, KeyReference::Pkcs11(uri)) => Err(PkiError::parse(
                "CA key reference",
                format!("{uri} is in a PKCS#11 token, and no token is configured"),
            )),
        }
    }
}
