//! Answers computed from one consistent [`Tables`] snapshot: the live summary, time series and the
//! full dump. Windows are anchored at `head` (the newest event time) and never reach below what
//! the retention window keeps behind `as_of`.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::model::*;
use crate::tables::{window_sum, Tables};
use schema::cells::Dim;
use schema::config::ViewConfig;
use schema::event::{minute_of, minute_start_ms, Minute, Sym, NONE};

pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// The minutes that are still inside the kept windows.
pub struct Visible {
    pub head: Option<Minute>,
    pub counts_from: Minute,
    pub session_hours_from: schema::time::Hour,
    pub users_from: Minute,
    pub active_from: Minute,
}

pub fn visible(tables: &Tables, config: &ViewConfig) -> Visible {
    let (head, as_of) = tables.clock();
    let as_of_minute = as_of.map(minute_of).unwrap_or(0);
    let back = |n: u32| (as_of_minute + 1).saturating_sub(n);
    Visible {
        head: head.map(minute_of),
        counts_from: config.counts_from(as_of_minute),
        session_hours_from: config.session_hours_from(as_of_minute),
        users_from: back(config.user_minutes_kept()),
        active_from: back(config.active_history_minutes),
    }
}

pub fn clock(tables: &Tables) -> Clock {
    let (head, as_of) = tables.clock();
    Clock { as_of: as_of.map(rfc3339), as_of_ms: as_of, head: head.map(rfc3339), head_ms: head, epoch: tables.epoch }
}

/// Keys of `dim` summed over `lo..=hi`, largest first (ties by name), non-zero only.
fn ranked(tables: &Tables, dim: Dim, lo: Minute, hi: Minute, n: usize) -> Vec<KeyCount> {
    let mut rows: Vec<KeyCount> = tables
        .dimension(dim)
        .map(|(key, series)| KeyCount { key: tables.name(key), count: window_sum(series, lo, hi) })
        .filter(|row| row.count != 0)
        .collect();
    rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    rows.truncate(n);
    rows
}

pub fn live(tables: &Tables, config: &ViewConfig) -> Live {
    let vis = visible(tables, config);
    let mut live = Live {
        clock: clock(tables),
        active_users: 0,
        active_window_minutes: config.active_minutes,
        events_per_minute: 0,
        events_this_minute: 0,
        events_by_name: Vec::new(),
        top_window_minutes: config.top_minutes,
        top_pages: Vec::new(),
        trending_pages: Vec::new(),
        breakdowns: BTreeMap::new(),
    };
    let Some(hm) = vis.head else { return live };
    let lo = |n: u32| (hm + 1).saturating_sub(n);
    live.active_users = tables.distinct_users(lo(config.active_minutes).max(vis.users_from), hm);
    live.events_this_minute = events_in(tables, &vis, hm);
    live.events_per_minute = hm.checked_sub(1).map_or(0, |m| events_in(tables, &vis, m));
    if let Some(last) = hm.checked_sub(1).filter(|m| *m >= vis.counts_from) {
        live.events_by_name = ranked(tables, Dim::Event, last, last, usize::MAX);
    }
    let top_lo = lo(config.top_minutes).max(vis.counts_from);
    live.top_pages = ranked(tables, Dim::PageView, top_lo, hm, config.top_n)
        .into_iter()
        .map(|kc| PageCount { page: kc.key, views: kc.count })
        .collect();
    live.trending_pages = trending(tables, config, hm, vis.counts_from);
    for dim in Dim::BREAKDOWNS {
        live.breakdowns.insert(dim.as_str().to_string(), ranked(tables, dim, top_lo, hm, config.top_n));
    }
    live
}

/// All events in one minute, zero outside the kept window.
fn events_in(tables: &Tables, vis: &Visible, minute: Minute) -> i64 {
    if minute < vis.counts_from {
        return 0;
    }
    tables.series(Dim::All, NONE).and_then(|s| s.get(&minute)).copied().unwrap_or(0)
}

fn trending(tables: &Tables, config: &ViewConfig, hm: Minute, floor: Minute) -> Vec<TrendingPage> {
    let top_lo = (hm + 1).saturating_sub(config.top_minutes).max(floor);
    let base_hi = (hm + 1).saturating_sub(config.top_minutes);
    let base_lo = base_hi.saturating_sub(config.trend_baseline_minutes).max(floor);
    let mut rows: Vec<(Sym, i64, i64)> = tables
        .dimension(Dim::PageView)
        .map(|(page, s)| {
            let base = if base_hi == 0 { 0 } else { window_sum(s, base_lo, base_hi - 1) };
            (page, window_sum(s, top_lo, hm), base)
        })
        .filter(|(_, recent, _)| *recent >= config.trend_min_views)
        .collect();
    let names: BTreeMap<Sym, String> = rows.iter().map(|(p, _, _)| (*p, tables.name(*p))).collect();
    // growth_a > growth_b  <=>  recent_a * base_b > recent_b * base_a (bases floored at one view)
    rows.sort_by(|a, b| {
        let lhs = a.1 as i128 * b.2.max(1) as i128;
        let rhs = b.1 as i128 * a.2.max(1) as i128;
        rhs.cmp(&lhs).then_with(|| b.1.cmp(&a.1)).then_with(|| names[&a.0].cmp(&names[&b.0]))
    });
    rows.truncate(config.top_n);
    let scale = config.trend_baseline_minutes as f64 / config.top_minutes as f64;
    rows.into_iter()
        .map(|(page, views, base)| TrendingPage {
            page: names[&page].clone(),
            views,
            baseline_views: base,
            growth: views as f64 * scale / base.max(1) as f64,
        })
        .collect()
}

/// The smallest value with at least `q` of the mass at or below it (nearest rank).
pub fn nearest_rank(counts: &BTreeMap<u32, i64>, q: f64) -> Option<u32> {
    let n: i64 = counts.values().sum();
    if n <= 0 {
        return None;
    }
    let rank = ((q * n as f64).ceil() as i64).max(1);
    let mut seen = 0;
    counts
        .iter()
        .find(|(_, c)| {
            seen += **c;
            seen >= rank
        })
        .map(|(v, _)| *v)
}

/// What a time-series request asks for, as the API receives it.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeseriesQuery {
    pub metric: Option<String>,
    pub breakdown: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct QueryError(pub String);

pub fn parse_time(text: &str, field: &str) -> Result<i64, QueryError> {
    if let Ok(ms) = text.parse::<i64>() {
        // Before 1973 in milliseconds, but 1973..5138 in seconds: a client sending seconds.
        if (1..100_000_000_000).contains(&ms) {
            return Err(QueryError(format!(
                "`{field}` is epoch milliseconds; `{text}` looks like seconds (send {text}000, or an RFC 3339 time)"
            )));
        }
        return Ok(ms);
    }
    DateTime::parse_from_rfc3339(text).map(|t| t.timestamp_millis()).map_err(|_| {
        QueryError(format!(
            "`{field}` must be an RFC 3339 time (2026-11-20T10:00:00Z) or epoch milliseconds, got `{text}`"
        ))
    })
}

const METRICS: &str = "events, page_views, active_users";
const BREAKDOWNS: &str = "none, event, page, utm_source, device, country";
/// Longest range one request may cover.
const MAX_POINTS: u32 = 24 * 60;

pub fn timeseries(tables: &Tables, config: &ViewConfig, q: &TimeseriesQuery) -> Result<Timeseries, QueryError> {
    let metric = q.metric.as_deref().unwrap_or("events");
    let breakdown = q.breakdown.as_deref().unwrap_or("none");
    let dim = match (metric, breakdown) {
        ("events", "none") => Some(Dim::All),
        ("events", "event") => Some(Dim::Event),
        ("events", "page") => Some(Dim::Page),
        ("events", b) => match Dim::parse(b).filter(|d| Dim::BREAKDOWNS.contains(d)) {
            Some(d) => Some(d),
            None => return Err(QueryError(format!("unknown breakdown `{b}`; use one of: {BREAKDOWNS}"))),
        },
        ("page_views", "none") => None,
        ("page_views", "page") => Some(Dim::PageView),
        ("page_views", b) => {
            return Err(QueryError(format!("page_views can be broken down by `page` or `none`, not `{b}`")))
        }
        ("active_users", "none") => None,
        ("active_users", b) => return Err(QueryError(format!("active_users has no breakdown; drop `breakdown={b}`"))),
        (m, _) => return Err(QueryError(format!("unknown metric `{m}`; use one of: {METRICS}"))),
    };
    let vis = visible(tables, config);
    let head = vis.head.unwrap_or(0);
    let to = match &q.to {
        Some(t) => minute_of(parse_time(t, "to")?),
        None => head,
    };
    let from = match &q.from {
        Some(t) => minute_of(parse_time(t, "from")?),
        None => to.saturating_add(1).saturating_sub(60),
    };
    if from > to {
        return Err(QueryError(format!(
            "`from` ({}) is after `to` ({})",
            rfc3339(minute_start_ms(from)),
            rfc3339(minute_start_ms(to))
        )));
    }
    if to - from >= MAX_POINTS {
        return Err(QueryError(format!("range covers {} minutes; ask for at most {MAX_POINTS}", to - from + 1)));
    }
    let floor = if metric == "active_users" { vis.active_from } else { vis.counts_from };
    let minutes = from..=to;
    let point = |minute: Minute, value: i64| Point { minute_ms: minute_start_ms(minute), value };
    let series = match (metric, dim) {
        ("active_users", _) => {
            let points: Vec<Point> = minutes
                .map(|m| {
                    let v = if m < floor { 0 } else { active_at(tables, config, m, vis.users_from) as i64 };
                    point(m, v)
                })
                .collect();
            vec![series_of("active_users".into(), points)]
        }
        (_, None) => {
            let points = minutes
                .map(|m| {
                    let v = if m < floor {
                        0
                    } else {
                        tables.dimension(Dim::PageView).map(|(_, s)| window_sum(s, m, m)).sum()
                    };
                    point(m, v)
                })
                .collect();
            vec![series_of("page_views".into(), points)]
        }
        (_, Some(dim)) => {
            let lo = from.max(floor);
            let mut keys: Vec<(i64, String, Sym)> = tables
                .dimension(dim)
                .map(|(k, s)| (window_sum(s, lo, to), tables.name(k), k))
                .filter(|(total, _, _)| *total != 0)
                .collect();
            keys.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            keys.truncate(q.limit.unwrap_or(10).max(1));
            keys.into_iter()
                .map(|(_, name, k)| {
                    let s = tables.series(dim, k);
                    let points = minutes
                        .clone()
                        .map(|m| {
                            let v = if m < floor { 0 } else { s.and_then(|s| s.get(&m)).copied().unwrap_or(0) };
                            point(m, v)
                        })
                        .collect();
                    series_of(if dim == Dim::All { metric.to_string() } else { name }, points)
                })
                .collect()
        }
    };
    Ok(Timeseries {
        clock: clock(tables),
        metric: metric.to_string(),
        breakdown: breakdown.to_string(),
        from_ms: minute_start_ms(from),
        to_ms: minute_start_ms(to),
        series,
    })
}

fn series_of(key: String, points: Vec<Point>) -> Series {
    Series { key, total: points.iter().map(|p| p.value).sum(), points }
}

fn active_at(tables: &Tables, config: &ViewConfig, minute: Minute, users_from: Minute) -> u64 {
    let lo = minute.saturating_add(1).saturating_sub(config.active_minutes).max(users_from);
    tables.distinct_users(lo, minute)
}

pub fn dump(
    tables: &Tables,
    config: &ViewConfig,
    funnels: &schema::funnels::FunnelRegistry,
    retention: &schema::retention::RetentionRegistry,
) -> Dump {
    let vis = visible(tables, config);
    let mut counts: BTreeMap<String, BTreeMap<String, BTreeMap<i64, i64>>> = BTreeMap::new();
    for ((dim, key), series) in &tables.counts {
        let cells: BTreeMap<i64, i64> =
            series.range(vis.counts_from..).map(|(m, v)| (minute_start_ms(*m), *v)).collect();
        if !cells.is_empty() {
            counts.entry(dim.as_str().to_string()).or_default().insert(tables.name(*key), cells);
        }
    }
    let mut active_users = Vec::new();
    if let (Some(hm), Some(first)) = (vis.head, tables.first_user_minute(vis.users_from)) {
        for m in first.max(vis.active_from)..=hm {
            active_users.push(ActiveUsersPoint {
                minute_ms: minute_start_ms(m),
                users: active_at(tables, config, m, vis.users_from),
            });
        }
    }
    Dump {
        live: live(tables, config),
        accepted: tables.accepted,
        rejects: rejects(tables),
        counts,
        active_users,
        sessions: crate::session_query::dump(tables, config),
        funnels: crate::funnel_query::dump(tables, funnels),
        retention: crate::retention_query::dump(tables, retention),
        paths: crate::path_query::dump(tables),
    }
}

pub fn rejects(tables: &Tables) -> Rejects {
    Rejects { total: tables.rejects.values().sum(), by_reason: tables.rejects.clone() }
}
