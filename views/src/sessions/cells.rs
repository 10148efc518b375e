//! What a session contributes to the session views: cells keyed by start hour and acquisition.

use smallvec::SmallVec;

use schema::event::Sym;
use schema::sessions::{SessionConfig, SessionStat};
use schema::time::{hour_of, Hour};

use crate::sessions::Summary;

/// `(start hour, acquisition, stat, amount)`.
pub type SessionCell = (Hour, [Sym; 3], SessionStat, i64);

/// The `(start hour, acquisition, stat, amount)` cells of one session. Cells are keyed by the
/// whole acquisition tuple (a small cube) rather than once per breakdown: a session touches a
/// third as many cells, and reads sum the cube per breakdown.
pub fn cells_of(s: &Summary, config: &SessionConfig) -> impl Iterator<Item = SessionCell> {
    let (hour, source) = (hour_of(s.start), s.source);
    let duration = s.duration_ms();
    let pages = s.page_views > 0;
    [
        Some((SessionStat::Sessions, 1)),
        s.bounced(config).then_some((SessionStat::Bounces, 1)),
        Some((SessionStat::DurationMs, duration)),
        Some((SessionStat::Events, s.events as i64)),
        Some((SessionStat::PageViews, s.page_views as i64)),
        Some((SessionStat::DurationSecs((duration / 1000) as u32), 1)),
        pages.then_some((SessionStat::Entry(s.entry.2), 1)),
        pages.then_some((SessionStat::Exit(s.exit.2), 1)),
        Some((SessionStat::EndMinute(schema::time::minute_of(s.end)), 1)),
    ]
    .into_iter()
    .flatten()
    .map(move |(stat, amount)| (hour, source, stat, amount))
}

/// The cell changes when a reported session `old` becomes `new`: only the stats that differ.
pub fn cell_changes(old: &Summary, new: &Summary, config: &SessionConfig) -> SmallVec<[SessionCell; 18]> {
    let before: SmallVec<[SessionCell; 9]> = cells_of(old, config).collect();
    let after: SmallVec<[SessionCell; 9]> = cells_of(new, config).collect();
    let same = |a: &SessionCell, b: &SessionCell| (a.0, a.1, a.2) == (b.0, b.1, b.2);
    let mut out = SmallVec::new();
    for a in &after {
        let was = before.iter().find(|b| same(a, b)).map_or(0, |b| b.3);
        if a.3 != was {
            out.push((a.0, a.1, a.2, a.3 - was));
        }
    }
    for b in &before {
        if !after.iter().any(|a| same(a, b)) {
            out.push((b.0, b.1, b.2, -b.3));
        }
    }
    out
}
