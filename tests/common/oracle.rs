//! A from-scratch reference for every traffic view: plain loops over the accepted events, kept as
//! strings from the JSON, with no ledger, dataflow, tables or symbols. Tests compare the engine's
//! `Dump` with this one.

use std::collections::{BTreeMap, HashMap, HashSet};

use read::model::*;
use schema::ViewConfig;
use serde_json::Value;

pub struct Spec {
    pub lateness_ms: i64,
    pub views: ViewConfig,
    pub now_ms: i64,
}

pub struct Accepted {
    pub ts: i64,
    pub user: String,
    pub name: String,
    pub page: Option<String>,
    pub utm_source: String,
    pub device: String,
    pub country: String,
    pub partition: usize,
    pub ip: Option<String>,
    /// `props` values as text (`42`, `true`).
    pub props: BTreeMap<String, String>,
}

fn minute(ts: i64) -> i64 {
    ts.div_euclid(60_000)
}

fn text(v: &Value, field: &str) -> Option<String> {
    v.get(field).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
}

fn ts_of(v: &Value) -> i64 {
    match &v["ts"] {
        Value::Number(n) => n.as_i64().unwrap(),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis(),
        other => panic!("decoder accepted ts {other}"),
    }
}

/// The reference dump for partitions of raw records, each in arrival order, all of them idle.
pub fn dump(spec: &Spec, partitions: &[Vec<Vec<u8>>]) -> Dump {
    dump_behind(spec, partitions, spec.lateness_ms)
}

/// The same once the input is complete (a replayed file read to its end): nothing more can
/// arrive, so `as_of` is the newest event itself.
pub fn dump_complete(spec: &Spec, partitions: &[Vec<Vec<u8>>]) -> Dump {
    dump_behind(spec, partitions, 0)
}

/// `as_of` is `behind` ms before the most advanced partition's newest event.
fn dump_behind(spec: &Spec, partitions: &[Vec<Vec<u8>>], behind: i64) -> Dump {
    let mut accepted = Vec::new();
    let mut rejects: BTreeMap<String, i64> = BTreeMap::new();
    let mut heads: Vec<i64> = Vec::new();
    for (partition, records) in partitions.iter().enumerate() {
        let mut head: Option<i64> = None;
        let mut seen: HashMap<String, i64> = HashMap::new();
        for raw in records {
            // Validity is the decoder's job (tested on its own); the reference only reads fields.
            if let Err(r) = dataflow::decode::decode(raw, spec.now_ms) {
                *rejects.entry(r.reason.as_str().into()).or_default() += 1;
                continue;
            }
            let v: Value = serde_json::from_slice(raw).unwrap();
            let ts = ts_of(&v);
            let watermark = head.map(|h| h - spec.lateness_ms);
            if watermark.is_some_and(|wm| ts < wm) {
                *rejects.entry("too_late".into()).or_default() += 1;
                continue;
            }
            if let Some(id) = v.get("event_id").and_then(Value::as_str) {
                let remembered = seen.get(id).is_some_and(|m| watermark.is_none_or(|wm| *m >= minute(wm)));
                if remembered {
                    *rejects.entry("duplicate".into()).or_default() += 1;
                    continue;
                }
                seen.insert(id.to_string(), minute(ts));
            }
            head = Some(head.unwrap_or(i64::MIN).max(ts.min(spec.now_ms + 60_000)));
            let none = || "(none)".to_string();
            accepted.push(Accepted {
                ts,
                user: text(&v, "user_id").unwrap(),
                name: text(&v, "event").unwrap(),
                page: text(&v, "page"),
                utm_source: text(&v, "utm_source").unwrap_or_else(none),
                device: text(&v, "device").unwrap_or_else(none),
                country: text(&v, "country").unwrap_or_else(none),
                partition,
                ip: text(&v, "ip"),
                props: v
                    .get("props")
                    .and_then(Value::as_object)
                    .map(|o| {
                        o.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
        heads.extend(head);
    }
    let head = heads.iter().max().copied();
    let as_of = head.map(|_| heads.iter().map(|h| h - behind).max().unwrap());
    let mut dump = views_of(spec, &accepted, head, as_of, rejects);
    dump.funnels = super::funnel_oracle::dump(spec, &accepted, as_of);
    dump.paths = super::path_oracle::dump(spec, &accepted, as_of);
    dump.retention = super::retention_oracle::dump(spec, &accepted, as_of);
    dump
}

type Counts = BTreeMap<(&'static str, String), BTreeMap<i64, i64>>;

fn views_of(
    spec: &Spec,
    events: &[Accepted],
    head: Option<i64>,
    as_of: Option<i64>,
    rejects: BTreeMap<String, i64>,
) -> Dump {
    let cfg = &spec.views;
    let mut counts: Counts = BTreeMap::new();
    let mut users: BTreeMap<i64, HashSet<&str>> = BTreeMap::new();
    for e in events {
        let m = minute(e.ts);
        let mut add = |dim: &'static str, key: &str| {
            *counts.entry((dim, key.to_string())).or_default().entry(m).or_default() += 1
        };
        add("all", "(none)");
        add("event", &e.name);
        if let Some(p) = &e.page {
            add("page", p);
            if e.name == "page_view" {
                add("page_view", p);
            }
        }
        add("utm_source", &e.utm_source);
        add("device", &e.device);
        add("country", &e.country);
        // Funnel step matches per minute (what funnel-drop alerts watch).
        for f in &cfg.funnels {
            for (k, step) in f.steps.iter().enumerate() {
                if super::funnel_oracle::matches(step, e) {
                    add("step", &format!("{}#{}", f.name, k + 1));
                }
            }
        }
        users.entry(m).or_default().insert(&e.user);
    }
    let as_of_min = as_of.map(minute).unwrap_or(0);
    let back = |n: u32| (as_of_min + 1 - n as i64).max(0);
    let (counts_from, users_from, active_from) = (
        back(cfg.window_minutes),
        back(cfg.active_history_minutes + cfg.active_minutes),
        back(cfg.active_history_minutes),
    );
    let sum = |dim: &str, key: &str, lo: i64, hi: i64| -> i64 {
        counts
            .get(&(dim_static(dim), key.to_string()))
            .map(|s| s.range(lo.max(counts_from)..=hi).map(|(_, v)| v).sum())
            .unwrap_or(0)
    };
    let active = |m: i64| -> u64 {
        let lo = (m + 1 - cfg.active_minutes as i64).max(users_from).max(0);
        let mut set: HashSet<&str> = HashSet::new();
        for (_, u) in users.range(lo..=m) {
            set.extend(u.iter().copied());
        }
        set.len() as u64
    };
    let keys = |dim: &str| counts.keys().filter(move |(d, _)| *d == dim).map(|(_, k)| k.clone()).collect::<Vec<_>>();
    let rank = |dim: &str, lo: i64, hi: i64, n: usize| {
        let mut rows: Vec<KeyCount> = keys(dim)
            .into_iter()
            .map(|k| KeyCount { count: sum(dim, &k, lo, hi), key: k })
            .filter(|r| r.count != 0)
            .collect();
        rows.sort_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
        rows.truncate(n);
        rows
    };
    let clock = Clock {
        as_of: as_of.map(schema::time::rfc3339),
        as_of_ms: as_of,
        head: head.map(schema::time::rfc3339),
        head_ms: head,
        epoch: 0,
    };
    let mut live = Live {
        clock,
        active_users: 0,
        active_window_minutes: cfg.active_minutes,
        events_per_minute: 0,
        events_this_minute: 0,
        events_by_name: vec![],
        top_window_minutes: cfg.top_minutes,
        top_pages: vec![],
        trending_pages: vec![],
        breakdowns: BTreeMap::new(),
    };
    let mut active_users = Vec::new();
    if let Some(h) = head {
        let hm = minute(h);
        live.active_users = active(hm);
        live.events_this_minute = sum("all", "(none)", hm, hm);
        live.events_per_minute = sum("all", "(none)", hm - 1, hm - 1);
        if hm > counts_from {
            live.events_by_name = rank("event", hm - 1, hm - 1, usize::MAX);
        }
        let top_lo = hm + 1 - cfg.top_minutes as i64;
        live.top_pages = rank("page_view", top_lo, hm, cfg.top_n)
            .into_iter()
            .map(|r| PageCount { page: r.key, views: r.count })
            .collect();
        let base_hi = top_lo - 1;
        let base_lo = top_lo - cfg.trend_baseline_minutes as i64;
        let mut trending: Vec<(String, i64, i64)> = keys("page_view")
            .into_iter()
            .map(|p| (p.clone(), sum("page_view", &p, top_lo, hm), sum("page_view", &p, base_lo, base_hi)))
            .filter(|(_, recent, _)| *recent >= cfg.trend_min_views)
            .collect();
        trending.sort_by(|a, b| {
            (b.1 as i128 * a.2.max(1) as i128)
                .cmp(&(a.1 as i128 * b.2.max(1) as i128))
                .then(b.1.cmp(&a.1))
                .then(a.0.cmp(&b.0))
        });
        trending.truncate(cfg.top_n);
        let scale = cfg.trend_baseline_minutes as f64 / cfg.top_minutes as f64;
        live.trending_pages = trending
            .into_iter()
            .map(|(page, views, base)| TrendingPage {
                page,
                views,
                baseline_views: base,
                growth: views as f64 * scale / base.max(1) as f64,
            })
            .collect();
        for dim in ["utm_source", "device", "country"] {
            live.breakdowns.insert(dim.to_string(), rank(dim, top_lo, hm, cfg.top_n));
        }
        if let Some(first) = users.range(users_from..).next().map(|(m, _)| *m) {
            for m in first.max(active_from)..=hm {
                active_users.push(ActiveUsersPoint { minute_ms: m * 60_000, users: active(m) });
            }
        }
    }
    let mut dump_counts: BTreeMap<String, BTreeMap<String, BTreeMap<i64, i64>>> = BTreeMap::new();
    for ((dim, key), series) in &counts {
        let cells: BTreeMap<i64, i64> = series.range(counts_from..).map(|(m, v)| (m * 60_000, *v)).collect();
        if !cells.is_empty() {
            dump_counts.entry(dim.to_string()).or_default().insert(key.clone(), cells);
        }
    }
    Dump {
        live,
        accepted: events.len() as i64,
        rejects: Rejects { total: rejects.values().sum(), by_reason: rejects },
        counts: dump_counts,
        active_users,
        sessions: super::session_oracle::dump(cfg, events, head, as_of),
        funnels: BTreeMap::new(),
        retention: BTreeMap::new(),
        paths: Vec::new(),
    }
}

fn dim_static(dim: &str) -> &'static str {
    ["all", "event", "page", "page_view", "utm_source", "device", "country", "step"]
        .into_iter()
        .find(|d| *d == dim)
        .unwrap()
}

/// The engine's dump with the fields that legitimately differ (the epoch) normalised.
pub fn comparable(mut dump: Dump) -> Dump {
    dump.live.clock.epoch = 0;
    dump
}
