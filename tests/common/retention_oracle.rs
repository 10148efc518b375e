//! From-scratch retention for the reference: every user's start and return events as strings, the
//! matrix counted cohort by cohort with no per-period state, pruning or cells.

use std::collections::{BTreeMap, BTreeSet};

use read::model::{Cohort, RetentionMatrix, RetentionPoint, RetentionValue};
use schema::retention::{period_label, period_of, CohortType, RetentionDef, ReturnMode};

use super::funnel_oracle::{field, matches};
use super::oracle::{Accepted, Spec};

/// One user's membership: `(cohort period, breakdown value)` and the periods with a return.
fn membership(def: &RetentionDef, events: &[&Accepted]) -> (Vec<(u32, String)>, BTreeSet<u32>) {
    let key = |e: &Accepted| def.breakdown.as_deref().map_or("(none)".to_string(), |b| field(e, b).to_string());
    // `events` are in the engine's order (partition, then position): on equal times the
    // earlier event decides, as in every view.
    let order = |e: &Accepted| e.ts;
    let starts: Vec<&Accepted> = events.iter().copied().filter(|e| matches(&def.start, e)).collect();
    let returns = events.iter().filter(|e| matches(&def.returning, e)).map(|e| period_of(def.period, e.ts)).collect();
    let cohorts = match def.cohort {
        CohortType::FirstTime => {
            starts.iter().min_by_key(|e| order(e)).map(|e| (period_of(def.period, e.ts), key(e))).into_iter().collect()
        }
        CohortType::Recurring => {
            let mut first: BTreeMap<u32, &Accepted> = BTreeMap::new();
            for e in starts {
                let p = period_of(def.period, e.ts);
                if first.get(&p).is_none_or(|f| order(e) < order(f)) {
                    first.insert(p, e);
                }
            }
            first.into_iter().map(|(p, e)| (p, key(e))).collect()
        }
    };
    (cohorts, returns)
}

type Membership = (Vec<(u32, String)>, BTreeSet<u32>);

/// The matrix of `def` at `as_of` in `mode`, from every user's membership.
fn matrix(def: &RetentionDef, members: &[Membership], as_of: Option<i64>, mode: ReturnMode) -> RetentionMatrix {
    let Some(as_of) = as_of else {
        return RetentionMatrix { mode, breakdown_value: None, cohorts: vec![], average: vec![], breakdown: vec![] };
    };
    let now = period_of(def.period, as_of);
    let n = def.periods as u32;
    let oldest = now.saturating_sub(n - 1);
    // cohort -> (size, returned per period), and users per breakdown value.
    let mut rows: BTreeMap<u32, (i64, Vec<i64>)> = (oldest..=now).map(|c| (c, (0, vec![0; n as usize]))).collect();
    let mut values: BTreeMap<String, i64> = BTreeMap::new();
    for (cohorts, returns) in members {
        for (c, key) in cohorts.iter().filter(|(c, _)| (oldest..=now).contains(c)) {
            let c = *c;
            *values.entry(key.clone()).or_default() += 1;
            let row = rows.get_mut(&c).unwrap();
            row.0 += 1;
            for k in 1..n {
                let back = match mode {
                    ReturnMode::On => returns.contains(&(c + k)),
                    ReturnMode::OnOrAfter => returns.range(c + k..c + n).next().is_some(),
                };
                row.1[k as usize] += back as i64;
            }
        }
    }
    let pct = |a: i64, b: i64| if b == 0 { 0.0 } else { 100.0 * a as f64 / b as f64 };
    let cohorts: Vec<Cohort> = rows
        .into_iter()
        .map(|(c, (size, mut returned))| {
            returned[0] = size;
            returned.truncate((now - c + 1).min(n) as usize);
            let percent = returned.iter().map(|r| pct(*r, size)).collect();
            Cohort { cohort: period_label(def.period, c), size, returned, percent }
        })
        .collect();
    let mut average = Vec::new();
    for k in 0..n as usize {
        let reached: Vec<&Cohort> = cohorts.iter().filter(|c| c.size > 0 && c.returned.len() > k).collect();
        if !reached.is_empty() {
            let size = reached.iter().map(|c| c.size).sum();
            let returned = reached.iter().map(|c| c.returned[k]).sum();
            average.push(RetentionPoint {
                period: k as u32,
                percent: pct(returned, size),
                cohorts: reached.len() as u32,
            });
        }
    }
    let mut breakdown: Vec<RetentionValue> = match def.breakdown {
        Some(_) => values.into_iter().map(|(value, size)| RetentionValue { value, size }).collect(),
        None => vec![],
    };
    breakdown.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.value.cmp(&b.value)));
    RetentionMatrix { mode, breakdown_value: None, cohorts, average, breakdown }
}

pub fn dump(spec: &Spec, accepted: &[Accepted], as_of: Option<i64>) -> BTreeMap<String, [RetentionMatrix; 2]> {
    let mut users: BTreeMap<&str, Vec<&Accepted>> = BTreeMap::new();
    accepted.iter().for_each(|e| users.entry(&e.user).or_default().push(e));
    spec.views
        .retention
        .iter()
        .map(|def| {
            let members: Vec<Membership> = users.values().map(|events| membership(def, events)).collect();
            let m = |mode| matrix(def, &members, as_of, mode);
            (def.name.clone(), [m(ReturnMode::On), m(ReturnMode::OnOrAfter)])
        })
        .collect()
}
