//! Per-key counts for the per-key alert rules and rate limits: events per (kind, key, minute) and
//! `(ip, user)` pairs, as symbols. A key's text goes into the dataflow only from a minute in which
//! this worker saw it often enough that a rule could fire on it: texts for every key would cost
//! more than the counts (a string per event).

use std::collections::BTreeMap;

use differential_dataflow::input::InputSession;
use rustc_hash::{FxHashMap, FxHashSet};
use schema::alert_rules::{AlertRule, Condition, KeyField, KeyKind};
use schema::event::{sym, Minute, Sym, UserId, NONE};
use schema::{Epoch, Fact};
use serde::{Deserialize, Serialize};

use crate::decode::Decoded;

/// What this worker has put into the dataflow for the per-key rules, by minute.
#[derive(Default, Serialize, Deserialize)]
pub struct KeyLedger {
    pub counts: BTreeMap<Minute, FxHashMap<(KeyKind, Sym), i64>>,
    pub ip_users: BTreeMap<Minute, FxHashSet<(Sym, UserId)>>,
    /// Distinct users per IP and minute (this worker's), for the text threshold.
    pub ip_user_counts: BTreeMap<Minute, FxHashMap<Sym, u32>>,
    pub texts: BTreeMap<Minute, FxHashMap<Sym, String>>,
}

/// What the current rules need counted.
#[derive(Default)]
struct Counting {
    version: u64,
    /// Kinds counted, with the per-minute count at which a key's text is sent.
    kinds: Vec<(KeyKind, i64)>,
    /// Distinct users of one IP in one minute at which its text is sent; `None`: not counted.
    ip_users: Option<u32>,
    /// Minutes of counts kept behind `as_of`.
    window: u32,
}

#[derive(Default)]
pub struct KeyCounts {
    counting: Counting,
    counts: FxHashMap<(KeyKind, Sym, Minute), i64>,
    new_ip_users: Vec<(Minute, Sym, UserId)>,
    new_texts: Vec<(Sym, String, Minute)>,
}

/// A firing key has more than `limit` events over `window` minutes and `peers` workers, so some
/// worker saw at least `limit / (window × peers)` of them in one minute: sending the text from
/// that count on means every key that can fire has its text.
fn text_threshold(limit: i64, window: u32, peers: u32) -> i64 {
    (limit / (window as i64 * peers.max(1) as i64)).max(1)
}

impl KeyCounts {
    /// Takes up what new or changed rules need counted (`version`: the registry's).
    pub fn refresh(&mut self, version: u64, rules: &[std::sync::Arc<AlertRule>], peers: u32) {
        if version == self.counting.version && version != 0 {
            return;
        }
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
        let window = rules.iter().map(|r| r.def.when.key_window()).max().unwrap_or(0);
        self.counting = Counting { version, kinds, ip_users, window };
    }

    /// Counts one admitted event.
    pub fn add(&mut self, ledger: &mut KeyLedger, d: &Decoded<'_>, minute: Minute) {
        if self.counting.kinds.is_empty() && self.counting.ip_users.is_none() {
            return;
        }
        let e = &d.event;
        let ip = d.ip.as_deref().map(|text| (sym(text), text));
        for (kind, threshold) in &self.counting.kinds {
            if kind.event != NONE && kind.event != e.name {
                continue;
            }
            let key = match kind.field {
                KeyField::Ip => ip,
                KeyField::User => Some((e.user, d.user_id.as_ref())),
                KeyField::Device => d.device.as_deref().map(|t| (e.device, t)),
            };
            let Some((key, text)) = key else { continue };
            let pending = self.counts.entry((*kind, key, minute)).or_default();
            *pending += 1;
            if *threshold == i64::MAX {
                continue;
            }
            let sent = ledger.counts.get(&minute).and_then(|c| c.get(&(*kind, key))).copied().unwrap_or(0);
            // From the threshold on (a rule added later may lower it): once per minute.
            if sent + *pending >= *threshold {
                text_once(ledger, &mut self.new_texts, key, text, minute);
            }
        }
        if let (Some(threshold), Some((ip, text))) = (self.counting.ip_users, ip) {
            if ledger.ip_users.entry(minute).or_default().insert((ip, e.user)) {
                self.new_ip_users.push((minute, ip, e.user));
                let users = ledger.ip_user_counts.entry(minute).or_default().entry(ip).or_default();
                *users += 1;
                if *users >= threshold {
                    text_once(ledger, &mut self.new_texts, ip, text, minute);
                }
            }
        }
    }

    /// Sends this epoch's counts, pairs and texts.
    pub fn flush(&mut self, ledger: &mut KeyLedger, input: &mut InputSession<Epoch, Fact, isize>) {
        for ((kind, key, minute), n) in self.counts.drain() {
            input.update(Fact::Keyed { kind, key, minute }, n as isize);
            *ledger.counts.entry(minute).or_default().entry((kind, key)).or_default() += n;
        }
        for (minute, ip, user) in self.new_ip_users.drain(..) {
            input.update(Fact::IpUser { minute, ip, user }, 1);
        }
        for (sym, text, minute) in self.new_texts.drain(..) {
            input.update(Fact::KeyText { sym, text, minute }, 1);
        }
    }

    /// Retracts minutes the per-key rules no longer read: they read their window behind the
    /// bucket being judged, which `as_of` has passed.
    pub fn expire(&self, ledger: &mut KeyLedger, input: &mut InputSession<Epoch, Fact, isize>, as_of_minute: Minute) {
        let from = (as_of_minute + 1).saturating_sub(self.counting.window + 2);
        let kept = ledger.counts.split_off(&from);
        for (minute, cells) in std::mem::replace(&mut ledger.counts, kept) {
            for ((kind, key), n) in cells {
                input.update(Fact::Keyed { kind, key, minute }, -(n as isize));
            }
        }
        let kept = ledger.ip_users.split_off(&from);
        for (minute, pairs) in std::mem::replace(&mut ledger.ip_users, kept) {
            for (ip, user) in pairs {
                input.update(Fact::IpUser { minute, ip, user }, -1);
            }
        }
        ledger.ip_user_counts = ledger.ip_user_counts.split_off(&from);
        let kept = ledger.texts.split_off(&from);
        for (minute, texts) in std::mem::replace(&mut ledger.texts, kept) {
            for (sym, text) in texts {
                input.update(Fact::KeyText { sym, text, minute }, -1);
            }
        }
    }
}

/// Sends a key's text once per minute.
fn text_once(ledger: &mut KeyLedger, out: &mut Vec<(Sym, String, Minute)>, key: Sym, text: &str, minute: Minute) {
    let texts = ledger.texts.entry(minute).or_default();
    if let std::collections::hash_map::Entry::Vacant(e) = texts.entry(key) {
        e.insert(text.to_string());
        out.push((key, text.to_string(), minute));
    }
}

/// Re-inserts a recovered ledger's facts (at the current input time).
pub fn restore(ledger: &KeyLedger, input: &mut InputSession<Epoch, Fact, isize>) {
    for (minute, cells) in &ledger.counts {
        for ((kind, key), n) in cells {
            input.update(Fact::Keyed { kind: *kind, key: *key, minute: *minute }, *n as isize);
        }
    }
    for (minute, pairs) in &ledger.ip_users {
        for (ip, user) in pairs {
            input.update(Fact::IpUser { minute: *minute, ip: *ip, user: *user }, 1);
        }
    }
    for (minute, texts) in &ledger.texts {
        for (sym, text) in texts {
            input.update(Fact::KeyText { sym: *sym, text: text.clone(), minute: *minute }, 1);
        }
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
