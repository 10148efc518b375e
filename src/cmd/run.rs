//! `clickflow run`: consume from a real Kafka, keep the views, serve the API.

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// Where to start without a snapshot: earliest, latest, committed, or an RFC 3339 time
    /// (overrides kafka.start).
    #[arg(long)]
    from: Option<String>,
    /// Address of the API (overrides api.listen).
    #[arg(long)]
    listen: Option<String>,
    /// Ignore existing snapshots and rebuild the views from `--from`.
    #[arg(long)]
    fresh: bool,
}

pub fn main(mut config: Config, args: Args) -> Result<()> {
    if let Some(from) = args.from {
        config.kafka.start = from;
    }
    if let Some(listen) = args.listen {
        config.api.listen = listen;
    }
    if args.fresh {
        if let Some(dir) = &config.engine.state_dir {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if entry.path().extension().is_some_and(|e| e == "snap") {
                    std::fs::remove_file(entry.path())
                        .with_context(|| format!("cannot remove {}", entry.path().display()))?;
                }
            }
            tracing::info!(dir = %dir.display(), "snapshots removed; rebuilding from {}", config.kafka.start);
        }
    }
    if config.engine.state_dir.is_none() {
        tracing::warn!("engine.state_dir is not set: after a restart the views are rebuilt from kafka.start");
    }
    let engine = Arc::new(super::engine(&config)?);
    let stop = engine.stop.clone();
    super::stop_on_signal(stop.clone());
    let alerts = super::alerting(&engine);
    let state = super::app_state(&engine, &alerts);
    let extras = super::Extras {
        bot: super::slack_bot(&config, &engine, &alerts)?,
        collector: super::event_collector(&config)?,
    };
    let engine_thread = super::demo::spawn_kafka_engine(engine, &alerts, &config)?;
    let served = super::tokio_runtime()?.block_on(super::serve(&config.api.listen, state, extras, stop.clone()));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ran = engine_thread.join().map_err(|_| anyhow::anyhow!("the engine thread panicked"))?;
    served.and(ran)
}
