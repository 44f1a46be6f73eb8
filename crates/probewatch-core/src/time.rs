//! Timestamps as probes and API clients write them, and the wall clock in the units the
//! store keeps.

/// Latest accepted time, 9999-12-31T23:59:59.999Z, in ms.
const MAX_MS: i64 = 253_402_300_799_999;

/// Reads a timestamp as RFC 3339 with a UTC offset (`2026-11-23T18:00:00+08:00`) or as Unix
/// seconds with an optional fraction (`1763892000.5`); returns milliseconds since the epoch.
/// Only the years 1970 to 9999 are accepted.
pub fn parse_time_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let ms = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let seconds: f64 = text.parse().ok()?;
        let ms = (seconds * 1000.0).round();
        if !(0.0..=MAX_MS as f64).contains(&ms) {
            return None;
        }
        ms as i64
    } else {
        let ts: jiff::Timestamp = text.parse().ok()?;
        ts.as_millisecond()
    };
    (0..=MAX_MS).contains(&ms).then_some(ms)
}

/// Wall-clock milliseconds since the epoch (0 before 1970, saturating far after).
pub fn now_ms() -> i64 {
    now_us() / 1000
}

/// Wall-clock microseconds since the epoch (0 before 1970, saturating far after).
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_and_unix_seconds() {
        assert_eq!(parse_time_ms("1700000000.5"), Some(1_700_000_000_500));
        assert_eq!(
            parse_time_ms("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_time_ms("2023-11-15T06:13:20+08:00"),
            Some(1_700_000_000_000)
        );
        assert_eq!(parse_time_ms("2023-11-14T22:13:20"), None);
        assert_eq!(parse_time_ms("-5"), None);
        assert_eq!(parse_time_ms("yesterday"), None);
    }
}
