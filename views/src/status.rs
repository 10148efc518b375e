//! Engine health that the API reports: readiness, input progress and lag, epoch latency.
//! The runtime writes it; the API reads it. No timely or Kafka types cross this boundary.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// Progress of one input partition (a Kafka partition, or a replayed file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionProgress {
    /// Next offset (or line) to read.
    pub position: i64,
    /// Offset one past the last message in the partition, when known.
    pub high_watermark: Option<i64>,
}

impl PartitionProgress {
    pub fn lag(&self) -> Option<i64> {
        self.high_watermark.map(|hw| (hw - self.position).max(0))
    }
}

/// Bucket bounds (ms) of the epoch latency histogram.
pub const LATENCY_BUCKETS_MS: [u64; 12] = [5, 10, 25, 50, 100, 150, 250, 500, 1000, 2500, 5000, 10000];

#[derive(Default)]
pub struct Status {
    ready: AtomicBool,
    partitions: Mutex<BTreeMap<String, PartitionProgress>>,
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS_MS`], then +Inf; plus the sum in ms.
    latency: Mutex<([u64; 13], u64)>,
}

impl Status {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    pub fn set_partition(&self, name: String, progress: PartitionProgress) {
        self.partitions.lock().insert(name, progress);
    }
    pub fn partitions(&self) -> BTreeMap<String, PartitionProgress> {
        self.partitions.lock().clone()
    }
    pub fn observe_epoch_latency(&self, ms: u64) {
        let mut guard = self.latency.lock();
        let bucket = LATENCY_BUCKETS_MS.iter().position(|b| ms <= *b).unwrap_or(LATENCY_BUCKETS_MS.len());
        guard.0[bucket] += 1;
        guard.1 += ms;
    }
    /// Per-bucket (not cumulative) counts and the sum, in ms.
    pub fn epoch_latency(&self) -> ([u64; 13], u64) {
        *self.latency.lock()
    }
}
