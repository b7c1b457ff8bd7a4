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
//! - [`pki`]: the certificate authority (root, intermediate, leaves, CRLs) and encrypted CA keys.
//! - [`model`]: the registry's records and the device life cycle.
//! - [`store`]: the registry trait and its sled backend with durable group commit.
//! - [`audit`]: the hash-chained audit log.
//! - [`policy`]: security policies per cloud (AWS IoT, Azure DPS, Mosquitto), their validation,
//!   device endpoints and the operator-side artefacts.
//! - [`service`]: the gRPC handlers (device and operator) and their shared state.
//! - [`server`]: TLS, health, reflection and the listener.
//! - [`fleet`]: simulated devices (emulated chips) for the demo, tests and load generation.
//! - [`app`]: the `enroll-service` commands (`init`, `serve`, `demo`).
//! - [`metrics`]: Prometheus metrics.
//! - [`text`]: the one check on free text from clients (no control or invisible characters).
//! - [`wire`]: conversions between the domain types and the `oxroot.v1` messages.

pub mod app;
pub mod audit;
pub mod error;
pub mod firmware;
pub mod fleet;
pub mod metrics;
pub mod model;
pub mod pki;
pub mod policy;
pub mod server;
pub mod service;
pub mod store;
pub mod text;
pub mod wire;
