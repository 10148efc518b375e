//! The cells of every view, how they combine and which window lets them go.
//!
//! Counts travel with the cell: producers consolidate each epoch's events before they leave the
//! worker (many events share one `(series, minute)`), which is what makes a million events per
//! second affordable.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::alert_rules::KeyKind;
use crate::event::{Event, Sym, UserId, NONE};
use crate::funnels::FunnelStat;
use crate::retention::RetentionStat;
use crate::sessions::SessionStat;
use crate::time::{Hour, Minute};

/// The dimension of a per-minute count series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Dim {
    /// All events (key is [`NONE`]).
    All,
    /// Events by event name.
    Event,
    /// Events of any name that carry a page, by page.
    Page,
    /// `page_view` events by page.
    PageView,
    UtmSource,
    Device,
    Country,
    /// Events matching a funnel step, keyed by `sym("<funnel>#<step>")` (1-based): the flow
    /// conversion that funnel-drop alerts watch.
    Step,
}

impl Dim {
    pub const ALL: [Dim; 8] =
        [Dim::All, Dim::Event, Dim::Page, Dim::PageView, Dim::UtmSource, Dim::Device, Dim::Country, Dim::Step];
    /// The acquisition / client breakdowns shown on the live view.
    pub const BREAKDOWNS: [Dim; 3] = [Dim::UtmSource, Dim::Device, Dim::Country];

    pub fn as_str(self) -> &'static str {
        match self {
            Dim::All => "all",
            Dim::Event => "event",
            Dim::Page => "page",
            Dim::PageView => "page_view",
            Dim::UtmSource => "utm_source",
            Dim::Device => "device",
            Dim::Country => "country",
            Dim::Step => "step",
        }
    }

    pub fn parse(text: &str) -> Option<Dim> {
        Dim::ALL.into_iter().find(|d| d.as_str() == text)
    }
}

/// The count series one event contributes to, each with weight one.
pub fn series_of(event: &Event) -> impl Iterator<Item = (Dim, Sym)> {
    let page = (event.page != NONE).then_some((Dim::Page, event.page));
    let page_view = (event.page != NONE && event.is_page_view()).then_some((Dim::PageView, event.page));
    [
        Some((Dim::All, NONE)),
        Some((Dim::Event, event.name)),
        page,
        page_view,
        Some((Dim::UtmSource, event.utm_source)),
        Some((Dim::Device, event.device)),
        Some((Dim::Country, event.country)),
    ]
    .into_iter()
    .flatten()
}

/// An input record of the dataflow. Diffs are `isize` multiplicities.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Fact {
    /// `diff` events in `(dim, key)` during `minute`.
    Count { dim: Dim, key: Sym, minute: Minute },
    /// The user had at least one event in `minute` (one per ingesting worker).
    UserMinute { minute: Minute, user: UserId },
    /// The text behind a symbol (one per ingesting worker that saw it).
    Name { sym: Sym, text: String },
    /// A worker's input clock: highest event time seen, its watermark, and whether all of its
    /// partitions are idle (an idle worker does not hold back `as_of`).
    Clock { worker: u32, head: i64, watermark: i64, idle: bool },
    /// `diff` accepted events.
    Accepted,
    /// `diff` rejected inputs with this reason.
    Reject { reason: String },
    /// Sessions that started in `hour` with this acquisition (`utm_source`, `device`,
    /// `country` of their first event) contribute `diff` to `stat`.
    Session { hour: Hour, source: [Sym; 3], stat: SessionStat },
    /// Users of funnel `funnel` (registry index) whose best attempt started on `day` with
    /// breakdown value `key` contribute `diff` to `stat`.
    Funnel { funnel: u32, key: Sym, day: u32, stat: FunnelStat },
    /// A user whose best attempt of `funnel` stopped after `step` (0-based), started at `entry_ts`.
    FunnelUser { funnel: u32, step: u8, entry_ts: i64, user: String },
    /// `diff` transitions from path node `from` to `to` within sessions.
    PathEdge { from: Sym, to: Sym },
    /// Users of retention `retention` (registry index) in the cohort of period `cohort` with
    /// breakdown value `key` contribute `diff` to `stat`.
    Retention { retention: u32, key: Sym, cohort: u32, stat: RetentionStat },
    /// `diff` events of `kind` by `key` (the symbol of an IP, a user id) during `minute`, for the
    /// per-key alert rules and rate limits; only the kinds some rule reads are counted.
    Keyed { kind: KeyKind, key: Sym, minute: Minute },
    /// The IP was used by the user during `minute` (one per ingesting worker).
    IpUser { minute: Minute, ip: Sym, user: UserId },
    /// The text of a per-key symbol, sent (and retracted with `minute`) only for keys busy enough
    /// in that minute that a rule could fire on them: a text per event would cost more than the
    /// counts.
    KeyText { sym: Sym, text: String, minute: Minute },
}

/// An output record of the dataflow, read into the read model.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Row {
    Count { dim: Dim, key: Sym, minute: Minute },
    UserMinute { minute: Minute, user: UserId },
    Name { sym: Sym, text: String },
    Clock { worker: u32, head: i64, watermark: i64, idle: bool },
    Accepted,
    Reject { reason: String },
    Session { hour: Hour, source: [Sym; 3], stat: SessionStat },
    Funnel { funnel: u32, key: Sym, day: u32, stat: FunnelStat },
    FunnelUser { funnel: u32, step: u8, entry_ts: i64, user: String },
    PathEdge { from: Sym, to: Sym },
    Retention { retention: u32, key: Sym, cohort: u32, stat: RetentionStat },
    Keyed { kind: KeyKind, key: Sym, minute: Minute },
    IpUser { minute: Minute, ip: Sym, user: UserId },
    KeyText { sym: Sym, text: String, minute: Minute },
}

/// Adding to a count that disappears at zero, so state shrinks with retractions.
pub trait Bump<K> {
    fn bump(&mut self, key: K, diff: i64);
}

impl<K: Ord> Bump<K> for BTreeMap<K, i64> {
    fn bump(&mut self, key: K, diff: i64) {
        use std::collections::btree_map::Entry;
        match self.entry(key) {
            Entry::Occupied(mut e) => {
                *e.get_mut() += diff;
                if *e.get() == 0 {
                    e.remove();
                }
            }
            Entry::Vacant(e) if diff != 0 => {
                e.insert(diff);
            }
            Entry::Vacant(_) => {}
        }
    }
}

impl<K: std::hash::Hash + Eq, S: std::hash::BuildHasher> Bump<K> for HashMap<K, i64, S> {
    fn bump(&mut self, key: K, diff: i64) {
        use std::collections::hash_map::Entry;
        match self.entry(key) {
            Entry::Occupied(mut e) => {
                *e.get_mut() += diff;
                if *e.get() == 0 {
                    e.remove();
                }
            }
            Entry::Vacant(e) if diff != 0 => {
                e.insert(diff);
            }
            Entry::Vacant(_) => {}
        }
    }
}
