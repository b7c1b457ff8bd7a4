//! # rot-core — oxroot's PUF root of trust
//!
//! A chip's identity is measured from its silicon, not injected: a 64 × 64 array
//! of oxide-tunnelling cells powers up into a noisy but chip-unique pattern. The
//! fuzzy extractor turns that pattern into eight stable 128-bit seeds, and every
//! P-256 key is derived from a seed when it is needed and forgotten after.
//!
//! ```text
//!  EntropySource ──read──▶ noisy 4,096-bit readout           (hazmat)
//!        │                       │ extractor (construction 2: debias, soft BCH decode;
//!        │                       │ construction 1 kept for enrolled devices) + helper data
//!        ▼                       ▼
//!  emulator / chip file    master (≥ 144 bits) ─HKDF─▶ 8 × 128-bit seeds   (keys)
//!  / memory region                       seed 0 ─▶ ESK / EPK, DeviceId = SHA-256(EPK)
//!                                        seed 1..=7 ─▶ DSK / DPK per slot
//!                                        seed 1..=7 + firmware measurement ─▶ alias key (DICE)
//!  attestation: the one message format every device signature uses
//! ```
//!
//! ```
//! # #[cfg(feature = "emulator")] {
//! use rot_core::emulator::{ChipSeed, EmulatedChip, OperatingConditions};
//! use rot_core::extractor::{enrol, reconstruct, EnrolMode};
//!
//! let chip = ChipSeed::from_bytes([7; 32]);
//! let mut first_power_up = EmulatedChip::new(&chip, OperatingConditions::NOMINAL, [1; 32]);
//! let enrolment = enrol(&mut first_power_up, None, EnrolMode::FirstEnrolment).unwrap();
//! let id = enrolment.seeds.enrolment_key().device_id();
//!
//! // Any later power-up, with only the public helper data stored:
//! let mut later = EmulatedChip::new(&chip, OperatingConditions::NOMINAL, [2; 32]);
//! let seeds = reconstruct(&mut later, &enrolment.helper_data).unwrap();
//! assert_eq!(seeds.enrolment_key().device_id(), id);
//! # }
//! ```
//!
//! This crate is pure logic: bytes and traits in, bytes out. It does no I/O;
//! the device agent and the enrolment service do.
//!
//! ## Features
//! - *(none)*: `no_std`, no allocation, fixed-size arrays: silicon read →
//!   extractor → keys → attestation builds for any target.
//! - `emulator`: the emulated oxide-tunnelling array and the silicon file
//!   format (still `no_std`).
//! - `alloc`, `std`: conveniences for hosts (`std` adds [`extractor::analysis`]).

#![no_std]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod attestation;
pub mod bch;
pub mod debias;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod entropy;
pub mod extractor;
pub mod firmware;
pub mod hazmat;
pub mod helper_data;
pub mod keys;
#[cfg(feature = "emulator")]
pub mod silicon_file;

pub use entropy::{EntropySource, ReadFailed};
pub use firmware::FirmwareMeasurement;
pub use keys::{
    AliasKey, DeviceId, DeviceKey, EnrolmentKey, KeySlot, PublicKey, Seeds, SignatureBytes,
};
