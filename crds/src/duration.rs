//! Kubernetes-style duration strings: `500ms`, `1s`, `1m30s`, `1h`.

use std::{borrow::Cow, fmt, str::FromStr, time::Duration as StdDuration};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A span of time written the way Kubernetes writes them: one or more
/// whole numbers, each followed by a unit (`ms`, `s`, `m` or `h`), such as
/// `250ms`, `1s`, `1m30s` or `2h`. Precision is one millisecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(StdDuration);

/// The pattern every duration string matches; the schema publishes it so
/// that the API server rejects a malformed duration at `kubectl apply`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

/// Why a duration string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseDurationError {
    /// The string was empty.
    #[error("duration is empty; write it like 500ms, 1s, 1m or 1h")]
    Empty,
    /// A number was not followed by one of the known units.
    #[error("duration {0:?} has no unit or an unknown one; use ms, s, m or h")]
    Unit(String),
    /// A unit was not preceded by a number.
    #[error("duration {0:?} has a unit without a number before it")]
    Number(String),
    /// The duration starts with a minus sign.
    #[error("duration {0:?} is negative; durations are 0 or more")]
    Negative(String),
    /// A number has a fractional part.
    #[error("duration {0:?} has a fraction; use a smaller unit instead, like 1500ms for 1.5s")]
    Fraction(String),
    /// The value does not fit in 64-bit milliseconds.
    #[error("duration {0:?} is too long")]
    Overflow(String),
}

impl Duration {
    /// A duration of `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(StdDuration::from_millis(ms))
    }

    /// A duration of `s` seconds.
    pub const fn from_secs(s: u64) -> Self {
        Self(StdDuration::from_secs(s))
    }

    /// Whole milliseconds, saturating at `u64::MAX`.
    pub fn as_millis(&self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }

    /// The duration in seconds, as a float.
    pub fn as_secs_f64(&self) -> f64 {
        self.0.as_secs_f64()
    }

    /// The standard library duration.
    pub const fn as_std(&self) -> StdDuration {
        self.0
    }
}

/// Parses a command-line flag such as `500ms`, `2s` or `1m` that must be
/// longer than zero; the error is worded for clap to print beside the flag.
pub fn positive_duration(text: &str) -> Result<StdDuration, String> {
    let d: Duration = text.parse().map_err(|e| format!("{e}"))?;
    match d.as_millis() {
        0 => Err("must be longer than 0".into()),
        _ => Ok(d.as_std()),
    }
}

impl From<StdDuration> for Duration {
    fn from(d: StdDuration) -> Self {
        Self(d)
    }
}

impl FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ParseDurationError::Empty);
        }
        if s.starts_with('-') {
            return Err(ParseDurationError::Negative(s.to_owned()));
        }
        let mut total: u64 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(ParseDurationError::Number(s.to_owned()));
            }
            let (number, tail) = rest.split_at(digits);
            if tail.starts_with('.') {
                return Err(ParseDurationError::Fraction(s.to_owned()));
            }
            let (unit_ms, tail) =
                split_unit(tail).ok_or_else(|| ParseDurationError::Unit(s.into()))?;
            let overflow = || ParseDurationError::Overflow(s.to_owned());
            let number: u64 = number.parse().map_err(|_| overflow())?;
            let part = number.checked_mul(unit_ms).ok_or_else(overflow)?;
            total = total.checked_add(part).ok_or_else(overflow)?;
            rest = tail;
        }
        Ok(Self::from_millis(total))
    }
}

/// Splits a leading unit off `s`, returning its length in milliseconds.
fn split_unit(s: &str) -> Option<(u64, &str)> {
    // `ms` must be tried before `m`, which is its prefix.
    [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)]
        .into_iter()
        .find_map(|(unit, ms)| s.strip_prefix(unit).map(|tail| (ms, tail)))
}

impl fmt::Display for Duration {
    /// Prints the shortest exact form, such as `1m30s` or `250ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_duration_must_be_longer_than_zero() {
        assert_eq!(
            positive_duration("250ms"),
            Ok(StdDuration::from_millis(250))
        );
        assert_eq!(positive_duration("0s"), Err("must be longer than 0".into()));
        let error = positive_duration("soon").unwrap_err();
        assert!(error.contains("soon"), "{error}");
    }

    #[test]
    fn parses_every_unit_and_combinations() {
        let ms = |s: &str| s.parse::<Duration>().unwrap().as_millis();
        assert_eq!(ms("500ms"), 500);
        assert_eq!(ms("1s"), 1_000);
        assert_eq!(ms("1m"), 60_000);
        assert_eq!(ms("1h"), 3_600_000);
        assert_eq!(ms("1m30s"), 90_000);
        assert_eq!(ms("1h1m1s1ms"), 3_661_001);
    }

    #[test]
    fn rejects_missing_units_and_numbers_with_a_reason() {
        assert_eq!("".parse::<Duration>(), Err(ParseDurationError::Empty));
        assert!(matches!(
            "10".parse::<Duration>(),
            Err(ParseDurationError::Unit(_))
        ));
        assert!(matches!(
            "10d".parse::<Duration>(),
            Err(ParseDurationError::Unit(_))
        ));
        assert!(matches!(
            "s".parse::<Duration>(),
            Err(ParseDurationError::Number(_))
        ));
        assert!(matches!(
            "-1s".parse::<Duration>(),
            Err(ParseDurationError::Negative(_))
        ));
        assert!(matches!(
            "1.5s".parse::<Duration>(),
            Err(ParseDurationError::Fraction(_))
        ));
        assert!(matches!(
            " 1s".parse::<Duration>(),
            Err(ParseDurationError::Number(_))
        ));
    }

    #[test]
    fn rejects_values_that_overflow() {
        let huge = format!("{}h", u64::MAX);
        assert!(matches!(
            huge.parse::<Duration>(),
            Err(ParseDurationError::Overflow(_))
        ));
    }

    #[test]
    fn display_round_trips_through_parse() {
        for text in ["0s", "250ms", "1s", "1m30s", "2h", "1h0m0s1ms"] {
            let parsed: Duration = text.parse().unwrap();
            let again: Duration = parsed.to_string().parse().unwrap();
            assert_eq!(parsed, again, "{text}");
        }
        assert_eq!(Duration::from_millis(90_000).to_string(), "1m30s");
    }

    #[test]
    fn serde_uses_the_string_form() {
        let d: Duration = serde_json::from_str("\"1m\"").unwrap();
        assert_eq!(d, Duration::from_secs(60));
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1m\"");
        let err = serde_json::from_str::<Duration>("\"1 minute\"").unwrap_err();
        assert!(err.to_string().contains("unit"), "{err}");
    }
}
