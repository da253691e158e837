//! When Gemini's per-day quotas reset: midnight US Pacific time.
//!
//! Google documents that requests-per-day quotas reset at midnight Pacific
//! time. To avoid a time-zone database, the rule is computed directly: the
//! offset is UTC−07:00 from the second Sunday of March 02:00 local to the first
//! Sunday of November 02:00 local (US daylight saving time since 2007), and
//! UTC−08:00 otherwise. Midnight never falls in a transition hour, so the
//! local midnight is always unambiguous.

use chrono::{
    DateTime, Datelike, Days, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Utc, Weekday,
};
use std::time::Duration;

/// The `n`-th (1-based) `weekday` of `month` in `year`.
fn nth_weekday(year: i32, month: u32, weekday: Weekday, n: u64) -> Option<NaiveDate> {
    let first = NaiveDate::from_ymd_opt(year, month, 1)?;
    let ahead = (7 + i64::from(weekday.num_days_from_monday())
        - i64::from(first.weekday().num_days_from_monday()))
        % 7;
    first.checked_add_days(Days::new(ahead as u64 + 7 * (n - 1)))
}

/// UTC offset of US Pacific time at instant `t`, in hours (−7 or −8).
pub(super) fn pacific_offset_hours(t: DateTime<Utc>) -> i64 {
    let year = t.year();
    let (Some(start), Some(end)) = (
        nth_weekday(year, 3, Weekday::Sun, 2),
        nth_weekday(year, 11, Weekday::Sun, 1),
    ) else {
        return -8;
    };
    // 02:00 PST = 10:00 UTC; 02:00 PDT = 09:00 UTC.
    let start = start.and_time(NaiveTime::MIN) + TimeDelta::hours(10);
    let end = end.and_time(NaiveTime::MIN) + TimeDelta::hours(9);
    let naive = t.naive_utc();
    if naive >= start && naive < end {
        -7
    } else {
        -8
    }
}

/// The next midnight in US Pacific time strictly after `now`.
pub fn next_pacific_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    let local = now.naive_utc() + TimeDelta::hours(pacific_offset_hours(now));
    let next_day = local
        .date()
        .succ_opt()
        .unwrap_or(local.date())
        .and_time(NaiveTime::MIN);
    to_utc_from_pacific(next_day)
}

/// The UTC instant of an (unambiguous) Pacific local time.
fn to_utc_from_pacific(local: NaiveDateTime) -> DateTime<Utc> {
    let guess = (local + TimeDelta::hours(8)).and_utc();
    let offset = pacific_offset_hours(guess);
    (local - TimeDelta::hours(offset)).and_utc()
}

/// Time from `now` until the per-day quota resets.
pub fn until_daily_reset(now: DateTime<Utc>) -> Duration {
    (next_pacific_midnight(now) - now)
        .to_std()
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn known_instants() {
        // Winter: PST.
        assert_eq!(
            next_pacific_midnight(utc("2026-01-15T12:00:00Z")),
            utc("2026-01-16T08:00:00Z")
        );
        // Summer: PDT.
        assert_eq!(
            next_pacific_midnight(utc("2026-07-01T06:59:59Z")),
            utc("2026-07-01T07:00:00Z")
        );
        // DST starts 2026-03-08 at 10:00 UTC; the next midnight (Mar 9) is PDT.
        assert_eq!(
            next_pacific_midnight(utc("2026-03-08T09:00:00Z")),
            utc("2026-03-09T07:00:00Z")
        );
        // DST ends 2026-11-01 at 09:00 UTC; midnight of Nov 1 was still PDT.
        assert_eq!(
            next_pacific_midnight(utc("2026-10-31T20:00:00Z")),
            utc("2026-11-01T07:00:00Z")
        );
        assert_eq!(
            next_pacific_midnight(utc("2026-11-01T07:00:00Z")),
            utc("2026-11-02T08:00:00Z")
        );
        assert_eq!(
            until_daily_reset(utc("2026-01-16T07:59:30Z")),
            Duration::from_secs(30)
        );
    }

    proptest! {
        #[test]
        fn next_midnight_is_future_local_midnight_within_a_day(secs in 0i64..4_102_444_800) {
            let now = DateTime::<Utc>::from_timestamp(secs, 0).unwrap();
            let m = next_pacific_midnight(now);
            prop_assert!(m > now);
            prop_assert!(m - now <= TimeDelta::hours(25));
            let local = m.naive_utc() + TimeDelta::hours(pacific_offset_hours(m));
            prop_assert_eq!(local.time(), NaiveTime::MIN);
        }
    }
}
