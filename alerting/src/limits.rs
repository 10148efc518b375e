//! Rate limits as a query: is this key over its limit now, and until when? Answered from the
//! newest counts (up to the head, not only what `as_of` has made final), so a gateway learns of a
//! burst within a second; windows are whole event-time minutes.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::series::{keyed_in, keyed_sum};
use read::model::Clock;
use read::tables::Tables;
use schema::alert_rules::{AlertRule, Condition, KeyKind};
use schema::event::{minute_of, minute_start_ms, Minute, Sym};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LimitStatus {
    pub rule: String,
    pub key: String,
    pub limit: i64,
    pub window_minutes: u32,
    /// Events in the window ending at the head minute.
    pub count: i64,
    pub over: bool,
    /// When the window will be back at or under the limit if no more events come (RFC 3339 ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<i64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LimitList {
    #[serde(flatten)]
    pub clock: Clock,
    pub rule: String,
    pub limit: i64,
    pub window_minutes: u32,
    /// Keys over the limit, most events first.
    pub over: Vec<LimitStatus>,
}

/// `(kind, window, limit)` of a rate-limit rule.
pub fn limit_of(rule: &AlertRule) -> Option<(KeyKind, u32, i64)> {
    match &rule.def.when {
        Condition::RateLimit { window_minutes, limit, .. } => {
            Some((rule.def.when.key_kinds()[0], *window_minutes, *limit))
        }
        _ => None,
    }
}

fn head_minute(tables: &Tables) -> Option<Minute> {
    tables.clock().0.map(minute_of)
}

/// The status of one key (a key with no events is under its limit).
pub fn status(tables: &Tables, rule: &AlertRule, key: &str) -> Option<LimitStatus> {
    let kind = limit_of(rule)?.0;
    status_of(tables, rule, kind.field.sym(key), key.to_string())
}

fn status_of(tables: &Tables, rule: &AlertRule, sym: Sym, key: String) -> Option<LimitStatus> {
    let (kind, window, limit) = limit_of(rule)?;
    let head = head_minute(tables).unwrap_or(0);
    let lo = (head + 1).saturating_sub(window);
    let count = keyed_sum(tables, kind, sym, lo, head);
    let mut until_ms = None;
    if count > limit {
        // Slide the window forward over empty minutes until enough old ones have left it.
        let mut remaining = count;
        for m in head + 1..=head + window {
            remaining -= keyed_sum(tables, kind, sym, m - window, m - window);
            if remaining <= limit {
                until_ms = Some(minute_start_ms(m));
                break;
            }
        }
    }
    Some(LimitStatus {
        rule: rule.name().to_string(),
        key,
        limit,
        window_minutes: window,
        count,
        over: count > limit,
        until_ms,
    })
}

/// Every key over the rule's limit now.
pub fn over(tables: &Tables, rule: &AlertRule, clock: Clock) -> Option<LimitList> {
    let (kind, window, limit) = limit_of(rule)?;
    let head = head_minute(tables).unwrap_or(0);
    let lo = (head + 1).saturating_sub(window);
    let keys: BTreeSet<Sym> = (lo..=head).flat_map(|m| keyed_in(tables, kind, m)).copied().collect();
    let mut over: Vec<LimitStatus> =
        keys.into_iter().filter_map(|k| status_of(tables, rule, k, tables.key_text(k))).filter(|s| s.over).collect();
    over.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    Some(LimitList { clock, rule: rule.name().to_string(), limit, window_minutes: window, over })
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::alert_rules::{AlertRuleDef, KeyField};
    use schema::cells::Cell;

    #[test]
    fn over_until_the_oldest_minutes_leave_the_window() {
        let def: AlertRuleDef = serde_json::from_value(serde_json::json!(
            {"name": "rl", "when": {"kind": "rate_limit", "key": "ip", "window_minutes": 3, "limit": 10}}))
        .unwrap();
        let rule = AlertRule::new(def).unwrap();
        let kind = KeyKind { field: KeyField::Ip, event: schema::event::NONE };
        let mut t = Tables::default();
        let at = |m: Minute| Cell::Clock { head: Some(minute_start_ms(m) + 5_000), as_of: Some(0), ready: true };
        t.apply(at(102), 1);
        let ip = schema::event::sym("1.2.3.4");
        t.apply(Cell::KeyText { sym: ip, text: "1.2.3.4".into(), minute: 100 }, 1);
        for (minute, n) in [(100, 6), (101, 4), (102, 3)] {
            t.apply(Cell::Keyed { kind, key: ip, minute }, n);
        }
        let s = status(&t, &rule, "1.2.3.4").unwrap();
        // 13 > 10; minute 100 leaves at 103 (7 left <= 10).
        assert_eq!((s.count, s.over, s.until_ms), (13, true, Some(minute_start_ms(103))));
        assert_eq!(over(&t, &rule, read::query::clock(&t)).unwrap().over.len(), 1);
        let quiet = status(&t, &rule, "5.6.7.8").unwrap();
        assert_eq!((quiet.count, quiet.over, quiet.until_ms), (0, false, None));
    }
}
