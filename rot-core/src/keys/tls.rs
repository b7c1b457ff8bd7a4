//! What a device key signs in a TLS handshake, checked before it signs.
//!
//! A device key (DSK), or the firmware-bound alias key certified in its place, signs three
//! kinds of bytes, and each is recognisable from its very first byte, so a signature made for
//! one can never pass as a signature over another:
//!
//! ```text
//!  attestation message           00 15 "oxroot-attestation-v1" purpose role fields…   (attestation)
//!                                00 15 "oxroot-attestation-v2" purpose role fields…   (firmware-bound)
//!  TLS 1.2 client CertificateVerify: the handshake transcript so far (RFC 5246 §7.4.8)
//!                                01 len24 ClientHello ‖ 02 len24 ServerHello ‖ 0b … ‖ 10 len24 ClientKeyExchange
//!  TLS 1.3 client CertificateVerify content (RFC 8446 §4.4.3)
//!                                20 × 64 ‖ "TLS 1.3, client CertificateVerify" 00 ‖ transcript hash
//! ```
//!
//! The TLS 1.2 transcript is the one input whose content a peer influences (the server's
//! messages are in it), so it is checked as a whole: it must start with the client's own
//! ClientHello, be followed by a TLS 1.2 ServerHello that negotiated the extended master
//! secret (RFC 7627), and then hold exactly the messages of a full ECDHE handshake with client
//! authentication, in order, each one framed with a length that fits, up to the client's
//! ClientKeyExchange and nothing after it. The server cannot choose the start of the signed
//! bytes: they begin with the handshake type and length of a ClientHello the device built.
//!
//! Everything here is pure and allocation-free; the checks only read the bytes.

use core::fmt;

/// A TLS version whose client `CertificateVerify` a device key may sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246): the signature covers the handshake transcript.
    Tls12,
    /// TLS 1.3 (RFC 8446): the signature covers the padded, labelled transcript hash.
    Tls13,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tls12 => "TLS 1.2",
            Self::Tls13 => "TLS 1.3",
        })
    }
}

/// Which client `CertificateVerify` input `signed` is, if it is one: the TLS 1.3 content
/// ([`is_tls13_client_certificate_verify_content`]) or the TLS 1.2 transcript
/// ([`is_tls12_client_certificate_verify_transcript`]). The two forms cannot both match (the
/// first starts with 0x20, the second with 0x01), and an attestation message matches neither
/// (it starts with 0x00).
#[must_use]
pub fn certificate_verify_version(signed: &[u8]) -> Option<TlsVersion> {
    if is_tls13_client_certificate_verify_content(signed) {
        Some(TlsVersion::Tls13)
    } else if is_tls12_client_certificate_verify_transcript(signed) {
        Some(TlsVersion::Tls12)
    } else {
        None
    }
}

/// 64 spaces open every TLS 1.3 `CertificateVerify` content (RFC 8446 §4.4.3).
const TLS13_PADDING: [u8; 64] = [0x20; 64];
/// The client context string and its zero separator (RFC 8446 §4.4.3).
const TLS13_CLIENT_CONTEXT: &[u8] = b"TLS 1.3, client CertificateVerify\0";

/// Whether `content` is a TLS 1.3 client `CertificateVerify` content: 64 spaces, the client
/// context string, a zero byte, then the transcript hash: 32 bytes (SHA-256 suites) or 48
/// (SHA-384), the only hashes of TLS 1.3's suites.
#[must_use]
pub fn is_tls13_client_certificate_verify_content(content: &[u8]) -> bool {
    let prefix_len = TLS13_PADDING.len() + TLS13_CLIENT_CONTEXT.len();
    matches!(content.len().checked_sub(prefix_len), Some(32 | 48))
        && content[..TLS13_PADDING.len()] == TLS13_PADDING
        && &content[TLS13_PADDING.len()..prefix_len] == TLS13_CLIENT_CONTEXT
}

/// TLS handshake message types (RFC 5246 §7.4, RFC 6066 §8).
mod handshake_type {
    pub(super) const CLIENT_HELLO: u8 = 1;
    pub(super) const SERVER_HELLO: u8 = 2;
    pub(super) const CERTIFICATE: u8 = 11;
    pub(super) const SERVER_KEY_EXCHANGE: u8 = 12;
    pub(super) const CERTIFICATE_REQUEST: u8 = 13;
    pub(super) const SERVER_HELLO_DONE: u8 = 14;
    pub(super) const CLIENT_KEY_EXCHANGE: u8 = 16;
    pub(super) const CERTIFICATE_STATUS: u8 = 22;
}

/// `legacy_version` / `server_version` of TLS 1.2 (and of every TLS 1.3 ClientHello).
const TLS12_WIRE_VERSION: u16 = 0x0303;
/// The extended_master_secret extension (RFC 7627 §5.1).
const EXTENDED_MASTER_SECRET: u16 = 0x0017;
/// The supported_versions extension (RFC 8446 §4.2.1): in a ServerHello it means TLS 1.3.
const SUPPORTED_VERSIONS: u16 = 0x002b;
/// The random of a TLS 1.3 HelloRetryRequest, SHA-256("HelloRetryRequest") (RFC 8446 §4.1.3).
const HELLO_RETRY_REQUEST_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];
/// The longest session ID (RFC 5246 §7.4.1.2).
const MAX_SESSION_ID: usize = 32;

/// Whether `transcript` is what a TLS 1.2 client signs in its `CertificateVerify`: the
/// concatenation of the handshake messages of a full handshake with client authentication,
/// from its ClientHello to its ClientKeyExchange (RFC 5246 §7.4.8):
///
/// ```text
///  ClientHello ServerHello Certificate [CertificateStatus] ServerKeyExchange
///  CertificateRequest ServerHelloDone Certificate ClientKeyExchange
/// ```
///
/// Checked: every message is framed (type, 24-bit length that fits, nothing in between or
/// after); the ClientHello is well formed (version 0x0303, a 32-byte random, a session ID of
/// at most 32 bytes, a non-empty even list of cipher suites, the null compression method,
/// well-framed extensions); the ServerHello is a TLS 1.2 one (version 0x0303, no
/// supported_versions extension, not a HelloRetryRequest, null compression) that confirms the
/// extended master secret; the ServerHelloDone is empty and the ClientKeyExchange is one
/// ECDHE public value.
#[must_use]
pub fn is_tls12_client_certificate_verify_transcript(transcript: &[u8]) -> bool {
    check_tls12_transcript(transcript).is_some()
}

fn check_tls12_transcript(transcript: &[u8]) -> Option<()> {
    use handshake_type::{
        CERTIFICATE, CERTIFICATE_REQUEST, CERTIFICATE_STATUS, CLIENT_HELLO, CLIENT_KEY_EXCHANGE,
        SERVER_HELLO, SERVER_HELLO_DONE, SERVER_KEY_EXCHANGE,
    };
    let mut messages = Reader::new(transcript);
    client_hello(messages.handshake(CLIENT_HELLO)?)?;
    server_hello(messages.handshake(SERVER_HELLO)?)?;
    messages.handshake(CERTIFICATE)?;
    // OCSP stapling (RFC 6066 §8): the server may staple a status after its certificate.
    if messages.peek() == Some(CERTIFICATE_STATUS) {
        messages.handshake(CERTIFICATE_STATUS)?;
    }
    messages.handshake(SERVER_KEY_EXCHANGE)?;
    messages.handshake(CERTIFICATE_REQUEST)?;
    if !messages.handshake(SERVER_HELLO_DONE)?.is_empty() {
        return None;
    }
    messages.handshake(CERTIFICATE)?;
    let mut key_exchange = Reader::new(messages.handshake(CLIENT_KEY_EXCHANGE)?);
    // ClientECDiffieHellmanPublic: opaque ecdh_Yc<1..2^8-1> (RFC 8422 §5.7).
    if key_exchange.vec8()?.is_empty() || !key_exchange.is_empty() {
        return None;
    }
    messages.is_empty().then_some(())
}

/// ClientHello (RFC 5246 §7.4.1.2; a TLS 1.3-capable ClientHello has the same layout).
fn client_hello(body: &[u8]) -> Option<()> {
    let mut hello = Reader::new(body);
    if hello.u16()? != TLS12_WIRE_VERSION {
        return None;
    }
    hello.take(32)?;
    if hello.vec8()?.len() > MAX_SESSION_ID {
        return None;
    }
    let suites = hello.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return None;
    }
    if !hello.vec8()?.contains(&0) {
        return None;
    }
    // Extensions are optional in a TLS 1.2 ClientHello; if present they fill the rest.
    if !hello.is_empty() {
        extensions(hello.vec16()?, |_, _| Some(()))?;
    }
    hello.is_empty().then_some(())
}

/// ServerHello (RFC 5246 §7.4.1.3) of a TLS 1.2 handshake with the extended master secret.
fn server_hello(body: &[u8]) -> Option<()> {
    let mut hello = Reader::new(body);
    if hello.u16()? != TLS12_WIRE_VERSION {
        return None;
    }
    if hello.take(32)? == HELLO_RETRY_REQUEST_RANDOM {
        return None;
    }
    if hello.vec8()?.len() > MAX_SESSION_ID {
        return None;
    }
    hello.u16()?;
    if hello.u8()? != 0 {
        return None;
    }
    let mut extended_master_secret = false;
    extensions(hello.vec16()?, |kind, data| match kind {
        EXTENDED_MASTER_SECRET if data.is_empty() => {
            extended_master_secret = true;
            Some(())
        }
        EXTENDED_MASTER_SECRET | SUPPORTED_VERSIONS => None,
        _ => Some(()),
    })?;
    (extended_master_secret && hello.is_empty()).then_some(())
}

/// Walks an extensions block (`u16 type ‖ u16 length ‖ data`, exactly filling `block`),
/// handing each to `each`.
fn extensions(block: &[u8], mut each: impl FnMut(u16, &[u8]) -> Option<()>) -> Option<()> {
    let mut reader = Reader::new(block);
    while !reader.is_empty() {
        let kind = reader.u16()?;
        each(kind, reader.vec16()?)?;
    }
    Some(())
}

/// A cursor over untrusted bytes: every read is bounds-checked and fails with `None`.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.first().copied()
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if len > self.bytes.len() {
            return None;
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// One handshake message of type `kind`: `u8 type ‖ u24 length ‖ body`; its body.
    fn handshake(&mut self, kind: u8) -> Option<&'a [u8]> {
        if self.u8()? != kind {
            return None;
        }
        let len = self.take(3)?;
        let len = (usize::from(len[0]) << 16) | (usize::from(len[1]) << 8) | usize::from(len[2]);
        self.take(len)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::attestation::{
        ChallengeContext, ChallengeKind, DOMAIN, SignerRole, challenge_message,
        registration_message,
    };
    use crate::keys::{DeviceId, KeySlot, PublicKey};
    use proptest::prelude::*;
    use std::vec::Vec;

    /// `u8 type ‖ u24 length ‖ body`.
    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(body.len()).unwrap().to_be_bytes();
        let mut out = std::vec![kind, len[1], len[2], len[3]];
        out.extend_from_slice(body);
        out
    }

    fn vec8(bytes: &[u8]) -> Vec<u8> {
        let mut out = std::vec![u8::try_from(bytes.len()).unwrap()];
        out.extend_from_slice(bytes);
        out
    }

    fn vec16(bytes: &[u8]) -> Vec<u8> {
        let mut out = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    }

    fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut out = kind.to_be_bytes().to_vec();
        out.extend(vec16(data));
        out
    }

    /// A ClientHello body as rustls sends it (shape, not every extension).
    pub(crate) fn client_hello_body(random: [u8; 32], session_id: &[u8]) -> Vec<u8> {
        let mut body = std::vec![0x03, 0x03];
        body.extend_from_slice(&random);
        body.extend(vec8(session_id));
        body.extend(vec16(&[0xc0, 0x2b, 0xc0, 0x2c])); // ECDHE-ECDSA-AES{128,256}-GCM
        body.extend(vec8(&[0]));
        let mut exts = extension(EXTENDED_MASTER_SECRET, &[]);
        exts.extend(extension(0x000a, &[0x00, 0x02, 0x00, 0x17])); // supported_groups: P-256
        body.extend(vec16(&exts));
        body
    }

    pub(crate) fn server_hello_body(extensions: &[u8]) -> Vec<u8> {
        let mut body = std::vec![0x03, 0x03];
        body.extend_from_slice(&[0x42; 32]);
        body.extend(vec8(&[0x07; 32]));
        body.extend_from_slice(&[0xc0, 0x2b, 0x00]);
        body.extend(vec16(extensions));
        body
    }

    /// A complete TLS 1.2 client-auth transcript up to the ClientKeyExchange.
    pub(crate) fn transcript(random: [u8; 32], stapled: bool) -> Vec<u8> {
        let mut out = message(
            handshake_type::CLIENT_HELLO,
            &client_hello_body(random, &[]),
        );
        out.extend(message(
            handshake_type::SERVER_HELLO,
            &server_hello_body(&extension(EXTENDED_MASTER_SECRET, &[])),
        ));
        out.extend(message(handshake_type::CERTIFICATE, &[0, 0, 3, 0, 0, 0]));
        if stapled {
            out.extend(message(
                handshake_type::CERTIFICATE_STATUS,
                &[1, 0, 0, 1, 9],
            ));
        }
        out.extend(message(
            handshake_type::SERVER_KEY_EXCHANGE,
            &[3, 0, 23, 1, 4],
        ));
        out.extend(message(handshake_type::CERTIFICATE_REQUEST, &[1, 64, 0, 0]));
        out.extend(message(handshake_type::SERVER_HELLO_DONE, &[]));
        out.extend(message(handshake_type::CERTIFICATE, &[0, 0, 3, 0, 0, 0]));
        out.extend(message(
            handshake_type::CLIENT_KEY_EXCHANGE,
            &vec8(&[4; 65]),
        ));
        out
    }

    #[test]
    fn a_tls12_client_auth_transcript_is_recognised() {
        for stapled in [false, true] {
            let signed = transcript([7; 32], stapled);
            assert!(is_tls12_client_certificate_verify_transcript(&signed));
            assert_eq!(certificate_verify_version(&signed), Some(TlsVersion::Tls12));
            assert!(!is_tls13_client_certificate_verify_content(&signed));
        }
    }

    #[test]
    fn tls13_content_is_recognised_and_is_not_a_transcript() {
        let mut content = std::vec![0x20; 64];
        content.extend_from_slice(TLS13_CLIENT_CONTEXT);
        content.extend_from_slice(&[0xab; 32]);
        assert_eq!(
            certificate_verify_version(&content),
            Some(TlsVersion::Tls13)
        );
        assert!(!is_tls12_client_certificate_verify_transcript(&content));
        // Only the context and padding, no hash: not a content.
        assert_eq!(certificate_verify_version(&content[..98]), None);
        // A SHA-384 transcript hash is one too; any other length is not.
        let prefix = &content[..98];
        for (hash_len, is_content) in [
            (48, true),
            (1, false),
            (31, false),
            (33, false),
            (64, false),
        ] {
            let mut other = prefix.to_vec();
            other.extend(std::iter::repeat_n(0xab, hash_len));
            assert_eq!(
                is_tls13_client_certificate_verify_content(&other),
                is_content,
                "a {hash_len}-byte hash"
            );
        }
    }

    fn ems() -> Vec<u8> {
        extension(EXTENDED_MASTER_SECRET, &[])
    }

    /// The transcript with its ServerHello replaced by one with `extensions`, then `edit`ed.
    fn with_server_hello(extensions: &[u8], edit: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
        let good = transcript([9; 32], false);
        let hello = message(
            handshake_type::CLIENT_HELLO,
            &client_hello_body([9; 32], &[]),
        );
        let old = message(handshake_type::SERVER_HELLO, &server_hello_body(&ems()));
        let mut body = server_hello_body(extensions);
        edit(&mut body);
        let mut out = hello.clone();
        out.extend(message(handshake_type::SERVER_HELLO, &body));
        out.extend_from_slice(&good[hello.len() + old.len()..]);
        out
    }

    /// The transcript with its ClientHello body replaced.
    fn with_client_hello(body: &[u8]) -> Vec<u8> {
        let good = transcript([9; 32], false);
        let old = message(
            handshake_type::CLIENT_HELLO,
            &client_hello_body([9; 32], &[]),
        );
        let mut out = message(handshake_type::CLIENT_HELLO, body);
        out.extend_from_slice(&good[old.len()..]);
        out
    }

    fn refused(signed: &[u8]) -> bool {
        !is_tls12_client_certificate_verify_transcript(signed)
    }

    /// A transcript cut anywhere, or with anything after the ClientKeyExchange, is refused.
    #[test]
    fn truncated_or_extended_transcripts_are_refused() {
        let good = transcript([9; 32], false);
        for len in 0..good.len() {
            assert!(refused(&good[..len]), "truncated at {len}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(refused(&longer));
    }

    /// The ServerHello must be a TLS 1.2 one with the extended master secret.
    #[test]
    fn server_hellos_without_ems_or_of_tls13_are_refused() {
        assert!(!refused(&with_server_hello(&ems(), |_| {})));
        // No extended master secret, or a malformed one.
        assert!(refused(&with_server_hello(
            &extension(0xff01, &[0]),
            |_| {}
        )));
        assert!(refused(&with_server_hello(
            &extension(EXTENDED_MASTER_SECRET, &[1]),
            |_| {}
        )));
        // supported_versions in a ServerHello means TLS 1.3.
        let mut tls13 = ems();
        tls13.extend(extension(SUPPORTED_VERSIONS, &[0x03, 0x04]));
        assert!(refused(&with_server_hello(&tls13, |_| {})));
        // A HelloRetryRequest's random.
        assert!(refused(&with_server_hello(&ems(), |body| {
            body[2..34].copy_from_slice(&HELLO_RETRY_REQUEST_RANDOM);
        })));
        // TLS 1.1; a compression method (version 2 + random 32 + session ID 33 + suite 2).
        assert!(refused(&with_server_hello(&ems(), |body| body[1] = 0x02)));
        assert!(refused(&with_server_hello(&ems(), |body| body[69] = 1)));
    }

    /// The messages must come in the order of a full client-auth handshake.
    #[test]
    fn messages_out_of_order_are_refused() {
        let good = transcript([9; 32], false);
        let hello = message(
            handshake_type::CLIENT_HELLO,
            &client_hello_body([9; 32], &[]),
        );
        let server_hello = message(handshake_type::SERVER_HELLO, &server_hello_body(&ems()));
        let certificate = message(handshake_type::CERTIFICATE, &[0, 0, 3, 0, 0, 0]);
        let key_exchange = message(handshake_type::SERVER_KEY_EXCHANGE, &[3, 0, 23, 1, 4]);
        let request = message(handshake_type::CERTIFICATE_REQUEST, &[1, 64, 0, 0]);
        let at = hello.len() + server_hello.len() + certificate.len();
        let done_at = at + key_exchange.len() + request.len();

        // ServerKeyExchange and CertificateRequest swapped.
        let mut swapped = good[..at].to_vec();
        swapped.extend(&request);
        swapped.extend(&key_exchange);
        swapped.extend_from_slice(&good[done_at..]);
        assert_eq!(swapped.len(), good.len());
        assert!(refused(&swapped));

        // A ServerHelloDone with a body.
        let mut done = good[..done_at].to_vec();
        done.extend(message(handshake_type::SERVER_HELLO_DONE, &[0]));
        done.extend_from_slice(&good[done_at + 4..]);
        assert!(refused(&done));

        // No client Certificate: the ClientKeyExchange right after the ServerHelloDone.
        let mut anonymous = good[..done_at + 4].to_vec();
        anonymous.extend_from_slice(&good[done_at + 4 + certificate.len()..]);
        assert!(refused(&anonymous));
    }

    /// The ClientHello must be well formed.
    #[test]
    fn malformed_client_hellos_are_refused() {
        let mut body = client_hello_body([9; 32], &[]);
        body[1] = 0x04;
        assert!(refused(&with_client_hello(&body)), "version 0x0304");
        body[0] = 0x02;
        body[1] = 0x03;
        assert!(refused(&with_client_hello(&body)), "version 0x0203");
        assert!(refused(&with_client_hello(&client_hello_body(
            [9; 32], &[1; 33]
        ))));

        let mut start = std::vec![0x03, 0x03];
        start.extend_from_slice(&[9; 32]);
        start.push(0);
        let with = |suites: &[u8], compression: &[u8]| {
            let mut body = start.clone();
            body.extend(vec16(suites));
            body.extend(vec8(compression));
            with_client_hello(&body)
        };
        assert!(refused(&with(&[], &[0])), "no cipher suite");
        assert!(refused(&with(&[0xc0, 0x2b, 0xc0], &[0])), "odd suite list");
        assert!(refused(&with(&[0xc0, 0x2b], &[1])), "no null compression");
        // Without extensions the ClientHello is still well formed (RFC 5246 allows it).
        assert!(!refused(&with(&[0xc0, 0x2b], &[0])));
    }

    /// The device key's TLS entry points sign what their check accepts, and each refuses the
    /// other version's input and every attestation message.
    #[test]
    fn the_device_key_signs_only_what_the_checks_accept() {
        use p256::ecdsa::signature::Verifier;
        let dsk = crate::keys::Seeds {
            seeds: [[3; 16]; 8],
        }
        .device_key(KeySlot::FIRST);
        let signed = transcript([1; 32], true);
        let signature = dsk.sign_tls12_client_certificate_verify(&signed).unwrap();
        let verifying =
            p256::ecdsa::VerifyingKey::from_sec1_bytes(dsk.public_key().as_bytes()).unwrap();
        let signature = p256::ecdsa::Signature::from_slice(&signature.0).unwrap();
        assert!(verifying.verify(&signed, &signature).is_ok());

        let mut content = std::vec![0x20; 64];
        content.extend_from_slice(TLS13_CLIENT_CONTEXT);
        content.extend_from_slice(&[0x5c; 32]);
        assert!(dsk.sign_tls13_client_certificate_verify(&content).is_ok());
        assert!(dsk.sign_tls12_client_certificate_verify(&content).is_err());
        assert!(dsk.sign_tls13_client_certificate_verify(&signed).is_err());
        for refused in attestation_messages(3, b"station-7") {
            assert!(dsk.sign_tls12_client_certificate_verify(&refused).is_err());
            assert!(dsk.sign_tls13_client_certificate_verify(&refused).is_err());
        }
    }

    /// Every attestation message, for a spread of keys, contexts and slots.
    fn attestation_messages(fill: u8, context: &[u8]) -> Vec<Vec<u8>> {
        let dpk = PublicKey::from_sec1(
            crate::keys::Seeds {
                seeds: [[fill; 16]; 8],
            }
            .device_key(KeySlot::FIRST)
            .public_key()
            .as_bytes(),
        )
        .unwrap();
        let device_id = DeviceId::from_public_key(&dpk);
        let nonce = [fill; 32];
        let mut out = std::vec![
            registration_message(&dpk, context)
                .unwrap()
                .as_bytes()
                .to_vec()
        ];
        for kind in [ChallengeKind::Onboarding, ChallengeKind::Renewal] {
            for role in [SignerRole::EnrolmentKey, SignerRole::DeviceKey] {
                let message = challenge_message(
                    kind,
                    role,
                    &ChallengeContext {
                        device_id: &device_id,
                        challenge_id: context,
                        nonce: &nonce,
                        dpk: &dpk,
                        key_slot: KeySlot::new(fill % 7 + 1).unwrap(),
                    },
                )
                .unwrap();
                out.push(message.as_bytes().to_vec());
            }
        }
        out
    }

    /// The domain-separation prefix every attestation message starts with.
    fn attestation_prefix() -> Vec<u8> {
        let mut prefix = u16::try_from(DOMAIN.len()).unwrap().to_be_bytes().to_vec();
        prefix.extend_from_slice(DOMAIN);
        prefix
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// No attestation message passes either TLS check, so the device key never signs one
        /// on behalf of a TLS peer.
        #[test]
        fn no_attestation_message_passes_a_tls_check(
            fill in any::<u8>(),
            context in proptest::collection::vec(any::<u8>(), 0..=128),
        ) {
            for signed in attestation_messages(fill, &context) {
                prop_assert!(signed.starts_with(&attestation_prefix()));
                prop_assert!(!is_tls12_client_certificate_verify_transcript(&signed));
                prop_assert!(!is_tls13_client_certificate_verify_content(&signed));
                prop_assert_eq!(certificate_verify_version(&signed), None);
            }
        }

        /// The check reads bytes a TLS server chose: any bytes, and any single-byte edit or
        /// truncation of a valid transcript, are answered without a panic, and whatever passes
        /// still starts with a ClientHello header whose length fits.
        #[test]
        fn any_bytes_are_answered_without_a_panic(
            noise in proptest::collection::vec(any::<u8>(), 0..600),
            at in any::<proptest::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<proptest::sample::Index>(),
        ) {
            let _ = certificate_verify_version(&noise);
            let mut edited = transcript([5; 32], true);
            let i = at.index(edited.len());
            edited[i] = byte;
            let edited = &edited[..=cut.index(edited.len()).max(i)];
            if is_tls12_client_certificate_verify_transcript(edited) {
                prop_assert_eq!(edited[0], handshake_type::CLIENT_HELLO);
                let len = usize::from(edited[1]) << 16 | usize::from(edited[2]) << 8
                    | usize::from(edited[3]);
                prop_assert!(4 + len < edited.len());
            }
        }

        /// No TLS input that passes a check can be an attestation message: attestation messages
        /// start with 0x00 and the domain label, TLS 1.2 transcripts with 0x01 (the ClientHello
        /// type), TLS 1.3 contents with 0x20.
        #[test]
        fn nothing_that_passes_a_tls_check_is_an_attestation_message(
            random in any::<[u8; 32]>(),
            stapled in any::<bool>(),
        ) {
            let prefix = attestation_prefix();
            let signed = transcript(random, stapled);
            prop_assert!(is_tls12_client_certificate_verify_transcript(&signed));
            prop_assert!(!signed.starts_with(&prefix));
            prop_assert_eq!(signed[0], handshake_type::CLIENT_HELLO);
            // With the attestation's first byte in place of the ClientHello type it fails.
            let mut retyped = signed.clone();
            retyped[0] = prefix[0];
            prop_assert_eq!(certificate_verify_version(&retyped), None);
            // An attestation prefix in front of a valid transcript does not make it valid.
            let mut disguised = prefix.clone();
            disguised.extend_from_slice(&signed);
            prop_assert_eq!(certificate_verify_version(&disguised), None);
        }
    }
}
