//! Moves view updates out of timely into the read model, publishing only epochs that the frontier
//! of every worker has passed, so each publish is a consistent snapshot of all views.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use read::{ReadModel, Status};
use schema::{Epoch, Row};
use timely::dataflow::operators::capture::Event;
use timely::progress::frontier::MutableAntichain;

pub type Captured = Event<Epoch, Vec<(Row, Epoch, isize)>>;

pub struct Exporter {
    pub read_model: Arc<ReadModel>,
    pub status: Arc<Status>,
    /// Per worker: 1 + the epoch in which it caught up with its input (0: not yet).
    pub caught_up: Arc<Vec<AtomicU64>>,
    pub start: Instant,
    pub epoch_ms: u64,
    pub peers: usize,
}

/// Event time of admitted events per epoch, for freshness measurement.
pub type Freshness = (Epoch, Vec<i64>);

impl Exporter {
    /// Runs until every worker's capture has closed; returns event-to-read-model freshness (ms)
    /// when workers sent event times.
    pub fn run(self, captured: Receiver<Captured>, freshness: Receiver<Freshness>) -> Option<Histogram<u64>> {
        let mut frontier = MutableAntichain::new();
        let _ = frontier.update_iter(Some((0, self.peers as i64)));
        let mut pending: BTreeMap<Epoch, Vec<(Row, isize)>> = BTreeMap::new();
        let mut times: BTreeMap<Epoch, Vec<i64>> = BTreeMap::new();
        let mut histogram: Option<Histogram<u64>> = None;
        let mut open = true;
        while open {
            let mut next = match captured.recv_timeout(Duration::from_millis(20)) {
                Ok(event) => Some(event),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    None
                }
            };
            while let Some(event) = next {
                match event {
                    Event::Messages(_, data) => {
                        for (row, epoch, diff) in data {
                            pending.entry(epoch).or_default().push((row, diff));
                        }
                    }
                    Event::Progress(updates) => {
                        let _ = frontier.update_iter(updates);
                    }
                }
                next = captured.try_recv().ok();
            }
            for (epoch, ts) in freshness.try_iter() {
                times.entry(epoch).or_default().extend(ts);
            }
            // Everything strictly before the frontier is complete; an empty frontier means all.
            let complete_before = if open { frontier.frontier().first().copied() } else { None };
            self.publish(complete_before, &mut pending, &mut times, &mut histogram);
        }
        histogram
    }

    fn publish(
        &self,
        before: Option<Epoch>,
        pending: &mut BTreeMap<Epoch, Vec<(Row, isize)>>,
        times: &mut BTreeMap<Epoch, Vec<i64>>,
        histogram: &mut Option<Histogram<u64>>,
    ) {
        let ready = take_before(pending, before);
        // Ready once every worker has caught up and the epochs in which it did are published.
        let caught_up =
            self.caught_up.iter().map(|c| c.load(Ordering::Relaxed)).all(|c| c > 0 && before.is_none_or(|b| c <= b));
        if let Some(&last) = ready.keys().next_back() {
            let published = before.map_or(last, |b| b.saturating_sub(1).max(last));
            let now = Instant::now();
            for epoch in ready.keys() {
                // Epoch e collects input until start + e * epoch_ms; its oldest input waited this long.
                let opened = self.start + Duration::from_millis(epoch.saturating_sub(1) * self.epoch_ms);
                self.status.observe_epoch_latency(now.saturating_duration_since(opened).as_millis() as u64);
            }
            self.read_model.publish(published, ready.into_values().flatten());
            self.read_model.mark_complete_before(published + 1);
        } else if let Some(b) = before {
            self.read_model.mark_complete_before(b);
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        for ts in take_before(times, before).into_values().flatten() {
            let h = histogram.get_or_insert_with(|| Histogram::new(3).expect("valid histogram"));
            let _ = h.record((now_ms - ts).max(0) as u64);
        }
        self.mark_ready(caught_up);
    }

    fn mark_ready(&self, caught_up: bool) {
        if caught_up && !self.status.is_ready() {
            tracing::info!("caught up with the input; ready");
            self.status.set_ready(true);
        }
    }
}

/// Removes and returns the entries of epochs strictly before `before` (all of them for `None`).
fn take_before<V>(map: &mut BTreeMap<Epoch, V>, before: Option<Epoch>) -> BTreeMap<Epoch, V> {
    match before {
        Some(b) => {
            let later = map.split_off(&b);
            std::mem::replace(map, later)
        }
        None => std::mem::take(map),
    }
}
