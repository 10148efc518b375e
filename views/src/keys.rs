//! Per-key counts for the per-key alert rules and rate limits: events per (kind, key, minute) and
//! `(ip, user)` pairs, as symbols, counted on the worker that owns the event's user and summed
//! across workers by the cells operator (which exchanges them by key). A key's text is sent only
//! from a minute in which this worker saw it often enough that a rule could fire on it: texts for
//! every key would cost more than the counts (a string per event).

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use schema::alert_rules::{AlertRule, Condition, KeyField, KeyKind};
use schema::cells::Cell;
use schema::event::{Minute, Sym, UserId, NONE};
use serde::{Deserialize, Serialize};

use crate::admitted::Admitted;

/// What the current rules need counted.
#[derive(Default)]
struct Counting {
    /// Kinds counted, with the per-minute count at which a key's text is sent.
    kinds: Vec<(KeyKind, i64)>,
    /// Distinct users of one IP in one minute at which its text is sent; `None`: not counted.
    ip_users: Option<u32>,
    /// A key's text is sent once per this many minutes (the longest window a rule reads):
    /// every window that can fire holds it.
    text_minutes: u32,
}

/// One key's count in one minute on this worker: what was sent, what this epoch adds, and
/// whether its text went out.
#[derive(Clone, Copy, Default, Serialize, Deserialize)]
struct Count {
    sent: i64,
    pending: i64,
    text: bool,
}

/// This worker's per-key state: what it counted per minute (for the text thresholds) and what it
/// already sent, for the minutes the per-key rules still read.
#[derive(Default, Serialize, Deserialize)]
pub struct KeyCounts {
    #[serde(skip)]
    counting: Counting,
    /// By minute first: letting a minute go drops one map, and keys cost no list of their own.
    counts: BTreeMap<Minute, FxHashMap<(KeyKind, Sym), Count>>,
    /// Counts changed this epoch.
    touched: Vec<(KeyKind, Sym, Minute)>,
    ip_users: BTreeMap<Minute, FxHashSet<(Sym, UserId)>>,
    /// Distinct users per IP and minute (this worker's), for the text threshold.
    ip_user_counts: BTreeMap<Minute, FxHashMap<Sym, u32>>,
    /// Texts sent, by the last minute of their period.
    texts: BTreeMap<Minute, FxHashSet<Sym>>,
}

/// A firing key has more than `limit` events over `window` minutes and `peers` workers, so some
/// worker saw at least `limit / (window × peers)` of them in one minute: sending the text from
/// that count on means every key that can fire has its text.
fn text_threshold(limit: i64, window: u32, peers: u32) -> i64 {
    (limit / (window as i64 * peers.max(1) as i64)).max(1)
}

impl KeyCounts {
    /// Takes up what the rules in effect need counted.
    pub fn set_rules(&mut self, rules: &[Arc<AlertRule>], peers: u32) {
        let mut kinds: FxHashMap<KeyKind, i64> = FxHashMap::default();
        let mut ip_users = None::<u32>;
        for rule in rules {
            let when = &rule.def.when;
            let window = when.key_window();
            let (first, threshold) = match when {
                Condition::Burst { limit, .. } | Condition::RateLimit { limit, .. } => {
                    (true, text_threshold(*limit, window, peers))
                }
                Condition::ClicksWithoutViews { min_clicks, .. } => (true, text_threshold(*min_clicks, window, peers)),
                Condition::SharedIp { min_users, .. } => {
                    let t = text_threshold(*min_users as i64, window, peers) as u32;
                    ip_users = Some(ip_users.map_or(t, |u| u.min(t)));
                    (false, 0)
                }
                _ => (false, 0),
            };
            for (i, kind) in when.key_kinds().into_iter().enumerate() {
                // Only the kind a rule reports keys of needs texts (not the page views of
                // clicks-without-views).
                let t = if first && i == 0 { threshold } else { i64::MAX };
                let entry = kinds.entry(kind).or_insert(t);
                *entry = (*entry).min(t);
            }
        }
        let mut kinds: Vec<(KeyKind, i64)> = kinds.into_iter().collect();
        kinds.sort();
        let text_minutes = rules.iter().map(|r| r.def.when.key_window()).max().unwrap_or(1).max(1);
        self.counting = Counting { kinds, ip_users, text_minutes };
    }

    /// Counts one event (texts of busy keys go to `out` at once).
    pub fn add(&mut self, e: &Admitted, minute: Minute, out: &mut Vec<(Cell, i64)>) {
        if self.counting.kinds.is_empty() && self.counting.ip_users.is_none() {
            return;
        }
        let ip = e.ip.as_ref().map(|(sym, text)| (*sym, text.as_str()));
        // The text covers the rules' whole window from this minute's period on.
        let span = self.counting.text_minutes;
        let text_minute = (minute / span + 1) * span - 1;
        let counts = self.counts.entry(minute).or_default();
        for (kind, threshold) in &self.counting.kinds {
            if kind.event != NONE && kind.event != e.event.name {
                continue;
            }
            let key = match kind.field {
                KeyField::Ip => ip,
                KeyField::User => Some((e.event.user, e.user_id.as_str())),
                // Device texts are names already (the read side falls back to them).
                KeyField::Device => (e.event.device != NONE).then_some((e.event.device, "")),
            };
            let Some((key, text)) = key else { continue };
            let count = counts.entry((*kind, key)).or_default();
            if count.pending == 0 {
                self.touched.push((*kind, key, minute));
            }
            count.pending += 1;
            // From the threshold on (a rule added later may lower it): once per period.
            if !count.text && *threshold != i64::MAX && !text.is_empty() && count.sent + count.pending >= *threshold {
                count.text = true;
                if self.texts.entry(text_minute).or_default().insert(key) {
                    out.push((Cell::KeyText { sym: key, text: text.to_string(), minute: text_minute }, 1));
                }
            }
        }
        if let (Some(threshold), Some((ip, text))) = (self.counting.ip_users, ip) {
            if self.ip_users.entry(minute).or_default().insert((ip, e.event.user)) {
                out.push((Cell::IpUser { minute, ip, user: e.event.user }, 1));
                let users = self.ip_user_counts.entry(minute).or_default().entry(ip).or_default();
                *users += 1;
                if *users >= threshold && self.texts.entry(text_minute).or_default().insert(ip) {
                    out.push((Cell::KeyText { sym: ip, text: text.to_string(), minute: text_minute }, 1));
                }
            }
        }
    }

    /// Sends this epoch's counts.
    pub fn flush(&mut self, out: &mut Vec<(Cell, i64)>) {
        for (kind, key, minute) in self.touched.drain(..) {
            let count = self.counts.get_mut(&minute).and_then(|keys| keys.get_mut(&(kind, key)));
            let count = count.expect("touched counts are kept");
            out.push((Cell::Keyed { kind, key, minute }, count.pending));
            count.sent += std::mem::take(&mut count.pending);
        }
    }

    /// Forgets minutes before `from` (the cells operator lets their cells go at the same floor).
    pub fn expire(&mut self, from: Minute) {
        self.counts = self.counts.split_off(&from);
        self.ip_users = self.ip_users.split_off(&from);
        self.ip_user_counts = self.ip_user_counts.split_off(&from);
        self.texts = self.texts.split_off(&from);
    }
}

#[cfg(test)]
mod tests {
    use super::text_threshold;

    #[test]
    fn a_key_over_its_limit_has_a_minute_at_the_text_threshold() {
        // 600 in 5 minutes over 2 workers: some worker-minute has more than 60.
        assert_eq!(text_threshold(600, 5, 2), 60);
        assert_eq!(text_threshold(3, 5, 2), 1);
    }
}
