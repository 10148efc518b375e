//! Per-worker ingestion: a decoded record is enriched, admitted by its partition's clock (or
//! rejected, with its reason, into the dead letters), counted into the traffic cells, and handed
//! on as an [`Admitted`] event to the worker that owns its user. Nothing here depends on the
//! definitions or on other partitions: per-user views run after the exchange.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashSet;
use schema::cells::Cell;
use schema::event::{Sym, NONE};
use schema::paths::{self, Cleaner, ENTRY, EXIT};
use schema::ViewConfig;
use views::admitted::{Admitted, Text};
use views::traffic::TrafficCounts;

use crate::clock::PartitionClock;
use crate::deadletter::{self, Coords, DeadLetterSink};
use crate::decode::Decoded;
use crate::reject::{Reason, Rejection};

/// Admitted events are handed to the dataflow in batches of about this many.
pub const BATCH: usize = 4096;

pub struct Ingest {
    /// `[enrich]`: applied to every decoded event before its clock admits it.
    pub enrich: Option<(Arc<crate::enrich::Enricher>, crate::enrich::AgentCache)>,
    lateness_ms: i64,
    cleaner: Cleaner,
    traffic: TrafficCounts,
    /// Symbols this worker has named (their texts travel once per worker), and pages whose text
    /// it has sent to every worker (step patterns match on text).
    named: FxHashSet<Sym>,
    paged: FxHashSet<Sym>,
    /// This epoch's cell changes besides the traffic counts: names, accepted, rejects.
    cells: Vec<(Cell, i64)>,
    accepted: i64,
    rejects: BTreeMap<Reason, i64>,
    /// Admitted events not yet handed to the dataflow.
    pub admitted: Vec<Admitted>,
    /// Page texts not yet sent.
    pub pages: Vec<(Sym, String)>,
    /// `as_of` as the dataflow last computed it: an older event may no longer change the views.
    pub as_of: Option<i64>,
    dead_letters: Box<dyn DeadLetterSink>,
    /// When freshness is measured: from which event time, and the times admitted this epoch.
    pub freshness: Option<(i64, Vec<i64>)>,
}

impl Ingest {
    pub fn new(views: &ViewConfig, lateness_ms: i64, dead_letters: Box<dyn DeadLetterSink>) -> Ingest {
        let cleaner = Cleaner::new(&views.paths).expect("paths are checked by ViewConfig::validate");
        let mut ingest = Ingest {
            enrich: None,
            lateness_ms,
            cleaner,
            traffic: TrafficCounts::default(),
            named: FxHashSet::default(),
            paged: FxHashSet::default(),
            cells: Vec::new(),
            accepted: 0,
            rejects: BTreeMap::new(),
            admitted: Vec::with_capacity(BATCH),
            pages: Vec::new(),
            as_of: None,
            dead_letters,
            freshness: None,
        };
        // Nodes that no page names: the pseudo nodes and the conversion events.
        let conversions = views.paths.conversion_events.iter().map(|e| paths::event_node(e));
        let fixed: Vec<String> = [ENTRY.to_string(), EXIT.to_string()].into_iter().chain(conversions).collect();
        fixed.iter().for_each(|text| ingest.name(schema::event::sym(text), text));
        ingest
    }

    /// Publishes the text of a symbol this worker has not named yet.
    fn name(&mut self, sym: Sym, text: &str) {
        if self.named.insert(sym) {
            self.cells.push((Cell::Name { sym, text: text.to_string() }, 1));
        }
    }

    pub fn lateness_ms(&self) -> i64 {
        self.lateness_ms
    }

    /// Whether a batch of admitted events is ready to go (sources return to the runtime then).
    pub fn full(&self) -> bool {
        self.admitted.len() >= BATCH
    }

    /// Enriches, admits and counts one decoded record, or records why not. `ord` is its place in
    /// the engine's order (`views::admitted::ord`).
    pub fn offer(
        &mut self,
        clock: &mut PartitionClock,
        decoded: Result<Decoded<'_>, Rejection>,
        source: &Coords<'_>,
        raw: &[u8],
        now_ms: i64,
        ord: u64,
    ) {
        let decoded = self.prepare(decoded);
        if self.admit(clock, &decoded, source, raw, now_ms) {
            self.add(decoded.as_ref().expect("admitted"), ord);
        }
    }

    /// Enrichment: depends on the record only, so a shared partition runs it before its turn.
    pub fn prepare<'a>(&mut self, decoded: Result<Decoded<'a>, Rejection>) -> Result<Decoded<'a>, Rejection> {
        match &mut self.enrich {
            Some((enricher, agents)) => decoded.and_then(|d| enricher.apply(d, agents)),
            None => decoded,
        }
    }

    /// The part that must follow the partition's order: the clock's decision, or the rejection.
    /// The caller then counts an admitted event with [`Self::add`] (in any order).
    pub fn admit(
        &mut self,
        clock: &mut PartitionClock,
        decoded: &Result<Decoded<'_>, Rejection>,
        source: &Coords<'_>,
        raw: &[u8],
        now_ms: i64,
    ) -> bool {
        let d = match decoded {
            Ok(d) => d,
            Err(rejection) => {
                self.reject(rejection, source, raw, now_ms);
                return false;
            }
        };
        let verdict = match self.as_of {
            // Published as complete: an older event may no longer change the views.
            Some(as_of) if d.event.ts < as_of => Err(Rejection::new(
                Reason::TooLate,
                format!(
                    "ts {} is before as_of {}, which the views already published as complete",
                    schema::time::rfc3339(d.event.ts),
                    schema::time::rfc3339(as_of)
                ),
            )),
            _ => clock.admit(d.event.ts, d.event_id, self.lateness_ms, now_ms),
        };
        match verdict {
            Ok(()) => true,
            Err(rejection) => {
                self.reject(&rejection, source, raw, now_ms);
                false
            }
        }
    }

    /// Counts an admitted event and hands it on to its user's worker.
    pub fn add(&mut self, d: &Decoded<'_>, ord: u64) {
        let e = d.event;
        for (sym, text) in d.texts() {
            self.name(sym, text);
        }
        if let (Some(text), true) = (d.page.as_deref(), e.page != NONE) {
            if self.paged.insert(e.page) {
                self.pages.push((e.page, text.to_string()));
            }
        }
        self.traffic.add(&e);
        let (node, new_node) = self.cleaner.node(e.name, e.is_page_view(), e.page, d.page.as_deref());
        if let Some(text) = new_node {
            self.name(node, &text);
        }
        self.accepted += 1;
        if let Some((from, times)) = self.freshness.as_mut() {
            if e.ts >= *from {
                times.push(e.ts);
            }
        }
        self.admitted.push(Admitted {
            event: e,
            ord,
            session_id: d.session_id.unwrap_or(0),
            node,
            props: d.props.clone(),
            user_id: Text::new(&d.user_id),
            ip: d.ip.as_deref().map(|ip| (schema::event::sym(ip), Text::new(ip))),
        });
    }

    pub fn reject(&mut self, rejection: &Rejection, source: &Coords<'_>, raw: &[u8], now_ms: i64) {
        *self.rejects.entry(rejection.reason).or_default() += 1;
        if matches!(rejection.reason, Reason::Filtered | Reason::Blank) {
            // Dropped on purpose (a crawler filter can drop a third of the traffic), or a blank
            // line of a file: counted, but not copied into the dead letters, which are for input
            // someone must fix.
            return;
        }
        let payload = deadletter::payload_text(raw);
        self.dead_letters.put(&deadletter::letter(rejection, source, &payload, now_ms));
    }

    /// This epoch's cell changes: traffic counts, names, accepted and rejected records.
    pub fn flush(&mut self, out: &mut Vec<(Cell, i64)>) {
        self.traffic.flush(out);
        out.append(&mut self.cells);
        if self.accepted != 0 {
            out.push((Cell::Accepted, std::mem::take(&mut self.accepted)));
        }
        for (reason, n) in std::mem::take(&mut self.rejects) {
            out.push((Cell::Reject { reason: reason.as_str().to_string() }, n));
        }
        self.dead_letters.flush();
    }
}
