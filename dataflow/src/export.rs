//! Moves the cells operator's output out of timely into the read model, publishing only epochs
//! that the frontier of every serving worker has passed, so each publish is a consistent snapshot
//! of all views. The cells arrive consolidated (one net change per cell and epoch): the read
//! model only applies them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use read::{ReadModel, Status};
use schema::cells::Cell;
use schema::Epoch;
use timely::dataflow::operators::capture::{Event, EventPusher};
use timely::progress::frontier::MutableAntichain;

pub type Captured = Event<Epoch, Vec<(Cell, i64)>>;

/// Where a worker's captured cells go: the exporter of the serving process, through a bounded
/// channel (a worker whose exporter is behind waits, so a burst cannot queue unbounded cells
/// between the dataflow and the read model), or nowhere on the other processes (whose workers
/// hold no cells and only report progress).
pub enum Capturing {
    Serving(SyncSender<Captured>),
    Elsewhere,
}

impl EventPusher<Epoch, Vec<(Cell, i64)>> for Capturing {
    fn push(&mut self, event: Captured) {
        if let Capturing::Serving(sender) = self {
            // An error means the exporter has gone (the engine is stopping).
            let _ = sender.send(event);
        }
    }
}

/// The read side's part of worker 0's snapshots. The cells operator holds no counted cells (their
/// totals live only in the read model), so worker 0's snapshot at a label carries the read
/// model's tables as they were once every epoch up to the label was published. Worker 0 asks for
/// a label when its inputs pass it (before any epoch after it can be published); the exporter
/// serialises the tables between two publishes and hands the bytes back.
#[derive(Default)]
pub struct TableSnapshots {
    inner: Mutex<Wanted>,
}

#[derive(Default)]
struct Wanted {
    labels: BTreeSet<u64>,
    taken: Vec<(u64, Vec<u8>)>,
}

impl TableSnapshots {
    /// Worker 0 wants the tables at `label` (after every epoch up to and including it).
    pub fn want(&self, label: u64) {
        self.inner.lock().labels.insert(label);
    }

    /// The parts taken since the last call.
    pub fn taken(&self) -> Vec<(u64, Vec<u8>)> {
        std::mem::take(&mut self.inner.lock().taken)
    }

    /// Whether `label` is still wanted (not taken yet).
    pub fn waiting_for(&self, label: u64) -> bool {
        self.inner.lock().labels.contains(&label)
    }

    /// Takes the tables for every wanted label before `epoch` (every one for `None`: all input
    /// is published). Called only when every epoch before `epoch` is published and none after.
    fn take_before(&self, epoch: Option<Epoch>, read_model: &ReadModel) {
        let due: Vec<u64> = {
            let inner = self.inner.lock();
            match epoch {
                Some(e) => inner.labels.range(..e).copied().collect(),
                None => inner.labels.iter().copied().collect(),
            }
        };
        if due.is_empty() {
            return;
        }
        // Serialised without the lock: worker 0 asks for labels meanwhile (later ones only).
        let bytes = read_model.snapshot();
        let mut inner = self.inner.lock();
        for label in due {
            inner.labels.remove(&label);
            inner.taken.push((label, bytes.clone()));
        }
    }
}

pub struct Exporter {
    pub read_model: Arc<ReadModel>,
    pub tables: Arc<TableSnapshots>,
    pub status: Arc<Status>,
    pub start: Instant,
    pub epoch_ms: u64,
    /// Workers whose output is captured here (those of the serving process).
    pub capturing: usize,
}

/// Event time of admitted events per epoch, for freshness measurement.
pub type Freshness = (Epoch, Vec<i64>);

impl Exporter {
    /// Runs until every worker's capture has closed; returns event-to-read-model freshness (ms)
    /// when workers sent event times.
    pub fn run(self, captured: Receiver<Captured>, freshness: Receiver<Freshness>) -> Option<Histogram<u64>> {
        let mut frontier = MutableAntichain::new();
        let _ = frontier.update_iter(Some((0, self.capturing as i64)));
        let mut pending: BTreeMap<Epoch, Vec<(Cell, i64)>> = BTreeMap::new();
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
                    Event::Messages(stamp, mut data) => {
                        let epoch = *stamp.least().expect("the cells operator sends under a capability");
                        pending.entry(epoch).or_default().append(&mut data);
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
        pending: &mut BTreeMap<Epoch, Vec<(Cell, i64)>>,
        times: &mut BTreeMap<Epoch, Vec<i64>>,
        histogram: &mut Option<Histogram<u64>>,
    ) {
        let ready = take_before(pending, before);
        if let Some(&last) = ready.keys().next_back() {
            let published = before.map_or(last, |b| b.saturating_sub(1).max(last));
            let now = Instant::now();
            for epoch in ready.keys() {
                // Epoch e collects input until start + e * epoch_ms; its oldest input waited this long.
                let opened = self.start + Duration::from_millis(epoch.saturating_sub(1) * self.epoch_ms);
                self.status.observe_epoch_latency(now.saturating_duration_since(opened).as_millis() as u64);
            }
            // One publish per epoch, in order: alerting judges every snapshot in which `as_of`
            // moved, and the cells operator's windows trail `as_of` by exactly one of them.
            let epochs = ready.len();
            for (i, (epoch, cells)) in ready.into_iter().enumerate() {
                self.tables.take_before(Some(epoch), &self.read_model);
                self.read_model.publish(if i + 1 == epochs { published } else { epoch }, cells);
            }
            self.read_model.mark_complete_before(published + 1);
        } else if let Some(b) = before {
            self.read_model.mark_complete_before(b);
        }
        self.tables.take_before(before, &self.read_model);
        let now_ms = chrono::Utc::now().timestamp_millis();
        for ts in take_before(times, before).into_values().flatten() {
            let h = histogram.get_or_insert_with(|| Histogram::new(3).expect("valid histogram"));
            let _ = h.record((now_ms - ts).max(0) as u64);
        }
        if self.read_model.ready() && !self.status.caught_up() {
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
