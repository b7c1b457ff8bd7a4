//! Mutual TLS with a device key that exists only for the moment of one signature.
//!
//! [`SiliconSigningKey`] is a rustls `SigningKey` with no key in it: when the handshake needs
//! the client `CertificateVerify`, its signer powers the silicon up, reconstructs the seeds,
//! derives the credential's key (the DSK of its slot, or for a firmware-bound credential the
//! slot's alias key for the firmware measured now), signs and drops the key (zeroized). What it signs
//! is checked by rot-core first ([`rot_core::keys::tls`]), for the TLS versions the credential
//! allows only:
//!
//! ```text
//!  rustls handshake ─CertificateVerify input─▶ SiliconSigner::sign
//!     certificate_verify_version(input): 0x20… TLS 1.3 content │ 0x01… TLS 1.2 transcript │ refuse
//!     version allowed by the credential? ── no ─▶ refuse
//!     reconstruct ▶ device_key(slot) | alias_key(slot, measured firmware)
//!                 ▶ sign_tls13_… / sign_tls12_… (checked again) ▶ drop key
//!     ▶ DER ─▶ rustls
//! ```
//!
//! rustls does not tell a signer which version it negotiated, but it does not need to: the
//! two inputs cannot be confused (they differ in their first byte), so the input says which
//! check applies and the credential says whether that version may be signed at all.
//!
//! TLS 1.2 is configured as the clouds expect and no wider: ECDHE-ECDSA with AES-GCM
//! (`TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`, `…_AES_256_GCM_SHA384`) and the extended master
//! secret required (RFC 7627; rustls makes it optional unless built for FIPS, so it is set
//! here, and rot-core refuses to sign a transcript without it as well).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use rot_core::FirmwareMeasurement;
use rot_core::keys::tls::{TlsVersion, certificate_verify_version};
use rot_core::keys::{KeySlot, PublicKey};
use rustls::client::ClientConfig;
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer, alg_id};
use rustls::sign::{CertifiedKey, Signer, SigningKey, SingleCertAndKey};
use rustls::{
    CipherSuite, RootCertStore, SignatureAlgorithm, SignatureScheme, SupportedCipherSuite,
};

use crate::chip::SiliconChip;
use crate::credential;
use crate::error::AgentError;

/// The only scheme a P-256 device key signs with.
const SCHEME: SignatureScheme = SignatureScheme::ECDSA_NISTP256_SHA256;

/// The TLS 1.2 cipher suites offered: ECDHE-ECDSA with AES-GCM only.
pub const TLS12_CIPHER_SUITES: [CipherSuite; 2] = [
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
];

/// The SubjectPublicKeyInfo (DER) of a P-256 public key (RFC 5480).
#[must_use]
pub fn spki_der(public_key: &PublicKey) -> SubjectPublicKeyInfoDer<'static> {
    rustls::sign::public_key_to_spki(&alg_id::ECDSA_P256, public_key.as_bytes())
}

/// A rustls signing key backed by the silicon, for the TLS versions a credential allows.
pub struct SiliconSigningKey {
    chip: Arc<SiliconChip>,
    slot: KeySlot,
    /// The firmware the credential is bound to, if it certifies an alias key.
    firmware: Option<FirmwareMeasurement>,
    versions: Vec<TlsVersion>,
    spki: SubjectPublicKeyInfoDer<'static>,
    /// The version of the last `CertificateVerify` signed (see [`version_code`]).
    signed: Arc<AtomicU8>,
}

impl fmt::Debug for SiliconSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiliconSigningKey")
            .field("slot", &self.slot.get())
            .field("versions", &self.versions)
            .finish_non_exhaustive()
    }
}

impl SiliconSigningKey {
    /// The key of `slot` (bound to `firmware` when the credential is), for the TLS
    /// `versions` the credential allows; derives it once to know the public half.
    ///
    /// # Errors
    /// [`AgentError::Credential`] if `versions` is empty or the firmware that runs is not
    /// `firmware`; the reconstruction's errors.
    pub fn new(
        chip: Arc<SiliconChip>,
        slot: KeySlot,
        firmware: Option<FirmwareMeasurement>,
        versions: &[TlsVersion],
    ) -> Result<Self, AgentError> {
        if versions.is_empty() {
            return Err(AgentError::Credential(
                "the credential allows no TLS version".to_owned(),
            ));
        }
        let public_key = chip.credential_public_key(slot, firmware.as_ref())?;
        let spki = spki_der(&public_key);
        Ok(Self {
            chip,
            slot,
            firmware,
            versions: versions.to_vec(),
            spki,
            signed: Arc::default(),
        })
    }

    /// The TLS versions this key signs for (and the configuration offers).
    #[must_use]
    pub fn versions(&self) -> &[TlsVersion] {
        &self.versions
    }

    /// The version of the last handshake this key authenticated, if it has signed one: the
    /// version the server negotiated.
    #[must_use]
    pub fn signed_version(&self) -> Option<TlsVersion> {
        match self.signed.load(Ordering::Acquire) {
            12 => Some(TlsVersion::Tls12),
            13 => Some(TlsVersion::Tls13),
            _ => None,
        }
    }
}

fn version_code(version: TlsVersion) -> u8 {
    match version {
        TlsVersion::Tls12 => 12,
        TlsVersion::Tls13 => 13,
    }
}

impl SigningKey for SiliconSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered.contains(&SCHEME).then(|| {
            Box::new(SiliconSigner {
                chip: self.chip.clone(),
                slot: self.slot,
                firmware: self.firmware,
                versions: self.versions.clone(),
                signed: self.signed.clone(),
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
    firmware: Option<FirmwareMeasurement>,
    versions: Vec<TlsVersion>,
    signed: Arc<AtomicU8>,
}

impl fmt::Debug for SiliconSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiliconSigner")
            .field("slot", &self.slot.get())
            .field("versions", &self.versions)
            .finish_non_exhaustive()
    }
}

impl Signer for SiliconSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        // Which check applies is decided by the input itself (the two forms cannot be
        // confused); whether that version may be signed, by the credential.
        let version = certificate_verify_version(message)
            .filter(|version| self.versions.contains(version))
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "the device key signs only the client CertificateVerify of {}",
                    credential::tls_versions_text(&self.versions)
                ))
            })?;
        let signature = self
            .chip
            .with_credential_key(self.slot, self.firmware.as_ref(), |key| match version {
                TlsVersion::Tls13 => key.sign_tls13_client_certificate_verify(message),
                TlsVersion::Tls12 => key.sign_tls12_client_certificate_verify(message),
            })
            // Opaque on purpose: the handshake log must not become a reconstruction oracle.
            .map_err(|e| {
                tracing::warn!(error = %e, "the device key could not be derived for TLS");
                rustls::Error::General("the device key could not be derived".to_owned())
            })?
            .map_err(|refused| rustls::Error::General(refused.to_string()))?;
        self.signed.store(version_code(version), Ordering::Release);
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

/// A client configuration presenting `chain` with `key`, trusting only the certificates in
/// `trust_pem`, offering exactly the TLS versions `key` signs for: TLS 1.3 with rustls's
/// suites, TLS 1.2 with [`TLS12_CIPHER_SUITES`] and the extended master secret required.
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
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = key
        .versions()
        .iter()
        .map(|version| match version {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        })
        .collect();
    let certified = CertifiedKey::new(chain, key);
    certified.keys_match().map_err(|e| {
        AgentError::Credential(format!(
            "the certificate does not certify the key derived from this silicon: {e}"
        ))
    })?;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.retain(|suite| match suite {
        SupportedCipherSuite::Tls12(_) => TLS12_CIPHER_SUITES.contains(&suite.suite()),
        SupportedCipherSuite::Tls13(_) => true,
    });
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)
        .map_err(|e| AgentError::Credential(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    // RFC 7627: without it a TLS 1.2 session's keys are not bound to its transcript.
    config.require_ems = true;
    Ok(config)
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
        server_for(pki, rustls::DEFAULT_VERSIONS)
    }

    fn server_for(
        pki: &Pki,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> rustls::ServerConnection {
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
            .with_protocol_versions(versions)
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
        let key = Arc::new(SiliconSigningKey::new(chip, slot, None, &[TlsVersion::Tls13]).unwrap());
        let config = client_config(vec![leaf.clone()], &pki.ca_pem, key.clone()).unwrap();
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
        assert_eq!(key.signed_version(), Some(TlsVersion::Tls13));
    }

    /// TLS 1.2 client authentication with the derived key: rot-core's transcript check accepts
    /// what rustls signs, the suite is ECDHE-ECDSA with AES-GCM, and the server verifies the
    /// CertificateVerify. Offering both versions to a TLS 1.2-only server gets the same.
    #[test]
    fn a_tls12_handshake_with_client_auth_succeeds_with_the_derived_key() {
        let dir = tempfile::tempdir().unwrap();
        let chip = enrolled_chip(dir.path(), 14);
        let slot = KeySlot::new(3).unwrap();
        let pki = pki();
        let leaf = client_leaf(&pki, &chip.device_public_key(slot).unwrap());
        for offered in [
            &[TlsVersion::Tls12][..],
            &[TlsVersion::Tls12, TlsVersion::Tls13][..],
        ] {
            let key = Arc::new(SiliconSigningKey::new(chip.clone(), slot, None, offered).unwrap());
            let config = client_config(vec![leaf.clone()], &pki.ca_pem, key.clone()).unwrap();
            let mut client = rustls::ClientConnection::new(
                Arc::new(config),
                ServerName::try_from("localhost").unwrap(),
            )
            .unwrap();
            let mut server = server_for(&pki, &[&rustls::version::TLS12]);
            handshake(&mut client, &mut server).unwrap();
            assert_eq!(
                client.protocol_version(),
                Some(rustls::ProtocolVersion::TLSv1_2)
            );
            let suite = client.negotiated_cipher_suite().unwrap().suite();
            assert!(TLS12_CIPHER_SUITES.contains(&suite), "{suite:?}");
            assert_eq!(
                server.peer_certificates().unwrap(),
                std::slice::from_ref(&leaf)
            );
            assert_eq!(key.signed_version(), Some(TlsVersion::Tls12));
        }
    }

    /// A key for one version offers only that version, and its signer refuses the other
    /// version's input even when asked directly.
    #[test]
    fn a_key_signs_only_for_the_versions_its_credential_allows() {
        let dir = tempfile::tempdir().unwrap();
        let chip = enrolled_chip(dir.path(), 15);
        let pki = pki();
        let leaf = client_leaf(&pki, &chip.device_public_key(KeySlot::FIRST).unwrap());
        let only_13 = Arc::new(
            SiliconSigningKey::new(chip.clone(), KeySlot::FIRST, None, &[TlsVersion::Tls13])
                .unwrap(),
        );
        let config = client_config(vec![leaf.clone()], &pki.ca_pem, only_13.clone()).unwrap();
        let mut client = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let mut server = server_for(&pki, &[&rustls::version::TLS12]);
        let error = handshake(&mut client, &mut server).unwrap_err();
        // The server refused the version before anything was signed.
        assert!(
            matches!(
                error,
                rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion)
            ) || matches!(error, rustls::Error::PeerIncompatible(_)),
            "{error:?}"
        );
        assert_eq!(only_13.signed_version(), None);

        // A TLS 1.2 transcript as rustls would hand it over: refused by a TLS 1.3-only key.
        let transcript = tls12_transcript_from_a_real_handshake(&chip, &pki, &leaf);
        let signer = only_13.choose_scheme(&[SCHEME]).unwrap();
        let refused = signer.sign(&transcript).unwrap_err();
        assert!(refused.to_string().contains("TLS 1.3"), "{refused}");
        let only_12 =
            SiliconSigningKey::new(chip, KeySlot::FIRST, None, &[TlsVersion::Tls12]).unwrap();
        let signer = only_12.choose_scheme(&[SCHEME]).unwrap();
        assert!(signer.sign(&transcript).is_ok());
        let mut content = vec![0x20; 64];
        content.extend_from_slice(b"TLS 1.3, client CertificateVerify\0");
        content.extend_from_slice(&[0xab; 32]);
        assert!(signer.sign(&content).is_err());
        let other = tempfile::tempdir().unwrap();
        let no_version =
            SiliconSigningKey::new(enrolled_chip(other.path(), 16), KeySlot::FIRST, None, &[]);
        assert!(no_version.is_err());
    }

    /// A signer that keeps what rustls asks it to sign, then signs it with the real one.
    #[derive(Debug)]
    struct Recording {
        inner: Arc<SiliconSigningKey>,
        seen: Arc<std::sync::Mutex<Vec<u8>>>,
    }

    #[derive(Debug)]
    struct RecordingSigner {
        inner: Box<dyn Signer>,
        seen: Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl SigningKey for Recording {
        fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
            let inner = self.inner.choose_scheme(offered)?;
            Some(Box::new(RecordingSigner {
                inner,
                seen: self.seen.clone(),
            }))
        }
        fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
            self.inner.public_key()
        }
        fn algorithm(&self) -> SignatureAlgorithm {
            SignatureAlgorithm::ECDSA
        }
    }

    impl Signer for RecordingSigner {
        fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
            self.seen.lock().unwrap().extend_from_slice(message);
            self.inner.sign(message)
        }
        fn scheme(&self) -> SignatureScheme {
            self.inner.scheme()
        }
    }

    /// The exact bytes rustls hands the signer in a TLS 1.2 handshake.
    fn tls12_transcript_from_a_real_handshake(
        chip: &Arc<SiliconChip>,
        pki: &Pki,
        leaf: &CertificateDer<'static>,
    ) -> Vec<u8> {
        let seen = Arc::default();
        let key = Arc::new(Recording {
            inner: Arc::new(
                SiliconSigningKey::new(chip.clone(), KeySlot::FIRST, None, &[TlsVersion::Tls12])
                    .unwrap(),
            ),
            seen: Arc::clone(&seen),
        });
        let mut roots = RootCertStore::empty();
        roots
            .add(
                credential::certificates(&pki.ca_pem, "ca")
                    .unwrap()
                    .remove(0),
            )
            .unwrap();
        let config = ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(CertifiedKey::new(
            vec![leaf.clone()],
            key,
        ))));
        let mut client = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        handshake(
            &mut client,
            &mut server_for(pki, &[&rustls::version::TLS12]),
        )
        .unwrap();
        let transcript = seen.lock().unwrap().clone();
        assert_eq!(
            certificate_verify_version(&transcript),
            Some(TlsVersion::Tls12)
        );
        transcript
    }

    #[test]
    fn a_certificate_for_another_slot_is_refused_before_any_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let chip = enrolled_chip(dir.path(), 12);
        let pki = pki();
        let leaf = client_leaf(&pki, &chip.device_public_key(KeySlot::FIRST).unwrap());
        let key = Arc::new(
            SiliconSigningKey::new(chip, KeySlot::new(3).unwrap(), None, &[TlsVersion::Tls13])
                .unwrap(),
        );
        let error = client_config(vec![leaf], &pki.ca_pem, key).unwrap_err();
        assert!(error.to_string().contains("does not certify"), "{error}");
    }

    #[test]
    fn the_signer_signs_nothing_but_tls13_client_certificate_verify() {
        let dir = tempfile::tempdir().unwrap();
        let key = SiliconSigningKey::new(
            enrolled_chip(dir.path(), 13),
            KeySlot::FIRST,
            None,
            &[TlsVersion::Tls13],
        )
        .unwrap();
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
