//! Inputs of the engine. Every source feeds one worker's [`Ingest`] and owns the event-time clocks
//! of its partitions; they all reach the same dataflow.

pub mod file;
pub mod kafka;
pub mod synthetic;

use std::collections::BTreeMap;
use std::time::Instant;

use read::Status;
use serde::{Deserialize, Serialize};

use crate::clock::PartitionClock;
use crate::ingest::{Ingest, WorkerClock};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// Read something; call again soon.
    Busy,
    /// Nothing available right now.
    Idle,
    /// Exhausted (files, bounded generators).
    Done,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{0}")]
    Config(String),
}

/// The persisted state of a source: per partition, its clock and the next position to read.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    pub partitions: BTreeMap<String, (PartitionClock, i64)>,
}

pub trait Source {
    /// Reads what is available until `deadline`, feeding `ingest`.
    fn poll(&mut self, ingest: &mut Ingest, deadline: Instant) -> Result<Poll, SourceError>;
    /// Visits every partition this worker reads, by name, with its clock and per-user state (for
    /// the drain before each flush; a partition shared by workers is visited under its lock).
    fn each_partition(&mut self, visit: &mut dyn FnMut(&str, &mut PartitionClock));
    /// The clock this worker reports; `None` until one of its partitions has data.
    fn clock(&self, lateness_ms: i64) -> Option<WorkerClock>;
    /// Has read everything that was there when it started (sources without a backlog: always).
    fn caught_up(&self) -> bool {
        true
    }
    /// Positions to persist with a snapshot (sources that cannot resume: none).
    fn checkpoint(&self) -> Checkpoint {
        Checkpoint::default()
    }
    /// Whether a snapshot with this source's checkpoint can resume it (Kafka: yes; a file or a
    /// generator always starts from the beginning, so it neither reads nor writes snapshots).
    fn resumable(&self) -> bool {
        false
    }
    /// Resumes from a checkpoint (before the first poll).
    fn restore(&mut self, checkpoint: Checkpoint) -> Result<(), SourceError> {
        if checkpoint.partitions.is_empty() {
            Ok(())
        } else {
            Err(SourceError::Config("this input starts from the beginning; it cannot resume from a snapshot".into()))
        }
    }
    /// Everything up to `checkpoint` is in a durable snapshot and through the dataflow.
    fn commit(&mut self, _checkpoint: &Checkpoint) {}
    fn report(&self, _status: &Status) {}
}

/// Head and watermark of a worker with a partition that has not delivered its first record yet.
pub const PENDING: i64 = read::tables::PENDING;

/// Combines partition clocks into a worker clock: idle partitions do not hold back the watermark;
/// a worker whose partitions are all idle reports its most advanced one, flagged idle.
pub fn worker_clock<'a>(
    parts: impl Iterator<Item = (&'a PartitionClock, bool)>,
    lateness_ms: i64,
) -> Option<WorkerClock> {
    let mut head: Option<i64> = None;
    let mut busy_wm: Option<i64> = None;
    let mut idle_wm: Option<i64> = None;
    let mut pending = false;
    for (clock, idle) in parts {
        let (Some(h), Some(wm)) = (clock.head(), clock.watermark(lateness_ms)) else {
            // A busy partition that has not delivered yet: nothing is complete until it has.
            pending |= !idle;
            continue;
        };
        head = Some(head.map_or(h, |x| x.max(h)));
        if idle {
            idle_wm = Some(idle_wm.map_or(wm, |x| x.max(wm)));
        } else {
            busy_wm = Some(busy_wm.map_or(wm, |x| x.min(wm)));
        }
    }
    if pending {
        return Some(WorkerClock { head: head.unwrap_or(PENDING), watermark: PENDING, idle: false });
    }
    let head = head?;
    Some(match busy_wm {
        Some(watermark) => WorkerClock { head, watermark, idle: false },
        None => WorkerClock { head, watermark: idle_wm.unwrap_or(head - lateness_ms), idle: true },
    })
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A worker without partitions (when one worker reads the only input): done once `done` is set.
pub struct NoPartitions(pub std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Source for NoPartitions {
    fn poll(&mut self, _: &mut Ingest, _: Instant) -> Result<Poll, SourceError> {
        Ok(if self.0.load(std::sync::atomic::Ordering::Relaxed) { Poll::Done } else { Poll::Idle })
    }
    fn each_partition(&mut self, _: &mut dyn FnMut(&str, &mut PartitionClock)) {}
    fn clock(&self, _: i64) -> Option<WorkerClock> {
        None
    }
}
