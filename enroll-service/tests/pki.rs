//! The PKI checked against independent verifiers: the `openssl` CLI, rustls-webpki, x509-parser
//! and rot-core's device keys.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;
use std::num::NonZeroU32;
use std::path::Path;
use std::process::Command;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use enroll_service::pki::{
    CaNames, CertificateAuthority, EncryptedKey, LeafRequest, OperatorIdentity, OperatorKey,
    Passphrase, PkiError, PrivateKeyPkcs8, RevocationReason, RevokedEntry, Role, Serial,
    ServerName, Validity,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use time::{Duration, OffsetDateTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Few iterations keep the tests fast; production uses `DEFAULT_PBKDF2_ITERATIONS`.
const TEST_ITERATIONS: NonZeroU32 = NonZeroU32::new(1_000).unwrap();

fn now() -> OffsetDateTime {
    // Whole seconds: X.509 times have no fractions, and an hour back avoids clock-skew flakes.
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap() - Duration::hours(1)
}

fn ca() -> CertificateAuthority {
    CertificateAuthority::initialise(&CaNames::default(), now()).unwrap()
}

fn year() -> Validity {
    Validity::starting(now(), Duration::days(365)).unwrap()
}

fn device_dpk() -> ([u8; 65], rot_core::keys::DeviceKey) {
    let enrolment = rot_core::extractor::enrol_from_reference(&[0x42; 512]);
    let key = enrolment.seeds.device_key(rot_core::KeySlot::FIRST);
    (*key.public_key().as_bytes(), key)
}

fn device_leaf_request(serial: u128) -> LeafRequest {
    let (dpk, _) = device_dpk();
    LeafRequest {
        public_key: dpk,
        common_name: "ab".repeat(32),
        validity: year(),
        serial: Serial::new(serial).unwrap(),
        crl_distribution_point: None,
        firmware: None,
    }
}

/// Runs `openssl` with `args` in `dir`; returns (success, stdout + stderr).
fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is installed (apt-get install -y openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn write_chain(dir: &Path, ca: &CertificateAuthority, leaf_pem: &str) {
    fs::write(dir.join("root.pem"), ca.root_pem()).unwrap();
    fs::write(dir.join("intermediate.pem"), ca.certificate_pem()).unwrap();
    fs::write(dir.join("leaf.pem"), leaf_pem).unwrap();
}

const VERIFY: &[&str] = &[
    "verify",
    "-CAfile",
    "root.pem",
    "-untrusted",
    "intermediate.pem",
];

#[test]
fn openssl_verifies_device_leaf_chain() {
    let ca = ca();
    let leaf = ca
        .issue_device_certificate(&device_leaf_request(0x1234))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_chain(dir.path(), &ca, &leaf.pem);
    let (ok, out) = openssl(
        dir.path(),
        &[VERIFY, &["-purpose", "sslclient", "leaf.pem"]].concat(),
    );
    assert!(ok, "openssl verify failed: {out}");
    assert!(out.contains("leaf.pem: OK"), "{out}");

    // The chain PEM is leaf, intermediate, root.
    assert_eq!(
        leaf.chain_pem,
        format!("{}{}{}", leaf.pem, ca.certificate_pem(), ca.root_pem())
    );
}

#[test]
fn openssl_crl_check_rejects_revoked_leaf_and_accepts_others() {
    let ca = ca();
    let serial = Serial::new(0x00ff_eedd_ccbb_aa99_8877_6655_4433_2211).unwrap();
    let leaf = ca
        .issue_device_certificate(&device_leaf_request(serial.get()))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_chain(dir.path(), &ca, &leaf.pem);

    let revoked = [RevokedEntry {
        serial,
        revoked_at: now(),
        reason: RevocationReason::KeyCompromise,
    }];
    let crl = ca
        .sign_crl(&revoked, now(), now() + Duration::days(7), 1)
        .unwrap();
    fs::write(dir.path().join("crl.pem"), &crl.pem).unwrap();
    let crl_check = [VERIFY, &["-crl_check", "-CRLfile", "crl.pem", "leaf.pem"]].concat();
    let (ok, out) = openssl(dir.path(), &crl_check);
    assert!(!ok, "a revoked leaf must not verify: {out}");
    assert!(out.contains("certificate revoked"), "{out}");

    let (ok, text) = openssl(dir.path(), &["crl", "-in", "crl.pem", "-noout", "-text"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("FFEEDDCCBBAA99887766554433221"),
        "serial missing from CRL text: {text}"
    );
    assert!(text.contains("Key Compromise"), "{text}");

    // A CRL that lists some other serial lets the leaf through.
    let other = [RevokedEntry {
        serial: Serial::new(7).unwrap(),
        revoked_at: now(),
        reason: RevocationReason::Unspecified,
    }];
    let crl = ca
        .sign_crl(&other, now(), now() + Duration::days(7), 2)
        .unwrap();
    fs::write(dir.path().join("crl.pem"), &crl.pem).unwrap();
    let (ok, out) = openssl(dir.path(), &crl_check);
    assert!(ok, "an unrevoked leaf must verify with -crl_check: {out}");
}

/// Verifies `leaf` up to `ca`'s root with webpki for `usage`, as a relying party would.
fn webpki_verify(
    ca: &CertificateAuthority,
    leaf: &[u8],
    usage: KeyUsage,
) -> Result<(), webpki::Error> {
    let root = CertificateDer::from(ca.root_der().to_vec());
    let anchors = [webpki::anchor_from_trusted_cert(&root).unwrap()];
    let intermediates = [CertificateDer::from(ca.certificate_der().to_vec())];
    let leaf = CertificateDer::from(leaf.to_vec());
    EndEntityCert::try_from(&leaf)
        .unwrap()
        .verify_for_usage(
            &[webpki::aws_lc_rs::ECDSA_P256_SHA256],
            &anchors,
            &intermediates,
            UnixTime::now(),
            usage,
            None,
            None,
        )
        .map(|_| ())
}

#[test]
fn webpki_verifies_device_leaf_for_client_auth() {
    let ca = ca();
    let leaf = ca
        .issue_device_certificate(&device_leaf_request(42))
        .unwrap();
    webpki_verify(&ca, &leaf.der, KeyUsage::client_auth()).unwrap();
    // A device certificate is not a server certificate.
    assert!(webpki_verify(&ca, &leaf.der, KeyUsage::server_auth()).is_err());
}

#[test]
fn webpki_verifies_server_certificate_for_loopback_names() {
    let ca = ca();
    let server = ca
        .issue_server_certificate(&ServerName::loopback(), year(), Serial::new(9).unwrap())
        .unwrap();
    assert!(
        !format!("{:?}", server.private_key).contains(&format!("{:?}", server.private_key.der()))
    );
    assert_eq!(server.chain_der.len(), 2);

    webpki_verify(&ca, &server.certificate.der, KeyUsage::server_auth()).unwrap();
    let leaf_der = CertificateDer::from(server.certificate.der.clone());
    let ee = EndEntityCert::try_from(&leaf_der).unwrap();
    for name in ["localhost", "127.0.0.1", "::1"] {
        let name = rustls_pki_types::ServerName::try_from(name).unwrap();
        ee.verify_is_valid_for_subject_name(&name).unwrap();
    }
    let other = rustls_pki_types::ServerName::try_from("example.com").unwrap();
    assert!(ee.verify_is_valid_for_subject_name(&other).is_err());

    // The private key is usable and belongs to the certificate.
    let rcgen_key = rcgen_free_key_check(&server.private_key);
    let parsed = parse(&server.certificate.der);
    assert_eq!(
        parsed.public_key().subject_public_key.data.as_ref(),
        rcgen_key
    );

    let dir = tempfile::tempdir().unwrap();
    write_chain(dir.path(), &ca, &server.certificate.pem);
    let (ok, out) = openssl(
        dir.path(),
        &[
            VERIFY,
            &[
                "-purpose",
                "sslserver",
                "-verify_hostname",
                "localhost",
                "-verify_ip",
                "127.0.0.1",
                "leaf.pem",
            ],
        ]
        .concat(),
    );
    assert!(ok, "{out}");
}

/// The public key of a PKCS#8 P-256 key, via aws-lc-rs.
fn rcgen_free_key_check(key: &PrivateKeyPkcs8) -> Vec<u8> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, key.der()).unwrap();
    pair.public_key().as_ref().to_vec()
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).unwrap().1
}

#[test]
fn leaf_carries_rot_core_dpk_and_requested_fields() {
    let (dpk, _) = device_dpk();
    let request = device_leaf_request(0x80);
    let leaf = ca().issue_device_certificate(&request).unwrap();
    let cert = parse(&leaf.der);

    assert_eq!(cert.public_key().subject_public_key.data.as_ref(), &dpk[..]);
    let cn = cert.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), request.common_name);
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    let bc = cert.basic_constraints().unwrap().unwrap().value;
    assert!(!bc.ca);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());
    // 0x80 needs a leading zero byte to stay a positive INTEGER.
    assert_eq!(cert.raw_serial(), &[0x00, 0x80]);
    assert_eq!(cert.serial.to_u64_digits(), vec![0x80]);
    assert_eq!(
        cert.validity().not_before.timestamp(),
        request.validity.not_before.unix_timestamp()
    );

    let ski = cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0),
            _ => None,
        });
    assert!(ski.is_some(), "leaf has no SKI");
    let aki = cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.clone()
            }
            _ => None,
        });
    assert!(aki.is_some(), "leaf has no AKI");
}

#[test]
fn device_signature_verifies_with_aws_lc_fast_path() {
    let (dpk, key) = device_dpk();
    // The same bytes the service will verify: an onboarding answer signed by the DSK.
    let id = rot_core::DeviceId::from_bytes([7; 32]);
    let dpk_key = rot_core::PublicKey::from_sec1(&dpk).unwrap();
    let context = rot_core::attestation::ChallengeContext {
        device_id: &id,
        challenge_id: b"challenge",
        nonce: &[1; 32],
        dpk: &dpk_key,
        key_slot: key.slot(),
    };
    let message = rot_core::attestation::challenge_message(
        rot_core::attestation::ChallengeKind::Onboarding,
        rot_core::attestation::SignerRole::DeviceKey,
        &context,
    )
    .unwrap();
    let signature = key.sign(&message);
    let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, dpk);
    public.verify(message.as_bytes(), &signature.0).unwrap();
    assert!(public.verify(b"another message", &signature.0).is_err());
}

#[test]
fn invalid_requests_are_refused() {
    let ca = ca();
    let mut request = device_leaf_request(1);
    request.public_key[64] ^= 1; // off the curve
    assert!(matches!(
        ca.issue_device_certificate(&request),
        Err(PkiError::InvalidPublicKey)
    ));
    assert!(matches!(Serial::new(0), Err(PkiError::ZeroSerial)));
    assert!(Validity::new(now(), now()).is_err());
    let mut request = device_leaf_request(1);
    request.common_name = String::new();
    assert!(matches!(
        ca.issue_device_certificate(&request),
        Err(PkiError::InvalidCommonName(0))
    ));
}

#[test]
fn encrypted_ca_round_trips_and_refuses_wrong_passphrase_or_tampering() {
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let passphrase = Passphrase::new("correct horse battery staple".into()).unwrap();
    ca.save_with_iterations(dir.path(), &passphrase, TEST_ITERATIONS)
        .unwrap();
    for name in [
        "root.pem",
        "intermediate.pem",
        "root.key.enc",
        "intermediate.key.enc",
    ] {
        assert!(dir.path().join(name).exists(), "{name} missing");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for name in ["root.key.enc", "intermediate.key.enc"] {
            let mode = fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }

    let loaded = CertificateAuthority::load(dir.path(), &passphrase).unwrap();
    assert_eq!(loaded.root_der(), ca.root_der());
    assert_eq!(loaded.certificate_der(), ca.certificate_der());
    assert!(loaded.has_root_key());
    // The loaded CA still issues certificates that chain.
    let leaf = loaded
        .issue_device_certificate(&device_leaf_request(5))
        .unwrap();
    let check = tempfile::tempdir().unwrap();
    write_chain(check.path(), &ca, &leaf.pem);
    let (ok, out) = openssl(check.path(), &[VERIFY, &["leaf.pem"]].concat());
    assert!(ok, "{out}");

    let wrong = Passphrase::new("wrong".into()).unwrap();
    let err = CertificateAuthority::load(dir.path(), &wrong).unwrap_err();
    assert!(matches!(err, PkiError::KeyDecryption));
    assert_eq!(
        err.to_string(),
        "CA key could not be decrypted: wrong passphrase or corrupted file"
    );

    let path = dir.path().join("intermediate.key.enc");
    let original = fs::read(&path).unwrap();
    for index in [0, 7, 12, 30, original.len() / 2, original.len() - 1] {
        let mut tampered = original.clone();
        tampered[index] ^= 0x01;
        fs::write(&path, &tampered).unwrap();
        let err = CertificateAuthority::load(dir.path(), &passphrase).unwrap_err();
        assert!(
            matches!(err, PkiError::KeyDecryption),
            "byte {index}: {err}"
        );
    }
    fs::write(&path, &original[..20]).unwrap();
    assert!(matches!(
        CertificateAuthority::load(dir.path(), &passphrase),
        Err(PkiError::KeyDecryption)
    ));
}

#[test]
fn secrets_are_redacted_in_debug() {
    let secret = "hunter2-very-secret";
    let passphrase = Passphrase::new(secret.into()).unwrap();
    assert!(!format!("{passphrase:?}").contains(secret));
    let from_file = Passphrase::from_file_contents(format!("{secret}\n")).unwrap();
    assert!(!format!("{from_file:?}").contains(secret));
    assert!(Passphrase::from_file_contents("\n".into()).is_err());

    let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .unwrap();
    let key = PrivateKeyPkcs8::from_der(pkcs8.as_ref().to_vec());
    let sealed = EncryptedKey::seal(&key, &passphrase, TEST_ITERATIONS).unwrap();
    assert_eq!(sealed.iterations(), Some(1_000));
    let opened = sealed.open(&passphrase).unwrap();
    assert_eq!(opened.der(), key.der());
    let debug = format!("{opened:?}");
    assert!(debug.contains("REDACTED"));
    assert!(!debug.contains(&format!("{:?}", &opened.der()[..8])));
    let ca = ca();
    assert!(format!("{ca:?}").contains("REDACTED"));
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one table of identities, accepted and refused"
)]
fn operator_identity_round_trips() {
    let ca = ca();
    for role in [Role::Admin, Role::Operator, Role::Auditor] {
        let issued = ca
            .issue_operator_certificate(
                &OperatorKey::Generate,
                "alice@acme.example",
                "acme-fab-1",
                role,
                year(),
                Serial::new(77).unwrap(),
            )
            .unwrap();
        assert!(issued.private_key.is_some());
        let identity = OperatorIdentity::from_certificate_der(&issued.certificate.der).unwrap();
        assert_eq!(identity.owner, "acme-fab-1");
        assert_eq!(identity.name, "alice@acme.example");
        assert_eq!(identity.role, role);
        assert_eq!(identity, issued.identity);
    }
    let (dpk, _) = device_dpk();
    let issued = ca
        .issue_operator_certificate(
            &OperatorKey::PublicKey(dpk),
            "bob",
            "owner2",
            Role::Auditor,
            year(),
            Serial::new(78).unwrap(),
        )
        .unwrap();
    assert!(issued.private_key.is_none());
    let cert = parse(&issued.certificate.der);
    assert!(
        cert.extended_key_usage()
            .unwrap()
            .unwrap()
            .value
            .client_auth
    );

    // A device certificate carries no operator identity.
    let leaf = ca
        .issue_device_certificate(&device_leaf_request(3))
        .unwrap();
    assert!(matches!(
        OperatorIdentity::from_certificate_der(&leaf.der),
        Err(PkiError::NotOperatorCertificate(_))
    ));
    assert!(matches!(
        ca.issue_operator_certificate(
            &OperatorKey::Generate,
            "carol",
            "a:b",
            Role::Admin,
            year(),
            Serial::new(1).unwrap()
        ),
        Err(PkiError::InvalidOwner(_))
    ));
    // Upper case would make two spellings of one tenant.
    assert!(matches!(
        ca.issue_operator_certificate(
            &OperatorKey::Generate,
            "carol",
            "Acme",
            Role::Admin,
            year(),
            Serial::new(1).unwrap()
        ),
        Err(PkiError::InvalidOwner(_))
    ));
    assert!(matches!(
        ca.issue_operator_certificate(
            &OperatorKey::Generate,
            "carol smith",
            "acme",
            Role::Admin,
            year(),
            Serial::new(1).unwrap()
        ),
        Err(PkiError::InvalidOperatorName(_))
    ));
    // A name shaped like a DeviceId could pass for that device at a broker (CN = username).
    assert!(matches!(
        ca.issue_operator_certificate(
            &OperatorKey::Generate,
            &"ab".repeat(32),
            "acme",
            Role::Admin,
            year(),
            Serial::new(1).unwrap()
        ),
        Err(PkiError::InvalidOperatorName(_))
    ));
    // The platform owner is allowed and round-trips.
    let platform = ca
        .issue_operator_certificate(
            &OperatorKey::Generate,
            "root-admin",
            "*",
            Role::Admin,
            year(),
            Serial::new(2).unwrap(),
        )
        .unwrap();
    assert_eq!(
        OperatorIdentity::from_certificate_der(&platform.certificate.der)
            .unwrap()
            .owner,
        "*"
    );
}

#[test]
fn import_intermediate_checks_key_and_root() {
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let passphrase = Passphrase::new("p".into()).unwrap();
    ca.save_with_iterations(dir.path(), &passphrase, TEST_ITERATIONS)
        .unwrap();
    let key = EncryptedKey::from_bytes(fs::read(dir.path().join("intermediate.key.enc")).unwrap())
        .open(&passphrase)
        .unwrap();

    let imported = CertificateAuthority::import_intermediate(
        &ca.certificate_pem(),
        &key.to_pem(),
        &ca.root_pem(),
    )
    .unwrap();
    assert!(!imported.has_root_key());
    let leaf = imported
        .issue_device_certificate(&device_leaf_request(11))
        .unwrap();
    let check = tempfile::tempdir().unwrap();
    write_chain(check.path(), &ca, &leaf.pem);
    let (ok, out) = openssl(check.path(), &[VERIFY, &["leaf.pem"]].concat());
    assert!(ok, "{out}");

    // Another CA's key does not match this intermediate.
    let other = self::ca();
    other
        .save_with_iterations(&dir.path().join("other"), &passphrase, TEST_ITERATIONS)
        .unwrap();
    let other_key =
        EncryptedKey::from_bytes(fs::read(dir.path().join("other/intermediate.key.enc")).unwrap())
            .open(&passphrase)
            .unwrap();
    assert!(matches!(
        CertificateAuthority::import_intermediate(
            &ca.certificate_pem(),
            &other_key.to_pem(),
            &ca.root_pem()
        ),
        Err(PkiError::KeyMismatch("intermediate"))
    ));
    // Nor does this intermediate chain to another root.
    assert!(matches!(
        CertificateAuthority::import_intermediate(
            &ca.certificate_pem(),
            &key.to_pem(),
            &other.root_pem()
        ),
        Err(PkiError::NotIssuedByRoot(_))
    ));
}

#[test]
fn ca_certificates_have_expected_constraints() {
    let ca = ca();
    for (der, path_len, self_signed) in [(ca.root_der(), 1, true), (ca.certificate_der(), 0, false)]
    {
        let cert = parse(der);
        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(path_len));
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
        assert_eq!(cert.subject() == cert.issuer(), self_signed);
    }
    let root_years = parse(ca.root_der())
        .validity()
        .time_to_expiration()
        .unwrap();
    assert!(root_years > Duration::days(19 * 365));
}
