//! The live read model: the API and the bot read it; only the dataflow exporter writes it.
//!
//! The exporter applies all updates of the epochs the frontier has passed under one write lock and
//! then publishes, so every reader sees the views at one frontier and two views read together agree.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::funnel_query::{self, StuckQuery};
use crate::model::AlertChange;
use crate::model::{Clock, Dump, Live, Rejects, SessionSummary, Sessions, Timeseries};
use crate::model::{FunnelList, FunnelReport, StuckUsers};
use crate::model::{RetentionList, RetentionReport};
use crate::path_graph::{GraphEdge, PathGraph};
use crate::path_query::{self, ConversionQuery, ExitsQuery, GraphQuery, NextQuery, TopQuery};
use crate::path_query::{PathExits, PathGraphAnswer, PathNext, TopPaths};
use crate::query::{self, QueryError, TimeseriesQuery};
use crate::retention_query::{self, RetentionQuery};
use crate::session_query::{self, SessionsQuery};
use crate::tables::Tables;
use schema::cells::Cell;
use schema::config::ViewConfig;
use schema::event::minute_start_ms;
use schema::funnels::FunnelRegistry;
use schema::paths::Cleaner;
use schema::registry::Definitions;
use schema::retention::RetentionRegistry;

/// One changed count cell, as the change stream sends it.
#[derive(Clone, Debug, Serialize)]
pub struct CountChange {
    pub dim: &'static str,
    pub key: String,
    pub minute_ms: i64,
    pub count: i64,
}

/// What one publish changed.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    #[serde(flatten)]
    pub clock: Clock,
    pub live: Live,
    pub counts: Vec<CountChange>,
    /// The session summary over the window, when a session aggregate changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<SessionSummary>,
    /// Every funnel's headline numbers, when a funnel changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub funnels: Option<FunnelList>,
    /// Every retention definition's headline numbers, when a cohort changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionList>,
    /// The heaviest path edges, when an edge count changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<GraphEdge>>,
    /// Alerts that fired or resolved.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<AlertChange>,
    /// Wall-clock ms of the publish.
    #[serde(skip)]
    pub at_ms: i64,
}

/// How long, and how many, published changes are kept for a client that reconnects.
const RESUME_MS: i64 = 60_000;
const RESUME_CHANGES: usize = 1200;

pub struct ReadModel {
    config: ViewConfig,
    /// The funnels being computed; the API adds to it, ingestion picks new ones up.
    pub funnels: Arc<FunnelRegistry>,
    /// The retention definitions, the same way.
    pub retention: Arc<RetentionRegistry>,
    /// Run on each published snapshot (alerting judges its rules there).
    hooks: RwLock<Vec<Arc<dyn PublishHook>>>,
    /// Maps pages to path nodes for queries (the rules ingestion applies).
    cleaner: Cleaner,
    /// The path graph of the last snapshot a query needed, with the edge version it was built at.
    graph: Mutex<(u64, Arc<PathGraph>)>,
    tables: RwLock<Tables>,
    changes: broadcast::Sender<Arc<Change>>,
    /// The last changes, oldest first, for a client that reconnects (`Last-Event-ID`).
    recent: Mutex<std::collections::VecDeque<Arc<Change>>>,
    /// Wall-clock ms of the last publish that had a listener: changes are still built for a
    /// while after the last one leaves, so a client that reconnects can resume.
    listened_ms: AtomicI64,
    /// `as_of` of the last publish (i64::MIN before the first), read lock-free by ingestion to
    /// retract what fell out of the windows.
    as_of: AtomicI64,
    /// Every epoch before this is in the published state (lets ingestion wait for the exporter).
    complete_before: AtomicU64,
}

/// Runs after each publish on the snapshot just published, under the read lock.
pub trait PublishHook: Send + Sync {
    /// `as_of` of the snapshot; `available_from`: the oldest minute whose counts it still holds.
    /// Returns the alerts that fired or resolved, for the change stream.
    fn published(&self, tables: &Tables, as_of: i64, available_from: schema::time::Minute) -> Vec<AlertChange>;
}

impl ReadModel {
    pub fn new(config: ViewConfig, defs: &Definitions) -> Arc<ReadModel> {
        let (changes, _) = broadcast::channel(256);
        let cleaner = Cleaner::new(&config.paths).expect("paths are checked by ViewConfig::validate");
        Arc::new(ReadModel {
            funnels: defs.funnels.clone(),
            retention: defs.retention.clone(),
            hooks: RwLock::default(),
            cleaner,
            graph: Mutex::new((0, Arc::new(PathGraph::from_edges(Vec::<(String, String, u64)>::new())))),
            config,
            tables: RwLock::new(Tables::default()),
            changes,
            recent: Mutex::default(),
            listened_ms: AtomicI64::new(i64::MIN),
            as_of: AtomicI64::new(i64::MIN),
            complete_before: AtomicU64::new(0),
        })
    }

    pub fn add_publish_hook(&self, hook: Arc<dyn PublishHook>) {
        self.hooks.write().push(hook);
    }

    pub fn config(&self) -> &ViewConfig {
        &self.config
    }

    /// The current snapshot, for readers outside this crate (alerting, rate limits). Hold it
    /// briefly: the exporter waits for it.
    pub fn tables(&self) -> parking_lot::RwLockReadGuard<'_, Tables> {
        self.tables.read()
    }

    /// Applies every update of the epochs up to `epoch` and publishes the result.
    pub fn publish(&self, epoch: u64, updates: impl IntoIterator<Item = (Cell, i64)>) {
        let mut tables = self.tables.write();
        let now = schema::time::now_ms();
        if self.changes.receiver_count() > 0 {
            self.listened_ms.store(now, Ordering::Relaxed);
        }
        let listened = now.saturating_sub(self.listened_ms.load(Ordering::Relaxed)) <= RESUME_MS;
        tables.track_changes = listened;
        for (row, diff) in updates {
            tables.apply(row, diff);
        }
        tables.settle();
        tables.epoch = epoch;
        // The dataflow's windows follow `as_of` one publish behind.
        let retracted_before = tables.published_as_of;
        if let Some(as_of) = tables.clock().1 {
            tables.published_as_of = Some(as_of);
            self.as_of.fetch_max(as_of, Ordering::Relaxed);
        }
        let touched = std::mem::take(&mut tables.touched);
        let sessions_touched = std::mem::take(&mut tables.sessions_touched);
        let funnels_touched = std::mem::take(&mut tables.funnels_touched);
        let retention_touched = std::mem::take(&mut tables.retention_touched);
        let paths_touched = tables.paths_version != tables.paths_published;
        tables.paths_published = tables.paths_version;
        // Readers (a rate-limit query) need not wait for the alert rules.
        let tables = parking_lot::RwLockWriteGuard::downgrade(tables);
        let alerts = match tables.published_as_of {
            Some(as_of) => {
                let available_from =
                    retracted_before.map_or(0, |a| self.config.counts_from(schema::time::minute_of(a)));
                let hooks = self.hooks.read().clone();
                hooks.iter().flat_map(|h| h.published(&tables, as_of, available_from)).collect()
            }
            None => Vec::new(),
        };
        if !listened {
            self.recent.lock().clear();
            return;
        }
        let mut counts: Vec<CountChange> = touched
            .into_iter()
            .map(|(dim, key, minute)| CountChange {
                dim: dim.as_str(),
                key: tables.name(key),
                minute_ms: minute_start_ms(minute),
                count: tables.series(dim, key).and_then(|s| s.get(&minute)).copied().unwrap_or(0),
            })
            .collect();
        counts.sort_by(|a, b| (a.dim, &a.key, a.minute_ms).cmp(&(b.dim, &b.key, b.minute_ms)));
        counts.dedup_by(|a, b| (a.dim, &a.key, a.minute_ms) == (b.dim, &b.key, b.minute_ms));
        let sessions = sessions_touched
            .then(|| session_query::sessions(&tables, &self.config, &SessionsQuery::default()).ok())
            .flatten()
            .map(|s| s.summary);
        let funnels = funnels_touched.then(|| funnel_query::list(&tables, &self.funnels));
        let retention = retention_touched.then(|| retention_query::list(&tables, &self.retention));
        let paths = paths_touched.then(|| path_query::heaviest(&tables, 10));
        let change = Change {
            clock: query::clock(&tables),
            live: query::live(&tables, &self.config),
            counts,
            sessions,
            funnels,
            retention,
            paths,
            alerts,
            at_ms: now,
        };
        let change = Arc::new(change);
        {
            let mut recent = self.recent.lock();
            recent.push_back(change.clone());
            while recent.len() > RESUME_CHANGES || recent.front().is_some_and(|c| c.at_ms < now - RESUME_MS) {
                recent.pop_front();
            }
        }
        let _ = self.changes.send(change);
    }

    /// Every change published after `epoch`, if all of them are still kept (a client resuming
    /// its change stream); `None` when some are gone.
    pub fn changes_after(&self, epoch: u64) -> Option<Vec<Arc<Change>>> {
        // Not under the ring's lock: a publish holds the tables while it takes that lock.
        let current = self.tables.read().epoch;
        if epoch == current {
            return Some(Vec::new());
        }
        if epoch > current {
            // The client saw another run's epochs: nothing to resume from.
            return None;
        }
        let recent = self.recent.lock();
        // The change right after `epoch` must be kept: the one at `epoch` itself or an older one.
        recent.front().filter(|c| c.clock.epoch <= epoch)?;
        Some(recent.iter().filter(|c| c.clock.epoch > epoch).cloned().collect())
    }

    /// The published tables, serialised: the read side's part of a snapshot (taken by the
    /// exporter between two publishes, so it stands for exactly the epochs published so far).
    pub fn snapshot(&self) -> Vec<u8> {
        bincode::serialize(&*self.tables.read()).expect("tables serialise")
    }

    /// Continues from a snapshot's tables (before anything is published).
    pub fn restore(&self, bytes: &[u8]) -> Result<(), bincode::Error> {
        let mut restored: Tables = bincode::deserialize(bytes)?;
        // Everything derived from the tables is computed again on first use.
        restored.paths_version = 1;
        (restored.sessions_touched, restored.funnels_touched, restored.retention_touched) = (true, true, true);
        if let Some(as_of) = restored.published_as_of {
            self.as_of.fetch_max(as_of, Ordering::Relaxed);
        }
        let epoch = restored.epoch;
        *self.tables.write() = restored;
        // Published once as it is: the publish hooks (alerting, which starts afresh) judge the
        // restored window even if nothing new arrives.
        self.publish(epoch, std::iter::empty());
        Ok(())
    }

    /// Records that every epoch before `epoch` has been published (with or without updates).
    pub fn mark_complete_before(&self, epoch: u64) {
        self.complete_before.fetch_max(epoch, Ordering::Relaxed);
    }

    pub fn complete_before(&self) -> u64 {
        self.complete_before.load(Ordering::Relaxed)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    /// `as_of` of the last publish, if any.
    pub fn as_of_ms(&self) -> Option<i64> {
        Some(self.as_of.load(Ordering::Relaxed)).filter(|v| *v != i64::MIN)
    }

    /// Every input has read what it held when the engine started (as of the last publish).
    pub fn ready(&self) -> bool {
        self.tables.read().ready()
    }

    pub fn clock(&self) -> Clock {
        query::clock(&self.tables.read())
    }

    pub fn live(&self) -> Live {
        query::live(&self.tables.read(), &self.config)
    }

    pub fn timeseries(&self, q: &TimeseriesQuery) -> Result<Timeseries, QueryError> {
        query::timeseries(&self.tables.read(), &self.config, q)
    }

    pub fn sessions(&self, q: &SessionsQuery) -> Result<Sessions, QueryError> {
        session_query::sessions(&self.tables.read(), &self.config, q)
    }

    pub fn funnel_list(&self) -> FunnelList {
        funnel_query::list(&self.tables.read(), &self.funnels)
    }

    pub fn funnel(&self, name: &str) -> Result<FunnelReport, QueryError> {
        funnel_query::report(&self.tables.read(), &self.funnels, name)
    }

    pub fn stuck(&self, name: &str, q: &StuckQuery) -> Result<StuckUsers, QueryError> {
        funnel_query::stuck(&self.tables.read(), &self.funnels, name, q)
    }

    pub fn dump(&self) -> Dump {
        query::dump(&self.tables.read(), &self.config, &self.funnels, &self.retention)
    }

    pub fn retention_list(&self) -> RetentionList {
        retention_query::list(&self.tables.read(), &self.retention)
    }

    pub fn retention_report(&self, name: &str, q: &RetentionQuery) -> Result<RetentionReport, QueryError> {
        retention_query::report(&self.tables.read(), &self.retention, name, q)
    }

    /// A consistent pair: the clock of the current snapshot and its path graph. The graph is
    /// rebuilt only when an edge count moved since the last build, from a copy of the counts
    /// taken with the clock, outside the lock (the exporter does not wait on a build).
    fn paths(&self) -> (Clock, Arc<PathGraph>) {
        let (clock, version, edges) = {
            let tables = self.tables.read();
            let cached = self.graph.lock();
            if cached.0 == tables.paths_version {
                return (query::clock(&tables), cached.1.clone());
            }
            (query::clock(&tables), tables.paths_version, path_query::dump(&tables))
        };
        let graph = Arc::new(PathGraph::from_edges(edges.into_iter().map(|(f, t, n)| (f, t, n as u64))));
        let mut cached = self.graph.lock();
        if cached.0 < version {
            *cached = (version, graph.clone());
        }
        (clock, graph)
    }

    pub fn path_next(&self, q: &NextQuery) -> Result<PathNext, QueryError> {
        let (clock, graph) = self.paths();
        path_query::next(&graph, &self.cleaner, clock, q)
    }

    pub fn path_top(&self, q: &TopQuery) -> Result<TopPaths, QueryError> {
        let (clock, graph) = self.paths();
        path_query::top(&graph, &self.cleaner, clock, q)
    }

    pub fn path_conversions(&self, q: &ConversionQuery) -> Result<TopPaths, QueryError> {
        let (clock, graph) = self.paths();
        path_query::conversions(&graph, &self.config.paths.conversion_events, clock, q)
    }

    pub fn path_exits(&self, q: &ExitsQuery) -> Result<PathExits, QueryError> {
        let (clock, graph) = self.paths();
        path_query::exits(&graph, clock, q)
    }

    /// The pruned graph as JSON, or as Graphviz DOT (`Ok(Err(dot))`).
    pub fn path_graph(&self, q: &GraphQuery) -> Result<Result<PathGraphAnswer, String>, QueryError> {
        let (clock, graph) = self.paths();
        path_query::export(&graph, clock, q)
    }

    pub fn rejects(&self) -> Rejects {
        query::rejects(&self.tables.read())
    }

    pub fn accepted(&self) -> i64 {
        self.tables.read().accepted
    }
}
