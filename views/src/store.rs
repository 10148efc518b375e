//! The cells of every view, consolidated across workers and let go with their windows: the last
//! operator before the read side. Cell changes from every worker are exchanged by cell (to the
//! workers of the serving process), summed per epoch, and only net changes leave: the read model
//! applies one change per cell and epoch, whatever the number of workers that contributed.
//!
//! The operator holds only the cells whose output depends on what it held before: presence
//! cells (a name or a per-key text, which several workers send, is sent on once while any
//! contribution is there) and retention cohorts (retracted here when their definition
//! changes). Counted cells pass through: their totals live once, on the read side, whose tables
//! are snapshotted with the workers' state (`dataflow::export::TableSnapshots`). A second copy
//! of every total here cost 5–11% of a replay's time (BENCHMARKS.md, "Session 9").
//!
//! Windows move with `as_of` (computed in the dataflow): a cell whose window `as_of` has passed
//! is dropped here and, through one `Cell::Floors` marker, on the read side, so the state and
//! the read model are bounded by the windows, not by history.

use std::cell::Cell as Shared;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use schema::cells::{Cell, Floors, Keep, Window};
use schema::{Epoch, ViewConfig};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::control::{Control, Defs, EngineTime};
use crate::snapshot::Snapshots;

/// A cell change on its way to the cells operator: the cell with its hash, computed once where
/// the change is made (the exchange routes by it, the operator's maps look it up by it). The hash
/// is stable across processes (no random seed).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hashed {
    pub hash: u64,
    pub cell: Cell,
}

impl Hashed {
    pub fn new(cell: Cell) -> Hashed {
        let mut h = rustc_hash::FxHasher::default();
        cell.hash(&mut h);
        Hashed { hash: h.finish(), cell }
    }
}

impl PartialEq for Hashed {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.cell == other.cell
    }
}

impl Eq for Hashed {}

impl Hash for Hashed {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Maps keyed by [`Hashed`]: its hash is the hash.
type CellMap = std::collections::HashMap<Hashed, i64, schema::ids::BuildIdHasher>;

/// Cell changes as producers send them.
pub type Changes = Vec<(Hashed, i64)>;

/// Hashes every change of `out` into `changes`.
pub fn hashed(out: &mut Vec<(Cell, i64)>) -> impl Iterator<Item = (Hashed, i64)> + '_ {
    out.drain(..).map(|(cell, n)| (Hashed::new(cell), n))
}

/// What one worker holds: its share of the cells that must be held (see [`CellStore::holds`]), by
/// window.
#[derive(Default, Serialize, Deserialize)]
pub struct CellStore {
    groups: BTreeMap<Window, CellMap>,
    floors: Floors,
    /// Fingerprints of the retention definitions the cohort cells were computed under.
    cohorts: Vec<u64>,
    key_window: u32,
    /// The `as_of` of the previous epoch with a clock: windows follow it one epoch behind, so the
    /// snapshot that first shows a minute as final still holds its cells (alerting judges it
    /// there) even when `as_of` moves by more than a window in one epoch (a replay).
    behind: Option<i64>,
    #[serde(skip)]
    retention: Vec<schema::retention::RetentionDef>,
}

impl CellStore {
    /// Takes up the definitions from this epoch on: the cells of a retention definition that
    /// changed (or went) are retracted, its users' cells come again under the new one.
    pub fn set_defs(&mut self, defs: &Defs, out: &mut Vec<(Cell, i64)>) {
        let now: Vec<u64> = defs.retention.iter().map(|r| r.fingerprint()).collect();
        for index in 0..self.cohorts.len().max(now.len()) {
            let (before, after) = (self.cohorts.get(index), now.get(index));
            if before.is_some() && before != after {
                let retention = index as u32;
                let lo = Window::Cohorts { retention, cohort: 0 };
                let hi = Window::Cohorts { retention, cohort: u32::MAX };
                self.retract(lo..=hi, out);
            }
        }
        self.cohorts = now;
        self.retention = defs.retention.clone();
        self.key_window = defs.key_window();
    }

    /// Whether a cell is held here: presence cells (their output depends on whether some
    /// contribution was there before) and retention cohorts (retracted here when their
    /// definition changes). Every other cell is summed and passes through.
    fn holds(cell: &Cell, window: Window) -> bool {
        cell.keep() == Keep::Presence || matches!(window, Window::Cohorts { .. })
    }

    /// Applies one epoch's consolidated change of a cell; `false` when its window has passed
    /// (a late change to a session older than the counts window), which changes nothing.
    pub fn apply(&mut self, cell: Hashed, n: i64, out: &mut Vec<(Cell, i64)>) -> bool {
        if n == 0 {
            return true;
        }
        let window = cell.cell.window();
        if !self.floors.keeps(window) {
            return false;
        }
        if !Self::holds(&cell.cell, window) {
            out.push((cell.cell, n));
            return true;
        }
        let group = self.groups.entry(window).or_default();
        let (before, after) = match group.get_mut(&cell) {
            Some(count) => {
                *count += n;
                (*count - n, *count)
            }
            None => {
                group.insert(cell.clone(), n);
                (0, n)
            }
        };
        if after == 0 {
            group.remove(&cell);
            if group.is_empty() {
                self.groups.remove(&window);
            }
        }
        let keep = cell.cell.keep();
        match keep {
            Keep::Sum => out.push((cell.cell, n)),
            Keep::Presence => match (before > 0, after > 0) {
                (false, true) => out.push((cell.cell, 1)),
                (true, false) => out.push((cell.cell, -1)),
                _ => {}
            },
        }
        true
    }

    /// Takes up a new `as_of`: the windows move to the previous one. The cells they let go are
    /// dropped here and, through one `Cell::Floors` marker, on the read side: no retraction per
    /// cell.
    pub fn advance(&mut self, as_of: i64, config: &ViewConfig, out: &mut Vec<(Cell, i64)>) {
        let Some(behind) = self.behind.replace(as_of) else { return };
        let floors = Floors::at(behind, config, self.key_window, self.retention.iter());
        if floors == self.floors {
            return;
        }
        self.groups.retain(|window, _| floors.keeps(*window));
        out.push((Cell::Floors(floors.clone()), 1));
        self.floors = floors;
    }

    /// Retracts every cell of the windows in `range`.
    fn retract(&mut self, range: impl std::ops::RangeBounds<Window>, out: &mut Vec<(Cell, i64)>) {
        let gone: Vec<Window> = self.groups.range(range).map(|(w, _)| *w).collect();
        for window in gone {
            for (cell, n) in self.groups.remove(&window).expect("listed") {
                let n = match cell.cell.keep() {
                    Keep::Sum => -n,
                    Keep::Presence => -1,
                };
                out.push((cell.cell, n));
            }
        }
    }

    pub fn cells(&self) -> usize {
        self.groups.values().map(|g| g.len()).sum()
    }
}

/// What the operator received for one epoch.
struct Epochs {
    cap: Capability<Epoch>,
    changes: CellMap,
    controls: Vec<Control>,
}

/// The slot of `cap`'s epoch, its map taken from `spare` (maps of processed epochs keep their
/// capacity: growing a fresh map to an epoch's hundred thousand cells every epoch cost more than
/// the sums it holds).
fn slot<'a>(
    pending: &'a mut BTreeMap<Epoch, Epochs>,
    spare: &mut Vec<CellMap>,
    cap: &Capability<Epoch>,
) -> &'a mut Epochs {
    pending.entry(*cap.time()).or_insert_with(|| Epochs {
        cap: cap.clone(),
        changes: spare.pop().unwrap_or_default(),
        controls: Vec::new(),
    })
}

/// Builds the operator on every worker; cells go to the first `serving` workers (those of the
/// serving process), which hold them. `store` is fresh or restored (the read side is restored
/// from its own part of the snapshot). `expired` counts changes that arrived after their window
/// had passed.
pub fn cells<'s>(
    changes: StreamVec<'s, Epoch, (Hashed, i64)>,
    control: StreamVec<'s, Epoch, Control>,
    store: CellStore,
    config: ViewConfig,
    serving: u64,
    snapshots: Snapshots,
    expired: Rc<Shared<u64>>,
) -> StreamVec<'s, Epoch, (Cell, i64)> {
    let to_serving = Exchange::new(move |(cell, _): &(Hashed, i64)| cell.hash % serving);
    changes.binary_frontier(control, to_serving, Pipeline, "Cells", move |_, _| {
        let mut held = Some(store);
        let mut pending: BTreeMap<Epoch, Epochs> = BTreeMap::new();
        let mut spare: Vec<CellMap> = Vec::new();
        let mut taken = 0u64;
        let mut out: Vec<(Cell, i64)> = Vec::new();
        move |(changes, changes_frontier), (control, control_frontier), output| {
            let Some(store) = held.as_mut() else { return };
            let port = output.output_index();
            changes.for_each_stamp(|cap, data| {
                let Some(cap) = cap.retain_least(port) else { return };
                let epoch = slot(&mut pending, &mut spare, &cap);
                for batch in data {
                    for (cell, n) in batch.drain(..) {
                        *epoch.changes.entry(cell).or_default() += n;
                    }
                }
            });
            control.for_each_stamp(|cap, data| {
                let Some(cap) = cap.retain_least(port) else { return };
                slot(&mut pending, &mut spare, &cap).controls.extend(data.flat_map(|batch| batch.drain(..)));
            });
            let complete = |t: &Epoch| !changes_frontier.less_equal(t) && !control_frontier.less_equal(t);
            while let Some(entry) = pending.first_entry().filter(|e| complete(e.key())) {
                let (t, mut epoch) = entry.remove_entry();
                snapshots.take("cells", &mut taken, Some(t), || bincode::serialize(&*store).expect("serialisable"));
                let mut time: Option<EngineTime> = None;
                for c in &epoch.controls {
                    match c {
                        Control::Defs(defs) => store.set_defs(defs, &mut out),
                        Control::Time(t) => time = Some(*t),
                        Control::Page(..) => {}
                    }
                }
                let mut lost = 0;
                for (cell, n) in epoch.changes.drain() {
                    lost += !store.apply(cell, n, &mut out) as u64;
                }
                spare.push(epoch.changes);
                if lost > 0 {
                    expired.set(expired.get() + lost);
                }
                if let Some(as_of) = time.and_then(|t| t.as_of) {
                    store.advance(as_of, &config, &mut out);
                }
                if !out.is_empty() {
                    output.session(&epoch.cap).give_iterator(out.drain(..));
                }
            }
            let upto = match (changes_frontier.frontier().first(), control_frontier.frontier().first()) {
                (None, None) => None,
                (a, b) => Some(*a.into_iter().chain(b).min().expect("one is open")),
            };
            snapshots.take("cells", &mut taken, upto, || bincode::serialize(&*store).expect("serialisable"));
            if upto.is_none() {
                crate::drop_elsewhere(held.take());
            }
        }
    })
}
