//! Retention state of one input partition: per definition, what each user needs (see
//! [`crate::retention`]), and the cell changes it reports once per epoch.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use schema::event::UserId;
use schema::ids::IdMap;
use schema::retention::{period_of, RetentionCell};

use crate::retention::{Retention, UserRetention};
use crate::userlog::{LogEvent, UserLogs};

/// Receives retention cell changes: `(definition index, cell, diff)`.
pub trait CohortSink {
    fn cell(&mut self, retention: u32, cell: RetentionCell, diff: i64);
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Definition {
    /// Fingerprint of the definition the states were computed under.
    fingerprint: u64,
    users: IdMap<UserRetention>,
    /// Users touched since the last drain, with their state as last reported.
    dirty: Vec<(UserId, UserRetention)>,
    #[serde(skip)]
    touched: schema::ids::IdSet,
    /// The oldest cohort kept at the last pruning pass.
    pruned_at: u32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Cohorts {
    definitions: Vec<Definition>,
}

impl Cohorts {
    /// Adds an admitted event (not yet in `logs`) to the state of every definition it concerns.
    /// A definition not yet computed here starts now if the logs are empty (from the first event
    /// on: nothing older exists), and is otherwise built from the logs at the next drain.
    pub fn add(&mut self, list: &[Arc<Retention>], user: UserId, e: &LogEvent, logs: &UserLogs) {
        let pages = logs.pages();
        if logs.users() == 0 {
            self.definitions.resize_with(list.len().max(self.definitions.len()), Definition::default);
            for (r, d) in list.iter().zip(self.definitions.iter_mut()) {
                if d.fingerprint != r.fingerprint {
                    *d = Definition { fingerprint: r.fingerprint, ..Definition::default() };
                }
            }
        }
        for (r, d) in list.iter().zip(self.definitions.iter_mut()) {
            if d.fingerprint != r.fingerprint {
                continue;
            }
            let roles = r.roles(e, pages);
            if roles == (false, false) {
                continue;
            }
            let state = d.users.entry(user).or_default();
            if d.touched.insert(user) {
                d.dirty.push((user, state.clone()));
            }
            r.apply(state, e, roles);
        }
    }

    /// Reports this epoch's changes, computes definitions that are new here (from the events the
    /// logs still hold), and forgets periods that the watermark has made final.
    pub fn drain(
        &mut self,
        list: &[Arc<Retention>],
        logs: &UserLogs,
        watermark: Option<i64>,
        out: &mut impl CohortSink,
    ) {
        // A definition no longer defined (removed from config across a restart): the ledger
        // retracts its cells, its state goes.
        self.definitions.resize_with(list.len(), Definition::default);
        for (i, (r, d)) in list.iter().zip(self.definitions.iter_mut()).enumerate() {
            let index = i as u32;
            let new_here = d.fingerprint != r.fingerprint;
            if new_here {
                // New here, or redefined (the ledger retracts what the old definition reported).
                *d = Definition { fingerprint: r.fingerprint, ..Definition::default() };
            }
            // This epoch's events were admitted at or after the watermark of the last drain, so
            // they change cohorts from the last pruning point on (not from the one the watermark
            // has reached since: a batch may cross a period boundary).
            let kept_from = d.pruned_at;
            let mut emit = |state: &UserRetention, diff: i64| {
                r.cells(state, kept_from, &mut |cell, n| out.cell(index, cell, n), diff);
            };
            if new_here {
                logs.for_each_user(|user, events| {
                    let mut state = UserRetention::default();
                    events.for_each(|e| r.add(&mut state, e, logs.pages()));
                    if !state.is_empty() {
                        emit(&state, 1);
                        d.users.insert(user, state);
                    }
                });
            }
            for (user, before) in d.dirty.drain(..) {
                let now = d.users.get(&user).expect("dirty users are kept");
                if *now != before {
                    emit(&before, -1);
                    emit(now, 1);
                }
            }
            d.touched.clear();
            let oldest = watermark.map_or(0, |w| r.oldest_cohort(period_of(r.def.period, w)));
            if oldest > d.pruned_at {
                d.pruned_at = oldest;
                d.users.retain(|_, state| {
                    state.prune(oldest);
                    !state.is_empty()
                });
            }
        }
    }

    /// Users with retention state, over all definitions.
    pub fn users(&self) -> usize {
        self.definitions.iter().map(|d| d.users.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::event::{sym, NONE};
    use schema::retention::RetentionStat;
    use schema::time::MS_PER_DAY;

    #[derive(Default)]
    struct Cells(std::collections::BTreeMap<(u32, RetentionStat), i64>);

    impl CohortSink for Cells {
        fn cell(&mut self, _: u32, (_, cohort, stat): RetentionCell, diff: i64) {
            *self.0.entry((cohort, stat)).or_default() += diff;
            self.0.retain(|_, n| *n != 0);
        }
    }

    fn event(ts: i64, name: &str) -> LogEvent {
        LogEvent { ts, ord: 0, name: sym(name), page: NONE, source: [NONE; 3], props: None, node: NONE }
    }

    #[test]
    fn a_batch_that_crosses_a_period_boundary_still_reports_the_oldest_cohort() {
        let def = serde_json::json!({"name": "r", "periods": 2, "start": {"event": "a"}, "return": {"event": "b"}});
        let list = vec![Arc::new(Retention::new(serde_json::from_value(def).unwrap()).unwrap())];
        let (mut cohorts, logs, mut out) = (Cohorts::default(), UserLogs::default(), Cells::default());
        let day = |d: i64| d * MS_PER_DAY;
        cohorts.add(&list, 1, &event(day(10) + 1000, "a"), &logs);
        cohorts.drain(&list, &logs, Some(day(10) + 1000), &mut out);
        // One batch: a return late on day 11, then an event that moves the watermark to day 12
        // (cohort 10 is then final, but this batch's return belongs to it).
        cohorts.add(&list, 1, &event(day(12) - 60_000, "b"), &logs);
        cohorts.add(&list, 2, &event(day(12) + 300_000, "x"), &logs);
        cohorts.drain(&list, &logs, Some(day(12) + 5_000), &mut out);
        let want =
            [((10, RetentionStat::Size), 1), ((10, RetentionStat::On(1)), 1), ((10, RetentionStat::OnOrAfter(1)), 1)];
        assert_eq!(out.0, want.into_iter().collect());
        assert_eq!(cohorts.users(), 1, "state of cohort 10 is forgotten, the user's first start is not");
    }
}
