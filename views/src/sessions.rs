//! Sessions, computed incrementally per user in one place (paths and retention reuse the boundaries).
//!
//! A user's events with no gap longer than the inactivity timeout form a *run*; a run is cut every
//! `max` (24 h) from its first event, and each piece is a session. Only what can still change is
//! kept: runs that a new event could touch (end within the timeout of the watermark) and, of those,
//! the pieces a new event could land in. Every event is at or after the partition watermark, so
//! state behind it is final.
//!
//! Cost per event is O(log runs) for the common cases (append, late event inside or next to a
//! session). Only two rare cases re-cut a run from its events: a late event that becomes a run's new
//! first event, or one that bridges two runs. Both need the later run to have started after the
//! watermark, so its events (kept only while it is that young) span at most the allowed lateness.
//! A bot with millions of events therefore pays O(1) per event, whatever its history.

use serde::{Deserialize, Serialize};

use crate::event::{Sym, UserId, NONE};
use crate::ids::IdMap;

pub const MS_PER_HOUR: i64 = 3_600_000;

/// Whole hours since the Unix epoch (event time).
pub type Hour = u32;

pub fn hour_of(ts_ms: i64) -> Hour {
    ts_ms.div_euclid(MS_PER_HOUR).clamp(0, u32::MAX as i64) as Hour
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKey {
    /// Sessions by inactivity: a gap over `inactivity_minutes` starts a new one.
    Inactivity,
    /// Events carrying the producer's `session_id` are grouped by it (still cut at `max_hours`);
    /// events without one fall back to inactivity.
    SessionId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    pub inactivity_minutes: u32,
    pub max_hours: u32,
    /// A session with one page view that lasts less than this is a bounce.
    pub bounce_seconds: u32,
    pub key: SessionKey,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig { inactivity_minutes: 30, max_hours: 24, bounce_seconds: 10, key: SessionKey::Inactivity }
    }
}

impl SessionConfig {
    pub fn timeout_ms(&self) -> i64 {
        self.inactivity_minutes as i64 * 60_000
    }
    pub fn max_ms(&self) -> i64 {
        self.max_hours as i64 * MS_PER_HOUR
    }
    pub fn validate(&self) -> Result<(), String> {
        if self.inactivity_minutes == 0 || self.max_hours == 0 {
            return Err("views.sessions: inactivity_minutes and max_hours must be at least 1".into());
        }
        if self.timeout_ms() > self.max_ms() {
            return Err("views.sessions: inactivity_minutes must not exceed max_hours".into());
        }
        Ok(())
    }
}

/// What a session needs to know about one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hit {
    pub ts: i64,
    pub page: Sym,
    pub page_view: bool,
    /// `utm_source`, `device`, `country`.
    pub source: [Sym; 3],
}

/// One session. Ties are broken by symbol so that the result does not depend on arrival order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Summary {
    pub start: i64,
    pub end: i64,
    pub events: u32,
    pub page_views: u32,
    /// `(ts, page)` of the first page view (`(i64::MAX, NONE)` without one).
    pub entry: (i64, Sym),
    /// `(ts, page)` of the last page view (`(i64::MIN, NONE)` without one).
    pub exit: (i64, Sym),
    /// `(ts, [utm_source, device, country])` of the first event: the session's acquisition.
    pub first: (i64, [Sym; 3]),
}

impl Summary {
    pub fn of(hit: &Hit) -> Summary {
        let (entry, exit) =
            if hit.page_view { ((hit.ts, hit.page), (hit.ts, hit.page)) } else { ((i64::MAX, NONE), (i64::MIN, NONE)) };
        Summary {
            start: hit.ts,
            end: hit.ts,
            events: 1,
            page_views: hit.page_view as u32,
            entry,
            exit,
            first: (hit.ts, hit.source),
        }
    }

    pub fn merge(&mut self, other: &Summary) {
        self.start = self.start.min(other.start);
        self.end = self.end.max(other.end);
        self.events += other.events;
        self.page_views += other.page_views;
        self.entry = self.entry.min(other.entry);
        self.exit = self.exit.max(other.exit);
        self.first = self.first.min(other.first);
    }

    pub fn duration_ms(&self) -> i64 {
        self.end - self.start
    }

    pub fn bounced(&self, config: &SessionConfig) -> bool {
        self.page_views == 1 && self.duration_ms() < config.bounce_seconds as i64 * 1000
    }
}

/// Events without a gap over the timeout; cut into sessions every `max` from `start`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Run {
    start: i64,
    end: i64,
    /// Pieces that a new event could still land in, by index since `start`.
    pieces: Vec<(u32, Summary)>,
    /// The run's events, kept while the run started at or after the watermark (it may be re-cut).
    hits: Option<Vec<Hit>>,
}

impl Run {
    fn new(hit: &Hit) -> Run {
        Run { start: hit.ts, end: hit.ts, pieces: vec![(0, Summary::of(hit))], hits: Some(vec![*hit]) }
    }

    fn piece_of(&self, ts: i64, max_ms: i64) -> u32 {
        ((ts - self.start) / max_ms) as u32
    }

    fn put(&mut self, hit: &Hit, max_ms: i64) {
        let k = self.piece_of(hit.ts, max_ms);
        match self.pieces.binary_search_by_key(&k, |(i, _)| *i) {
            Ok(i) => self.pieces[i].1.merge(&Summary::of(hit)),
            Err(i) => self.pieces.insert(i, (k, Summary::of(hit))),
        }
        self.start = self.start.min(hit.ts);
        self.end = self.end.max(hit.ts);
    }

    /// Rebuilds the pieces from the kept events (the start moved, or another run was appended).
    fn recut(&mut self, max_ms: i64) {
        let hits = self.hits.take().expect("only a young run is re-cut");
        self.pieces.clear();
        self.start = hits.iter().map(|h| h.ts).min().expect("a run has events");
        for hit in &hits {
            self.put(hit, max_ms);
        }
        self.hits = Some(hits);
    }
}

/// Receives session changes: `+1` for a session that now exists, `-1` for one that no longer does.
pub trait SessionSink {
    fn session(&mut self, summary: Summary, diff: i64);
}

impl SessionSink for Vec<(Summary, i64)> {
    fn session(&mut self, summary: Summary, diff: i64) {
        self.push((summary, diff));
    }
}

fn emit(run: &Run, diff: i64, out: &mut impl SessionSink) {
    for (_, summary) in &run.pieces {
        out.session(*summary, diff);
    }
}

/// One session key's runs, in time order.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct UserRuns {
    /// Keyed by the producer's session id (joins across any gap up to `max`).
    by_id: bool,
    runs: Vec<Run>,
}

/// The sessions of one input partition (a user's events are expected in one partition: producers
/// key by `user_id`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Sessionizer {
    users: IdMap<UserRuns>,
    /// The watermark minute of the last pruning pass.
    pruned_at: i64,
    /// The latest epoch in which a change was reported. Workers that share a partition (file
    /// replay) report a change no earlier than this, so a session is never retracted in an epoch
    /// before the one that added it. Epochs count from the start of each run: not persisted.
    #[serde(skip)]
    pub epoch: u64,
}

impl Sessionizer {
    /// Session key of an event: the user, or with `key = session_id` the user's session id.
    pub fn key(config: &SessionConfig, user: UserId, session_id: Option<u64>) -> (UserId, bool) {
        match (config.key, session_id) {
            (SessionKey::SessionId, Some(id)) => (user.rotate_left(17) ^ id ^ 0x9e37_79b9_7f4a_7c15, true),
            _ => (user, false),
        }
    }

    /// Adds one admitted event (at or after the watermark); reports the sessions it changed.
    pub fn add(&mut self, key: (UserId, bool), hit: Hit, config: &SessionConfig, out: &mut impl SessionSink) {
        let (max_ms, by_id) = (config.max_ms(), key.1);
        // A producer's session id joins events whatever the gap (until the maximum length).
        let timeout = if by_id { max_ms } else { config.timeout_ms() };
        let user = self.users.entry(key.0).or_insert_with(|| UserRuns { by_id, runs: Vec::new() });
        let runs = &mut user.runs;
        let t = hit.ts;
        let at = runs.partition_point(|r| r.start <= t);
        let joins_prev = at > 0 && t <= runs[at - 1].end + timeout;
        let joins_next = at < runs.len() && runs[at].start - t <= timeout;
        match (joins_prev, joins_next) {
            (false, false) => {
                let run = Run::new(&hit);
                emit(&run, 1, out);
                runs.insert(at, run);
            }
            (true, false) => {
                let run = &mut runs[at - 1];
                let k = run.piece_of(t, max_ms);
                if let Ok(i) = run.pieces.binary_search_by_key(&k, |(i, _)| *i) {
                    out.session(run.pieces[i].1, -1);
                }
                run.put(&hit, max_ms);
                if let Some(hits) = run.hits.as_mut() {
                    hits.push(hit);
                }
                let i = run.pieces.binary_search_by_key(&k, |(i, _)| *i).expect("just put");
                out.session(run.pieces[i].1, 1);
            }
            (false, true) => {
                // A new first event: the cut points move unless the run stays within one piece.
                let run = &mut runs[at];
                emit(run, -1, out);
                if run.pieces.len() == 1 && run.end - t < max_ms {
                    run.pieces[0].1.merge(&Summary::of(&hit));
                    run.start = t;
                    run.hits.as_mut().expect("a run after the watermark is young").push(hit);
                } else {
                    run.hits.as_mut().expect("a run after the watermark is young").push(hit);
                    run.recut(max_ms);
                }
                emit(run, 1, out);
            }
            (true, true) => {
                // The event bridges two runs: the later one joins the earlier one's cut points.
                let next = runs.remove(at);
                let run = &mut runs[at - 1];
                emit(run, -1, out);
                emit(&next, -1, out);
                run.put(&hit, max_ms);
                let next_hits = next.hits.expect("a run after the watermark is young");
                for h in &next_hits {
                    run.put(h, max_ms);
                }
                if let Some(hits) = run.hits.as_mut() {
                    hits.push(hit);
                    hits.extend(next_hits);
                }
                emit(run, 1, out);
            }
        }
    }

    /// Forgets what no event at or after `watermark` can change: runs that ended more than the
    /// timeout before it, pieces it has passed, and the events of runs that started before it.
    pub fn prune(&mut self, watermark: i64, config: &SessionConfig) {
        let minute = watermark.div_euclid(60_000);
        if minute <= self.pruned_at {
            return;
        }
        self.pruned_at = minute;
        let max_ms = config.max_ms();
        let timeout = config.timeout_ms();
        self.users.retain(|_, user| {
            let reach = if user.by_id { max_ms } else { timeout };
            user.runs.retain_mut(|run| {
                if run.end + reach < watermark {
                    return false;
                }
                run.pieces.retain(|(k, _)| run.start + (*k as i64 + 1) * max_ms > watermark);
                if run.start < watermark {
                    run.hits = None;
                }
                true
            });
            !user.runs.is_empty()
        });
    }

    pub fn users(&self) -> usize {
        self.users.len()
    }
}

/// One aggregate a session contributes to; the fact's diff carries the amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SessionStat {
    Sessions,
    Bounces,
    DurationMs,
    Events,
    PageViews,
    /// One session of this many whole seconds (for exact medians).
    DurationSecs(u32),
    Entry(Sym),
    Exit(Sym),
    /// One session whose last event is in this minute (for "in progress").
    EndMinute(crate::event::Minute),
}

/// The breakdowns of session views: everything, and the acquisition of the session's first event.
pub const SESSION_DIMS: [crate::facts::Dim; 4] =
    [crate::facts::Dim::All, crate::facts::Dim::UtmSource, crate::facts::Dim::Device, crate::facts::Dim::Country];

/// The `(start hour, dim, key, stat, amount)` cells of one session.
pub fn cells_of(s: &Summary, config: &SessionConfig) -> impl Iterator<Item = (Hour, crate::facts::Dim, Sym, SessionStat, i64)> {
    let hour = hour_of(s.start);
    let keys = [NONE, s.first.1[0], s.first.1[1], s.first.1[2]];
    let bounced = s.bounced(config);
    let duration = s.duration_ms();
    let stats = [
        Some((SessionStat::Sessions, 1)),
        bounced.then_some((SessionStat::Bounces, 1)),
        Some((SessionStat::DurationMs, duration)),
        Some((SessionStat::Events, s.events as i64)),
        Some((SessionStat::PageViews, s.page_views as i64)),
        Some((SessionStat::DurationSecs((duration / 1000) as u32), 1)),
        (s.page_views > 0).then_some((SessionStat::Entry(s.entry.1), 1)),
        (s.page_views > 0).then_some((SessionStat::Exit(s.exit.1), 1)),
        Some((SessionStat::EndMinute(crate::event::minute_of(s.end)), 1)),
    ];
    SESSION_DIMS.into_iter().zip(keys).flat_map(move |(dim, key)| {
        stats.into_iter().flatten().map(move |(stat, amount)| (hour, dim, key, stat, amount))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn hit(ts: i64) -> Hit {
        Hit { ts, page: 7, page_view: true, source: [1, 2, 3] }
    }

    /// The sessions the sink holds after consolidation.
    fn live(changes: &[(Summary, i64)]) -> Vec<(i64, i64, u32)> {
        let mut net: std::collections::BTreeMap<(i64, i64, u32), i64> = Default::default();
        for (s, d) in changes {
            *net.entry((s.start, s.end, s.events)).or_default() += d;
        }
        assert!(net.values().all(|d| *d >= 0), "retracted a session that was never reported: {net:?}");
        net.into_iter().filter(|(_, d)| *d > 0).map(|(k, _)| k).collect()
    }

    #[test]
    fn gaps_split_late_events_merge_and_long_runs_are_cut() {
        let config = SessionConfig { max_hours: 1, ..SessionConfig::default() };
        let mut s = Sessionizer::default();
        let mut out = Vec::new();
        let key = (1, false);
        s.add(key, hit(0), &config, &mut out);
        s.add(key, hit(40 * MIN), &config, &mut out);
        assert_eq!(live(&out), vec![(0, 0, 1), (40 * MIN, 40 * MIN, 1)]);
        // A late event 20 minutes in bridges the gap: one session.
        s.add(key, hit(20 * MIN), &config, &mut out);
        assert_eq!(live(&out), vec![(0, 40 * MIN, 3)]);
        // Past one hour from the first event, a new session starts, even without a gap.
        s.add(key, hit(65 * MIN), &config, &mut out);
        assert_eq!(live(&out), vec![(0, 40 * MIN, 3), (65 * MIN, 65 * MIN, 1)]);
        // An earlier first event moves the cut points of a young run.
        let mut s = Sessionizer::default();
        let mut out = Vec::new();
        for t in [30, 55, 80] {
            s.add(key, hit(t * MIN), &config, &mut out);
        }
        assert_eq!(live(&out), vec![(30 * MIN, 80 * MIN, 3)]);
        s.add(key, hit(10 * MIN), &config, &mut out);
        assert_eq!(live(&out), vec![(10 * MIN, 55 * MIN, 3), (80 * MIN, 80 * MIN, 1)]);
    }

    #[test]
    fn pruning_keeps_what_can_change_and_forgets_the_rest() {
        let config = SessionConfig::default();
        let mut s = Sessionizer::default();
        let mut out = Vec::new();
        for i in 0..1000 {
            s.add((9, false), hit(i * 1000), &config, &mut out);
        }
        s.prune(1000 * 1000, &config);
        assert_eq!(s.users(), 1);
        let run = &s.users[&9].runs[0];
        assert!(run.hits.is_none(), "a run that started before the watermark drops its events");
        s.prune(1000 * 1000 + 31 * MIN, &config);
        assert_eq!(s.users(), 0);
    }
}
