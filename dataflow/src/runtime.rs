//! The timely runtime: one dataflow per worker, fed by that worker's source in wall-clock epochs.
//!
//! Epoch e collects input until `start + e * epoch_ms`, then the input advances, so an idle source
//! never stalls the frontier. Ingestion stops when the views fall `max_epochs_in_flight` behind.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use differential_dataflow::input::Input;
use hdrhistogram::Histogram;
use read::status::UserState;
use read::{ReadModel, Status};
use schema::registry::Definitions;
use schema::{Epoch, Fact, ViewConfig};
use timely::dataflow::operators::capture::Capture;

use crate::config::EngineConfig;
use crate::deadletter::DeadLetterSink;
use crate::export::{Captured, Exporter, Freshness};
use crate::ingest::Ingest;
use crate::snapshot;
use crate::source::{Checkpoint, Poll, Source, SourceError};

pub type SourceFactory = Arc<dyn Fn(usize, usize) -> Result<Box<dyn Source>, SourceError> + Send + Sync>;
pub type SinkFactory = Arc<dyn Fn(usize) -> Box<dyn DeadLetterSink> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("worker failed: {0}")]
    Worker(String),
}

pub struct Engine {
    pub config: EngineConfig,
    pub views: ViewConfig,
    /// Funnels, retention and alert rules: from config, added through the API.
    pub defs: Arc<Definitions>,
    pub read_model: Arc<ReadModel>,
    pub status: Arc<Status>,
    /// Set to stop reading; the engine then drains and returns.
    pub stop: Arc<AtomicBool>,
    /// Record the time of each admitted event at or after this (epoch ms) to report
    /// event-to-read-model freshness.
    pub measure_freshness: Option<i64>,
    /// `[enrich]`, shared by the workers (none: events as sent).
    pub enrich: Option<Arc<crate::enrich::Enricher>>,
}

#[derive(Debug)]
pub struct RunReport {
    pub elapsed: Duration,
    pub freshness_ms: Option<Histogram<u64>>,
}

impl Engine {
    pub fn new(config: EngineConfig, views: ViewConfig) -> Result<Engine, EngineError> {
        config.validate().map_err(EngineError::Config)?;
        views.validate().map_err(EngineError::Config)?;
        let defs = Arc::new(Definitions::new(&views).map_err(EngineError::Config)?);
        Ok(Engine {
            read_model: ReadModel::new(views.clone(), &defs),
            defs,
            status: Arc::new(Status::default()),
            stop: Arc::new(AtomicBool::new(false)),
            measure_freshness: None,
            enrich: None,
            config,
            views,
        })
    }

    /// Runs until every source is exhausted or `stop` is set.
    pub fn run(&self, sources: SourceFactory, sinks: SinkFactory) -> Result<RunReport, EngineError> {
        let peers = self.config.workers;
        let start = Instant::now();
        let (capture_tx, capture_rx) = mpsc::channel::<Captured>();
        let (fresh_tx, fresh_rx) = mpsc::channel::<Freshness>();
        let caught_up = Arc::new((0..peers).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
        let exporter = Exporter {
            read_model: self.read_model.clone(),
            status: self.status.clone(),
            caught_up: caught_up.clone(),
            start,
            epoch_ms: self.config.epoch_ms,
            peers,
        };
        let export = std::thread::Builder::new()
            .name("export".into())
            .spawn(move || exporter.run(capture_rx, fresh_rx))
            .map_err(|e| EngineError::Worker(format!("cannot start the exporter: {e}")))?;
        let worker = WorkerSetup {
            config: self.config.clone(),
            views: self.views.clone(),
            read_model: self.read_model.clone(),
            defs: self.defs.clone(),
            status: self.status.clone(),
            stop: self.stop.clone(),
            failed: Arc::new(AtomicBool::new(false)),
            caught_up,
            start,
            measure_freshness: self.measure_freshness,
            enrich: self.enrich.clone(),
        };
        let mut timely_config = timely::Config::process(peers);
        // Keep merging trace batches while input is idle, so retracted (expired) records are
        // compacted away and memory follows the windows rather than history.
        let merge = differential_dataflow::Config::default().idle_merge_effort(Some(1_000));
        differential_dataflow::configure(&mut timely_config.worker, &merge);
        let guards = timely::execute(timely_config, move |w| {
            let run = std::panic::AssertUnwindSafe(|| {
                worker.run(&mut *w, &sources, &sinks, capture_tx.clone(), fresh_tx.clone())
            });
            let result = std::panic::catch_unwind(run);
            if !matches!(result, Ok(Ok(()))) {
                // The other workers would otherwise go on forever (or wait for this one's
                // progress) without it.
                match &result {
                    Ok(Err(e)) => tracing::error!(error = %e, "a worker failed; stopping the engine"),
                    _ => tracing::error!("a worker panicked; stopping the engine"),
                }
                worker.failed.store(true, Ordering::Relaxed);
                worker.stop.store(true, Ordering::Relaxed);
            }
            if worker.failed.load(Ordering::Relaxed) {
                // Timely steps a worker until its dataflows complete, which a dead peer's never
                // will: drop them.
                for id in w.installed_dataflows() {
                    w.drop_dataflow(id);
                }
            }
            result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
        .map_err(EngineError::Worker)?;
        let mut failures = Vec::new();
        for result in guards.join() {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) | Err(e) => failures.push(e),
            }
        }
        let freshness_ms = export.join().map_err(|_| EngineError::Worker("the exporter panicked".into()))?;
        if !failures.is_empty() {
            self.stop.store(true, Ordering::Relaxed);
            return Err(EngineError::Worker(failures.join("; ")));
        }
        Ok(RunReport { elapsed: start.elapsed(), freshness_ms })
    }
}

struct WorkerSetup {
    config: EngineConfig,
    views: ViewConfig,
    read_model: Arc<ReadModel>,
    defs: Arc<Definitions>,
    status: Arc<Status>,
    stop: Arc<AtomicBool>,
    /// A worker failed (error or panic): the others stop without waiting for its progress.
    failed: Arc<AtomicBool>,
    /// Per worker: 1 + the epoch in which its source had read all it had at start (0: not yet).
    caught_up: Arc<Vec<AtomicU64>>,
    start: Instant,
    measure_freshness: Option<i64>,
    enrich: Option<Arc<crate::enrich::Enricher>>,
}

impl WorkerSetup {
    fn run(
        &self,
        worker: &mut timely::worker::Worker,
        sources: &SourceFactory,
        sinks: &SinkFactory,
        capture: mpsc::Sender<Captured>,
        fresh: mpsc::Sender<Freshness>,
    ) -> Result<(), String> {
        let (index, peers) = (worker.index(), worker.peers());
        let (mut input, probe) = worker.dataflow::<Epoch, _, _>(|scope| {
            let (input, facts) = scope.new_collection::<Fact, isize>();
            let (probe, rows) = views::all_views(facts).probe();
            rows.inner.capture_into(capture);
            (input, probe)
        });
        let fail = |e: &dyn std::fmt::Display| format!("worker {index}: {e}");
        let mut source = sources(index, peers).map_err(|e| fail(&e))?;
        let lateness = self.config.lateness_ms();
        let mut ingest = Ingest::new(index as u32, self.views.clone(), lateness, sinks(index));
        ingest.freshness = self.measure_freshness.map(|from| (from, Vec::new()));
        ingest.enrich = self.enrich.clone().map(|e| (e, crate::enrich::AgentCache::default()));
        ingest.funnels = self.defs.funnels.clone();
        ingest.retention = self.defs.retention.clone();
        ingest.alerts = self.defs.alerts.clone();
        ingest.peers = peers as u32;
        // Only a source that can resume reads or writes snapshots (a replay must not clobber them).
        let state_dir = self.config.state_dir.as_ref().filter(|_| source.resumable());
        if let Some(dir) = state_dir {
            if let Some(snap) = snapshot::load(dir, index, peers).map_err(|e| fail(&e))? {
                tracing::info!(worker = index, dir = %dir.display(), partitions = snap.checkpoint.partitions.len(), "resuming from snapshot");
                source.restore(snap.checkpoint).map_err(|e| fail(&e))?;
                ingest.restore(snap.ledger, &mut input);
            }
        }
        let epoch_ms = self.config.epoch_ms;
        let mut epoch: Epoch = 1;
        input.advance_to(epoch);
        input.flush();
        let writer = state_dir.map(|dir| snapshot::Writer::new(dir, index, peers));
        let mut last_snapshot = Instant::now();
        let mut last_report = Instant::now() - Duration::from_secs(1);
        let mut commits: VecDeque<(Epoch, Checkpoint)> = VecDeque::new();
        loop {
            let deadline = self.start + Duration::from_millis(epoch * epoch_ms);
            ingest.epoch = epoch;
            let poll = source.poll(&mut ingest, deadline).map_err(|e| fail(&e))?;
            let now = Instant::now();
            let finished = poll == Poll::Done || self.stop.load(Ordering::Relaxed);
            if now >= deadline || finished {
                source.each_partition(&mut |_, partition| ingest.drain_partition(partition));
                ingest.flush(&mut input, source.clock(lateness), self.read_model.as_of_ms());
                if let Some((_, times)) = ingest.freshness.as_mut().filter(|(_, t)| !t.is_empty()) {
                    let _ = fresh.send((epoch, std::mem::take(times)));
                }
                if self.caught_up[index].load(Ordering::Relaxed) == 0 && source.caught_up() {
                    self.caught_up[index].store(epoch + 1, Ordering::Relaxed);
                }
                if let Some(writer) = &writer {
                    if finished || last_snapshot.elapsed() >= Duration::from_secs(self.config.snapshot_seconds) {
                        let checkpoint = source.checkpoint();
                        // A write still in progress postpones this snapshot (the last one waits).
                        if writer.submit(epoch, ingest.ledger(), &checkpoint, finished).map_err(|e| fail(&e))? {
                            commits.push_back((epoch, checkpoint));
                            last_snapshot = Instant::now();
                        }
                    }
                }
                if last_report.elapsed() >= Duration::from_secs(1) || finished {
                    source.report(&self.status);
                    source.each_partition(&mut |name, p| {
                        let state = UserState {
                            session_keys: p.sessions.users() as u64,
                            logged_users: p.logs.users() as u64,
                            capped_events: p.logs.capped_events,
                            approximate_recuts: p.sessions.approximate_recuts,
                            retention_users: p.retention.users() as u64,
                        };
                        self.status.set_user_state(name, state);
                    });
                    last_report = Instant::now();
                }
                let elapsed = now.saturating_duration_since(self.start).as_millis() as u64;
                epoch = (elapsed / epoch_ms + 1).max(epoch + 1);
                input.advance_to(epoch);
                input.flush();
            }
            // Offsets are committed once the snapshot is durable and the views have absorbed
            // everything it covers.
            let durable = writer.as_ref().map_or(0, |w| w.durable_before());
            while commits.front().is_some_and(|(e, _)| *e < durable && !probe.less_equal(e)) {
                let (_, checkpoint) = commits.pop_front().expect("checked");
                source.commit(&checkpoint);
            }
            if finished {
                break;
            }
            // Bounded work in flight: the exporter publishes an epoch only after the dataflow is
            // through it, so waiting on the published epochs bounds both.
            let behind = epoch.saturating_sub(self.config.max_epochs_in_flight);
            while self.read_model.complete_before() < behind {
                worker.step_or_park(Some(Duration::from_millis(1)));
                if self.stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            if poll == Poll::Idle {
                let wait = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(5));
                worker.step_or_park(Some(wait));
            } else {
                worker.step();
            }
        }
        drop(input);
        while !probe.done() && !self.failed.load(Ordering::Relaxed) {
            worker.step_or_park(Some(Duration::from_millis(5)));
        }
        if let Some(writer) = writer {
            writer.finish().map_err(|e| fail(&e))?;
        }
        while let Some((_, checkpoint)) = commits.pop_front() {
            source.commit(&checkpoint);
        }
        Ok(())
    }
}
