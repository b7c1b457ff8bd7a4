//! CA private keys in a PKCS#11 token.
//!
//! oxroot's CA keys (each owner's issuing CA, the platform CA) can live in an HSM instead of an
//! encrypted file. This crate is that backend: it addresses tokens and keys with RFC 7512 URIs
//! ([`Pkcs11Uri`]), generates EC P-256 keys inside the token or finds ones an HSM officer made,
//! and signs with them through a small pool of logged-in sessions ([`Token`]) that survives the
//! token going away and coming back. It is built on the `cryptoki` crate and has no `unsafe`.
//!
//! Nothing of a private key ever leaves the token: keys are generated with CKA_SENSITIVE true
//! and CKA_EXTRACTABLE false, keys found that are extractable or not sensitive are refused, and
//! the crate never asks for a private key's CKA_VALUE. The PIN comes from a `pin-source` (a file
//! or an environment variable), never from the URI (`pin-value` is refused) nor from a config
//! file; it is kept in a [`zeroize::Zeroizing`] string and no `Debug` or `Display` shows it.
//!
//! # Example
//!
//! ```no_run
//! use oxroot_hsm::{Pkcs11Uri, Token};
//!
//! # fn main() -> Result<(), oxroot_hsm::HsmError> {
//! let uri: Pkcs11Uri = "pkcs11:token=oxroot?module-path=/usr/lib/softhsm/libsofthsm2.so\
//!                       &pin-source=file:/run/oxroot/pin"
//!     .parse()?;
//! let token = Token::open(&uri, 4)?;
//! // Once, at set-up: the key is made in the token; record its URI (no secret in it).
//! let key = token.generate_key("issuing-acme", b"\x01")?;
//! let recorded = key.uri().to_string();
//! // Later, in another process: find it again and sign.
//! let key = token.find_key(&recorded.parse()?)?;
//! let der_signature = key.sign_sha256(b"to be signed")?;
//! assert_eq!(key.public_key()[0], 0x04);
//! # drop(der_signature);
//! # Ok(())
//! # }
//! ```
//!
//! # Blocking and threads
//!
//! [`Token`] and [`CaKey`] are `Send + Sync`; share them (`Arc<Token>`, `CaKey: Clone`). Every
//! call is synchronous: it takes a session from the pool (waiting up to
//! [`TokenOptions::acquire_timeout`] when all are busy) and makes blocking PKCS#11 calls. On
//! SoftHSM a signature takes about 0.1 ms (80–130 µs measured on a busy 2-core machine, the
//! same as cryptoki alone); on a network HSM, a round trip or more. From async code call them in
//! `tokio::task::spawn_blocking` (or a dedicated thread). At most `pool_size` calls run on the
//! token at once; the others wait for a session.
//!
//! # Behind rcgen's `SigningKey`
//!
//! For EC keys rcgen wants the SEC1 point as the public key's DER bytes (the subjectPublicKey
//! BIT STRING's content) and a DER signature, which is what [`CaKey`] gives:
//!
//! ```no_run
//! struct HsmSigner(oxroot_hsm::CaKey);
//!
//! impl rcgen::PublicKeyData for HsmSigner {
//!     fn der_bytes(&self) -> &[u8] {
//!         self.0.public_key()
//!     }
//!     fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
//!         &rcgen::PKCS_ECDSA_P256_SHA256
//!     }
//! }
//!
//! impl rcgen::SigningKey for HsmSigner {
//!     fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
//!         // The HsmError (Unavailable → UNAVAILABLE) is lost here: keep it beside, or check
//!         // the token with CaKey::probe after a failure.
//!         self.0.sign_sha256(message).map_err(|_| rcgen::Error::RemoteKeyError)
//!     }
//! }
//! ```
//!
//! The tests sign a CA certificate, a device certificate and a CRL this way and check them with
//! `openssl verify` and `openssl crl`.
//!
//! # Recovery model
//!
//! Failures are sorted by what they say about the token:
//! - **session** (CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED, CKR_USER_NOT_LOGGED_IN,
//!   CKR_FUNCTION_FAILED…): that session and the idle ones are closed (they usually share its
//!   fate: a logout or a `C_CloseAllSessions` by another user of the library) and the call is
//!   tried once more on a fresh session, logged in again;
//! - **device** (CKR_DEVICE_REMOVED, CKR_DEVICE_ERROR, CKR_TOKEN_NOT_PRESENT, CKR_GENERAL_ERROR,
//!   CKR_CRYPTOKI_NOT_INITIALIZED…, or a second session failure in a row): the call answers
//!   [`HsmError::Unavailable`] at once and the token is marked failed;
//! - **stale object handle** (CKR_KEY_HANDLE_INVALID, CKR_OBJECT_HANDLE_INVALID): the token is
//!   asked for its info (if it does not answer: as a device failure) and the session for its
//!   login state (if logged out: as a session failure, since private objects are invisible to
//!   a logged-out session); then the key is looked up again by label and id once. A key that
//!   is no longer there, or a handle that goes stale twice, is taken as the token's failure
//!   ([`HsmError::Unavailable`], the library re-initialised on the next attempt): for a CA a
//!   vanished key is an outage, and SoftHSM, for one, loses track of objects whose files went
//!   away and came back until it is re-initialised. ([`Token::find_key`] answers
//!   [`HsmError::NotFound`] for a key that is not there.)
//!
//! A failed token recovers by itself, on the next call after [`TokenOptions::retry_interval`]
//! (calls before that answer the last error at once, without touching the token): every idle
//! session of every token on that module is closed, the library is re-initialised
//! (`C_Finalize`, `C_Initialize`), the token's slot is found again by its label, a session is
//! opened and logged in, and keys find their objects again by label and id (object handles
//! belong to one library incarnation). No new [`Token::open`] is needed, and [`Token`]s and
//! [`CaKey`]s held by the service stay valid. The re-initialisation waits until no call is in
//! progress on the module, so no session is used or closed across it. A wrong or locked PIN is
//! never retried by itself (retried logins would lock the PIN): it answers
//! [`HsmError::Config`] until the token is opened again.
//!
//! Recovery happens on calls: a service that wants its health to come back without traffic
//! calls [`CaKey::probe`] (or [`Token::probe`]) periodically, and turns NOT_SERVING while it
//! answers [`HsmError::Unavailable`]. [`Token::stats`] tells whether the token is usable now
//! without touching it. A PKCS#11 call that itself hangs (a network HSM that does not answer)
//! is bounded only by the module's own timeouts; [`TokenOptions::acquire_timeout`] bounds the
//! wait for a free session or for a reconnection in progress.
//!
//! One module (library path) is loaded once per process and never unloaded; all [`Token`]s on
//! it share it, and a re-initialisation for one of them makes the others reconnect too (no
//! error for them, one login each). Another user of the same module in the process (outside
//! this crate) would see its sessions closed by such a re-initialisation.
//!
//! # SoftHSM2 notes
//!
//! - SoftHSM2 reads `SOFTHSM2_CONF` (its `directories.tokendir`) at `C_Initialize`, once per
//!   process, and scans the token directory only then: a token created by `softhsm2-util` after
//!   the library was initialised is seen only after a re-initialisation. The tests give each
//!   test its own process and its own configuration for this reason (see `tests/common`).
//! - It keeps each object in a file and checks the file on every use. A token whose directory
//!   is moved away answers CKR_KEY_HANDLE_INVALID for its key and CKR_GENERAL_ERROR for
//!   `C_GetTokenInfo`, and stays broken in that library instance even when the directory comes
//!   back; a re-initialisation sees it again. This is how the tests take the token away.
//! - It has CKM_ECDSA (and CKM_ECDSA_SHA256); this crate uses CKM_ECDSA over a SHA-256 digest
//!   computed in software (see [`CaKey::sign_sha256`]).

#![forbid(unsafe_code)]

mod der;
mod error;
mod key;
mod token;
mod uri;

pub use error::HsmError;
pub use key::{CaKey, KeyProtection};
pub use token::{PoolStats, Token, TokenOptions};
pub use uri::{PinSource, Pkcs11Uri};
