//! Human tables and JSON, one style for every command.
//!
//! JSON conventions (documented for scripts): field names are the contract's snake_case names;
//! enum values are the short lowercase names the command line accepts (`aws-iot`,
//! `awaiting-registration`, `key-compromise`); bytes are lowercase hex; timestamps are RFC 3339
//! UTC; durations are whole seconds. An unset timestamp is `null`.
//!
//! Human output: key/value blocks for single objects, aligned tables for lists. It is for
//! reading, not parsing; use `--json` in scripts.

use std::io::{self, Write};
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::duration::{DisplayDuration, from_proto};

/// Writes one compact JSON document and a newline.
///
/// # Errors
/// The writer's error.
pub fn json_line(out: &mut dyn Write, value: &Value) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// An aligned text table: left-aligned columns two spaces apart, no trailing spaces.
#[derive(Clone, Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    #[must_use]
    pub fn new(headers: &[&str]) -> Self {
        Self {
            rows: vec![headers.iter().map(|&h| h.to_owned()).collect()],
        }
    }

    /// Adds a row; missing cells print empty, extra cells are kept.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Number of data rows.
    #[must_use]
    pub fn len(&self) -> usize {
        self.rows.len() - 1
    }

    /// True without data rows.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the table, header first.
    ///
    /// # Errors
    /// The writer's error.
    pub fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for row in &self.rows {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 2));
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// A `key: value` block with the values aligned; empty values are left out so that unset
/// optional fields do not clutter the output.
#[derive(Clone, Debug, Default)]
pub struct Fields {
    pairs: Vec<(String, String)>,
}

impl Fields {
    /// An empty block.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a field (skipped if `value` is empty).
    #[must_use]
    pub fn field(mut self, key: &str, value: impl Into<String>) -> Self {
        let value = value.into();
        if !value.is_empty() {
            self.pairs.push((key.to_owned(), value));
        }
        self
    }

    /// Writes the block. Multi-line values continue under the value column.
    ///
    /// # Errors
    /// The writer's error.
    pub fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        let width = self
            .pairs
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        for (key, value) in &self.pairs {
            let mut lines = value.lines();
            let first = lines.next().unwrap_or("");
            writeln!(
                out,
                "{:<width$}  {first}",
                format!("{key}:"),
                width = width + 1
            )?;
            for line in lines {
                writeln!(out, "{:<width$}  {line}", "", width = width + 1)?;
            }
        }
        Ok(())
    }
}

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

/// [`timestamp`] for JSON output: `null` when unset.
#[must_use]
pub fn timestamp_json(ts: Option<&prost_types::Timestamp>) -> Value {
    timestamp(ts).map_or(Value::Null, Value::String)
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

/// A duration in seconds for JSON (`null` if unset or negative).
#[must_use]
pub fn duration_json(duration: Option<&prost_types::Duration>) -> Value {
    duration
        .and_then(from_proto)
        .map_or(Value::Null, |d| d.as_secs().into())
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxroot_proto::v1::{DeviceState, PolicyKind, RevocationReason};

    fn text(write: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        write(&mut out).expect("writes");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn tables_align_and_have_no_trailing_spaces() {
        let mut table = Table::new(&["ID", "STATE", "BATCH"]);
        table.row(vec!["abc".into(), "onboarded".into(), String::new()]);
        table.row(vec!["d".into(), "ready".into(), "b-1".into()]);
        assert_eq!(table.len(), 2);
        assert_eq!(
            text(|out| table.write(out)),
            "ID   STATE      BATCH\nabc  onboarded\nd    ready      b-1\n"
        );
    }

    #[test]
    fn tables_count_characters_not_bytes() {
        let mut table = Table::new(&["SITE", "X"]);
        table.row(vec!["Zürich".into(), "1".into()]);
        assert_eq!(text(|out| table.write(out)), "SITE    X\nZürich  1\n");
    }

    #[test]
    fn an_empty_table_prints_its_header() {
        let table = Table::new(&["A", "B"]);
        assert!(table.is_empty());
        assert_eq!(text(|out| table.write(out)), "A  B\n");
    }

    #[test]
    fn fields_align_skip_empty_values_and_indent_continuations() {
        let fields = Fields::new()
            .field("name", "p1")
            .field("description", "")
            .field("renew window", "30d")
            .field("pem", "line1\nline2");
        assert_eq!(
            text(|out| fields.write(out)),
            "name:          p1\nrenew window:  30d\npem:           line1\n               line2\n"
        );
    }

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
        assert_eq!(timestamp_json(None), Value::Null);
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
    fn durations_print_as_seconds_or_units() {
        let d = prost_types::Duration {
            seconds: 30 * 86_400,
            nanos: 0,
        };
        assert_eq!(duration_json(Some(&d)), Value::from(2_592_000_u64));
        assert_eq!(duration_text(Some(&d), "default"), "30d");
        assert_eq!(duration_text(None, "365d (default)"), "365d (default)");
        assert_eq!(duration_json(None), Value::Null);
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
