//! The retention view: per user and definition, what the cohort cells need (never raw events).
//!
//! Per user and definition, the state is the earliest start (first time) or the earliest start
//! of each recent period (recurring), plus the recent periods with a return event: a late event
//! changes these, and the user's cells are recomputed and diffed once per epoch. Definitions and
//! their periods: `schema::retention`.

pub mod cohorts;

use schema::event::{Sym, NONE};
use schema::retention::{period_of, CohortType, RetentionCell, RetentionDef, RetentionStat};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::funnels::Matcher;
use crate::userlog::{LogEvent, PageTexts};

/// A retention definition compiled for evaluation.
#[derive(Debug)]
pub struct Retention {
    pub def: RetentionDef,
    start: Matcher,
    returning: Matcher,
    /// Index into `LogEvent::source` of the breakdown.
    breakdown: Option<usize>,
    pub fingerprint: u64,
}

impl Retention {
    pub fn new(def: RetentionDef) -> Result<Retention, String> {
        def.validate()?;
        let name = &def.name;
        let start = Matcher::compile(&def.start, &format!("retention `{name}` start"))?;
        let returning = Matcher::compile(&def.returning, &format!("retention `{name}` return"))?;
        let (breakdown, fingerprint) = (def.breakdown_index(), def.fingerprint());
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
            // The earliest start in the engine's order decides (and gives the breakdown value).
            let at = (e.ts, e.ord);
            match self.def.cohort {
                CohortType::FirstTime => {
                    if state.first.is_none_or(|(ts, ord, _)| at < (ts, ord)) {
                        state.first = Some((e.ts, e.ord, key));
                    }
                }
                CohortType::Recurring => match state.starts.binary_search_by_key(&period, |s| s.0) {
                    Ok(i) if at < (state.starts[i].1, state.starts[i].2) => {
                        state.starts[i] = (period, e.ts, e.ord, key)
                    }
                    Ok(_) => {}
                    Err(i) => state.starts.insert(i, (period, e.ts, e.ord, key)),
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
                if let Some((ts, _, key)) = state.first {
                    cohort(self.period_of(ts), key)
                }
            }
            CohortType::Recurring => state.starts.iter().for_each(|(c, _, _, key)| cohort(*c, *key)),
        }
    }
}

/// What retention keeps of one user for one definition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRetention {
    /// First time: the earliest start event `(ts, ord, breakdown value)`, kept for good (it
    /// decides the user's cohort for ever).
    pub first: Option<(i64, u64, Sym)>,
    /// Recurring: per recent period, its earliest start event `(period, ts, ord, breakdown value)`.
    pub starts: SmallVec<[(u32, i64, u64, Sym); 2]>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use schema::time::MS_PER_DAY;

    fn retention(json: serde_json::Value) -> Retention {
        Retention::new(serde_json::from_value(json).unwrap()).unwrap()
    }

    fn event(day: i64, name: &str) -> LogEvent {
        LogEvent {
            ts: day * MS_PER_DAY + 1,
            ord: 0,
            name: schema::event::sym(name),
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
}
