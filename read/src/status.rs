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
    /// Why this partition makes the engine not ready (stalled, broker unreachable), in words
    /// for an operator; `None` when it reads normally.
    pub problem: Option<String>,
    /// Times its consumer was restarted after a stall.
    pub restarts: u64,
}

impl PartitionProgress {
    pub fn lag(&self) -> Option<i64> {
        self.high_watermark.map(|hw| (hw - self.position).max(0))
    }
}

/// Bucket bounds (ms) of the epoch latency histogram.
pub const LATENCY_BUCKETS_MS: [u64; 12] = [5, 10, 25, 50, 100, 150, 250, 500, 1000, 2500, 5000, 10000];

/// Per-user state of one input partition (sessions and user logs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserState {
    /// Users (or producer session ids) with a session that can still change.
    pub session_keys: u64,
    /// Users with events kept for funnels.
    pub logged_users: u64,
    /// Events dropped because a user exceeded `max_events_per_user`.
    pub capped_events: u64,
    /// Late-event re-cuts done from whole sessions (see `views::sessions`); 0 unless clocks run
    /// far ahead.
    pub approximate_recuts: u64,
    /// Users with retention state, summed over definitions.
    pub retention_users: u64,
}

#[derive(Default)]
pub struct Status {
    ready: AtomicBool,
    user_state: Mutex<BTreeMap<String, UserState>>,
    partitions: Mutex<BTreeMap<String, PartitionProgress>>,
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS_MS`], then +Inf; plus the sum in ms.
    latency: Mutex<([u64; 13], u64)>,
}

impl Status {
    pub fn set_user_state(&self, partition: &str, state: UserState) {
        self.user_state.lock().insert(partition.to_string(), state);
    }

    /// Summed over partitions.
    pub fn user_state(&self) -> UserState {
        self.user_state.lock().values().fold(UserState::default(), |a, b| UserState {
            session_keys: a.session_keys + b.session_keys,
            logged_users: a.logged_users + b.logged_users,
            capped_events: a.capped_events + b.capped_events,
            approximate_recuts: a.approximate_recuts + b.approximate_recuts,
            retention_users: a.retention_users + b.retention_users,
        })
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
    /// Caught up once, and no input partition has a problem now.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.partitions.lock().values().all(|p| p.problem.is_none())
    }
    /// Has caught up with its input once since it started.
    pub fn caught_up(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    /// The input partitions' problems, in words for an operator.
    pub fn problems(&self) -> Vec<String> {
        self.partitions.lock().values().filter_map(|p| p.problem.clone()).collect()
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
