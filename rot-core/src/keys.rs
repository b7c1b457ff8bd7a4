//! Seeds and P-256 keys derived on demand from the reconstructed master secret.
//!
//! ```text
//! master (256 bit, HKDF-Extract over the reconstructed PUF word, salt binds helper data)
//!   └─ HKDF-Expand(master, "oxroot/seed/v1" ‖ i) ─▶ seed i (128 bit), i = 0..8
//!        seed 0 ─▶ enrolment key ESK / EPK      (identity: DeviceId = SHA-256(EPK))
//!        seed s ─▶ device key DSK / DPK, slot s  (s = 1..=7, one per certificate generation)
//!        seed s + firmware measurement M ─▶ alias key, slot s  (firmware-bound, see [`alias`])
//! scalar = (c mod (n − 1)) + 1, c = 48 bytes of HKDF(seed)   — FIPS 186-5 A.2.1
//! ```
//!
//! Nothing here can be serialized. Every secret type zeroizes on drop and prints
//! as `[REDACTED]`; keys live only as long as the caller holds them, which the
//! agent keeps to the moment of one signature.

use core::fmt;
use core::str::FromStr;

use hkdf::Hkdf;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::elliptic_curve::bigint::{NonZero, U384};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::attestation::Message;

pub mod alias;
pub mod tls;

pub use alias::AliasKey;

/// Number of 128-bit seeds derived from the master secret.
pub const SEED_COUNT: usize = 8;
/// Length of one seed in bytes.
pub const SEED_BYTES: usize = 16;
/// Length of an uncompressed SEC1 P-256 public key.
pub const PUBLIC_KEY_BYTES: usize = 65;
/// Length of a fixed-size (IEEE P1363, `r ‖ s`) P-256 signature.
pub const SIGNATURE_BYTES: usize = 64;

const SEED_LABEL: &[u8] = b"oxroot/seed/v1";
const SCALAR_SALT: &[u8] = b"oxroot/p256-scalar/v1";
/// n − 1 for P-256, as a 384-bit integer (n from SEC 2 §2.4.2 / FIPS 186-5).
const ORDER_MINUS_ONE: U384 = U384::from_be_hex(concat!(
    "00000000000000000000000000000000",
    "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632550"
));

/// The eight seeds reconstructed from the silicon.
///
/// Built only by the fuzzy extractor. Seed 0 is the enrolment seed.
pub struct Seeds {
    seeds: [[u8; SEED_BYTES]; SEED_COUNT],
}

impl Zeroize for Seeds {
    fn zeroize(&mut self) {
        self.seeds.zeroize();
    }
}

impl Drop for Seeds {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for Seeds {}

impl fmt::Debug for Seeds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Seeds([REDACTED])")
    }
}

impl Seeds {
    /// Expands the 256-bit master secret into the eight seeds.
    #[expect(
        clippy::expect_used,
        reason = "HKDF-SHA256 expands up to 8,160 bytes; a seed is 16"
    )]
    pub(crate) fn expand(master: &Hkdf<Sha256>) -> Self {
        let mut seeds = [[0u8; SEED_BYTES]; SEED_COUNT];
        for (index, seed) in (0u8..).zip(seeds.iter_mut()) {
            master
                .expand_multi_info(&[SEED_LABEL, &[index]], seed)
                .expect("16 bytes is a valid HKDF-SHA256 output length");
        }
        Self { seeds }
    }

    /// Derives the enrolment key from seed 0.
    #[must_use]
    pub fn enrolment_key(&self) -> EnrolmentKey {
        EnrolmentKey(derive_signing_key(&self.seeds[0], b"enrolment"))
    }

    /// Derives the device key for `slot` from seed `slot`.
    #[must_use]
    pub fn device_key(&self, slot: KeySlot) -> DeviceKey {
        DeviceKey {
            key: derive_signing_key(&self.seeds[usize::from(slot.0)], b"device"),
            slot,
        }
    }

    /// Derives the enrolment key exactly as [`Seeds::enrolment_key`] does and hands it to
    /// another P-256 implementation (see [`ImportKey`]).
    ///
    /// # Errors
    /// The implementation's refusal.
    pub fn enrolment_key_into<K: ImportKey>(&self) -> Result<K, K::Error> {
        K::import_p256_scalar(&derive_scalar(&self.seeds[0], b"enrolment"))
    }

    /// Derives the device key of `slot` exactly as [`Seeds::device_key`] does and hands it to
    /// another P-256 implementation (see [`ImportKey`]).
    ///
    /// # Errors
    /// The implementation's refusal.
    pub fn device_key_into<K: ImportKey>(&self, slot: KeySlot) -> Result<K, K::Error> {
        K::import_p256_scalar(&derive_scalar(&self.seeds[usize::from(slot.0)], b"device"))
    }

    /// The raw seeds and private scalars, for [`crate::hazmat::expose_secrets`] only.
    #[cfg(feature = "hazmat-expose")]
    pub(crate) fn expose(&self) -> crate::hazmat::ExposedSecrets {
        let scalar = |key: &SigningKey| -> [u8; 32] { key.to_bytes().into() };
        let mut device_scalars = [[0u8; 32]; SEED_COUNT - 1];
        for (slot, scalar_bytes) in (1u8..).zip(device_scalars.iter_mut()) {
            let key = self.device_key(KeySlot(slot));
            *scalar_bytes = scalar(&key.key);
        }
        crate::hazmat::ExposedSecrets {
            seeds: self.seeds,
            enrolment_scalar: scalar(&self.enrolment_key().0),
            device_scalars,
        }
    }

    /// Compares two seed sets in constant time (for tests and self-checks).
    #[must_use]
    pub fn ct_eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.seeds
            .as_flattened()
            .ct_eq(other.seeds.as_flattened())
            .into()
    }
}

/// A P-256 implementation outside this crate that takes a key derived here: a secure
/// element's key import, or a faster signing library on a host that simulates devices.
///
/// **Hazmat**: the implementation receives the private scalar. It must keep it as this crate
/// does (no copies, zeroized when dropped) and use it only to sign the same messages
/// ([`crate::attestation`] messages and the TLS client `CertificateVerify` inputs that
/// [`tls::certificate_verify_version`] recognises).
pub trait ImportKey: Sized {
    /// Why the implementation refused the key.
    type Error;

    /// Takes the private scalar, 32 bytes big-endian in [1, n − 1]. The caller zeroizes the
    /// buffer when the call returns.
    ///
    /// # Errors
    /// The implementation's refusal.
    fn import_p256_scalar(scalar: &[u8; 32]) -> Result<Self, Self::Error>;
}

/// FIPS 186-5 A.2.1 ("key pair generation using extra random bits"): take 128 bits
/// more than the order's length (48 bytes), so the reduction bias is below 2^-128, and map
/// into [1, n − 1] with `(c mod (n − 1)) + 1`. The reduction is constant-time.
#[expect(
    clippy::expect_used,
    reason = "48 bytes is a valid HKDF-SHA256 output length"
)]
fn derive_scalar(seed: &[u8], purpose: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut extra_bits = Zeroizing::new([0u8; 48]);
    Hkdf::<Sha256>::new(Some(SCALAR_SALT), seed)
        .expand(purpose, extra_bits.as_mut())
        .expect("48 bytes is a valid HKDF-SHA256 output length");
    scalar_from_extra_bits(&extra_bits)
}

#[expect(
    clippy::expect_used,
    reason = "scalar_from_extra_bits maps into [1, n-1], which p256 always accepts"
)]
fn derive_signing_key(seed: &[u8], purpose: &[u8]) -> SigningKey {
    let scalar = derive_scalar(seed, purpose);
    SigningKey::from_bytes(&(*scalar).into()).expect("scalar is in [1, n-1] by construction")
}

/// `(c mod (n − 1)) + 1` as 32 big-endian bytes.
fn scalar_from_extra_bits(extra_bits: &[u8; 48]) -> Zeroizing<[u8; 32]> {
    let mut c = U384::from_be_slice(extra_bits);
    let modulus = NonZero::new(ORDER_MINUS_ONE).expect("n - 1 is not zero");
    let mut d = c.rem(&modulus).wrapping_add(&U384::ONE);
    c.zeroize();
    let mut wide = Zeroizing::new([0u8; 48]);
    wide.copy_from_slice(&d.to_be_bytes());
    d.zeroize();
    let mut scalar = Zeroizing::new([0u8; 32]);
    scalar.copy_from_slice(&wide[16..]);
    scalar
}

/// A device key slot, 1 through 7 (slot 0 is the enrolment key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeySlot(u8);

impl KeySlot {
    /// The first device key slot.
    pub const FIRST: Self = Self(1);
    /// The last device key slot.
    pub const LAST: Self = Self(7);

    /// A slot number in `1..=7`, or `None`.
    #[must_use]
    pub const fn new(slot: u8) -> Option<Self> {
        if slot >= 1 && slot <= 7 {
            Some(Self(slot))
        } else {
            None
        }
    }

    /// The slot number.
    #[must_use]
    pub const fn get(self) -> u8 {
        self.0
    }

    /// The slot after this one, wrapping from 7 back to 1 (key rotation).
    #[must_use]
    pub const fn next(self) -> Self {
        if self.0 == 7 {
            Self(1)
        } else {
            Self(self.0 + 1)
        }
    }
}

/// The enrolment private key (ESK). Proves the chip's identity; never leaves the device.
pub struct EnrolmentKey(SigningKey);

/// A device private key (DSK) for one slot. Used for the cloud connection.
pub struct DeviceKey {
    key: SigningKey,
    slot: KeySlot,
}

impl fmt::Debug for EnrolmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnrolmentKey([REDACTED])")
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceKey {{ slot: {}, key: [REDACTED] }}", self.slot.0)
    }
}

// `SigningKey` zeroizes its scalar on drop; these wrappers add no other secret state.
impl ZeroizeOnDrop for EnrolmentKey {}
impl ZeroizeOnDrop for DeviceKey {}

impl EnrolmentKey {
    /// The enrolment public key (EPK), SEC1 uncompressed.
    #[must_use]
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_verifying_key(self.0.verifying_key())
    }

    /// The chip's public identity, SHA-256 of the EPK.
    #[must_use]
    pub fn device_id(&self) -> DeviceId {
        DeviceId::from_public_key(&self.public_key())
    }

    /// Signs an attestation message (ECDSA P-256 / SHA-256, RFC 6979 nonces).
    #[must_use]
    pub fn sign(&self, message: &Message) -> SignatureBytes {
        sign_bytes(&self.0, message.as_bytes())
    }
}

impl DeviceKey {
    /// The device public key (DPK), SEC1 uncompressed.
    #[must_use]
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_verifying_key(self.key.verifying_key())
    }

    /// The slot this key was derived for.
    #[must_use]
    pub fn slot(&self) -> KeySlot {
        self.slot
    }

    /// Signs an attestation message (ECDSA P-256 / SHA-256, RFC 6979 nonces).
    #[must_use]
    pub fn sign(&self, message: &Message) -> SignatureBytes {
        sign_bytes(&self.key, message.as_bytes())
    }

    /// Signs the content of a TLS 1.3 client `CertificateVerify` (RFC 8446
    /// §4.4.3: 64 spaces, the context string, a zero byte, the transcript hash),
    /// for the device's mutual-TLS cloud connection.
    ///
    /// Only that content is signed, so the DSK can never be made to sign
    /// something that parses as an attestation message (those start with a
    /// length prefix, not 0x20). See [`tls`].
    ///
    /// # Errors
    /// [`NotCertificateVerify`] if `content` is not a TLS 1.3 client
    /// `CertificateVerify` content.
    pub fn sign_tls13_client_certificate_verify(
        &self,
        content: &[u8],
    ) -> Result<SignatureBytes, NotCertificateVerify> {
        sign_tls13(&self.key, content)
    }

    /// Signs a TLS 1.2 client `CertificateVerify` (RFC 5246 §7.4.8): the handshake
    /// transcript from the client's ClientHello to its ClientKeyExchange, for clouds that
    /// speak only TLS 1.2.
    ///
    /// The transcript is checked as a whole before anything is signed
    /// ([`tls::is_tls12_client_certificate_verify_transcript`]): it starts with a
    /// well-formed ClientHello (type 0x01), then a TLS 1.2 ServerHello that negotiated the
    /// extended master secret, then exactly the messages of a full ECDHE handshake with
    /// client authentication. An attestation message starts with 0x00 and a TLS 1.3
    /// content with 0x20, so neither can pass, and no transcript can pass as either.
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

/// Signs a TLS 1.3 client `CertificateVerify` content, and nothing else.
fn sign_tls13(key: &SigningKey, content: &[u8]) -> Result<SignatureBytes, NotCertificateVerify> {
    if !tls::is_tls13_client_certificate_verify_content(content) {
        return Err(NotCertificateVerify);
    }
    Ok(sign_bytes(key, content))
}

/// Signs a TLS 1.2 client handshake transcript up to the ClientKeyExchange, and nothing else.
fn sign_tls12(key: &SigningKey, transcript: &[u8]) -> Result<SignatureBytes, NotCertificateVerify> {
    if !tls::is_tls12_client_certificate_verify_transcript(transcript) {
        return Err(NotCertificateVerify);
    }
    Ok(sign_bytes(key, transcript))
}

/// The bytes given to [`DeviceKey::sign_tls13_client_certificate_verify`] or
/// [`DeviceKey::sign_tls12_client_certificate_verify`] are not what a TLS client signs in
/// its `CertificateVerify` for that version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotCertificateVerify;

impl fmt::Display for NotCertificateVerify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the device key signs only attestation messages, TLS 1.3 client CertificateVerify \
             content and TLS 1.2 client handshake transcripts",
        )
    }
}

impl core::error::Error for NotCertificateVerify {}

/// ECDSA P-256 / SHA-256 with RFC 6979 nonces, encoded as `r ‖ s`. Private:
/// callers reach it only through the attestation and TLS entry points.
fn sign_bytes(key: &SigningKey, bytes: &[u8]) -> SignatureBytes {
    let signature: Signature = key.sign(bytes);
    SignatureBytes(signature.to_bytes().into())
}

/// An uncompressed SEC1 P-256 public key (65 bytes, `04 ‖ x ‖ y`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; PUBLIC_KEY_BYTES]);

impl PublicKey {
    fn from_verifying_key(key: &VerifyingKey) -> Self {
        let point = key.to_sec1_point(false);
        let mut bytes = [0u8; PUBLIC_KEY_BYTES];
        bytes.copy_from_slice(point.as_bytes());
        Self(bytes)
    }

    /// Parses and validates an uncompressed SEC1 point (on the curve, not identity).
    ///
    /// # Errors
    /// [`InvalidPublicKey`] if the bytes are not an uncompressed P-256 point.
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, InvalidPublicKey> {
        let array: [u8; PUBLIC_KEY_BYTES] = bytes.try_into().map_err(|_| InvalidPublicKey)?;
        if array[0] != 0x04 {
            return Err(InvalidPublicKey);
        }
        VerifyingKey::from_sec1_bytes(&array).map_err(|_| InvalidPublicKey)?;
        Ok(Self(array))
    }

    /// The SEC1 uncompressed encoding.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_BYTES] {
        &self.0
    }

    #[expect(
        clippy::expect_used,
        reason = "a PublicKey is only ever built from a point p256 accepted"
    )]
    pub(crate) fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey::from_sec1_bytes(&self.0).expect("validated at construction")
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PublicKey(")?;
        write_hex(f, &self.0)?;
        f.write_str(")")
    }
}

/// The bytes are not a valid uncompressed P-256 public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidPublicKey;

impl fmt::Display for InvalidPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not an uncompressed P-256 public key (65 bytes, 0x04 ‖ x ‖ y, on the curve)")
    }
}

impl core::error::Error for InvalidPublicKey {}

/// A fixed-size ECDSA P-256 signature, `r ‖ s` (IEEE P1363), 64 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignatureBytes(pub [u8; SIGNATURE_BYTES]);

impl fmt::Debug for SignatureBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SignatureBytes(")?;
        write_hex(f, &self.0)?;
        f.write_str(")")
    }
}

/// A chip's public identity: SHA-256 of its EPK (SEC1 uncompressed), shown as
/// 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId([u8; 32]);

impl DeviceId {
    /// Computes the identity of an enrolment public key.
    #[must_use]
    pub fn from_public_key(epk: &PublicKey) -> Self {
        Self(Sha256::digest(epk.as_bytes()).into())
    }

    /// Wraps raw digest bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 digest bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

/// A string is not a DeviceId: it must be exactly 64 lowercase hex characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidDeviceId;

impl fmt::Display for InvalidDeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a DeviceId is exactly 64 lowercase hex characters (SHA-256 of the EPK)")
    }
}

impl core::error::Error for InvalidDeviceId {}

impl FromStr for DeviceId {
    type Err = InvalidDeviceId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.as_bytes();
        if text.len() != 64 {
            return Err(InvalidDeviceId);
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            *byte = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
        }
        Ok(Self(bytes))
    }
}

fn hex_value(digit: u8) -> Result<u8, InvalidDeviceId> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        _ => Err(InvalidDeviceId),
    }
}

/// Lowercase hex through a stack buffer: identities are formatted into every registry key and
/// certificate name, and a `write!` per byte cost more than the rest of the encoding.
fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 64];
    for chunk in bytes.chunks(text.len() / 2) {
        for (pair, byte) in text.chunks_exact_mut(2).zip(chunk) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0x0f)];
        }
        let digits = core::str::from_utf8(&text[..2 * chunk.len()]).map_err(|_| fmt::Error)?;
        f.write_str(digits)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::Curve;

    #[test]
    fn order_minus_one_matches_the_curve_order() {
        let n = U384::from_be_slice(&{
            let mut wide = [0u8; 48];
            wide[16..].copy_from_slice(&p256::NistP256::ORDER.to_be_bytes());
            wide
        });
        assert_eq!(ORDER_MINUS_ONE.wrapping_add(&U384::ONE), n);
    }

    #[test]
    fn scalar_reduction_maps_into_one_to_n_minus_one() {
        // c = 0 gives 1; c = n - 1 gives 1 (wraps); c = n - 2 gives n - 1; all-ones reduces.
        assert_eq!(scalar_from_extra_bits(&[0; 48])[31], 1);
        let mut n_minus_one = [0u8; 48];
        n_minus_one.copy_from_slice(&ORDER_MINUS_ONE.to_be_bytes());
        let one = scalar_from_extra_bits(&n_minus_one);
        assert_eq!(&one[..31], &[0; 31]);
        assert_eq!(one[31], 1);
        let mut n_minus_two = n_minus_one;
        n_minus_two[47] -= 1;
        let top = scalar_from_extra_bits(&n_minus_two);
        assert_eq!(&top[..], &n_minus_one[16..]);
        let reduced = scalar_from_extra_bits(&[0xff; 48]);
        assert!(SigningKey::from_bytes(&(*reduced).into()).is_ok());
    }

    #[test]
    fn device_id_round_trips_through_text() {
        let id = DeviceId::from_bytes([0xab; 32]);
        let text = std::format!("{id}");
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<DeviceId>(), Ok(id));
        assert!(text.to_uppercase().parse::<DeviceId>().is_err());
        assert!(text[..63].parse::<DeviceId>().is_err());
    }

    struct Hex<'a>(&'a [u8]);

    impl fmt::Display for Hex<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write_hex(f, self.0)
        }
    }

    proptest::proptest! {
        /// Any length, across the stack buffer's 32-byte chunks (a PublicKey is 65 bytes).
        #[test]
        fn hex_text_is_the_hex_crates(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            proptest::prop_assert_eq!(std::format!("{}", Hex(&bytes)), hex::encode(&bytes));
        }
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
    #[allow(clippy::unwrap_used, reason = "a test fails loudly")]
    fn imported_keys_are_the_derived_keys() {
        let seeds = Seeds {
            seeds: core::array::from_fn(|i| [i as u8 + 1; SEED_BYTES]),
        };
        let esk: Reimported = seeds.enrolment_key_into().unwrap();
        assert_eq!(
            PublicKey::from_verifying_key(esk.0.verifying_key()),
            seeds.enrolment_key().public_key()
        );
        for slot in (1..=7).filter_map(KeySlot::new) {
            let dsk: Reimported = seeds.device_key_into(slot).unwrap();
            assert_eq!(
                PublicKey::from_verifying_key(dsk.0.verifying_key()),
                seeds.device_key(slot).public_key()
            );
        }
    }

    #[test]
    fn key_slots_are_one_to_seven_and_rotate() {
        assert!(KeySlot::new(0).is_none());
        assert!(KeySlot::new(8).is_none());
        assert_eq!(KeySlot::LAST.next(), KeySlot::FIRST);
        assert_eq!(KeySlot::FIRST.next().get(), 2);
    }
}
