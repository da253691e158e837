//! Timestamps: parsing RFC 3339 strings and epoch milliseconds into one instant.
//!
//! An instant is nanoseconds since the Unix epoch in UTC (`i64`), the same
//! resolution as pandas `datetime64[ns]`, so matching agrees with pandas to the
//! nanosecond, including the inclusive 5-minute tolerance.

use chrono::{DateTime, Utc};

/// Nanoseconds since 1970-01-01T00:00:00Z.
pub type Timestamp = i64;

/// Nanoseconds in one millisecond.
pub const NANOS_PER_MILLI: i64 = 1_000_000;
/// Nanoseconds in one second.
pub const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Why a timestamp could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// The string is neither RFC 3339 nor an integer number of epoch milliseconds.
    #[error("not an RFC 3339 timestamp or epoch milliseconds: {0:?}")]
    Unparseable(String),
    /// The instant is outside the representable range (years 1678..2262).
    #[error("timestamp out of range")]
    OutOfRange,
    /// The JSON value is not a string or an integer.
    #[error("timestamp is not a string or an integer")]
    WrongType,
}

/// Converts epoch milliseconds to an instant.
pub fn from_epoch_millis(ms: i64) -> Result<Timestamp, TimestampError> {
    ms.checked_mul(NANOS_PER_MILLI)
        .ok_or(TimestampError::OutOfRange)
}

/// Parses an RFC 3339 string, or a string of decimal digits as epoch milliseconds.
pub fn parse_timestamp_str(s: &str) -> Result<Timestamp, TimestampError> {
    let t = s.trim();
    if !t.is_empty()
        && t.bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-'))
    {
        let ms: i64 = t
            .parse()
            .map_err(|_| TimestampError::Unparseable(s.to_string()))?;
        return from_epoch_millis(ms);
    }
    let dt = DateTime::parse_from_rfc3339(t)
        // Accept the common "2024-01-01 10:00:00Z" space-separated variant too.
        .or_else(|_| DateTime::parse_from_rfc3339(&t.replacen(' ', "T", 1)))
        .map_err(|_| TimestampError::Unparseable(s.to_string()))?;
    dt.with_timezone(&Utc)
        .timestamp_nanos_opt()
        .ok_or(TimestampError::OutOfRange)
}

/// Parses a JSON value: an RFC 3339 string or an integer of epoch milliseconds.
pub fn parse_timestamp_json(v: &serde_json::Value) -> Result<Timestamp, TimestampError> {
    match v {
        serde_json::Value::String(s) => parse_timestamp_str(s),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(ms) => from_epoch_millis(ms),
            None => match n.as_f64() {
                // Integral floats such as 1.7e12 are accepted; fractions are not.
                Some(f) if f.fract() == 0.0 && f.abs() < 9.2e15 => from_epoch_millis(f as i64),
                _ => Err(TimestampError::WrongType),
            },
        },
        _ => Err(TimestampError::WrongType),
    }
}

/// Formats an instant as RFC 3339 UTC with a `Z` suffix and only the fractional
/// digits it needs (`2024-01-01T10:00:00Z`, `2024-01-01T10:00:00.250Z`).
///
/// Written by hand (every matched row has one): the same text chrono's
/// `to_rfc3339_opts(SecondsFormat::AutoSi, true)` gives, which a property
/// test checks over the whole `i64` nanosecond range (years 1677-2262).
pub fn format_rfc3339(ts: Timestamp) -> String {
    let secs = ts.div_euclid(NANOS_PER_SEC);
    // Both in range by construction: 0..1e9 and 0..86_400.
    let nanos = ts.rem_euclid(NANOS_PER_SEC) as u32;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
    // Civil date from days since 1970-01-01 (H. Hinnant's civil_from_days).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    // i64 nanoseconds span the years 1677-2262: always four digits.
    let year = (yoe + era * 400 + i64::from(month <= 2)) as u32;
    let two = |v: u32| [b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8];
    let mut out = [0u8; 30];
    let [y0, y1] = two(year / 100);
    let [y2, y3] = two(year % 100);
    let [mo0, mo1] = two(month);
    let [d0, d1] = two(day);
    let [h0, h1] = two(sod / 3600);
    let [mi0, mi1] = two(sod / 60 % 60);
    let [s0, s1] = two(sod % 60);
    out[..19].copy_from_slice(&[
        y0, y1, y2, y3, b'-', mo0, mo1, b'-', d0, d1, b'T', h0, h1, b':', mi0, mi1, b':', s0, s1,
    ]);
    let digits = match nanos {
        0 => 0,
        n if n % 1_000_000 == 0 => 3,
        n if n % 1_000 == 0 => 6,
        _ => 9,
    };
    let mut len = 19;
    if digits > 0 {
        out[19] = b'.';
        let mut v = nanos / 10u32.pow(9 - digits as u32);
        for i in (20..20 + digits).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        len = 20 + digits;
    }
    out[len] = b'Z';
    // Only ASCII was written.
    String::from_utf8_lossy(&out[..=len]).into_owned()
}

/// Seconds between two instants as a float (`b - a`).
pub fn seconds_between(a: Timestamp, b: Timestamp) -> f64 {
    (b as i128 - a as i128) as f64 / NANOS_PER_SEC as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// chrono's text, which `format_rfc3339` was written to match.
    fn chrono_rfc3339(ts: Timestamp) -> String {
        use chrono::SecondsFormat;
        DateTime::<Utc>::from_timestamp_nanos(ts).to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }

    #[test]
    fn formatting_matches_chrono_on_edges() {
        for ts in [
            i64::MIN,
            i64::MAX,
            0,
            -1,
            1,
            999,
            1_000,
            1_000_000,
            NANOS_PER_SEC - 1,
            -NANOS_PER_SEC,
            951_782_400 * NANOS_PER_SEC, // 2000-02-29
            1_709_251_200_000_000_000,   // 2024-03-01
            4_107_542_400 * NANOS_PER_SEC,
            -2_208_988_800 * NANOS_PER_SEC, // 1900-01-01
        ] {
            assert_eq!(format_rfc3339(ts), chrono_rfc3339(ts), "{ts}");
        }
    }

    proptest::proptest! {
        #[test]
        fn formatting_matches_chrono(ts in proptest::prelude::any::<i64>(), ms in -3_000_000_000_000i64..5_000_000_000_000) {
            proptest::prop_assert_eq!(format_rfc3339(ts), chrono_rfc3339(ts));
            let ms = ms * 1_000_000;
            proptest::prop_assert_eq!(format_rfc3339(ms), chrono_rfc3339(ms));
        }
    }

    #[test]
    fn rfc3339_and_millis_agree() {
        let a = parse_timestamp_str("2024-03-01T10:00:00Z").unwrap();
        let b = parse_timestamp_str("1709287200000").unwrap();
        let c = parse_timestamp_json(&serde_json::json!(1709287200000i64)).unwrap();
        let d = parse_timestamp_str("2024-03-01T15:30:00+05:30").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a, d);
    }

    #[test]
    fn bad_timestamps_are_errors() {
        assert!(matches!(
            parse_timestamp_str("yesterday"),
            Err(TimestampError::Unparseable(s)) if s == "yesterday"
        ));
        assert!(matches!(
            parse_timestamp_str(""),
            Err(TimestampError::Unparseable(_))
        ));
        assert_eq!(
            parse_timestamp_json(&serde_json::json!(true)),
            Err(TimestampError::WrongType)
        );
        assert_eq!(
            parse_timestamp_json(&serde_json::json!(1.5)),
            Err(TimestampError::WrongType)
        );
        assert!(matches!(
            parse_timestamp_str("99999999999999999999"),
            Err(TimestampError::Unparseable(_) | TimestampError::OutOfRange)
        ));
    }

    #[test]
    fn formats_utc_with_needed_fraction() {
        let t = parse_timestamp_str("2024-03-01T10:00:00.250+01:00").unwrap();
        assert_eq!(format_rfc3339(t), "2024-03-01T09:00:00.250Z");
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
