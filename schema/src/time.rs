//! Event-time units: minutes, hours and days since the Unix epoch (UTC), and their text.

use chrono::{DateTime, SecondsFormat, Utc};

/// Whole minutes since the Unix epoch, in event time.
pub type Minute = u32;
/// Whole hours since the Unix epoch, in event time.
pub type Hour = u32;

pub const MS_PER_MINUTE: i64 = 60_000;
pub const MS_PER_HOUR: i64 = 3_600_000;
pub const MS_PER_DAY: i64 = 86_400_000;

/// The event-time minute of a millisecond timestamp.
#[inline]
pub fn minute_of(ts_ms: i64) -> Minute {
    ts_ms.div_euclid(MS_PER_MINUTE).clamp(0, u32::MAX as i64) as Minute
}

/// Milliseconds at the start of a minute.
#[inline]
pub fn minute_start_ms(minute: Minute) -> i64 {
    minute as i64 * MS_PER_MINUTE
}

pub fn hour_of(ts_ms: i64) -> Hour {
    ts_ms.div_euclid(MS_PER_HOUR).clamp(0, u32::MAX as i64) as Hour
}

/// RFC 3339 with milliseconds, UTC (`2026-11-20T00:00:00.000Z`).
pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// The wall clock, epoch milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
