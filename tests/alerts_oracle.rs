//! Alerts equal a from-scratch evaluation (`common/alert_oracle.rs`) of the same rules over the
//! same events: random streams with bursts, lulls, busy IPs and failing purchases, delivered out
//! of order in random batches to 1-2 workers, compared after every batch. Every rule kind that
//! reads counts is here: anomaly (MAD and EWMA, one key and each key), threshold (absolute and
//! relative), funnel drop, burst, rate limit, clicks without views, shared IP.

mod common;

use std::collections::BTreeMap;

use common::alert_oracle::{self, Fired, Settings};
use common::oracle::Accepted;
use common::{small_windows, Harness};
use proptest::prelude::*;
use schema::alert_rules::{AlertConfig, AlertRuleDef};

const LATENESS: i64 = 3 * 60_000;
/// Short enough that incidents both reopen and open anew within a stream.
const HOLD_OFF: i64 = 6;
/// Two hours ago, on a minute: the streams end in the past.
static BASE: std::sync::LazyLock<i64> =
    std::sync::LazyLock::new(|| (chrono::Utc::now().timestamp_millis() / 60_000 - 120) * 60_000);

fn rules() -> Vec<AlertRuleDef> {
    serde_json::from_value(serde_json::json!([
        {"name": "all_mad", "when": {"kind": "anomaly", "series": {"metric": "events"},
            "window_minutes": 10, "smooth": 2, "sensitivity": 2.5, "min_baseline": 3.0}},
        {"name": "pages_ewma", "fire_after": 1, "when": {"kind": "anomaly", "detector": "ewma", "direction": "up",
            "series": {"metric": "events", "dim": "page_view", "key": "*"},
            "window_minutes": 8, "smooth": 1, "sensitivity": 2.0, "min_baseline": 2.0}},
        // A lookback as long as the 30-minute window: baselines of new keys come from what the
        // tables still hold, whatever the batching.
        {"name": "pages_long", "when": {"kind": "anomaly", "direction": "up",
            "series": {"metric": "events", "dim": "page", "key": "*"},
            "window_minutes": 24, "smooth": 3, "sensitivity": 2.0, "min_baseline": 3.0}},
        {"name": "clicks_above", "when": {"kind": "threshold", "series": {"metric": "events", "dim": "event", "key": "click"},
            "above": 4.0, "smooth": 1}},
        {"name": "relative_drop", "when": {"kind": "threshold", "series": {"metric": "events"},
            "below": 0.5, "relative": true, "relative_minutes": 10, "smooth": 2, "min_baseline": 3.0}},
        {"name": "checkout_drop", "when": {"kind": "funnel_drop", "funnel": "shop",
            "window_minutes": 5, "floor": 40.0, "drop": 0.3, "baseline_minutes": 10, "min_entries": 3.0}},
        {"name": "ip_burst", "when": {"kind": "burst", "key": "ip", "window_minutes": 3, "limit": 8}},
        {"name": "user_views", "resolve_after": 1, "when": {"kind": "rate_limit", "key": "user", "event": "page_view",
            "window_minutes": 2, "limit": 3}},
        {"name": "blind_clicks", "when": {"kind": "clicks_without_views", "window_minutes": 4, "min_clicks": 2}},
        {"name": "shared", "when": {"kind": "shared_ip", "window_minutes": 5, "min_users": 3}}
    ]))
    .unwrap()
}

fn views() -> schema::ViewConfig {
    let mut views = small_windows();
    views.funnels.push(
        serde_json::from_value(serde_json::json!({"name": "shop", "window_minutes": 30,
            "steps": [{"event": "page_view"}, {"event": "add_to_cart"}, {"event": "purchase"}]}))
        .unwrap(),
    );
    views.alerts = AlertConfig {
        builtin: false,
        fire_after: 2,
        resolve_after: 2,
        hold_off_minutes: HOLD_OFF as u32,
        rules: rules(),
        ..AlertConfig::default()
    };
    views
}

/// `(minute, second, user, event, page, ip, delay_s)`.
type Ev = (i64, i64, u8, u8, u8, u8, i64);

/// Minutes with a traffic level each (quiet, normal, burst), so anomalies come and go.
fn stream() -> impl Strategy<Value = (Vec<Ev>, Vec<usize>)> {
    let levels =
        proptest::collection::vec(prop_oneof![2 => Just(1usize), 5 => Just(4usize), 1 => Just(14usize)], 40..70);
    (levels, proptest::collection::vec(any::<u64>(), 1), proptest::collection::vec(0usize..2000, 0..6)).prop_map(
        |(levels, seed, cuts)| {
            let mut next = common::xorshift(seed[0]);
            let mut events = Vec::new();
            for (minute, level) in levels.iter().enumerate() {
                for _ in 0..*level {
                    let (user, name) = (next(12) as u8, next(10) as u8);
                    let page = next(4) as u8;
                    // A few IPs: users share them, and one busy IP bursts.
                    let ip = if *level > 10 && next(2) == 0 { 9 } else { user % 4 };
                    let delay = if next(4) == 0 { next(150) as i64 } else { 0 };
                    events.push((minute as i64, next(60) as i64, user, name, page, ip, delay));
                }
            }
            let n = events.len();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(n)).collect();
            cuts.sort();
            (events, cuts)
        },
    )
}

fn name(n: u8) -> &'static str {
    // Purchases are rarer than carts, which are rarer than views: the funnel has a conversion.
    [
        "page_view",
        "page_view",
        "page_view",
        "click",
        "click",
        "add_to_cart",
        "add_to_cart",
        "purchase",
        "page_view",
        "click",
    ][n as usize]
}

fn ts((minute, second, ..): &Ev) -> i64 {
    *BASE + minute * 60_000 + second * 1000
}

const PAGES: [&str; 4] = ["/", "/a", "/b", "/products/1"];

fn line(e: &Ev) -> Vec<u8> {
    let (_, _, user, n, page, ip, _) = e;
    let page = PAGES[*page as usize];
    serde_json::to_vec(&serde_json::json!({
        "user_id": format!("u{user}"), "event": name(*n), "ts": ts(e), "page": page, "ip": format!("10.0.0.{ip}"),
    }))
    .unwrap()
}

fn accepted(e: &Ev) -> Accepted {
    let (_, _, user, n, page, ip, _) = e;
    Accepted {
        ts: ts(e),
        user: format!("u{user}"),
        name: name(*n).into(),
        page: Some(PAGES[*page as usize].into()),
        utm_source: "(none)".into(),
        device: "(none)".into(),
        country: "(none)".into(),
        partition: 0,
        ip: Some(format!("10.0.0.{ip}")),
        props: BTreeMap::new(),
    }
}

fn engine_alerts(harness: &Harness) -> Fired {
    let (_, history) = harness.alerting.history();
    history.into_iter().map(|a| (a.id, a.started_ms, a.fired_ms, a.resolved_ms, a.rules, a.reopened)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn alerts_equal_a_from_scratch_evaluation((events, cuts) in stream(), workers in 1usize..3) {
        // Delivery order: by time, some events late (within the lateness: all are accepted).
        let mut delivered: Vec<&Ev> = events.iter().collect();
        delivered.sort_by_key(|e| ts(e) + e.6 * 1000);
        let lines: Vec<Vec<u8>> = delivered.iter().map(|e| line(e)).collect();
        let settings = Settings { fire_after: 2, resolve_after: 2, lateness_ms: LATENESS, hold_off_minutes: HOLD_OFF };
        let views = views();
        let mut harness = Harness::start(workers, LATENESS, views.clone());
        let mut start = 0;
        let mut total = Fired::new();
        for end in cuts.into_iter().chain(std::iter::once(lines.len())) {
            if end < start {
                continue;
            }
            harness.push(lines[start..end].to_vec());
            start = end;
            let dump = harness.settle();
            prop_assert_eq!(dump.rejects.total, 0, "the streams stay within the lateness");
            let so_far: Vec<Accepted> = delivered[..end].iter().map(|e| accepted(e)).collect();
            let expected = alert_oracle::alerts(&so_far, &views.alerts.rules, &views.funnels, &settings);
            prop_assert_eq!(engine_alerts(&harness), expected.clone(), "after {} records", end);
            total = expected;
        }
        // The streams are meant to exercise the rules: guard the generator on long ones.
        if events.len() > 300 {
            let rules_fired: std::collections::BTreeSet<&str> =
                total.iter().map(|(id, ..)| id.split(':').next().unwrap()).collect();
            prop_assert!(rules_fired.len() >= 4, "only {:?} fired", rules_fired);
        }
    }
}
