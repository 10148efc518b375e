//! Retention matrices from the aggregate cells: the last `periods` cohorts up to `as_of`.

use std::collections::{BTreeMap, HashMap};

use crate::funnel_query::unknown;
use crate::model::RetentionValue;
use crate::model::{Cohort, RetentionList, RetentionMatrix, RetentionPoint, RetentionReport, RetentionSummary};
use crate::query::{clock, QueryError};
use crate::tables::Tables;
use schema::event::Sym;
use schema::retention::{period_label, RetentionDef, RetentionRegistry, RetentionStat, ReturnMode};

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionQuery {
    /// `on` or `on_or_after` (default: the definition's).
    pub mode: Option<ReturnMode>,
    /// Only users whose cohort event had this breakdown value.
    pub breakdown_value: Option<String>,
}

fn percent(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// The matrix of one definition (registry index `index`) at the tables' `as_of`.
pub fn matrix(tables: &Tables, index: u32, r: &RetentionDef, mode: ReturnMode, value: Option<&str>) -> RetentionMatrix {
    let empty = rustc_hash::FxHashMap::default();
    let cells = tables.retention.get(&index).unwrap_or(&empty);
    let Some(now) = tables.clock().1.map(|as_of| r.period_of(as_of)) else {
        return RetentionMatrix { mode, breakdown_value: value.map(str::to_string), ..empty_matrix(mode) };
    };
    let oldest = r.oldest_cohort(now);
    let want = value.map(schema::event::sym_or_none);
    let mut sums: BTreeMap<(u32, RetentionStat), i64> = BTreeMap::new();
    let mut by_value: HashMap<Sym, i64> = HashMap::new();
    for ((key, cohort, stat), n) in cells {
        if *cohort < oldest || *cohort > now {
            continue;
        }
        if *stat == RetentionStat::Size {
            *by_value.entry(*key).or_default() += n;
        }
        if want.is_none_or(|w| w == *key) {
            *sums.entry((*cohort, *stat)).or_default() += n;
        }
    }
    let get = |c: u32, s: RetentionStat| sums.get(&(c, s)).copied().unwrap_or(0);
    let n = r.periods as u32;
    let cohorts: Vec<Cohort> = (oldest..=now)
        .map(|c| {
            let size = get(c, RetentionStat::Size);
            let returned: Vec<i64> = std::iter::once(size)
                .chain((1..n.min(now - c + 1)).map(|k| match mode {
                    ReturnMode::On => get(c, RetentionStat::On(k as u8)),
                    ReturnMode::OnOrAfter => get(c, RetentionStat::OnOrAfter(k as u8)),
                }))
                .collect();
            let percent = returned.iter().map(|x| percent(*x, size)).collect();
            Cohort { cohort: period_label(r.period, c), size, returned, percent }
        })
        .collect();
    let average = (0..n as usize)
        .filter_map(|k| {
            let reached: Vec<&Cohort> = cohorts.iter().filter(|c| c.size > 0 && c.returned.len() > k).collect();
            let size: i64 = reached.iter().map(|c| c.size).sum();
            let returned: i64 = reached.iter().map(|c| c.returned[k]).sum();
            (!reached.is_empty()).then(|| RetentionPoint {
                period: k as u32,
                percent: percent(returned, size),
                cohorts: reached.len() as u32,
            })
        })
        .collect();
    let mut breakdown: Vec<RetentionValue> = match r.breakdown {
        Some(_) => by_value
            .into_iter()
            .filter(|(_, size)| *size != 0)
            .map(|(key, size)| RetentionValue { value: tables.name(key), size })
            .collect(),
        None => Vec::new(),
    };
    breakdown.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.value.cmp(&b.value)));
    RetentionMatrix { mode, breakdown_value: value.map(str::to_string), cohorts, average, breakdown }
}

fn empty_matrix(mode: ReturnMode) -> RetentionMatrix {
    RetentionMatrix { mode, breakdown_value: None, cohorts: Vec::new(), average: Vec::new(), breakdown: Vec::new() }
}

pub fn report(
    tables: &Tables,
    registry: &RetentionRegistry,
    name: &str,
    q: &RetentionQuery,
) -> Result<RetentionReport, QueryError> {
    let (index, r) = registry.get(name).ok_or_else(|| unknown(registry, name))?;
    if q.breakdown_value.is_some() && r.breakdown.is_none() {
        return Err(QueryError(format!(
            "retention `{name}` has no breakdown; define one ({}) to filter by breakdown_value",
            schema::retention::BREAKDOWNS
        )));
    }
    let mode = q.mode.unwrap_or(r.mode);
    Ok(RetentionReport {
        clock: clock(tables),
        definition: (*r).clone(),
        matrix: matrix(tables, index, &r, mode, q.breakdown_value.as_deref()),
    })
}

pub fn list(tables: &Tables, registry: &RetentionRegistry) -> RetentionList {
    let retention = registry
        .all()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let m = matrix(tables, i as u32, r, r.mode, None);
            RetentionSummary {
                name: r.name.clone(),
                period: r.period,
                cohort: r.cohort,
                newest_cohort: m.cohorts.last().map_or(0, |c| c.size),
                users: m.cohorts.iter().map(|c| c.size).sum(),
                period_1_percent: m.average.get(1).map(|p| p.percent),
            }
        })
        .collect();
    RetentionList { clock: clock(tables), retention }
}

/// Every definition's matrix in both modes.
pub fn dump(tables: &Tables, registry: &RetentionRegistry) -> BTreeMap<String, [RetentionMatrix; 2]> {
    registry
        .all()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let m = |mode| matrix(tables, i as u32, r, mode, None);
            (r.name.clone(), [m(ReturnMode::On), m(ReturnMode::OnOrAfter)])
        })
        .collect()
}
