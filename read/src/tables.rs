//! The accumulated rows of every view at one frontier: what a snapshot reads.

use std::collections::{BTreeMap, HashMap};

use rustc_hash::FxHashMap;

use schema::alert_rules::KeyKind;

use schema::cells::{Bump, Dim, Row};
use schema::event::{Minute, Sym, NONE, NONE_TEXT};
use schema::funnels::FunnelStat;
use schema::ids::{IdMap, IdSet};
use schema::retention::RetentionStat;
use schema::sessions::SessionStat;
use schema::time::Hour;

/// Session aggregates of one acquisition tuple by start hour.
pub type SessionHours = BTreeMap<Hour, HashMap<SessionStat, i64>>;

/// Clock value of a worker that is waiting for a partition's first record.
pub const PENDING: i64 = i64::MIN;

#[derive(Default)]
pub struct Tables {
    pub(crate) counts: HashMap<(Dim, Sym), BTreeMap<Minute, i64>>,
    /// User ids are already hashes: identity-hashed sets.
    pub(crate) user_minutes: BTreeMap<Minute, IdMap<i64>>,
    pub(crate) names: HashMap<Sym, (String, i64)>,
    pub(crate) clocks: HashMap<(u32, i64, i64, bool), i64>,
    pub(crate) accepted: i64,
    pub(crate) rejects: BTreeMap<String, i64>,
    pub sessions: HashMap<[Sym; 3], SessionHours>,
    /// Funnel aggregates by funnel index: (breakdown value, start day, stat) -> users.
    pub(crate) funnels: HashMap<u32, HashMap<(Sym, u32, FunnelStat), i64>>,
    /// Open attempts by funnel index: (step, start, user id) -> 1.
    pub(crate) open_attempts: HashMap<u32, BTreeMap<(u8, i64, String), i64>>,
    /// Path edge counts, and a counter of their changes (the graph is rebuilt when it moved).
    pub(crate) path_edges: HashMap<(Sym, Sym), i64>,
    pub(crate) paths_version: u64,
    /// `paths_version` at the last publish.
    pub(crate) paths_published: u64,
    /// Retention aggregates by definition index: (breakdown value, cohort, stat) -> users.
    pub(crate) retention: HashMap<u32, HashMap<(Sym, u32, RetentionStat), i64>>,
    pub(crate) retention_touched: bool,
    /// Per-key event counts (per-key alert rules, rate limits), and the keys each minute holds.
    pub keyed: FxHashMap<KeyKind, IdMap<BTreeMap<Minute, i64>>>,
    pub keyed_minutes: BTreeMap<Minute, FxHashMap<KeyKind, IdSet>>,
    /// Users per IP by minute, and the IPs each minute holds.
    pub ip_users: IdMap<BTreeMap<Minute, IdMap<i64>>>,
    pub ip_minutes: BTreeMap<Minute, IdSet>,
    /// Texts of per-key symbols (of the keys busy enough to alert on), with a reference count.
    pub(crate) key_texts: IdMap<(String, i64)>,
    /// Whether a session aggregate changed since the last publish.
    pub(crate) sessions_touched: bool,
    pub(crate) funnels_touched: bool,
    pub epoch: u64,
    /// The last published `as_of`: it never goes back (ingestion rejects anything older).
    pub published_as_of: Option<i64>,
    /// Count cells changed since the last publish, for the change stream.
    pub(crate) touched: Vec<(Dim, Sym, Minute)>,
}

impl Tables {
    pub fn apply(&mut self, row: Row, diff: isize) {
        let diff = diff as i64;
        match row {
            Row::Count { dim, key, minute } => {
                let series = self.counts.entry((dim, key)).or_default();
                series.bump(minute, diff);
                if series.is_empty() {
                    self.counts.remove(&(dim, key));
                }
                self.touched.push((dim, key, minute));
            }
            Row::UserMinute { minute, user } => {
                let users = self.user_minutes.entry(minute).or_default();
                users.bump(user, diff);
                if users.is_empty() {
                    self.user_minutes.remove(&minute);
                }
            }
            Row::Name { sym, text } => {
                let entry = self.names.entry(sym).or_insert_with(|| (text, 0));
                entry.1 += diff;
                if entry.1 <= 0 {
                    self.names.remove(&sym);
                }
            }
            Row::Clock { worker, head, watermark, idle } => self.clocks.bump((worker, head, watermark, idle), diff),
            Row::Accepted => self.accepted += diff,
            Row::Reject { reason } => self.rejects.bump(reason, diff),
            Row::Session { hour, source, stat } => {
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
            Row::Funnel { funnel, key, day, stat } => {
                let cells = self.funnels.entry(funnel).or_default();
                cells.bump((key, day, stat), diff);
                if cells.is_empty() {
                    self.funnels.remove(&funnel);
                }
                self.funnels_touched = true;
            }
            Row::FunnelUser { funnel, step, entry_ts, user } => {
                let users = self.open_attempts.entry(funnel).or_default();
                users.bump((step, entry_ts, user), diff);
                if users.is_empty() {
                    self.open_attempts.remove(&funnel);
                }
            }
            Row::PathEdge { from, to } => {
                self.path_edges.bump((from, to), diff);
                self.paths_version += 1;
            }
            Row::Keyed { kind, key, minute } => {
                let keys = self.keyed.entry(kind).or_default();
                let series = keys.entry(key).or_default();
                series.bump(minute, diff);
                let present = series.contains_key(&minute);
                if series.is_empty() {
                    keys.remove(&key);
                }
                if present {
                    self.keyed_minutes.entry(minute).or_default().entry(kind).or_default().insert(key);
                } else if let Some(kinds) = self.keyed_minutes.get_mut(&minute) {
                    if let Some(keys) = kinds.get_mut(&kind) {
                        keys.remove(&key);
                        if keys.is_empty() {
                            kinds.remove(&kind);
                        }
                    }
                    if kinds.is_empty() {
                        self.keyed_minutes.remove(&minute);
                    }
                }
            }
            Row::IpUser { minute, ip, user } => {
                let minutes = self.ip_users.entry(ip).or_default();
                let users = minutes.entry(minute).or_default();
                users.bump(user, diff);
                let present = !users.is_empty();
                if !present {
                    minutes.remove(&minute);
                }
                if minutes.is_empty() {
                    self.ip_users.remove(&ip);
                }
                if present {
                    self.ip_minutes.entry(minute).or_default().insert(ip);
                } else if let Some(ips) = self.ip_minutes.get_mut(&minute) {
                    ips.remove(&ip);
                    if ips.is_empty() {
                        self.ip_minutes.remove(&minute);
                    }
                }
            }
            Row::KeyText { sym, text, .. } => {
                let entry = self.key_texts.entry(sym).or_insert_with(|| (text, 0));
                entry.1 += diff;
                if entry.1 <= 0 {
                    self.key_texts.remove(&sym);
                }
            }
            Row::Retention { retention, key, cohort, stat } => {
                let cells = self.retention.entry(retention).or_default();
                cells.bump((key, cohort, stat), diff);
                if cells.is_empty() {
                    self.retention.remove(&retention);
                }
                self.retention_touched = true;
            }
        }
    }

    /// `(head, as_of)`: the highest event time seen, and the watermark of the slowest busy worker
    /// (or of the most advanced one when every worker is idle), never below the last published
    /// one. While a worker waits for a partition's first record, `as_of` does not advance.
    pub fn clock(&self) -> (Option<i64>, Option<i64>) {
        let live = self.clocks.iter().filter(|(_, n)| **n > 0).map(|(k, _)| *k);
        let head = live.clone().map(|(_, head, _, _)| head).filter(|h| *h != PENDING).max();
        let busy = live.clone().filter(|(_, _, _, idle)| !idle).map(|(_, _, wm, _)| wm).min();
        let computed = match busy {
            Some(PENDING) => None,
            Some(wm) => Some(wm),
            None => live.map(|(_, _, wm, _)| wm).max(),
        };
        let as_of = match (computed, self.published_as_of) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        (head, as_of)
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

    /// The text of a per-key symbol, or its hex when no busy minute has sent it.
    pub fn key_text(&self, sym: Sym) -> String {
        match self.key_texts.get(&sym) {
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

/// Sum of a series over `lo..=hi`.
pub fn window_sum(series: &BTreeMap<Minute, i64>, lo: Minute, hi: Minute) -> i64 {
    if lo > hi {
        return 0;
    }
    series.range(lo..=hi).map(|(_, v)| *v).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(worker: u32, head: i64, watermark: i64, idle: bool) -> Row {
        Row::Clock { worker, head, watermark, idle }
    }

    #[test]
    fn as_of_waits_for_pending_workers_and_never_goes_back() {
        let mut t = Tables::default();
        t.apply(clock(0, 1_000, 700, false), 1);
        t.apply(clock(1, PENDING, PENDING, false), 1);
        assert_eq!(t.clock(), (Some(1_000), None), "worker 1 has not delivered yet");
        t.apply(clock(1, PENDING, PENDING, false), -1);
        t.apply(clock(1, 900, 600, false), 1);
        assert_eq!(t.clock(), (Some(1_000), Some(600)), "the slowest busy worker");
        t.published_as_of = t.clock().1;
        t.apply(clock(1, 900, 600, false), -1);
        t.apply(clock(1, 900, 600, true), 1);
        assert_eq!(t.clock().1, Some(700), "an idle worker does not hold back");
        t.published_as_of = t.clock().1;
        t.apply(clock(2, 500, 200, false), 1);
        assert_eq!(t.clock().1, Some(700), "a late-reporting worker cannot move as_of back");
    }
}
