//! Per-worker ingestion: admitted events are consolidated per epoch into facts, and the ledger of
//! what this worker has put into the dataflow lets it retract minutes that leave the windows.
//!
//! The ledger is also the whole state of the traffic views (they are functions of it), which is
//! why a snapshot of the ledger plus partition clocks and offsets is enough to recover exactly.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use differential_dataflow::input::InputSession;
use rustc_hash::FxHashMap;
use schema::alert_rules::{AlertRegistry, AlertRule};
use schema::cells::Bump;
use schema::cells::{series_of, Dim, Fact};
use schema::event::{minute_of, minute_start_ms, Event, Minute, Sym};
use schema::funnels::step_sym;
use schema::funnels::{FunnelRegistry, FunnelStat};
use schema::ids::{IdMap, IdSet};
use schema::paths::{self, Cleaner};
use schema::paths::{ENTRY, EXIT};
use schema::registry::Snapshot;
use schema::retention::{RetentionCell, RetentionRegistry};
use schema::sessions::SessionStat;
use schema::time::Hour;
use schema::{Epoch, ViewConfig};
use serde::{Deserialize, Serialize};
use views::compiled::Compiled;
use views::funnels::{Funnel, FunnelCell};
use views::retention::cohorts::CohortSink;
use views::retention::Retention;
use views::sessions::{cell_changes, cells_of, Hit, SessionConfig, SessionSink, Sessionizer, Summary};
use views::userlog::LogEvent;
use views::userlog::LogSink;

use crate::clock::{PartitionClock, MAX_HEAD_SKEW_MS};
use crate::deadletter::{self, Coords, DeadLetterSink};
use crate::decode::Decoded;
use crate::keyed::{KeyCounts, KeyLedger};
use crate::reject::{Reason, Rejection};

/// A worker's input clock as reported into the dataflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerClock {
    pub head: i64,
    pub watermark: i64,
    pub idle: bool,
}

/// What this worker has put into the dataflow and not yet retracted.
#[derive(Default, Serialize, Deserialize)]
pub struct Ledger {
    pub series: BTreeMap<Minute, HashMap<(Dim, Sym), i64>>,
    pub users: BTreeMap<Minute, IdSet>,
    pub names: IdMap<String>,
    pub accepted: i64,
    pub rejects: BTreeMap<Reason, i64>,
    /// Session aggregates by start hour.
    pub sessions: BTreeMap<Hour, HashMap<([Sym; 3], SessionStat), i64>>,
    /// Funnel aggregates and open attempts (their users' logs expire them).
    pub funnels: HashMap<FunnelKey, i64>,
    pub open_attempts: HashMap<OpenAttempt, i64>,
    /// Path edge counts (their users' logs expire them).
    pub paths: HashMap<(Sym, Sym), i64>,
    /// Retention cells by definition: the fingerprint they were computed under, and the cells.
    pub retention: BTreeMap<u32, (u64, HashMap<RetentionCell, i64>)>,
    /// Per-key counts, `(ip, user)` pairs and key texts (per-key alert rules, rate limits).
    pub keys: KeyLedger,
}

pub type FunnelKey = (u32, Sym, u32, FunnelStat);
/// `(funnel, step, entry_ts, user_id)`.
pub type OpenAttempt = (u32, u8, i64, String);

/// Funnel, path and retention changes drained from the partitions this epoch.
#[derive(Default)]
struct PerUserChanges {
    cells: FxHashMap<FunnelKey, i64>,
    open: FxHashMap<OpenAttempt, i64>,
    edges: FxHashMap<(Sym, Sym), i64>,
    retention: FxHashMap<(u32, RetentionCell), i64>,
}

impl CohortSink for PerUserChanges {
    fn cell(&mut self, retention: u32, cell: RetentionCell, diff: i64) {
        *self.retention.entry((retention, cell)).or_default() += diff;
    }
}

impl LogSink for PerUserChanges {
    fn edge(&mut self, from: Sym, to: Sym, diff: i64) {
        *self.edges.entry((from, to)).or_default() += diff;
    }

    fn cell(&mut self, (funnel, key, day, stat, n): FunnelCell) {
        *self.cells.entry((funnel, key, day, stat)).or_default() += n;
    }

    fn open_attempt(&mut self, funnel: u32, step: u8, entry_ts: i64, user: &str, diff: i64) {
        *self.open.entry((funnel, step, entry_ts, user.to_string())).or_default() += diff;
    }
}

type SessionCells = FxHashMap<(Hour, [Sym; 3], SessionStat), i64>;

/// Turns session changes into changes of the aggregate cells.
struct CellSink<'a> {
    cells: &'a mut SessionCells,
    config: &'a SessionConfig,
}

impl SessionSink for CellSink<'_> {
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

pub struct Ingest {
    /// `[enrich]`: applied to every decoded event before the clock admits it.
    pub enrich: Option<(Arc<crate::enrich::Enricher>, crate::enrich::AgentCache)>,
    worker: u32,
    views: ViewConfig,
    lateness_ms: i64,
    ledger: Ledger,
    /// This epoch's events, consolidated on everything but user and exact time.
    cube: FxHashMap<Event, i64>,
    new_users: Vec<(Minute, u64)>,
    new_names: Vec<(Sym, String)>,
    accepted: i64,
    rejects: BTreeMap<Reason, i64>,
    /// Session cell changes drained from the partitions this epoch.
    session_cells: SessionCells,
    /// Funnel, path and retention changes drained from the partitions this epoch.
    per_user: PerUserChanges,
    /// The funnels to compute (shared with the API, which can add some), and this worker's copy
    /// of the list with its registry version.
    pub funnels: Arc<FunnelRegistry>,
    funnel_list: Compiled<Funnel>,
    /// Retention definitions, the same way.
    pub retention: Arc<RetentionRegistry>,
    retention_list: Compiled<Retention>,
    /// Maps events to path nodes.
    cleaner: Cleaner,
    /// The alert rules, and the per-key counts their per-key rules read.
    pub alerts: Arc<AlertRegistry>,
    alert_list: Snapshot<AlertRule>,
    keys: KeyCounts,
    /// Workers of the engine (per-key texts are sent from a per-worker count).
    pub peers: u32,
    /// Funnel step matches per minute, and each funnel's step symbols by fingerprint.
    steps: FxHashMap<(Sym, Minute), i64>,
    step_funnels: Compiled<Funnel>,
    step_syms: Vec<(u64, Vec<Sym>)>,
    /// The epoch the session changes are reported in (see [`Sessionizer::epoch`]).
    session_epoch: Epoch,
    /// The input epoch being filled, set by the runtime.
    pub epoch: Epoch,
    /// The clock last sent into the dataflow (retracted when it changes).
    reported: Option<WorkerClock>,
    /// The last published `as_of`.
    as_of: Option<i64>,
    dead_letters: Box<dyn DeadLetterSink>,
    /// When freshness is measured: from which event time, and the times admitted this epoch.
    pub freshness: Option<(i64, Vec<i64>)>,
}

impl Ingest {
    pub fn new(worker: u32, views: ViewConfig, lateness_ms: i64, dead_letters: Box<dyn DeadLetterSink>) -> Ingest {
        let cleaner = Cleaner::new(&views.paths).expect("paths are checked by ViewConfig::validate");
        let mut ingest = Ingest {
            enrich: None,
            worker,
            views,
            lateness_ms,
            ledger: Ledger::default(),
            cube: FxHashMap::default(),
            new_users: Vec::new(),
            new_names: Vec::new(),
            accepted: 0,
            rejects: BTreeMap::new(),
            session_cells: SessionCells::default(),
            per_user: PerUserChanges::default(),
            funnels: Arc::default(),
            funnel_list: Compiled::default(),
            retention: Arc::default(),
            retention_list: Compiled::default(),
            cleaner,
            alerts: Arc::default(),
            alert_list: Snapshot::default(),
            keys: KeyCounts::default(),
            peers: 1,
            steps: FxHashMap::default(),
            step_funnels: Compiled::default(),
            step_syms: Vec::new(),
            session_epoch: 0,
            epoch: 0,
            reported: None,
            as_of: None,
            dead_letters,
            freshness: None,
        };
        // Nodes that no page names: the pseudo nodes and the conversion events.
        let conversions = ingest.views.paths.conversion_events.iter().map(|e| paths::event_node(e));
        let fixed: Vec<String> = [ENTRY.to_string(), EXIT.to_string()].into_iter().chain(conversions).collect();
        fixed.iter().for_each(|text| ingest.name(schema::event::sym(text), text));
        ingest
    }

    /// Publishes the text of a symbol this worker has not named yet.
    fn name(&mut self, sym: Sym, text: &str) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.ledger.names.entry(sym) {
            e.insert(text.to_string());
            self.new_names.push((sym, text.to_string()));
        }
    }

    pub fn lateness_ms(&self) -> i64 {
        self.lateness_ms
    }

    /// Admits a decoded event through its partition's clock and counts it, or records why not.
    pub fn offer(
        &mut self,
        clock: &mut PartitionClock,
        decoded: Result<Decoded<'_>, Rejection>,
        source: &Coords<'_>,
        raw: &[u8],
        now_ms: i64,
    ) {
        if let Some(d) = self.admit(clock, decoded, source, raw, now_ms) {
            self.add(&d);
        }
    }

    /// The part of [`Self::offer`] that must follow the partition's order: the clock's decision,
    /// the event's session, or the rejection. The caller then counts an admitted event with
    /// [`Self::add`] (in any order: a shared file partition does it outside its admission turn).
    pub fn admit<'a>(
        &mut self,
        clock: &mut PartitionClock,
        decoded: Result<Decoded<'a>, Rejection>,
        source: &Coords<'_>,
        raw: &[u8],
        now_ms: i64,
    ) -> Option<Decoded<'a>> {
        let decoded = match &mut self.enrich {
            Some((enricher, agents)) => decoded.and_then(|d| enricher.apply(d, agents)),
            None => decoded,
        };
        let floor = self.as_of;
        let admitted = decoded.and_then(|d| match floor {
            // Published as complete: an older event may no longer change the views.
            Some(as_of) if d.event.ts < as_of => Err(Rejection::new(
                Reason::TooLate,
                format!(
                    "ts {} is before as_of {}, which the views already published as complete",
                    schema::time::rfc3339(d.event.ts),
                    schema::time::rfc3339(as_of)
                ),
            )),
            _ => clock.admit(d.event.ts, d.event_id, self.lateness_ms, now_ms).map(|_| d),
        });
        match admitted {
            Ok(d) => {
                self.track(clock, &d);
                Some(d)
            }
            Err(rejection) => {
                self.reject(&rejection, source, raw, now_ms);
                None
            }
        }
    }

    pub fn add(&mut self, d: &Decoded<'_>) {
        let e = d.event;
        for (sym, text) in d.texts() {
            self.name(sym, text);
        }
        let minute = minute_of(e.ts);
        if self.ledger.users.entry(minute).or_default().insert(e.user) {
            self.new_users.push((minute, e.user));
        }
        let cell = Event { ts: minute_start_ms(minute), user: 0, ..e };
        *self.cube.entry(cell).or_default() += 1;
        self.refresh_counting();
        self.keys.add(&mut self.ledger.keys, d, minute);
        self.accepted += 1;
        if let Some((from, times)) = self.freshness.as_mut() {
            if e.ts >= *from {
                times.push(e.ts);
            }
        }
    }

    /// Adds the event to its partition's per-user state: its session, the user's log and their
    /// retention state.
    pub fn track(&mut self, partition: &mut PartitionClock, d: &Decoded<'_>) {
        // Before the first event too: definitions from config count from it.
        self.retention_list.refresh(&self.retention, Retention::new);
        let e = &d.event;
        let source = [e.utm_source, e.device, e.country];
        let hit = Hit { ts: e.ts, page: e.page, page_view: e.is_page_view(), source };
        let config = &self.views.sessions;
        let key = Sessionizer::key(config, e.user, d.session_id);
        partition.sessions.add(key, hit, config, self.lateness_ms + MAX_HEAD_SKEW_MS);
        let props = (!d.props.is_empty()).then(|| d.props.to_vec().into_boxed_slice());
        let (node, new_node) = self.cleaner.node(e.name, e.is_page_view(), e.page, d.page.as_deref());
        if let Some(text) = new_node {
            self.name(node, &text);
        }
        let logged = LogEvent { ts: e.ts, name: e.name, page: e.page, source, props, node };
        if let Some(text) = d.page.as_deref() {
            partition.logs.note_page(e.page, text);
        }
        partition.retention.add(self.retention_list.list(), e.user, &logged, &partition.logs);
        self.count_steps(&logged, partition.logs.pages());
        let cap = self.views.max_events_per_user;
        partition.logs.add(e.user, &d.user_id, logged, cap, self.funnel_list.list());
    }

    /// Counts the funnel steps the event matches, per minute (funnel-drop alerts watch them).
    fn count_steps(&mut self, logged: &LogEvent, pages: &views::userlog::PageTexts) {
        let minute = minute_of(logged.ts);
        // Its own copy of the list: the user logs take up new funnels at drain time.
        let mut list = std::mem::take(&mut self.step_funnels);
        for (i, funnel) in list.refresh(&self.funnels, Funnel::new).iter().enumerate() {
            if self.step_syms.get(i).is_none_or(|(f, _)| *f != funnel.fingerprint) {
                let texts: Vec<String> = (1..=funnel.steps()).map(|k| format!("{}#{k}", funnel.def.name)).collect();
                let syms = (1..=funnel.steps()).map(|k| step_sym(&funnel.def.name, k)).collect();
                self.step_syms.truncate(i);
                self.step_syms.push((funnel.fingerprint, syms));
                for text in texts {
                    let sym = schema::event::sym(&text);
                    if let std::collections::hash_map::Entry::Vacant(e) = self.ledger.names.entry(sym) {
                        e.insert(text.clone());
                        self.new_names.push((sym, text));
                    }
                }
            }
            for step in funnel.matching_steps(logged, pages) {
                *self.steps.entry((self.step_syms[i].1[step - 1], minute)).or_default() += 1;
            }
        }
        self.step_funnels = list;
    }

    /// Takes up the per-key counts that new or changed alert rules need.
    fn refresh_counting(&mut self) {
        let version = self.alerts.version();
        let rules = self.alert_list.refresh(&self.alerts);
        self.keys.refresh(version, rules, self.peers);
    }

    /// Collects a partition's session and funnel changes for this epoch's flush, and lets it
    /// forget what its watermark has made final or pushed out of the window. The runtime calls it
    /// for every partition before `flush`.
    pub fn drain_partition(&mut self, partition: &mut PartitionClock) {
        // Restored under other path rules: re-clean the logged pages (names published here).
        let (cleaner, mut named) = (&mut self.cleaner, Vec::new());
        partition.logs.set_path_rules(cleaner.fingerprint, |e, text| {
            let (node, new) = cleaner.node(e.name, e.name == schema::event::PAGE_VIEW, e.page, text);
            named.extend(new.map(|t| (node, t)));
            node
        });
        named.iter().for_each(|(node, text)| self.name(*node, text));
        let sessions = &mut partition.sessions;
        sessions.epoch = sessions.epoch.max(self.epoch);
        self.session_epoch = self.session_epoch.max(sessions.epoch);
        let config = &self.views.sessions;
        sessions.drain(&mut CellSink { cells: &mut self.session_cells, config });
        let watermark = partition.watermark(self.lateness_ms);
        if let Some(watermark) = watermark {
            partition.sessions.prune(watermark, config);
            // The same window as the counts, from this partition's watermark (deterministic for
            // a given input, unlike the published `as_of`).
            let floor = minute_start_ms(self.views.counts_from(minute_of(watermark)));
            partition.logs.prune(floor);
        }
        let funnels = self.funnel_list.refresh(&self.funnels, Funnel::new);
        partition.logs.drain(funnels, &self.views.sessions, &mut self.per_user);
        let retention = self.retention_list.refresh(&self.retention, Retention::new);
        partition.retention.drain(retention, &partition.logs, watermark, &mut self.per_user);
    }

    pub fn reject(&mut self, rejection: &Rejection, source: &Coords<'_>, raw: &[u8], now_ms: i64) {
        *self.rejects.entry(rejection.reason).or_default() += 1;
        if rejection.reason == Reason::Filtered {
            // Dropped on purpose (a crawler filter can drop a third of the traffic): counted, but
            // not copied into the dead letters, which are for input someone must fix.
            return;
        }
        let payload = deadletter::payload_text(raw);
        self.dead_letters.put(&deadletter::letter(rejection, source, &payload, now_ms));
    }

    /// Sends this epoch's facts, the worker's clock, and the retractions of minutes that `as_of`
    /// has pushed out of the windows.
    pub fn flush(
        &mut self,
        input: &mut InputSession<Epoch, Fact, isize>,
        clock: Option<WorkerClock>,
        as_of: Option<i64>,
    ) {
        let mut cells: FxHashMap<(Dim, Sym, Minute), i64> = FxHashMap::default();
        for (cell, n) in self.cube.drain() {
            let minute = minute_of(cell.ts);
            for (dim, key) in series_of(&cell) {
                *cells.entry((dim, key, minute)).or_default() += n;
            }
        }
        cells.extend(self.steps.drain().map(|((key, minute), n)| ((Dim::Step, key, minute), n)));
        for ((dim, key, minute), n) in cells {
            input.update(Fact::Count { dim, key, minute }, n as isize);
            *self.ledger.series.entry(minute).or_default().entry((dim, key)).or_default() += n;
        }
        self.keys.flush(&mut self.ledger.keys, input);
        // A worker without events still expires per-key counts by the current rules.
        self.refresh_counting();
        self.flush_per_user(input);
        for (minute, user) in self.new_users.drain(..) {
            input.update(Fact::UserMinute { minute, user }, 1);
        }
        for (sym, text) in self.new_names.drain(..) {
            input.update(Fact::Name { sym, text }, 1);
        }
        if self.accepted != 0 {
            input.update(Fact::Accepted, self.accepted as isize);
            self.ledger.accepted += std::mem::take(&mut self.accepted);
        }
        for (reason, n) in std::mem::take(&mut self.rejects) {
            input.update(Fact::Reject { reason: reason.as_str().to_string() }, n as isize);
            *self.ledger.rejects.entry(reason).or_default() += n;
        }
        if clock != self.reported {
            let fact = |c: WorkerClock| Fact::Clock {
                worker: self.worker,
                head: c.head,
                watermark: c.watermark,
                idle: c.idle,
            };
            if let Some(old) = self.reported {
                input.update(fact(old), -1);
            }
            if let Some(new) = clock {
                input.update(fact(new), 1);
            }
            self.reported = clock;
        }
        if let Some(as_of) = as_of {
            self.as_of = Some(as_of);
            self.expire(input, minute_of(as_of));
            let at = (*input.time()).max(self.session_epoch);
            self.expire_retention(input, as_of, at);
        }
        self.dead_letters.flush();
    }

    /// Session and funnel changes drained this epoch, stamped no earlier than any epoch their
    /// partition reported in (see `Sessionizer::epoch`).
    fn flush_per_user(&mut self, input: &mut InputSession<Epoch, Fact, isize>) {
        let at = (*input.time()).max(self.session_epoch);
        for ((funnel, key, day, stat), n) in self.per_user.cells.drain() {
            if n != 0 {
                input.update_at(Fact::Funnel { funnel, key, day, stat }, at, n as isize);
                self.ledger.funnels.bump((funnel, key, day, stat), n);
            }
        }
        for ((funnel, step, entry_ts, user), n) in self.per_user.open.drain() {
            if n != 0 {
                input.update_at(Fact::FunnelUser { funnel, step, entry_ts, user: user.clone() }, at, n as isize);
                self.ledger.open_attempts.bump((funnel, step, entry_ts, user), n);
            }
        }
        for ((from, to), n) in self.per_user.edges.drain() {
            if n != 0 {
                input.update_at(Fact::PathEdge { from, to }, at, n as isize);
                self.ledger.paths.bump((from, to), n);
            }
        }
        // A worker without partitions drains none: it still needs the current list.
        self.retention_list.refresh(&self.retention, Retention::new);
        self.retract_redefined_retention(input, at);
        for ((retention, (key, cohort, stat)), n) in self.per_user.retention.drain() {
            if n != 0 {
                input.update_at(Fact::Retention { retention, key, cohort, stat }, at, n as isize);
                let fingerprint = self.retention_list.list()[retention as usize].fingerprint;
                let entry = self.ledger.retention.entry(retention).or_insert_with(|| (fingerprint, HashMap::new()));
                entry.1.bump((key, cohort, stat), n);
            }
        }
        for ((hour, source, stat), n) in self.session_cells.drain() {
            if n != 0 {
                input.update_at(Fact::Session { hour, source, stat }, at, n as isize);
                self.ledger.sessions.entry(hour).or_default().bump((source, stat), n);
            }
        }
    }

    /// Retracts what a retention definition reported before it was redefined (its partitions
    /// recompute it under the new definition) or removed.
    fn retract_redefined_retention(&mut self, input: &mut InputSession<Epoch, Fact, isize>, at: Epoch) {
        let list = self.retention_list.list();
        let stale: Vec<u32> = self
            .ledger
            .retention
            .iter()
            .filter(|(i, (fingerprint, _))| list.get(**i as usize).is_none_or(|r| r.fingerprint != *fingerprint))
            .map(|(i, _)| *i)
            .collect();
        for retention in stale {
            let (_, cells) = self.ledger.retention.remove(&retention).expect("listed");
            for ((key, cohort, stat), n) in cells {
                input.update_at(Fact::Retention { retention, key, cohort, stat }, at, -(n as isize));
            }
        }
    }

    /// Retracts retention cohorts older than every definition shows at `as_of`.
    fn expire_retention(&mut self, input: &mut InputSession<Epoch, Fact, isize>, as_of: i64, at: Epoch) {
        for (index, (_, cells)) in self.ledger.retention.iter_mut() {
            let Some(r) = self.retention_list.list().get(*index as usize) else { continue };
            let oldest = r.oldest_cohort(r.period_of(as_of));
            cells.retain(|(key, cohort, stat), n| {
                if *cohort >= oldest {
                    return true;
                }
                let fact = Fact::Retention { retention: *index, key: *key, cohort: *cohort, stat: *stat };
                input.update_at(fact, at, -(*n as isize));
                false
            });
        }
    }

    /// Retracts minutes that no read can reach any more (see `views::query::visible`).
    fn expire(&mut self, input: &mut InputSession<Epoch, Fact, isize>, as_of_minute: Minute) {
        let counts_from = self.views.counts_from(as_of_minute);
        let hours_from = self.views.session_hours_from(as_of_minute);
        let kept = self.ledger.sessions.split_off(&hours_from);
        // No earlier than the additions, which a shared partition may stamp ahead (see `flush`).
        let at = (*input.time()).max(self.session_epoch);
        for (hour, cells) in std::mem::replace(&mut self.ledger.sessions, kept) {
            for ((source, stat), n) in cells {
                input.update_at(Fact::Session { hour, source, stat }, at, -(n as isize));
            }
        }
        let kept = self.ledger.series.split_off(&counts_from);
        for (minute, cells) in std::mem::replace(&mut self.ledger.series, kept) {
            for ((dim, key), n) in cells {
                input.update(Fact::Count { dim, key, minute }, -(n as isize));
            }
        }
        let users_from = (as_of_minute + 1).saturating_sub(self.views.user_minutes_kept());
        tracing::trace!(
            worker = self.worker,
            as_of_minute,
            counts_from,
            users_from,
            ledger_minutes = self.ledger.users.len(),
            "expire"
        );
        self.keys.expire(&mut self.ledger.keys, input, as_of_minute);
        let kept = self.ledger.users.split_off(&users_from);
        for (minute, users) in std::mem::replace(&mut self.ledger.users, kept) {
            for user in users {
                input.update(Fact::UserMinute { minute, user }, -1);
            }
        }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Re-inserts a recovered ledger (at the current input time).
    pub fn restore(&mut self, ledger: Ledger, input: &mut InputSession<Epoch, Fact, isize>) {
        for (minute, cells) in &ledger.series {
            for ((dim, key), n) in cells {
                input.update(Fact::Count { dim: *dim, key: *key, minute: *minute }, *n as isize);
            }
        }
        for (minute, users) in &ledger.users {
            for user in users {
                input.update(Fact::UserMinute { minute: *minute, user: *user }, 1);
            }
        }
        for (sym, text) in &ledger.names {
            input.update(Fact::Name { sym: *sym, text: text.clone() }, 1);
        }
        for (hour, cells) in &ledger.sessions {
            for ((source, stat), n) in cells {
                input.update(Fact::Session { hour: *hour, source: *source, stat: *stat }, *n as isize);
            }
        }
        for ((funnel, key, day, stat), n) in &ledger.funnels {
            input.update(Fact::Funnel { funnel: *funnel, key: *key, day: *day, stat: *stat }, *n as isize);
        }
        for ((funnel, step, entry_ts, user), n) in &ledger.open_attempts {
            let fact = Fact::FunnelUser { funnel: *funnel, step: *step, entry_ts: *entry_ts, user: user.clone() };
            input.update(fact, *n as isize);
        }
        for ((from, to), n) in &ledger.paths {
            input.update(Fact::PathEdge { from: *from, to: *to }, *n as isize);
        }
        for (retention, (_, cells)) in &ledger.retention {
            for ((key, cohort, stat), n) in cells {
                let fact = Fact::Retention { retention: *retention, key: *key, cohort: *cohort, stat: *stat };
                input.update(fact, *n as isize);
            }
        }
        crate::keyed::restore(&ledger.keys, input);
        input.update(Fact::Accepted, ledger.accepted as isize);
        for (reason, n) in &ledger.rejects {
            input.update(Fact::Reject { reason: reason.as_str().to_string() }, *n as isize);
        }
        self.ledger = ledger;
    }
}
