//! The alert engine's lifecycle on hand-made tables: hourly series that settle, hysteresis,
//! resolves and silences.
use super::*;
use schema::alert_rules::{AlertRuleDef, Severity};
use schema::cells::Cell;
use schema::event::{sym, NONE};
use schema::sessions::SessionStat;

fn rule(json: serde_json::Value) -> AlertRegistry {
    let def: AlertRuleDef = serde_json::from_value(json).unwrap();
    AlertRegistry::new(&[def]).unwrap()
}

/// Sessions per hour with `bounces` of `sessions` bounced, from `utm_source`.
fn hour(t: &mut Tables, h: u32, source: &str, sessions: i64, bounces: i64) {
    let src = [sym(source), NONE, NONE];
    t.apply(Cell::Session { hour: h, source: src, stat: SessionStat::Sessions }, sessions);
    t.apply(Cell::Session { hour: h, source: src, stat: SessionStat::Bounces }, bounces);
    t.apply(Cell::Count { dim: Dim::All, key: NONE, minute: h * 60 }, 1);
}

#[test]
fn an_hourly_rate_is_judged_once_its_sessions_have_settled_with_hysteresis() {
    let registry = rule(serde_json::json!({"name": "bouncy", "fire_after": 2, "resolve_after": 1,
        "when": {"kind": "threshold", "series": {"metric": "bounce_rate", "dim": "utm_source", "key": "ads"},
                 "above": 50.0, "smooth": 1, "min_baseline": 10.0}}));
    let funnels = FunnelRegistry::default();
    let mut t = Tables::default();
    // Hours 100..104: ads bounce 20%, 80%, 90%, 30%, 85%; other sources never matter.
    for (h, bounced) in [(100, 4), (101, 16), (102, 18), (103, 6), (104, 17)] {
        hour(&mut t, h, "ads", 20, bounced);
        hour(&mut t, h, "mail", 20, 20);
    }
    let mut engine = AlertEngine::new(AlertConfig::default(), 30, 1440);
    let hour_ms = 3_600_000;
    // Hour 102 ends at 103 h, but its sessions settle 30 minutes later.
    engine.evaluate(&t, &registry, &funnels, 103 * hour_ms + 29 * 60_000, 0);
    assert!(engine.active(0).is_empty(), "hour 102 is not final yet: one bad hour only");
    engine.evaluate(&t, &registry, &funnels, 103 * hour_ms + 30 * 60_000, 0);
    let firing = engine.active(0);
    assert_eq!(firing.len(), 1);
    let a = &firing[0];
    // One watched key: the rule is the id.
    assert_eq!((a.id.as_str(), a.started_ms, a.fired_ms), ("bouncy", 101 * hour_ms, 103 * hour_ms));
    assert_eq!(a.value, 90.0);
    assert_eq!(a.labels.get("rule").map(String::as_str), Some("bouncy"));
    // Hour 103 is good: resolved after one; hour 104 is bad again: a new run, not yet fired.
    engine.evaluate(&t, &registry, &funnels, 105 * hour_ms + 30 * 60_000, 0);
    assert!(engine.active(0).is_empty());
    let history = engine.history(0);
    assert_eq!(history.len(), 1);
    assert_eq!((history[0].ended_ms, history[0].resolved_ms), (Some(103 * hour_ms), Some(104 * hour_ms)));
    let changes = engine.take_changes();
    assert_eq!(changes.iter().map(|c| c.action).collect::<Vec<_>>(), [AlertState::Firing, AlertState::Resolved]);
}

#[test]
fn value_baseline_and_summary_describe_the_same_bucket_while_an_alert_recovers() {
    let registry = rule(serde_json::json!({"name": "bouncy", "fire_after": 2, "resolve_after": 2,
        "when": {"kind": "threshold", "series": {"metric": "bounce_rate", "dim": "utm_source", "key": "ads"},
                 "above": 50.0, "smooth": 1, "min_baseline": 10.0}}));
    let funnels = FunnelRegistry::default();
    let mut t = Tables::default();
    // Hours 101, 102 bad (80%, 90%): fires; hour 103 good (30%): firing still, recovering.
    for (h, bounced) in [(100, 4), (101, 16), (102, 18), (103, 6)] {
        hour(&mut t, h, "ads", 20, bounced);
    }
    let mut engine = AlertEngine::new(AlertConfig::default(), 30, 1440);
    let hour_ms = 3_600_000;
    engine.evaluate(&t, &registry, &funnels, 103 * hour_ms + 30 * 60_000, 0);
    let a = &engine.active(0)[0];
    assert_eq!((a.value, a.summary.as_str()), (90.0, "90.0"));
    engine.evaluate(&t, &registry, &funnels, 104 * hour_ms + 30 * 60_000, 0);
    let a = &engine.active(0)[0];
    assert_eq!((a.value, a.summary.as_str()), (30.0, "30.0"), "the good bucket, in numbers and in words");
}

#[test]
fn a_silence_marks_alerts_of_its_rule_until_it_expires() {
    let mut engine = AlertEngine::new(AlertConfig::default(), 30, 1440);
    let alert = Alert {
        id: "r:k".into(),
        rule: "r".into(),
        rules: vec!["r".into()],
        key: Some("k".into()),
        severity: Severity::Warning,
        labels: BTreeMap::new(),
        state: AlertState::Firing,
        value: 1.0,
        baseline: None,
        summary: String::new(),
        started_ms: 0,
        fired_ms: 0,
        ended_ms: None,
        resolved_ms: None,
        reopened: 0,
        reopened_ms: None,
        link: String::new(),
        silenced: false,
    };
    engine.incidents.fire("series", alert);
    let s = engine.silence("r".into(), 1_000, None);
    assert!(engine.active(999)[0].silenced);
    assert!(!engine.active(1_000)[0].silenced, "expired");
    assert!(engine.unsilence(s.id));
    assert!(!engine.active(0)[0].silenced);
}

#[test]
fn bucket_values_hold_a_run_read_in_any_order_and_forget_what_is_behind() {
    let mut v = BucketValues::default();
    assert!(v.is_empty() && v.get(5).is_none());
    v.insert(10, (1.0, 0.0));
    v.insert(7, (2.0, 0.0));
    v.insert(12, (3.0, 1.0));
    assert_eq!(
        (v.get(7), v.get(8), v.get(10), v.get(12), v.get(13)),
        (Some((2.0, 0.0)), None, Some((1.0, 0.0)), Some((3.0, 1.0)), None)
    );
    v.keep_from(10);
    assert_eq!((v.get(7), v.get(10)), (None, Some((1.0, 0.0))));
    v.keep_from(13);
    assert!(v.is_empty());
    v.insert(40, (4.0, 0.0));
    assert_eq!((v.get(12), v.get(40)), (None, Some((4.0, 0.0))));
}

/// Per-minute thresholds named `names` on `series` (JSON), firing after 1 bad minute and
/// resolving after 1 good one.
fn thresholds(rules: &[(&str, serde_json::Value, &str)]) -> AlertRegistry {
    let defs: Vec<schema::alert_rules::AlertRuleDef> = rules
        .iter()
        .map(|(name, series, severity)| {
            serde_json::from_value(serde_json::json!({"name": name, "fire_after": 1, "resolve_after": 1,
                "severity": severity,
                "when": {"kind": "threshold", "series": series, "above": 5.0, "smooth": 1}}))
            .unwrap()
        })
        .collect();
    AlertRegistry::new(&defs).unwrap()
}

/// Events per minute, all of them clicks.
fn clicks(t: &mut Tables, minutes: &[(u32, i64)]) {
    for (minute, events) in minutes {
        t.apply(Cell::Count { dim: Dim::All, key: NONE, minute: *minute }, *events);
        t.apply(Cell::Count { dim: Dim::Event, key: sym("click"), minute: *minute }, *events);
    }
}

#[test]
fn the_history_keeps_the_newest_alerts_by_firing_time_however_the_rules_were_judged() {
    // Two rules on two series: `a` is listed before `b`, and one evaluation of minutes 10..=12
    // fires a@11, b@11, a@13, b@13 (a rule-by-rule judge would keep b@11 over a@13).
    let all = serde_json::json!({"metric": "events"});
    let clicks_only = serde_json::json!({"metric": "events", "dim": "event", "key": "click"});
    let registry = thresholds(&[("a", all, "warning"), ("b", clicks_only, "warning")]);
    let funnels = FunnelRegistry::default();
    let mut t = Tables::default();
    // Minute 10 bad, 11 good (both resolve), 12 bad again, after the hold-off.
    clicks(&mut t, &[(10, 9), (11, 1), (12, 9)]);
    let config = AlertConfig { history: 2, hold_off_minutes: 0, ..AlertConfig::default() };
    let mut engine = AlertEngine::new(config, 30, 1440);
    engine.evaluate(&t, &registry, &funnels, 13 * 60_000, 0);
    let kept: Vec<(String, i64)> = engine.history(0).iter().map(|a| (a.rule.clone(), a.fired_ms)).collect();
    assert_eq!(kept, [("b".to_string(), 13 * 60_000), ("a".to_string(), 13 * 60_000)], "newest first");
    assert_eq!(engine.fired().values().sum::<u64>(), 4, "every alert counts, kept or not");
}

#[test]
fn rules_on_one_series_share_one_incident_that_reopens_within_the_hold_off() {
    // `slow` and `fast` watch the same series; `fast` is critical.
    let all = serde_json::json!({"metric": "events"});
    let registry = thresholds(&[("slow", all.clone(), "warning"), ("fast", all, "critical")]);
    let funnels = FunnelRegistry::default();
    let mut t = Tables::default();
    // Bad 10..=11, good 12 (resolved at 13 min), bad again at 30, good 31, bad at 300.
    clicks(&mut t, &[(10, 9), (11, 9), (12, 1), (30, 9), (31, 1), (300, 9), (301, 1)]);
    let config = AlertConfig { hold_off_minutes: 60, ..AlertConfig::default() };
    let mut engine = AlertEngine::new(config, 30, 1440);
    engine.evaluate(&t, &registry, &funnels, 12 * 60_000, 0);
    let firing = engine.active(0);
    assert_eq!(firing.len(), 1, "one incident for two rules: {firing:?}");
    let incident = &firing[0];
    assert_eq!((incident.rule.as_str(), incident.rules.clone()), ("slow", vec!["slow".to_string(), "fast".into()]));
    assert_eq!(incident.severity, Severity::Critical, "as bad as its worst rule");
    assert_eq!(engine.take_changes().len(), 1, "paged once");

    engine.evaluate(&t, &registry, &funnels, 13 * 60_000, 0);
    let changes = engine.take_changes();
    assert_eq!(changes.len(), 1, "resolved once, with its last rule: {changes:?}");
    assert_eq!(changes[0].action, AlertState::Resolved);

    engine.evaluate(&t, &registry, &funnels, 32 * 60_000, 0);
    let changes = engine.take_changes();
    assert_eq!(changes.len(), 2, "fired again within the hold-off, then resolved: {changes:?}");
    assert_eq!((changes[0].action, changes[0].alert.reopened), (AlertState::Firing, 1), "reopened");
    assert_eq!(changes[0].alert.started_ms, 10 * 60_000, "the same incident");
    assert_eq!(engine.history(0).len(), 1, "one incident in the history");

    engine.evaluate(&t, &registry, &funnels, 302 * 60_000, 0);
    let history = engine.history(0);
    assert_eq!(history.len(), 2, "after the hold-off, a new incident: {history:?}");
    assert_eq!((history[0].started_ms, history[0].reopened), (300 * 60_000, 0));
    assert_eq!(engine.fired().values().sum::<u64>(), 2, "two incidents opened");
}
