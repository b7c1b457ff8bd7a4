//! CA keys in a PKCS#11 token (placeholder; see the helper's branch).
#![forbid(unsafe_code)]
