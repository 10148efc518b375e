//! The engine's clock, computed inside the dataflow: every worker reports its input clock at the
//! epochs it changes, the reports are broadcast, and every worker derives the same [`EngineTime`]
//! for each epoch (`as_of`, the newest event time, the floor below which no event can arrive).
//! Admission reads it from there (events older than `as_of` are too late), the per-user views
//! prune by its floor, and the cells operator moves the windows with its `as_of`.

use std::collections::BTreeMap;

use schema::cells::Cell;
use schema::Epoch;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use views::control::EngineTime;
use views::snapshot::Snapshots;

/// What holds back `as_of` on one worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Watermark {
    /// A busy partition has not delivered its first record: nothing is complete until it has.
    Pending,
    /// The lowest watermark of its busy partitions.
    Busy(i64),
    /// Every partition is idle: its most advanced watermark (idle partitions do not hold back).
    Idle(i64),
    /// No partition has data yet, and none is waiting for its first record.
    Nothing,
}

/// One worker's input clock, reported into the dataflow at the epochs it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerClock {
    pub worker: u32,
    /// The newest event time admitted by its partitions.
    pub head: Option<i64>,
    pub watermark: Watermark,
    /// No event this worker admits from now on is older than this (`i64::MIN`: no bound yet,
    /// `i64::MAX`: it admits nothing any more).
    pub floor: i64,
    /// Its sources have read what they held when the engine started.
    pub caught_up: bool,
}

/// Every worker's last report and the clock derived from them (the same on every worker).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Timekeeper {
    clocks: BTreeMap<u32, WorkerClock>,
    time: EngineTime,
}

impl Timekeeper {
    /// The clock once every one of `peers` workers has reported: `as_of` is the slowest busy
    /// worker's watermark (the most advanced one when all are idle), never going back.
    pub fn update(&mut self, reports: impl IntoIterator<Item = WorkerClock>, peers: usize) -> EngineTime {
        for c in reports {
            self.clocks.insert(c.worker, c);
        }
        if self.clocks.len() < peers {
            return self.time;
        }
        let clocks = self.clocks.values();
        let pending = clocks.clone().any(|c| c.watermark == Watermark::Pending);
        let busy =
            clocks.clone().filter_map(|c| if let Watermark::Busy(w) = c.watermark { Some(w) } else { None }).min();
        let idle =
            clocks.clone().filter_map(|c| if let Watermark::Idle(w) = c.watermark { Some(w) } else { None }).max();
        let computed = if pending { None } else { busy.or(idle) };
        let as_of = match (computed, self.time.as_of) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let head = clocks.clone().filter_map(|c| c.head).max().or(self.time.head);
        let bound = clocks.clone().map(|c| c.floor).min().unwrap_or(i64::MIN);
        let floor = bound.min(as_of.unwrap_or(i64::MIN)).max(self.time.floor);
        let ready = clocks.clone().all(|c| c.caught_up);
        self.time = EngineTime { head, as_of, floor, ready };
        self.time
    }

    pub fn time(&self) -> EngineTime {
        self.time
    }
}

/// The cell that carries the clock to the read side: its change from `before` to `now`.
pub fn clock_cells(before: Option<EngineTime>, now: EngineTime) -> impl Iterator<Item = (Cell, i64)> {
    let cell = |t: EngineTime| Cell::Clock { head: t.head, as_of: t.as_of, ready: t.ready };
    let changed = before.is_none_or(|b| cell(b) != cell(now));
    let retract = before.filter(|_| changed).map(|b| (cell(b), -1));
    retract.into_iter().chain(changed.then(|| (cell(now), 1)))
}

/// The clock of every epoch at which some worker's report changed, on every worker.
pub fn timekeeper<'s>(
    reports: StreamVec<'s, Epoch, WorkerClock>,
    mut keeper: Timekeeper,
    peers: usize,
    snapshots: Snapshots,
) -> StreamVec<'s, Epoch, EngineTime> {
    reports.broadcast().unary_frontier(Pipeline, "Timekeeper", move |_, _| {
        let mut pending: BTreeMap<Epoch, (Capability<Epoch>, Vec<WorkerClock>)> = BTreeMap::new();
        let mut taken = 0u64;
        move |(input, frontier), output| {
            let port = output.output_index();
            input.for_each_stamp(|cap, data| {
                let Some(cap) = cap.retain_least(port) else { return };
                let slot = pending.entry(*cap.time()).or_insert_with(|| (cap.clone(), Vec::new()));
                data.for_each(|batch| slot.1.append(batch));
            });
            while let Some(entry) = pending.first_entry().filter(|e| !frontier.less_equal(e.key())) {
                let (t, (cap, reports)) = entry.remove_entry();
                snapshots.take("clock", &mut taken, Some(t), || bincode::serialize(&keeper).expect("serialisable"));
                // Reports of one worker in one epoch: the last one counts (they arrive in order).
                let before = keeper.time();
                let now = keeper.update(reports, peers);
                if now != before {
                    output.session(&cap).give(now);
                }
            }
            let upto = frontier.frontier().first().copied();
            snapshots.take("clock", &mut taken, upto, || bincode::serialize(&keeper).expect("serialisable"));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(worker: u32, head: i64, watermark: Watermark) -> WorkerClock {
        WorkerClock { worker, head: Some(head), watermark, floor: i64::MIN, caught_up: true }
    }

    #[test]
    fn as_of_waits_for_every_worker_and_pending_partitions_and_never_goes_back() {
        let mut k = Timekeeper::default();
        assert_eq!(k.update([clock(0, 1_000, Watermark::Busy(700))], 2).as_of, None, "worker 1 has not reported");
        let t = k.update([clock(1, 2_000, Watermark::Pending)], 2);
        assert_eq!((t.head, t.as_of), (Some(2_000), None), "worker 1 waits for a first record");
        let t = k.update([clock(1, 900, Watermark::Busy(600))], 2);
        assert_eq!(t.as_of, Some(600), "the slowest busy worker");
        assert_eq!(k.update([clock(1, 900, Watermark::Idle(600))], 2).as_of, Some(700), "idle does not hold back");
        assert_eq!(k.update([clock(1, 900, Watermark::Busy(500))], 2).as_of, Some(700), "as_of never goes back");
        let both_idle = k.update([clock(0, 1_000, Watermark::Idle(700)), clock(1, 3_000, Watermark::Idle(2_700))], 2);
        assert_eq!(both_idle.as_of, Some(2_700), "all idle: the most advanced");
    }

    #[test]
    fn the_floor_is_the_lowest_bound_and_never_above_as_of() {
        let mut k = Timekeeper::default();
        let with_floor = |worker, floor| WorkerClock { floor, ..clock(worker, 10_000, Watermark::Busy(9_000)) };
        let t = k.update([with_floor(0, 8_000), with_floor(1, i64::MAX)], 2);
        assert_eq!(t.floor, 8_000, "a worker that admits nothing more does not hold it back");
        let t = k.update([with_floor(0, i64::MAX)], 2);
        assert_eq!(t.floor, 9_000, "capped at as_of");
    }
}
