//! The live traffic view: events per minute by dimension, counted where events are admitted and
//! summed across workers by the cells operator.
//!
//! Each epoch's events are aggregated on `(minute, event, page, utm_source, device, country)` (one
//! hash update per event), then expanded into [`Cell::Count`] changes whose count is the number
//! of events: at 100k events per epoch the dataflow sees a few thousand count changes instead of
//! 700k. Sliding windows ("last 15 minutes", "active in the last 5") are sums and unions over a
//! few dozen minutes that the read side takes at query time from one consistent snapshot:
//! keeping them out of the dataflow avoids multiplying every change by the window length.

use rustc_hash::FxHashMap;
use schema::cells::{series_of, Cell, Dim};
use schema::event::{Event, Sym};
use schema::time::{minute_of, minute_start_ms, Minute};

/// One worker's event counts of the current epoch.
#[derive(Default)]
pub struct TrafficCounts {
    cube: FxHashMap<Event, i64>,
    cells: FxHashMap<(Dim, Sym, Minute), i64>,
}

impl TrafficCounts {
    pub fn add(&mut self, e: &Event) {
        let cell = Event { ts: minute_start_ms(minute_of(e.ts)), user: 0, ..*e };
        *self.cube.entry(cell).or_default() += 1;
    }

    /// The epoch's count changes.
    pub fn flush(&mut self, out: &mut Vec<(Cell, i64)>) {
        for (cell, n) in self.cube.drain() {
            let minute = minute_of(cell.ts);
            for (dim, key) in series_of(&cell) {
                *self.cells.entry((dim, key, minute)).or_default() += n;
            }
        }
        out.extend(self.cells.drain().map(|((dim, key, minute), n)| (Cell::Count { dim, key, minute }, n)));
    }
}
