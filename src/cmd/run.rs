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
    /// A timely cluster: a file with the `host:port` of every process, one per line, in process
    /// order (overrides engine.cluster.hosts_file). Every process reads its share of the
    /// partitions; process 0 serves the API.
    #[arg(long)]
    hosts: Option<std::path::PathBuf>,
    /// This process's index in the hosts file (overrides engine.cluster.process).
    #[arg(long)]
    process: Option<usize>,
}

pub fn main(mut config: Config, args: Args) -> Result<()> {
    if let Some(from) = args.from {
        config.kafka.start = from;
    }
    if let Some(listen) = args.listen {
        config.api.listen = listen;
    }
    if let Some(hosts) = args.hosts {
        config.engine.cluster.hosts_file = Some(hosts);
    }
    if let Some(process) = args.process {
        config.engine.cluster.process = process;
    }
    config.engine.validate().map_err(anyhow::Error::msg)?;
    // Before anything starts: an open API on a reachable address is refused.
    config.api.check_exposure(&api::auth::Tokens::from_env()).map_err(anyhow::Error::msg)?;
    if args.fresh {
        remove_snapshots(&config)?;
    }
    if config.engine.state_dir.is_none() {
        tracing::warn!("engine.state_dir is not set: after a restart the views are rebuilt from kafka.start");
    }
    let engine = Arc::new(super::engine(&config)?);
    let stop = engine.stop.clone();
    super::stop_on_signal(stop.clone());
    let alerts = super::alerting(&engine);
    if !engine.serves() {
        let processes = config.engine.cluster.processes();
        tracing::info!(
            process = config.engine.cluster.process,
            processes,
            "reading this process's share of the partitions; process 0 of the cluster serves the views"
        );
        let engine_thread = super::demo::spawn_kafka_engine(engine, &alerts, &config)?;
        return engine_thread.join().map_err(|_| anyhow::anyhow!("the engine thread panicked"))?;
    }
    let state = super::app_state(&engine, &alerts);
    let extras = super::Extras {
        bot: super::slack_bot(&config, &engine, &alerts)?,
        collector: super::event_collector(&config, &engine)?,
    };
    let engine_thread = super::demo::spawn_kafka_engine(engine, &alerts, &config)?;
    let served = super::tokio_runtime()?.block_on(super::serve(&config.api, state, extras, stop.clone()));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ran = engine_thread.join().map_err(|_| anyhow::anyhow!("the engine thread panicked"))?;
    served.and(ran)
}

/// `--fresh`: removes this process's workers' snapshots (in a cluster the processes may share the
/// directory; each removes its own).
fn remove_snapshots(config: &Config) -> Result<()> {
    let Some(dir) = &config.engine.state_dir else { return Ok(()) };
    let threads = config.engine.workers;
    let peers = threads * config.engine.cluster.processes();
    let first = config.engine.cluster.process * threads;
    let mine: Vec<String> = (first..first + threads).map(|w| format!("worker-{w}-of-")).collect();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = mine.iter().any(|p| name.starts_with(p)) || (peers == threads && name.starts_with("worker-"));
        if ours && name.ends_with(".snap") {
            std::fs::remove_file(entry.path()).with_context(|| format!("cannot remove {}", entry.path().display()))?;
        }
    }
    tracing::info!(dir = %dir.display(), "snapshots removed; rebuilding from {}", config.kafka.start);
    Ok(())
}
