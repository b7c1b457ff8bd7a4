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

use super::signer::{CaKey, SealedKey, SignerError};
use super::{EncryptedKey, P256_PUBLIC_KEY_LEN, Passphrase, PkiError};

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
    /// Where the key is, for operators of any owner: `sealed`, or the URI's token and object
    /// attributes only. The module's path and the PIN's source are the service host's
    /// configuration, not the caller's business.
    #[must_use]
    pub fn location(&self) -> String {
        match self {
            Self::Sealed(_) => "sealed".to_owned(),
            Self::Pkcs11(uri) => {
                let path = uri.split_once('?').map_or(uri.as_str(), |(path, _)| path);
                let shown: Vec<&str> = path
                    .trim_start_matches("pkcs11:")
                    .split(';')
                    .filter(|attribute| {
                        let name = attribute.split_once('=').map_or(*attribute, |(n, _)| n);
                        !matches!(
                            name,
                            "pin-source" | "pin-value" | "module-path" | "module-name"
                        )
                    })
                    .collect();
                format!("pkcs11:{}", shown.join(";"))
            }
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

/// The software key store: keys sealed under the CA passphrase.
#[derive(Clone, Debug)]
pub struct Sealing {
    /// Seals and opens the keys.
    pub passphrase: Passphrase,
    /// PBKDF2 work factor for new keys.
    pub iterations: NonZeroU32,
}

/// Where CA keys are made and how stored ones open: new keys go to the token when one is
/// configured, else they are sealed; stored keys open from whichever store their reference
/// names (keys sealed before a token was configured keep working with the passphrase).
#[derive(Clone)]
pub struct KeyBackend {
    sealing: Option<Sealing>,
    token: Option<Arc<oxroot_hsm::Token>>,
}

impl fmt::Debug for KeyBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyBackend")
            .field("sealing", &self.sealing.as_ref().map(|s| s.iterations))
            .field("token", &self.token.as_ref().map(|t| t.uri().to_string()))
            .finish()
    }
}

impl KeyBackend {
    /// New keys sealed under a passphrase.
    #[must_use]
    pub fn sealed(passphrase: Passphrase, iterations: NonZeroU32) -> Self {
        Self {
            sealing: Some(Sealing {
                passphrase,
                iterations,
            }),
            token: None,
        }
    }

    /// New keys generated in a PKCS#11 token; sealed keys open only if `sealing` is given.
    #[must_use]
    pub fn pkcs11(token: Arc<oxroot_hsm::Token>, sealing: Option<Sealing>) -> Self {
        Self {
            sealing,
            token: Some(token),
        }
    }

    /// The token new keys are generated in, if any.
    #[must_use]
    pub fn token(&self) -> Option<&Arc<oxroot_hsm::Token>> {
        self.token.as_ref()
    }

    /// Where new keys go, for operators: `sealed` or the token's URI.
    #[must_use]
    pub fn describe(&self) -> String {
        self.token
            .as_ref()
            .map_or_else(|| "sealed".to_owned(), |t| t.uri().to_string())
    }

    /// Whether the key store answers now: the token's sessions, or nothing to check for sealed
    /// keys (they are in memory once opened).
    ///
    /// # Errors
    /// [`SignerError::Unavailable`] while the token is away.
    pub fn probe(&self) -> Result<(), SignerError> {
        match &self.token {
            Some(token) => token.probe().map_err(signer_error),
            None => Ok(()),
        }
    }

    /// A new key for the CA called `label` (`platform/root`, `acme/1`…), and what a record
    /// keeps of it.
    ///
    /// # Errors
    /// [`PkiError`] from the RNG, the sealing or the token ([`PkiError::Signer`] with
    /// [`SignerError::Unavailable`] while it is away).
    pub fn generate(&self, label: &str) -> Result<(Arc<dyn CaKey>, KeyReference), PkiError> {
        if let Some(token) = &self.token {
            let (object, id) = token_names(label)?;
            let key = token.generate_key(&object, &id).map_err(signer_error)?;
            let reference = KeyReference::Pkcs11(key.uri().to_string());
            return Ok((Arc::new(HsmKey(key)), reference));
        }
        let Some(Sealing {
            passphrase,
            iterations,
        }) = &self.sealing
        else {
            return Err(PkiError::parse(
                "key backend",
                "neither a PKCS#11 token nor a CA passphrase is configured",
            ));
        };
        let key = SealedKey::generate(format!("sealed:{label}"))?;
        let sealed = EncryptedKey::seal(key.pkcs8(), passphrase, *iterations)?;
        Ok((
            Arc::new(key),
            KeyReference::Sealed(sealed.as_bytes().to_vec()),
        ))
    }

    /// The key a record refers to. A PKCS#11 key is looked up by its label and id on the
    /// configured token (so a moved module or a new PIN source does not orphan it).
    ///
    /// # Errors
    /// [`PkiError::KeyDecryption`] for a sealed key the passphrase does not open;
    /// [`PkiError::Parse`] for a reference no configured store can open; the token's errors
    /// ([`PkiError::Signer`]).
    pub fn open(&self, label: &str, reference: &KeyReference) -> Result<Arc<dyn CaKey>, PkiError> {
        match reference {
            KeyReference::Sealed(bytes) => {
                let Some(sealing) = &self.sealing else {
                    return Err(PkiError::parse(
                        "CA key reference",
                        format!("the key of {label} is sealed, and no CA passphrase is given"),
                    ));
                };
                let pkcs8 = EncryptedKey::from_bytes(bytes.clone()).open(&sealing.passphrase)?;
                Ok(Arc::new(SealedKey::from_pkcs8(
                    pkcs8,
                    format!("sealed:{label}"),
                )?))
            }
            KeyReference::Pkcs11(uri) => {
                let Some(token) = &self.token else {
                    return Err(PkiError::parse(
                        "CA key reference",
                        format!("{uri} is in a PKCS#11 token, and no token is configured"),
                    ));
                };
                let stored: oxroot_hsm::Pkcs11Uri = uri
                    .parse()
                    .map_err(|e| PkiError::parse("CA key reference", e))?;
                let object = stored.object().unwrap_or_default();
                let on_this_token = token
                    .uri()
                    .key_uri(object, stored.id().unwrap_or_default())
                    .map_err(|e| PkiError::parse("CA key reference", e))?;
                let key = token.find_key(&on_this_token).map_err(signer_error)?;
                Ok(Arc::new(HsmKey(key)))
            }
        }
    }
}

/// The token label and CKA_ID of a new key for the CA `label`: `oxroot:<CA id>#<8 hex>`
/// (`oxroot:acme/1#3fa2c1d0`) and 8 random bytes. Unique per key, not per CA: a key whose
/// record never committed (a create or rotation that failed after the key was made) must not
/// block the retry, which would find its label taken, and two deployments sharing a token
/// partition must not collide. Records keep the key's URI, and keys are opened by it.
fn token_names(label: &str) -> Result<(String, Vec<u8>), PkiError> {
    let mut random = [0u8; 12];
    aws_lc_rs::rand::fill(&mut random)
        .map_err(|_| PkiError::parse("key backend", "the random generator failed"))?;
    let (suffix, id) = random.split_at(4);
    Ok((
        format!("oxroot:{label}#{}", hex::encode(suffix)),
        id.to_vec(),
    ))
}

/// The token's errors as the signer's: an outage is [`SignerError::Unavailable`] (the service
/// answers UNAVAILABLE and turns NOT_SERVING), everything else a failure a person must look at.
fn signer_error(error: oxroot_hsm::HsmError) -> SignerError {
    match error {
        oxroot_hsm::HsmError::Unavailable(detail) => SignerError::Unavailable(detail),
        other => SignerError::Failed(other.to_string()),
    }
}

/// A CA key inside a PKCS#11 token: it signs there and never leaves it.
#[derive(Debug)]
pub struct HsmKey(oxroot_hsm::CaKey);

impl CaKey for HsmKey {
    fn public_key(&self) -> &[u8; P256_PUBLIC_KEY_LEN] {
        self.0.public_key()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignerError> {
        self.0.sign_sha256(message).map_err(signer_error)
    }

    fn location(&self) -> String {
        self.0.uri().to_string()
    }

    fn probe(&self) -> Result<(), SignerError> {
        self.0.probe().map_err(signer_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_location_names_the_token_and_object_only() {
        let reference = KeyReference::Pkcs11(
            "pkcs11:token=oxroot;object=oxroot%3Aacme%2F1;id=%01%02;pin-source=file:/run/pin\
             ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=env:PIN"
                .into(),
        );
        assert_eq!(
            reference.location(),
            "pkcs11:token=oxroot;object=oxroot%3Aacme%2F1;id=%01%02"
        );
        assert_eq!(KeyReference::Sealed(Vec::new()).location(), "sealed");
    }

    #[test]
    fn every_new_token_key_gets_its_own_label_and_id() {
        let (first_label, first_id) = token_names("acme/1").unwrap();
        let (second_label, second_id) = token_names("acme/1").unwrap();
        // A retry for the same CA never finds its label or id taken by an orphaned key.
        assert_ne!(first_label, second_label);
        assert_ne!(first_id, second_id);
        assert!(first_label.starts_with("oxroot:acme/1#"), "{first_label}");
        assert_eq!(first_label.len(), "oxroot:acme/1#".len() + 8);
        assert_eq!(first_id.len(), 8);
    }
}
