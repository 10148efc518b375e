//! Answers about sessions, summed over start hours from one consistent [`Tables`] snapshot.

use std::collections::{BTreeMap, HashMap};

use crate::model::*;
use crate::query::{clock, nearest_rank, parse_time, rfc3339, visible, QueryError};
use crate::tables::{SessionHours, Tables};
use schema::cells::Dim;
use schema::config::ViewConfig;
use schema::event::{minute_of, sym, Minute, Sym, NONE, NONE_TEXT};
use schema::sessions::{SessionStat, BREAKDOWNS};
use schema::time::{hour_of, Hour, MS_PER_HOUR};

/// Sessions of some start hours, summed.
#[derive(Default)]
struct Agg {
    totals: SessionTotals,
    durations: BTreeMap<u32, i64>,
    entry: HashMap<Sym, i64>,
    exit: HashMap<Sym, i64>,
}

impl Agg {
    /// Sums the cube cells of start hours `lo..=hi`.
    fn over<'a>(cube: impl Iterator<Item = &'a SessionHours>, r: &Range, hi: Hour) -> Agg {
        let mut agg = Agg::default();
        let t = &mut agg.totals;
        for (_, cells) in cube.flat_map(|hours| hours.range(r.lo..=hi)) {
            for (stat, n) in cells {
                match *stat {
                    SessionStat::Sessions => t.sessions += n,
                    SessionStat::Bounces => t.bounces += n,
                    SessionStat::DurationMs => t.duration_ms += n,
                    SessionStat::Events => t.events += n,
                    SessionStat::PageViews => t.page_views += n,
                    SessionStat::DurationSecs(s) => *agg.durations.entry(s).or_default() += n,
                    SessionStat::Entry(page) => *agg.entry.entry(page).or_default() += n,
                    SessionStat::Exit(page) => *agg.exit.entry(page).or_default() += n,
                    SessionStat::EndMinute(m) if m >= r.in_progress_from => t.in_progress += n,
                    SessionStat::EndMinute(_) => {}
                }
            }
        }
        t.median_duration_s = nearest_rank(&agg.durations, 0.5);
        agg
    }

    fn summary(&self) -> SessionSummary {
        let t = &self.totals;
        let per = |x: i64| if t.sessions == 0 { 0.0 } else { x as f64 / t.sessions as f64 };
        SessionSummary {
            totals: t.clone(),
            avg_duration_s: per(t.duration_ms) / 1000.0,
            pages_per_session: per(t.page_views),
            events_per_session: per(t.events),
            bounce_rate: per(t.bounces),
        }
    }
}

/// What `GET /api/v1/sessions` accepts.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<usize>,
    /// Only sessions whose first event had these values (`(none)` for absent).
    pub utm_source: Option<String>,
    pub device: Option<String>,
    pub country: Option<String>,
}

impl SessionsQuery {
    /// The acquisition values asked for, as symbols by position in the cube key.
    fn segment(&self) -> [Option<Sym>; 3] {
        // An empty parameter is no filter; `(none)` asks for sessions without the field.
        let s = |v: &Option<String>| {
            v.as_deref().filter(|t| !t.is_empty()).map(|t| if t == NONE_TEXT { NONE } else { sym(t) })
        };
        [s(&self.utm_source), s(&self.device), s(&self.country)]
    }
}

struct Range {
    lo: Hour,
    hi: Hour,
    in_progress_from: Minute,
}

fn range_of(tables: &Tables, config: &ViewConfig, q: &SessionsQuery) -> Result<Range, QueryError> {
    let vis = visible(tables, config);
    let head = tables.clock().0;
    let hi = match &q.to {
        Some(t) => hour_of(parse_time(t, "to")?),
        None => head.map(hour_of).unwrap_or(0),
    };
    let lo = match &q.from {
        Some(t) => hour_of(parse_time(t, "from")?),
        None => vis.session_hours_from,
    };
    if lo > hi {
        return Err(QueryError(format!("`from` ({}) is after `to` ({})", rfc3339(hour_ms(lo)), rfc3339(hour_ms(hi)))));
    }
    let kept = vis.session_hours_from;
    if hi < kept {
        return Err(QueryError(format!(
            "`to` ({}) is before the oldest hour still kept ({}); sessions are kept for views.window_minutes",
            rfc3339(hour_ms(hi)),
            rfc3339(hour_ms(kept))
        )));
    }
    let timeout = config.sessions.inactivity_minutes;
    let in_progress_from = head.map_or(Minute::MAX, |h| minute_of(h).saturating_sub(timeout));
    Ok(Range { lo: lo.max(kept), hi, in_progress_from })
}

fn hour_ms(hour: Hour) -> i64 {
    hour as i64 * MS_PER_HOUR
}

fn ranked(tables: &Tables, counts: &HashMap<Sym, i64>, n: usize) -> Vec<KeyCount> {
    let mut rows: Vec<KeyCount> =
        counts.iter().filter(|(_, c)| **c != 0).map(|(k, c)| KeyCount { key: tables.name(*k), count: *c }).collect();
    rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    rows.truncate(n);
    rows
}

/// Cube cells grouped by one breakdown: value -> the cells with that value.
fn grouped<'t>(
    cube: impl Iterator<Item = (&'t [Sym; 3], &'t SessionHours)>,
    index: usize,
) -> HashMap<Sym, Vec<&'t SessionHours>> {
    let mut groups: HashMap<Sym, Vec<&SessionHours>> = HashMap::new();
    for (source, hours) in cube {
        groups.entry(source[index]).or_default().push(hours);
    }
    groups
}

pub fn sessions(tables: &Tables, config: &ViewConfig, q: &SessionsQuery) -> Result<Sessions, QueryError> {
    let r = range_of(tables, config, q)?;
    let n = q.limit.unwrap_or(config.top_n).max(1);
    let segment = q.segment();
    let cube: Vec<(&[Sym; 3], &SessionHours)> = tables
        .sessions
        .iter()
        .filter(|(source, _)| segment.iter().zip(source.iter()).all(|(want, have)| want.is_none_or(|w| w == *have)))
        .collect();
    let agg = Agg::over(cube.iter().map(|(_, h)| *h), &r, r.hi);
    let mut per_hour: BTreeMap<Hour, i64> = BTreeMap::new();
    for (_, hours) in &cube {
        for (hour, cells) in hours.range(r.lo..=r.hi) {
            *per_hour.entry(*hour).or_default() += cells.get(&SessionStat::Sessions).copied().unwrap_or(0);
        }
    }
    let mut hourly = Vec::new();
    let mut daily: Vec<TimeCount> = Vec::new();
    for hour in r.lo..=r.hi.min(r.lo.saturating_add(24 * 31)) {
        let sessions = per_hour.get(&hour).copied().unwrap_or(0);
        hourly.push(TimeCount { start_ms: hour_ms(hour), sessions });
        let day_ms = hour_ms(hour - hour % 24);
        match daily.last_mut() {
            Some(d) if d.start_ms == day_ms => d.sessions += sessions,
            _ => daily.push(TimeCount { start_ms: day_ms, sessions }),
        }
    }
    let mut breakdowns = BTreeMap::new();
    for (dim, index) in BREAKDOWNS {
        let mut rows: Vec<KeyedSessions> = grouped(cube.iter().copied(), index)
            .into_iter()
            .map(|(key, cube)| (tables.name(key), Agg::over(cube.into_iter(), &r, r.hi)))
            .filter(|(_, a)| a.totals.sessions != 0 || a.totals.in_progress != 0)
            .map(|(key, a)| KeyedSessions { key, summary: a.summary() })
            .collect();
        rows.sort_by(|a, b| b.summary.totals.sessions.cmp(&a.summary.totals.sessions).then_with(|| a.key.cmp(&b.key)));
        rows.truncate(n);
        breakdowns.insert(dim.as_str().to_string(), rows);
    }
    Ok(Sessions {
        clock: clock(tables),
        from_ms: hour_ms(r.lo),
        to_ms: hour_ms(r.hi.saturating_add(1)),
        inactivity_minutes: config.sessions.inactivity_minutes,
        summary: agg.summary(),
        hourly,
        daily,
        top_entry_pages: ranked(tables, &agg.entry, n),
        top_exit_pages: ranked(tables, &agg.exit, n),
        breakdowns,
    })
}

/// Every session aggregate in the window, for `replay --dump` and the reference tests.
pub fn dump(tables: &Tables, config: &ViewConfig) -> SessionsDump {
    let Ok(r) = range_of(tables, config, &SessionsQuery::default()) else { return SessionsDump::default() };
    let mut out = SessionsDump::default();
    let mut add = |dim: Dim, key: Sym, agg: Agg| {
        if agg.totals == SessionTotals::default() {
            return;
        }
        let names = |counts: &HashMap<Sym, i64>| -> BTreeMap<String, i64> {
            counts.iter().filter(|(_, c)| **c != 0).map(|(k, c)| (tables.name(*k), *c)).collect()
        };
        let cells = SessionCells { entry: names(&agg.entry), exit: names(&agg.exit), totals: agg.totals };
        out.by.entry(dim.as_str().to_string()).or_default().insert(tables.name(key), cells);
    };
    add(Dim::All, NONE, Agg::over(tables.sessions.values(), &r, Hour::MAX));
    for (dim, index) in BREAKDOWNS {
        for (key, cube) in grouped(tables.sessions.iter(), index) {
            add(dim, key, Agg::over(cube.into_iter(), &r, Hour::MAX));
        }
    }
    for hours in tables.sessions.values() {
        for (hour, cells) in hours.range(r.lo..) {
            *out.hourly.entry(hour_ms(*hour)).or_default() += cells.get(&SessionStat::Sessions).copied().unwrap_or(0);
        }
    }
    out.hourly.retain(|_, n| *n != 0);
    out
}
