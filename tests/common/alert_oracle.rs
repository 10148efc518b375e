//! Alerts from scratch: per-minute series counted straight from the accepted events, each rule
//! judged on every final minute in order, with the hysteresis the README documents. Shares no
//! code with the engine's evaluation (only the rule definitions).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use schema::alert_rules::{AlertRuleDef, Condition, Detector, Direction, KeyField, Metric, Seasonal, SeriesDef};
use schema::funnels::FunnelDef;

use super::funnel_oracle::matches;
use super::oracle::Accepted;

/// `(id, started_ms, fired_ms, resolved_ms, rules, reopened)` of every incident: the opening
/// rule's id and run, the last resolve, the rules that fired in it in the order they joined, and
/// how often it reopened.
pub type Fired = BTreeSet<(String, i64, i64, Option<i64>, Vec<String>, u32)>;

pub struct Settings {
    pub fire_after: u32,
    pub resolve_after: u32,
    /// How far `as_of` is behind the newest event: the lateness, or 0 once the input is
    /// complete (a replayed file read to its end).
    pub lateness_ms: i64,
    pub hold_off_minutes: i64,
}

/// One rule's firing run on one series.
struct Run {
    rule: usize,
    name: String,
    series: String,
    id: String,
    start: i64,
    fired: i64,
    resolved: Option<i64>,
}

/// Runs grouped into incidents, as README "Alerts" says: runs are taken in the order they
/// fired or resolved (then by rule); a run on a series with an open incident joins it, one within
/// the hold-off after it resolved reopens it, any other opens a new one; an incident resolves
/// with the last of its runs.
fn incidents(runs: Vec<Run>, hold_off_ms: i64) -> Fired {
    struct Incident {
        id: String,
        start: i64,
        fired: i64,
        open: usize,
        resolved: Option<i64>,
        rules: Vec<String>,
        reopened: u32,
    }
    // (time, rule, resolves?, run)
    let mut steps: Vec<(i64, usize, bool, usize)> = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        steps.push((run.fired, run.rule, false, i));
        if let Some(r) = run.resolved {
            steps.push((r, run.rule, true, i));
        }
    }
    steps.sort();
    let mut out = Fired::new();
    let mut current: BTreeMap<&str, Incident> = BTreeMap::new();
    let done = |i: Incident, out: &mut Fired| {
        out.insert((i.id, i.start, i.fired, i.resolved, i.rules, i.reopened));
    };
    for (time, _, resolves, i) in steps {
        let run = &runs[i];
        let series = run.series.as_str();
        if resolves {
            let incident = current.get_mut(series).expect("a run resolves in its incident");
            incident.open -= 1;
            if incident.open == 0 {
                incident.resolved = Some(time);
            }
            continue;
        }
        match current.get_mut(series) {
            Some(incident) if incident.open > 0 || incident.resolved.is_some_and(|r| time - r <= hold_off_ms) => {
                incident.reopened += (incident.open == 0) as u32;
                incident.open += 1;
                incident.resolved = None;
                if !incident.rules.contains(&run.name) {
                    incident.rules.push(run.name.clone());
                }
            }
            _ => {
                let new = Incident {
                    id: run.id.clone(),
                    start: run.start,
                    fired: run.fired,
                    open: 1,
                    resolved: None,
                    rules: vec![run.name.clone()],
                    reopened: 0,
                };
                if let Some(old) = current.insert(series, new) {
                    done(old, &mut out);
                }
            }
        }
    }
    for incident in current.into_values() {
        done(incident, &mut out);
    }
    out
}

type Series = BTreeMap<i64, (f64, f64)>;

fn minute(ts: i64) -> i64 {
    ts.div_euclid(60_000)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Series per key for one series definition, from the events.
fn series_of(events: &[Accepted], s: &SeriesDef, funnels: &[FunnelDef]) -> BTreeMap<String, Series> {
    let mut out: BTreeMap<String, Series> = BTreeMap::new();
    let dim = s.dim.as_deref().unwrap_or("all");
    for e in events {
        let m = minute(e.ts);
        let mut add = |key: &str, num: f64, den: f64| {
            let cell = out.entry(key.to_string()).or_default().entry(m).or_default();
            cell.0 += num;
            cell.1 += den;
        };
        match s.metric {
            Metric::Events => match dim {
                "all" => add("(none)", 1.0, 0.0),
                "event" => add(&e.name, 1.0, 0.0),
                "page" => {
                    if let Some(p) = &e.page {
                        add(p, 1.0, 0.0)
                    }
                }
                "page_view" => {
                    if let (Some(p), true) = (&e.page, e.name == "page_view") {
                        add(p, 1.0, 0.0)
                    }
                }
                other => panic!("the test does not use dim {other}"),
            },
            Metric::FunnelConversion => {
                let f = funnels.iter().find(|f| Some(&f.name) == s.funnel.as_ref()).unwrap();
                let step = s.step.unwrap() as usize;
                let (num, den) = (matches(&f.steps[step - 1], e), matches(&f.steps[step - 2], e));
                add("(none)", if num { 100.0 } else { 0.0 }, if den { 1.0 } else { 0.0 });
            }
            other => panic!("the test does not use {other:?}"),
        }
    }
    // Counts have denominator 1 in every minute of the stream (the engine's convention).
    if s.metric == Metric::Events {
        for series in out.values_mut() {
            for cell in series.values_mut() {
                cell.1 = 1.0;
            }
        }
    }
    out
}

#[derive(Default)]
struct Track {
    bad: u32,
    good: u32,
    run_start: i64,
    good_start: i64,
    firing: bool,
    fired: i64,
}

/// Every alert the rules fire over the events, judged up to the `as_of` they imply.
pub fn alerts(events: &[Accepted], rules: &[AlertRuleDef], funnels: &[FunnelDef], settings: &Settings) -> Fired {
    let mut runs: Vec<Run> = Vec::new();
    let Some(origin) = events.iter().map(|e| minute(e.ts)).min() else { return Fired::new() };
    let head = events.iter().map(|e| e.ts).max().unwrap();
    let last_final = minute(head - settings.lateness_ms) - 1;
    for (rule_index, rule) in rules.iter().enumerate() {
        let fire_after = rule.fire_after.unwrap_or(settings.fire_after);
        let resolve_after = rule.resolve_after.unwrap_or(settings.resolve_after);
        let mut tracks: BTreeMap<String, Track> = BTreeMap::new();
        let single_key = |s: &SeriesDef| {
            s.dim.as_deref().unwrap_or("all") == "all"
                || s.metric == Metric::FunnelConversion
                || s.key.as_deref().is_some_and(|k| k != "*")
        };
        let series_rule: Option<(SeriesDef, bool)> = match &rule.when {
            Condition::Anomaly { series, .. } | Condition::Threshold { series, .. } => {
                Some((series.clone(), single_key(series)))
            }
            Condition::FunnelDrop { funnel, step, .. } => {
                let f = funnels.iter().find(|f| &f.name == funnel).unwrap();
                let step = step.unwrap_or(f.steps.len() as u8);
                let s = SeriesDef {
                    metric: Metric::FunnelConversion,
                    dim: None,
                    key: None,
                    funnel: Some(funnel.clone()),
                    step: Some(step),
                };
                Some((s, true))
            }
            _ => None,
        };
        let all_series = series_rule.as_ref().map(|(s, _)| series_of(events, s, funnels));
        for b in origin..=last_final {
            let (start, end) = (b * 60_000, (b + 1) * 60_000);
            let verdicts: Vec<(String, Option<bool>)> = match (&series_rule, &all_series) {
                (Some((s, single)), Some(all)) => {
                    let rate = matches!(s.metric, Metric::FunnelConversion | Metric::BounceRate);
                    let one = match s.key.as_deref() {
                        Some(k) if k != "*" && s.dim.as_deref().unwrap_or("all") != "all" => k.to_string(),
                        _ => "(none)".to_string(),
                    };
                    let mut keys: BTreeSet<String> = if *single { [one].into() } else { all.keys().cloned().collect() };
                    keys.extend(tracks.keys().cloned());
                    let empty = Series::new();
                    keys.into_iter()
                        .filter_map(|key| {
                            let series = all.get(&key).unwrap_or(&empty);
                            let (verdict, seen) = judge_series(&rule.when, series, b, origin, rate, s.metric);
                            (*single || seen || tracks.contains_key(&key)).then_some((key, verdict))
                        })
                        .collect()
                }
                _ => judge_keys(events, &rule.when, b, tracks.keys().cloned().collect()),
            };
            for (key, verdict) in verdicts {
                let id = if series_rule.as_ref().is_some_and(|(_, single)| *single) {
                    rule.name.clone()
                } else {
                    format!("{}:{key}", rule.name)
                };
                let bad = verdict == Some(true);
                if bad {
                    let t = tracks.entry(key).or_default();
                    t.bad += 1;
                    t.good = 0;
                    if t.bad == 1 && !t.firing {
                        t.run_start = start;
                    }
                    if !t.firing && t.bad >= fire_after {
                        t.firing = true;
                        t.fired = end;
                    }
                } else if let Some(t) = tracks.get_mut(&key) {
                    if !t.firing {
                        tracks.remove(&key);
                        continue;
                    }
                    t.good += 1;
                    if t.good == 1 {
                        t.good_start = start;
                    }
                    if t.good >= resolve_after {
                        let series = series_of_rule(&rule.when, &series_rule, &key);
                        let (name, start, fired, resolved) = (rule.name.clone(), t.run_start, t.fired, Some(end));
                        runs.push(Run { rule: rule_index, name, series, id, start, fired, resolved });
                        tracks.remove(&key);
                    }
                }
            }
        }
        for (key, t) in tracks.into_iter().filter(|(_, t)| t.firing) {
            let id = if series_rule.as_ref().is_some_and(|(_, single)| *single) {
                rule.name.clone()
            } else {
                format!("{}:{key}", rule.name)
            };
            let series = series_of_rule(&rule.when, &series_rule, &key);
            let (name, start, fired, resolved) = (rule.name.clone(), t.run_start, t.fired, None);
            runs.push(Run { rule: rule_index, name, series, id, start, fired, resolved });
        }
    }
    incidents(runs, settings.hold_off_minutes * 60_000)
}

/// What a rule watches on `key`: its series (metric, dimension, funnel step) or the key field.
fn series_of_rule(when: &Condition, series_rule: &Option<(SeriesDef, bool)>, key: &str) -> String {
    match (series_rule, when) {
        (Some((s, _)), _) => format!(
            "{:?}/{}/{}/{}/{key}",
            s.metric,
            s.dim.as_deref().unwrap_or("all"),
            s.funnel.as_deref().unwrap_or(""),
            s.step.unwrap_or(0)
        ),
        (None, Condition::Burst { key: field, .. } | Condition::RateLimit { key: field, .. }) => {
            format!("{}/{key}", field.as_str())
        }
        (None, Condition::ClicksWithoutViews { .. }) => format!("user/{key}"),
        (None, Condition::SharedIp { .. }) => format!("ip/{key}"),
        _ => unreachable!("every rule kind is a series or per-key rule"),
    }
}

/// `(verdict, whether any bucket read had data)`; `None` = no verdict (counts as good).
fn judge_series(when: &Condition, s: &Series, b: i64, origin: i64, rate: bool, metric: Metric) -> (Option<bool>, bool) {
    let mut seen = false;
    let mut window = |hi: i64, len: i64| -> Option<(f64, f64)> {
        let mut total = (0.0, 0.0);
        for x in hi - len + 1..=hi {
            if x < origin {
                return None;
            }
            let v = s.get(&x).copied().unwrap_or((0.0, if metric == Metric::Events { 1.0 } else { 0.0 }));
            seen |= v.0 != 0.0 || (rate && v.1 != 0.0);
            total = (total.0 + v.0, total.1 + v.1);
        }
        Some(total)
    };
    let value = |w: (f64, f64)| {
        if !rate {
            Some(w.0)
        } else if w.1 > 0.0 {
            Some(w.0 / w.1)
        } else {
            None
        }
    };
    let verdict = match when {
        Condition::Anomaly {
            detector, direction, window_minutes, seasonal, smooth, sensitivity, min_baseline, ..
        } => {
            assert_eq!(*seasonal, Seasonal::None, "the test uses trailing baselines");
            let smooth = *smooth as i64;
            let w = *window_minutes as i64;
            (|| {
                let current = window(b, smooth)?;
                let v = value(current)?;
                let samples: Vec<f64> =
                    (0..w).rev().filter_map(|j| window(b - smooth - j, smooth).and_then(value)).collect();
                // Half the window, or 30 samples with the sensitivity widened until then (the
                // widening is the detectors' own function, tested by hand there).
                let half = (w as usize).div_ceil(2);
                if samples.len() < half.clamp(3, alerting::detectors::EARLY_SAMPLES) {
                    return None;
                }
                let sensitivity = alerting::detectors::early_sensitivity(*sensitivity, samples.len(), half);
                let (base, spread) = match detector {
                    Detector::Mad => {
                        let m = median(samples.clone());
                        (m, 1.4826 * median(samples.iter().map(|x| (x - m).abs()).collect()))
                    }
                    Detector::Ewma => {
                        let alpha = 2.0 / (samples.len() as f64 + 1.0);
                        let (mut mean, mut var) = (samples[0], 0.0);
                        for x in &samples[1..] {
                            let d = x - mean;
                            mean += alpha * d;
                            var = (1.0 - alpha) * (var + d * alpha * d);
                        }
                        (mean, var.sqrt())
                    }
                };
                let floor = if rate {
                    let p = (base / 100.0).clamp(0.0, 1.0);
                    (100.0 * (p * (1.0 - p) / current.1.max(1.0)).sqrt()).max(0.5)
                } else {
                    base.max(1.0).sqrt().max(0.01 * base.abs())
                };
                let z = (v - base) / spread.max(floor);
                let large = if rate {
                    current.1
                } else {
                    match direction {
                        Direction::Up => v,
                        Direction::Down => base,
                        Direction::Both => v.max(base),
                    }
                };
                let bad = match direction {
                    Direction::Up => z >= sensitivity,
                    Direction::Down => z <= -sensitivity,
                    Direction::Both => z.abs() >= sensitivity,
                };
                Some(bad && large >= *min_baseline)
            })()
        }
        Condition::Threshold { above, below, relative, relative_minutes, smooth, min_baseline, .. } => (|| {
            let smooth = *smooth as i64;
            let current = window(b, smooth)?;
            let v = value(current)?;
            let compared = if *relative {
                let len = *relative_minutes as i64;
                let before = window(b - smooth, len)?;
                let base = if rate { value(before)? } else { before.0 * smooth as f64 / len as f64 };
                if (!rate && base < *min_baseline) || base <= 0.0 {
                    return None;
                }
                v / base
            } else {
                v
            };
            if rate && current.1 < *min_baseline {
                return None;
            }
            Some(above.is_some_and(|a| compared > a) || below.is_some_and(|x| compared < x))
        })(),
        Condition::FunnelDrop { window_minutes, floor, drop, baseline_minutes, min_entries, .. } => (|| {
            let len = *window_minutes as i64;
            let current = window(b, len)?;
            if current.1 < *min_entries {
                return None;
            }
            let v = current.0 / current.1;
            let base = window(b - len, *baseline_minutes as i64).filter(|w| w.1 >= *min_entries).map(|w| w.0 / w.1);
            Some(floor.is_some_and(|f| v < f) || drop.zip(base).is_some_and(|(d, base)| v < base * (1.0 - d)))
        })(),
        _ => unreachable!(),
    };
    (verdict, seen)
}

fn key_of(e: &Accepted, field: KeyField) -> Option<String> {
    match field {
        KeyField::Ip => e.ip.clone(),
        KeyField::User => Some(e.user.clone()),
        KeyField::Device => (e.device != "(none)").then(|| e.device.clone()),
    }
}

/// Per-key rules: every key with a counted event in the window, plus tracked ones.
fn judge_keys(events: &[Accepted], when: &Condition, b: i64, tracked: Vec<String>) -> Vec<(String, Option<bool>)> {
    let window = when.key_window() as i64;
    let lo = b + 1 - window;
    let in_window = |e: &&Accepted| (lo..=b).contains(&minute(e.ts));
    let counted = |e: &Accepted, field: KeyField, event: &Option<String>| {
        key_of(e, field).filter(|_| event.as_ref().is_none_or(|n| &e.name == n))
    };
    let mut candidates: BTreeSet<String> = tracked.into_iter().collect();
    let mut per_key: HashMap<String, Vec<&Accepted>> = HashMap::new();
    let (field, event): (KeyField, Option<String>) = match when {
        Condition::Burst { key, event, .. } | Condition::RateLimit { key, event, .. } => (*key, event.clone()),
        Condition::ClicksWithoutViews { .. } => (KeyField::User, Some("click".into())),
        Condition::SharedIp { .. } => (KeyField::Ip, None),
        _ => unreachable!(),
    };
    for e in events.iter().filter(in_window) {
        let key = match when {
            Condition::ClicksWithoutViews { .. } => key_of(e, KeyField::User),
            _ => counted(e, field, &event),
        };
        if let Some(k) = key {
            // Every key the rule counts in the window (the engine looks only at keys that can
            // have changed; the reference does not need to know which).
            if counted(e, field, &event).is_some() {
                candidates.insert(k.clone());
            }
            per_key.entry(k).or_default().push(e);
        }
    }
    candidates
        .into_iter()
        .map(|key| {
            let evs = per_key.get(&key).cloned().unwrap_or_default();
            let bad = match when {
                Condition::Burst { limit, event, .. } | Condition::RateLimit { limit, event, .. } => {
                    evs.iter().filter(|e| event.as_ref().is_none_or(|n| &e.name == n)).count() as i64 > *limit
                }
                Condition::ClicksWithoutViews { min_clicks, .. } => {
                    let clicks = evs.iter().filter(|e| e.name == "click").count() as i64;
                    clicks >= *min_clicks && !evs.iter().any(|e| e.name == "page_view")
                }
                Condition::SharedIp { min_users, .. } => {
                    evs.iter().map(|e| &e.user).collect::<BTreeSet<_>>().len() as u64 >= *min_users
                }
                _ => unreachable!(),
            };
            (key, Some(bad))
        })
        .collect()
}
