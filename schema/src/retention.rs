//! Retention definitions, their periods and the cells of a retention matrix (the retention view
//! in `views::retention` keeps per-user state and computes the cells).
//!
//! A user joins the cohort of the period of their first start event (`first_time`) or of every
//! period with a start event (`recurring`); they are retained in period N of a cohort when they
//! have a return event in period `cohort + N` ("on"), or in any period from `cohort + N` up to
//! the last one shown ("on or after").

use serde::{Deserialize, Serialize};

use crate::event::Sym;
use crate::funnels::StepDef;
use crate::time::MS_PER_DAY;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    #[default]
    Day,
    /// ISO weeks, from Monday (UTC).
    Week,
    Month,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CohortType {
    /// The period of the user's first start event.
    #[default]
    FirstTime,
    /// Every period in which the user had a start event.
    Recurring,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReturnMode {
    /// Returned in exactly period N.
    #[default]
    On,
    /// Returned in period N or any later period shown.
    OnOrAfter,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionDef {
    pub name: String,
    pub start: StepDef,
    #[serde(rename = "return")]
    pub returning: StepDef,
    #[serde(default)]
    pub period: Period,
    #[serde(default)]
    pub cohort: CohortType,
    #[serde(default)]
    pub mode: ReturnMode,
    /// Periods shown (0 to periods - 1), and cohorts shown.
    #[serde(default = "default_periods")]
    pub periods: u8,
    /// `utm_source`, `device` or `country` of the event that put the user in the cohort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<String>,
}

fn default_periods() -> u8 {
    8
}

pub const MAX_PERIODS: u8 = 32;
pub const MAX_RETENTIONS: usize = 32;

/// One aggregate of a retention matrix; the fact's diff carries the number of users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RetentionStat {
    Size,
    /// Returned in period N (1-based offset from the cohort).
    On(u8),
    OnOrAfter(u8),
}

/// `(breakdown value, cohort period, stat)`.
pub type RetentionCell = (Sym, u32, RetentionStat);

pub const BREAKDOWNS: &str = "utm_source, device, country";

pub type RetentionRegistry = crate::registry::Registry<RetentionDef>;

impl crate::registry::Definition for RetentionDef {
    type Def = RetentionDef;
    const KIND: &'static str = "retention";
    const ROUTE: &'static str = "/api/v1/retention";
    const MAX: usize = MAX_RETENTIONS;
    fn new(def: RetentionDef) -> Result<RetentionDef, String> {
        def.validate()?;
        Ok(def)
    }
    fn def(&self) -> &RetentionDef {
        self
    }
    fn name(&self) -> &str {
        &self.name
    }
}

impl RetentionDef {
    /// Checks what serde cannot, with a message that says what to change.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        crate::registry::check_name(name, "retention")?;
        if self.periods < 2 || self.periods > MAX_PERIODS {
            return Err(format!("retention `{name}`: periods must be 2 to {MAX_PERIODS}, not {}", self.periods));
        }
        self.start.check(&format!("retention `{name}` start"))?;
        self.returning.check(&format!("retention `{name}` return"))?;
        self.parse_breakdown().map(|_| ())
    }

    fn parse_breakdown(&self) -> Result<Option<usize>, String> {
        self.breakdown
            .as_deref()
            .map(|b| {
                ["utm_source", "device", "country"].iter().position(|f| *f == b).ok_or_else(|| {
                    format!("retention `{}`: unknown breakdown `{b}`; use one of: {BREAKDOWNS}", self.name)
                })
            })
            .transpose()
    }

    /// Index into an event's `[utm_source, device, country]` of the breakdown (validated).
    pub fn breakdown_index(&self) -> Option<usize> {
        self.parse_breakdown().ok().flatten()
    }

    pub fn period_of(&self, ts: i64) -> u32 {
        period_of(self.period, ts)
    }

    /// The oldest cohort shown (and kept) when `now` is the latest period.
    pub fn oldest_cohort(&self, now: u32) -> u32 {
        now.saturating_sub(self.periods as u32 - 1)
    }

    /// Changes whenever the definition does: state computed under another is rebuilt.
    pub fn fingerprint(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&serde_json::to_vec(self).expect("serialisable"))
    }
}

/// Period index of an event time (UTC): days since the epoch, ISO weeks (Monday first) since the
/// epoch's week, or months since year 0.
pub fn period_of(period: Period, ts: i64) -> u32 {
    let day = ts.div_euclid(MS_PER_DAY);
    let index = match period {
        Period::Day => day,
        // 1970-01-01 was a Thursday: shift so that weeks start on Monday.
        Period::Week => (day + 3).div_euclid(7),
        Period::Month => {
            use chrono::Datelike;
            let date = chrono::DateTime::from_timestamp_millis(ts).unwrap_or_default().date_naive();
            date.year() as i64 * 12 + date.month0() as i64
        }
    };
    index.clamp(0, u32::MAX as i64) as u32
}

/// The first day of a period, `YYYY-MM-DD`.
pub fn period_label(period: Period, index: u32) -> String {
    let day = match period {
        Period::Day => index as i64,
        Period::Week => index as i64 * 7 - 3,
        Period::Month => {
            let (year, month0) = ((index / 12) as i32, index % 12);
            let date = chrono::NaiveDate::from_ymd_opt(year, month0 + 1, 1).unwrap_or_default();
            return date.format("%Y-%m-%d").to_string();
        }
    };
    let ts = day * MS_PER_DAY;
    chrono::DateTime::from_timestamp_millis(ts).unwrap_or_default().format("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_utc_days_monday_weeks_and_calendar_months() {
        let ts = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis();
        // 2026-11-22 is a Sunday; 2026-11-23 a Monday.
        let sunday = ts("2026-11-22T23:59:59Z");
        let monday = ts("2026-11-23T00:00:00Z");
        assert_eq!(period_of(Period::Day, monday), period_of(Period::Day, sunday) + 1);
        assert_eq!(period_of(Period::Week, monday), period_of(Period::Week, sunday) + 1);
        assert_eq!(period_label(Period::Week, period_of(Period::Week, sunday)), "2026-11-16");
        assert_eq!(period_label(Period::Week, period_of(Period::Week, monday)), "2026-11-23");
        assert_eq!(period_label(Period::Month, period_of(Period::Month, sunday)), "2026-11-01");
        assert_eq!(period_of(Period::Month, ts("2027-01-01T00:00:00Z")), period_of(Period::Month, sunday) + 2);
        assert_eq!(period_label(Period::Day, period_of(Period::Day, sunday)), "2026-11-22");
    }

    #[test]
    fn definitions_are_checked() {
        let err = |j| serde_json::from_value::<RetentionDef>(j).unwrap().validate().unwrap_err();
        assert!(err(serde_json::json!({"name": "r", "periods": 1, "start": {"event": "a"}, "return": {"event": "a"}}))
            .contains("periods must be 2 to 32"));
        assert!(err(
            serde_json::json!({"name": "r", "breakdown": "page", "start": {"event": "a"}, "return": {"event": "a"}})
        )
        .contains("utm_source, device, country"));
    }
}
