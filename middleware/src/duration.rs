//! The one human form of a duration in configuration files: `"100ms"`, `"1s"`, `"1.5s"`,
//! `"1m"`, `"1h"`, `"1d"`, or a number of seconds. In Rust, durations are
//! [`std::time::Duration`]; a file schema uses this module with serde's `with`:
//!
//! ```
//! use std::time::Duration;
//!
//! #[derive(serde::Deserialize)]
//! struct Settings {
//!     #[serde(with = "palisade::duration")]
//!     per: Duration,
//! }
//!
//! let s: Settings = serde_json::from_str(r#"{"per": "1.5s"}"#).unwrap();
//! assert_eq!(s.per, Duration::from_millis(1500));
//! assert_eq!(palisade::duration::format(s.per), "1500ms");
//! assert_eq!(palisade::duration::parse("2m"), Ok(Duration::from_secs(120)));
//! ```

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

const UNITS: [(&str, u64); 7] = [
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// Parses `"<number><unit>"` with unit `ns`, `us`, `ms`, `s`, `m`, `h` or `d` (decimals allowed).
///
/// # Errors
///
/// A missing or unknown unit, or a number that is not one.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{s}` has no unit (use ms, s, m, h or d)"))?;
    let (num, unit) = s.split_at(split);
    let unit = unit.trim();
    let scale = UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, n)| *n)
        .ok_or_else(|| format!("`{s}`: unknown unit `{unit}` (use ms, s, m, h or d)"))?;
    from_number(num, scale).ok_or_else(|| format!("`{s}` is not a valid duration"))
}

fn from_number(num: &str, scale: u64) -> Option<Duration> {
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let int: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut nanos = u128::from(int) * u128::from(scale);
    if !frac.is_empty() {
        let digits = frac.len().min(18);
        let f: u128 = frac[..digits].parse().ok()?;
        nanos += f * u128::from(scale) / 10u128.pow(digits as u32);
    }
    let nanos = u64::try_from(nanos).ok()?;
    Some(Duration::from_nanos(nanos))
}

/// Formats with the largest unit that represents the value exactly (`1s`, `250ms`, `90s`).
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    for (unit, scale) in UNITS {
        let scale = u128::from(scale);
        if nanos.is_multiple_of(scale) {
            return format!("{}{unit}", nanos / scale);
        }
    }
    format!("{nanos}ns")
}

/// Serializes as [`format()`] does (serde `with`).
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// Deserializes a string [`parse`] accepts, or a number of seconds (serde `with`).
///
/// # Errors
///
/// A string without a known unit or a negative or non-finite number.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"1s\", \"100ms\", \"1m\", or a number of seconds")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse(v).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::custom(format!("{v} is negative")))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Duration::try_from_secs_f64(v)
                .map_err(|_| E::custom(format!("{v} is not a valid number of seconds")))
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_decimals() {
        assert_eq!(parse("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse(" 2m ").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse("0.25h").unwrap(), Duration::from_secs(900));
        assert!(parse("10").is_err());
        assert!(parse("1 fortnight").is_err());
        assert!(parse("s").is_err());
        assert!(parse("99999999999999999999d").is_err());
    }

    #[test]
    fn formats_exactly() {
        assert_eq!(format(Duration::from_secs(1)), "1s");
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format(Duration::from_secs(120)), "2m");
        assert_eq!(format(Duration::from_secs(90)), "90s");
        assert_eq!(format(Duration::from_nanos(7)), "7ns");
        for d in [1, 999, 1_000_000, 61_000_000_000] {
            let d = Duration::from_nanos(d);
            assert_eq!(parse(&format(d)).unwrap(), d);
        }
    }
}
