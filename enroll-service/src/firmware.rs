//! Firmware releases: images signed by an owner's firmware-signing key, in MCUboot's format so
//! that a stock verifier (MCUboot itself, `imgtool verify`) checks them, each with a manifest
//! (`rot_core::firmware::manifest`) binding it to its owner and policy.
//!
//! ```text
//!  payload ─▶ MCUboot image: header (version) ‖ payload ‖ protected TLVs (security counter)
//!                            ‖ TLVs: SHA-256, key hash, ECDSA P-256 signature   (mcuboot.rs)
//!  signed image ─SHA-256─▶ measurement ─▶ manifest (owner, policy, name, version, counter,
//!                                         measurement, size) ─▶ signed by the same key
//! ```
//!
//! The key lives in the configured key store (sealed or PKCS#11) and is certified by the
//! owner's issuing CA for code signing only ([`crate::service::Authorities::firmware_signer`]).

pub mod mcuboot;
pub mod rollout;
