//! The firmware manifest: what an owner's firmware-signing key says about one signed image.
//!
//! ```text
//! u16 len ‖ "oxroot-firmware-manifest-v1" ‖ { u8 tag ‖ u16 len ‖ bytes }*      (big-endian)
//!   1 owner          UTF-8, 1..=63 bytes
//!   2 policy         UTF-8, 1..=63 bytes: the policy whose devices may install it
//!   3 image name     UTF-8, 1..=63 bytes
//!   4 version        8 bytes, MCUboot's layout: major u8, minor u8, revision u16 LE, build u32 LE
//!   5 security counter  u32
//!   6 image digest   32 bytes: SHA-256 of the signed image file (the measurement it runs as)
//!   7 image size     u32: bytes of the signed image file
//! ```
//!
//! Every field is present, once, in this order, and nothing follows the last: a manifest has
//! exactly one encoding, so what was signed is what is read. The owner's firmware-signing key
//! signs these bytes (ECDSA P-256 with SHA-256); the signed image itself is an MCUboot image
//! whose own signature covers its header, payload and security counter.
//!
//! Why a format of our own rather than SUIT: the device already parses this tag-length-value
//! shape for its attestation messages (`crate::attestation`), in a fixed buffer without
//! allocation; a SUIT manifest needs a CBOR decoder and a COSE verifier, and its command
//! sequences (conditions, directives, dependencies) describe far more than one image for one
//! policy. The label carries a version, so a later SUIT envelope can live beside it.

use core::fmt;

use p256::ecdsa::Signature;
use p256::ecdsa::signature::Verifier;

use super::MEASUREMENT_BYTES;
use crate::keys::PublicKey;

/// The versioned label at the start of every manifest.
pub const MANIFEST_LABEL: &[u8] = b"oxroot-firmware-manifest-v1";
/// Longest owner, policy or image name.
pub const MAX_NAME_BYTES: usize = 63;
/// Capacity of an encoded manifest.
pub const MAX_MANIFEST_BYTES: usize = 2
    + MANIFEST_LABEL.len()
    + 3 * (3 + MAX_NAME_BYTES)
    + (3 + 8)
    + (3 + 4)
    + (3 + MEASUREMENT_BYTES)
    + (3 + 4);

const OWNER: u8 = 1;
const POLICY: u8 = 2;
const IMAGE_NAME: u8 = 3;
const VERSION: u8 = 4;
const SECURITY_COUNTER: u8 = 5;
const IMAGE_DIGEST: u8 = 6;
const IMAGE_SIZE: u8 = 7;

/// An image version as MCUboot's header holds it: `major.minor.revision+build`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageVersion {
    /// Major.
    pub major: u8,
    /// Minor.
    pub minor: u8,
    /// Revision.
    pub revision: u16,
    /// Build number.
    pub build: u32,
}

impl ImageVersion {
    /// The 8 bytes of MCUboot's `struct image_version` (little-endian).
    #[must_use]
    pub fn to_bytes(self) -> [u8; 8] {
        let mut bytes = [0u8; 8];
        bytes[0] = self.major;
        bytes[1] = self.minor;
        bytes[2..4].copy_from_slice(&self.revision.to_le_bytes());
        bytes[4..].copy_from_slice(&self.build.to_le_bytes());
        bytes
    }

    /// Reads MCUboot's 8 version bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 8]) -> Self {
        Self {
            major: bytes[0],
            minor: bytes[1],
            revision: u16::from_le_bytes([bytes[2], bytes[3]]),
            build: u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        }
    }
}

impl fmt::Display for ImageVersion {
    /// `1.2.3+4`, as imgtool writes and reads versions.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}+{}",
            self.major, self.minor, self.revision, self.build
        )
    }
}

/// A version string is not `major.minor.revision[+build]` within MCUboot's field sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidVersion;

impl fmt::Display for InvalidVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a version is major.minor.revision[+build]: major and minor 0..=255, revision \
             0..=65535, build 0..=4294967295",
        )
    }
}

impl core::error::Error for InvalidVersion {}

impl core::str::FromStr for ImageVersion {
    type Err = InvalidVersion;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        fn number<T: core::str::FromStr>(digits: &str) -> Result<T, InvalidVersion> {
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(InvalidVersion);
            }
            digits.parse().map_err(|_| InvalidVersion)
        }
        let (numbers, build) = match text.split_once('+') {
            Some((numbers, build)) => (numbers, number(build)?),
            None => (text, 0),
        };
        let mut parts = numbers.split('.');
        let (Some(major), Some(minor), Some(revision), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(InvalidVersion);
        };
        Ok(Self {
            major: number(major)?,
            minor: number(minor)?,
            revision: number(revision)?,
            build,
        })
    }
}

/// What a manifest says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Manifest<'a> {
    /// The owner whose key signs it.
    pub owner: &'a str,
    /// The policy whose devices may install the image.
    pub policy: &'a str,
    /// The image's name (one product's firmware line).
    pub image_name: &'a str,
    /// Its version.
    pub version: ImageVersion,
    /// Its security counter: a device refuses an image whose counter is below the one it runs.
    pub security_counter: u32,
    /// SHA-256 of the signed image file.
    pub image_digest: [u8; MEASUREMENT_BYTES],
    /// Size of the signed image file.
    pub image_size: u32,
}

/// Why bytes are not a manifest, or a manifest cannot be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestError {
    /// A name is empty, longer than [`MAX_NAME_BYTES`] or not UTF-8.
    BadName,
    /// The label is not [`MANIFEST_LABEL`].
    BadLabel,
    /// A field is missing, out of order, of the wrong length, or bytes follow the last one.
    Malformed,
    /// The signature does not verify under the signing key.
    BadSignature,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadName => "a manifest name is 1 to 63 bytes of UTF-8",
            Self::BadLabel => "not an oxroot firmware manifest (v1)",
            Self::Malformed => "the manifest's fields are malformed",
            Self::BadSignature => "the manifest's signature does not verify",
        })
    }
}

impl core::error::Error for ManifestError {}

/// An encoded manifest, in a fixed buffer.
#[derive(Clone)]
pub struct EncodedManifest {
    buffer: [u8; MAX_MANIFEST_BYTES],
    len: usize,
}

impl EncodedManifest {
    /// The bytes the firmware-signing key signs.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buffer[..self.len]
    }

    fn append(&mut self, bytes: &[u8]) {
        self.buffer[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn field(&mut self, tag: u8, value: &[u8]) {
        self.append(&[tag]);
        self.append(&(value.len() as u16).to_be_bytes());
        self.append(value);
    }
}

impl fmt::Debug for EncodedManifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedManifest")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

fn check_name(name: &str) -> Result<(), ManifestError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(ManifestError::BadName);
    }
    Ok(())
}

impl Manifest<'_> {
    /// The manifest's one encoding.
    ///
    /// # Errors
    /// [`ManifestError::BadName`] for an empty or over-long name.
    pub fn encode(&self) -> Result<EncodedManifest, ManifestError> {
        for name in [self.owner, self.policy, self.image_name] {
            check_name(name)?;
        }
        let mut out = EncodedManifest {
            buffer: [0; MAX_MANIFEST_BYTES],
            len: 0,
        };
        out.append(&(MANIFEST_LABEL.len() as u16).to_be_bytes());
        out.append(MANIFEST_LABEL);
        out.field(OWNER, self.owner.as_bytes());
        out.field(POLICY, self.policy.as_bytes());
        out.field(IMAGE_NAME, self.image_name.as_bytes());
        out.field(VERSION, &self.version.to_bytes());
        out.field(SECURITY_COUNTER, &self.security_counter.to_be_bytes());
        out.field(IMAGE_DIGEST, &self.image_digest);
        out.field(IMAGE_SIZE, &self.image_size.to_be_bytes());
        Ok(out)
    }
}

impl<'a> Manifest<'a> {
    /// Reads a manifest; only its one encoding is accepted.
    ///
    /// # Errors
    /// [`ManifestError`] naming what is wrong.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ManifestError> {
        let mut reader = Reader { rest: bytes };
        let label_len = reader.take(2).ok_or(ManifestError::BadLabel)?;
        let label_len = usize::from(u16::from_be_bytes([label_len[0], label_len[1]]));
        if reader.take(label_len) != Some(MANIFEST_LABEL) {
            return Err(ManifestError::BadLabel);
        }
        let name = |reader: &mut Reader<'a>, tag| -> Result<&'a str, ManifestError> {
            let text =
                core::str::from_utf8(reader.field(tag)?).map_err(|_| ManifestError::BadName)?;
            check_name(text)?;
            Ok(text)
        };
        let owner = name(&mut reader, OWNER)?;
        let policy = name(&mut reader, POLICY)?;
        let image_name = name(&mut reader, IMAGE_NAME)?;
        let version = ImageVersion::from_bytes(reader.fixed(VERSION)?);
        let security_counter = u32::from_be_bytes(reader.fixed(SECURITY_COUNTER)?);
        let image_digest = reader.fixed(IMAGE_DIGEST)?;
        let image_size = u32::from_be_bytes(reader.fixed(IMAGE_SIZE)?);
        if !reader.rest.is_empty() {
            return Err(ManifestError::Malformed);
        }
        Ok(Self {
            owner,
            policy,
            image_name,
            version,
            security_counter,
            image_digest,
            image_size,
        })
    }
}

/// Reads a manifest that `key` signed: ECDSA P-256 with SHA-256 over `manifest`, the
/// signature DER-encoded (as X.509 and MCUboot encode theirs). The signature is checked
/// before anything of the manifest is read.
///
/// # Errors
/// [`ManifestError::BadSignature`], or the manifest's own errors.
pub fn verify<'a>(
    manifest: &'a [u8],
    signature_der: &[u8],
    key: &PublicKey,
) -> Result<Manifest<'a>, ManifestError> {
    let signature = Signature::from_der(signature_der).map_err(|_| ManifestError::BadSignature)?;
    key.verifying_key()
        .verify(manifest, &signature)
        .map_err(|_| ManifestError::BadSignature)?;
    Manifest::parse(manifest)
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    fn field(&mut self, tag: u8) -> Result<&'a [u8], ManifestError> {
        let header = self.take(3).ok_or(ManifestError::Malformed)?;
        if header[0] != tag {
            return Err(ManifestError::Malformed);
        }
        let len = usize::from(u16::from_be_bytes([header[1], header[2]]));
        self.take(len).ok_or(ManifestError::Malformed)
    }

    fn fixed<const N: usize>(&mut self, tag: u8) -> Result<[u8; N], ManifestError> {
        self.field(tag)?
            .try_into()
            .map_err(|_| ManifestError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest<'static> {
        Manifest {
            owner: "acme",
            policy: "line",
            image_name: "app",
            version: ImageVersion {
                major: 1,
                minor: 2,
                revision: 3,
                build: 4,
            },
            security_counter: 7,
            image_digest: [0xab; 32],
            image_size: 0x0102_0304,
        }
    }

    #[test]
    fn a_manifest_reads_back_as_written_and_only_its_own_encoding_is_accepted() {
        let encoded = sample().encode().unwrap();
        assert_eq!(Manifest::parse(encoded.as_bytes()), Ok(sample()));
        let bytes = encoded.as_bytes();
        // Cut short, or with a byte after the end.
        assert!(Manifest::parse(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = [0u8; MAX_MANIFEST_BYTES + 1];
        longer[..bytes.len()].copy_from_slice(bytes);
        assert_eq!(
            Manifest::parse(&longer[..=bytes.len()]),
            Err(ManifestError::Malformed)
        );
        // Another label (an attestation message's, say).
        let mut other = [0u8; MAX_MANIFEST_BYTES];
        other[..bytes.len()].copy_from_slice(bytes);
        other[2] = b'x';
        assert_eq!(
            Manifest::parse(&other[..bytes.len()]),
            Err(ManifestError::BadLabel)
        );
    }

    #[test]
    fn names_must_be_one_to_63_bytes() {
        let long = "a".repeat(64);
        for manifest in [
            Manifest {
                owner: "",
                ..sample()
            },
            Manifest {
                policy: &long,
                ..sample()
            },
        ] {
            assert_eq!(manifest.encode().err(), Some(ManifestError::BadName));
        }
        let longest = "a".repeat(63);
        let manifest = Manifest {
            owner: &longest,
            policy: &longest,
            image_name: &longest,
            ..sample()
        };
        let encoded = manifest.encode().unwrap();
        assert_eq!(encoded.as_bytes().len(), MAX_MANIFEST_BYTES);
    }

    #[test]
    fn versions_read_as_imgtool_writes_them() {
        let version: ImageVersion = "1.2.3+4".parse().unwrap();
        assert_eq!(version, sample().version);
        assert_eq!(std::format!("{version}"), "1.2.3+4");
        assert_eq!("1.2.3".parse::<ImageVersion>().unwrap().build, 0);
        assert_eq!(ImageVersion::from_bytes(version.to_bytes()), version);
        assert_eq!(version.to_bytes(), [1, 2, 3, 0, 4, 0, 0, 0]);
        for bad in [
            "1.2",
            "1.2.3.4",
            "256.0.0",
            "1.2.65536",
            "1.2.3+",
            "1.2.-3",
            "a.b.c",
            "",
        ] {
            assert_eq!(bad.parse::<ImageVersion>(), Err(InvalidVersion), "{bad}");
        }
        // Versions order as numbers, major first.
        assert!("1.10.0".parse::<ImageVersion>().unwrap() > "1.9.9".parse().unwrap());
    }
}
