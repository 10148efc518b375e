//! Each user's recent events, on the worker that owns the user, and the funnel results and path
//! edges computed from them.
//!
//! Funnels need a user's events in order (and funnels added at run time need the events that are
//! still retained), so the per-user operator keeps them for the window, capped per user: a bot's millions of
//! events cost at most `max_events_per_user` each time it is re-evaluated, once per epoch.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use schema::event::{Sym, UserId, NONE};
use schema::ids::IdMap;
use schema::sessions::SessionConfig;

use crate::funnels::{cells_of, Attempt, Funnel, FunnelCell};
use crate::paths::{diff_edges, edges_of};

/// Page texts by symbol, kept with the events (funnel and retention patterns read them).
pub type PageTexts = IdMap<Box<str>>;

/// One event as funnels (and later paths and retention) need it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEvent {
    pub ts: i64,
    /// The engine's order among equal times (`crate::admitted::ord`).
    pub ord: u64,
    pub name: Sym,
    pub page: Sym,
    /// `utm_source`, `device`, `country`.
    pub source: [Sym; 3],
    /// `(key, value)` symbols of `props`, if any.
    pub props: Option<Box<[(Sym, Sym)]>>,
    /// Its path node (cleaned page or conversion event), `NONE` if it is not a path step.
    #[serde(default)]
    pub node: Sym,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct UserLog {
    /// The producer's `user_id`, for lists of users ("stuck at step 2").
    id: Box<str>,
    /// Sorted by `(ts, ord)`: the engine's order, whatever the arrival order. A deque: at the
    /// cap, every new event drops the oldest.
    events: VecDeque<LogEvent>,
    /// Funnels (bit = registry index, the last bit standing for all beyond) to re-evaluate.
    dirty: u64,
    /// Reported results per funnel (by registry index): the user's best attempt, or each
    /// session's for funnels over sessions.
    results: Vec<SmallVec<[Attempt; 1]>>,
    /// Path edges as last reported (sorted), and whether they need recomputing.
    edges: Vec<(Sym, Sym)>,
    edges_dirty: bool,
}

/// What changed in the results computed from the logs: funnel aggregate cells, the users whose
/// attempt has not converted, and path edges.
pub trait LogSink {
    fn cell(&mut self, cell: FunnelCell);
    /// A user whose best attempt stopped at `step` (0-based, last reached) since `entry_ts`.
    fn open_attempt(&mut self, funnel: u32, step: u8, entry_ts: i64, user: &str, diff: i64);
    fn edge(&mut self, from: Sym, to: Sym, diff: i64);
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UserLogs {
    users: IdMap<UserLog>,
    pages: PageTexts,
    dirty: Vec<UserId>,
    /// Fingerprint of each funnel (by registry index) whose results are current here.
    computed: Vec<u64>,
    /// The floor (ms) of the last pruning pass.
    floor: i64,
    /// Events dropped because a user exceeded the cap.
    pub capped_events: u64,
    /// Fingerprint of the path rules the events' nodes were computed with.
    #[serde(default)]
    path_rules: u64,
}

impl UserLogs {
    /// Recomputes every logged event's path node when the rules changed (a restart with a new
    /// config): edges are then recomputed at the next drain. `node_of(event, page text)`.
    pub fn set_path_rules(&mut self, fingerprint: u64, mut node_of: impl FnMut(&LogEvent, Option<&str>) -> Sym) {
        if self.path_rules == fingerprint {
            return;
        }
        self.path_rules = fingerprint;
        for (user, log) in self.users.iter_mut() {
            for e in log.events.iter_mut() {
                e.node = node_of(e, self.pages.get(&e.page).map(|t| &**t));
            }
            mark(&mut self.dirty, *user, log, 0, true);
        }
    }

    /// Logs an event (its page text given to [`Self::note_page`] first). `funnels` is the
    /// caller's view of the registry: only the funnels the event can affect are re-evaluated (any
    /// funnel beyond that view always is).
    /// `steps`: the event's step mask for each funnel (`Funnel::step_mask`).
    pub fn add(&mut self, user: UserId, id: &str, event: LogEvent, cap: usize, funnels: &[Arc<Funnel>], steps: &[u32]) {
        let log = self.users.entry(user).or_insert_with(|| UserLog { id: id.into(), ..UserLog::default() });
        // Most events are the user's newest.
        let at = match log.events.back() {
            Some(last) if (last.ts, last.ord) > (event.ts, event.ord) => {
                log.events.partition_point(|e| (e.ts, e.ord) <= (event.ts, event.ord))
            }
            _ => log.events.len(),
        };
        // Funnels the caller does not know yet: always.
        let mut bits = if funnels.len() >= 63 { 1 << 63 } else { ALL << funnels.len() };
        let before = at.checked_sub(1).and_then(|i| log.events.get(i));
        for (i, (f, mask)) in funnels.iter().zip(steps).enumerate() {
            if f.relevant(&event, *mask, before, &self.pages) {
                bits |= 1 << i.min(63);
            }
        }
        // Edges change with a new step, or with any event once the user has edges (it can join
        // or split sessions).
        let edges = event.node != NONE || !log.edges.is_empty();
        log.events.insert(at, event);
        if log.events.len() > cap {
            // Keep the most recent: what funnels starting now can still use.
            let excess = log.events.len() - cap;
            log.events.drain(..excess);
            self.capped_events += excess as u64;
            bits = ALL;
        }
        mark(&mut self.dirty, user, log, bits, edges);
    }

    /// Drops events before `floor` (the window's start); users who lost events are re-evaluated
    /// at the next drain, users with none left are forgotten once their results are retracted.
    pub fn prune(&mut self, floor: i64) {
        if floor <= self.floor {
            return;
        }
        self.floor = floor;
        for (user, log) in self.users.iter_mut() {
            let gone = log.events.partition_point(|e| e.ts < floor);
            if gone > 0 {
                log.events.drain(..gone);
                let edges = !log.edges.is_empty();
                mark(&mut self.dirty, *user, log, ALL, edges);
            }
        }
    }

    /// Re-evaluates changed users, and every user for a funnel that is new or changed here.
    pub fn drain(&mut self, funnels: &[Arc<Funnel>], sessions: &SessionConfig, out: &mut impl LogSink) {
        for (i, funnel) in funnels.iter().enumerate() {
            if self.computed.get(i) == Some(&funnel.fingerprint) {
                continue;
            }
            for log in self.users.values_mut() {
                let result = funnel.evaluate_units(log.events.make_contiguous(), &self.pages, sessions);
                report(i as u32, log, result, out);
            }
            if self.computed.len() <= i {
                self.computed.resize(i + 1, 0);
            }
            self.computed[i] = funnel.fingerprint;
        }
        for user in std::mem::take(&mut self.dirty) {
            let Some(log) = self.users.get_mut(&user) else { continue };
            let bits = std::mem::take(&mut log.dirty);
            for (i, funnel) in funnels.iter().enumerate() {
                if bits & (1 << i.min(63)) != 0 {
                    let result = funnel.evaluate_units(log.events.make_contiguous(), &self.pages, sessions);
                    report(i as u32, log, result, out);
                }
            }
            if std::mem::take(&mut log.edges_dirty) {
                let edges = edges_of(log.events.make_contiguous(), sessions);
                diff_edges(&log.edges, &edges, |from, to, diff| out.edge(from, to, diff));
                log.edges = edges;
            }
            if log.events.is_empty() {
                self.users.remove(&user);
            }
        }
    }

    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// Remembers a page's text (before [`Self::add`]: funnel and retention patterns read it).
    pub fn note_page(&mut self, page: Sym, text: &str) {
        if page != NONE {
            self.pages.entry(page).or_insert_with(|| text.into());
        }
    }

    pub fn pages(&self) -> &PageTexts {
        &self.pages
    }

    /// Every user's retained events, in time order.
    pub fn for_each_user(&self, mut f: impl FnMut(UserId, &mut dyn Iterator<Item = &LogEvent>)) {
        for (user, log) in &self.users {
            f(*user, &mut log.events.iter());
        }
    }
}

const ALL: u64 = u64::MAX;

fn mark(dirty: &mut Vec<UserId>, user: UserId, log: &mut UserLog, bits: u64, edges: bool) {
    if log.dirty == 0 && !log.edges_dirty && (bits != 0 || edges) {
        dirty.push(user);
    }
    log.dirty |= bits;
    log.edges_dirty |= edges;
}

fn report(index: u32, log: &mut UserLog, result: SmallVec<[Attempt; 1]>, out: &mut impl LogSink) {
    let i = index as usize;
    if log.results.len() <= i {
        log.results.resize(i + 1, SmallVec::new());
    }
    if log.results[i] == result {
        return;
    }
    let old = std::mem::take(&mut log.results[i]);
    // The sink consolidates: cells that did not change cancel there.
    for a in &old {
        cells_of(index, a).for_each(|(f, k, d, s, c)| out.cell((f, k, d, s, -c)));
    }
    for a in &result {
        cells_of(index, a).for_each(|c| out.cell(c));
    }
    // An attempt that only gained a step time keeps its open-attempt entry.
    let before: SmallVec<[(u8, i64); 1]> = old.iter().filter_map(Attempt::open).collect();
    let after: SmallVec<[(u8, i64); 1]> = result.iter().filter_map(Attempt::open).collect();
    for (step, entry) in before.iter().filter(|b| !after.contains(b)) {
        out.open_attempt(index, *step, *entry, &log.id, -1);
    }
    for (step, entry) in after.iter().filter(|a| !before.contains(a)) {
        out.open_attempt(index, *step, *entry, &log.id, 1);
    }
    log.results[i] = result;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logs one event for user 1, matching it against the funnels' steps as `Users::add` does.
    fn add(logs: &mut UserLogs, event: LogEvent, funnels: &[Arc<Funnel>]) {
        let masks: Vec<u32> = funnels.iter().map(|f| f.step_mask(&event, logs.pages())).collect();
        logs.add(1, "u", event, 100, funnels, &masks);
    }
    use schema::event::Sym;
    use schema::funnels::{FunnelDef, FunnelStat};

    const MIN: i64 = 60_000;

    #[derive(Default)]
    struct Cells(std::collections::BTreeMap<(u32, Sym, u32, FunnelStat), i64>);

    impl LogSink for Cells {
        fn cell(&mut self, (f, k, d, s, c): FunnelCell) {
            *self.0.entry((f, k, d, s)).or_default() += c;
            self.0.retain(|_, c| *c != 0);
        }
        fn open_attempt(&mut self, _: u32, _: u8, _: i64, _: &str, _: i64) {}
        fn edge(&mut self, _: Sym, _: Sym, _: i64) {}
    }

    fn event(ts: i64, name: &str) -> LogEvent {
        LogEvent { ts, ord: 0, name: schema::event::sym(name), page: NONE, source: [NONE; 3], props: None, node: NONE }
    }

    #[derive(Default)]
    struct Edges(std::collections::BTreeMap<(Sym, Sym), i64>);

    impl LogSink for Edges {
        fn cell(&mut self, _: FunnelCell) {}
        fn open_attempt(&mut self, _: u32, _: u8, _: i64, _: &str, _: i64) {}
        fn edge(&mut self, from: Sym, to: Sym, diff: i64) {
            *self.0.entry((from, to)).or_default() += diff;
            self.0.retain(|_, n| *n != 0);
        }
    }

    #[test]
    fn new_path_rules_re_clean_the_logged_pages_and_move_the_edges() {
        use schema::event::sym;
        let sessions = SessionConfig::default();
        let (mut logs, mut out) = (UserLogs::default(), Edges::default());
        let view = |ts: i64, page: &str| LogEvent {
            ts,
            ord: ts as u64,
            name: schema::event::PAGE_VIEW,
            page: sym(page),
            source: [NONE; 3],
            props: None,
            node: sym(page),
        };
        logs.set_path_rules(1, |e, _| e.node);
        logs.note_page(sym("/p/1"), "/p/1");
        logs.note_page(sym("/p/2"), "/p/2");
        add(&mut logs, view(0, "/p/1"), &[]);
        add(&mut logs, view(1000, "/p/2"), &[]);
        logs.drain(&[], &sessions, &mut out);
        assert_eq!(out.0[&(sym("/p/1"), sym("/p/2"))], 1);
        // Restarted with a rule that maps both pages to one node.
        logs.set_path_rules(
            2,
            |e, text| if text.is_some_and(|t| t.starts_with("/p/")) { sym("/p/:id") } else { e.node },
        );
        logs.drain(&[], &sessions, &mut out);
        let (entry, exit, id) = (sym(schema::paths::ENTRY), sym(schema::paths::EXIT), sym("/p/:id"));
        let want: std::collections::BTreeMap<_, _> =
            [((entry, id), 1), ((id, id), 1), ((id, exit), 1)].into_iter().collect();
        assert_eq!(out.0, want);
    }

    #[test]
    fn an_event_that_joins_two_sessions_re_evaluates_funnels_over_sessions() {
        let def: FunnelDef = serde_json::from_value(serde_json::json!(
            {"name": "s", "over": "sessions", "steps": [{"event": "a"}, {"event": "b"}]}
        ))
        .unwrap();
        let funnels = vec![Arc::new(Funnel::new(def).unwrap())];
        let sessions = SessionConfig::default();
        let (mut logs, mut out) = (UserLogs::default(), Cells::default());
        add(&mut logs, event(0, "a"), &funnels);
        add(&mut logs, event(40 * MIN, "b"), &funnels);
        logs.drain(&funnels, &sessions, &mut out);
        let reached = |out: &Cells, step| {
            out.0.iter().filter(|(k, _)| k.3 == FunnelStat::Reached(step)).map(|(_, c)| c).sum::<i64>()
        };
        assert_eq!((reached(&out, 0), reached(&out, 1)), (1, 0), "two sessions: b is in the second");
        // A click matches no step, but joins the sessions: the funnel converts.
        add(&mut logs, event(20 * MIN, "click"), &funnels);
        logs.drain(&funnels, &sessions, &mut out);
        assert_eq!((reached(&out, 0), reached(&out, 1)), (1, 1));
    }
}
