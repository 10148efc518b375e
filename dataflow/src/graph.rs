//! The dataflow every worker builds, and the handles its runtime loop feeds.
//!
//! ```text
//!  admitted events ──exchange by user──► Users (sessions, user logs, funnels, paths, retention,
//!                                              active users, per-key counts) ──┐
//!  traffic counts, names, accepted, rejects ───────────────────────────────────┼─exchange by cell─► Cells ──► capture (serving process)
//!  worker clocks ──broadcast──► Timekeeper ──► EngineTime ─┬─ Clock cell (worker 0) ─┘        ▲
//!                                                          └─► control ──► Users, Cells ──────┘
//!  definitions (worker 0), page texts ──broadcast──► control
//! ```

use std::cell::Cell as Shared;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use schema::cells::Cell;
use schema::event::Sym;
use schema::{Epoch, ViewConfig};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::capture::Capture;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::{Broadcast, Map};
use timely::dataflow::operators::{Concat, Input, Inspect, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle};
use views::admitted::Admitted;
use views::control::{Control, Defs, EngineTime};
use views::snapshot::Snapshots;
use views::store::{CellStore, Hashed};
use views::users::{UserStateSizes, Users};

use crate::ingest::Ingest;
use crate::snapshot::{self, Label, Shape, SnapshotError, WorkerSnapshot};
use crate::timekeeper::{clock_cells, timekeeper, Timekeeper, WorkerClock};

/// The stateful operators' state, fresh or from a snapshot.
pub struct Restored {
    pub users: Users,
    pub store: CellStore,
    pub keeper: Timekeeper,
    /// From a snapshot (the read side holds the snapshot's clock cell).
    pub resumed: bool,
}

struct Inputs {
    admitted: InputHandleVec<Epoch, Admitted>,
    changes: InputHandleVec<Epoch, (Hashed, i64)>,
    clocks: InputHandleVec<Epoch, WorkerClock>,
    /// JSON: the definitions' serde attributes are for JSON (skipped empty fields, free-form
    /// property values), which the binary encoding between processes cannot carry.
    defs: InputHandleVec<Epoch, Vec<u8>>,
    pages: InputHandleVec<Epoch, (Sym, String)>,
    durable: InputHandleVec<Epoch, (u32, u64)>,
}

pub struct Graph {
    /// `None` once closed.
    inputs: Option<Inputs>,
    /// The cells that reach the read side: the engine's progress.
    pub probe: ProbeHandle<Epoch>,
    time: Rc<Shared<EngineTime>>,
    sizes: Rc<Shared<UserStateSizes>>,
    durable_everywhere: Rc<Shared<Option<u64>>>,
    /// Cell changes that arrived after their window had passed (counted, not applied).
    pub expired: Rc<Shared<u64>>,
    buffer: Vec<(Cell, i64)>,
    sending: Vec<(Hashed, i64)>,
}

impl Graph {
    /// Builds this worker's dataflow. Cells are held by the first `serving` workers (those of
    /// the serving process); `capture` receives this worker's share.
    pub fn build(
        worker: &mut timely::worker::Worker,
        views: &ViewConfig,
        restored: Restored,
        snapshots: Snapshots,
        serving: usize,
        capture: crate::export::Capturing,
    ) -> Graph {
        let (index, peers) = (worker.index(), worker.peers());
        let serving = serving as u64;
        let time = Rc::new(Shared::new(restored.keeper.time()));
        let sizes = Rc::new(Shared::new(UserStateSizes::default()));
        let durable_everywhere = Rc::new(Shared::new(None));
        let expired = Rc::new(Shared::new(0));
        let restored_time = restored.resumed.then(|| restored.keeper.time());
        let Restored { users, store, keeper, .. } = restored;
        let (admitted, changes, clocks, defs, pages, durable, probe) = worker.dataflow::<Epoch, _, _>(|scope| {
            let (admitted_in, admitted) = scope.new_input::<Vec<Admitted>>();
            let (changes_in, changes) = scope.new_input::<Vec<(Hashed, i64)>>();
            let (clocks_in, clocks) = scope.new_input::<Vec<WorkerClock>>();
            let (defs_in, defs) = scope.new_input::<Vec<Vec<u8>>>();
            let (pages_in, pages) = scope.new_input::<Vec<(Sym, String)>>();
            let (durable_in, durable) = scope.new_input::<Vec<(u32, u64)>>();
            let latest = time.clone();
            let engine_time = timekeeper(clocks, keeper, peers, snapshots.clone()).inspect(move |t| latest.set(*t));
            // The read side learns the clock from worker 0's copy, as a cell.
            let mut before = restored_time;
            let clock = engine_time.clone().flat_map(move |t| {
                let cells: Vec<(Hashed, i64)> = if index == 0 {
                    clock_cells(before, t).map(|(c, n)| (Hashed::new(c), n)).collect()
                } else {
                    Vec::new()
                };
                before = Some(t);
                cells
            });
            let control = engine_time
                .map(Control::Time)
                .concat(defs.broadcast().map(|json| {
                    let defs: Defs = serde_json::from_slice(&json).expect("definitions sent as JSON by worker 0");
                    Control::Defs(Arc::new(defs))
                }))
                .concat(pages.broadcast().map(|(sym, text)| Control::Page(sym, text)));
            let per_user =
                views::users::operator::users(admitted, control.clone(), users, snapshots.clone(), sizes.clone());
            let all = changes.concat(per_user).concat(clock);
            let cells = views::store::cells(all, control, store, views.clone(), serving, snapshots, expired.clone());
            let (probe, cells) = cells.probe();
            cells.capture_into(capture);
            // Workers may skip different labels: the newest one every worker has made durable.
            let everywhere = durable_everywhere.clone();
            let mut written: BTreeMap<u32, std::collections::BTreeSet<u64>> = BTreeMap::new();
            durable.broadcast().sink(Pipeline, "Durable", move |(input, _)| {
                input.for_each(|_, data| {
                    for (worker, label) in data.drain(..) {
                        written.entry(worker).or_default().insert(label);
                    }
                });
                if written.len() == peers {
                    let mut sets = written.values();
                    let first = sets.next().expect("peers > 0");
                    let rest: Vec<_> = sets.collect();
                    if let Some(&label) = first.iter().rev().find(|l| rest.iter().all(|s| s.contains(l))) {
                        everywhere.set(Some(label));
                        written.values_mut().for_each(|s| *s = s.split_off(&label));
                    }
                }
            });
            (admitted_in, changes_in, clocks_in, defs_in, pages_in, durable_in, probe)
        });
        Graph {
            inputs: Some(Inputs { admitted, changes, clocks, defs, pages, durable }),
            probe,
            time,
            sizes,
            durable_everywhere,
            expired,
            buffer: Vec::new(),
            sending: Vec::new(),
        }
    }

    /// The engine's clock as this worker last learned it.
    pub fn time(&self) -> EngineTime {
        self.time.get()
    }

    pub fn sizes(&self) -> UserStateSizes {
        self.sizes.get()
    }

    /// The newest snapshot label durable on every worker.
    pub fn durable_everywhere(&self) -> Option<u64> {
        self.durable_everywhere.get()
    }

    fn inputs(&mut self) -> &mut Inputs {
        self.inputs.as_mut().expect("inputs are open until close")
    }

    pub fn send_admitted(&mut self, events: &mut Vec<Admitted>) {
        if !events.is_empty() {
            self.inputs().admitted.send_batch(events);
            events.clear();
        }
    }

    pub fn send_changes(&mut self, ingest: &mut Ingest) {
        let (mut buffer, mut sending) = (std::mem::take(&mut self.buffer), std::mem::take(&mut self.sending));
        ingest.flush(&mut buffer);
        sending.extend(views::store::hashed(&mut buffer));
        if !sending.is_empty() {
            self.inputs().changes.send_batch(&mut sending);
            sending.clear();
        }
        (self.buffer, self.sending) = (buffer, sending);
    }

    pub fn send_pages(&mut self, pages: &mut Vec<(Sym, String)>) {
        let inputs = self.inputs();
        for page in pages.drain(..) {
            inputs.pages.send(page);
        }
    }

    pub fn send_clock(&mut self, clock: WorkerClock) {
        self.inputs().clocks.send(clock);
    }

    pub fn send_defs(&mut self, defs: Defs) {
        self.inputs().defs.send(serde_json::to_vec(&defs).expect("definitions serialise"));
    }

    pub fn send_durable(&mut self, worker: u32, label: u64) {
        self.inputs().durable.send((worker, label));
    }

    /// Closes the current epoch on every input (whether or not it received anything).
    pub fn advance_to(&mut self, epoch: Epoch) {
        let i = self.inputs();
        i.admitted.advance_to(epoch);
        i.changes.advance_to(epoch);
        i.clocks.advance_to(epoch);
        i.defs.advance_to(epoch);
        i.pages.advance_to(epoch);
        i.durable.advance_to(epoch);
    }

    /// Closes every input: the dataflow drains and completes.
    pub fn close(&mut self) {
        self.inputs = None;
    }
}

/// A worker and the snapshot labels it holds.
type Held = (u32, Vec<Label>);

/// Every worker lists the snapshot labels it holds; they agree, through a small dataflow of its
/// own, on the newest label all of them hold, and each loads its snapshot at that label.
pub fn agree_on_snapshot(
    worker: &mut timely::worker::Worker,
    dir: &Path,
    shape: &Shape,
) -> Result<Option<WorkerSnapshot>, SnapshotError> {
    let (index, peers) = (worker.index(), worker.peers());
    let mine = snapshot::labels(dir, index, shape)?;
    let seen: Rc<std::cell::RefCell<Vec<Held>>> = Rc::default();
    let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
        let (input, lists) = scope.new_input::<Vec<Held>>();
        let seen = seen.clone();
        let (probe, lists) = lists.broadcast().inspect(move |l| seen.borrow_mut().push(l.clone())).probe();
        lists.sink(Pipeline, "Agreed", |(input, _)| input.for_each(|_, _| {}));
        (input, probe)
    });
    input.send((index as u32, mine.clone()));
    input.advance_to(1);
    drop(input);
    while !probe.done() {
        worker.step();
    }
    let lists = seen.borrow();
    let common = mine.iter().rev().find(|label| lists.iter().all(|(_, l)| l.contains(label))).copied();
    let holding = lists.iter().filter(|(_, l)| !l.is_empty()).count();
    match common {
        Some(label) => Ok(Some(snapshot::load(dir, index, peers, label)?)),
        None if holding > 0 => {
            let without: Vec<String> = lists.iter().filter(|(_, l)| l.is_empty()).map(|(w, _)| w.to_string()).collect();
            Err(SnapshotError::Corrupt {
                path: dir.to_path_buf(),
                error: format!(
                    "no snapshot label is held by every worker (workers without one: {}); restore the \
                     missing files or run with --fresh to rebuild the views from Kafka",
                    if without.is_empty() { "none, but their labels differ".to_string() } else { without.join(", ") }
                ),
            })
        }
        None => Ok(None),
    }
}
