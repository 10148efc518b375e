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

/// One cell of a view. A cell travels with a count (`(Cell, i64)`): a `Count` cell with 37 means
/// 37 events, a `Session` cell with `stat: DurationMs` and 5400 means 5.4 s of session time.
/// Every view's output is defined here once; producers send changes, the dataflow consolidates
/// them across workers ([`Cell::keep`]) and lets them go with their window ([`Cell::window`]),
/// and the read model applies the net changes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Cell {
    /// Events in `(dim, key)` during `minute`.
    Count { dim: Dim, key: Sym, minute: Minute },
    /// The user had at least one event in `minute`: sent once (the worker that owns the user
    /// remembers, in its snapshot too, which user-minutes it sent while their window holds).
    UserMinute { minute: Minute, user: UserId },
    /// The text behind a symbol.
    Name { sym: Sym, text: String },
    /// Accepted events.
    Accepted,
    /// Rejected inputs with this reason.
    Reject { reason: String },
    /// Sessions that started in `hour` with this acquisition (`utm_source`, `device`, `country`
    /// of their first event) contribute to `stat`.
    Session { hour: Hour, source: [Sym; 3], stat: SessionStat },
    /// Users of funnel `funnel` (registry index) whose best attempt started on `day` with
    /// breakdown value `key` contribute to `stat`.
    Funnel { funnel: u32, key: Sym, day: u32, stat: FunnelStat },
    /// A user whose best attempt of `funnel` stopped after `step` (0-based), started at `entry_ts`.
    FunnelUser { funnel: u32, step: u8, entry_ts: i64, user: String },
    /// Transitions from path node `from` to `to` within sessions.
    PathEdge { from: Sym, to: Sym },
    /// Users of retention `retention` (registry index) in the cohort of period `cohort` with
    /// breakdown value `key` contribute to `stat`.
    Retention { retention: u32, key: Sym, cohort: u32, stat: RetentionStat },
    /// Events of `kind` by `key` (the symbol of an IP, a user id) during `minute`, for the
    /// per-key alert rules and rate limits; only the kinds some rule reads are counted.
    Keyed { kind: KeyKind, key: Sym, minute: Minute },
    /// The IP was used by the user during `minute`: sent once, like [`Cell::UserMinute`].
    IpUser { minute: Minute, ip: Sym, user: UserId },
    /// The text of a per-key symbol, sent only for keys busy enough in `minute` that a rule
    /// could fire on them: a text per event would cost more than the counts.
    KeyText { sym: Sym, text: String, minute: Minute },
    /// The engine's clock, computed in the dataflow from every input partition: the newest event
    /// time, `as_of` (complete up to), and whether every input has read what it had at start.
    Clock { head: Option<i64>, as_of: Option<i64>, ready: bool },
    /// The windows moved to these floors: every cell of an earlier window is let go, by the
    /// read side as by the cells operator. One marker per move instead of a retraction per cell
    /// (on a long stream, a third of all cell changes were such retractions). The read side
    /// applies it after every other change of its epoch.
    Floors(Floors),
}

/// How contributions to one cell combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// The counts add up (events, users, seconds).
    Sum,
    /// The cell is present while any contribution is: texts that several workers send.
    Presence,
}

/// The window a cell belongs to: it is let go once `as_of` moves that window past it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Window {
    /// Kept while the engine runs (totals, names, cells whose producers retract them).
    Forever,
    /// Per-minute counts: `views.window_minutes` behind `as_of`.
    Counts(Minute),
    /// Active users: `active_history_minutes + active_minutes` behind `as_of`.
    Users(Minute),
    /// Sessions by start hour: the hour holding the start of the counts window.
    Sessions(Hour),
    /// Per-key counts: the longest window a per-key rule reads, behind `as_of`.
    Keys(Minute),
    /// A retention definition's cohorts: those its matrix shows at `as_of`.
    Cohorts { retention: u32, cohort: u32 },
}

impl Cell {
    pub fn keep(&self) -> Keep {
        match self {
            Cell::Name { .. } | Cell::KeyText { .. } => Keep::Presence,
            _ => Keep::Sum,
        }
    }

    pub fn window(&self) -> Window {
        match *self {
            Cell::Count { minute, .. } => Window::Counts(minute),
            Cell::UserMinute { minute, .. } => Window::Users(minute),
            Cell::Session { hour, .. } => Window::Sessions(hour),
            Cell::Keyed { minute, .. } | Cell::IpUser { minute, .. } | Cell::KeyText { minute, .. } => {
                Window::Keys(minute)
            }
            Cell::Retention { retention, cohort, .. } => Window::Cohorts { retention, cohort },
            Cell::Name { .. }
            | Cell::Accepted
            | Cell::Reject { .. }
            | Cell::Funnel { .. }
            | Cell::FunnelUser { .. }
            | Cell::PathEdge { .. }
            | Cell::Clock { .. }
            | Cell::Floors(_) => Window::Forever,
        }
    }
}

/// Where each window starts at one `as_of`: cells before it are let go. `None`: nothing yet.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Floors {
    pub counts: Minute,
    pub users: Minute,
    pub sessions: Hour,
    pub keys: Minute,
    /// By retention definition index: the oldest cohort shown.
    pub cohorts: Vec<u32>,
}

impl Floors {
    /// The floors at `as_of`: what no read can reach any more (see the read side's `visible`).
    /// `key_window`: the longest window a per-key rule reads (minutes).
    pub fn at<'a>(
        as_of: i64,
        config: &crate::config::ViewConfig,
        key_window: u32,
        retention: impl Iterator<Item = &'a crate::retention::RetentionDef>,
    ) -> Floors {
        let minute = crate::time::minute_of(as_of);
        Floors {
            counts: config.counts_from(minute),
            users: Floors::users_at(as_of, config),
            sessions: config.session_hours_from(minute),
            keys: Floors::keys_at(as_of, key_window),
            cohorts: retention.map(|r| r.oldest_cohort(r.period_of(as_of))).collect(),
        }
    }

    /// The active-user window's floor at `as_of` (also where the per-user operator forgets which
    /// user-minutes it sent).
    pub fn users_at(as_of: i64, config: &crate::config::ViewConfig) -> Minute {
        (crate::time::minute_of(as_of) + 1).saturating_sub(config.user_minutes_kept())
    }

    /// The per-key counts' floor at `as_of`: per-key rules read their window behind the bucket
    /// being judged, which `as_of` has passed.
    pub fn keys_at(as_of: i64, key_window: u32) -> Minute {
        (crate::time::minute_of(as_of) + 1).saturating_sub(key_window + 2)
    }

    /// Whether a cell of `window` is still inside.
    pub fn keeps(&self, window: Window) -> bool {
        match window {
            Window::Forever => true,
            Window::Counts(m) => m >= self.counts,
            Window::Users(m) => m >= self.users,
            Window::Sessions(h) => h >= self.sessions,
            Window::Keys(m) => m >= self.keys,
            Window::Cohorts { retention, cohort } => {
                cohort >= self.cohorts.get(retention as usize).copied().unwrap_or(0)
            }
        }
    }
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
