//! The live read model: the API and the bot read it; only the dataflow exporter writes it.
//!
//! The exporter applies all updates of the epochs the frontier has passed under one write lock and
//! then publishes, so every reader sees the views at one frontier and two views read together agree.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::alert_engine::{Alert, AlertChange, AlertEngine, Silence};
use crate::alert_rules::AlertRegistry;
use crate::config::ViewConfig;
use crate::event::minute_start_ms;
use crate::facts::Row;
use crate::funnel_query::{self, StuckQuery};
use crate::funnels::FunnelRegistry;
use crate::limits::{self, LimitList, LimitStatus};
use crate::model::{Clock, Dump, Live, Rejects, SessionSummary, Sessions, Timeseries};
use crate::model::{FunnelList, FunnelReport, StuckUsers};
use crate::model::{RetentionList, RetentionReport};
use crate::path_graph::{GraphEdge, PathGraph};
use crate::path_query::{self, ConversionQuery, ExitsQuery, GraphQuery, NextQuery, TopQuery};
use crate::path_query::{PathExits, PathGraphAnswer, PathNext, TopPaths};
use crate::paths::Cleaner;
use crate::query::{self, QueryError, TimeseriesQuery};
use crate::retention::RetentionRegistry;
use crate::retention_query::{self, RetentionQuery};
use crate::session_query::{self, SessionsQuery};
use crate::tables::Tables;

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
}

pub struct ReadModel {
    config: ViewConfig,
    /// The funnels being computed; the API adds to it, ingestion picks new ones up.
    pub funnels: Arc<FunnelRegistry>,
    /// The retention definitions, the same way.
    pub retention: Arc<RetentionRegistry>,
    /// The alert rules; the API adds to it, ingestion counts what the per-key rules read.
    pub alerts: Arc<AlertRegistry>,
    /// Judges the rules on each published snapshot.
    alert_engine: Mutex<AlertEngine>,
    /// Where silences are kept across restarts (`state_dir/silences.json`).
    silence_store: Mutex<Option<std::path::PathBuf>>,
    /// Maps pages to path nodes for queries (the rules ingestion applies).
    cleaner: Cleaner,
    /// The path graph of the last snapshot a query needed, with the edge version it was built at.
    graph: Mutex<(u64, Arc<PathGraph>)>,
    tables: RwLock<Tables>,
    changes: broadcast::Sender<Arc<Change>>,
    /// `as_of` of the last publish (i64::MIN before the first), read lock-free by ingestion to
    /// retract what fell out of the windows.
    as_of: AtomicI64,
    /// Every epoch before this is in the published state (lets ingestion wait for the exporter).
    complete_before: AtomicU64,
}

impl ReadModel {
    pub fn new(config: ViewConfig) -> Arc<ReadModel> {
        let (changes, _) = broadcast::channel(256);
        let funnels = FunnelRegistry::new(&config.funnels).expect("funnels are checked by ViewConfig::validate");
        let retention =
            RetentionRegistry::new(&config.retention).expect("retention is checked by ViewConfig::validate");
        let cleaner = Cleaner::new(&config.paths).expect("paths are checked by ViewConfig::validate");
        let alerts =
            AlertRegistry::new(&config.alerts.all_rules()).expect("alerts are checked by ViewConfig::validate");
        Arc::new(ReadModel {
            funnels: Arc::new(funnels),
            retention: Arc::new(retention),
            alerts: Arc::new(alerts),
            alert_engine: Mutex::new(AlertEngine::new(
                config.alerts.clone(),
                config.sessions.settle_minutes(),
                config.window_minutes,
            )),
            silence_store: Mutex::new(None),
            cleaner,
            graph: Mutex::new((0, Arc::new(PathGraph::from_edges(Vec::<(String, String, u64)>::new())))),
            config,
            tables: RwLock::new(Tables::default()),
            changes,
            as_of: AtomicI64::new(i64::MIN),
            complete_before: AtomicU64::new(0),
        })
    }

    /// Applies every update of the epochs up to `epoch` and publishes the result.
    pub fn publish(&self, epoch: u64, updates: impl IntoIterator<Item = (Row, isize)>) {
        let mut tables = self.tables.write();
        for (row, diff) in updates {
            tables.apply(row, diff);
        }
        tables.epoch = epoch;
        // Ingestion retracted only what the previous `as_of` let go of.
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
                    retracted_before.map_or(0, |a| self.config.counts_from(crate::event::minute_of(a)));
                let mut engine = self.alert_engine.lock();
                engine.evaluate(&tables, &self.alerts, &self.funnels, as_of, available_from);
                engine.take_changes()
            }
            None => Vec::new(),
        };
        if self.changes.receiver_count() == 0 {
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
        };
        let _ = self.changes.send(Arc::new(change));
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

    /// Firing alerts (silenced ones too, marked).
    pub fn alerts(&self) -> (Clock, Vec<Alert>) {
        let clock = self.clock();
        (clock, self.alert_engine.lock().active(crate::alert_engine::now_ms()))
    }

    /// Fired and resolved alerts, newest first.
    pub fn alert_history(&self) -> (Clock, Vec<Alert>) {
        let clock = self.clock();
        (clock, self.alert_engine.lock().history(crate::alert_engine::now_ms()))
    }

    /// Adds a silence; with a store, it is saved before the answer (on-call relies on it).
    pub fn silence(&self, matcher: String, until_ms: i64, comment: Option<String>) -> Result<Silence, String> {
        let mut engine = self.alert_engine.lock();
        let silence = engine.silence(matcher, until_ms, comment);
        self.save_silences(&mut engine)?;
        Ok(silence)
    }

    /// Keeps silences in `path` and takes back the ones a previous run kept there.
    pub fn persist_silences(&self, path: std::path::PathBuf) -> Result<usize, String> {
        let mut engine = self.alert_engine.lock();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let silences: Vec<Silence> = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{}: not a list of silences ({e}); fix or remove it", path.display()))?;
                engine.restore_silences(silences, crate::alert_engine::now_ms());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
        *self.silence_store.lock() = Some(path);
        Ok(engine.silences(crate::alert_engine::now_ms()).len())
    }

    fn save_silences(&self, engine: &mut AlertEngine) -> Result<(), String> {
        let Some(path) = self.silence_store.lock().clone() else { return Ok(()) };
        let silences = engine.silences(crate::alert_engine::now_ms());
        crate::registry::save(&path, &serde_json::to_vec_pretty(&silences).expect("serialisable"))
            .map_err(|e| format!("cannot save the silences to {}: {e}", path.display()))
    }

    pub fn silences(&self) -> Vec<Silence> {
        self.alert_engine.lock().silences(crate::alert_engine::now_ms())
    }

    pub fn unsilence(&self, id: u64) -> Result<bool, String> {
        let mut engine = self.alert_engine.lock();
        let removed = engine.unsilence(id);
        self.save_silences(&mut engine)?;
        Ok(removed)
    }

    /// Whether `key` is over the limit of rate-limit rule `rule` now.
    pub fn limit(&self, rule: &str, key: &str) -> Result<LimitStatus, QueryError> {
        let rule = self.rate_limit_rule(rule)?;
        Ok(limits::status(&self.tables.read(), &rule, key).expect("a rate-limit rule"))
    }

    /// Every key over the limit of `rule` now.
    pub fn limits_over(&self, rule: &str) -> Result<LimitList, QueryError> {
        let rule = self.rate_limit_rule(rule)?;
        let tables = self.tables.read();
        Ok(limits::over(&tables, &rule, query::clock(&tables)).expect("a rate-limit rule"))
    }

    fn rate_limit_rule(&self, name: &str) -> Result<Arc<crate::alert_rules::AlertRule>, QueryError> {
        let limits: Vec<String> =
            self.alerts.all().iter().filter(|r| limits::limit_of(r).is_some()).map(|r| r.name().to_string()).collect();
        match self.alerts.get(name) {
            Some((_, rule)) if limits::limit_of(&rule).is_some() => Ok(rule),
            _ => Err(QueryError(format!(
                "no rate-limit rule `{name}`; rate-limit rules: {}",
                if limits.is_empty() {
                    "none (add one with kind = \"rate_limit\")".to_string()
                } else {
                    limits.join(", ")
                }
            ))),
        }
    }

    pub fn rejects(&self) -> Rejects {
        query::rejects(&self.tables.read())
    }

    pub fn accepted(&self) -> i64 {
        self.tables.read().accepted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silences_survive_a_restart_and_ids_continue() {
        let dir = std::env::temp_dir().join(format!("clickflow-silences-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("silences.json");
        let _ = std::fs::remove_file(&path);
        let until = crate::alert_engine::now_ms() + 3_600_000;
        let model = ReadModel::new(ViewConfig::default());
        assert_eq!(model.persist_silences(path.clone()).unwrap(), 0);
        model.silence("ip_burst".into(), until, Some("load test".into())).unwrap();
        let gone = model.silence("traffic_anomaly".into(), until, None).unwrap();
        assert!(model.unsilence(gone.id).unwrap());
        let restarted = ReadModel::new(ViewConfig::default());
        assert_eq!(restarted.persist_silences(path).unwrap(), 1);
        assert_eq!(restarted.silences()[0].matcher, "ip_burst");
        assert_eq!(restarted.silence("shared_ip".into(), until, None).unwrap().id, 2, "after the highest kept");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
