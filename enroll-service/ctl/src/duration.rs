//! Spans written the way operators type them: `90d`, `12h`, `30m`, `3600s`, or a sum such as
//! `1d12h`.
//!
//! No crate in the dependency tree parses these (humantime is not in `Cargo.lock`), and the
//! grammar is small enough to own: one or more `<digits><unit>` pairs, unit `s`, `m`, `h`, `d`
//! or `w`. A bare number is refused on purpose: `--lifetime 365` could mean days or seconds,
//! and guessing wrong issues certificates with the wrong validity.

use std::fmt;
use std::time::Duration;

/// Why a span could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// The text is empty.
    #[error("empty duration (expected e.g. 90d, 12h, 30m, 3600s)")]
    Empty,
    /// A number has no unit after it.
    #[error("{0:?}: every number needs a unit (s, m, h, d or w), e.g. 90d")]
    MissingUnit(String),
    /// A unit has no number before it, or a character is neither digit nor unit.
    #[error("{text:?}: unexpected {found:?} (expected e.g. 90d, 12h, 30m, 3600s)")]
    Unexpected {
        /// The whole input.
        text: String,
        /// The offending character.
        found: char,
    },
    /// The span does not fit in 64-bit seconds.
    #[error("{0:?} is too long")]
    Overflow(String),
}

/// Parses `90d`, `12h`, `30m`, `3600s`, `2w` or sums of them (`1d12h`).
///
/// Surrounding whitespace is ignored; whitespace inside is not allowed.
///
/// # Errors
/// [`DurationError`] for empty input, a number without unit, an unknown character, or a span
/// beyond `u64` seconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::Empty);
    }
    let overflow = || DurationError::Overflow(trimmed.to_owned());
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for c in trimmed.chars() {
        if let Some(digit) = c.to_digit(10) {
            let value = number
                .unwrap_or(0)
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(digit)))
                .ok_or_else(overflow)?;
            number = Some(value);
            continue;
        }
        let unit_seconds = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            found => {
                return Err(DurationError::Unexpected {
                    text: trimmed.to_owned(),
                    found,
                });
            }
        };
        let value = number.take().ok_or_else(|| DurationError::Unexpected {
            text: trimmed.to_owned(),
            found: c,
        })?;
        total = value
            .checked_mul(unit_seconds)
            .and_then(|seconds| total.checked_add(seconds))
            .ok_or_else(overflow)?;
    }
    if number.is_some() {
        return Err(DurationError::MissingUnit(trimmed.to_owned()));
    }
    Ok(Duration::from_secs(total))
}

/// A span in the largest units that divide it exactly, e.g. `365d`, `1d12h`, `90s`, `0s`.
///
/// Sub-second parts are shown as fractional seconds, which this CLI never produces but a
/// server may.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DisplayDuration(pub Duration);

impl fmt::Display for DisplayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut seconds = self.0.as_secs();
        let nanos = self.0.subsec_nanos();
        if seconds == 0 && nanos == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
            if seconds >= size {
                write!(f, "{}{unit}", seconds / size)?;
                seconds %= size;
            }
        }
        match (seconds, nanos) {
            (0, 0) => Ok(()),
            (s, 0) => write!(f, "{s}s"),
            (s, n) => {
                let fraction = format!("{n:09}");
                write!(f, "{s}.{}s", fraction.trim_end_matches('0'))
            }
        }
    }
}

/// Converts a protobuf duration to a std one; negative spans (never valid in this contract)
/// become `None`.
#[must_use]
pub fn from_proto(duration: &prost_types::Duration) -> Option<Duration> {
    let seconds = u64::try_from(duration.seconds).ok()?;
    let nanos = u32::try_from(duration.nanos).ok()?;
    Some(Duration::new(seconds, 0) + Duration::from_nanos(u64::from(nanos)))
}

/// Converts a std duration to a protobuf one, saturating at `i64::MAX` seconds.
#[must_use]
pub fn to_proto(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    #[test]
    fn accepts_the_documented_forms() {
        let cases: &[(&str, u64)] = &[
            ("90d", 90 * DAY),
            ("12h", 12 * 3_600),
            ("30m", 30 * 60),
            ("3600s", 3_600),
            ("2w", 14 * DAY),
            ("0s", 0),
            ("0d", 0),
            ("1d12h", DAY + 12 * 3_600),
            ("1h30m15s", 3_600 + 30 * 60 + 15),
            ("  365d \n", 365 * DAY),
            ("007m", 7 * 60),
            // Repeated units add up rather than being refused: harmless and predictable.
            ("1d1d", 2 * DAY),
        ];
        for &(text, seconds) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(seconds)),
                "{text:?}"
            );
        }
    }

    #[test]
    fn refuses_ambiguous_or_malformed_input() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("   "), Err(DurationError::Empty));
        assert_eq!(
            parse_duration("365"),
            Err(DurationError::MissingUnit("365".into()))
        );
        assert_eq!(
            parse_duration("1d12"),
            Err(DurationError::MissingUnit("1d12".into()))
        );
        for (text, found) in [
            ("d", 'd'),
            ("1x", 'x'),
            ("1 d", ' '),
            ("-5m", '-'),
            ("1.5h", '.'),
            ("1D", 'D'),
            ("1dd", 'd'),
        ] {
            assert_eq!(
                parse_duration(text),
                Err(DurationError::Unexpected {
                    text: text.into(),
                    found
                }),
                "{text:?}"
            );
        }
    }

    #[test]
    fn refuses_overflow_instead_of_wrapping() {
        assert!(matches!(
            parse_duration("99999999999999999999s"),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(
            parse_duration("18446744073709551615w"),
            Err(DurationError::Overflow(_))
        ));
        let max = format!("{}s", u64::MAX);
        assert_eq!(parse_duration(&max), Ok(Duration::from_secs(u64::MAX)));
        assert!(matches!(
            parse_duration(&format!("{max}1s")),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn displays_in_the_largest_exact_units() {
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_secs(365 * DAY), "365d"),
            (Duration::from_secs(DAY + 12 * 3_600), "1d12h"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3_600), "1h"),
            (Duration::from_secs(59), "59s"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_nanos(1), "0.000000001s"),
        ];
        for &(duration, text) in cases {
            assert_eq!(DisplayDuration(duration).to_string(), text);
        }
    }

    #[test]
    fn display_round_trips_through_parse() {
        for seconds in [0, 1, 59, 60, 61, 3_599, 3_600, DAY - 1, DAY, 400 * DAY + 7] {
            let d = Duration::from_secs(seconds);
            assert_eq!(parse_duration(&DisplayDuration(d).to_string()), Ok(d));
        }
    }

    #[test]
    fn converts_to_and_from_protobuf() {
        let d = Duration::new(90 * DAY, 5);
        assert_eq!(from_proto(&to_proto(d)), Some(d));
        assert_eq!(
            from_proto(&prost_types::Duration {
                seconds: -1,
                nanos: 0
            }),
            None
        );
        assert_eq!(to_proto(Duration::from_secs(u64::MAX)).seconds, i64::MAX);
    }
}
