//! Inputs of the engine. Every source feeds one worker's [`Ingest`] and owns the event-time clocks
//! of its partitions; they all reach the same dataflow.

pub mod file;
pub mod kafka;
pub mod kafka_health;
pub mod synthetic;

use std::collections::BTreeMap;
use std::time::Instant;

use read::Status;
use serde::{Deserialize, Serialize};

use crate::clock::PartitionClock;
use crate::ingest::Ingest;
use crate::timekeeper::Watermark;

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
    /// Reads what is available until `deadline` (or until a batch of admitted events is ready,
    /// see [`Ingest::full`]), feeding `ingest`.
    fn poll(&mut self, ingest: &mut Ingest, deadline: Instant) -> Result<Poll, SourceError>;
    /// The clock of this worker's partitions; `as_of`: the admission floor in use.
    fn clock(&self, lateness_ms: i64, as_of: Option<i64>) -> InputClock;
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
    /// The partitions this worker reads, by name (recorded in snapshots: a restart with another
    /// assignment must not resume them).
    fn assignment(&self) -> Vec<String> {
        Vec::new()
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

/// The clock of one worker's input partitions (see [`crate::timekeeper::WorkerClock`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputClock {
    pub head: Option<i64>,
    pub watermark: Watermark,
    pub floor: i64,
}

/// One partition as the worker clock sees it.
pub struct PartClock<'a> {
    pub clock: &'a PartitionClock,
    /// Quiet for a while (it does not hold back `as_of`).
    pub idle: bool,
    /// Read to its end: it admits nothing more.
    pub finished: bool,
}

/// Combines partition clocks into a worker clock: idle partitions do not hold back the watermark;
/// a worker whose partitions are all idle reports its most advanced one, and a finished
/// partition's watermark is its newest event. The floor is the lowest
/// time a partition can still admit: its watermark, but no less than the admission floor `as_of`
/// (a partition without data yet can admit anything from `as_of` on).
pub fn worker_clock<'a>(
    parts: impl Iterator<Item = PartClock<'a>>,
    lateness_ms: i64,
    as_of: Option<i64>,
) -> InputClock {
    let admitted_from = as_of.unwrap_or(i64::MIN);
    let (mut head, mut busy, mut idle, mut pending, mut floor) =
        (None::<i64>, None::<i64>, None::<i64>, false, i64::MAX);
    for p in parts {
        let (Some(h), Some(wm)) = (p.clock.head(), p.clock.watermark(lateness_ms)) else {
            // A busy partition that has not delivered yet: nothing is complete until it has.
            pending |= !p.idle && !p.finished;
            if !p.finished {
                floor = floor.min(admitted_from);
            }
            continue;
        };
        head = Some(head.map_or(h, |x| x.max(h)));
        // A partition read to its end (a replayed file) sends nothing more, late or not: no
        // need to wait out the lateness, so its watermark is its newest event. Once every
        // partition is finished, `as_of` reaches the input's newest event and the last complete
        // minutes become final (their alerts judged, their sessions closed).
        let wm = if p.finished { h } else { wm };
        if p.idle || p.finished {
            idle = Some(idle.map_or(wm, |x| x.max(wm)));
        } else {
            busy = Some(busy.map_or(wm, |x| x.min(wm)));
        }
        if !p.finished {
            floor = floor.min(wm.max(admitted_from));
        }
    }
    let watermark = match (pending, busy, idle) {
        (true, _, _) => Watermark::Pending,
        (false, Some(wm), _) => Watermark::Busy(wm),
        (false, None, Some(wm)) => Watermark::Idle(wm),
        (false, None, None) => Watermark::Nothing,
    };
    InputClock { head, watermark, floor }
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
    fn clock(&self, lateness_ms: i64, as_of: Option<i64>) -> InputClock {
        worker_clock(std::iter::empty(), lateness_ms, as_of)
    }
}
