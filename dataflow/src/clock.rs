//! Event time of one input partition: its watermark, late-event and duplicate decisions.
//!
//! Decisions depend only on the partition's own order of arrival, so replaying a partition gives
//! the same accepted set every time, on any number of workers.

use std::collections::BTreeMap;

use schema::event::{minute_of, Minute};
use schema::ids::IdMap;
use serde::{Deserialize, Serialize};

use crate::reject::{Reason, Rejection};

/// How far ahead of the wall clock an event may move the watermark: one client with a clock a
/// day fast must not make everyone else's events late.
pub const MAX_HEAD_SKEW_MS: i64 = views::users::MAX_HEAD_SKEW_MS;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PartitionClock {
    /// Highest admitted event time (capped at wall clock + skew), `None` before the first event.
    head: Option<i64>,
    /// Event ids seen, with the minute of their event time; ids whose minute falls behind the
    /// watermark are forgotten (an event that old is rejected as late before its id is looked at),
    /// so the de-duplication window is the allowed lateness and memory stays bounded.
    seen_ids: IdMap<Minute>,
    ids_by_minute: BTreeMap<Minute, Vec<u64>>,
}

impl PartitionClock {
    pub fn head(&self) -> Option<i64> {
        self.head
    }

    /// The same event time without the de-duplication state: cheap to copy for reporting.
    pub fn time_only(&self) -> PartitionClock {
        PartitionClock { head: self.head, ..PartitionClock::default() }
    }

    pub fn watermark(&self, lateness_ms: i64) -> Option<i64> {
        self.head.map(|h| h - lateness_ms)
    }

    /// Decides whether an event is counted; admitting it may advance the watermark.
    pub fn admit(&mut self, ts: i64, event_id: Option<u64>, lateness_ms: i64, now_ms: i64) -> Result<(), Rejection> {
        if let Some(wm) = self.watermark(lateness_ms) {
            if ts < wm {
                return Err(Rejection::new(
                    Reason::TooLate,
                    format!(
                        "ts {} is {} s behind the watermark {}; raise engine.lateness_seconds to accept it",
                        schema::time::rfc3339(ts),
                        (wm - ts + 999) / 1000,
                        schema::time::rfc3339(wm)
                    ),
                ));
            }
        }
        if let Some(id) = event_id {
            if self.seen_ids.contains_key(&id) {
                return Err(Rejection::new(Reason::Duplicate, "this event_id was already counted"));
            }
            self.seen_ids.insert(id, minute_of(ts));
            self.ids_by_minute.entry(minute_of(ts)).or_default().push(id);
        }
        let capped = ts.min(now_ms.saturating_add(MAX_HEAD_SKEW_MS));
        if self.head.is_none_or(|h| capped > h) {
            let old = self.watermark(lateness_ms).map(minute_of);
            self.head = Some(capped);
            let new = minute_of(capped - lateness_ms);
            if old != Some(new) {
                let kept = self.ids_by_minute.split_off(&new);
                for id in std::mem::replace(&mut self.ids_by_minute, kept).into_values().flatten() {
                    self.seen_ids.remove(&id);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: i64 = 300_000;
    const NOW: i64 = 2_000_000_000_000;

    #[test]
    fn late_within_lateness_is_admitted_beyond_is_rejected() {
        let mut c = PartitionClock::default();
        let t0 = 1_700_000_000_000;
        c.admit(t0, None, L, NOW).unwrap();
        c.admit(t0 - L, None, L, NOW).unwrap();
        assert_eq!(c.admit(t0 - L - 1, None, L, NOW).unwrap_err().reason, Reason::TooLate);
        assert_eq!(c.head(), Some(t0));
    }

    #[test]
    fn duplicates_are_rejected_once_seen() {
        let mut c = PartitionClock::default();
        let t0 = 1_700_000_000_000;
        c.admit(t0, Some(7), L, NOW).unwrap();
        assert_eq!(c.admit(t0, Some(7), L, NOW).unwrap_err().reason, Reason::Duplicate);
        c.admit(t0, Some(8), L, NOW).unwrap();
    }

    #[test]
    fn future_events_do_not_drag_the_watermark_past_wall_clock() {
        let mut c = PartitionClock::default();
        c.admit(NOW + 3_600_000, None, L, NOW).unwrap();
        assert_eq!(c.head(), Some(NOW + MAX_HEAD_SKEW_MS));
        c.admit(NOW - 1000, None, L, NOW).unwrap();
    }
}
