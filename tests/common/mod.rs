//! Shared by the integration tests: the reference implementation and a harness that drives the
//! real engine with scripted batches.
#![allow(dead_code)]

pub mod alert_oracle;
pub mod e2e;
pub mod funnel_oracle;
pub mod kafka;
pub mod oracle;
pub mod path_oracle;
pub mod retention_oracle;
pub mod session_oracle;
pub mod tansu;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dataflow::clock::PartitionClock;
use dataflow::deadletter::{Coords, DeadLetterSink, MemorySink};
use dataflow::ingest::Ingest;
use dataflow::source::{now_ms, worker_clock, InputClock, PartClock, Poll, Source, SourceError};
use dataflow::{Engine, EngineConfig, SourceFactory};
use read::model::Dump;
use read::ReadModel;
use schema::sessions::SessionConfig;
use schema::ViewConfig;

/// Small windows so that retention and expiry happen within a few hours of event time.
pub fn small_windows() -> ViewConfig {
    ViewConfig {
        window_minutes: 30,
        active_minutes: 5,
        active_history_minutes: 10,
        top_minutes: 5,
        trend_baseline_minutes: 10,
        trend_min_views: 2,
        top_n: 4,
        // Short sessions so that gaps, merges by late events and cuts at the maximum length all
        // happen within the two hours the property tests span.
        sessions: SessionConfig { inactivity_minutes: 10, max_hours: 1, ..SessionConfig::default() },
        // Small enough that the bot user of the property tests is capped.
        max_events_per_user: 10,
        funnels: test_funnels(),
        paths: serde_json::from_value(serde_json::json!({
            "rules": [{"pattern": "^/products/\\d+", "name": "/products/:id"}],
            "conversion_events": ["purchase"]
        }))
        .unwrap(),
        retention: test_retention(),
        // The alert tests bring their own rules (tests/alerts_oracle.rs).
        alerts: schema::alert_rules::AlertConfig { builtin: false, ..Default::default() },
    }
}

/// One definition per cohort type, both with predicates, one with a breakdown.
pub fn test_retention() -> Vec<schema::retention::RetentionDef> {
    serde_json::from_value(serde_json::json!([
        {"name": "daily_return", "period": "day", "periods": 4, "breakdown": "utm_source",
         "start": {"event": "page_view", "page_prefix": "/products"}, "return": {"event": "click"}},
        {"name": "weekly_buyers", "period": "week", "periods": 3, "cohort": "recurring", "mode": "on_or_after",
         "start": {"event": "page_view", "page": "/"}, "return": {"event": "purchase", "props": {"plan": "pro"}}}
    ]))
    .unwrap()
}

/// The funnels of `examples/funnels.toml`, which the end-to-end runs load with `--config`.
pub const EXAMPLE_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/funnels.toml");

/// The `[views]` of `examples/funnels.toml` (funnels, retention, path rules) over the defaults.
pub fn example_views() -> ViewConfig {
    let config: toml::Value = toml::from_str(&std::fs::read_to_string(EXAMPLE_CONFIG).unwrap()).unwrap();
    config["views"].clone().try_into().unwrap()
}

/// One funnel per ordering mode and one over sessions, with breakdowns, page conditions of each
/// kind, props and an exclusion.
pub fn test_funnels() -> Vec<schema::funnels::FunnelDef> {
    serde_json::from_value(serde_json::json!([
        {"name": "home_to_purchase", "window_minutes": 20, "breakdown": "utm_source",
         "steps": [{"event": "page_view", "page": "/"}, {"event": "click"}, {"event": "purchase", "props": {"plan": "pro"}}],
         "exclusions": [{"event": "click", "page": "/b", "from": 2, "to": 3}]},
        {"name": "view_then_click", "order": "strict", "window_minutes": 10, "breakdown": "device",
         "steps": [{"event": "page_view"}, {"event": "click"}]},
        {"name": "per_session", "over": "sessions", "window_minutes": 90, "breakdown": "page",
         "steps": [{"event": "page_view"}, {"event": "page_view", "page": "/a"}, {"event": "purchase"}]},
        {"name": "any_order", "order": "unordered", "window_minutes": 30,
         "steps": [{"event": "click", "page_regex": "^/(a|b)$"}, {"event": "purchase", "props": {"qty": 1}},
                   {"event": "page_view", "page_prefix": "/products"}]}
    ]))
    .unwrap()
}

/// Feeds batches sent by the test, as one partition.
struct ScriptedSource {
    batches: Receiver<Vec<Vec<u8>>>,
    queue: VecDeque<Vec<u8>>,
    clock: PartitionClock,
    line: u64,
    closed: bool,
    /// Tells the other workers' [`NoInput`] that the input has ended.
    ended: Arc<AtomicBool>,
}

impl Source for ScriptedSource {
    fn poll(&mut self, ingest: &mut Ingest, _deadline: Instant) -> Result<Poll, SourceError> {
        loop {
            match self.batches.try_recv() {
                Ok(batch) => self.queue.extend(batch),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.closed = true;
                    self.ended.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
        if self.queue.is_empty() {
            return Ok(if self.closed { Poll::Done } else { Poll::Idle });
        }
        let now = now_ms();
        while let Some(raw) = self.queue.pop_front() {
            self.line += 1;
            let coords = Coords::File { file: "scripted", line: self.line };
            let ord = views::admitted::ord(0, self.line);
            ingest.offer(&mut self.clock, dataflow::decode::decode(&raw, now), &coords, &raw, now, ord);
        }
        Ok(Poll::Busy)
    }
    fn clock(&self, lateness_ms: i64, as_of: Option<i64>) -> InputClock {
        let part = PartClock { clock: &self.clock, idle: self.closed, finished: self.closed };
        worker_clock(std::iter::once(part), lateness_ms, as_of)
    }
}

/// A small deterministic generator of numbers below `n` (xorshift), for crafted streams.
pub fn xorshift(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed | 1;
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    }
}

/// The real engine (ingestion, dataflow, exporter, read model) fed batch by batch.
pub struct Harness {
    pub read_model: Arc<ReadModel>,
    pub alerting: Arc<alerting::Alerting>,
    pub dead_letters: MemorySink,
    batches: Option<Sender<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    engine: Option<JoinHandle<()>>,
    offered: i64,
}

impl Harness {
    pub fn start(workers: usize, lateness_ms: i64, views: ViewConfig) -> Harness {
        Harness::start_enriched(workers, lateness_ms, views, None)
    }

    /// As `start`, with `[enrich]` applied to every event.
    pub fn start_enriched(
        workers: usize,
        lateness_ms: i64,
        views: ViewConfig,
        enrich: Option<Arc<dataflow::Enricher>>,
    ) -> Harness {
        let config = EngineConfig {
            workers,
            epoch_ms: 5,
            lateness_seconds: (lateness_ms / 1000) as u64,
            ..EngineConfig::default()
        };
        let mut engine = Engine::new(config, views).expect("valid config");
        engine.enrich = enrich;
        let (tx, rx) = mpsc::channel();
        let rx = Mutex::new(Some(rx));
        let ended = Arc::new(AtomicBool::new(false));
        let sources: SourceFactory = Arc::new(move |index, _| {
            let ended = ended.clone();
            let batches = if index == 0 { rx.lock().unwrap().take() } else { None };
            Ok(match batches {
                Some(batches) => Box::new(ScriptedSource {
                    batches,
                    queue: VecDeque::new(),
                    clock: PartitionClock::default(),
                    line: 0,
                    closed: false,
                    ended,
                }) as Box<dyn Source>,
                None => Box::new(dataflow::source::NoPartitions(ended)) as Box<dyn Source>,
            })
        });
        let dead_letters = MemorySink::default();
        let sink = dead_letters.clone();
        let read_model = engine.read_model.clone();
        let alerting = alerting::Alerting::new(read_model.clone(), &engine.defs);
        let stop = engine.stop.clone();
        let handle = std::thread::spawn(move || {
            engine
                .run(sources, Arc::new(move |_| Box::new(sink.clone()) as Box<dyn DeadLetterSink>))
                .expect("engine runs");
        });
        Harness { read_model, alerting, dead_letters, batches: Some(tx), stop, engine: Some(handle), offered: 0 }
    }

    pub fn push(&mut self, batch: Vec<Vec<u8>>) {
        self.offered += batch.len() as i64;
        self.batches.as_ref().expect("open").send(batch).expect("engine alive");
    }

    /// Waits until every record pushed so far is in a published snapshot, and returns it.
    pub fn settle(&self) -> Dump {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let dump = self.read_model.dump();
            if dump.accepted + dump.rejects.total == self.offered {
                return dump;
            }
            assert!(
                Instant::now() < deadline,
                "engine did not absorb {} records: {} accepted, {} rejected",
                self.offered,
                dump.accepted,
                dump.rejects.total
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Closes the input, waits for the engine to drain, and returns the final dump.
    pub fn finish(mut self) -> Dump {
        self.batches.take();
        self.engine.take().unwrap().join().expect("engine thread");
        self.read_model.dump()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.batches.take();
        if let Some(h) = self.engine.take() {
            let _ = h.join();
        }
    }
}

/// Feeds `lines` in batches cut at `cuts` to a `workers`-worker engine with `small_windows()` and
/// checks its dump against the reference after every batch and at the end; returns the reference.
pub fn check_after_every_batch(
    lateness_ms: i64,
    workers: usize,
    lines: &[Vec<u8>],
    cuts: Vec<usize>,
) -> Result<Dump, proptest::test_runner::TestCaseError> {
    let spec = oracle::Spec { lateness_ms, views: small_windows(), now_ms: chrono::Utc::now().timestamp_millis() };
    let mut harness = Harness::start(workers, lateness_ms, small_windows());
    let mut start = 0;
    for end in cuts.into_iter().chain(std::iter::once(lines.len())) {
        if end < start {
            continue;
        }
        harness.push(lines[start..end].to_vec());
        start = end;
        let expected = oracle::dump(&spec, &[lines[..end].to_vec()]);
        proptest::prop_assert_eq!(oracle::comparable(harness.settle()), expected, "after {} records", end);
    }
    // Closing the input finishes it: the last minutes become final.
    let expected = oracle::dump_complete(&spec, &[lines.to_vec()]);
    proptest::prop_assert_eq!(oracle::comparable(harness.finish()), expected.clone());
    Ok(expected)
}
