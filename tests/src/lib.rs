//! Cross-crate tests and tools for oxroot.
//!
//! - [`loadgen`]: the fleet load generator behind the `loadgen` binary.
//! - [`postgres`]: throwaway PostgreSQL clusters (loadgen's, and the service's test suites').

pub mod loadgen;
pub mod postgres;
