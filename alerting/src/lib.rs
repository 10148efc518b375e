//! Alerting: rules judged on every published snapshot of the read side (hysteresis, history,
//! silences), and rate limits answered as queries. Registers itself with the [`ReadModel`] as a
//! publish hook; the API and the bot read alerts from [`Alerting`]. No timely, no Kafka.

pub mod detectors;
pub mod engine;
pub mod incidents;
pub mod limits;
pub mod series;
pub mod verdict;

use std::sync::Arc;

use parking_lot::Mutex;
use read::model::{Alert, AlertChange, Clock, Silence};
use read::query::{self, QueryError};
use read::read_model::PublishHook;
use read::{ReadModel, Tables};
use schema::alert_rules::{AlertRegistry, AlertRule};
use schema::funnels::FunnelRegistry;
use schema::registry::Definitions;
use schema::time::Minute;

pub use engine::{now_ms, AlertEngine};
pub use limits::{LimitList, LimitStatus};

/// Judges the rules on each published snapshot.
struct Judge {
    engine: Arc<Mutex<AlertEngine>>,
    rules: Arc<AlertRegistry>,
    funnels: Arc<FunnelRegistry>,
}

impl PublishHook for Judge {
    fn published(&self, tables: &Tables, as_of: i64, available_from: Minute) -> Vec<AlertChange> {
        let mut engine = self.engine.lock();
        engine.evaluate(tables, &self.rules, &self.funnels, as_of, available_from);
        engine.take_changes()
    }
}

/// The alerts of one engine: what fires, what fired, silences, rate limits.
pub struct Alerting {
    model: Arc<ReadModel>,
    /// The alert rules; the API adds to them, the engine counts what the per-key rules read.
    pub rules: Arc<AlertRegistry>,
    engine: Arc<Mutex<AlertEngine>>,
    /// Where silences are kept across restarts (`state_dir/silences.json`).
    silence_store: Mutex<Option<std::path::PathBuf>>,
}

impl Alerting {
    /// Alerting over `model`, judging `defs.alerts` on every publish.
    pub fn new(model: Arc<ReadModel>, defs: &Definitions) -> Arc<Alerting> {
        let config = model.config();
        let engine = Arc::new(Mutex::new(AlertEngine::new(
            config.alerts.clone(),
            config.sessions.settle_minutes(),
            config.window_minutes,
        )));
        let judge = Judge { engine: engine.clone(), rules: defs.alerts.clone(), funnels: defs.funnels.clone() };
        model.add_publish_hook(Arc::new(judge));
        Arc::new(Alerting { model, rules: defs.alerts.clone(), engine, silence_store: Mutex::new(None) })
    }

    /// Firing alerts (silenced ones too, marked).
    pub fn active(&self) -> (Clock, Vec<Alert>) {
        let clock = self.model.clock();
        (clock, self.engine.lock().active(now_ms()))
    }

    /// Fired and resolved alerts, newest first.
    pub fn history(&self) -> (Clock, Vec<Alert>) {
        let clock = self.model.clock();
        (clock, self.engine.lock().history(now_ms()))
    }

    /// Alerts (incidents) opened since the start, by rule (the history keeps only the newest).
    pub fn fired(&self) -> std::collections::BTreeMap<String, u64> {
        self.engine.lock().fired().clone()
    }

    /// Incidents joined by a rule that did not open them, by rule.
    pub fn joined(&self) -> std::collections::BTreeMap<String, u64> {
        self.engine.lock().joined().clone()
    }

    /// Adds a silence; with a store, it is saved before the answer (on-call relies on it).
    pub fn silence(&self, matcher: String, until_ms: i64, comment: Option<String>) -> Result<Silence, String> {
        let mut engine = self.engine.lock();
        let silence = engine.silence(matcher, until_ms, comment);
        self.save_silences(&mut engine)?;
        Ok(silence)
    }

    /// Keeps silences in `path` and takes back the ones a previous run kept there.
    pub fn persist_silences(&self, path: std::path::PathBuf) -> Result<usize, String> {
        let mut engine = self.engine.lock();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let silences: Vec<Silence> = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{}: not a list of silences ({e}); fix or remove it", path.display()))?;
                engine.restore_silences(silences, now_ms());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
        *self.silence_store.lock() = Some(path);
        Ok(engine.silences(now_ms()).len())
    }

    fn save_silences(&self, engine: &mut AlertEngine) -> Result<(), String> {
        let Some(path) = self.silence_store.lock().clone() else { return Ok(()) };
        let silences = engine.silences(now_ms());
        schema::registry::save(&path, &serde_json::to_vec_pretty(&silences).expect("serialisable"))
            .map_err(|e| format!("cannot save the silences to {}: {e}", path.display()))
    }

    pub fn silences(&self) -> Vec<Silence> {
        self.engine.lock().silences(now_ms())
    }

    pub fn unsilence(&self, id: u64) -> Result<bool, String> {
        let mut engine = self.engine.lock();
        let removed = engine.unsilence(id);
        self.save_silences(&mut engine)?;
        Ok(removed)
    }

    /// Whether `key` is over the limit of rate-limit rule `rule` now.
    pub fn limit(&self, rule: &str, key: &str) -> Result<LimitStatus, QueryError> {
        let rule = self.rate_limit_rule(rule)?;
        Ok(limits::status(&self.model.tables(), &rule, key).expect("a rate-limit rule"))
    }

    /// Keys over the limit of rate-limit rule `rule` now.
    pub fn limits_over(&self, rule: &str) -> Result<LimitList, QueryError> {
        let rule = self.rate_limit_rule(rule)?;
        let tables = self.model.tables();
        Ok(limits::over(&tables, &rule, query::clock(&tables)).expect("a rate-limit rule"))
    }

    fn rate_limit_rule(&self, name: &str) -> Result<Arc<AlertRule>, QueryError> {
        let limits: Vec<String> =
            self.rules.all().iter().filter(|r| limits::limit_of(r).is_some()).map(|r| r.name().to_string()).collect();
        match self.rules.get(name) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::ViewConfig;

    #[test]
    fn silences_survive_a_restart_and_ids_continue() {
        let dir = std::env::temp_dir().join(format!("clickflow-silences-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("silences.json");
        let _ = std::fs::remove_file(&path);
        let until = now_ms() + 3_600_000;
        let alerting = || {
            let defs = Definitions::new(&ViewConfig::default()).unwrap();
            Alerting::new(ReadModel::new(ViewConfig::default(), &defs), &defs)
        };
        let first = alerting();
        assert_eq!(first.persist_silences(path.clone()).unwrap(), 0);
        first.silence("ip_burst".into(), until, Some("load test".into())).unwrap();
        let gone = first.silence("traffic_anomaly".into(), until, None).unwrap();
        assert!(first.unsilence(gone.id).unwrap());
        let restarted = alerting();
        assert_eq!(restarted.persist_silences(path).unwrap(), 1);
        assert_eq!(restarted.silences()[0].matcher, "ip_burst");
        assert_eq!(restarted.silence("shared_ip".into(), until, None).unwrap().id, 2, "after the highest kept");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
