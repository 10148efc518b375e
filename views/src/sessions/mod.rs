//! Sessions, computed incrementally per user in one place (paths and retention reuse the boundaries).
//!
//! A user's events with no gap longer than the inactivity timeout form a *run*; a run is cut every
//! `max` (24 h) from its first event, and each piece is a session. Only what can still change is
//! kept: runs that a new event could touch (end within the timeout of the watermark) and, of those,
//! the pieces a new event could land in. Every event is at or after the engine's floor (see `EngineTime`), so
//! state behind it is final.
//!
//! Cost per event is O(1) in the user's history: a hash lookup, then a summary update of the one
//! piece the event lands in. Two rare cases re-cut a run: a late event that becomes its new first
//! event, or one that bridges two runs. Both need the later run to have started after the
//! watermark (it is young, so its span is bounded by the lateness), and re-cutting changes anything
//! only if a cut point falls inside it; only then are its events kept (see `at_risk`). A bot with
//! millions of events therefore pays O(1) per event, whatever its history.

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use schema::event::{Sym, UserId, NONE};
use schema::ids::IdMap;
pub use schema::sessions::{SessionConfig, SessionKey};

/// What a session needs to know about one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hit {
    pub ts: i64,
    /// The engine's order among equal times (`crate::admitted::ord`).
    pub ord: u64,
    pub page: Sym,
    pub page_view: bool,
    /// `utm_source`, `device`, `country`.
    pub source: [Sym; 3],
}

/// One session. Events with equal times are taken in the engine's order (`(ts, ord)`), so the
/// entry and exit page and the acquisition do not depend on arrival order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Summary {
    pub start: i64,
    pub end: i64,
    pub events: u32,
    pub page_views: u32,
    /// `(ts, ord)` of the first event, whose `source` is the session's acquisition.
    pub first: (i64, u64),
    /// `(ts, ord, page)` of the first page view (`(i64::MAX, 0, NONE)` without one).
    pub entry: (i64, u64, Sym),
    /// `(ts, ord, page)` of the last page view (`(i64::MIN, 0, NONE)` without one).
    pub exit: (i64, u64, Sym),
    /// `[utm_source, device, country]` of the first event: the session's acquisition.
    pub source: [Sym; 3],
}

impl Summary {
    pub fn of(hit: &Hit) -> Summary {
        let (entry, exit) = if hit.page_view {
            ((hit.ts, hit.ord, hit.page), (hit.ts, hit.ord, hit.page))
        } else {
            ((i64::MAX, 0, NONE), (i64::MIN, 0, NONE))
        };
        Summary {
            start: hit.ts,
            end: hit.ts,
            events: 1,
            page_views: hit.page_view as u32,
            first: (hit.ts, hit.ord),
            entry,
            exit,
            source: hit.source,
        }
    }

    pub fn merge(&mut self, other: &Summary) {
        if other.first < self.first {
            self.first = other.first;
            self.source = other.source;
        }
        self.start = self.start.min(other.start);
        self.end = self.end.max(other.end);
        self.events += other.events;
        self.page_views += other.page_views;
        self.entry = self.entry.min(other.entry);
        self.exit = self.exit.max(other.exit);
    }

    pub fn duration_ms(&self) -> i64 {
        self.end - self.start
    }

    pub fn bounced(&self, config: &SessionConfig) -> bool {
        self.page_views == 1 && self.duration_ms() < config.bounce_seconds as i64 * 1000
    }
}

/// A session of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Piece {
    /// Index since the run's start, in units of the maximum length.
    k: u32,
    now: Summary,
}

/// Events without a gap over the timeout; cut into sessions every `max` from `start`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Run {
    start: i64,
    end: i64,
    /// Pieces that a new event could still land in.
    pieces: SmallVec<[Piece; 1]>,
    /// The run's events, kept only while a late event could make it be re-cut (see `at_risk`).
    /// Boxed: rarely present, and 8 bytes instead of 24 in every run of every user.
    #[allow(clippy::box_collection)]
    hits: Option<Box<Vec<Hit>>>,
}

impl Run {
    fn new(hit: &Hit, keep_hits: bool) -> Run {
        let mut pieces = SmallVec::new();
        pieces.push(Piece { k: 0, now: Summary::of(hit) });
        Run { start: hit.ts, end: hit.ts, pieces, hits: keep_hits.then(|| Box::new(vec![*hit])) }
    }

    fn piece_of(&self, ts: i64, max_ms: i64) -> u32 {
        ((ts - self.start) / max_ms) as u32
    }

    fn put_summary(&mut self, summary: &Summary, max_ms: i64) {
        let k = self.piece_of(summary.start, max_ms);
        match self.pieces.binary_search_by_key(&k, |p| p.k) {
            Ok(i) => self.pieces[i].now.merge(summary),
            Err(i) => self.pieces.insert(i, Piece { k, now: *summary }),
        }
        self.start = self.start.min(summary.start);
        self.end = self.end.max(summary.end);
    }

    fn put(&mut self, hit: &Hit, max_ms: i64) {
        self.put_summary(&Summary::of(hit), max_ms);
        if let Some(hits) = self.hits.as_mut() {
            hits.push(*hit);
        }
    }

    /// Moves a later run's events into this run's pieces. Without its events (a case `at_risk`
    /// rules out for clocks within the horizon) whole pieces are placed by their start, which is
    /// exact unless one straddles a cut point: returns exactness.
    fn absorb(&mut self, other: Run, max_ms: i64) -> bool {
        match other.hits {
            Some(hits) => {
                hits.iter().for_each(|h| self.put(h, max_ms));
                true
            }
            None => {
                other.pieces.iter().for_each(|p| self.put_summary(&p.now, max_ms));
                other.pieces.len() == 1 && self.piece_of(other.start, max_ms) == self.piece_of(other.end, max_ms)
            }
        }
    }
}

/// Receives session changes: `+1` for a session that now exists, `-1` for one that no longer does.
pub trait SessionSink {
    fn session(&mut self, summary: Summary, diff: i64);
    /// `old` becomes `new`: sinks that aggregate can send only the difference.
    fn replace(&mut self, old: Summary, new: Summary) {
        self.session(old, -1);
        self.session(new, 1);
    }
}

impl SessionSink for Vec<(Summary, i64)> {
    fn session(&mut self, summary: Summary, diff: i64) {
        self.push((summary, diff));
    }
}

/// One session key's runs, in time order.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct UserRuns {
    /// Keyed by the producer's session id (joins across any gap up to `max`).
    by_id: bool,
    /// Changed since the last [`Sessionizer::drain`] (its sessions then are in `Sessionizer::dirty`).
    dirty: bool,
    runs: SmallVec<[Run; 1]>,
}

impl UserRuns {
    fn sessions(&self) -> impl Iterator<Item = &Summary> {
        self.runs.iter().flat_map(|r| r.pieces.iter().map(|p| &p.now))
    }
}

/// The sessions of the users one worker owns (events reach it by user, from any partition).
/// Events update summaries in place; [`Sessionizer::drain`] reports what
/// changed once per epoch, so a user with many events in an epoch costs one change. What was last
/// reported is what a user had when first touched after a drain, so only touched users keep a copy.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Sessionizer {
    users: IdMap<UserRuns>,
    /// Users touched since the last drain, with their sessions as last reported.
    dirty: Vec<(UserId, SmallVec<[Summary; 1]>)>,
    /// The watermark minute of the last pruning pass.
    pruned_at: i64,
    /// Re-cuts done from whole pieces because a run's events were not kept (see `Run::absorb`).
    pub approximate_recuts: u64,
}

/// Whether a run starting at `start` may later have to be re-cut, which needs its events: when a
/// late event moves its start or joins it to an earlier run, and a cut point then falls inside it.
/// Every such change happens while the run is young (started after the watermark), so its span is
/// bounded by `horizon` (lateness + clock skew) for clocks within the skew. Only a cut point
/// within reach puts it at risk: with 24-hour sessions, a run right after a still-open run of
/// almost a day (a bot). Ordinary traffic keeps no events.
fn at_risk(earlier: &[Run], start: i64, max_ms: i64, timeout: i64, horizon: i64) -> bool {
    if max_ms <= 2 * timeout + horizon {
        return true;
    }
    // Late events can also move the start back (by up to the horizon) across a cut point.
    let reach = horizon + timeout;
    earlier.iter().any(|p| {
        let cut_before = p.start + (start - p.start) / max_ms * max_ms;
        // A run's own start is not a cut point of it.
        (cut_before > p.start && start - cut_before <= reach) || cut_before + max_ms - start <= reach
    })
}

impl Sessionizer {
    /// Session key of an event: the user, or with `key = session_id` the user's session id.
    pub fn key(config: &SessionConfig, user: UserId, session_id: Option<u64>) -> (UserId, bool) {
        match (config.key, session_id) {
            (SessionKey::SessionId, Some(id)) => (user.rotate_left(17) ^ id ^ 0x9e37_79b9_7f4a_7c15, true),
            _ => (user, false),
        }
    }

    /// Adds one admitted event (at or after the watermark). `horizon_ms` bounds how far a young
    /// run can span (lateness + clock skew).
    pub fn add(&mut self, key: (UserId, bool), hit: Hit, config: &SessionConfig, horizon_ms: i64) {
        let (max_ms, by_id) = (config.max_ms(), key.1);
        // A producer's session id joins events whatever the gap (until the maximum length).
        let timeout = if by_id { max_ms } else { config.timeout_ms() };
        let user = self.users.entry(key.0).or_insert_with(|| UserRuns { by_id, ..UserRuns::default() });
        if !user.dirty {
            user.dirty = true;
            self.dirty.push((key.0, user.sessions().copied().collect()));
        }
        let runs = &mut user.runs;
        let t = hit.ts;
        let at = runs.partition_point(|r| r.start <= t);
        let joins_prev = at > 0 && t <= runs[at - 1].end + timeout;
        let joins_next = at < runs.len() && runs[at].start - t <= timeout;
        let exact = match (joins_prev, joins_next) {
            (false, false) => {
                let run = Run::new(&hit, at_risk(&runs[..at], t, max_ms, timeout, horizon_ms));
                runs.insert(at, run);
                true
            }
            (true, false) => {
                runs[at - 1].put(&hit, max_ms);
                true
            }
            (false, true) => {
                // A new first event: the cut points move with the start.
                let old = runs.remove(at);
                let mut run = Run::new(&hit, old.hits.is_some());
                let exact = run.absorb(old, max_ms);
                runs.insert(at, run);
                exact
            }
            (true, true) => {
                // The event bridges two runs: the later one joins the earlier one's cut points.
                let next = runs.remove(at);
                let run = &mut runs[at - 1];
                run.put(&hit, max_ms);
                run.absorb(next, max_ms)
            }
        };
        if !exact {
            self.approximate_recuts += 1;
        }
    }

    /// Reports every session changed since the last drain. A session is identified by its start
    /// (unique within a user): one whose start changed is retracted and added again.
    pub fn drain(&mut self, out: &mut impl SessionSink) {
        for (key, before) in self.dirty.drain(..) {
            let user = self.users.get_mut(&key).expect("dirty users are not pruned");
            user.dirty = false;
            let mut matched: SmallVec<[bool; 1]> = smallvec::smallvec![false; before.len()];
            for now in user.sessions() {
                match before.iter().position(|b| b.start == now.start) {
                    Some(i) => {
                        matched[i] = true;
                        if before[i] != *now {
                            out.replace(before[i], *now);
                        }
                    }
                    None => out.session(*now, 1),
                }
            }
            for (old, _) in before.iter().zip(&matched).filter(|(_, m)| !**m) {
                out.session(*old, -1);
            }
        }
    }

    /// Forgets what no event at or after `watermark` can change: runs that ended more than the
    /// timeout before it, pieces it has passed, and the events of runs that started before it.
    /// Call after [`Self::drain`]: what it forgets stays reported.
    pub fn prune(&mut self, watermark: i64, config: &SessionConfig) {
        debug_assert!(self.dirty.is_empty(), "prune after drain");
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
                run.pieces.retain(|p| run.start + (p.k as i64 + 1) * max_ms > watermark);
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

/// Sessions of one user's events sorted by time, as index ranges, by the sessionizer's rules: a
/// gap over the timeout ends a run, a run is cut every `max` from its first event. (Funnels over
/// sessions split a user's retained events with it.)
pub fn split(times: &[i64], config: &SessionConfig) -> Vec<std::ops::Range<usize>> {
    let (timeout, max) = (config.timeout_ms(), config.max_ms());
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    let (mut run_start, mut piece) = (0i64, 0i64);
    for (i, &t) in times.iter().enumerate() {
        let new_run = i == 0 || t - times[i - 1] > timeout;
        if new_run {
            run_start = t;
        }
        let k = (t - run_start) / max;
        if new_run || k != piece {
            piece = k;
            out.push(i..i + 1);
        } else {
            out.last_mut().expect("a session is open").end = i + 1;
        }
    }
    out
}

pub mod cells;

pub use cells::{cell_changes, cells_of, SessionCell};

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn add(
        s: &mut Sessionizer,
        key: (u64, bool),
        hit: Hit,
        config: &SessionConfig,
        horizon: i64,
        out: &mut Vec<(Summary, i64)>,
    ) {
        s.add(key, hit, config, horizon);
        s.drain(out);
    }

    fn hit(ts: i64) -> Hit {
        Hit { ts, ord: ts as u64, page: 7, page_view: true, source: [1, 2, 3] }
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
        add(&mut s, key, hit(0), &config, 6 * MIN, &mut out);
        add(&mut s, key, hit(40 * MIN), &config, 6 * MIN, &mut out);
        assert_eq!(live(&out), vec![(0, 0, 1), (40 * MIN, 40 * MIN, 1)]);
        // A late event 20 minutes in bridges the gap: one session.
        add(&mut s, key, hit(20 * MIN), &config, 6 * MIN, &mut out);
        assert_eq!(live(&out), vec![(0, 40 * MIN, 3)]);
        // Past one hour from the first event, a new session starts, even without a gap.
        add(&mut s, key, hit(65 * MIN), &config, 6 * MIN, &mut out);
        assert_eq!(live(&out), vec![(0, 40 * MIN, 3), (65 * MIN, 65 * MIN, 1)]);
        // An earlier first event moves the cut points of a young run.
        let mut s = Sessionizer::default();
        let mut out = Vec::new();
        for t in [30, 55, 80] {
            add(&mut s, key, hit(t * MIN), &config, 6 * MIN, &mut out);
        }
        assert_eq!(live(&out), vec![(30 * MIN, 80 * MIN, 3)]);
        add(&mut s, key, hit(10 * MIN), &config, 6 * MIN, &mut out);
        assert_eq!(live(&out), vec![(10 * MIN, 55 * MIN, 3), (80 * MIN, 80 * MIN, 1)]);
    }

    #[test]
    fn a_late_event_joining_a_run_to_a_long_one_re_cuts_it_at_the_cut_point() {
        // Timeout 1 min, max 1 h, horizon 5 min. A long run (a bot) covers 0..58 min; a new run
        // starts at 59.5 min, within the horizon of the long run's cut point at 60 min, so it
        // keeps its events; the late event at 58.8 min joins both, and the 60.5 min event now
        // belongs to the session after the cut.
        let config = SessionConfig { inactivity_minutes: 1, max_hours: 1, ..SessionConfig::default() };
        let (mut s, mut out) = (Sessionizer::default(), Vec::new());
        let key = (5, false);
        let horizon = 5 * MIN;
        for i in 0..=58 {
            add(&mut s, key, hit(i * MIN), &config, horizon, &mut out);
        }
        add(&mut s, key, hit(59 * MIN + 30_000), &config, horizon, &mut out);
        add(&mut s, key, hit(60 * MIN + 30_000), &config, horizon, &mut out);
        s.prune(56 * MIN, &config);
        assert_eq!(live(&out), vec![(0, 58 * MIN, 59), (59 * MIN + 30_000, 60 * MIN + 30_000, 2)]);
        add(&mut s, key, hit(58 * MIN + 48_000), &config, horizon, &mut out);
        assert_eq!(live(&out), vec![(0, 59 * MIN + 30_000, 61), (60 * MIN + 30_000, 60 * MIN + 30_000, 1)]);
        assert_eq!(s.approximate_recuts, 0);
    }

    #[test]
    fn late_events_moving_a_start_back_across_a_cut_point_re_cut_exactly() {
        // A long run every 30 s over 0..58:30; a new run at 60:15 and 60:30; late events at
        // 59:45 (the new run's first event, now before the cut at 60:00) and 59:15 (bridging).
        let config = SessionConfig { inactivity_minutes: 1, max_hours: 1, ..SessionConfig::default() };
        let (mut s, mut out) = (Sessionizer::default(), Vec::new());
        let (key, horizon) = ((5, false), 5 * MIN);
        for i in 0..=117 {
            add(&mut s, key, hit(i * 30_000), &config, horizon, &mut out);
        }
        for t in [60 * MIN + 15_000, 60 * MIN + 30_000, 59 * MIN + 45_000, 59 * MIN + 15_000] {
            add(&mut s, key, hit(t), &config, horizon, &mut out);
        }
        assert_eq!(live(&out), vec![(0, 59 * MIN + 45_000, 120), (60 * MIN + 15_000, 60 * MIN + 30_000, 2)]);
        assert_eq!(s.approximate_recuts, 0);
    }

    #[test]
    fn producer_session_ids_group_events_whatever_the_gap() {
        let config = SessionConfig { key: SessionKey::SessionId, ..SessionConfig::default() };
        let (mut s, mut out) = (Sessionizer::default(), Vec::new());
        let (a, b) = (Sessionizer::key(&config, 1, Some(10)), Sessionizer::key(&config, 1, Some(11)));
        add(&mut s, a, hit(0), &config, 6 * MIN, &mut out);
        add(&mut s, b, hit(MIN), &config, 6 * MIN, &mut out);
        add(&mut s, a, hit(120 * MIN), &config, 6 * MIN, &mut out);
        assert_eq!(live(&out), vec![(0, 120 * MIN, 2), (MIN, MIN, 1)]);
        // Without an id, the user's events fall back to inactivity.
        let plain = Sessionizer::key(&config, 1, None);
        assert_eq!(plain, (1, false));
        assert_ne!(a.0, b.0);
    }

    #[test]
    fn split_cuts_at_gaps_and_every_max_from_the_run_start() {
        let config = SessionConfig { inactivity_minutes: 15, max_hours: 1, ..SessionConfig::default() };
        // 0..70 min every 10 min (one run, cut at 60), then a 16-minute gap, then one event.
        let mut times: Vec<i64> = (0..=7).map(|i| i * 10 * MIN).collect();
        times.push(86 * MIN);
        assert_eq!(split(&times, &config), vec![0..6, 6..8, 8..9]);
        // A gap of exactly the timeout does not end a session.
        assert_eq!(split(&[0, 15 * MIN], &config), vec![0..2]);
        assert!(split(&[], &config).is_empty());
    }

    #[test]
    fn pruning_keeps_what_can_change_and_forgets_the_rest() {
        let config = SessionConfig::default();
        let mut s = Sessionizer::default();
        let mut out = Vec::new();
        for i in 0..1000 {
            add(&mut s, (9, false), hit(i * 1000), &config, 6 * MIN, &mut out);
        }
        s.prune(1000 * 1000, &config);
        assert_eq!(s.users(), 1);
        let run = &s.users[&9].runs[0];
        assert!(run.hits.is_none(), "a run that started before the watermark drops its events");
        s.prune(1000 * 1000 + 31 * MIN, &config);
        assert_eq!(s.users(), 0);
    }
}
