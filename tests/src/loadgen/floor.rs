//! Costs measured in the same run, on one core: the crypto an onboarding needs from the
//! service (the floor any implementation pays), the crypto of the service's side of one TLS
//! 1.3 handshake (the floor a connection adds), and what one simulated device spends
//! answering a challenge.

use std::time::Duration;

use aws_lc_rs::agreement::{self, EphemeralPrivateKey, X25519};
use aws_lc_rs::digest::{self, SHA256};
use aws_lc_rs::hkdf::{self, HKDF_SHA256};
use aws_lc_rs::hmac::{self, HMAC_SHA256};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use serde::Serialize;

use enroll_service::fleet::PoweredDevice;
use enroll_service::pki::{CaNames, CertificateAuthority, LeafRequest, Serial, Validity};
use oxroot_proto::v1;
use rot_core::attestation::{self, ChallengeContext, ChallengeKind, SignerRole};
use rot_core::keys::{DeviceId, KeySlot, PublicKey};

use super::Error;

/// Rounds of the floor measurement; the fastest round is the floor.
const ROUNDS: u32 = 5;
/// Distinct device keys the floor cycles through (so no cache holds one key's tables).
const KEYS: usize = 64;

/// The service-side crypto of one onboarding, with aws-lc-rs (the fastest P-256 in the build).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct CryptoFloor {
    /// Two ECDSA P-256 verifications (ESK and DSK signatures over their challenge messages).
    pub verify_two_us: f64,
    /// One device certificate built and signed by the service's CA code.
    pub issue_us: f64,
    /// Both, as one onboarding needs them.
    pub per_onboarding_us: f64,
    /// The service's side of one full TLS 1.3 handshake, as the service negotiates it with
    /// devices (X25519, TLS_AES_128_GCM_SHA256 by server preference, an ECDSA P-256 key): its X25519 key pair and
    /// agreement, the key schedule and Finished MACs, the transcript hashes and the
    /// CertificateVerify signature. What a connection per device adds to the floor.
    pub handshake_us: f64,
}

struct Sample {
    epk: Vec<u8>,
    dpk: [u8; 65],
    device_id: String,
    esk_message: Vec<u8>,
    esk_signature: Vec<u8>,
    dsk_message: Vec<u8>,
    dsk_signature: Vec<u8>,
}

fn key_pair(rng: &SystemRandom) -> Result<EcdsaKeyPair, Error> {
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, rng)
        .map_err(|_| "key generation failed")?;
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .map_err(|_| "key parsing failed".into())
}

/// Real challenge messages, signed by fresh ESK / DSK pairs.
fn samples() -> Result<Vec<Sample>, Error> {
    let rng = SystemRandom::new();
    (0..KEYS)
        .map(|i| {
            let esk = key_pair(&rng)?;
            let dsk = key_pair(&rng)?;
            let epk =
                PublicKey::from_sec1(esk.public_key().as_ref()).map_err(|_| "bad generated key")?;
            let dpk =
                PublicKey::from_sec1(dsk.public_key().as_ref()).map_err(|_| "bad generated key")?;
            let device_id = DeviceId::from_public_key(&epk);
            let challenge_id = [i as u8; 16];
            let mut nonce = [0u8; 32];
            aws_lc_rs::rand::fill(&mut nonce).map_err(|_| "RNG failed")?;
            let context = ChallengeContext {
                device_id: &device_id,
                challenge_id: &challenge_id,
                nonce: &nonce,
                dpk: &dpk,
                key_slot: KeySlot::new(1).ok_or("slot 1")?,
            };
            let message = |role| {
                attestation::challenge_message(ChallengeKind::Onboarding, role, &context)
                    .map(|m| m.as_bytes().to_vec())
                    .map_err(|_| "challenge message")
            };
            let esk_message = message(SignerRole::EnrolmentKey)?;
            let dsk_message = message(SignerRole::DeviceKey)?;
            let sign = |key: &EcdsaKeyPair, message: &[u8]| {
                key.sign(&rng, message)
                    .map(|s| s.as_ref().to_vec())
                    .map_err(|_| "signing failed")
            };
            Ok(Sample {
                epk: epk.as_bytes().to_vec(),
                dpk: *dpk.as_bytes(),
                device_id: device_id.to_string(),
                esk_signature: sign(&esk, &esk_message)?,
                dsk_signature: sign(&dsk, &dsk_message)?,
                esk_message,
                dsk_message,
            })
        })
        .collect()
}

fn verify_two(sample: &Sample) -> Result<(), Error> {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &sample.epk)
        .verify(&sample.esk_message, &sample.esk_signature)
        .and_then(|()| {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &sample.dpk)
                .verify(&sample.dsk_message, &sample.dsk_signature)
        })
        .map_err(|_| "a floor signature did not verify".into())
}

fn issue(ca: &CertificateAuthority, sample: &Sample, validity: Validity) -> Result<(), Error> {
    ca.issue_device_certificate(&LeafRequest {
        public_key: sample.dpk,
        common_name: sample.device_id.clone(),
        validity,
        serial: Serial::random()?,
        crl_distribution_point: None,
        firmware: None,
    })?;
    Ok(())
}

/// Bytes of handshake messages a TLS 1.3 server hashes into its transcript: both hellos,
/// EncryptedExtensions, the service's two-certificate chain, CertificateVerify and Finished.
const TRANSCRIPT_BYTES: usize = 2_048;

/// An HKDF output length (aws-lc-rs asks for it as a key type).
struct Length(usize);

impl hkdf::KeyType for Length {
    fn len(&self) -> usize {
        self.0
    }
}

/// RFC 8446 §7.1 HKDF-Expand-Label over SHA-256 into `out`.
fn expand_label(secret: &[u8], label: &[u8], context: &[u8], out: &mut [u8]) -> Result<(), Error> {
    let length = u16::try_from(out.len()).map_err(|_| "label output too long")?;
    let info = [
        &length.to_be_bytes()[..],
        &[6 + label.len() as u8],
        b"tls13 ",
        label,
        &[context.len() as u8],
        context,
    ];
    hkdf::Prk::new_less_safe(HKDF_SHA256, secret)
        .expand(&info, Length(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| "HKDF-Expand-Label failed".into())
}

/// HKDF-Extract over SHA-256.
fn extract(salt: &[u8], ikm: &[u8]) -> Result<[u8; 32], Error> {
    // aws-lc-rs keeps the PRK opaque, so extract is written out as RFC 5869 defines it.
    let tag = hmac::sign(&hmac::Key::new(HMAC_SHA256, salt), ikm);
    tag.as_ref()
        .try_into()
        .map_err(|_| "HKDF-Extract length".into())
}

/// The server's cryptography in one full TLS 1.3 handshake (RFC 8446 §7.1 key schedule):
/// what [`CryptoFloor::handshake_us`] measures. Record encryption is left out (a few hundred
/// bytes of AES-GCM), as are parsing and buffers, which are the overhead being measured.
fn server_handshake(
    server_key: &EcdsaKeyPair,
    client_share: &[u8],
    transcript: &[u8],
    rng: &SystemRandom,
) -> Result<(), Error> {
    let zeros = [0u8; 32];
    let ours = EphemeralPrivateKey::generate(&X25519, rng).map_err(|_| "X25519 key")?;
    let _share = ours.compute_public_key().map_err(|_| "X25519 public key")?;
    let shared = agreement::agree_ephemeral(
        ours,
        agreement::UnparsedPublicKey::new(&X25519, client_share),
        "X25519 agreement",
        |secret| Ok(secret.to_vec()),
    )?;
    // Transcript hashes after ServerHello, after the server's Finished and after the client's
    // Finished, plus the CertificateVerify one: one running hash, finished four times.
    let mut running = digest::Context::new(&SHA256);
    let mut hashes = Vec::with_capacity(4);
    for part in transcript.chunks(transcript.len().div_ceil(4).max(1)) {
        running.update(part);
        hashes.push(running.clone().finish());
    }
    let hash = |i: usize| hashes.get(i).map_or(&[][..], |h| h.as_ref());
    let empty = digest::digest(&SHA256, b"");
    let mut derived = [0u8; 32];
    let early = extract(&zeros, &zeros)?;
    expand_label(&early, b"derived", empty.as_ref(), &mut derived)?;
    let handshake = extract(&derived, &shared)?;
    let (mut client_hs, mut server_hs) = ([0u8; 32], [0u8; 32]);
    expand_label(&handshake, b"c hs traffic", hash(0), &mut client_hs)?;
    expand_label(&handshake, b"s hs traffic", hash(0), &mut server_hs)?;
    expand_label(&handshake, b"derived", empty.as_ref(), &mut derived)?;
    let master = extract(&derived, &zeros)?;
    let mut secrets = [[0u8; 32]; 4];
    for (secret, label) in secrets.iter_mut().zip([
        &b"c ap traffic"[..],
        b"s ap traffic",
        b"exp master",
        b"res master",
    ]) {
        expand_label(&master, label, hash(2), secret)?;
    }
    // Traffic keys and IVs for both directions of both epochs, and the Finished keys.
    let (mut key, mut iv) = ([0u8; 32], [0u8; 12]);
    for secret in [&client_hs, &server_hs, &secrets[0], &secrets[1]] {
        expand_label(secret, b"key", b"", &mut key)?;
        expand_label(secret, b"iv", b"", &mut iv)?;
    }
    let mut finished_key = [0u8; 32];
    for (secret, at) in [(&server_hs, 1), (&client_hs, 2)] {
        expand_label(secret, b"finished", b"", &mut finished_key)?;
        std::hint::black_box(hmac::sign(
            &hmac::Key::new(HMAC_SHA256, &finished_key),
            hash(at),
        ));
    }
    let mut content = vec![0x20; 64];
    content.extend_from_slice(b"TLS 1.3, server CertificateVerify\0");
    content.extend_from_slice(hash(3));
    server_key
        .sign(rng, &content)
        .map_err(|_| "CertificateVerify signature")?;
    Ok(())
}

/// CPU time of the calling thread (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`), so that other
/// processes competing for the cores do not inflate a measurement.
struct ThreadClock(Duration);

fn thread_cpu() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

impl ThreadClock {
    fn start() -> Self {
        Self(thread_cpu())
    }

    fn elapsed(&self) -> Duration {
        thread_cpu().saturating_sub(self.0)
    }
}

/// Fastest of [`ROUNDS`] rounds of `iterations / ROUNDS` calls, in CPU µs per call.
fn fastest(
    iterations: u32,
    mut call: impl FnMut(usize) -> Result<(), Error>,
) -> Result<f64, Error> {
    let per_round = (iterations / ROUNDS).max(1);
    let mut best = f64::INFINITY;
    for _ in 0..ROUNDS {
        let clock = ThreadClock::start();
        for i in 0..per_round {
            call(i as usize)?;
        }
        best = best.min(clock.elapsed().as_secs_f64() * 1e6 / f64::from(per_round));
    }
    Ok(best)
}

/// Measures the floor on the calling thread (run it while the machine is otherwise idle).
///
/// # Errors
/// The CA or a key could not be made.
pub(super) fn crypto_floor(iterations: u32) -> Result<CryptoFloor, Error> {
    let now = time::OffsetDateTime::now_utc();
    let ca = CertificateAuthority::initialise(&CaNames::default(), now - time::Duration::hours(1))?;
    let validity = Validity::new(now, now + time::Duration::days(365))?;
    let samples = samples()?;
    let pick = |i: usize| &samples[i % samples.len()];
    let verify_two_us = fastest(iterations, |i| verify_two(pick(i)))?;
    let issue_us = fastest(iterations, |i| issue(&ca, pick(i), validity))?;
    let per_onboarding_us = fastest(iterations, |i| {
        verify_two(pick(i))?;
        issue(&ca, pick(i), validity)
    })?;
    let rng = SystemRandom::new();
    let server_key = key_pair(&rng)?;
    let client_share = EphemeralPrivateKey::generate(&X25519, &rng)
        .and_then(|key| key.compute_public_key())
        .map_err(|_| "X25519 key")?;
    let mut transcript = vec![0u8; TRANSCRIPT_BYTES];
    aws_lc_rs::rand::fill(&mut transcript).map_err(|_| "RNG failed")?;
    let handshake_us = fastest(iterations, |_| {
        server_handshake(&server_key, client_share.as_ref(), &transcript, &rng)
    })?;
    Ok(CryptoFloor {
        verify_two_us,
        issue_us,
        per_onboarding_us,
        handshake_us,
    })
}

/// What one simulated device spends on an onboarding after the challenge: reconstruct the
/// seeds from its power-up readout, derive the ESK and the slot's DSK, sign twice (with the
/// devices' [`enroll_service::fleet::DeviceSigner`]). Median over `devices`, on the calling
/// thread.
///
/// # Errors
/// A device could not answer.
pub(super) fn device_answer(devices: &[PoweredDevice]) -> Result<Duration, Error> {
    let mut nonce = [0u8; 32];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| "RNG failed")?;
    let challenge = v1::Challenge {
        challenge_id: vec![7; 16],
        nonce: nonce.to_vec(),
        key_slot: 1,
        ..Default::default()
    };
    let mut times = devices
        .iter()
        .map(|device| {
            let clock = ThreadClock::start();
            device.answer(ChallengeKind::Onboarding, &challenge)?;
            Ok(clock.elapsed())
        })
        .collect::<Result<Vec<_>, Error>>()?;
    times.sort_unstable();
    Ok(times.get(times.len() / 2).copied().unwrap_or_default())
}
