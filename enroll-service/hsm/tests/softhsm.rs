//! The crate against a real PKCS#11 module: SoftHSM2, a throwaway token per test, each test in
//! its own process (see `common`).
#![allow(clippy::expect_used, reason = "a failed expect is a failed test")]
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use common::{Hsm, LABEL, MODULE, OTHER, PIN, isolated};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use oxroot_hsm::{CaKey, HsmError, PinSource, Pkcs11Uri, Token, TokenOptions};

/// Verifies with aws-lc-rs, an implementation independent of the token (and of the p256 crate
/// the library checks keys with).
fn verify(key: &CaKey, message: &[u8], signature: &[u8]) {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key.public_key())
        .verify(message, signature)
        .unwrap_or_else(|_| panic!("the signature over {message:?} does not verify"));
}

fn sign_and_verify(key: &CaKey, message: &[u8]) {
    let signature = key.sign_sha256(message).unwrap();
    verify(key, message, &signature);
}

/// This test's own cryptoki view of the library (the same library instance the crate uses):
/// a logged-in session on token `label`.
fn raw_session(label: &str) -> cryptoki::session::Session {
    let ctx = Pkcs11::new(MODULE).unwrap();
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == label)
        .unwrap();
    let session = ctx.open_ro_session(slot).unwrap();
    match session.login(UserType::User, Some(&AuthPin::from(PIN))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    session
}

/// The `Access:` line of the private key labelled `label` in `pkcs11-tool --list-objects`.
fn access_of(listing: &str, label: &str) -> BTreeSet<String> {
    let mut in_private_key = false;
    let mut labelled = false;
    for line in listing.lines() {
        if !line.starts_with(' ') {
            in_private_key = line.starts_with("Private Key Object");
            labelled = false;
            continue;
        }
        let line = line.trim();
        if let Some(value) = line.strip_prefix("label:") {
            labelled = in_private_key && value.trim() == label;
        }
        if labelled && let Some(value) = line.strip_prefix("Access:") {
            return value.split(',').map(|s| s.trim().to_owned()).collect();
        }
    }
    panic!("no private key labelled {label} with an Access line in:\n{listing}");
}

#[test]
fn generated_keys_never_leave_the_token() {
    isolated("generated_keys_never_leave_the_token", |hsm| {
        let token = Token::open(&hsm.uri(), 2).unwrap();
        let key = token.generate_key("issuing-acme", &[0xa1, 0x02]).unwrap();
        assert_eq!(
            key.uri().to_string(),
            format!(
                "pkcs11:token={LABEL};object=issuing-acme;type=private;id=%A1%02?module-path={MODULE}&pin-source=file:{}",
                hsm.pin_file.display()
            )
        );
        assert_eq!(key.public_key()[0], 0x04);

        // Read back by the crate.
        let p = key.protection().unwrap();
        assert!(
            p.token && p.private && p.sensitive && p.always_sensitive,
            "{p:?}"
        );
        assert!(
            !p.extractable && p.never_extractable && p.local && p.sign,
            "{p:?}"
        );

        // Read back through cryptoki directly.
        let session = raw_session(LABEL);
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(b"issuing-acme".to_vec()),
            ])
            .unwrap();
        assert_eq!(found.len(), 1);
        let attrs = session
            .get_attributes(
                found[0],
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::NeverExtractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::Token,
                    AttributeType::Private,
                ],
            )
            .unwrap();
        assert_eq!(
            attrs,
            vec![
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::NeverExtractable(true),
                Attribute::AlwaysSensitive(true),
                Attribute::Token(true),
                Attribute::Private(true),
            ]
        );
        // CKA_VALUE of the private key: the token answers CKR_ATTRIBUTE_SENSITIVE (cryptoki's
        // get_attribute_info reports it as Sensitive, and get_attributes leaves it out).
        // (pkcs11-tool --read-object --type privkey is no test of this: it prints "reading
        // private keys not (yet) supported" and exits 0 whatever the key.)
        let info = session
            .get_attribute_info(found[0], &[AttributeType::Value])
            .unwrap();
        assert!(
            matches!(info.as_slice(), [AttributeInfo::Sensitive]),
            "{info:?}"
        );
        assert_eq!(
            session
                .get_attributes(found[0], &[AttributeType::Value])
                .unwrap(),
            Vec::<Attribute>::new()
        );
        drop(session);

        // And as an operator would check it, with OpenSC's pkcs11-tool.
        let listing = hsm.pkcs11_tool(&[
            "--token-label",
            LABEL,
            "--login",
            "--pin",
            PIN,
            "--list-objects",
        ]);
        let access = access_of(&listing, "issuing-acme");
        for flag in [
            "sensitive",
            "always sensitive",
            "never extractable",
            "local",
        ] {
            assert!(access.contains(flag), "{flag} missing from {access:?}");
        }
        assert!(!access.contains("extractable"), "{access:?}");
        // A second key with that label, or that id, is refused.
        let again = token.generate_key("issuing-acme", b"other-id").unwrap_err();
        assert!(matches!(again, HsmError::Exists(_)), "{again}");
        let again = token
            .generate_key("issuing-beta", &[0xa1, 0x02])
            .unwrap_err();
        assert!(matches!(again, HsmError::Exists(_)), "{again}");
        // The refusals left nothing behind, and a new label works.
        let beta = token.generate_key("issuing-beta", &[0xb0]).unwrap();
        assert_ne!(beta.public_key(), key.public_key());

        // Found again by the URI the service would record.
        let recorded: Pkcs11Uri = key.uri().to_string().parse().unwrap();
        let again = token.find_key(&recorded).unwrap();
        assert_eq!(again.public_key(), key.public_key());
    });
}

#[test]
fn signatures_verify_independently() {
    isolated("signatures_verify_independently", |hsm| {
        let token = Token::open(&hsm.uri(), 1).unwrap();
        let key = token.generate_key("issuing", b"\x01").unwrap();
        let mut message = Vec::new();
        for i in 0..300u32 {
            // Empty, short, and up to ~10 kB (a certificate's TBS, a CRL).
            message.extend_from_slice(&i.to_be_bytes());
            message.extend(std::iter::repeat_n((i % 251) as u8, (i as usize * 7) % 23));
            let signature = key.sign_sha256(&message).unwrap();
            verify(&key, &message, &signature);
            // And only that message.
            let mut other = message.clone();
            other.push(0);
            assert!(
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key.public_key())
                    .verify(&other, &signature)
                    .is_err()
            );
        }
        sign_and_verify(&key, b"");
    });
}

#[test]
fn a_key_made_beforehand_is_found_and_signs() {
    isolated("a_key_made_beforehand_is_found_and_signs", |hsm| {
        // The HSM officer's key, before the service ever runs.
        let common = [
            "--token-label",
            LABEL,
            "--login",
            "--pin",
            PIN,
            "--keypairgen",
        ];
        let mut args = common.to_vec();
        args.extend([
            "--key-type",
            "EC:prime256v1",
            "--label",
            "officer-ca",
            "--id",
            "0a0b",
            "--usage-sign",
            "--sensitive",
        ]);
        hsm.pkcs11_tool(&args);

        let token = Token::open(&hsm.uri(), 2).unwrap();
        let by_label = token.find_key(&key_uri(hsm, "object=officer-ca")).unwrap();
        let by_id = token.find_key(&key_uri(hsm, "id=%0a%0B")).unwrap();
        let by_both = token
            .find_key(&hsm.uri().key_uri("officer-ca", &[0x0a, 0x0b]).unwrap())
            .unwrap();
        assert_eq!(by_label.public_key(), by_id.public_key());
        assert_eq!(by_label.public_key(), by_both.public_key());
        // Whichever way it was found, its URI names it fully.
        assert_eq!(by_id.uri(), by_both.uri());
        assert_eq!(by_label.uri().object(), Some("officer-ca"));
        assert_eq!(by_label.uri().id(), Some(&[0x0a, 0x0b][..]));
        for key in [&by_label, &by_id, &by_both] {
            for i in 0..20u8 {
                sign_and_verify(key, &[i; 100]);
            }
        }
        // The public key is the one pkcs11-tool reads out (a DER SubjectPublicKeyInfo, whose
        // last 65 bytes are the point).
        let spki = Command::new("pkcs11-tool")
            .args(["--module", MODULE, "--token-label", LABEL])
            .args(["--read-object", "--type", "pubkey", "--label", "officer-ca"])
            .output()
            .unwrap()
            .stdout;
        assert!(spki.ends_with(by_label.public_key()));

        // Not there, and not on this token.
        let missing = token
            .find_key(&hsm.uri().key_uri("nobody", &[]).unwrap())
            .unwrap_err();
        assert!(matches!(missing, HsmError::NotFound(_)), "{missing}");
        let elsewhere = token
            .find_key(&hsm.token_uri(OTHER).key_uri("officer-ca", &[]).unwrap())
            .unwrap_err();
        assert!(matches!(elsewhere, HsmError::Config(_)), "{elsewhere}");
        let no_object = token.find_key(&hsm.uri()).unwrap_err();
        assert!(matches!(no_object, HsmError::Config(_)), "{no_object}");

        // Keys the crate refuses to sign certificates with.
        let mut args = common.to_vec();
        args.extend([
            "--key-type",
            "EC:prime256v1",
            "--label",
            "loose",
            "--usage-sign",
            "--sensitive",
            "--extractable",
        ]);
        hsm.pkcs11_tool(&args);
        let loose = token
            .find_key(&hsm.uri().key_uri("loose", &[]).unwrap())
            .unwrap_err();
        assert!(
            matches!(&loose, HsmError::Config(m) if m.contains("extractable")),
            "{loose}"
        );
        let mut args = common.to_vec();
        args.extend([
            "--key-type",
            "EC:secp384r1",
            "--label",
            "p384",
            "--usage-sign",
            "--sensitive",
        ]);
        hsm.pkcs11_tool(&args);
        let p384 = token
            .find_key(&hsm.uri().key_uri("p384", &[]).unwrap())
            .unwrap_err();
        assert!(
            matches!(&p384, HsmError::Config(m) if m.contains("P-256")),
            "{p384}"
        );
    });
}

/// The test token's URI with these path attributes added, as an operator would write it.
fn key_uri(hsm: &Hsm, attributes: &str) -> Pkcs11Uri {
    format!(
        "pkcs11:token={LABEL};{attributes}?module-path={MODULE}&pin-source=file:{}",
        hsm.pin_file.display()
    )
    .parse()
    .unwrap()
}

#[test]
fn many_threads_share_a_bounded_pool() {
    isolated("many_threads_share_a_bounded_pool", |hsm| {
        for pool_size in [1, 3] {
            let token = Token::open(&hsm.uri(), pool_size).unwrap();
            let key = token
                .generate_key(&format!("pool-{pool_size}"), &[pool_size as u8])
                .unwrap();
            let threads: Vec<_> = (0..8u8)
                .map(|t| {
                    let key = key.clone();
                    std::thread::spawn(move || {
                        for i in 0..40u8 {
                            sign_and_verify(&key, &[t, i]);
                        }
                    })
                })
                .collect();
            for thread in threads {
                thread.join().unwrap();
            }
            let stats = token.stats();
            println!("pool of {pool_size}, 8 threads × 40 signatures: {stats:?}");
            assert!(stats.peak_open <= pool_size, "{stats:?}");
            assert!(stats.peak_in_use <= pool_size, "{stats:?}");
            assert!(stats.sessions_opened <= pool_size as u64, "{stats:?}");
            assert_eq!(stats.in_use, 0);
            assert_eq!(stats.connects, 1);
        }
    });
}

/// The token goes away while the service runs, and comes back.
///
/// What the test does: SoftHSM keeps each token in a directory `tokendir/<uuid>/` (a
/// `token.object` and one file per object) and checks an object's file on every use. The test
/// renames the token's directory out of the token directory (the token is "pulled out"),
/// then renames it back. Moving files works as root too, unlike `chmod`.
///
/// What SoftHSM does: with the directory gone, `C_SignInit` answers CKR_KEY_HANDLE_INVALID (the
/// key's file is gone) and `C_GetTokenInfo` CKR_GENERAL_ERROR (the token's file is gone); the
/// token stays invalid in that library instance even once the files are back, and a
/// `C_Initialize` sees only the tokens present in the directory at that moment.
///
/// What the crate does: the stale handle makes it ask for the token's info, which fails, so the
/// call answers Unavailable and the token is marked failed; later calls (after the retry
/// interval) re-initialise the library and look for the token, which is not there
/// (Unavailable); once the directory is back, the next such call finds it, logs in, finds the
/// key again, and signs, on the same `Token` and `CaKey`.
#[test]
fn the_token_goes_away_and_comes_back() {
    isolated("the_token_goes_away_and_comes_back", |hsm| {
        let retry = Duration::from_millis(100);
        let options = TokenOptions::new(2)
            .retry_interval(retry)
            .acquire_timeout(Duration::from_secs(5));
        let token = Token::open_with(&hsm.uri(), options.clone()).unwrap();
        let key = token.generate_key("issuing", b"\x01").unwrap();
        // Another token on the same module, in use throughout.
        let other = Token::open_with(&hsm.token_uri(OTHER), options).unwrap();
        let platform = other.generate_key("platform", b"\x02").unwrap();
        sign_and_verify(&key, b"before");
        sign_and_verify(&platform, b"before");

        let dir = hsm.token_dir_of(LABEL);
        let away = hsm.dir.join("pulled-out");
        std::fs::rename(&dir, &away).unwrap();

        let started = Instant::now();
        let err = key.sign_sha256(b"while away").unwrap_err();
        assert!(matches!(err, HsmError::Unavailable(_)), "{err}");
        println!("sign while away: {err}");
        let err = key.probe().unwrap_err();
        assert!(matches!(err, HsmError::Unavailable(_)), "{err}");
        assert!(!token.stats().ready);
        // After the retry interval a reconnection is tried (re-initialising the library): the
        // token is still not there.
        std::thread::sleep(retry * 2);
        let err = key.probe().unwrap_err();
        println!("probe while away, after a reconnection attempt: {err}");
        assert!(
            matches!(&err, HsmError::Unavailable(m) if m.contains("no token labelled")),
            "{err}"
        );
        let err = token.probe().unwrap_err();
        assert!(matches!(err, HsmError::Unavailable(_)), "{err}");
        assert!(token.stats().library_reinits >= 1);
        assert!(started.elapsed() < Duration::from_secs(5), "no hang");
        // The other token lost its sessions to the re-initialisation, and reconnected.
        sign_and_verify(&platform, b"while the first is away");
        assert!(other.stats().connects >= 2, "{:?}", other.stats());

        std::fs::rename(&away, &dir).unwrap();
        std::thread::sleep(retry * 2);
        sign_and_verify(&key, b"after");
        key.probe().unwrap();
        token.probe().unwrap();
        sign_and_verify(&platform, b"after");
        let stats = token.stats();
        println!("after recovery: {stats:?}");
        assert!(stats.ready && stats.connects >= 2, "{stats:?}");
        // Many signatures on both, from several threads, after the recovery.
        let threads: Vec<_> = [key.clone(), platform.clone()]
            .into_iter()
            .cycle()
            .take(4)
            .map(|key| {
                std::thread::spawn(move || {
                    for i in 0..20u8 {
                        sign_and_verify(&key, &[i]);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    });
}

/// Failures while signing from several threads, while the token goes and comes back: every
/// call answers (a signature or Unavailable), none panics or hangs.
#[test]
fn concurrent_callers_see_unavailable_not_a_hang() {
    isolated("concurrent_callers_see_unavailable_not_a_hang", |hsm| {
        let options = TokenOptions::new(3)
            .retry_interval(Duration::from_millis(20))
            .acquire_timeout(Duration::from_secs(5));
        let token = Token::open_with(&hsm.uri(), options).unwrap();
        let key = token.generate_key("issuing", b"\x01").unwrap();
        let dir = hsm.token_dir_of(LABEL);
        let away = hsm.dir.join("pulled-out");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let key = key.clone();
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let (mut ok, mut unavailable) = (0u32, 0u32);
                    let mut i = 0u32;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        i += 1;
                        let message = [t, (i % 256) as u8];
                        match key.sign_sha256(&message) {
                            Ok(signature) => {
                                verify(&key, &message, &signature);
                                ok += 1;
                            }
                            Err(HsmError::Unavailable(_)) => unavailable += 1,
                            Err(other) => panic!("unexpected: {other}"),
                        }
                    }
                    (ok, unavailable)
                })
            })
            .collect();
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(100));
            std::fs::rename(&dir, &away).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            std::fs::rename(&away, &dir).unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut ok, mut unavailable) = (0, 0);
        for thread in threads {
            let (o, u) = thread.join().unwrap();
            ok += o;
            unavailable += u;
        }
        println!(
            "{ok} signatures, {unavailable} Unavailable; {:?}",
            token.stats()
        );
        assert!(unavailable > 0 && ok > 0);
        // Back for good.
        sign_and_verify(&key, b"after");
        let stats = token.stats();
        assert!(stats.peak_open <= 3 && stats.peak_in_use <= 3, "{stats:?}");
    });
}

/// An officer deletes the key and makes another under the same label and id while the service
/// runs: the old handle goes stale, the key is found again by label and id, and it is refused
/// because its public key is not the one certificates were issued for. A key deleted for good
/// is an outage (Unavailable), not a panic.
#[test]
fn a_key_replaced_under_its_label_is_refused() {
    isolated("a_key_replaced_under_its_label_is_refused", |hsm| {
        let options = TokenOptions::new(2).retry_interval(Duration::from_millis(100));
        let token = Token::open_with(&hsm.uri(), options).unwrap();
        let key = token.generate_key("issuing", &[0x42]).unwrap();
        sign_and_verify(&key, b"before");
        let login = ["--token-label", LABEL, "--login", "--pin", PIN];
        for kind in ["privkey", "pubkey"] {
            let mut args = login.to_vec();
            args.extend(["--delete-object", "--type", kind, "--label", "issuing"]);
            hsm.pkcs11_tool(&args);
        }
        let err = key.sign_sha256(b"deleted").unwrap_err();
        assert!(matches!(err, HsmError::Unavailable(_)), "{err}");
        let mut args = login.to_vec();
        args.extend([
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            "issuing",
        ]);
        args.extend(["--id", "42", "--usage-sign", "--sensitive"]);
        hsm.pkcs11_tool(&args);
        std::thread::sleep(token.options().retry_interval);
        let err = key.sign_sha256(b"replaced").unwrap_err();
        assert!(
            matches!(&err, HsmError::Config(m) if m.contains("not the one found before")),
            "{err}"
        );
        // Found afresh, the new key is usable (a new CA certificate would be needed for it).
        let new = token.find_key(key.uri()).unwrap();
        assert_ne!(new.public_key(), key.public_key());
        sign_and_verify(&new, b"new key");
    });
}

/// Another user of the library in the process logs the application out (the login state is
/// the application's, shared by all its sessions on the token): the next signature fails with
/// CKR_USER_NOT_LOGGED_IN on a pooled session, which the pool drops, with the idle ones, and the
/// call is retried on a fresh session that logs in again. The caller sees a signature; the
/// library is not re-initialised.
#[test]
fn a_logout_behind_the_pools_back_is_repaired() {
    isolated("a_logout_behind_the_pools_back_is_repaired", |hsm| {
        let token = Token::open(&hsm.uri(), 3).unwrap();
        let key = token.generate_key("issuing", b"\x01").unwrap();
        sign_and_verify(&key, b"before");
        let opened = token.stats().sessions_opened;
        let session = raw_session(LABEL);
        session.logout().unwrap();
        drop(session);
        sign_and_verify(&key, b"after the logout");
        key.probe().unwrap();
        let stats = token.stats();
        assert_eq!(stats.library_reinits, 0, "{stats:?}");
        assert_eq!(stats.connects, 1, "{stats:?}");
        assert!(stats.sessions_opened > opened, "{stats:?}");
        assert!(stats.ready);
    });
}

#[test]
fn configuration_errors_are_typed() {
    isolated("configuration_errors_are_typed", |hsm| {
        // A wrong PIN: Config, and the PIN in no message.
        let wrong = hsm.dir.join("wrong-pin");
        std::fs::write(&wrong, "not-the-pin-9999\n").unwrap();
        let uri = hsm.uri().with_pin_source(PinSource::File(wrong));
        let err = Token::open(&uri, 1).unwrap_err();
        assert!(
            matches!(&err, HsmError::Config(m) if m.contains("log in")),
            "{err}"
        );
        assert!(!format!("{err} {err:?}").contains("not-the-pin"));

        // No PIN source, an unreadable one, an empty one.
        let err = Token::open(
            &hsm.uri()
                .token_uri()
                .with_pin_source(PinSource::Env("OXROOT_HSM_TEST_NO_SUCH_VARIABLE".into())),
            1,
        )
        .unwrap_err();
        assert!(matches!(err, HsmError::Config(_)), "{err}");
        let no_source: Pkcs11Uri = format!("pkcs11:token={LABEL}?module-path={MODULE}")
            .parse()
            .unwrap();
        let err = Token::open(&no_source, 1).unwrap_err();
        assert!(
            matches!(&err, HsmError::Config(m) if m.contains("pin-source")),
            "{err}"
        );
        let missing = hsm
            .uri()
            .with_pin_source(PinSource::File(hsm.dir.join("nope")));
        assert!(matches!(Token::open(&missing, 1), Err(HsmError::Config(_))));
        let empty = hsm.dir.join("empty-pin");
        std::fs::write(&empty, "\n").unwrap();
        let empty = hsm.uri().with_pin_source(PinSource::File(empty));
        assert!(matches!(Token::open(&empty, 1), Err(HsmError::Config(_))));
        // The PIN file's first line only, a CRLF dropped.
        let crlf = hsm.dir.join("crlf-pin");
        std::fs::write(&crlf, format!("{PIN}\r\nsecond line\n")).unwrap();
        Token::open(&hsm.uri().with_pin_source(PinSource::File(crlf)), 1).unwrap();

        // No such token: Unavailable (it may be plugged in later), naming what is there.
        let err = Token::open(&hsm.token_uri("no-such-token"), 1).unwrap_err();
        assert!(
            matches!(&err, HsmError::Unavailable(m) if m.contains(LABEL) && m.contains(OTHER)),
            "{err}"
        );
        assert!(matches!(
            Token::open(&hsm.uri(), 0),
            Err(HsmError::Config(_))
        ));

        // The PIN never shows in a Token's or a key's Debug.
        let token = Token::open(&hsm.uri(), 1).unwrap();
        let key = token.generate_key("k", b"\x01").unwrap();
        let shown = format!("{token:?} {key:?} {} {:?}", key.uri(), key.uri());
        assert!(!shown.contains(PIN), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    });
}

/// A module that fails to load answers Unavailable; when the path works again, opening works
/// (the service retries `Token::open` until then).
#[test]
fn a_module_that_fails_to_load_is_unavailable() {
    isolated("a_module_that_fails_to_load_is_unavailable", |hsm| {
        let link = hsm.dir.join("module.so");
        let uri = |path: &std::path::Path| -> Pkcs11Uri {
            format!(
                "pkcs11:token={LABEL}?module-path={}&pin-source=file:{}",
                path.display(),
                hsm.pin_file.display()
            )
            .parse()
            .unwrap()
        };
        // Nothing there yet.
        let err = Token::open(&uri(&link), 1).unwrap_err();
        assert!(
            matches!(&err, HsmError::Unavailable(m) if m.contains("could not be loaded")),
            "{err}"
        );
        // A shared library that is not a PKCS#11 module.
        let not_pkcs11 = [
            "/lib/x86_64-linux-gnu/libm.so.6",
            "/lib/aarch64-linux-gnu/libm.so.6",
        ]
        .into_iter()
        .map(std::path::Path::new)
        .find(|p| p.exists());
        if let Some(libm) = not_pkcs11 {
            let err = Token::open(&uri(libm), 1).unwrap_err();
            assert!(matches!(err, HsmError::Unavailable(_)), "{err}");
        }
        // The module appears.
        std::os::unix::fs::symlink(MODULE, &link).unwrap();
        let token = Token::open(&uri(&link), 1).unwrap();
        sign_and_verify(&token.generate_key("k", b"\x01").unwrap(), b"m");
    });
}

/// The service's view: rcgen's `SigningKey` over a [`CaKey`], as the PKI will adapt it.
struct HsmSigner(CaKey);

impl rcgen::PublicKeyData for HsmSigner {
    fn der_bytes(&self) -> &[u8] {
        // For EC keys rcgen wants the SEC1 point (the subjectPublicKey BIT STRING's content).
        self.0.public_key()
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for HsmSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0
            .sign_sha256(message)
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

fn openssl(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl {args:?}: {text}");
    text
}

#[test]
fn certificates_and_crls_signed_in_the_token_verify_with_openssl() {
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
        KeyIdMethod, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber, date_time_ymd,
    };
    isolated(
        "certificates_and_crls_signed_in_the_token_verify_with_openssl",
        |hsm| {
            let token = Token::open(&hsm.uri(), 2).unwrap();
            let key = token.generate_key("issuing-acme", b"\x01").unwrap();

            let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            ca.distinguished_name
                .push(DnType::CommonName, "oxroot HSM test issuing CA");
            ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let ca_cert = ca.self_signed(&HsmSigner(key.clone())).unwrap();
            let issuer = Issuer::new(ca, HsmSigner(key));

            let device_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
            let mut device = CertificateParams::new(vec!["device-1.example".to_owned()]).unwrap();
            device.use_authority_key_identifier_extension = true;
            let device = device.signed_by(&device_key, &issuer).unwrap();
            let crl = CertificateRevocationListParams {
                this_update: date_time_ymd(2025, 1, 1),
                next_update: date_time_ymd(2099, 1, 1),
                crl_number: SerialNumber::from(1u64),
                issuing_distribution_point: None,
                revoked_certs: Vec::new(),
                key_identifier_method: KeyIdMethod::Sha256,
            }
            .signed_by(&issuer)
            .unwrap();

            std::fs::write(hsm.dir.join("ca.pem"), ca_cert.pem()).unwrap();
            std::fs::write(hsm.dir.join("device.pem"), device.pem()).unwrap();
            std::fs::write(hsm.dir.join("crl.pem"), crl.pem().unwrap()).unwrap();
            let verified = openssl(
                &hsm.dir,
                &["verify", "-x509_strict", "-CAfile", "ca.pem", "device.pem"],
            );
            assert!(verified.contains("device.pem: OK"), "{verified}");
            let verified = openssl(
                &hsm.dir,
                &["crl", "-in", "crl.pem", "-CAfile", "ca.pem", "-noout"],
            );
            assert!(verified.contains("verify OK"), "{verified}");
        },
    );
}
