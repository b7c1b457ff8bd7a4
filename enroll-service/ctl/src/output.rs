//! How `enrollctl` prints: the output contract, for people and for scripts.
//!
//! Results go to stdout, diagnostics to stderr. Exit codes are [`Exit`](crate::Exit).
//!
//! # `--json`: the proto3 JSON mapping
//!
//! With `--json`, stdout carries exactly one JSON document (one per line for `batch watch`),
//! and that document is the RPC's response message in the
//! [proto3 JSON mapping](https://protobuf.dev/programming-guides/json/), produced by
//! [`json::message`] from the contract's descriptors: no message is written field by field, so
//! every field of the contract is printed, including fields newer than this documentation.
//! The printer uses these options, all of which the mapping allows (any proto3 JSON parser
//! reads the output back into the message):
//!
//! - **field names as in the `.proto`** (`batch_id`, not `batchId`), so that `jq .batch.batch_id`
//!   reads like the contract;
//! - **fields printed with their default values**: every field without presence is always
//!   there (`""`, `0`, `"0"`, `false`, the enum's `*_UNSPECIFIED` name, `[]`, `{}`), so a script
//!   can rely on the key. Fields with presence follow the mapping's rule: a message-typed field
//!   (timestamps, durations, nested messages such as `revocation`) and a `oneof` member are
//!   present only when set; absent means unset;
//! - **enums as value names** from the `.proto` (`ROLE_ADMIN`, `DEVICE_STATE_ONBOARDED`); a
//!   value newer than this client prints as its number;
//! - **64-bit integers as decimal strings** (`"12"`: counts, sequence numbers, lines), 32-bit
//!   ones as numbers;
//! - the canonical forms of the rest: **bytes in base64** (standard alphabet, padded),
//!   **`Timestamp` as RFC 3339** in UTC with 0, 3, 6 or 9 fractional digits,
//!   **`Duration` as seconds with an `s`** (`"7776000s"`, `"1.500s"`), map keys as strings.
//!
//! Object keys are printed in sorted order, maps (labels, audit details) included, so the same
//! answer prints the same bytes every time. Strings are exact: control characters in text from
//! the service are escaped by JSON's own rules (`\u001b`) and by nothing else.
//!
//! | command | stdout with `--json` |
//! |---|---|
//! | `whoami` | `WhoAmIResponse` |
//! | `policy create`, `policy get` | `CreatePolicyResponse`, `GetPolicyResponse` (`{"policy": …}`) |
//! | `policy list` | `ListPoliciesResponse` |
//! | `batch create` | `CreateBatchResponse`, plus `format` and `local_rejections` (below) |
//! | `batch import` | `ImportDevicesResponse`, plus `format` and `local_rejections` (below) |
//! | `batch get`, `batch list` | `GetBatchResponse`, `ListBatchesResponse` |
//! | `batch watch` | one `WatchBatchResponse` per line (`{"progress": …}` or `{"device": …}`) |
//! | `device list`, `get`, `revoke`, `transfer` | `ListDevicesResponse`, `GetDeviceResponse`, `RevokeDeviceResponse`, `TransferDeviceResponse` |
//! | `export`, `batch export` | `ExportArtifactsResponse`, plus `paths` |
//! | `crl` | `GetCrlResponse` (the CRL in `crl`, base64), plus `path` with `--out` |
//! | `audit query`, `audit verify` | `QueryAuditResponse`, `VerifyAuditResponse` |
//! | `operator issue` | `IssueOperatorCertificateResponse`, plus `profile` |
//! | `operator revoke`, `operator list` | `RevokeOperatorCertificateResponse`, `ListOperatorCertificatesResponse` |
//! | `console` | `WhoAmIResponse` (who the console acts as), plus `login_url` and `listen`, then nothing until it stops |
//!
//! List commands follow every page and print one `List…Response` holding all of them, with an
//! empty `next_page_token`; `audit query --limit N` stops after N entries (`head_seq` says how
//! far the log goes). The keys enrollctl adds beside a response's fields are its local facts,
//! never a field of the contract ([`json::message_with`] refuses a clash):
//!
//! - `format` (`batch create`, `batch import`): how the device file was read (`quarklink`,
//!   `jsonl` or `csv`, as `--format` names them; `""` for `batch create` without a file);
//! - `local_rejections`: the file's records enrollctl could not read and did not send, each an
//!   `ImportRejection` (`line`, `device_id`, `reason`, `message`) in the mapping. The service's
//!   own rejections are in `report.rejections`; for `batch create --devices` their `line` is the
//!   line of the file, not the position in the request. `batch import` sums the reports of its
//!   calls (100,000 records each) and shows the counts after the last;
//! - `paths` (`export`): where each of `artifacts` was written, in the same order;
//! - `path` (`crl --out`): the file written;
//! - `profile` (`operator issue`): `{"dir", "key", "certificate", "root"}`, the files written.
//! - `login_url`, `listen` (`console`): the one-time login link, and the address served.
//!
//! Errors go to stderr as one object, `{"error": {"message", "exit_code"}}`, with `rpc`,
//! `grpc_code` and `grpc_message` when the service refused a call.
//!
//! # Human output
//!
//! Key/value blocks for single objects, aligned tables for lists, one line per event. It is for
//! reading, not parsing; use `--json` in scripts. Enum values are shown by the short names the
//! command line accepts (`aws-iot`, `key-compromise`), durations as `90d`, unset defaults as
//! what the service applies (`365d (default)`).
//!
//! Text from the service (names, descriptions, comments, registration contexts, audit
//! details) is shown through [`escape()`], in every view: views write only through [`Human`],
//! whose lines, table cells and field values are escaped where they meet the terminal, so a
//! control character, bidi override or invisible character prints as a visible escape such as
//! `\x1b` or `\u{202e}`, and a backslash as `\\`.

pub mod escape;
pub mod human;
pub mod json;

pub use escape::escape;
pub use human::{Fields, Human, Table};
pub use json::{JsonError, json_line};

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::duration::{DisplayDuration, from_proto};

/// RFC 3339 text of a protobuf timestamp; `None` if unset or out of range.
#[must_use]
pub fn timestamp(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    let ts = ts?;
    let nanos = i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

/// [`timestamp`] for human output: empty when unset.
#[must_use]
pub fn timestamp_text(ts: Option<&prost_types::Timestamp>) -> String {
    timestamp(ts).unwrap_or_default()
}

/// A protobuf timestamp for an instant.
#[must_use]
pub fn to_timestamp(at: OffsetDateTime) -> prost_types::Timestamp {
    let nanos = at.unix_timestamp_nanos();
    prost_types::Timestamp {
        seconds: i64::try_from(nanos.div_euclid(1_000_000_000)).unwrap_or(i64::MAX),
        nanos: i32::try_from(nanos.rem_euclid(1_000_000_000)).unwrap_or(0),
    }
}

/// A duration for humans (`365d`), or `default` if unset.
#[must_use]
pub fn duration_text(duration: Option<&prost_types::Duration>, default: &str) -> String {
    duration
        .and_then(from_proto)
        .map_or_else(|| default.to_owned(), |d| DisplayDuration(d).to_string())
}

/// A std duration for humans.
#[must_use]
pub fn span(duration: Duration) -> String {
    DisplayDuration(duration).to_string()
}

/// The short name of a protobuf enum value: `POLICY_KIND_AWS_IOT` with prefix `POLICY_KIND_`
/// becomes `aws-iot`, the spelling the command line accepts.
#[must_use]
pub fn short_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// Implements short names for the contract's enums. An unknown value reads as the enum's
/// UNSPECIFIED, as the contract tells clients to treat values newer than they are.
macro_rules! short_names {
    ($($fn_name:ident: $enum:ident = $prefix:literal;)*) => {
        $(
            #[doc = concat!("The short name of a `", stringify!($enum), "` value.")]
            #[must_use]
            pub fn $fn_name(value: i32) -> String {
                let value = oxroot_proto::v1::$enum::try_from(value).unwrap_or_default();
                short_name(value.as_str_name(), $prefix)
            }
        )*
    };
}

short_names! {
    kind_name: PolicyKind = "POLICY_KIND_";
    role_name: Role = "ROLE_";
    state_name: DeviceState = "DEVICE_STATE_";
    credential_state_name: CredentialState = "CREDENTIAL_STATE_";
    reason_name: RevocationReason = "REVOCATION_REASON_";
    rejection_name: ImportRejectionReason = "IMPORT_REJECTION_REASON_";
    event_name: DeviceEventKind = "DEVICE_EVENT_KIND_";
    refusal_detail_name: RefusalDetail = "REFUSAL_DETAIL_";
    crl_format_name: CrlFormat = "CRL_FORMAT_";
    ca_mode_name: CaMode = "CA_MODE_";
    issuing_ca_state_name: IssuingCaState = "ISSUING_CA_STATE_";
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxroot_proto::v1::{DeviceState, PolicyKind, RevocationReason};

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let ts = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        assert_eq!(
            timestamp(Some(&ts)).as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        let ts = prost_types::Timestamp {
            seconds: 0,
            nanos: 500_000_000,
        };
        assert_eq!(
            timestamp(Some(&ts)).as_deref(),
            Some("1970-01-01T00:00:00.5Z")
        );
        assert_eq!(timestamp(None), None);
        assert_eq!(timestamp_text(None), "");
        let absurd = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert_eq!(timestamp(Some(&absurd)), None);
        let at = OffsetDateTime::from_unix_timestamp(-1).expect("valid");
        assert_eq!(
            to_timestamp(at),
            prost_types::Timestamp {
                seconds: -1,
                nanos: 0
            }
        );
    }

    #[test]
    fn durations_print_in_units_or_the_default() {
        let d = prost_types::Duration {
            seconds: 30 * 86_400,
            nanos: 0,
        };
        assert_eq!(duration_text(Some(&d), "default"), "30d");
        assert_eq!(duration_text(None, "365d (default)"), "365d (default)");
        assert_eq!(span(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn enum_short_names_match_the_command_line() {
        assert_eq!(kind_name(PolicyKind::AwsIot as i32), "aws-iot");
        assert_eq!(
            state_name(DeviceState::AwaitingRegistration as i32),
            "awaiting-registration"
        );
        assert_eq!(
            reason_name(RevocationReason::CessationOfOperation as i32),
            "cessation-of-operation"
        );
        // Newer than this client: treated as unspecified, as the contract says.
        assert_eq!(state_name(99), "unspecified");
        assert_eq!(short_name("OTHER", "PREFIX_"), "other");
    }
}
