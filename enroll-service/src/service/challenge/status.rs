//! Status challenges: what a device signs to ask for its status, made without keeping any state.
//!
//! ```text
//!  challenge_id = 12 random bytes ‖ u32 BE expiry (seconds since this process's book began)
//!  nonce        = HMAC-SHA256(process key, "oxroot-status-challenge-v1" ‖ DeviceId ‖ challenge_id)
//! ```
//!
//! An unsigned Status, which anyone may send for any DeviceId, gets one of these: issuing costs
//! one HMAC and no memory, so asking cannot fill the service up. When the signed request comes
//! back the service recomputes the nonce from the echoed id, checks the expiry, and verifies the
//! device's signature over it. Single use is the [`ChallengeBook`](super::ChallengeBook)'s: an
//! id is remembered as spent once a proof over it verified, for longer than it could be valid.
//! The key lives only in this process, so a restart invalidates every outstanding challenge,
//! and the expiry is counted on the process's monotonic clock, which wall-clock steps cannot
//! move.

use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use rot_core::attestation::NONCE_BYTES;
use rot_core::keys::{DeviceId, PublicKey};

use super::ChallengeId;

/// The domain of the nonce MAC: a status nonce is never anything else's MAC.
const LABEL: &[u8] = b"oxroot-status-challenge-v1";
/// Random bytes at the start of a challenge id; the last four hold its expiry.
const RANDOM_BYTES: usize = 12;

/// A status challenge as it is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusChallenge {
    /// Echoed in the proof.
    pub id: ChallengeId,
    /// Signed into the status message.
    pub nonce: [u8; NONCE_BYTES],
    /// How long it is accepted from now.
    pub expires_in: Duration,
}

/// Why a proof's challenge is not accepted (nothing about the device: every check here depends
/// only on the id and the DeviceId the request names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusChallengeProblem {
    /// Not 16 bytes.
    Malformed,
    /// Its expiry has passed (or it names an instant this process never reached: another
    /// process made it).
    Expired,
}

/// Issues and checks status challenges under a key of this process.
pub struct StatusChallenges {
    key: hmac::Key,
    /// A public key nobody holds the private key of, verified against when a proof names a
    /// device or credential with no key on record: every proof then costs one verification,
    /// so the time of a refusal does not tell whether the DeviceId is registered.
    decoy: PublicKey,
    started: Instant,
    ttl: Duration,
}

impl std::fmt::Debug for StatusChallenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusChallenges")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl StatusChallenges {
    /// Challenges valid for `ttl`, under a fresh random key.
    ///
    /// # Panics
    /// If the system RNG fails: the service cannot run without it.
    #[must_use]
    pub fn new(ttl: Duration) -> Self {
        let rng = SystemRandom::new();
        #[expect(
            clippy::expect_used,
            reason = "the service cannot run without the system RNG"
        )]
        let (key, decoy) = {
            let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("system RNG");
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("RNG");
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
                .expect("a key aws-lc-rs just generated parses");
            let decoy = PublicKey::from_sec1(pair.public_key().as_ref())
                .expect("aws-lc-rs public keys are uncompressed P-256 points");
            (key, decoy)
        };
        Self {
            key,
            decoy,
            started: Instant::now(),
            ttl,
        }
    }

    /// The key to verify against when the proof names no key on record.
    #[must_use]
    pub fn decoy(&self) -> &PublicKey {
        &self.decoy
    }

    /// A fresh challenge for `device_id`.
    ///
    /// # Errors
    /// The system RNG failed.
    pub fn issue(
        &self,
        device_id: &DeviceId,
    ) -> Result<StatusChallenge, aws_lc_rs::error::Unspecified> {
        let mut id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut id[..RANDOM_BYTES])?;
        // Whole seconds, rounded up: a challenge is never accepted for less than `ttl`.
        let expiry = (self.started.elapsed() + self.ttl).as_secs() + 1;
        let expiry = u32::try_from(expiry).unwrap_or(u32::MAX);
        id[RANDOM_BYTES..].copy_from_slice(&expiry.to_be_bytes());
        Ok(StatusChallenge {
            id,
            nonce: self.nonce(device_id, &id),
            expires_in: self.ttl,
        })
    }

    /// The nonce of a challenge id presented for `device_id`, if the id is well formed and not
    /// expired. Any id "checks": one this process did not make for this DeviceId yields a
    /// nonce the device never signed, so its proof fails.
    ///
    /// # Errors
    /// [`StatusChallengeProblem`].
    pub fn nonce_of(
        &self,
        device_id: &DeviceId,
        id: &[u8],
    ) -> Result<(ChallengeId, [u8; NONCE_BYTES]), StatusChallengeProblem> {
        let id: ChallengeId = id
            .try_into()
            .map_err(|_| StatusChallengeProblem::Malformed)?;
        let mut expiry = [0u8; 4];
        expiry.copy_from_slice(&id[RANDOM_BYTES..]);
        let expiry = Duration::from_secs(u64::from(u32::from_be_bytes(expiry)));
        let now = self.started.elapsed();
        // The second test refuses ids with an expiry this process would not write (see issue).
        if now >= expiry || expiry > now + self.ttl + Duration::from_secs(1) {
            return Err(StatusChallengeProblem::Expired);
        }
        Ok((id, self.nonce(device_id, &id)))
    }

    fn nonce(&self, device_id: &DeviceId, id: &ChallengeId) -> [u8; NONCE_BYTES] {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(LABEL);
        context.update(device_id.as_bytes());
        context.update(id);
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(context.sign().as_ref());
        nonce
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn device(n: u8) -> DeviceId {
        DeviceId::from_bytes([n; 32])
    }

    #[test]
    fn a_challenge_gives_back_its_nonce_for_its_device_only() {
        let book = StatusChallenges::new(Duration::from_secs(60));
        let challenge = book.issue(&device(1)).unwrap();
        assert_eq!(challenge.expires_in, Duration::from_secs(60));
        let (id, nonce) = book.nonce_of(&device(1), &challenge.id).unwrap();
        assert_eq!((id, nonce), (challenge.id, challenge.nonce));
        // Another device, another process, another id: another nonce (its proof cannot verify).
        assert_ne!(
            book.nonce_of(&device(2), &challenge.id).unwrap().1,
            challenge.nonce
        );
        let other = StatusChallenges::new(Duration::from_secs(60));
        assert_ne!(
            other.nonce_of(&device(1), &challenge.id).unwrap().1,
            challenge.nonce
        );
        let next = book.issue(&device(1)).unwrap();
        assert_ne!(next.id, challenge.id);
        assert_ne!(next.nonce, challenge.nonce);
        assert_eq!(
            book.nonce_of(&device(1), &challenge.id[..15]),
            Err(StatusChallengeProblem::Malformed)
        );
    }

    #[test]
    fn challenges_expire_and_far_future_ones_are_refused() {
        let book = StatusChallenges::new(Duration::from_millis(10));
        let challenge = book.issue(&device(1)).unwrap();
        assert!(book.nonce_of(&device(1), &challenge.id).is_ok());
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(
            book.nonce_of(&device(1), &challenge.id),
            Err(StatusChallengeProblem::Expired)
        );
        // An id whose expiry this process would never have written.
        let mut forged = challenge.id;
        forged[RANDOM_BYTES..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            book.nonce_of(&device(1), &forged),
            Err(StatusChallengeProblem::Expired)
        );
    }
}
