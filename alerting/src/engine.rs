//! The alert lifecycle: every rule judged once per final bucket, with hysteresis; alerts that fire
//! and resolve once, a history, and silences that mute delivery but hide nothing.
//!
//! The engine runs on the publish path, on the snapshot being published. A bucket is judged when
//! `as_of` has made it final (plus a rule's settle time), so its verdict never changes and a replay
//! of the same events fires the same alerts at the same event times.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::incidents::Incidents;
use crate::series::{self as series, Keys};
use crate::verdict::{lookback, series_verdict, Verdict};
use read::model::{Alert, AlertChange, AlertState, Silence};
use read::tables::Tables;
use schema::alert_rules::{AlertConfig, AlertRegistry, AlertRule, Condition, Metric, SeriesDef};
use schema::cells::Dim;
use schema::event::{minute_start_ms, Minute, Sym, MS_PER_MINUTE};
use schema::funnels::FunnelRegistry;
use schema::registry::Snapshot;

#[derive(Default)]
struct Tracker {
    /// The key's text when the run started (a per-key text can expire before the resolve).
    text: Option<String>,
    bad: u32,
    good: u32,
    run_start_ms: i64,
    good_start_ms: i64,
    firing: bool,
}

/// Final `(numerator, denominator)` of a series by bucket, for the buckets from `first` on
/// (`None`: not read yet). Buckets are judged one after the other and each reads a trailing
/// window, so the values held are a short contiguous run: a ring, not a tree (a `BTreeMap` looked
/// up for every bucket of a window and split after every judged bucket cost about 6% of a 13-day
/// replay).
#[derive(Default)]
struct BucketValues {
    first: i64,
    values: VecDeque<Option<(f64, f64)>>,
    /// Buckets with a value.
    held: usize,
}

impl BucketValues {
    fn get(&self, bucket: i64) -> Option<(f64, f64)> {
        let at = usize::try_from(bucket - self.first).ok()?;
        self.values.get(at).copied().flatten()
    }

    fn insert(&mut self, bucket: i64, value: (f64, f64)) {
        if self.values.is_empty() {
            self.first = bucket;
        }
        while bucket < self.first {
            self.values.push_front(None);
            self.first -= 1;
        }
        let at = (bucket - self.first) as usize;
        if at >= self.values.len() {
            self.values.resize(at + 1, None);
        }
        self.held += self.values[at].is_none() as usize;
        self.values[at] = Some(value);
    }

    /// Forgets the buckets before `bucket`.
    fn keep_from(&mut self, bucket: i64) {
        while self.first < bucket {
            let Some(gone) = self.values.pop_front() else { break };
            self.held -= gone.is_some() as usize;
            self.first += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.held == 0
    }
}

/// A key, its text (per-key and `*` rules) and its verdict on one bucket.
type KeyVerdict = (Sym, Option<String>, Option<Verdict>);

/// `(rule name, key symbol)`; the symbol is `NONE` for a single-series rule.
type TrackerKey = (String, Sym);

pub struct AlertEngine {
    config: AlertConfig,
    rules: Snapshot<AlertRule>,
    /// Next bucket to judge, by rule name.
    next: HashMap<String, i64>,
    /// Whether the first evaluation happened (rules known then judge the whole stream).
    started: bool,
    /// First minute with events; earlier buckets have no data (not zeros).
    origin: Option<Minute>,
    /// Final bucket values by rule and key.
    values: HashMap<String, HashMap<Sym, BucketValues>>,
    /// Minutes after an hour before its session cells are final (the session gap, or the
    /// longest session when sessions are keyed by the producer's id).
    session_settle_minutes: u32,
    /// `views.window_minutes`: a bucket value older than this behind the judged one is only
    /// read from the cache (the tables may have let it go, depending on the batching).
    window_minutes: u32,
    trackers: BTreeMap<TrackerKey, Tracker>,
    /// What fired, one alert per series.
    incidents: Incidents,
    silences: Vec<Silence>,
    next_silence: u64,
}

impl AlertEngine {
    pub fn new(config: AlertConfig, session_settle_minutes: u32, window_minutes: u32) -> AlertEngine {
        let incidents = Incidents::new(config.hold_off_minutes, config.history, config.max_keys_per_rule);
        AlertEngine {
            incidents,
            config,
            session_settle_minutes,
            window_minutes,
            rules: Snapshot::default(),
            next: HashMap::new(),
            started: false,
            origin: None,
            values: HashMap::new(),
            trackers: BTreeMap::new(),
            silences: Vec::new(),
            next_silence: 1,
        }
    }

    /// Judges every bucket that `as_of` made final since the last call. `available_from`: the
    /// oldest minute whose counts the tables still hold.
    pub fn evaluate(
        &mut self,
        tables: &Tables,
        registry: &AlertRegistry,
        funnels: &FunnelRegistry,
        as_of_ms: i64,
        available_from: Minute,
    ) {
        if self.origin.is_none() {
            // Fixed once `as_of` has passed the first minute with events: an event before it
            // would be too late from then on, so the stream cannot start any earlier.
            let first = tables.series(Dim::All, schema::event::NONE).and_then(|s| s.keys().next().copied());
            self.origin = first.filter(|m| minute_start_ms(*m + 1) <= as_of_ms);
        }
        let Some(origin) = self.origin else { return };
        let first_evaluation = !std::mem::replace(&mut self.started, true);
        let rules = self.rules.refresh(registry).to_vec();
        // Every bucket to judge, in the order they became final (then by rule and bucket): what
        // an incident is made of then depends on event time only, not on how publishes fell.
        let mut due: Vec<(i64, usize, i64)> = Vec::new();
        let mut origin_buckets = Vec::with_capacity(rules.len());
        for (index, rule) in rules.iter().enumerate() {
            let bucket_ms = rule.bucket_minutes as i64 * MS_PER_MINUTE;
            let last_final = (as_of_ms - self.settle(rule) * MS_PER_MINUTE).div_euclid(bucket_ms) - 1;
            let origin_bucket = minute_start_ms(origin).div_euclid(bucket_ms);
            origin_buckets.push(origin_bucket);
            // Buckets before the tables' window have no counts left (a clock far in the past
            // must not make the first evaluation walk years of empty buckets).
            let held = (available_from / rule.bucket_minutes) as i64;
            let start = match self.next.get(rule.name()) {
                Some(next) => *next,
                // Rules known from the start judge the whole stream; rules added later, from now.
                None if first_evaluation => origin_bucket.max(held),
                None => last_final,
            };
            let settle_ms = self.settle(rule) * MS_PER_MINUTE;
            due.extend((start.max(origin_bucket)..=last_final).map(|b| ((b + 1) * bucket_ms + settle_ms, index, b)));
            self.next.insert(rule.name().to_string(), start.max(last_final + 1));
        }
        due.sort_unstable();
        for (_, index, b) in due {
            self.judge(tables, &rules[index], funnels, b, origin_buckets[index], available_from);
        }
        self.incidents.forget_before(as_of_ms, self.session_settle_minutes as i64 * MS_PER_MINUTE);
    }

    /// The keys of `rule` in a run (bad or firing): judged every bucket until the run ends.
    fn watched(&self, rule: &AlertRule) -> BTreeSet<Sym> {
        self.trackers.keys().filter(|(r, _)| r == rule.name()).map(|(_, k)| *k).collect()
    }

    /// Minutes after its end before a bucket is final (session cells need the session gap).
    fn settle(&self, rule: &AlertRule) -> i64 {
        if rule.bucket_minutes > 1 {
            self.session_settle_minutes as i64
        } else {
            0
        }
    }

    fn judge(
        &mut self,
        tables: &Tables,
        rule: &AlertRule,
        funnels: &FunnelRegistry,
        b: i64,
        origin_bucket: i64,
        available_from: Minute,
    ) {
        let bucket_ms = rule.bucket_minutes as i64 * MS_PER_MINUTE;
        let (start_ms, end_ms) = (b * bucket_ms, (b + 1) * bucket_ms);
        let (watched, verdicts): (String, Vec<KeyVerdict>) = match &rule.def.when {
            Condition::Anomaly { series, .. } | Condition::Threshold { series, .. } => (
                series_name(rule, series),
                self.series_verdicts(tables, rule, series.clone(), b, origin_bucket, available_from),
            ),
            Condition::FunnelDrop { funnel, step, .. } => {
                let Some((_, f)) = funnels.get(funnel) else { return };
                let step = step.unwrap_or(f.steps() as u8).min(f.steps() as u8);
                let series = SeriesDef {
                    metric: Metric::FunnelConversion,
                    dim: None,
                    key: None,
                    funnel: Some(funnel.clone()),
                    step: Some(step),
                };
                (
                    series_name(rule, &series),
                    self.series_verdicts(tables, rule, series, b, origin_bucket, available_from),
                )
            }
            _ => (series::key_label(rule).to_string(), self.key_verdicts(tables, rule, b)),
        };
        for (key, text, verdict) in verdicts {
            let series = format!("{watched}={key:016x}");
            self.track(rule, key, &series, text, verdict, start_ms, end_ms);
        }
    }

    fn series_verdicts(
        &mut self,
        tables: &Tables,
        rule: &AlertRule,
        series: SeriesDef,
        b: i64,
        origin_bucket: i64,
        available_from: Minute,
    ) -> Vec<KeyVerdict> {
        let mut keys = match series::keys_of(&series, rule.dim) {
            Keys::One(k) => vec![k],
            Keys::Each => series::each_key(tables, rule, &series),
        };
        // A key that fired stays judged until it resolves, even once its counts are gone.
        let watched = self.watched(rule);
        keys.extend(watched.iter().copied());
        keys.sort_unstable();
        keys.dedup();
        let single = matches!(series::keys_of(&series, rule.dim), Keys::One(_));
        let rate = series::is_rate(series.metric);
        // First bucket wholly inside what the tables hold for certain when `b` is judged: when
        // `b` became final, ingestion had retracted at most up to `window_minutes` before the
        // `as_of` that made it final. Reading no further back than that (unless cached) keeps a
        // new key's baseline independent of how far `as_of` moved in one publish.
        let bm = rule.bucket_minutes as i64;
        let safe_minute =
            ((b + 1) * bm + self.settle(rule) + 1 - self.window_minutes as i64).max(available_from as i64);
        let available_bucket = safe_minute.div_euclid(bm) + i64::from(safe_minute.rem_euclid(bm) != 0);
        let keep_from = b - lookback(rule) - 1;
        let mut out = Vec::with_capacity(keys.len());
        let caches = self.values.entry(rule.name().to_string()).or_default();
        // Keys no longer in the tables nor watched: their cached values are of no use.
        caches.retain(|k, _| keys.binary_search(k).is_ok());
        for key in keys {
            let cache = caches.entry(key).or_default();
            let mut seen = false;
            let mut get = |x: i64| -> Option<(f64, f64)> {
                if x < origin_bucket || x > b {
                    return None;
                }
                let v = match cache.get(x) {
                    Some(v) => v,
                    // Not cached (a restart, a new key): the tables still hold it, or it is gone.
                    None if x < available_bucket => return None,
                    None => {
                        let v = series::bucket_value(tables, rule, &series, key, x as u32);
                        cache.insert(x, v);
                        v
                    }
                };
                seen |= v.0 != 0.0 || (rate && v.1 != 0.0);
                Some(v)
            };
            let watching = watched.contains(&key);
            let verdict = series_verdict(rule, rate, b, watching, &mut get);
            // Keep what later buckets read: the lookback behind this one.
            cache.keep_from(keep_from);
            if !single && !seen && !watching {
                // A key with nothing in what the rule read (it may have counts after `as_of`).
                continue;
            }
            // A good key nobody watches changes nothing (`track` ignores it): no text for it.
            if watching || verdict.as_ref().is_some_and(|v| v.bad) {
                out.push((key, (!single).then(|| tables.name(key)), verdict));
            }
        }
        caches.retain(|_, cache| !cache.is_empty());
        out
    }

    fn key_verdicts(&mut self, tables: &Tables, rule: &AlertRule, b: i64) -> Vec<KeyVerdict> {
        let minute = b as Minute;
        let lo = (minute + 1).saturating_sub(rule.def.when.key_window());
        let minutes = minute + 1 - lo;
        let watched = self.watched(rule);
        let mut candidates = watched.clone();
        let when = &rule.def.when;
        match when {
            Condition::SharedIp { .. } => candidates.extend(series::ips_in(tables, minute).cloned()),
            _ => {
                let kind = series::primary_kind(when).expect("per-key rules count a kind");
                candidates.extend(series::keyed_in(tables, kind, minute).cloned());
            }
        }
        // Only new events can make a count or a set of users exceed its bound; but a click
        // bot's page view leaving the window can make it bad without a new click.
        if let Condition::ClicksWithoutViews { .. } = when {
            let views = when.key_kinds()[1];
            candidates.extend(series::keyed_in(tables, views, lo.saturating_sub(1)).cloned());
        }
        // Thousands of keys are candidates in a busy minute and few are bad: a good key nobody
        // watches changes nothing (`track` ignores it), so its text and summary are not built.
        let mut out = Vec::new();
        for key in candidates {
            let watching = watched.contains(&key);
            let verdict = match when {
                Condition::Burst { limit, .. } | Condition::RateLimit { limit, .. } => {
                    let kind = series::primary_kind(when).expect("counted");
                    let n = series::keyed_sum(tables, kind, key, lo, minute);
                    let bad = n > *limit;
                    (bad || watching).then(|| Verdict {
                        bad,
                        value: n as f64,
                        baseline: Some(*limit as f64),
                        summary: format!("{n} events in {minutes} min (limit {limit})"),
                    })
                }
                Condition::ClicksWithoutViews { min_clicks, .. } => {
                    let kinds = when.key_kinds();
                    let clicks = series::keyed_sum(tables, kinds[0], key, lo, minute);
                    // Views matter only with enough clicks, or for a watched key's summary.
                    let views = if clicks >= *min_clicks || watching {
                        series::keyed_sum(tables, kinds[1], key, lo, minute)
                    } else {
                        0
                    };
                    let bad = clicks >= *min_clicks && views == 0;
                    (bad || watching).then(|| {
                        let summary = format!("{clicks} clicks and {views} page views in {minutes} min");
                        Verdict { bad, value: clicks as f64, baseline: None, summary }
                    })
                }
                Condition::SharedIp { min_users, .. } => {
                    // Users summed over the minutes bound the distinct ones from above: most IPs
                    // are far under the bound and need no set.
                    let users = if watching || series::ip_user_bound(tables, key, lo, minute) >= *min_users {
                        series::ip_user_count(tables, key, lo, minute)
                    } else {
                        0
                    };
                    let bad = users >= *min_users;
                    (bad || watching).then(|| Verdict {
                        bad,
                        value: users as f64,
                        baseline: Some(*min_users as f64),
                        summary: format!("{users} distinct users in {minutes} min"),
                    })
                }
                _ => unreachable!("series rules are judged by series_verdicts"),
            };
            if let Some(verdict) = verdict {
                out.push((key, Some(tables.key_text(key)), Some(verdict)));
            }
        }
        out
    }

    /// Hysteresis: `fire_after` bad buckets in a row fire, `resolve_after` good ones resolve; the
    /// incident of `series` follows.
    #[allow(clippy::too_many_arguments)]
    fn track(
        &mut self,
        rule: &AlertRule,
        key: Sym,
        series: &str,
        text: Option<String>,
        verdict: Option<Verdict>,
        start_ms: i64,
        end_ms: i64,
    ) {
        let fire_after = rule.def.fire_after.unwrap_or(self.config.fire_after);
        let resolve_after = rule.def.resolve_after.unwrap_or(self.config.resolve_after);
        let bad = verdict.as_ref().is_some_and(|v| v.bad);
        let tracker_key = (rule.name().to_string(), key);
        if !bad {
            let Some(t) = self.trackers.get_mut(&tracker_key) else { return };
            if !t.firing {
                self.trackers.remove(&tracker_key);
                return;
            }
            t.good += 1;
            if t.good == 1 {
                t.good_start_ms = start_ms;
            }
            let (ended_ms, resolved) = (t.good_start_ms, t.good >= resolve_after);
            if let Some(v) = verdict {
                self.incidents.update(series, rule.name(), v.value, v.baseline, v.summary);
            }
            if resolved {
                self.trackers.remove(&tracker_key);
                self.incidents.leave(series, rule.name(), ended_ms, end_ms);
            }
            return;
        }
        let verdict = verdict.expect("bad has a verdict");
        let t = self.trackers.entry(tracker_key).or_default();
        t.bad += 1;
        t.good = 0;
        if t.bad == 1 && !t.firing {
            (t.run_start_ms, t.text) = (start_ms, text);
        }
        if t.firing {
            self.incidents.update(series, rule.name(), verdict.value, verdict.baseline, verdict.summary);
            return;
        }
        if t.bad < fire_after || !self.incidents.may_fire(series, rule.name(), end_ms) {
            return;
        }
        t.firing = true;
        let mut labels = rule.def.labels.clone();
        labels.insert("rule".into(), rule.name().to_string());
        if let Some(k) = &t.text {
            labels.insert(series::key_label(rule).into(), k.clone());
        }
        let alert = Alert {
            id: alert_id(rule, &t.text),
            rule: rule.name().to_string(),
            rules: vec![rule.name().to_string()],
            key: t.text.clone(),
            severity: rule.def.severity,
            labels,
            state: AlertState::Firing,
            value: verdict.value,
            baseline: verdict.baseline,
            summary: verdict.summary,
            started_ms: t.run_start_ms,
            fired_ms: end_ms,
            ended_ms: None,
            resolved_ms: None,
            reopened: 0,
            reopened_ms: None,
            link: link(rule),
            silenced: false,
        };
        self.incidents.fire(series, alert);
    }

    /// Changes since the last call, for the change stream.
    pub fn take_changes(&mut self) -> Vec<AlertChange> {
        let mut changes = self.incidents.take_changes();
        for change in &mut changes {
            change.alert.silenced = self.silenced(&change.alert, now_ms());
        }
        changes
    }

    pub fn active(&self, now_ms: i64) -> Vec<Alert> {
        self.marked(self.incidents.active(), now_ms)
    }

    /// Alerts (incidents) opened since the start, by rule.
    pub fn fired(&self) -> &BTreeMap<String, u64> {
        self.incidents.fired()
    }

    /// Incidents joined by a rule that did not open them, by rule.
    pub fn joined(&self) -> &BTreeMap<String, u64> {
        self.incidents.joined()
    }

    /// Newest first.
    pub fn history(&self, now_ms: i64) -> Vec<Alert> {
        self.marked(self.incidents.history().rev(), now_ms)
    }

    fn marked<'a>(&self, alerts: impl Iterator<Item = &'a Alert>, now_ms: i64) -> Vec<Alert> {
        alerts.map(|a| Alert { silenced: self.silenced(a, now_ms), ..a.clone() }).collect()
    }

    fn silenced(&self, alert: &Alert, now_ms: i64) -> bool {
        self.silences.iter().any(|s| s.until_ms > now_ms && (s.matcher == alert.id || alert.involves(&s.matcher)))
    }

    pub fn silence(&mut self, matcher: String, until_ms: i64, comment: Option<String>) -> Silence {
        self.silences.retain(|s| s.until_ms > now_ms());
        let silence = Silence { id: self.next_silence, matcher, until_ms, comment };
        self.next_silence += 1;
        self.silences.push(silence.clone());
        silence
    }

    /// Silences still in force (expired ones are dropped).
    pub fn silences(&mut self, now_ms: i64) -> Vec<Silence> {
        self.silences.retain(|s| s.until_ms > now_ms);
        self.silences.clone()
    }

    /// Takes back silences kept across a restart (expired ones are dropped).
    pub fn restore_silences(&mut self, silences: Vec<Silence>, now_ms: i64) {
        self.next_silence = self.next_silence.max(silences.iter().map(|s| s.id + 1).max().unwrap_or(1));
        self.silences.extend(silences.into_iter().filter(|s| s.until_ms > now_ms));
    }

    pub fn unsilence(&mut self, id: u64) -> bool {
        let before = self.silences.len();
        self.silences.retain(|s| s.id != id);
        self.silences.len() != before
    }
}

/// What a series rule watches, for the incident it shares with the rules that watch the same
/// (its key is added per key).
fn series_name(rule: &AlertRule, series: &SeriesDef) -> String {
    let funnel = series.funnel.as_deref().unwrap_or("");
    format!("{:?}/{}/{funnel}/{}", series.metric, rule.dim.as_str(), series.step.unwrap_or(0))
}

fn alert_id(rule: &AlertRule, key: &Option<String>) -> String {
    match key {
        Some(k) => format!("{}:{k}", rule.name()),
        None => rule.name().to_string(),
    }
}

/// Where the API shows what a rule watches.
fn link(rule: &AlertRule) -> String {
    match &rule.def.when {
        Condition::RateLimit { .. } => format!("/api/v1/limits/{}", rule.name()),
        Condition::FunnelDrop { funnel, .. } => format!("/api/v1/funnels/{funnel}"),
        Condition::Anomaly { series, .. } | Condition::Threshold { series, .. } => match series.metric {
            Metric::Events => match rule.dim {
                Dim::All => "/api/v1/timeseries?metric=events".to_string(),
                Dim::PageView => "/api/v1/timeseries?metric=page_views&breakdown=page".to_string(),
                Dim::Step => "/api/v1/funnels".to_string(),
                dim => format!("/api/v1/timeseries?metric=events&breakdown={}", dim.as_str()),
            },
            Metric::FunnelConversion => format!("/api/v1/funnels/{}", series.funnel.as_deref().unwrap_or("")),
            _ => "/api/v1/sessions".to_string(),
        },
        _ => format!("/api/v1/alerts?rule={}", rule.name()),
    }
}

pub use schema::time::now_ms;

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
