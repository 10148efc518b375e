//! Retention cohorts, kept per user and period (never as raw events).
//!
//! A user joins the cohort of the period of their first start event (`first_time`) or of every
//! period with a start event (`recurring`); they are retained in period N of a cohort when they
//! have a return event in period `cohort + N` ("on"), or in any period from `cohort + N` up to
//! the last one shown ("on or after"). Per user and definition, the state is the earliest start
//! (first time) or the earliest start of each recent period (recurring), plus the recent periods
//! with a return event: a late event changes these, and the user's cells are recomputed and
//! diffed once per epoch.

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::event::{Sym, NONE};
use crate::funnels::{LogEvent, Matcher, PageTexts, StepDef, MS_PER_DAY};

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

/// A validated retention definition.
#[derive(Debug)]
pub struct Retention {
    pub def: RetentionDef,
    start: Matcher,
    returning: Matcher,
    /// Index into `LogEvent::source` of the breakdown.
    breakdown: Option<usize>,
    pub fingerprint: u64,
}

pub type RetentionRegistry = crate::registry::Registry<Retention>;

impl crate::registry::Definition for Retention {
    type Def = RetentionDef;
    const KIND: &'static str = "retention";
    const ROUTE: &'static str = "/api/v1/retention";
    const MAX: usize = MAX_RETENTIONS;
    fn new(def: RetentionDef) -> Result<Retention, String> {
        Retention::new(def)
    }
    fn def(&self) -> &RetentionDef {
        &self.def
    }
    fn name(&self) -> &str {
        &self.def.name
    }
}

pub const BREAKDOWNS: &str = "utm_source, device, country";

impl Retention {
    pub fn new(def: RetentionDef) -> Result<Retention, String> {
        let name = &def.name;
        crate::registry::check_name(name, "retention")?;
        if def.periods < 2 || def.periods > MAX_PERIODS {
            return Err(format!("retention `{name}`: periods must be 2 to {MAX_PERIODS}, not {}", def.periods));
        }
        let start = Matcher::compile(&def.start, &format!("retention `{name}` start"))?;
        let returning = Matcher::compile(&def.returning, &format!("retention `{name}` return"))?;
        let breakdown = def
            .breakdown
            .as_deref()
            .map(|b| {
                ["utm_source", "device", "country"]
                    .iter()
                    .position(|f| *f == b)
                    .ok_or_else(|| format!("retention `{name}`: unknown breakdown `{b}`; use one of: {BREAKDOWNS}"))
            })
            .transpose()?;
        let fingerprint = xxhash_rust::xxh3::xxh3_64(&serde_json::to_vec(&def).expect("serialisable"));
        Ok(Retention { def, start, returning, breakdown, fingerprint })
    }

    pub fn period_of(&self, ts: i64) -> u32 {
        period_of(self.def.period, ts)
    }

    /// The oldest cohort shown (and kept) when `now` is the latest period.
    pub fn oldest_cohort(&self, now: u32) -> u32 {
        now.saturating_sub(self.def.periods as u32 - 1)
    }

    /// Whether the event is a start and whether it is a return (one match of each per event).
    pub fn roles(&self, e: &LogEvent, pages: &PageTexts) -> (bool, bool) {
        (self.start.matches(e, pages), self.returning.matches(e, pages))
    }

    /// Adds an event to a user's state.
    pub fn add(&self, state: &mut UserRetention, e: &LogEvent, pages: &PageTexts) {
        self.apply(state, e, self.roles(e, pages));
    }

    /// Adds an event whose [`Self::roles`] are known.
    pub fn apply(&self, state: &mut UserRetention, e: &LogEvent, (start, returning): (bool, bool)) {
        let period = self.period_of(e.ts);
        if start {
            let key = self.breakdown.map_or(NONE, |i| e.source[i]);
            match self.def.cohort {
                CohortType::FirstTime => {
                    if state.first.is_none_or(|f| (e.ts, key) < f) {
                        state.first = Some((e.ts, key));
                    }
                }
                CohortType::Recurring => match state.starts.binary_search_by_key(&period, |s| s.0) {
                    Ok(i) if (e.ts, key) < (state.starts[i].1, state.starts[i].2) => {
                        state.starts[i] = (period, e.ts, key)
                    }
                    Ok(_) => {}
                    Err(i) => state.starts.insert(i, (period, e.ts, key)),
                },
            }
        }
        if returning {
            if let Err(i) = state.returns.binary_search(&period) {
                state.returns.insert(i, period);
            }
        }
    }

    /// The user's cells for cohorts from `oldest` on (older ones are final and not recomputed).
    pub fn cells(&self, state: &UserRetention, oldest: u32, out: &mut impl FnMut(RetentionCell, i64), diff: i64) {
        let n = self.def.periods as u32;
        let mut cohort = |c: u32, key: Sym| {
            if c < oldest {
                return;
            }
            out((key, c, RetentionStat::Size), diff);
            let last = state.returns.iter().rev().find(|r| **r < c + n).copied();
            for k in 1..n {
                if state.returns.binary_search(&(c + k)).is_ok() {
                    out((key, c, RetentionStat::On(k as u8)), diff);
                }
                if last.is_some_and(|l| l >= c + k) {
                    out((key, c, RetentionStat::OnOrAfter(k as u8)), diff);
                }
            }
        };
        match self.def.cohort {
            CohortType::FirstTime => {
                if let Some((ts, key)) = state.first {
                    cohort(self.period_of(ts), key)
                }
            }
            CohortType::Recurring => state.starts.iter().for_each(|(c, _, key)| cohort(*c, *key)),
        }
    }
}

/// What retention keeps of one user for one definition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRetention {
    /// First time: the earliest start event `(ts, breakdown value)`, kept for good (it decides
    /// the user's cohort for ever).
    pub first: Option<(i64, Sym)>,
    /// Recurring: per recent period, its earliest start event `(period, ts, breakdown value)`.
    pub starts: SmallVec<[(u32, i64, Sym); 2]>,
    /// Recent periods with a return event, sorted.
    pub returns: SmallVec<[u32; 4]>,
}

impl UserRetention {
    /// Forgets periods before `oldest`: no cell of a cohort from `oldest` on depends on them.
    pub fn prune(&mut self, oldest: u32) {
        self.starts.retain(|s| s.0 >= oldest);
        self.returns.retain(|r| *r >= oldest);
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none() && self.starts.is_empty() && self.returns.is_empty()
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

    fn retention(json: serde_json::Value) -> Retention {
        Retention::new(serde_json::from_value(json).unwrap()).unwrap()
    }

    fn event(day: i64, name: &str) -> LogEvent {
        LogEvent {
            ts: day * MS_PER_DAY + 1,
            name: crate::event::sym(name),
            page: NONE,
            source: [NONE; 3],
            props: None,
            node: NONE,
        }
    }

    fn cells(r: &Retention, events: &[LogEvent]) -> Vec<(u32, RetentionStat)> {
        let mut state = UserRetention::default();
        events.iter().for_each(|e| r.add(&mut state, e, &PageTexts::default()));
        let mut out = Vec::new();
        r.cells(&state, 0, &mut |(_, c, s), _| out.push((c, s)), 1);
        out.sort();
        out
    }

    #[test]
    fn cells_count_returns_on_and_on_or_after_each_period() {
        use RetentionStat::*;
        let first = retention(serde_json::json!({"name": "r", "periods": 4,
            "start": {"event": "signup"}, "return": {"event": "click"}}));
        let got = cells(&first, &[event(12, "click"), event(10, "signup"), event(11, "signup"), event(20, "click")]);
        // Cohort 10; returned on day 2 only within the 4 periods shown (day 20 is beyond them).
        assert_eq!(got, vec![(10, Size), (10, On(2)), (10, OnOrAfter(1)), (10, OnOrAfter(2))]);
        let recurring = retention(serde_json::json!({"name": "r", "periods": 4, "cohort": "recurring",
            "start": {"event": "signup"}, "return": {"event": "click"}}));
        let got = cells(&recurring, &[event(12, "click"), event(10, "signup"), event(11, "signup")]);
        assert_eq!(
            got,
            vec![
                (10, Size),
                (10, On(2)),
                (10, OnOrAfter(1)),
                (10, OnOrAfter(2)),
                (11, Size),
                (11, On(1)),
                (11, OnOrAfter(1))
            ]
        );
    }

    #[test]
    fn definitions_are_checked() {
        let err = |j| Retention::new(serde_json::from_value(j).unwrap()).unwrap_err();
        assert!(err(serde_json::json!({"name": "r", "periods": 1, "start": {"event": "a"}, "return": {"event": "a"}}))
            .contains("periods must be 2 to 32"));
        assert!(err(
            serde_json::json!({"name": "r", "breakdown": "page", "start": {"event": "a"}, "return": {"event": "a"}})
        )
        .contains("utm_source, device, country"));
    }
}
