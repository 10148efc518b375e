//! The engine's and the Kafka source's configuration (sections `[engine]` and `[kafka]`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Timely worker threads.
    pub workers: usize,
    /// Length of an ingestion epoch: the batch that enters the dataflow at one timestamp.
    pub epoch_ms: u64,
    /// Events up to this far behind a partition's newest event time still correct the views.
    pub lateness_seconds: u64,
    /// A partition with nothing new for this long no longer holds back `as_of`.
    pub idle_seconds: u64,
    /// Ingestion pauses when the views are this many epochs behind (bounded memory under load).
    pub max_epochs_in_flight: u64,
    /// Where snapshots of view state and input positions are kept; none disables recovery.
    pub state_dir: Option<PathBuf>,
    pub snapshot_seconds: u64,
    /// NDJSON file for rejected inputs (replay; `run` uses `kafka.dead_letter_topic`).
    pub dead_letter_file: Option<PathBuf>,
    /// A timely cluster of several processes (`[engine.cluster]`); by default this process alone.
    pub cluster: ClusterConfig,
}

/// This process's place in a timely cluster. `engine.workers` is the number of workers in each
/// process; input partitions are spread over the workers of all processes, and process 0 serves
/// the views (API, bot): the others send it their cells through timely.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `host:port` of every process, in process order (one process: empty).
    pub hosts: Vec<String>,
    /// A file with one `host:port` per line instead of `hosts`.
    pub hosts_file: Option<PathBuf>,
    /// This process's index in `hosts`.
    pub process: usize,
}

impl ClusterConfig {
    /// The addresses of every process (one process: none).
    pub fn addresses(&self) -> Result<Vec<String>, String> {
        let mut hosts = self.hosts.clone();
        if let Some(path) = &self.hosts_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("engine.cluster.hosts_file {}: {e}", path.display()))?;
            hosts
                .extend(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from));
        }
        Ok(hosts)
    }

    pub fn processes(&self) -> usize {
        self.addresses().map_or(1, |h| h.len().max(1))
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: 2,
            epoch_ms: 100,
            lateness_seconds: 300,
            idle_seconds: 5,
            max_epochs_in_flight: 20,
            state_dir: None,
            snapshot_seconds: 10,
            dead_letter_file: None,
            cluster: ClusterConfig::default(),
        }
    }
}

impl EngineConfig {
    pub fn lateness_ms(&self) -> i64 {
        self.lateness_seconds as i64 * 1000
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.workers == 0 {
            return Err("engine.workers must be at least 1".into());
        }
        if self.epoch_ms == 0 || self.epoch_ms > 10_000 {
            return Err(format!("engine.epoch_ms must be in 1..=10000, got {}", self.epoch_ms));
        }
        if self.max_epochs_in_flight == 0 {
            return Err("engine.max_epochs_in_flight must be at least 1".into());
        }
        let hosts = self.cluster.addresses()?;
        if hosts.len() > 1 && self.cluster.process >= hosts.len() {
            return Err(format!(
                "engine.cluster.process is {}, but the cluster has {} processes (0..{}); give this process's index",
                self.cluster.process,
                hosts.len(),
                hosts.len() - 1
            ));
        }
        if hosts.len() <= 1 && self.cluster.process != 0 {
            return Err("engine.cluster.process is set, but engine.cluster.hosts lists no other process".into());
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub topics: Vec<String>,
    /// Consumer group: offsets are committed here (after a snapshot is durable) so lag tools work.
    pub group_id: String,
    /// Where to start when there is no snapshot: `earliest`, `latest`, `committed`, or an RFC 3339
    /// time (offsets for times).
    pub start: String,
    /// Topic for rejected inputs; empty to keep them only in the counts.
    pub dead_letter_topic: String,
    /// Passed to librdkafka as they are (`security.protocol`, `sasl.*`, `ssl.*`, ...). Secrets
    /// belong in the environment: `CLICKFLOW__KAFKA__PROPERTIES__SASL_PASSWORD` and the like.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topics: vec!["clicks".into()],
            group_id: "clickflow".into(),
            start: "earliest".into(),
            dead_letter_topic: "clicks-dead-letters".into(),
            properties: BTreeMap::new(),
        }
    }
}
