//! RFC 7512 URIs: what parses to what, what is refused and why, Display round trips, and that a
//! PIN shows nowhere. No token needed.
#![allow(clippy::expect_used, reason = "a failed expect is a failed test")]
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::path::Path;

use oxroot_hsm::{CaKey, HsmError, PinSource, Pkcs11Uri, Token};

const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn parse(s: &str) -> Pkcs11Uri {
    s.parse()
        .unwrap_or_else(|e| panic!("{s} should parse: {e}"))
}

#[test]
fn good_uris() {
    struct Case {
        uri: &'static str,
        token: &'static str,
        object: Option<&'static str>,
        id: Option<&'static [u8]>,
        module: &'static str,
        pin: Option<PinSource>,
    }
    let cases = [
        Case {
            uri: "pkcs11:token=oxroot;object=issuing-acme?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/oxroot/pin",
            token: "oxroot",
            object: Some("issuing-acme"),
            id: None,
            module: SOFTHSM,
            pin: Some(PinSource::File("/run/oxroot/pin".into())),
        },
        // Percent-encoding in labels, any hex case; the scheme in any case; attributes in any
        // order; the query before nothing else.
        Case {
            uri: "PKCS11:object=CA%20key%3b%2f%3F%c3%a9;token=My%20Token?pin-source=env:OXROOT_PIN&module-path=/opt/hsm/lib%20x.so",
            token: "My Token",
            object: Some("CA key;/?é"),
            id: None,
            module: "/opt/hsm/lib x.so",
            pin: Some(PinSource::Env("OXROOT_PIN".into())),
        },
        // id as percent-encoded bytes, NUL and 0xff included.
        Case {
            uri: "pkcs11:token=t;id=%00%ff%0A%7e;type=private?module-path=/m.so",
            token: "t",
            object: None,
            id: Some(&[0x00, 0xff, 0x0a, 0x7e]),
            module: "/m.so",
            pin: None,
        },
        // The characters RFC 7512 lets stand unencoded in a path value and a query value.
        Case {
            uri: "pkcs11:token=a:[]@!$'()*+,=-._~z;object=&x?module-path=/p/a:[]@!$'()*+,=/?|-._~&pin-source=file:///etc/pin",
            token: "a:[]@!$'()*+,=-._~z",
            object: Some("&x"),
            id: None,
            module: "/p/a:[]@!$'()*+,=/?|-._~",
            pin: Some(PinSource::File("/etc/pin".into())),
        },
    ];
    for case in cases {
        let uri = parse(case.uri);
        assert_eq!(uri.token(), case.token, "{}", case.uri);
        assert_eq!(uri.object(), case.object, "{}", case.uri);
        assert_eq!(uri.id(), case.id, "{}", case.uri);
        assert_eq!(uri.module_path(), Path::new(case.module), "{}", case.uri);
        assert_eq!(uri.pin_source(), case.pin.as_ref(), "{}", case.uri);
        // Display round-trips, and is stable.
        let shown = uri.to_string();
        assert_eq!(parse(&shown), uri, "{shown}");
        assert_eq!(parse(&shown).to_string(), shown);
    }
}

#[test]
fn token_attributes_narrow_the_match() {
    let uri = parse(
        "pkcs11:token=t;manufacturer=SoftHSM%20project;serial=1a2b;model=SoftHSM%20v2?module-path=/m.so",
    );
    assert_eq!(uri.manufacturer(), Some("SoftHSM project"));
    assert_eq!(uri.serial(), Some("1a2b"));
    assert_eq!(uri.model(), Some("SoftHSM v2"));
    assert_eq!(parse(&uri.to_string()), uri);
}

/// Refused URIs, each with a piece of the message that names the rule it breaks.
const BAD: &[(&str, &str)] = &[
    ("pkcs12:token=t?module-path=/m.so", "pkcs11:"),
    ("token=t?module-path=/m.so", "pkcs11:"),
    ("pkcs11:object=k?module-path=/m.so", "token attribute"),
    ("pkcs11:token=t", "module-path"),
    ("pkcs11:token=t;object=k", "module-path"),
    ("pkcs11:token=t?module-path=relative/lib.so", "absolute"),
    (
        "pkcs11:token=t?module-path=/m.so&pin-value=1234",
        "pin-value is refused",
    ),
    (
        "pkcs11:token=t?pin-value=1234&module-path=/m.so",
        "pin-value",
    ),
    (
        "pkcs11:token=t?module-name=softhsm2&module-path=/m.so",
        "module-name",
    ),
    (
        "pkcs11:token=t;slot-id=0?module-path=/m.so",
        "'slot-id' is not supported",
    ),
    (
        "pkcs11:token=t;library-manufacturer=x?module-path=/m.so",
        "not supported",
    ),
    (
        "pkcs11:token=t;x-vendor=1?module-path=/m.so",
        "not supported",
    ),
    (
        "pkcs11:token=t?module-path=/m.so&x-vendor=1",
        "not supported",
    ),
    ("pkcs11:token=t;token=u?module-path=/m.so", "twice"),
    (
        "pkcs11:token=t;object=a;object=b?module-path=/m.so",
        "twice",
    ),
    (
        "pkcs11:token=t?module-path=/m.so&module-path=/n.so",
        "twice",
    ),
    ("pkcs11:token=?module-path=/m.so", "empty"),
    ("pkcs11:token=t;object=?module-path=/m.so", "empty"),
    ("pkcs11:token=t;object?module-path=/m.so", "no '='"),
    ("pkcs11:token=t;=x?module-path=/m.so", "no name"),
    ("pkcs11:token=t;?module-path=/m.so", "no '='"),
    // Percent-encoding: bad escapes, characters that must be encoded.
    ("pkcs11:token=a%2?module-path=/m.so", "two hex digits"),
    ("pkcs11:token=a%zz?module-path=/m.so", "two hex digits"),
    ("pkcs11:token=a%?module-path=/m.so", "two hex digits"),
    ("pkcs11:token=my token?module-path=/m.so", "percent-encoded"),
    ("pkcs11:token=a/b?module-path=/m.so", "percent-encoded"),
    ("pkcs11:token=a\u{e9}?module-path=/m.so", "percent-encoded"),
    ("pkcs11:token=t?module-path=/a;b.so", "percent-encoded"),
    ("pkcs11:token=t?module-path=/m.so#frag", "fragment"),
    ("pkcs11:token=%ff%fe?module-path=/m.so", "UTF-8"),
    // id: percent-encoded bytes only.
    (
        "pkcs11:token=t;id=01?module-path=/m.so",
        "percent-encoded bytes",
    ),
    (
        "pkcs11:token=t;id=%01a?module-path=/m.so",
        "percent-encoded bytes",
    ),
    (
        "pkcs11:token=t;id=?module-path=/m.so",
        "percent-encoded bytes",
    ),
    ("pkcs11:token=t;id=%0g?module-path=/m.so", "two hex digits"),
    // type: private keys only.
    ("pkcs11:token=t;type=cert?module-path=/m.so", "type=private"),
    (
        "pkcs11:token=t;type=public?module-path=/m.so",
        "type=private",
    ),
    // pin-source: file:/absolute or env:NAME.
    (
        "pkcs11:token=t?module-path=/m.so&pin-source=/run/pin",
        "file:/path",
    ),
    (
        "pkcs11:token=t?module-path=/m.so&pin-source=file:run/pin",
        "absolute path",
    ),
    (
        "pkcs11:token=t?module-path=/m.so&pin-source=%7C/usr/bin/getpin",
        "file:/path",
    ),
    (
        "pkcs11:token=t?module-path=/m.so&pin-source=env:",
        "variable name",
    ),
    (
        "pkcs11:token=t?module-path=/m.so&pin-source=env:A-B",
        "variable name",
    ),
];

#[test]
fn bad_uris_are_refused_with_the_rule_that_failed() {
    for (uri, rule) in BAD {
        match uri.parse::<Pkcs11Uri>() {
            Ok(parsed) => panic!("{uri} parsed: {parsed:?}"),
            Err(HsmError::Config(message)) => {
                assert!(message.contains(rule), "{uri}: {message} (wanted '{rule}')");
                // A refused pin-value is never echoed.
                assert!(!message.contains("1234"), "{message}");
            }
            Err(other) => panic!("{uri}: not a Config error: {other:?}"),
        }
    }
}

#[test]
fn key_uris_share_the_token() {
    let token = parse(
        "pkcs11:token=oxroot;serial=42?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/oxroot/pin",
    );
    let key = token.key_uri("issuing-acme", &[0xde, 0xad]).unwrap();
    assert_eq!(
        key.to_string(),
        "pkcs11:token=oxroot;serial=42;object=issuing-acme;type=private;id=%DE%AD?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/oxroot/pin"
    );
    assert_eq!(key.token_uri(), token);
    let no_id = token.key_uri("label with spaces", &[]).unwrap();
    assert_eq!(no_id.id(), None);
    assert!(
        no_id
            .to_string()
            .contains("object=label%20with%20spaces;type=private?")
    );
    assert_eq!(parse(&no_id.to_string()), no_id);
    assert!(matches!(token.key_uri("", &[1]), Err(HsmError::Config(_))));
}

#[test]
fn a_pin_never_shows() {
    let dir = tempfile::tempdir().unwrap();
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, "s3cret-PIN-0000\nignored\n").unwrap();
    let uri = parse(&format!(
        "pkcs11:token=t?module-path=/m.so&pin-source=file:{}",
        pin_file.display()
    ));
    assert_eq!(
        uri.pin_source().unwrap().read().unwrap().as_str(),
        "s3cret-PIN-0000"
    );
    let shown = format!("{uri} {uri:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("pin-source=file:"), "{shown}");
    // CRLF and a missing final newline are fine; an empty first line is not.
    std::fs::write(&pin_file, "abc\r\n").unwrap();
    assert_eq!(uri.pin_source().unwrap().read().unwrap().as_str(), "abc");
    std::fs::write(&pin_file, "abc").unwrap();
    assert_eq!(uri.pin_source().unwrap().read().unwrap().as_str(), "abc");
    std::fs::write(&pin_file, "\nabc\n").unwrap();
    let err = uri.pin_source().unwrap().read().unwrap_err();
    assert!(
        matches!(&err, HsmError::Config(m) if m.contains("empty")),
        "{err}"
    );
    std::fs::remove_file(&pin_file).unwrap();
    assert!(matches!(
        uri.pin_source().unwrap().read(),
        Err(HsmError::Config(_))
    ));
}

#[test]
fn the_types_are_shareable_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn clone<T: Clone>() {}
    send_sync::<Token>();
    send_sync::<std::sync::Arc<Token>>();
    send_sync::<CaKey>();
    clone::<CaKey>();
    send_sync::<Pkcs11Uri>();
    send_sync::<HsmError>();
}

#[test]
fn a_pin_file_that_is_too_large_is_refused_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, "s3cret".repeat(1000)).unwrap();
    let err = PinSource::File(pin_file).read().unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("larger than 4 KiB") && !shown.contains("s3cret"),
        "{shown}"
    );
}
