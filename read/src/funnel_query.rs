//! Funnel answers from one consistent [`Tables`] snapshot.

use std::collections::{BTreeMap, HashMap};

use crate::model::*;
use crate::query::{clock, nearest_rank, QueryError};
use crate::tables::Tables;
use schema::event::Sym;
use schema::funnels::{FunnelDef, FunnelRegistry, FunnelStat, MS_PER_DAY};
use schema::registry::{Definition, Registry};

/// Funnel aggregates of one funnel: (breakdown value, start day, stat) -> users.
pub type FunnelCells = rustc_hash::FxHashMap<(Sym, u32, FunnelStat), i64>;

fn ratio(a: i64, b: i64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn steps_of<'a>(
    funnel: &FunnelDef,
    cells: impl Iterator<Item = (&'a (Sym, u32, FunnelStat), &'a i64)>,
) -> Vec<FunnelStep> {
    let n = funnel.steps();
    let mut reached = vec![0i64; n];
    let mut secs: Vec<BTreeMap<u32, i64>> = vec![BTreeMap::new(); n];
    for ((_, _, stat), c) in cells {
        match *stat {
            FunnelStat::Reached(i) if (i as usize) < n => reached[i as usize] += c,
            FunnelStat::StepSecs(i, s) if (i as usize) < n => *secs[i as usize].entry(s).or_default() += c,
            _ => {}
        }
    }
    (0..n)
        .map(|i| FunnelStep {
            step: i + 1,
            event: funnel.steps[i].event.clone(),
            users: reached[i],
            conversion_from_previous: if i == 0 {
                ratio(reached[0], reached[0])
            } else {
                ratio(reached[i], reached[i - 1])
            },
            conversion_from_start: ratio(reached[i], reached[0]),
            drop_off: if i == 0 { 0 } else { reached[i - 1] - reached[i] },
            median_time_s: nearest_rank(&secs[i], 0.5),
            p90_time_s: nearest_rank(&secs[i], 0.9),
        })
        .collect()
}

/// Every number of a funnel from its cells; `name` shows breakdown values.
pub fn numbers(funnel: &FunnelDef, cells: &FunnelCells, name: &dyn Fn(Sym) -> String) -> FunnelNumbers {
    let n = funnel.steps() as u8;
    let mut days: BTreeMap<u32, (i64, i64)> = BTreeMap::new();
    for ((_, day, stat), c) in cells {
        match *stat {
            FunnelStat::Reached(0) => days.entry(*day).or_default().0 += c,
            FunnelStat::Reached(i) if i == n - 1 => days.entry(*day).or_default().1 += c,
            _ => {}
        }
    }
    let by_day = days
        .into_iter()
        .filter(|(_, (e, c))| *e != 0 || *c != 0)
        .map(|(day, (entered, converted))| FunnelDay {
            day_ms: day as i64 * MS_PER_DAY,
            entered,
            converted,
            conversion: ratio(converted, entered),
        })
        .collect();
    let mut breakdowns = Vec::new();
    if funnel.breakdown_dim().is_some() {
        let mut keys: HashMap<Sym, FunnelCells> = HashMap::new();
        for (k, c) in cells {
            keys.entry(k.0).or_default().insert(*k, *c);
        }
        breakdowns = keys
            .iter()
            .map(|(key, cells)| FunnelBreakdown { key: name(*key), steps: steps_of(funnel, cells.iter()) })
            .filter(|b| b.steps[0].users != 0)
            .collect();
        breakdowns.sort_by(|a, b| b.steps[0].users.cmp(&a.steps[0].users).then_with(|| a.key.cmp(&b.key)));
    }
    FunnelNumbers { steps: steps_of(funnel, cells.iter()), by_day, breakdowns }
}

/// The answer to an unknown funnel name: what exists, close matches first.
/// An unknown funnel (or retention) name: the close matches, or how to create one.
pub fn unknown<T: Definition>(registry: &Registry<T>, name: &str) -> QueryError {
    let names = registry.names();
    let close: Vec<&String> = names.iter().filter(|n| close_to(n, name)).collect();
    let hint = match (names.is_empty(), close.is_empty()) {
        (true, _) => format!("none is defined yet; create one with POST {}", T::ROUTE),
        (false, false) => format!("did you mean {}? defined: {}", quoted(&close), names.join(", ")),
        (false, true) => format!("defined: {}", names.join(", ")),
    };
    QueryError(format!("no {} named `{name}`; {hint}", T::KIND))
}

fn quoted(names: &[&String]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(" or ")
}

/// Same name up to case, one containing the other, or at most two edits apart.
pub fn close_to(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_lowercase(), b.to_lowercase());
    a.contains(&b) || b.contains(&a) || edit_distance(&a, &b) <= 2
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + (ca != *cb) as usize).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn cells_of<'t>(tables: &'t Tables, index: u32) -> std::borrow::Cow<'t, FunnelCells> {
    match tables.funnels.get(&index) {
        Some(c) => std::borrow::Cow::Borrowed(c),
        None => std::borrow::Cow::Owned(FunnelCells::default()),
    }
}

/// Users at each step (0-based) whose window is still open at `head`.
fn open_now(tables: &Tables, index: u32, funnel: &FunnelDef) -> Vec<i64> {
    let mut out = vec![0; funnel.steps()];
    let head = tables.clock().0.unwrap_or(i64::MIN);
    if let Some(open) = tables.open_attempts.get(&index) {
        for ((step, entry, _), c) in open {
            // A step beyond the definition is from an older one; its retraction is on its way.
            if let Some(n) = out.get_mut(*step as usize).filter(|_| entry.saturating_add(funnel.window_ms()) > head) {
                *n += c;
            }
        }
    }
    out
}

pub fn list(tables: &Tables, registry: &FunnelRegistry) -> FunnelList {
    let funnels = registry
        .all()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let steps = numbers(f, &cells_of(tables, i as u32), &|k| tables.name(k)).steps;
            let (entered, converted) = (steps[0].users, steps[steps.len() - 1].users);
            FunnelSummary {
                name: f.name.clone(),
                steps: f.steps(),
                order: f.order,
                window_minutes: f.window_minutes,
                entered,
                converted,
                conversion: ratio(converted, entered),
            }
        })
        .collect();
    FunnelList { clock: clock(tables), funnels }
}

pub fn report(tables: &Tables, registry: &FunnelRegistry, name: &str) -> Result<FunnelReport, QueryError> {
    let (index, funnel) = registry.get(name).ok_or_else(|| unknown(registry, name))?;
    Ok(FunnelReport {
        clock: clock(tables),
        definition: (*funnel).clone(),
        numbers: numbers(&funnel, &cells_of(tables, index), &|k| tables.name(k)),
        open_now: open_now(tables, index, &funnel),
    })
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StuckQuery {
    pub step: Option<usize>,
    pub offset: Option<usize>,
    pub limit: Option<usize>,
}

pub fn stuck(tables: &Tables, registry: &FunnelRegistry, name: &str, q: &StuckQuery) -> Result<StuckUsers, QueryError> {
    let (index, funnel) = registry.get(name).ok_or_else(|| unknown(registry, name))?;
    let n = funnel.steps();
    let step = q.step.ok_or_else(|| QueryError(format!("give `step`: 1 to {} (the last step completed)", n - 1)))?;
    if step < 1 || step >= n {
        return Err(QueryError(format!(
            "step {step} is out of range: users can be stuck after steps 1 to {} of `{name}`",
            n - 1
        )));
    }
    let head = tables.clock().0.unwrap_or(i64::MIN);
    let window = funnel.window_ms();
    let (offset, limit) = (q.offset.unwrap_or(0), q.limit.unwrap_or(100).clamp(1, 1000));
    let open: Vec<StuckUser> = tables
        .open_attempts
        .get(&index)
        .into_iter()
        .flat_map(|m| m.range((step as u8 - 1, i64::MIN, String::new())..(step as u8, i64::MIN, String::new())))
        .filter(|((_, entry, _), c)| **c > 0 && entry.saturating_add(window) > head)
        .map(|((_, entry, user), _)| StuckUser {
            user: user.clone(),
            entered_ms: *entry,
            window_ends_ms: entry + window,
        })
        .collect();
    Ok(StuckUsers {
        clock: clock(tables),
        funnel: name.to_string(),
        step,
        total: open.len() as i64,
        offset,
        users: open.into_iter().skip(offset).take(limit).collect(),
    })
}

pub fn dump(tables: &Tables, registry: &FunnelRegistry) -> BTreeMap<String, FunnelDump> {
    registry
        .all()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let index = i as u32;
            let open_attempts = tables
                .open_attempts
                .get(&index)
                .into_iter()
                .flatten()
                .filter(|(_, c)| **c > 0)
                .map(|((s, e, u), _)| (*s, *e, u.clone()))
                .collect();
            let numbers = numbers(f, &cells_of(tables, index), &|k| tables.name(k));
            (f.name.clone(), FunnelDump { numbers, open_attempts })
        })
        .collect()
}
