//! Number, duration and clock formatting shared by the state (dialog texts) and the views.

use serde_json::Value;

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The local UTC offset in seconds, asked of `date +%z` once at startup (which honours `TZ`).
/// `None` if that fails; clocks are then shown in UTC.
pub fn local_utc_offset_secs() -> Option<i32> {
    let out = std::process::Command::new("date")
        .arg("+%z")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_utc_offset(String::from_utf8_lossy(&out.stdout).trim())
}

/// Parses `+0200` / `-0530` into seconds east of UTC.
///
/// ```
/// assert_eq!(palisade_top::format::parse_utc_offset("+0200"), Some(7200));
/// assert_eq!(palisade_top::format::parse_utc_offset("-0530"), Some(-19800));
/// assert_eq!(palisade_top::format::parse_utc_offset("CET"), None);
/// ```
pub fn parse_utc_offset(s: &str) -> Option<i32> {
    let (sign, digits) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = digits[2..].parse().ok()?;
    Some(sign * (hours * 3600 + minutes * 60))
}

/// `HH:MM:SS` of a wall-clock time (ms since the epoch) at the given UTC offset; the offset is
/// appended as ` UTC` when unknown.
///
/// ```
/// use palisade_top::format::clock;
/// assert_eq!(clock(3_723_000, Some(0)), "01:02:03");
/// assert_eq!(clock(3_723_000, Some(3600)), "02:02:03");
/// assert_eq!(clock(3_723_000, None), "01:02:03 UTC");
/// ```
pub fn clock(at_ms: u64, utc_offset_secs: Option<i32>) -> String {
    let secs = i64::try_from(at_ms / 1000).unwrap_or(0) + i64::from(utc_offset_secs.unwrap_or(0));
    let day = secs.rem_euclid(86_400);
    let s = format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60);
    if utc_offset_secs.is_some() {
        s
    } else {
        s + " UTC"
    }
}

/// A compact duration: `42s`, `3m07s`, `2h03m`, `4d02h`.
///
/// ```
/// use palisade_top::format::duration_secs;
/// assert_eq!(duration_secs(42), "42s");
/// assert_eq!(duration_secs(187), "3m07s");
/// assert_eq!(duration_secs(7380), "2h03m");
/// assert_eq!(duration_secs(352_800), "4d02h");
/// ```
pub fn duration_secs(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86_400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// Milliseconds with sensible precision: `0.42ms`, `12.3ms`, `250ms`, `1.25s`.
///
/// ```
/// use palisade_top::format::millis;
/// assert_eq!(millis(0.4249), "0.42ms");
/// assert_eq!(millis(12.34), "12.3ms");
/// assert_eq!(millis(250.0), "250ms");
/// assert_eq!(millis(1250.0), "1.25s");
/// ```
pub fn millis(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        "-".into()
    } else if ms < 10.0 {
        format!("{ms:.2}ms")
    } else if ms < 100.0 {
        format!("{ms:.1}ms")
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

/// A per-second rate: `0.0`, `12.5`, `1234`, `12.3k`, `4.56M`.
///
/// ```
/// use palisade_top::format::rate;
/// assert_eq!(rate(12.54), "12.5");
/// assert_eq!(rate(1234.4), "1234");
/// assert_eq!(rate(12_345.0), "12.3k");
/// ```
pub fn rate(r: f64) -> String {
    if !r.is_finite() || r < 0.0 {
        "-".into()
    } else if r < 1000.0 {
        format!("{r:.1}")
    } else if r < 10_000.0 {
        format!("{r:.0}")
    } else if r < 10_000_000.0 {
        format!("{:.1}k", r / 1000.0)
    } else {
        format!("{:.2}M", r / 1_000_000.0)
    }
}

/// Bytes in binary units: `512B`, `12.0K`, `34.5M`, `1.20G`.
///
/// ```
/// assert_eq!(palisade_top::format::bytes(36_175_872), "34.5M");
/// ```
pub fn bytes(b: u64) -> String {
    const K: f64 = 1024.0;
    #[allow(clippy::cast_precision_loss, reason = "display only")]
    let f = b as f64;
    if f < K {
        format!("{b}B")
    } else if f < K * K {
        format!("{:.1}K", f / K)
    } else if f < K * K * K {
        format!("{:.1}M", f / (K * K))
    } else {
        format!("{:.2}G", f / (K * K * K))
    }
}

/// A large count: `999`, `12.3k`, `4.56M`.
pub fn count(n: u64) -> String {
    #[allow(clippy::cast_precision_loss, reason = "display only")]
    let f = n as f64;
    if n < 10_000 {
        n.to_string()
    } else if n < 10_000_000 {
        format!("{:.1}k", f / 1000.0)
    } else {
        format!("{:.2}M", f / 1_000_000.0)
    }
}

/// A ratio in `0..=1` as a percentage: `93.2%`.
pub fn percent(ratio: f64) -> String {
    if ratio.is_finite() {
        format!("{:.1}%", ratio * 100.0)
    } else {
        "-".into()
    }
}

/// A JSON value as an operator reads it: strings without quotes, numbers as written, objects
/// and arrays as compact JSON.
///
/// ```
/// use serde_json::json;
/// use palisade_top::format::value;
/// assert_eq!(value(&json!("shadow")), "shadow");
/// assert_eq!(value(&json!(2.5)), "2.5");
/// assert_eq!(value(&json!({"a": 1})), r#"{"a":1}"#);
/// ```
pub fn value(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// Truncates to at most `max` characters, ending with `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else if max == 0 {
        String::new()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_wraps_at_midnight_with_negative_offsets() {
        assert_eq!(clock(0, Some(-3600)), "23:00:00");
        assert_eq!(clock(86_399_999, Some(0)), "23:59:59");
    }

    #[test]
    fn formats_handle_odd_inputs() {
        assert_eq!(millis(f64::NAN), "-");
        assert_eq!(rate(-1.0), "-");
        assert_eq!(bytes(100), "100B");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.00G");
        assert_eq!(count(12_345), "12.3k");
        assert_eq!(percent(0.5), "50.0%");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(value(&Value::Null), "-");
    }
}
