//! From-scratch sessions for the reference: sort each user's events and walk them, with no
//! sessionizer, ledger or dataflow.

use std::collections::{BTreeMap, HashMap};

use read::model::{SessionCells, SessionTotals, SessionsDump};
use schema::event::sym;
use schema::ViewConfig;

use super::oracle::Accepted;

fn symbol(text: &str) -> u64 {
    if text == "(none)" {
        0
    } else {
        sym(text)
    }
}

struct Session<'a> {
    start: i64,
    end: i64,
    events: i64,
    page_views: i64,
    entry: Option<(i64, u64, &'a str)>,
    exit: Option<(i64, u64, &'a str)>,
    first: ((i64, [u64; 3]), [&'a str; 3]),
}

fn sessions_of<'a>(events: &[&'a Accepted], config: &ViewConfig) -> Vec<Session<'a>> {
    let timeout = config.sessions.inactivity_minutes as i64 * 60_000;
    let max = config.sessions.max_hours as i64 * 3_600_000;
    let mut sorted = events.to_vec();
    // Stable: equal times keep the engine's order (the accepted events are in partition order).
    sorted.sort_by_key(|e| e.ts);
    let mut out: Vec<Session> = Vec::new();
    let (mut run_start, mut last, mut piece) = (i64::MIN, i64::MIN, -1);
    for e in sorted {
        let new_run = out.is_empty() || e.ts - last > timeout;
        if new_run {
            run_start = e.ts;
            piece = -1;
        }
        last = e.ts;
        let k = (e.ts - run_start) / max;
        let page = e.page.as_deref().unwrap_or("(none)");
        let pv = (e.name == "page_view").then_some((e.ts, symbol(page), page));
        let source = [e.utm_source.as_str(), e.device.as_str(), e.country.as_str()];
        let first = ((e.ts, source.map(symbol)), source);
        if k != piece {
            piece = k;
            out.push(Session { start: e.ts, end: e.ts, events: 0, page_views: 0, entry: pv, exit: pv, first });
        }
        let s = out.last_mut().unwrap();
        s.end = e.ts;
        s.events += 1;
        // In the engine's order (time, then partition and position): the first page view is
        // the entry, the last the exit, and the session's first event its acquisition.
        if let Some(pv) = pv {
            s.page_views += 1;
            s.entry.get_or_insert(pv);
            s.exit = Some(pv);
        }
    }
    out
}

/// Every session aggregate of sessions that started in the kept hours.
pub fn dump(config: &ViewConfig, events: &[Accepted], head: Option<i64>, as_of: Option<i64>) -> SessionsDump {
    let mut by_user: HashMap<&str, Vec<&Accepted>> = HashMap::new();
    for e in events {
        by_user.entry(&e.user).or_default().push(e);
    }
    let as_of_minute = as_of.map(|t| t.div_euclid(60_000)).unwrap_or(0);
    let floor_hour = (as_of_minute + 1 - config.window_minutes as i64).max(0) / 60;
    let in_progress_from =
        head.map_or(i64::MAX, |h| (h.div_euclid(60_000) - config.sessions.inactivity_minutes as i64).max(0));
    let mut out = SessionsDump::default();
    let mut durations: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    for user_events in by_user.values() {
        for s in sessions_of(user_events, config) {
            let hour = s.start.div_euclid(3_600_000);
            if hour < floor_hour {
                continue;
            }
            *out.hourly.entry(hour * 3_600_000).or_default() += 1;
            let duration = s.end - s.start;
            let keys =
                [("all", "(none)"), ("utm_source", s.first.1[0]), ("device", s.first.1[1]), ("country", s.first.1[2])];
            for (dim, key) in keys {
                let cells: &mut SessionCells =
                    out.by.entry(dim.to_string()).or_default().entry(key.to_string()).or_default();
                let t: &mut SessionTotals = &mut cells.totals;
                t.sessions += 1;
                t.bounces += (s.page_views == 1 && duration < config.sessions.bounce_seconds as i64 * 1000) as i64;
                t.duration_ms += duration;
                t.events += s.events;
                t.page_views += s.page_views;
                t.in_progress += (s.end.div_euclid(60_000) >= in_progress_from) as i64;
                if let (Some(entry), Some(exit)) = (s.entry, s.exit) {
                    *cells.entry.entry(entry.2.to_string()).or_default() += 1;
                    *cells.exit.entry(exit.2.to_string()).or_default() += 1;
                }
                durations.entry((dim.to_string(), key.to_string())).or_default().push(duration / 1000);
            }
        }
    }
    for ((dim, key), mut d) in durations {
        d.sort();
        out.by.get_mut(&dim).unwrap().get_mut(&key).unwrap().totals.median_duration_s =
            Some(d[(d.len() - 1) / 2] as u32);
    }
    out
}
