//! The numbers alert rules read from one snapshot of the tables: series values per bucket, and
//! per-key counts over a window.

use std::collections::BTreeSet;

use read::tables::Tables;
use schema::alert_rules::{AlertRule, Condition, KeyField, KeyKind, Metric, SeriesDef};
use schema::cells::Dim;
use schema::event::{sym, Minute, Sym, NONE, NONE_TEXT};
use schema::ids::IdSet;
use schema::sessions::{SessionStat, BREAKDOWNS};

/// The symbol of a funnel step's match count in [`Dim::Step`] (`step` is 1-based).
pub fn step_sym(funnel: &str, step: usize) -> Sym {
    sym(&format!("{funnel}#{step}"))
}

/// Which key(s) of its dimension a series rule watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keys {
    One(Sym),
    Each,
}

pub fn keys_of(series: &SeriesDef, dim: Dim) -> Keys {
    match (dim, series.key.as_deref()) {
        (Dim::All, _) => Keys::One(NONE),
        (_, None | Some("*")) => Keys::Each,
        (_, Some(NONE_TEXT)) => Keys::One(NONE),
        (_, Some(text)) => Keys::One(sym(text)),
    }
}

/// Whether a series is a rate (numerator / denominator) rather than a count.
pub fn is_rate(metric: Metric) -> bool {
    matches!(metric, Metric::BounceRate | Metric::FunnelConversion)
}

/// `(numerator, denominator)` of one bucket (a count has denominator 1).
pub fn bucket_value(tables: &Tables, rule: &AlertRule, series: &SeriesDef, key: Sym, bucket: u32) -> (f64, f64) {
    let count = |dim: Dim, key: Sym, minute: Minute| {
        tables.series(dim, key).and_then(|s| s.get(&minute)).copied().unwrap_or(0) as f64
    };
    match series.metric {
        Metric::Events => (count(rule.dim, key, bucket), 1.0),
        Metric::FunnelConversion => {
            let (funnel, step) = (series.funnel.as_deref().unwrap_or(""), series.step.unwrap_or(2) as usize);
            let num = count(Dim::Step, step_sym(funnel, step), bucket);
            (100.0 * num, count(Dim::Step, step_sym(funnel, step - 1), bucket))
        }
        Metric::Sessions | Metric::Bounces | Metric::BounceRate => {
            let index = BREAKDOWNS.iter().find(|(d, _)| *d == rule.dim).map(|(_, i)| *i);
            let (mut sessions, mut bounces) = (0.0, 0.0);
            for (source, hours) in &tables.sessions {
                if index.is_some_and(|i| source[i] != key) {
                    continue;
                }
                if let Some(cells) = hours.get(&bucket) {
                    sessions += cells.get(&SessionStat::Sessions).copied().unwrap_or(0) as f64;
                    bounces += cells.get(&SessionStat::Bounces).copied().unwrap_or(0) as f64;
                }
            }
            match series.metric {
                Metric::Sessions => (sessions, 1.0),
                Metric::Bounces => (bounces, 1.0),
                _ => (100.0 * bounces, sessions),
            }
        }
    }
}

/// The keys a `*` series has in the tables (sorted, so evaluation order is deterministic).
pub fn each_key(tables: &Tables, rule: &AlertRule, series: &SeriesDef) -> Vec<Sym> {
    let keys: BTreeSet<Sym> = match series.metric {
        Metric::Events => tables.dimension(rule.dim).map(|(k, _)| k).collect(),
        Metric::FunnelConversion => [NONE].into(),
        _ => match BREAKDOWNS.iter().find(|(d, _)| *d == rule.dim) {
            Some((_, i)) => tables.sessions.keys().map(|source| source[*i]).collect(),
            None => [NONE].into(),
        },
    };
    keys.into_iter().collect()
}

/// Events of `kind` by `key` in minutes `lo..=hi`.
pub fn keyed_sum(tables: &Tables, kind: KeyKind, key: Sym, lo: Minute, hi: Minute) -> i64 {
    if lo > hi {
        return 0;
    }
    tables.keyed.range(lo..=hi).filter_map(|(_, keys)| keys.get(&(kind, key))).sum()
}

/// Keys of `kind` with events in `minute`.
pub fn keyed_in(tables: &Tables, kind: KeyKind, minute: Minute) -> impl Iterator<Item = &Sym> {
    tables.keyed.get(&minute).into_iter().flatten().filter(move |((k, _), _)| *k == kind).map(|((_, key), _)| key)
}

/// Distinct users of `ip` in minutes `lo..=hi`.
pub fn ip_user_count(tables: &Tables, ip: Sym, lo: Minute, hi: Minute) -> u64 {
    if lo > hi {
        return 0;
    }
    let mut users = IdSet::default();
    for (_, ips) in tables.ip_users.range(lo..=hi) {
        if let Some(in_minute) = ips.get(&ip) {
            users.extend(in_minute.keys().copied());
        }
    }
    users.len() as u64
}

/// Users of `ip` summed over minutes `lo..=hi`: at least [`ip_user_count`], and cheap.
pub fn ip_user_bound(tables: &Tables, ip: Sym, lo: Minute, hi: Minute) -> u64 {
    if lo > hi {
        return 0;
    }
    tables.ip_users.range(lo..=hi).filter_map(|(_, ips)| ips.get(&ip)).map(|users| users.len() as u64).sum()
}

pub fn ips_in(tables: &Tables, minute: Minute) -> impl Iterator<Item = &Sym> {
    tables.ip_users.get(&minute).into_iter().flat_map(|ips| ips.keys())
}

/// The kind a per-key rule counts first (its candidates), for rules that count keys.
pub fn primary_kind(when: &Condition) -> Option<KeyKind> {
    when.key_kinds().into_iter().next()
}

/// Label name of a rule's key: the key field, or the series' dimension.
pub fn key_label(rule: &AlertRule) -> &'static str {
    match &rule.def.when {
        Condition::Burst { key, .. } | Condition::RateLimit { key, .. } => key.as_str(),
        Condition::ClicksWithoutViews { .. } => KeyField::User.as_str(),
        Condition::SharedIp { .. } => KeyField::Ip.as_str(),
        _ => rule.dim.as_str(),
    }
}
