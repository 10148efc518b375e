//! The accumulated rows of every view at one frontier: what a snapshot reads.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

// Cells are hashes already (symbols) or small keys: a fast hasher, not SipHash.
type HashMap<K, V> = FxHashMap<K, V>;

use schema::alert_rules::KeyKind;

use schema::cells::{Bump, Cell, Dim, Floors};
use schema::event::{Minute, Sym, NONE, NONE_TEXT};
use schema::funnels::FunnelStat;
use schema::ids::{IdMap, IdSet};
use schema::retention::RetentionStat;
use schema::sessions::SessionStat;
use schema::time::Hour;

/// Session aggregates of one acquisition tuple by start hour.
pub type SessionHours = BTreeMap<Hour, HashMap<SessionStat, i64>>;

/// Serialised whole into worker 0's snapshot (the cells operator holds no counted cells: this
/// is their only copy); the fields marked `skip` are per publish.
#[derive(Default, Serialize, Deserialize)]
pub struct Tables {
    pub(crate) counts: HashMap<(Dim, Sym), BTreeMap<Minute, i64>>,
    /// User ids are already hashes: identity-hashed sets.
    pub(crate) user_minutes: BTreeMap<Minute, IdMap<i64>>,
    pub(crate) names: HashMap<Sym, (String, i64)>,
    /// The engine's clock at this frontier (computed in the dataflow): head, `as_of`, ready.
    pub(crate) clock: Option<(Option<i64>, Option<i64>, bool)>,
    pub(crate) accepted: i64,
    pub(crate) rejects: BTreeMap<String, i64>,
    pub sessions: HashMap<[Sym; 3], SessionHours>,
    /// Funnel aggregates by funnel index: (breakdown value, start day, stat) -> users.
    pub(crate) funnels: HashMap<u32, HashMap<(Sym, u32, FunnelStat), i64>>,
    /// Open attempts by funnel index: (step, start, user id) -> 1.
    pub(crate) open_attempts: HashMap<u32, BTreeMap<(u8, i64, String), i64>>,
    /// Path edge counts, and a counter of their changes (the graph is rebuilt when it moved).
    pub(crate) path_edges: HashMap<(Sym, Sym), i64>,
    #[serde(skip)]
    pub(crate) paths_version: u64,
    /// `paths_version` at the last publish.
    #[serde(skip)]
    pub(crate) paths_published: u64,
    /// Retention aggregates by definition index: (breakdown value, cohort, stat) -> users.
    pub(crate) retention: HashMap<u32, HashMap<(Sym, u32, RetentionStat), i64>>,
    #[serde(skip)]
    pub(crate) retention_touched: bool,
    /// Per-key event counts (per-key alert rules, rate limits) by minute. Minute first: a key
    /// has events in few minutes, and one map per minute costs no allocation per key (a series
    /// per key did, for about a million keys in a busy replay).
    pub keyed: BTreeMap<Minute, FxHashMap<(KeyKind, Sym), i64>>,
    /// Users per IP by minute.
    pub ip_users: BTreeMap<Minute, IdMap<IdMap<i64>>>,
    /// Texts of per-key symbols (of the keys busy enough to alert on), with a reference count,
    /// and the symbols whose text each minute holds (to let minutes go).
    pub(crate) key_texts: IdMap<(String, i64)>,
    key_text_minutes: BTreeMap<Minute, IdSet>,
    /// The windows' floors received in this epoch, applied once its other changes are.
    #[serde(skip)]
    floors: Option<Floors>,
    /// Whether a session aggregate changed since the last publish.
    #[serde(skip)]
    pub(crate) sessions_touched: bool,
    #[serde(skip)]
    pub(crate) funnels_touched: bool,
    pub epoch: u64,
    /// `as_of` at the last publish.
    pub published_as_of: Option<i64>,
    /// Count cells changed since the last publish, for the change stream (kept only while
    /// someone listens: `track_changes`).
    #[serde(skip)]
    pub(crate) touched: Vec<(Dim, Sym, Minute)>,
    #[serde(skip)]
    pub(crate) track_changes: bool,
}

impl Tables {
    pub fn apply(&mut self, cell: Cell, diff: i64) {
        match cell {
            Cell::Count { dim, key, minute } => {
                let series = self.counts.entry((dim, key)).or_default();
                series.bump(minute, diff);
                if series.is_empty() {
                    self.counts.remove(&(dim, key));
                }
                if self.track_changes {
                    self.touched.push((dim, key, minute));
                }
            }
            Cell::UserMinute { minute, user } => {
                let users = self.user_minutes.entry(minute).or_default();
                users.bump(user, diff);
                if users.is_empty() {
                    self.user_minutes.remove(&minute);
                }
            }
            Cell::Name { sym, text } => {
                let entry = self.names.entry(sym).or_insert_with(|| (text, 0));
                entry.1 += diff;
                if entry.1 <= 0 {
                    self.names.remove(&sym);
                }
            }
            Cell::Clock { head, as_of, ready } => {
                if diff > 0 {
                    self.clock = Some((head, as_of, ready));
                } else if self.clock == Some((head, as_of, ready)) {
                    self.clock = None;
                }
            }
            Cell::Accepted => self.accepted += diff,
            Cell::Reject { reason } => self.rejects.bump(reason, diff),
            Cell::Session { hour, source, stat } => {
                let hours = self.sessions.entry(source).or_default();
                let cells = hours.entry(hour).or_default();
                cells.bump(stat, diff);
                if cells.is_empty() {
                    hours.remove(&hour);
                    if hours.is_empty() {
                        self.sessions.remove(&source);
                    }
                }
                self.sessions_touched = true;
            }
            Cell::Funnel { funnel, key, day, stat } => {
                let cells = self.funnels.entry(funnel).or_default();
                cells.bump((key, day, stat), diff);
                if cells.is_empty() {
                    self.funnels.remove(&funnel);
                }
                self.funnels_touched = true;
            }
            Cell::FunnelUser { funnel, step, entry_ts, user } => {
                let users = self.open_attempts.entry(funnel).or_default();
                users.bump((step, entry_ts, user), diff);
                if users.is_empty() {
                    self.open_attempts.remove(&funnel);
                }
            }
            Cell::PathEdge { from, to } => {
                self.path_edges.bump((from, to), diff);
                self.paths_version += 1;
            }
            Cell::Keyed { kind, key, minute } => {
                let keys = self.keyed.entry(minute).or_default();
                keys.bump((kind, key), diff);
                if keys.is_empty() {
                    self.keyed.remove(&minute);
                }
            }
            Cell::IpUser { minute, ip, user } => {
                let ips = self.ip_users.entry(minute).or_default();
                let users = ips.entry(ip).or_default();
                users.bump(user, diff);
                if users.is_empty() {
                    ips.remove(&ip);
                    if ips.is_empty() {
                        self.ip_users.remove(&minute);
                    }
                }
            }
            Cell::KeyText { sym, text, minute } => {
                self.key_texts.entry(sym).or_insert_with(|| (text, 0));
                count_key_text(&mut self.key_texts, sym, diff);
                let syms = self.key_text_minutes.entry(minute).or_default();
                if diff > 0 {
                    syms.insert(sym);
                } else {
                    syms.remove(&sym);
                    if syms.is_empty() {
                        self.key_text_minutes.remove(&minute);
                    }
                }
            }
            Cell::Floors(floors) => self.floors = Some(floors),
            Cell::Retention { retention, key, cohort, stat } => {
                let cells = self.retention.entry(retention).or_default();
                cells.bump((key, cohort, stat), diff);
                if cells.is_empty() {
                    self.retention.remove(&retention);
                }
                self.retention_touched = true;
            }
        }
    }

    /// Lets go of every cell before the floors received in this epoch (the cells operator
    /// dropped its share of them at the same point). Called once an epoch's changes are applied.
    pub fn settle(&mut self) {
        let Some(floors) = self.floors.take() else { return };
        let track = self.track_changes;
        let touched = &mut self.touched;
        self.counts.retain(|(dim, key), series| {
            let kept = series.split_off(&floors.counts);
            if track {
                touched.extend(series.keys().map(|m| (*dim, *key, *m)));
            }
            *series = kept;
            !series.is_empty()
        });
        self.user_minutes = self.user_minutes.split_off(&floors.users);
        let mut sessions_gone = false;
        self.sessions.retain(|_, hours| {
            let kept = hours.split_off(&floors.sessions);
            // What is left in `hours` is what the floor let go.
            sessions_gone |= !hours.is_empty();
            *hours = kept;
            !hours.is_empty()
        });
        self.sessions_touched |= sessions_gone;
        self.keyed = self.keyed.split_off(&floors.keys);
        self.ip_users = self.ip_users.split_off(&floors.keys);
        let kept = self.key_text_minutes.split_off(&floors.keys);
        for sym in std::mem::replace(&mut self.key_text_minutes, kept).into_values().flatten() {
            count_key_text(&mut self.key_texts, sym, -1);
        }
        for (retention, cells) in self.retention.iter_mut() {
            let oldest = floors.cohorts.get(*retention as usize).copied().unwrap_or(0);
            let before = cells.len();
            cells.retain(|(_, cohort, _), _| *cohort >= oldest);
            self.retention_touched |= cells.len() < before;
        }
        self.retention.retain(|_, cells| !cells.is_empty());
    }

    /// `(head, as_of)`: the newest event time, and the event time up to which every view is
    /// complete (the dataflow computes both from every input partition; `as_of` never goes back).
    pub fn clock(&self) -> (Option<i64>, Option<i64>) {
        self.clock.map_or((None, None), |(head, as_of, _)| (head, as_of))
    }

    /// Every input has read what it held when the engine started.
    pub fn ready(&self) -> bool {
        self.clock.is_some_and(|(_, _, ready)| ready)
    }

    pub fn name(&self, sym: Sym) -> String {
        if sym == NONE {
            return NONE_TEXT.to_string();
        }
        match self.names.get(&sym) {
            Some((text, _)) => text.clone(),
            None => format!("#{sym:016x}"),
        }
    }

    /// The text of a per-key symbol (or of a device, a name), or its hex when no busy minute
    /// has sent it.
    pub fn key_text(&self, sym: Sym) -> String {
        match self.key_texts.get(&sym).or_else(|| self.names.get(&sym)) {
            Some((text, _)) => text.clone(),
            None => format!("#{sym:016x}"),
        }
    }

    pub fn series(&self, dim: Dim, key: Sym) -> Option<&BTreeMap<Minute, i64>> {
        self.counts.get(&(dim, key))
    }

    /// All keys of one dimension with their series.
    pub fn dimension(&self, dim: Dim) -> impl Iterator<Item = (Sym, &BTreeMap<Minute, i64>)> {
        self.counts.iter().filter(move |((d, _), _)| *d == dim).map(|((_, k), s)| (*k, s))
    }

    /// Distinct users with an event in minutes `lo..=hi`.
    pub fn distinct_users(&self, lo: Minute, hi: Minute) -> u64 {
        if lo > hi {
            return 0;
        }
        let mut range = self.user_minutes.range(lo..=hi);
        let mut seen = IdSet::default();
        match (range.next(), range.next()) {
            (None, _) => 0,
            (Some((_, only)), None) => only.len() as u64,
            (Some((_, a)), Some((_, b))) => {
                seen.extend(a.keys().copied());
                seen.extend(b.keys().copied());
                for (_, users) in range {
                    seen.extend(users.keys().copied());
                }
                seen.len() as u64
            }
        }
    }

    /// Earliest minute with any user at or after `from`.
    pub fn first_user_minute(&self, from: Minute) -> Option<Minute> {
        self.user_minutes.range(from..).next().map(|(m, _)| *m)
    }
}

/// Adds `diff` to a key text's reference count; the text goes at zero.
fn count_key_text(texts: &mut IdMap<(String, i64)>, sym: Sym, diff: i64) {
    if let Some(entry) = texts.get_mut(&sym) {
        entry.1 += diff;
        if entry.1 <= 0 {
            texts.remove(&sym);
        }
    }
}

/// Sum of a series over `lo..=hi`.
pub fn window_sum(series: &BTreeMap<Minute, i64>, lo: Minute, hi: Minute) -> i64 {
    if lo > hi {
        return 0;
    }
    series.range(lo..=hi).map(|(_, v)| *v).sum()
}
