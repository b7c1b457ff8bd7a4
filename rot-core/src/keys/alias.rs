//! The firmware-bound alias key: TCG DICE's layering, with a device seed as the secret below
//! and the firmware measurement as the layer above.
//!
//! ```text
//!  CDI       = HKDF-SHA256(salt = "oxroot/dice-cdi/v1", IKM = seed s, info = M, L = 32)
//!  alias key = P-256 scalar from HKDF-SHA256(salt = "oxroot/p256-scalar/v1", IKM = CDI,
//!              info = "alias", L = 48), reduced as (c mod (n − 1)) + 1   — FIPS 186-5 A.2.1
//! ```
//!
//! `s` is the key slot (1..=7), so a rotation to the next slot gives another alias key for the
//! same firmware; seed 0 (the enrolment seed) never feeds an alias key. `M` is the 32-byte
//! SHA-256 of the firmware image ([`FirmwareMeasurement`]).
//!
//! Separation from the other keys: the ESK and the DSKs take their scalar from
//! HKDF(salt "oxroot/p256-scalar/v1", IKM = seed, info "enrolment" / "device"). The alias key's
//! IKM is the CDI, never a seed (a PRF output under another salt), and its info is "alias", so
//! no input of one derivation is an input of another. A further layer would derive its CDI from
//! this one's the same way (`HKDF(salt, IKM = CDI, info = its measurement)`); none exists yet.

use core::fmt;

use hkdf::Hkdf;
use p256::ecdsa::SigningKey;
use sha2::Sha256;
use zeroize::{ZeroizeOnDrop, Zeroizing};

use super::{
    ImportKey, KeySlot, NotCertificateVerify, PublicKey, Seeds, SignatureBytes, derive_scalar,
    derive_signing_key, sign_bytes, sign_tls12, sign_tls13,
};
use crate::attestation::Message;
use crate::firmware::FirmwareMeasurement;

/// Salt of the CDI derivation: sets it apart from every other HKDF in this crate.
const CDI_SALT: &[u8] = b"oxroot/dice-cdi/v1";
/// The HKDF info of the alias key's scalar (the ESK's is "enrolment", a DSK's "device").
const ALIAS_PURPOSE: &[u8] = b"alias";
/// Length of a CDI.
pub const CDI_BYTES: usize = 32;

/// The compound device identifier of `seed` running the firmware `measurement`.
#[expect(
    clippy::expect_used,
    reason = "32 bytes is a valid HKDF-SHA256 output length"
)]
fn firmware_cdi(seed: &[u8], measurement: &FirmwareMeasurement) -> Zeroizing<[u8; CDI_BYTES]> {
    let mut cdi = Zeroizing::new([0u8; CDI_BYTES]);
    Hkdf::<Sha256>::new(Some(CDI_SALT), seed)
        .expand(measurement.as_bytes(), cdi.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    cdi
}

/// A firmware-bound alias private key for one slot and one measurement. Certified in place of
/// the slot's DSK when a device proves what it runs; the TLS client key of such a credential.
pub struct AliasKey {
    key: SigningKey,
    slot: KeySlot,
    measurement: FirmwareMeasurement,
}

impl fmt::Debug for AliasKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AliasKey {{ slot: {}, measurement: {}, key: [REDACTED] }}",
            self.slot.get(),
            self.measurement
        )
    }
}

// `SigningKey` zeroizes its scalar on drop; the slot and the measurement are public.
impl ZeroizeOnDrop for AliasKey {}

impl Seeds {
    /// Derives the alias key of `slot` for the firmware `measurement` (see the module text).
    #[must_use]
    pub fn alias_key(&self, slot: KeySlot, measurement: &FirmwareMeasurement) -> AliasKey {
        let cdi = firmware_cdi(&self.seeds[usize::from(slot.get())], measurement);
        AliasKey {
            key: derive_signing_key(cdi.as_ref(), ALIAS_PURPOSE),
            slot,
            measurement: *measurement,
        }
    }

    /// Derives the alias key exactly as [`Seeds::alias_key`] does and hands it to another
    /// P-256 implementation (see [`ImportKey`]).
    ///
    /// # Errors
    /// The implementation's refusal.
    pub fn alias_key_into<K: ImportKey>(
        &self,
        slot: KeySlot,
        measurement: &FirmwareMeasurement,
    ) -> Result<K, K::Error> {
        let cdi = firmware_cdi(&self.seeds[usize::from(slot.get())], measurement);
        K::import_p256_scalar(&derive_scalar(cdi.as_ref(), ALIAS_PURPOSE))
    }

    /// The CDI and alias scalar of `slot` for `measurement`, for
    /// [`crate::hazmat::expose_alias_secrets`] only.
    #[cfg(feature = "hazmat-expose")]
    pub(crate) fn expose_alias(
        &self,
        slot: KeySlot,
        measurement: &FirmwareMeasurement,
    ) -> crate::hazmat::ExposedAliasSecrets {
        let cdi = firmware_cdi(&self.seeds[usize::from(slot.get())], measurement);
        crate::hazmat::ExposedAliasSecrets {
            cdi: *cdi,
            scalar: *derive_scalar(cdi.as_ref(), ALIAS_PURPOSE),
        }
    }
}

impl AliasKey {
    /// The alias public key, SEC1 uncompressed.
    #[must_use]
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_verifying_key(self.key.verifying_key())
    }

    /// The slot whose seed this key was derived from.
    #[must_use]
    pub fn slot(&self) -> KeySlot {
        self.slot
    }

    /// The firmware measurement this key is bound to.
    #[must_use]
    pub fn measurement(&self) -> &FirmwareMeasurement {
        &self.measurement
    }

    /// Signs an attestation message (ECDSA P-256 / SHA-256, RFC 6979 nonces): the proof that
    /// the device holds the alias key it asks to have certified.
    #[must_use]
    pub fn sign(&self, message: &Message) -> SignatureBytes {
        sign_bytes(&self.key, message.as_bytes())
    }

    /// Signs the content of a TLS 1.3 client `CertificateVerify`, as
    /// [`super::DeviceKey::sign_tls13_client_certificate_verify`] does with a DSK.
    ///
    /// # Errors
    /// [`NotCertificateVerify`] if `content` is not a TLS 1.3 client `CertificateVerify`
    /// content.
    pub fn sign_tls13_client_certificate_verify(
        &self,
        content: &[u8],
    ) -> Result<SignatureBytes, NotCertificateVerify> {
        sign_tls13(&self.key, content)
    }

    /// Signs a TLS 1.2 client handshake transcript, as
    /// [`super::DeviceKey::sign_tls12_client_certificate_verify`] does with a DSK.
    ///
    /// # Errors
    /// [`NotCertificateVerify`] if `transcript` is not such a transcript.
    pub fn sign_tls12_client_certificate_verify(
        &self,
        transcript: &[u8],
    ) -> Result<SignatureBytes, NotCertificateVerify> {
        sign_tls12(&self.key, transcript)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly")]
mod tests {
    use super::super::SEED_BYTES;
    use super::*;

    fn hex32(text: &str) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            *byte = u8::from_str_radix(core::str::from_utf8(pair).unwrap(), 16).unwrap();
        }
        bytes
    }

    fn hex65(text: &str) -> [u8; 65] {
        let mut bytes = [0u8; 65];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            *byte = u8::from_str_radix(core::str::from_utf8(pair).unwrap(), 16).unwrap();
        }
        bytes
    }

    /// Seeds whose slot-1 seed is 00 01 … 0f (the others differ, so no slot shares it).
    fn vector_seeds() -> Seeds {
        Seeds {
            seeds: core::array::from_fn(|i| {
                core::array::from_fn(|j| {
                    if i == 1 {
                        j as u8
                    } else {
                        (16 * i + j) as u8 ^ 0xa5
                    }
                })
            }),
        }
    }

    struct Vector {
        /// The image whose SHA-256 is the measurement.
        image: &'static [u8],
        measurement: &'static str,
        cdi: &'static str,
        scalar: &'static str,
        public_key: &'static str,
    }

    /// Computed independently of this crate from the derivation in the module text (Python:
    /// hashlib, hmac for HKDF-SHA256 per RFC 5869, `cryptography` for the point), for the
    /// seed 00 01 … 0f.
    const VECTORS: [Vector; 2] = [
        Vector {
            image: b"oxroot firmware vector 1",
            measurement: "648aaf2973e25f6150beecf6981162c0451e71f3076cf53eab139428acf4a5cc",
            cdi: "3994af9d40cb0d89c383840615978118c719dadecb1d6b64aeeeee1dc0dcff68",
            scalar: "52031e636c6a74b8e8cffa88aed83594771ac455c4457b5985bcb6da49382201",
            public_key: "04b59967e2cad2f46ad65716904cad201b20ba58dd2130ba5b7c12505e99f523be\
                         e4125f0b0fff2d257482e1261942af77a8bb6162de975cd0718929fb1d5d89e0",
        },
        Vector {
            image: b"oxroot firmware vector 2",
            measurement: "f8f68493456da04b8ff047c82edcfe1653bef9d08456cee0ab95c7f88e4c5cd3",
            cdi: "0410c6c4b8b6843fbedd89cceb094c422a15cc69ccca896b0d780894deb399ec",
            scalar: "bd110e58a03a4f4f7a6740c24d3cfa9339b04e5f68aa855933224792e2f6c2e8",
            public_key: "04a36d9674c9ce371c8ba224d45dfc6b68cb180bc014d6cd68ed086eaa16161586\
                         43769ecd84b044858697381334235ea976566203e7d4e41da90188a46d461d93",
        },
    ];

    #[test]
    fn alias_keys_match_the_independent_vectors() {
        let seeds = vector_seeds();
        assert_eq!(
            seeds.seeds[1],
            core::array::from_fn::<u8, SEED_BYTES, _>(|j| j as u8)
        );
        for vector in VECTORS {
            let measurement = FirmwareMeasurement::of_image(vector.image);
            assert_eq!(measurement.as_bytes(), &hex32(vector.measurement));
            let cdi = firmware_cdi(&seeds.seeds[1], &measurement);
            assert_eq!(*cdi, hex32(vector.cdi), "CDI");
            let scalar = derive_scalar(cdi.as_ref(), ALIAS_PURPOSE);
            assert_eq!(*scalar, hex32(vector.scalar), "scalar");
            let key = seeds.alias_key(KeySlot::FIRST, &measurement);
            assert_eq!(key.public_key().as_bytes(), &hex65(vector.public_key));
            assert_eq!(key.measurement(), &measurement);
            assert_eq!(key.slot(), KeySlot::FIRST);
        }
    }

    /// The same tool gives the DSK of that seed, anchoring the older derivation as well (and
    /// showing the alias keys above are not it).
    #[test]
    fn the_device_key_of_the_vector_seed_matches_too() {
        let dsk = vector_seeds().device_key(KeySlot::FIRST);
        assert_eq!(
            dsk.public_key().as_bytes(),
            &hex65(
                "04def400263b6972732c3fc2ab335c7ad0eaf158bbc1b8a02625567a6bf2fb1846\
                 247fdf5a126dd5697a529200c18c8a86b3436081a16a97e221831ac075f0065e"
            )
        );
    }

    /// An [`ImportKey`] that rebuilds the key with p256, to compare with the native one.
    struct Reimported(SigningKey);

    impl ImportKey for Reimported {
        type Error = p256::elliptic_curve::Error;
        fn import_p256_scalar(scalar: &[u8; 32]) -> Result<Self, Self::Error> {
            SigningKey::from_bytes(&(*scalar).into())
                .map(Self)
                .map_err(|_| p256::elliptic_curve::Error)
        }
    }

    #[test]
    fn imported_alias_keys_are_the_derived_keys() {
        let seeds = vector_seeds();
        let measurement = FirmwareMeasurement::of_image(b"image");
        for slot in (1..=7).filter_map(KeySlot::new) {
            let imported: Reimported = seeds.alias_key_into(slot, &measurement).unwrap();
            assert_eq!(
                PublicKey::from_verifying_key(imported.0.verifying_key()),
                seeds.alias_key(slot, &measurement).public_key()
            );
        }
    }

    #[test]
    fn alias_keys_say_nothing_secret_in_debug_output() {
        let key =
            vector_seeds().alias_key(KeySlot::FIRST, &FirmwareMeasurement::from_digest([7; 32]));
        let text = std::format!("{key:?}");
        assert!(
            text.contains("[REDACTED]") && text.contains("0707"),
            "{text}"
        );
    }
}
