//! Cross-crate tests and tools for oxroot.
//!
//! - [`loadgen`]: the fleet load generator behind the `loadgen` binary.

pub mod loadgen;
