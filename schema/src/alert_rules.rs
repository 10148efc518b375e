//! Alert rules: what a rule watches (a series, or per-key counts) and when it is bad.
//!
//! Every rule is evaluated once per event-time bucket (a minute, or an hour for session series)
//! when `as_of` has made that bucket final, so replaying the same events gives the same alerts at
//! the same event times, whatever the batching.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cells::Dim;
use crate::event::{sym, Sym, NONE};

/// How bad an alert is (routing and paging use it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One rule as configured (`[[views.alerts.rules]]`) or posted to `/api/v1/alerts/rules`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleDef {
    pub name: String,
    #[serde(default)]
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Consecutive bad buckets before it fires (default `alerts.fire_after`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fire_after: Option<u32>,
    /// Consecutive good buckets before it resolves (default `alerts.resolve_after`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_after: Option<u32>,
    pub when: Condition,
}

/// What a series-based rule watches: a metric, and one key of a dimension or each key (`*`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesDef {
    pub metric: Metric,
    /// For `events`: all | event | page | page_view | utm_source | device | country. For the
    /// session metrics: utm_source | device | country (the session's first event). Default all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dim: Option<String>,
    /// A value of `dim` (`(none)` for absent), or `*` for each value separately. Default `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// For `funnel_conversion`: the funnel and the step (2.. = conversion from the step before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funnel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Events per minute.
    Events,
    /// Sessions started per hour.
    Sessions,
    /// Bounced sessions per hour (one page view, shorter than the bounce time).
    Bounces,
    /// Bounces / sessions per hour, percent.
    BounceRate,
    /// Events matching step `step` / events matching the step before, per minute, percent
    /// (flow conversion: final as soon as the minute is, unlike per-user conversion).
    FunnelConversion,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Up,
    Down,
    #[default]
    Both,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// Median and MAD of the baseline samples (robust to earlier incidents in the window).
    #[default]
    Mad,
    /// Exponentially weighted mean and deviation over the trailing window.
    Ewma,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seasonal {
    /// Baseline: the trailing window.
    #[default]
    None,
    /// Baseline: around the same time on previous days (daily cycles).
    Day,
    /// Baseline: around the same time on previous weeks.
    Week,
}

/// Which events a per-key count counts, and by what key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyKind {
    pub field: KeyField,
    /// Only events of this name ([`NONE`] = every event).
    pub event: Sym,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyField {
    Ip,
    User,
    Device,
}

impl KeyField {
    /// The symbol of a key's text, as ingestion computes it (user ids hash like `Event::user`).
    pub fn sym(self, text: &str) -> Sym {
        match self {
            KeyField::User => xxhash_rust::xxh3::xxh3_64(text.as_bytes()),
            _ => sym(text),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyField::Ip => "ip",
            KeyField::User => "user",
            KeyField::Device => "device",
        }
    }
}

fn default_window() -> u32 {
    60
}
fn default_smooth() -> u32 {
    5
}
fn default_seasons() -> u32 {
    2
}
fn default_sensitivity() -> f64 {
    5.0
}
fn default_min_baseline() -> f64 {
    20.0
}
fn default_burst_window() -> u32 {
    5
}
fn default_relative() -> u32 {
    360
}

/// When a rule is bad, by kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// The series leaves its baseline by more than `sensitivity` robust deviations.
    Anomaly {
        series: SeriesDef,
        #[serde(default)]
        detector: Detector,
        #[serde(default)]
        direction: Direction,
        /// Trailing baseline length (no seasonality), in minutes.
        #[serde(default = "default_window")]
        window_minutes: u32,
        #[serde(default)]
        seasonal: Seasonal,
        /// Previous days / weeks compared with (seasonal).
        #[serde(default = "default_seasons")]
        seasons: u32,
        /// The value is the sum over this many buckets (less noise, a little more delay).
        #[serde(default = "default_smooth")]
        smooth: u32,
        #[serde(default = "default_sensitivity")]
        sensitivity: f64,
        /// Quiet series never alert: the larger side (value for up, baseline for down) must
        /// reach this (for rates: the denominator).
        #[serde(default = "default_min_baseline")]
        min_baseline: f64,
    },
    /// The series crosses a value, absolute or relative to its trailing mean.
    Threshold {
        series: SeriesDef,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        above: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        below: Option<f64>,
        /// Compare value / (mean over this many minutes before it) instead of the value.
        #[serde(default)]
        relative: bool,
        #[serde(default = "default_relative")]
        relative_minutes: u32,
        #[serde(default = "default_smooth")]
        smooth: u32,
        #[serde(default = "default_min_baseline")]
        min_baseline: f64,
    },
    /// A funnel step's flow conversion falls below a floor (percent) or to `drop` of its baseline.
    FunnelDrop {
        funnel: String,
        /// The step whose conversion from the step before is watched (2-based; default last).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<u8>,
        #[serde(default = "default_window")]
        window_minutes: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        floor: Option<f64>,
        /// Bad when conversion < baseline × (1 - drop).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        drop: Option<f64>,
        #[serde(default = "default_relative")]
        baseline_minutes: u32,
        /// Entries into the step before needed in the window.
        #[serde(default = "default_min_baseline")]
        min_entries: f64,
    },
    /// Fraud / bots: one key (IP, user, device) sends more than `limit` events in the window.
    Burst {
        key: KeyField,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event: Option<String>,
        #[serde(default = "default_burst_window")]
        window_minutes: u32,
        limit: i64,
    },
    /// A key over `limit` events per window; also answered by `/api/v1/limits/{rule}/{key}`.
    RateLimit {
        key: KeyField,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event: Option<String>,
        #[serde(default = "default_burst_window")]
        window_minutes: u32,
        limit: i64,
    },
    /// A user with at least `min_clicks` clicks and no page view in the window.
    ClicksWithoutViews {
        #[serde(default = "default_burst_window")]
        window_minutes: u32,
        min_clicks: i64,
    },
    /// One IP with at least `min_users` distinct users in the window.
    SharedIp {
        #[serde(default = "default_window")]
        window_minutes: u32,
        min_users: u64,
    },
}

/// Longest per-key window and trailing lookback a rule may ask for (the read model keeps per-key
/// counts this long; seasonal history is kept by the alert engine itself).
pub const MAX_KEY_WINDOW_MINUTES: u32 = 24 * 60;

impl Condition {
    /// The per-key counts this rule reads (ingestion counts only these).
    pub fn key_kinds(&self) -> Vec<KeyKind> {
        let event = |e: &Option<String>| e.as_deref().map(sym).unwrap_or(NONE);
        match self {
            Condition::Burst { key, event: e, .. } | Condition::RateLimit { key, event: e, .. } => {
                vec![KeyKind { field: *key, event: event(e) }]
            }
            Condition::ClicksWithoutViews { .. } => vec![
                KeyKind { field: KeyField::User, event: sym("click") },
                KeyKind { field: KeyField::User, event: crate::event::PAGE_VIEW },
            ],
            _ => Vec::new(),
        }
    }

    /// Minutes of per-key history the rule reads.
    pub fn key_window(&self) -> u32 {
        match self {
            Condition::Burst { window_minutes, .. }
            | Condition::RateLimit { window_minutes, .. }
            | Condition::ClicksWithoutViews { window_minutes, .. }
            | Condition::SharedIp { window_minutes, .. } => *window_minutes,
            _ => 0,
        }
    }

    pub fn series(&self) -> Option<&SeriesDef> {
        match self {
            Condition::Anomaly { series, .. } | Condition::Threshold { series, .. } => Some(series),
            _ => None,
        }
    }
}

/// The dimension a series reads, checked.
pub fn series_dim(series: &SeriesDef) -> Result<Dim, String> {
    let text = series.dim.as_deref().unwrap_or("all");
    let dim = Dim::parse(text).ok_or_else(|| {
        format!("series dim `{text}`: use all, event, page, page_view, utm_source, device or country")
    })?;
    let sessions = matches!(series.metric, Metric::Sessions | Metric::Bounces | Metric::BounceRate);
    if sessions && !matches!(dim, Dim::All | Dim::UtmSource | Dim::Device | Dim::Country) {
        return Err(format!("session series break down by utm_source, device or country, not `{text}`"));
    }
    Ok(dim)
}

/// A validated rule with what evaluation needs precomputed.
#[derive(Debug)]
pub struct AlertRule {
    pub def: AlertRuleDef,
    pub dim: Dim,
    /// Minutes per bucket: 1, or 60 for the session series (judged once the session gap after
    /// the hour has passed, see `AlertEngine`).
    pub bucket_minutes: u32,
}

impl crate::registry::Definition for AlertRule {
    type Def = AlertRuleDef;
    const KIND: &'static str = "alert rule";
    const MAX: usize = 256;
    const ROUTE: &'static str = "/api/v1/alerts/rules";

    fn new(def: AlertRuleDef) -> Result<AlertRule, String> {
        AlertRule::new(def)
    }
    fn def(&self) -> &AlertRuleDef {
        &self.def
    }
    fn name(&self) -> &str {
        &self.def.name
    }
}

pub type AlertRegistry = crate::registry::Registry<AlertRule>;

impl AlertRule {
    pub fn new(def: AlertRuleDef) -> Result<AlertRule, String> {
        crate::registry::check_name(&def.name, "alert rule")?;
        let what = format!("alert rule `{}`", def.name);
        let positive = |v: u32, field: &str| {
            if v == 0 || v > MAX_KEY_WINDOW_MINUTES {
                Err(format!("{what}: {field} must be 1..={MAX_KEY_WINDOW_MINUTES}"))
            } else {
                Ok(())
            }
        };
        if def.fire_after == Some(0) || def.resolve_after == Some(0) {
            return Err(format!("{what}: fire_after and resolve_after must be at least 1"));
        }
        let mut dim = Dim::All;
        let mut bucket_minutes = 1;
        match &def.when {
            Condition::Anomaly { series, window_minutes, smooth, sensitivity, seasons, seasonal, .. } => {
                dim = series_dim(series).map_err(|e| format!("{what}: {e}"))?;
                positive(*window_minutes, "window_minutes")?;
                if *smooth == 0 || *smooth > 60 || sensitivity.is_nan() || *sensitivity <= 0.0 {
                    return Err(format!("{what}: smooth must be 1..=60 and sensitivity above 0"));
                }
                if *seasonal != Seasonal::None && !(1..=8).contains(seasons) {
                    return Err(format!("{what}: seasons must be 1..=8"));
                }
            }
            Condition::Threshold { series, above, below, relative_minutes, smooth, .. } => {
                dim = series_dim(series).map_err(|e| format!("{what}: {e}"))?;
                positive(*relative_minutes, "relative_minutes")?;
                if above.is_none() && below.is_none() {
                    return Err(format!("{what}: set `above`, `below` or both"));
                }
                if *smooth == 0 || *smooth > 60 {
                    return Err(format!("{what}: smooth must be 1..=60"));
                }
            }
            Condition::FunnelDrop { window_minutes, baseline_minutes, floor, drop, step, .. } => {
                positive(*window_minutes, "window_minutes")?;
                positive(*baseline_minutes, "baseline_minutes")?;
                if floor.is_none() && drop.is_none() {
                    return Err(format!("{what}: set `floor` (percent), `drop` (share below baseline) or both"));
                }
                if drop.is_some_and(|d| !(0.0..1.0).contains(&d)) {
                    return Err(format!("{what}: drop is a share of the baseline, in 0..1 (0.5 = halved)"));
                }
                if *step == Some(0) || *step == Some(1) {
                    return Err(format!("{what}: step counts from 1 and the first step has no conversion; use 2.."));
                }
            }
            Condition::Burst { window_minutes, limit, .. } | Condition::RateLimit { window_minutes, limit, .. } => {
                positive(*window_minutes, "window_minutes")?;
                if *limit < 1 {
                    return Err(format!("{what}: limit must be at least 1"));
                }
            }
            Condition::ClicksWithoutViews { window_minutes, min_clicks } => {
                positive(*window_minutes, "window_minutes")?;
                if *min_clicks < 1 {
                    return Err(format!("{what}: min_clicks must be at least 1"));
                }
            }
            Condition::SharedIp { window_minutes, min_users } => {
                positive(*window_minutes, "window_minutes")?;
                if *min_users < 2 {
                    return Err(format!("{what}: min_users must be at least 2"));
                }
            }
        }
        if let Some(series) = def.when.series() {
            match series.metric {
                Metric::Sessions | Metric::Bounces | Metric::BounceRate => {
                    bucket_minutes = 60;
                }
                Metric::FunnelConversion => {
                    if series.funnel.is_none() || series.step.is_none_or(|s| s < 2) {
                        return Err(format!("{what}: funnel_conversion needs `funnel` and `step` (2..)"));
                    }
                }
                Metric::Events => {}
            }
        }
        // Detectors need three baseline samples: a window (or seasons) with fewer never judges.
        if let Condition::Anomaly { window_minutes, seasonal, seasons, .. } = &def.when {
            let samples = match seasonal {
                Seasonal::None => window_minutes / bucket_minutes,
                _ if bucket_minutes > 1 => *seasons,
                _ => 3,
            };
            if samples < 3 {
                return Err(format!(
                    "{what}: the baseline would have {samples} sample(s) per judgement; give at least 3 \
                     (window_minutes of 3 buckets, or seasons = 3 for an hourly series)"
                ));
            }
        }
        Ok(AlertRule { def, dim, bucket_minutes })
    }

    pub fn name(&self) -> &str {
        &self.def.name
    }
}

/// Rule-independent settings: `[views.alerts]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    /// Evaluate the built-in rules (see [`builtin_rules`]) besides `rules`.
    pub builtin: bool,
    /// Consecutive bad buckets before an alert fires, unless a rule says otherwise.
    pub fire_after: u32,
    /// Consecutive good buckets before it resolves.
    pub resolve_after: u32,
    /// Fired and resolved alerts kept for `/api/v1/alerts/history`.
    pub history: usize,
    /// Keys one rule may alert on at once (a flood of keys is one problem, not a thousand pages).
    pub max_keys_per_rule: usize,
    /// After an incident resolves, a rule firing on the same series within this time reopens it
    /// rather than paging again.
    pub hold_off_minutes: u32,
    pub rules: Vec<AlertRuleDef>,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            builtin: true,
            fire_after: 3,
            resolve_after: 5,
            history: 1000,
            max_keys_per_rule: 100,
            hold_off_minutes: 240,
            rules: Vec::new(),
        }
    }
}

impl AlertConfig {
    /// The rules to evaluate: built-in ones (unless the config redefines a name) then the config's.
    pub fn all_rules(&self) -> Vec<AlertRuleDef> {
        let mut rules = Vec::new();
        if self.builtin {
            rules.extend(builtin_rules().into_iter().filter(|b| self.rules.iter().all(|r| r.name != b.name)));
        }
        rules.extend(self.rules.iter().cloned());
        rules
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.fire_after == 0 || self.resolve_after == 0 || self.history == 0 || self.max_keys_per_rule == 0 {
            return Err(
                "views.alerts: fire_after, resolve_after, history and max_keys_per_rule must be at least 1".into()
            );
        }
        AlertRegistry::new(&self.all_rules()).map(|_| ())
    }

    /// Checks the funnels that funnel rules name, against `funnels` (name, number of steps).
    pub fn check_funnels(def: &AlertRuleDef, funnels: &[(String, usize)]) -> Result<(), String> {
        let (funnel, step) = match &def.when {
            Condition::FunnelDrop { funnel, step, .. } => (funnel.as_str(), *step),
            Condition::Anomaly { series, .. } | Condition::Threshold { series, .. } => match &series.funnel {
                Some(funnel) if series.metric == Metric::FunnelConversion => (funnel.as_str(), series.step),
                _ => return Ok(()),
            },
            _ => return Ok(()),
        };
        let names = || funnels.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ");
        let Some((_, steps)) = funnels.iter().find(|(n, _)| n == funnel) else {
            return Err(format!("alert rule `{}`: no funnel `{funnel}`; funnels: {}", def.name, names()));
        };
        match step {
            Some(s) if s as usize > *steps => {
                Err(format!("alert rule `{}`: funnel `{funnel}` has {steps} steps, not {s}", def.name))
            }
            _ => Ok(()),
        }
    }
}

/// Rules every engine evaluates unless `builtin = false`: they need no funnel or page names.
/// Per-key rules cost a count per event and key kind, so the built-in ones share one kind (the
/// IP); per-user bursts and clicks without views are in `examples/clickflow.toml`.
pub fn builtin_rules() -> Vec<AlertRuleDef> {
    serde_json::from_value(serde_json::json!([
        {"name": "traffic_anomaly", "severity": "critical",
         "labels": {"team": "web"},
         "when": {"kind": "anomaly", "series": {"metric": "events"}, "seasonal": "day", "seasons": 2,
                  "smooth": 5, "sensitivity": 6.0, "min_baseline": 50.0}},
        {"name": "traffic_anomaly_fast", "severity": "warning",
         "when": {"kind": "anomaly", "series": {"metric": "events"}, "window_minutes": 60,
                  "smooth": 5, "sensitivity": 8.0, "min_baseline": 50.0}},
        {"name": "purchases_drop", "severity": "critical", "labels": {"team": "payments"},
         "when": {"kind": "anomaly", "series": {"metric": "events", "dim": "event", "key": "purchase"},
                  "direction": "down", "window_minutes": 120, "smooth": 15, "sensitivity": 5.0,
                  "min_baseline": 20.0}},
        {"name": "ip_burst", "severity": "warning", "labels": {"team": "fraud"},
         "when": {"kind": "burst", "key": "ip", "window_minutes": 5, "limit": 600}},
        {"name": "shared_ip", "severity": "warning", "labels": {"team": "fraud"},
         "when": {"kind": "shared_ip", "window_minutes": 30, "min_users": 15}},
        {"name": "one_hit_direct", "severity": "warning", "labels": {"team": "fraud"},
         "when": {"kind": "threshold", "series": {"metric": "bounces", "dim": "utm_source", "key": "(none)"},
                  "above": 3.0, "relative": true, "relative_minutes": 1440, "smooth": 1, "min_baseline": 100.0}},
        {"name": "ip_rate_limit", "severity": "info", "labels": {"team": "edge"},
         "when": {"kind": "rate_limit", "key": "ip", "window_minutes": 1, "limit": 300}}
    ]))
    .expect("the built-in rules parse")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rules_are_valid_and_unknown_fields_are_refused() {
        AlertConfig::default().validate().unwrap();
        let bad = serde_json::json!({"name": "x", "when": {"kind": "burst", "key": "ip", "limit": 5, "limt": 3}});
        let err = serde_json::from_value::<AlertRuleDef>(bad).unwrap_err().to_string();
        assert!(err.contains("limt"), "{err}");
        let bad = serde_json::json!({"name": "x", "when": {"kind": "threshold", "series": {"metric": "events"}}});
        let def: AlertRuleDef = serde_json::from_value(bad).unwrap();
        assert!(AlertRule::new(def).unwrap_err().contains("above"));
    }
}
