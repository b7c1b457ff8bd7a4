//! oxroot's enrolment service: the platform a programming house runs to prove PUF-backed chips
//! with a fresh nonce and issue their cloud credentials.
//!
//! ```text
//!  offline root ──signs──▶ online issuing intermediate ──signs──▶ device leaf (DPK, CN = DeviceId)
//!                                                      ├──signs──▶ service TLS certificate
//!                                                      ├──signs──▶ operator certificates (owner, role)
//!                                                      └──signs──▶ CRLs
//! ```
//!
//! Modules:
//! - [`ctl`]: `enrollctl`, the operator and factory-MES command line (a gRPC client).
//! - [`pki`]: the certificate authority (root, intermediate, leaves, CRLs) and encrypted CA keys.

pub mod ctl;
pub mod pki;
