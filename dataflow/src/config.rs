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
    /// A partition caught up (the broker says so) and quiet for this long no longer holds back
    /// `as_of`.
    pub idle_seconds: u64,
    /// Records waiting and none read, or no answer from the broker, for this long: the engine is
    /// not ready (`/readyz`) and a stalled consumer is restarted.
    pub stall_seconds: u64,
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
            stall_seconds: 20,
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
    /// Passed to librdkafka (`security.protocol`, `sasl.*`, `ssl.*`, `fetch.wait.max.ms`, ...).
    /// Values are strings, integers, floats or booleans, handed over as librdkafka's strings
    /// (`500`, `0.5`, `true`); a table or an array is refused. Secrets belong in the environment:
    /// `CLICKFLOW__KAFKA__PROPERTIES__SASL_PASSWORD` and the like.
    #[serde(deserialize_with = "properties::deserialize")]
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

/// `[kafka.properties]`: librdkafka takes every property as a string, but a TOML file (or an
/// environment variable, which is read as TOML) gives `fetch.wait.max.ms = 500` as an integer.
mod properties {
    use std::collections::BTreeMap;
    use std::fmt;

    use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
        d.deserialize_map(Properties)
    }

    struct Properties;

    impl<'de> Visitor<'de> for Properties {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a table of librdkafka properties")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                match map.next_value::<Value>()?.0 {
                    Ok(value) => {
                        out.insert(key, value);
                    }
                    Err(what) => {
                        return Err(de::Error::custom(format!(
                            "kafka property `{key}` is {what}; give a string, an integer, a float or a boolean"
                        )))
                    }
                }
            }
            Ok(out)
        }
    }

    /// One property as librdkafka's string, or what it is instead of a scalar.
    struct Value(Result<String, &'static str>);

    impl<'de> de::Deserialize<'de> for Value {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(ValueVisitor)
        }
    }

    struct ValueVisitor;

    impl<'de> Visitor<'de> for ValueVisitor {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string, an integer, a float or a boolean")
        }

        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value(Ok(v.to_string())))
        }

        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value(Ok(v)))
        }

        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value(Ok(v.to_string())))
        }

        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value(Ok(v.to_string())))
        }

        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value(Ok(v.to_string())))
        }

        /// The shortest text that reads back as the same number: `0.5`, `1e-7` as `0.0000001`.
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(Value(if v.is_finite() { Ok(v.to_string()) } else { Err("not a finite number") }))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Value(Err("an array")))
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            // The toml crate hands a date or time over as a map with one private key.
            let what = match map.next_key::<String>()? {
                Some(key) => {
                    map.next_value::<IgnoredAny>()?;
                    if key.starts_with("$__toml_private") {
                        "a date or time"
                    } else {
                        "a table"
                    }
                }
                None => "a table",
            };
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Value(Err(what)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(text: &str) -> Result<KafkaConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn properties_take_strings_numbers_and_booleans_as_librdkafka_strings() {
        let config = kafka(
            r#"
            [properties]
            "security.protocol" = "SASL_SSL"
            "fetch.wait.max.ms" = 500
            "queued.max.messages.kbytes" = 65536
            "retry.backoff.jitter" = 0.5
            "enable.auto.commit" = false
            "check.crcs" = true
            "#,
        )
        .unwrap();
        let got: Vec<(&str, &str)> = config.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("check.crcs", "true"),
                ("enable.auto.commit", "false"),
                ("fetch.wait.max.ms", "500"),
                ("queued.max.messages.kbytes", "65536"),
                ("retry.backoff.jitter", "0.5"),
                ("security.protocol", "SASL_SSL"),
            ]
        );
        // What is serialised reads back the same.
        let text = toml::to_string(&config).unwrap();
        assert_eq!(kafka(&text).unwrap(), config);
    }

    #[test]
    fn properties_refuse_tables_and_arrays_by_name() {
        for (text, what) in [
            ("[properties]\n\"sasl.mechanisms\" = [\"PLAIN\"]\n", "`sasl.mechanisms` is an array"),
            ("[properties.ssl]\nkey = \"x\"\n", "`ssl` is a table"),
            ("[properties]\n\"x.y\" = { a = 1 }\n", "`x.y` is a table"),
            ("[properties]\nwhen = 2026-01-01T00:00:00Z\n", "`when` is a date or time"),
            ("[properties]\nratio = nan\n", "`ratio` is not a finite number"),
        ] {
            let err = kafka(text).unwrap_err();
            assert!(err.contains(what), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_kafka_keys_are_still_refused() {
        let err = kafka("brokerz = \"k:9092\"\n").unwrap_err();
        assert!(err.contains("brokerz"), "{err}");
    }
}
