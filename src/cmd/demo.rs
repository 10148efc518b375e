//! `clickflow demo`: librdkafka's mock cluster (the real Kafka protocol, in this process),
//! synthetic traffic produced into it in real time, the engine consuming it, and the API.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{Context, Result};
use dataflow::source::kafka::{KafkaSource, KafkaTiming};
use dataflow::{Engine, SourceFactory};
use generator::Generator;
use rdkafka::mocking::MockCluster;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// Address of the API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Synthetic events per second.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Partitions of the `clicks` topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
}

pub fn main(mut config: Config, args: Args) -> Result<()> {
    // The mock cluster is not Send: it lives on this thread for the whole demo.
    let mock = MockCluster::new(1).context("cannot start the embedded Kafka (librdkafka mock cluster)")?;
    let topic = config.kafka.topics.first().cloned().unwrap_or_else(|| "clicks".into());
    mock.create_topic(&topic, args.partitions, 1)?;
    if !config.kafka.dead_letter_topic.is_empty() {
        mock.create_topic(&config.kafka.dead_letter_topic, 1, 1)?;
    }
    config.kafka.brokers = mock.bootstrap_servers();
    config.kafka.topics = vec![topic.clone()];
    config.kafka.start = "earliest".into();
    config.generator.rate = args.rate;
    config.generator.lateness_seconds = config.engine.lateness_seconds;
    // Something for the alerts and the bot to show within minutes: a bot burst from one IP now
    // and then (the built-in `ip_burst` rule catches it), unless the config plans incidents.
    if config.generator.incidents.every_minutes == 0.0 {
        let incidents = &mut config.generator.incidents;
        (incidents.every_minutes, incidents.warmup_minutes, incidents.min_gap_minutes) = (10.0, 3, 5);
        incidents.kinds = vec![generator::incidents::IncidentKind::BotBurst];
    }
    tracing::info!(brokers = %config.kafka.brokers, %topic, partitions = args.partitions, "embedded Kafka started");

    super::shop_defaults(&mut config.views);
    let engine = Arc::new(super::engine(&config)?);
    // One stop flag for everything: a signal, the server ending, or the engine failing.
    let stop = engine.stop.clone();
    super::stop_on_signal(stop.clone());
    let producer = {
        let (kafka, generator, stop, topic) =
            (config.kafka.clone(), config.generator.clone(), stop.clone(), topic.clone());
        std::thread::Builder::new().name("generator".into()).spawn(move || {
            let start = super::generate::realtime_start(generator.rate);
            let generator = Generator::realtime(generator, start);
            if let Err(e) = super::generate::to_kafka(generator, &kafka, &topic, 0, true, &stop) {
                tracing::error!(error = %e, "the traffic generator stopped");
            }
        })?
    };
    let alerts = super::alerting(&engine);
    let state = super::app_state(&engine, &alerts);
    let extras = super::Extras {
        bot: super::slack_bot(&config, &engine, &alerts)?,
        collector: super::event_collector(&config, &engine)?,
    };
    let engine_thread = spawn_kafka_engine(engine, &alerts, &config)?;
    let port = args.listen.rsplit(':').next().unwrap_or("8080");
    println!(
        "\nclickflow demo: {} synthetic events/s into embedded Kafka at {}, topic `{topic}`.\n\
         Try:\n  curl -s http://127.0.0.1:{port}/api/v1/live | jq\n  \
         curl -s 'http://127.0.0.1:{port}/api/v1/timeseries?metric=events&breakdown=utm_source' | jq\n  \
         curl -s http://127.0.0.1:{port}/api/v1/sessions | jq .summary\n  \
         curl -s http://127.0.0.1:{port}/api/v1/funnels/checkout | jq .steps\n  \
         curl -s 'http://127.0.0.1:{port}/api/v1/funnels/checkout/stuck?step=3' | jq\n  \
         curl -sN http://127.0.0.1:{port}/api/v1/stream\n  curl -s http://127.0.0.1:{port}/metrics\n  \
         curl -s 'http://127.0.0.1:{port}/api/v1/bot/command?text=funnel%20checkout' | jq -r .text\n  \
         curl -s http://127.0.0.1:{port}/api/v1/bot/outbox | jq '.entries[] | {{channel, text}}'\n\
         Stop with Ctrl-C.\n",
        args.rate, config.kafka.brokers
    );
    let served = super::tokio_runtime()?.block_on(super::serve(
        &api::ApiConfig { listen: args.listen.clone(), ..config.api.clone() },
        state,
        extras,
        stop.clone(),
    ));
    stop.store(true, Ordering::Relaxed);
    let _ = producer.join();
    let ran = engine_thread.join().map_err(|_| anyhow::anyhow!("the engine thread panicked"))?;
    drop(mock);
    served.and(ran)
}

/// Runs the engine on Kafka in a thread; `engine.stop` stops it, and is set when it ends.
pub fn spawn_kafka_engine(
    engine: Arc<Engine>,
    alerts: &alerting::Alerting,
    config: &Config,
) -> Result<std::thread::JoinHandle<Result<()>>> {
    let stop = engine.stop.clone();
    let kafka = config.kafka.clone();
    let sources: SourceFactory = KafkaSource::factory(&kafka, KafkaTiming::of(&config.engine))?;
    let sinks = super::kafka_sinks(&config.kafka)?;
    if let Some(dir) = config.engine.state_dir.as_ref().filter(|_| engine.serves()) {
        // Funnels, retention and alert rules added through the API come back after a restart, in the order
        // the snapshot's results refer to.
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let restored = engine.defs.funnels.persist(dir.join("funnels.json")).map_err(anyhow::Error::msg)?;
        let retention = engine.defs.retention.persist(dir.join("retention.json")).map_err(anyhow::Error::msg)?;
        let rules = engine.defs.alerts.persist(dir.join("alerts.json")).map_err(anyhow::Error::msg)?;
        let silences = alerts.persist_silences(dir.join("silences.json")).map_err(anyhow::Error::msg)?;
        if restored + retention + rules + silences > 0 {
            tracing::info!(
                funnels = restored,
                retention,
                alerts = rules,
                silences,
                "definitions added at run time restored"
            );
        }
    }
    let handle = std::thread::Builder::new().name("engine".into()).spawn(move || {
        let result = engine.run(sources, sinks).map(|_| ()).map_err(anyhow::Error::from);
        if let Err(e) = &result {
            tracing::error!(error = %e, "the engine stopped");
        }
        stop.store(true, Ordering::Relaxed);
        result
    })?;
    Ok(handle)
}
