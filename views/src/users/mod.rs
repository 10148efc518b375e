//! The per-user views of the users one worker owns: sessions, user logs (funnels and paths),
//! retention, active users and per-key counts, fed with the events that the exchange by user
//! brings to this worker from every input partition. [`operator`] runs it inside timely.
//!
//! Each epoch: the definitions and page texts of the epoch are taken up, the epoch's events are
//! added in any order (every state machine orders a user's events by `(ts, ord)` itself), then
//! [`Users::end_epoch`] reports what changed as cell changes and forgets what the engine's floor
//! has made final.

pub mod operator;

use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use schema::alert_rules::AlertRule;
use schema::cells::{Cell, Dim, Floors};
use schema::event::{Minute, Sym};
use schema::funnels::{step_name, step_sym};
use schema::paths::Cleaner;
use schema::retention::RetentionCell;
use schema::time::{minute_of, minute_start_ms};
use schema::ViewConfig;
use serde::{Deserialize, Serialize};

use crate::admitted::Admitted;
use crate::control::{Defs, EngineTime};
use crate::funnels::{Funnel, FunnelCell};
use crate::keys::KeyCounts;
use crate::retention::cohorts::{CohortSink, Cohorts};
use crate::retention::Retention;
use crate::sessions::{cell_changes, cells_of, Hit, SessionSink, Sessionizer, Summary};
use crate::userlog::{LogEvent, LogSink, UserLogs};

/// How far ahead of the wall clock an event may move a partition's head (the admission clock
/// caps it there): the span of a young session run is bounded by the lateness plus this.
pub const MAX_HEAD_SKEW_MS: i64 = 60_000;

/// What is persisted in a snapshot: everything but the compiled definitions.
#[derive(Default, Serialize, Deserialize)]
pub struct UsersState {
    pub sessions: Sessionizer,
    pub logs: UserLogs,
    pub cohorts: Cohorts,
    pub keys: KeyCounts,
    /// The user-minutes sent, by minute, while the active-user window can still hold them: a
    /// user's events all reach this worker, so a user-minute is sent once (live, with 100 ms
    /// epochs, once per epoch was one cell per event), and the read side counts it as one.
    pub minutes: std::collections::BTreeMap<Minute, schema::ids::IdSet>,
}

pub struct Users {
    config: ViewConfig,
    lateness_ms: i64,
    peers: u32,
    state: UsersState,
    cleaner: Cleaner,
    funnels: Vec<Arc<Funnel>>,
    retention: Vec<Arc<Retention>>,
    /// Each funnel's step symbols (`funnel#k`), whose per-minute counts funnel-drop alerts watch.
    step_syms: Vec<Vec<Sym>>,
    key_window: u32,
    /// Names this worker has published (step names, re-cleaned path nodes).
    named: FxHashSet<Sym>,
    /// This epoch's changes, consolidated before they leave the worker.
    changes: Changes,
    /// Funnel step matches per minute this epoch.
    steps: FxHashMap<(Sym, Minute), i64>,
    /// The floor the state was last pruned at.
    floor: i64,
}

/// Funnel, path, session and retention changes of one epoch.
#[derive(Default)]
struct Changes {
    funnels: FxHashMap<(u32, Sym, u32, schema::funnels::FunnelStat), i64>,
    open: FxHashMap<(u32, u8, i64, String), i64>,
    edges: FxHashMap<(Sym, Sym), i64>,
    retention: FxHashMap<(u32, RetentionCell), i64>,
    sessions: FxHashMap<(schema::Hour, [Sym; 3], schema::sessions::SessionStat), i64>,
}

impl CohortSink for Changes {
    fn cell(&mut self, retention: u32, cell: RetentionCell, diff: i64) {
        *self.retention.entry((retention, cell)).or_default() += diff;
    }
}

impl LogSink for Changes {
    fn edge(&mut self, from: Sym, to: Sym, diff: i64) {
        *self.edges.entry((from, to)).or_default() += diff;
    }

    fn cell(&mut self, (funnel, key, day, stat, n): FunnelCell) {
        *self.funnels.entry((funnel, key, day, stat)).or_default() += n;
    }

    fn open_attempt(&mut self, funnel: u32, step: u8, entry_ts: i64, user: &str, diff: i64) {
        *self.open.entry((funnel, step, entry_ts, user.to_string())).or_default() += diff;
    }
}

/// Turns session changes into changes of the aggregate cells.
struct SessionCells<'a> {
    cells: &'a mut FxHashMap<(schema::Hour, [Sym; 3], schema::sessions::SessionStat), i64>,
    config: &'a schema::sessions::SessionConfig,
}

impl SessionSink for SessionCells<'_> {
    fn session(&mut self, summary: Summary, diff: i64) {
        for (hour, source, stat, amount) in cells_of(&summary, self.config) {
            *self.cells.entry((hour, source, stat)).or_default() += diff * amount;
        }
    }

    fn replace(&mut self, old: Summary, new: Summary) {
        for (hour, source, stat, amount) in cell_changes(&old, &new, self.config) {
            *self.cells.entry((hour, source, stat)).or_default() += amount;
        }
    }
}

impl Users {
    /// `peers`: workers of the engine (per-key texts are sent from a per-worker count).
    pub fn new(config: ViewConfig, lateness_ms: i64, peers: u32) -> Users {
        let cleaner = Cleaner::new(&config.paths).expect("paths are checked by ViewConfig::validate");
        Users {
            config,
            lateness_ms,
            peers,
            state: UsersState::default(),
            cleaner,
            funnels: Vec::new(),
            retention: Vec::new(),
            step_syms: Vec::new(),
            key_window: 0,
            named: FxHashSet::default(),
            changes: Changes::default(),
            steps: FxHashMap::default(),
            floor: i64::MIN,
        }
    }

    /// Continues from a snapshot's state.
    pub fn restore(&mut self, state: UsersState) {
        self.state = state;
    }

    pub fn state(&self) -> &UsersState {
        &self.state
    }

    /// Takes up the definitions in effect from this epoch on: new or changed funnels and
    /// retention definitions are computed over the retained logs at the end of the epoch.
    pub fn set_defs(&mut self, defs: &Defs, out: &mut Vec<(Cell, i64)>) {
        // A funnel whose definition did not change keeps its compiled matchers (and their caches).
        let compiled = std::mem::take(&mut self.funnels);
        self.funnels = defs
            .funnels
            .iter()
            .map(|def| match compiled.iter().find(|f| f.def == *def) {
                Some(f) => f.clone(),
                None => Arc::new(Funnel::new(def.clone()).expect("registered funnels are valid")),
            })
            .collect();
        self.step_syms =
            self.funnels.iter().map(|f| (1..=f.steps()).map(|k| step_sym(&f.def.name, k)).collect()).collect();
        for f in defs.funnels.iter() {
            for k in 1..=f.steps() {
                self.name(step_sym(&f.name, k), &step_name(&f.name, k), out);
            }
        }
        let compiled = std::mem::take(&mut self.retention);
        self.retention = defs
            .retention
            .iter()
            .map(|def| match compiled.iter().find(|r| r.def == *def) {
                Some(r) => r.clone(),
                None => Arc::new(Retention::new(def.clone()).expect("registered retention is valid")),
            })
            .collect();
        let rules: Vec<Arc<AlertRule>> = defs
            .alerts
            .iter()
            .map(|d| Arc::new(AlertRule::new(d.clone()).expect("registered rules are valid")))
            .collect();
        self.state.keys.set_rules(&rules, self.peers);
        self.key_window = defs.key_window();
    }

    /// Remembers a page's text (step patterns match on it).
    pub fn add_page(&mut self, sym: Sym, text: &str) {
        self.state.logs.note_page(sym, text);
    }

    fn name(&mut self, sym: Sym, text: &str, out: &mut Vec<(Cell, i64)>) {
        if self.named.insert(sym) {
            out.push((Cell::Name { sym, text: text.to_string() }, 1));
        }
    }

    /// Adds one admitted event of a user this worker owns. `horizon_ms` bounds how far a young
    /// session run can span (see `Sessionizer::add`).
    pub fn add(&mut self, a: &Admitted, horizon_ms: i64, out: &mut Vec<(Cell, i64)>) {
        let e = &a.event;
        let minute = minute_of(e.ts);
        if self.state.minutes.entry(minute).or_default().insert(e.user) {
            out.push((Cell::UserMinute { minute, user: e.user }, 1));
        }
        let source = [e.utm_source, e.device, e.country];
        let hit = Hit { ts: e.ts, ord: a.ord, page: e.page, page_view: e.is_page_view(), source };
        let config = &self.config.sessions;
        let session_id = (a.session_id != 0).then_some(a.session_id);
        let key = Sessionizer::key(config, e.user, session_id);
        self.state.sessions.add(key, hit, config, horizon_ms);
        let props = (!a.props.is_empty()).then(|| a.props.to_vec().into_boxed_slice());
        let logged = LogEvent { ts: e.ts, ord: a.ord, name: e.name, page: e.page, source, props, node: a.node };
        let UsersState { logs, cohorts, keys, .. } = &mut self.state;
        cohorts.add(&self.retention, e.user, &logged, logs);
        // Each funnel's steps matched once: counted per minute here, and what the log re-evaluates.
        let masks: smallvec::SmallVec<[u32; 8]> =
            self.funnels.iter().map(|f| f.step_mask(&logged, logs.pages())).collect();
        for (i, mut mask) in masks.iter().copied().enumerate() {
            while mask != 0 {
                let step = mask.trailing_zeros() as usize;
                *self.steps.entry((self.step_syms[i][step], minute)).or_default() += 1;
                mask &= mask - 1;
            }
        }
        keys.add(a, minute, out);
        logs.add(e.user, a.user_id.as_str(), logged, self.config.max_events_per_user, &self.funnels, &masks);
    }

    /// Reports the epoch's changes as cells, then forgets what `time.floor` has made final.
    pub fn end_epoch(&mut self, time: &EngineTime, out: &mut Vec<(Cell, i64)>) {
        if let Some(as_of) = time.as_of {
            // Minutes the active-user window has let go.
            self.state.minutes = self.state.minutes.split_off(&Floors::users_at(as_of, &self.config));
        }
        for ((key, minute), n) in self.steps.drain() {
            out.push((Cell::Count { dim: Dim::Step, key, minute }, n));
        }
        self.state.keys.flush(out);
        // Restored under other path rules: re-clean the logged pages (and name the new nodes).
        let (cleaner, mut named) = (&mut self.cleaner, Vec::new());
        self.state.logs.set_path_rules(cleaner.fingerprint, |e, text| {
            let (node, new) = cleaner.node(e.name, e.name == schema::event::PAGE_VIEW, e.page, text);
            named.extend(new.map(|t| (node, t)));
            node
        });
        named.iter().for_each(|(node, text)| self.name(*node, text, out));
        let sessions = &self.config.sessions;
        self.state.sessions.drain(&mut SessionCells { cells: &mut self.changes.sessions, config: sessions });
        let floor = (time.floor != i64::MIN).then_some(time.floor);
        if let Some(floor) = floor.filter(|f| *f > self.floor) {
            self.floor = floor;
            self.state.sessions.prune(floor, sessions);
            // The same window as the counts, from the floor: no event from now on is older.
            self.state.logs.prune(minute_start_ms(self.config.counts_from(minute_of(floor))));
        }
        self.state.logs.drain(&self.funnels, sessions, &mut self.changes);
        let UsersState { logs, cohorts, .. } = &mut self.state;
        cohorts.drain(&self.retention, logs, floor, &mut self.changes);
        if let Some(as_of) = time.as_of {
            self.state.keys.expire(Floors::keys_at(as_of, self.key_window));
        }
        self.flush(out);
    }

    fn flush(&mut self, out: &mut Vec<(Cell, i64)>) {
        let c = &mut self.changes;
        let live = |n: &i64| *n != 0;
        out.extend(
            c.funnels
                .drain()
                .filter(|(_, n)| live(n))
                .map(|((funnel, key, day, stat), n)| (Cell::Funnel { funnel, key, day, stat }, n)),
        );
        out.extend(
            c.open
                .drain()
                .filter(|(_, n)| live(n))
                .map(|((funnel, step, entry_ts, user), n)| (Cell::FunnelUser { funnel, step, entry_ts, user }, n)),
        );
        out.extend(c.edges.drain().filter(|(_, n)| live(n)).map(|((from, to), n)| (Cell::PathEdge { from, to }, n)));
        out.extend(
            c.retention
                .drain()
                .filter(|(_, n)| live(n))
                .map(|((retention, (key, cohort, stat)), n)| (Cell::Retention { retention, key, cohort, stat }, n)),
        );
        out.extend(
            c.sessions
                .drain()
                .filter(|(_, n)| live(n))
                .map(|((hour, source, stat), n)| (Cell::Session { hour, source, stat }, n)),
        );
    }

    /// How far a young session run can span: the lateness and clock skew, or more while some
    /// partition lags behind the newest (the floor follows the slowest).
    pub fn horizon(&self, time: &EngineTime) -> i64 {
        let base = self.lateness_ms + MAX_HEAD_SKEW_MS;
        match (time.head, time.floor) {
            (Some(head), floor) if floor != i64::MIN => base.max(head - floor + MAX_HEAD_SKEW_MS),
            _ => base,
        }
    }

    /// Per-user state sizes, for `/metrics`.
    pub fn sizes(&self) -> UserStateSizes {
        UserStateSizes {
            session_keys: self.state.sessions.users() as u64,
            logged_users: self.state.logs.users() as u64,
            capped_events: self.state.logs.capped_events,
            approximate_recuts: self.state.sessions.approximate_recuts,
            retention_users: self.state.cohorts.users() as u64,
        }
    }
}

/// Sizes of one worker's per-user state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserStateSizes {
    pub session_keys: u64,
    pub logged_users: u64,
    pub capped_events: u64,
    pub approximate_recuts: u64,
    pub retention_users: u64,
}
