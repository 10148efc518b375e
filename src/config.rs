//! One TOML file; each crate owns its section. Defaults live in the code, the file overrides them,
//! and environment variables override the file: `CLICKFLOW__ENGINE__WORKERS=4` sets
//! `[engine] workers = 4`. Secrets (SASL passwords, Slack tokens) come only from the environment.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub engine: dataflow::EngineConfig,
    pub kafka: dataflow::KafkaConfig,
    pub views: schema::ViewConfig,
    pub api: api::ApiConfig,
    pub bot: bot::BotConfig,
    pub enrich: dataflow::EnrichConfig,
    pub collector: collector::CollectorConfig,
    pub generator: generator::GeneratorConfig,
}

const ENV_PREFIX: &str = "CLICKFLOW__";

pub fn load(path: Option<&Path>) -> Result<Config> {
    let mut table = match path {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("cannot read config file {}", p.display()))?;
            text.parse::<toml::Table>().with_context(|| format!("{} is not valid TOML", p.display()))?
        }
        None => toml::Table::new(),
    };
    apply_env(&mut table, std::env::vars())?;
    let config: Config = toml::Value::Table(table).try_into().with_context(|| {
        format!("invalid configuration{}", path.map(|p| format!(" in {}", p.display())).unwrap_or_default())
    })?;
    config.engine.validate().map_err(anyhow::Error::msg)?;
    config.views.validate().map_err(anyhow::Error::msg)?;
    config.bot.validate().map_err(anyhow::Error::msg)?;
    config.collector.validate().map_err(anyhow::Error::msg)?;
    Ok(config)
}

/// Applies `CLICKFLOW__SECTION__KEY[__SUBKEY]=value`; values parse as TOML when they can
/// (`4`, `true`, `["a","b"]`) and are strings otherwise.
fn apply_env(table: &mut toml::Table, vars: impl Iterator<Item = (String, String)>) -> Result<()> {
    for (name, raw) in vars {
        let Some(path) = name.strip_prefix(ENV_PREFIX) else { continue };
        let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
        if keys.iter().any(|k| k.is_empty()) {
            bail!("environment variable {name}: empty key segment");
        }
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(raw.clone()));
        // A librdkafka property is a string: one given unquoted (`500`, `0.50`, `0x1F`, `1e3`,
        // `[x]`) is taken as written rather than as the TOML value it happens to spell, so that
        // a password is never rewritten; a quoted one loses its quotes as before.
        let property = keys.len() == 3 && keys[0] == "kafka" && keys[1] == "properties";
        let value = match value {
            toml::Value::String(_) => value,
            _ if property => toml::Value::String(raw.trim().to_string()),
            _ => value,
        };
        let mut node = &mut *table;
        for key in &keys[..keys.len() - 1] {
            let entry = node.entry(key.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            node = entry
                .as_table_mut()
                .with_context(|| format!("environment variable {name}: `{key}` is not a section"))?;
        }
        // librdkafka property names use dots; env names cannot.
        let last = keys.last().expect("at least one key");
        let last = if property { last.replace('_', ".") } else { last.clone() };
        node.insert(last, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_values_and_types() {
        let mut table: toml::Table = "[engine]\nworkers = 1\n".parse().unwrap();
        let vars = [
            ("CLICKFLOW__ENGINE__WORKERS".to_string(), "4".to_string()),
            ("CLICKFLOW__KAFKA__BROKERS".to_string(), "k1:9092".to_string()),
            ("CLICKFLOW__KAFKA__PROPERTIES__SASL_PASSWORD".to_string(), "s3cret".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ];
        apply_env(&mut table, vars.into_iter()).unwrap();
        let config: Config = toml::Value::Table(table).try_into().unwrap();
        assert_eq!(config.engine.workers, 4);
        assert_eq!(config.kafka.brokers, "k1:9092");
        assert_eq!(config.kafka.properties.get("sasl.password").map(String::as_str), Some("s3cret"));
    }

    #[test]
    fn kafka_properties_from_the_environment_need_no_quotes() {
        let mut table: toml::Table =
            "[kafka.properties]\n\"fetch.min.bytes\" = 1024\n\"enable.auto.commit\" = false\n".parse().unwrap();
        let vars = [
            ("CLICKFLOW__KAFKA__PROPERTIES__FETCH_WAIT_MAX_MS", "500"),
            ("CLICKFLOW__KAFKA__PROPERTIES__RETRY_BACKOFF_JITTER", "0.50"),
            ("CLICKFLOW__KAFKA__PROPERTIES__CHECK_CRCS", "true"),
            ("CLICKFLOW__KAFKA__PROPERTIES__SASL_PASSWORD", "0x1F"),
            ("CLICKFLOW__KAFKA__PROPERTIES__SASL_USERNAME", "[\"ops\"]"),
            ("CLICKFLOW__KAFKA__PROPERTIES__SECURITY_PROTOCOL", "\"SASL_SSL\""),
        ];
        apply_env(&mut table, vars.into_iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap();
        let config: Config = toml::Value::Table(table).try_into().unwrap();
        let got: Vec<(&str, &str)> = config.kafka.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("check.crcs", "true"),
                ("enable.auto.commit", "false"),
                ("fetch.min.bytes", "1024"),
                ("fetch.wait.max.ms", "500"),
                ("retry.backoff.jitter", "0.50"),
                ("sasl.password", "0x1F"),
                ("sasl.username", "[\"ops\"]"),
                ("security.protocol", "SASL_SSL"),
            ]
        );
    }

    #[test]
    fn kafka_properties_that_are_tables_are_refused_by_name() {
        let table: toml::Table = "[kafka.properties.ssl]\nkey = \"x\"\n".parse().unwrap();
        let err = toml::Value::Table(table).try_into::<Config>().unwrap_err();
        assert!(err.to_string().contains("`ssl` is a table"), "{err}");
    }

    #[test]
    fn the_example_file_lists_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/clickflow.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let config: Config = toml::from_str(&text).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let table: toml::Table = "[engine]\nworkerz = 1\n".parse().unwrap();
        let err = toml::Value::Table(table).try_into::<Config>().unwrap_err();
        assert!(err.to_string().contains("workerz"), "{err}");
    }
}
