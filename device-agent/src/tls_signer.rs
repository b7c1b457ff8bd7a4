//! Mutual TLS with a device key that exists only for the moment of one signature.
//!
//! [`SiliconSigningKey`] is a rustls `SigningKey` with no key in it: when the handshake needs
//! the client `CertificateVerify`, its signer powers the silicon up, reconstructs the seeds,
//! derives the DSK of the credential's slot, signs through
//! `DeviceKey::sign_tls13_client_certificate_verify` and drops the key (zeroized). That rot-core
//! entry point signs only TLS 1.3 `CertificateVerify` content, so the configuration is TLS 1.3
//! only: a TLS 1.2 client signature covers other bytes and would be refused.
//!
//! ```text
//!  rustls handshake ─CertificateVerify content─▶ SiliconSigner::sign
//!                     reconstruct ▶ device_key(slot) ▶ sign (r‖s) ▶ drop key ▶ DER ─▶ rustls
//! ```

use std::fmt;
use std::sync::Arc;

use rot_core::keys::{KeySlot, PublicKey};
use rustls::client::ClientConfig;
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer, alg_id};
use rustls::sign::{CertifiedKey, Signer, SigningKey, SingleCertAndKey};
use rustls::{RootCertStore, SignatureAlgorithm, SignatureScheme};

use crate::chip::SiliconChip;
use crate::credential;
use crate::error::AgentError;

/// The only scheme a P-256 device key signs with in TLS 1.3.
const SCHEME: SignatureScheme = SignatureScheme::ECDSA_NISTP256_SHA256;

/// The SubjectPublicKeyInfo (DER) of a P-256 public key (RFC 5480).
#[must_use]
pub fn spki_der(public_key: &PublicKey) -> SubjectPublicKeyInfoDer<'static> {
    rustls::sign::public_key_to_spki(&alg_id::ECDSA_P256, public_key.as_bytes())
}

/// A rustls signing key backed by the silicon.
pub struct SiliconSigningKey {
    chip: Arc<SiliconChip>,
    slot: KeySlot,
    spki: SubjectPublicKeyInfoDer<'static>,
}

impl fmt::Debug for SiliconSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiliconSigningKey")
            .field("slot", &self.slot.get())
            .finish_non_exhaustive()
    }
}

impl SiliconSigningKey {
    /// The key of `slot`; derives the DPK once to know the public half.
    ///
    /// # Errors
    /// The reconstruction's errors.
    pub fn new(chip: Arc<SiliconChip>, slot: KeySlot) -> Result<Self, AgentError> {
        let spki = spki_der(&chip.device_public_key(slot)?);
        Ok(Self { chip, slot, spki })
    }
}

impl SigningKey for SiliconSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered.contains(&SCHEME).then(|| {
            Box::new(SiliconSigner {
                chip: self.chip.clone(),
                slot: self.slot,
            }) as Box<dyn Signer>
        })
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(self.spki.clone())
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

/// One signature with a freshly derived key.
struct SiliconSigner {
    chip: Arc<SiliconChip>,
    slot: KeySlot,
}

impl fmt::Debug for SiliconSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiliconSigner")
            .field("slot", &self.slot.get())
            .finish_non_exhaustive()
    }
}

impl Signer for SiliconSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let signature = self
            .chip
            .with_device_key(self.slot, |key| {
                key.sign_tls13_client_certificate_verify(message)
            })
            // Opaque on purpose: the handshake log must not become a reconstruction oracle.
            .map_err(|e| {
                tracing::warn!(error = %e, "the device key could not be derived for TLS");
                rustls::Error::General("the device key could not be derived".to_owned())
            })?
            .map_err(|_| {
                rustls::Error::General(
                    "the device key signs only TLS 1.3 CertificateVerify content".to_owned(),
                )
            })?;
        Ok(der_signature(&signature.0))
    }

    fn scheme(&self) -> SignatureScheme {
        SCHEME
    }
}

/// ECDSA `r ‖ s` (64 bytes) as the DER `ECDSA-Sig-Value` TLS carries (RFC 8446 §4.2.3 refers
/// to ANSI X9.62 / RFC 5480: `SEQUENCE { r INTEGER, s INTEGER }`).
#[must_use]
pub fn der_signature(raw: &[u8; 64]) -> Vec<u8> {
    let mut body = Vec::with_capacity(70);
    for half in [&raw[..32], &raw[32..]] {
        // Minimal two's-complement: no leading zero bytes, and a zero byte in front of a high
        // bit so the integer stays positive.
        let start = half.iter().position(|&b| b != 0).unwrap_or(half.len() - 1);
        let digits = &half[start..];
        let pad = digits[0] & 0x80 != 0;
        body.push(0x02);
        body.push((digits.len() + usize::from(pad)) as u8);
        if pad {
            body.push(0);
        }
        body.extend_from_slice(digits);
    }
    // At most 2 × (2 + 33) = 70 bytes: the short length form always fits.
    let mut der = Vec::with_capacity(body.len() + 2);
    der.push(0x30);
    der.push(body.len() as u8);
    der.extend(body);
    der
}

/// A TLS 1.3-only client configuration presenting `chain` with `key`, trusting only the
/// certificates in `trust_pem`.
///
/// # Errors
/// [`AgentError::Credential`] if the trust anchors do not parse or the leaf does not certify
/// the key's DPK.
pub fn client_config(
    chain: Vec<CertificateDer<'static>>,
    trust_pem: &str,
    key: Arc<SiliconSigningKey>,
) -> Result<ClientConfig, AgentError> {
    let mut roots = RootCertStore::empty();
    for anchor in credential::certificates(trust_pem, "the broker CA")? {
        roots
            .add(anchor)
            .map_err(|e| AgentError::Credential(format!("the broker CA does not parse: {e}")))?;
    }
    let certified = CertifiedKey::new(chain, key);
    certified.keys_match().map_err(|e| {
        AgentError::Credential(format!(
            "the certificate does not certify the key derived from this silicon: {e}"
        ))
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| AgentError::Credential(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified))))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
pub(crate) mod tests {
    use super::*;
    use crate::silicon::{Silicon, SiliconSpec};
    use crate::state::StateDir;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData, SignatureAlgorithm as RcgenAlgorithm,
    };
    use rot_core::emulator::{ChipSeed, OperatingConditions};
    use rustls::ServerConfig;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::server::WebPkiClientVerifier;

    /// A raw P-256 point as rcgen's public-key input.
    struct Point<'a>(&'a [u8]);

    impl PublicKeyData for Point<'_> {
        fn der_bytes(&self) -> &[u8] {
            self.0
        }
        fn algorithm(&self) -> &'static RcgenAlgorithm {
            &PKCS_ECDSA_P256_SHA256
        }
    }

    /// An enrolled chip in a temporary state directory.
    pub(crate) fn enrolled_chip(dir: &std::path::Path, seed: u8) -> Arc<SiliconChip> {
        let state = StateDir::new(dir);
        let silicon = Silicon::open(
            &SiliconSpec::Emulated(ChipSeed::from_bytes([seed; 32])),
            OperatingConditions::NOMINAL,
        )
        .unwrap();
        let enrolment = rot_core::extractor::enrol(
            &mut silicon.power_up().unwrap(),
            None,
            rot_core::extractor::EnrolMode::FirstEnrolment,
        )
        .unwrap();
        state.save_helper_data(&enrolment.helper_data).unwrap();
        Arc::new(SiliconChip::open(&state, silicon).unwrap())
    }

    struct Pki {
        ca_pem: String,
        ca: Issuer<'static, KeyPair>,
        server_chain: Vec<CertificateDer<'static>>,
        server_key: PrivateKeyDer<'static>,
    }

    fn pki() -> Pki {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec![]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "test root");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let ca = Issuer::new(params, ca_key);
        let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let server = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            ca,
            server_chain: vec![server.der().clone()],
            server_key: PrivatePkcs8KeyDer::from(server_key.serialize_der()).into(),
        }
    }

    fn client_leaf(pki: &Pki, dpk: &PublicKey) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(vec![]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "device");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params
            .signed_by(&Point(dpk.as_bytes()), &pki.ca)
            .unwrap()
            .der()
            .clone()
    }

    fn server(pki: &Pki) -> rustls::ServerConnection {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        roots
            .add(
                credential::certificates(&pki.ca_pem, "ca")
                    .unwrap()
                    .remove(0),
            )
            .unwrap();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())
            .unwrap();
        rustls::ServerConnection::new(Arc::new(config)).unwrap()
    }

    /// Shuttles records between the two ends until both finish the handshake.
    fn handshake(
        client: &mut rustls::ClientConnection,
        server: &mut rustls::ServerConnection,
    ) -> Result<(), rustls::Error> {
        for _ in 0..10 {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets()?;
            wire.clear();
            server.write_tls(&mut wire).unwrap();
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish");
    }

    #[test]
    fn a_tls13_handshake_with_client_auth_succeeds_with_the_derived_key() {
        let dir = tempfile::tempdir().unwrap();
        let chip = enrolled_chip(dir.path(), 11);
        let slot = KeySlot::new(2).unwrap();
        let pki = pki();
        let leaf = client_leaf(&pki, &chip.device_public_key(slot).unwrap());
        let key = Arc::new(SiliconSigningKey::new(chip, slot).unwrap());
        let config = client_config(vec![leaf.clone()], &pki.ca_pem, key).unwrap();
        let mut client = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let mut server = server(&pki);
        handshake(&mut client, &mut server).unwrap();
        assert_eq!(
            client.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        // The server verified the CertificateVerify against the leaf it was shown.
        assert_eq!(server.peer_certificates().unwrap(), [leaf]);
    }

    #[test]
    fn a_certificate_for_another_slot_is_refused_before_any_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let chip = enrolled_chip(dir.path(), 12);
        let pki = pki();
        let leaf = client_leaf(&pki, &chip.device_public_key(KeySlot::FIRST).unwrap());
        let key = Arc::new(SiliconSigningKey::new(chip, KeySlot::new(3).unwrap()).unwrap());
        let error = client_config(vec![leaf], &pki.ca_pem, key).unwrap_err();
        assert!(error.to_string().contains("does not certify"), "{error}");
    }

    #[test]
    fn the_signer_signs_nothing_but_tls13_client_certificate_verify() {
        let dir = tempfile::tempdir().unwrap();
        let key = SiliconSigningKey::new(enrolled_chip(dir.path(), 13), KeySlot::FIRST).unwrap();
        assert!(key.choose_scheme(&[SignatureScheme::ED25519]).is_none());
        let signer = key.choose_scheme(&[SCHEME]).unwrap();
        assert!(signer.sign(b"an attestation message").is_err());
        let mut content = vec![0x20; 64];
        content.extend_from_slice(b"TLS 1.3, client CertificateVerify\0");
        content.extend_from_slice(&[0xab; 32]);
        let der = signer.sign(&content).unwrap();
        // The signature verifies with an independent implementation (aws-lc-rs, ASN.1 form).
        let spki = key.public_key().unwrap();
        let point = &spki.as_ref()[spki.as_ref().len() - 65..];
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
            point,
        )
        .verify(&content, &der)
        .unwrap();
    }

    #[test]
    fn der_signatures_are_minimal_and_positive() {
        let mut raw = [0u8; 64];
        raw[31] = 1; // r = 1
        raw[32] = 0x80; // s has its high bit set: needs a zero pad byte
        let der = der_signature(&raw);
        assert_eq!(&der[..5], &[0x30, 3 + 35, 0x02, 0x01, 0x01]);
        assert_eq!(&der[5..8], &[0x02, 33, 0x00]);
        assert_eq!(der.len(), 2 + 3 + 35);
        let all_zero = der_signature(&[0; 64]);
        assert_eq!(all_zero, [0x30, 6, 0x02, 1, 0, 0x02, 1, 0]);
    }
}
