//! The timely runtime: one dataflow per worker (of every process of the cluster), fed by that
//! worker's source in wall-clock epochs.
//!
//! Epoch e collects input until `start + e * epoch_ms`, then every input advances, so an idle
//! source never stalls the frontier. Ingestion waits while the probe is more than
//! `max_epochs_in_flight` epochs behind. Snapshots are taken at the same labels on every worker
//! and written per worker; Kafka offsets are committed once a label is durable everywhere.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use read::status::UserState;
use read::{ReadModel, Status};
use schema::registry::Definitions;
use schema::{Epoch, ViewConfig};
use views::control::Defs;
use views::snapshot::{Snapshots, FINAL};
use views::users::{UserStateSizes, Users, UsersState};

use crate::config::EngineConfig;
use crate::deadletter::DeadLetterSink;
use crate::export::{Captured, Exporter, Freshness, TableSnapshots};
use crate::graph::{Graph, Restored};
use crate::ingest::Ingest;
use crate::snapshot::{self, Label, Shape};
use crate::source::{Checkpoint, Poll, Source, SourceError};
use crate::timekeeper::{Timekeeper, WorkerClock};

pub type SourceFactory = Arc<dyn Fn(usize, usize) -> Result<Box<dyn Source>, SourceError> + Send + Sync>;
pub type SinkFactory = Arc<dyn Fn(usize) -> Box<dyn DeadLetterSink> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("worker failed: {0}")]
    Worker(String),
}

/// The parts every worker's snapshot holds.
const PARTS: [&str; 4] = ["inputs", "users", "cells", "clock"];
/// Worker 0 of the serving process also holds the read side's tables (see `TableSnapshots`).
const PARTS_WITH_TABLES: [&str; 5] = ["inputs", "users", "cells", "clock", "tables"];
/// How long worker 0 waits, when stopping, for the exporter to take the final tables.
const FINAL_TABLES_WAIT: Duration = Duration::from_secs(120);

pub struct Engine {
    pub config: EngineConfig,
    pub views: ViewConfig,
    /// Funnels, retention and alert rules: from config, added through the API; they enter the
    /// dataflow as an input at the epoch they change.
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

    /// Whether this process serves the views (process 0 of a cluster, or the only one).
    pub fn serves(&self) -> bool {
        self.config.cluster.process == 0
    }

    /// Runs until every source is exhausted or `stop` is set.
    pub fn run(&self, sources: SourceFactory, sinks: SinkFactory) -> Result<RunReport, EngineError> {
        let threads = self.config.workers;
        let hosts = self.config.cluster.addresses().map_err(EngineError::Config)?;
        let processes = hosts.len().max(1);
        let start = Instant::now();
        // Bounded: a worker whose cells the exporter has not taken yet waits (see `Bounded`).
        let (capture_tx, capture_rx) = mpsc::sync_channel::<Captured>(256);
        let (fresh_tx, fresh_rx) = mpsc::channel::<Freshness>();
        let tables = Arc::new(TableSnapshots::default());
        let exporter = Exporter {
            read_model: self.read_model.clone(),
            tables: tables.clone(),
            status: self.status.clone(),
            start,
            epoch_ms: self.config.epoch_ms,
            capturing: threads,
        };
        let export = std::thread::Builder::new()
            .name("export".into())
            .spawn(move || exporter.run(capture_rx, fresh_rx))
            .map_err(|e| EngineError::Worker(format!("cannot start the exporter: {e}")))?;
        let worker = WorkerSetup {
            config: self.config.clone(),
            views: self.views.clone(),
            defs: self.defs.clone(),
            status: self.status.clone(),
            stop: self.stop.clone(),
            failed: Arc::new(AtomicBool::new(false)),
            start,
            measure_freshness: self.measure_freshness,
            enrich: self.enrich.clone(),
            processes,
            serving: self.serves(),
            read_model: self.read_model.clone(),
            tables,
        };
        if processes > 1 {
            exit_when_a_peer_is_gone();
        }
        let mut timely_config = if processes > 1 {
            timely::Config {
                communication: timely::CommunicationConfig::Cluster {
                    threads,
                    process: self.config.cluster.process,
                    addresses: hosts,
                    report: false,
                    zerocopy: false,
                },
                worker: timely::WorkerConfig::default(),
            }
        } else {
            timely::Config::process(threads)
        };
        // Keep merging trace batches while input is idle (no arrangement holds state today, but
        // an operator that arranges must not keep retracted records).
        let merge = differential_dataflow::Config::default().idle_merge_effort(Some(1_000));
        differential_dataflow::configure(&mut timely_config.worker, &merge);
        let guards = timely::execute(timely_config, move |w| {
            let run = std::panic::AssertUnwindSafe(|| worker.run(&mut *w, &sources, &sinks, &capture_tx, &fresh_tx));
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
    defs: Arc<Definitions>,
    status: Arc<Status>,
    stop: Arc<AtomicBool>,
    /// A worker failed (error or panic): the others stop without waiting for its progress.
    failed: Arc<AtomicBool>,
    start: Instant,
    measure_freshness: Option<i64>,
    enrich: Option<Arc<crate::enrich::Enricher>>,
    processes: usize,
    /// This process serves the views: its workers' cells go to the exporter.
    serving: bool,
    /// Restored by worker 0 from its snapshot's tables.
    read_model: Arc<ReadModel>,
    tables: Arc<TableSnapshots>,
}

/// What worker 0 last sent as definitions (registry versions).
type DefsVersion = (u64, u64, u64);

impl WorkerSetup {
    fn run(
        &self,
        worker: &mut timely::worker::Worker,
        sources: &SourceFactory,
        sinks: &SinkFactory,
        capture: &mpsc::SyncSender<Captured>,
        fresh: &mpsc::Sender<Freshness>,
    ) -> Result<(), String> {
        let (index, peers) = (worker.index(), worker.peers());
        let fail = |e: &dyn std::fmt::Display| format!("worker {index}: {e}");
        let mut source = sources(index, peers).map_err(|e| fail(&e))?;
        let lateness = self.config.lateness_ms();
        // Only a source that can resume reads or writes snapshots (a replay must not clobber them).
        let state_dir = self.config.state_dir.clone().filter(|_| source.resumable());
        let shape = Shape { processes: self.processes, workers: peers, assignment: source.assignment() };
        let restored = match &state_dir {
            Some(dir) => crate::graph::agree_on_snapshot(worker, dir, &shape).map_err(|e| fail(&e))?,
            None => None,
        };
        let run = restored.as_ref().map_or(0, |s| s.label.run + 1);
        let mut parts = restored.map(|s| s.parts).unwrap_or_default();
        let decode = |name: &str, parts: &mut BTreeMap<String, Vec<u8>>| parts.remove(name);
        let checkpoint: Option<Checkpoint> = decode("inputs", &mut parts)
            .map(|b| bincode::deserialize(&b).map_err(|e| fail(&format!("snapshot part inputs: {e}"))))
            .transpose()?;
        let mut users = Users::new(self.views.clone(), lateness, peers as u32);
        if let Some(b) = decode("users", &mut parts) {
            let state: UsersState = bincode::deserialize(&b).map_err(|e| fail(&format!("snapshot part users: {e}")))?;
            users.restore(state);
        }
        let store = match decode("cells", &mut parts) {
            Some(b) => bincode::deserialize(&b).map_err(|e| fail(&format!("snapshot part cells: {e}")))?,
            None => Default::default(),
        };
        let keeper: Timekeeper = match decode("clock", &mut parts) {
            Some(b) => bincode::deserialize(&b).map_err(|e| fail(&format!("snapshot part clock: {e}")))?,
            None => Timekeeper::default(),
        };
        // Worker 0 of the serving process holds the read side's part: the only copy of the
        // counted cells' totals.
        let holds_tables = self.serving && index == 0 && state_dir.is_some();
        if holds_tables && checkpoint.is_some() {
            let bytes = decode("tables", &mut parts).ok_or_else(|| {
                fail(&"snapshot part tables is missing; run with --fresh to rebuild the views from Kafka")
            })?;
            self.read_model.restore(&bytes).map_err(|e| fail(&format!("snapshot part tables: {e}")))?;
        }
        let resumed = checkpoint.is_some();
        let snapshot_parts: &[&str] = if holds_tables { &PARTS_WITH_TABLES } else { &PARTS };
        if let Some(checkpoint) = checkpoint {
            tracing::info!(worker = index, partitions = checkpoint.partitions.len(), "resuming from snapshot");
            source.restore(checkpoint).map_err(|e| fail(&e))?;
        }
        let every = match &state_dir {
            Some(_) => (self.config.snapshot_seconds * 1000 / self.config.epoch_ms).max(1),
            None => 0,
        };
        let snapshots = Snapshots::new(every);
        let restored = Restored { users, store, keeper, resumed };
        let pusher = match self.serving {
            true => crate::export::Capturing::Serving(capture.clone()),
            false => crate::export::Capturing::Elsewhere,
        };
        let mut graph = Graph::build(worker, &self.views, restored, snapshots.clone(), self.config.workers, pusher);

        let mut ingest = Ingest::new(&self.views, lateness, sinks(index));
        ingest.freshness = self.measure_freshness.map(|from| (from, Vec::new()));
        ingest.enrich = self.enrich.clone().map(|e| (e, crate::enrich::AgentCache::default()));
        let epoch_ms = self.config.epoch_ms;
        let mut epoch: Epoch = 1;
        graph.advance_to(epoch);
        let writer = state_dir.as_ref().map(|dir| snapshot::Writer::new(dir, index, shape.clone()));
        let mut last_report = Instant::now() - Duration::from_secs(1);
        // Checkpoints of labels being written, to commit once they are durable everywhere.
        let mut checkpoints: BTreeMap<u64, Checkpoint> = BTreeMap::new();
        let (mut taken, mut announced, mut committed) = (0u64, None::<u64>, None::<u64>);
        let mut sent_clock: Option<WorkerClock> = None;
        let mut sent_defs: Option<DefsVersion> = None;
        let mut caught_up = false;
        loop {
            let deadline = self.start + Duration::from_millis(epoch * epoch_ms);
            ingest.as_of = graph.time().as_of;
            let poll = source.poll(&mut ingest, deadline).map_err(|e| fail(&e))?;
            graph.send_admitted(&mut ingest.admitted);
            let now = Instant::now();
            let finished = poll == Poll::Done || self.stop.load(Ordering::Relaxed);
            if now >= deadline || finished {
                graph.send_pages(&mut ingest.pages);
                graph.send_changes(&mut ingest);
                if let Some((_, times)) = ingest.freshness.as_mut().filter(|(_, t)| !t.is_empty()) {
                    let _ = fresh.send((epoch, std::mem::take(times)));
                }
                caught_up |= source.caught_up();
                let input = source.clock(lateness, ingest.as_of);
                let floor = if poll == Poll::Done { i64::MAX } else { input.floor };
                let clock = WorkerClock {
                    worker: index as u32,
                    head: input.head,
                    watermark: input.watermark,
                    floor,
                    caught_up,
                };
                if sent_clock != Some(clock) {
                    graph.send_clock(clock);
                    sent_clock = Some(clock);
                }
                if index == 0 {
                    self.send_defs(&mut graph, &mut sent_defs);
                }
                if last_report.elapsed() >= Duration::from_secs(1) || finished {
                    source.report(&self.status);
                    self.status.set_user_state(&format!("worker {index}"), user_state(graph.sizes()));
                    last_report = Instant::now();
                }
                let elapsed = now.saturating_duration_since(self.start).as_millis() as u64;
                let next = (elapsed / epoch_ms + 1).max(epoch + 1);
                // The inputs now hold every epoch up to this one: their positions stand for the
                // labels up to the next.
                let upto = (!finished).then_some(next);
                let mut due = if taken == FINAL { Vec::new() } else { snapshots.labels(taken, upto) };
                // A write still in progress: skip these labels here (not the final one). Every
                // worker lists what it wrote, and a restart resumes a label all of them hold.
                if writer.as_ref().is_some_and(|w| w.busy()) && upto.is_some() {
                    due.drain(..).for_each(|label| snapshots.skip(label));
                }
                if !due.is_empty() {
                    let checkpoint = source.checkpoint();
                    let bytes = bincode::serialize(&checkpoint).expect("serialisable");
                    for label in due {
                        if holds_tables {
                            self.tables.want(label);
                        }
                        snapshots.put(label, "inputs", bytes.clone());
                        checkpoints.insert(label, checkpoint.clone());
                    }
                }
                taken = upto.unwrap_or(FINAL);
                if finished {
                    break;
                }
                epoch = next;
                graph.advance_to(epoch);
            }
            if holds_tables {
                self.add_tables(&snapshots);
            }
            self.write_snapshots(&snapshots, snapshot_parts, writer.as_ref(), &shape, run);
            if let Some(durable) = writer.as_ref().and_then(|w| w.durable()).filter(|d| announced != Some(*d)) {
                graph.send_durable(index as u32, durable);
                announced = Some(durable);
            }
            if let Some(everywhere) = graph.durable_everywhere().filter(|d| committed != Some(*d)) {
                // Every worker holds this label: commit its offsets, forget the older ones.
                if let Some(checkpoint) = checkpoints.get(&everywhere) {
                    source.commit(checkpoint);
                }
                checkpoints = checkpoints.split_off(&everywhere);
                if let Some(dir) = &state_dir {
                    snapshot::remove_before(dir, index, peers, Label { run, epoch: everywhere });
                }
                committed = Some(everywhere);
            }
            // Bounded work in flight: the probe follows the cells the read side receives.
            let behind = epoch.saturating_sub(self.config.max_epochs_in_flight);
            while graph.probe.less_than(&behind) && !self.stop.load(Ordering::Relaxed) {
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
            if poll == Poll::Idle {
                let wait = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(5));
                worker.step_or_park(Some(wait));
            } else {
                worker.step();
            }
        }
        graph.close();
        while !graph.probe.done() && !self.failed.load(Ordering::Relaxed) {
            worker.step_or_park(Some(Duration::from_millis(5)));
        }
        if holds_tables {
            // The exporter takes the final tables once every worker's cells are published.
            let waiting = Instant::now();
            while self.tables.waiting_for(FINAL) && !self.failed.load(Ordering::Relaxed) {
                if waiting.elapsed() > FINAL_TABLES_WAIT {
                    tracing::error!("the exporter did not publish the final epoch; the last durable snapshot stays");
                    break;
                }
                worker.step_or_park(Some(Duration::from_millis(5)));
            }
            self.add_tables(&snapshots);
        }
        self.write_snapshots(&snapshots, snapshot_parts, writer.as_ref(), &shape, run);
        if let Some(writer) = writer {
            writer.finish().map_err(|e| fail(&e))?;
        }
        // Stopping: the final positions are in this worker's durable snapshot.
        if let Some(checkpoint) = checkpoints.get(&FINAL) {
            source.commit(checkpoint);
        }
        Ok(())
    }

    /// Worker 0 sends the definitions at the first epoch and whenever a registry changed: every
    /// worker takes them up at that epoch.
    fn send_defs(&self, graph: &mut Graph, sent: &mut Option<DefsVersion>) {
        let version = (self.defs.funnels.version(), self.defs.retention.version(), self.defs.alerts.version());
        if *sent == Some(version) {
            return;
        }
        *sent = Some(version);
        graph.send_defs(Defs {
            funnels: self.defs.funnels.all().iter().map(|f| (**f).clone()).collect(),
            retention: self.defs.retention.all().iter().map(|r| (**r).clone()).collect(),
            alerts: self.defs.alerts.all().iter().map(|r| r.def.clone()).collect(),
        });
    }

    /// Adds the read side's tables the exporter has taken since the last call (worker 0).
    fn add_tables(&self, snapshots: &Snapshots) {
        for (label, bytes) in self.tables.taken() {
            snapshots.put(label, "tables", bytes);
        }
    }

    /// Hands every complete snapshot of this worker to its writer.
    fn write_snapshots(
        &self,
        snapshots: &Snapshots,
        parts: &[&str],
        writer: Option<&snapshot::Writer>,
        shape: &Shape,
        run: u64,
    ) {
        while let Some((label, parts)) = snapshots.complete(parts) {
            if let Some(writer) = writer {
                writer.submit(shape, Label { run, epoch: label }, &parts);
            }
        }
    }
}

/// A process of the cluster that dies takes the computation with it: timely's network threads
/// panic ("timely communication error"), and the workers would wait for the dead peer's progress
/// for ever. Exit instead, with a message, so that a supervisor restarts the process and the
/// cluster resumes from its snapshots.
fn exit_when_a_peer_is_gone() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if message.contains("timely communication error") {
                tracing::error!(
                    error = message,
                    "lost the connection to another process of the cluster; exiting: restart every process of the cluster and it resumes from its snapshots"
                );
                std::process::exit(3);
            }
            previous(info);
        }));
    });
}

fn user_state(s: UserStateSizes) -> UserState {
    UserState {
        session_keys: s.session_keys,
        logged_users: s.logged_users,
        capped_events: s.capped_events,
        approximate_recuts: s.approximate_recuts,
        retention_users: s.retention_users,
    }
}
