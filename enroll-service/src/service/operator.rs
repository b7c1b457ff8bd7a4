//! The operator-facing service (being written).
#![allow(missing_docs)]

/// Placeholder.
#[derive(Debug)]
pub struct OperatorService;
