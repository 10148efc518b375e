//! Retention state of one input partition: per definition, what each user needs (see
//! [`crate::retention`]), and the cell changes it reports once per epoch.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::UserId;
use crate::funnels::LogEvent;
use crate::ids::IdMap;
use crate::retention::{period_of, Retention, RetentionCell, UserRetention};
use crate::userlog::UserLogs;

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
    touched: crate::ids::IdSet,
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
            if d.fingerprint != r.fingerprint || !r.relevant(e, pages) {
                continue;
            }
            let state = d.users.entry(user).or_default();
            if d.touched.insert(user) {
                d.dirty.push((user, state.clone()));
            }
            r.add(state, e, pages);
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
        self.definitions.resize_with(list.len().max(self.definitions.len()), Definition::default);
        for (i, (r, d)) in list.iter().zip(self.definitions.iter_mut()).enumerate() {
            let index = i as u32;
            let oldest = watermark.map_or(0, |w| r.oldest_cohort(period_of(r.def.period, w)));
            let mut emit = |state: &UserRetention, diff: i64| {
                r.cells(state, oldest, &mut |cell, n| out.cell(index, cell, n), diff);
            };
            if d.fingerprint != r.fingerprint {
                // New here, or redefined (the ledger retracts what the old definition reported).
                *d = Definition { fingerprint: r.fingerprint, ..Definition::default() };
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
