//! The client side of the `oxroot.v1` contract, shared by every client this repository ships:
//! the device agent, `enrollctl`, the service's simulated fleet (demo, tests) and the load
//! generator. The service itself never depends on it.
//!
//! ```text
//!  channel  https:// URL check · root file check · TLS pinned to one root · connect timeout
//!  device   Register(EPK, sig_ESK) · Onboard / Renew: Hello ▶ Challenge ▶ Proof ▶ Credentials
//! ```
//!
//! - [`channel`]: the TLS channel to the service.
//! - [`device`]: the device side of the protocol, generic over a [`device::Chip`].
//! - [`release`]: a firmware release as files, between `enrollctl` and the device agent.
#![forbid(unsafe_code)]

pub mod channel;
pub mod device;
pub mod release;
