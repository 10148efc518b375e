//! The JSON shapes that the API serves and `replay --dump` writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Clock {
    /// Event time up to which every view is complete (RFC 3339); later minutes may still change.
    pub as_of: Option<String>,
    pub as_of_ms: Option<i64>,
    /// Highest event time seen: "now" for the live numbers.
    pub head: Option<String>,
    pub head_ms: Option<i64>,
    /// Ingestion epoch of the snapshot.
    pub epoch: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageCount {
    pub page: String,
    pub views: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrendingPage {
    pub page: String,
    /// Views in the top window.
    pub views: i64,
    /// Views in the baseline window before it.
    pub baseline_views: i64,
    /// Rate in the top window over the baseline rate (baseline of zero counts as one view).
    pub growth: f64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCount {
    pub key: String,
    pub count: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Live {
    #[serde(flatten)]
    pub clock: Clock,
    pub active_users: u64,
    pub active_window_minutes: u32,
    /// Events in the last complete minute before `head`.
    pub events_per_minute: i64,
    /// Events so far in the minute of `head`.
    pub events_this_minute: i64,
    /// Last complete minute, by event name.
    pub events_by_name: Vec<KeyCount>,
    pub top_window_minutes: u32,
    pub top_pages: Vec<PageCount>,
    pub trending_pages: Vec<TrendingPage>,
    /// Events in the top window by `utm_source`, `device` and `country`.
    pub breakdowns: BTreeMap<String, Vec<KeyCount>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    pub minute_ms: i64,
    pub value: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Series {
    pub key: String,
    pub total: i64,
    pub points: Vec<Point>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timeseries {
    #[serde(flatten)]
    pub clock: Clock,
    pub metric: String,
    pub breakdown: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub series: Vec<Series>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejects {
    pub total: i64,
    pub by_reason: BTreeMap<String, i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveUsersPoint {
    pub minute_ms: i64,
    pub users: u64,
}

/// Every view's state, as `replay --dump` writes it and the oracle computes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dump {
    pub live: Live,
    pub accepted: i64,
    pub rejects: Rejects,
    /// dimension -> key -> minute (ms) -> count, for minutes still in the window.
    pub counts: BTreeMap<String, BTreeMap<String, BTreeMap<i64, i64>>>,
    /// Active users for each window end in the kept history.
    pub active_users: Vec<ActiveUsersPoint>,
    pub sessions: SessionsDump,
    pub funnels: BTreeMap<String, FunnelDump>,
    /// Retention matrices in both modes, by definition.
    pub retention: BTreeMap<String, [RetentionMatrix; 2]>,
    pub paths: PathEdges,
}

/// Exact integer totals over a set of sessions (what the reference recomputes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTotals {
    pub sessions: i64,
    pub bounces: i64,
    pub duration_ms: i64,
    pub events: i64,
    pub page_views: i64,
    /// Lower median of the durations in whole seconds.
    pub median_duration_s: Option<u32>,
    /// Sessions whose last event is within the inactivity timeout of `head` (to the minute).
    pub in_progress: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    #[serde(flatten)]
    pub totals: SessionTotals,
    pub avg_duration_s: f64,
    pub pages_per_session: f64,
    pub events_per_session: f64,
    pub bounce_rate: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyedSessions {
    pub key: String,
    #[serde(flatten)]
    pub summary: SessionSummary,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeCount {
    pub start_ms: i64,
    pub sessions: i64,
}

/// `GET /api/v1/sessions`: sessions that started in `[from_ms, to_ms)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sessions {
    #[serde(flatten)]
    pub clock: Clock,
    pub from_ms: i64,
    pub to_ms: i64,
    pub inactivity_minutes: u32,
    pub summary: SessionSummary,
    pub hourly: Vec<TimeCount>,
    /// Per UTC day (the first and last day may be partial).
    pub daily: Vec<TimeCount>,
    pub top_entry_pages: Vec<KeyCount>,
    pub top_exit_pages: Vec<KeyCount>,
    /// By the first event's `utm_source`, `device` and `country`, most sessions first.
    pub breakdowns: BTreeMap<String, Vec<KeyedSessions>>,
}

/// One `(dim, key)` of sessions in the dump: totals and every entry and exit page.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCells {
    #[serde(flatten)]
    pub totals: SessionTotals,
    pub entry: BTreeMap<String, i64>,
    pub exit: BTreeMap<String, i64>,
}

/// Every session aggregate still in the window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionsDump {
    /// Sessions by start hour (ms).
    pub hourly: BTreeMap<i64, i64>,
    /// dimension -> key -> cells (`all` has the key `(none)`).
    pub by: BTreeMap<String, BTreeMap<String, SessionCells>>,
}

/// One step of a funnel report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunnelStep {
    /// 1-based.
    pub step: usize,
    pub event: String,
    /// Users whose best attempt reached this step.
    pub users: i64,
    pub conversion_from_previous: f64,
    pub conversion_from_start: f64,
    /// Users who reached the previous step but not this one.
    pub drop_off: i64,
    /// From the previous step, in whole seconds (nearest rank).
    pub median_time_s: Option<u32>,
    pub p90_time_s: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunnelDay {
    /// UTC day on which the attempts started.
    pub day_ms: i64,
    pub entered: i64,
    pub converted: i64,
    pub conversion: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunnelBreakdown {
    pub key: String,
    pub steps: Vec<FunnelStep>,
}

/// The numbers of one funnel (without the clock: the dump and the API share it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunnelNumbers {
    pub steps: Vec<FunnelStep>,
    pub by_day: Vec<FunnelDay>,
    /// By the breakdown value of the attempt's first event, most users first.
    pub breakdowns: Vec<FunnelBreakdown>,
}

/// `GET /api/v1/funnels/{name}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunnelReport {
    #[serde(flatten)]
    pub clock: Clock,
    pub definition: schema::funnels::FunnelDef,
    #[serde(flatten)]
    pub numbers: FunnelNumbers,
    /// Users sitting at each step (1-based index - 1) whose conversion window is still open.
    pub open_now: Vec<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunnelSummary {
    pub name: String,
    pub steps: usize,
    pub order: schema::funnels::Order,
    pub window_minutes: u32,
    pub entered: i64,
    pub converted: i64,
    pub conversion: f64,
}

/// `GET /api/v1/funnels`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunnelList {
    #[serde(flatten)]
    pub clock: Clock,
    pub funnels: Vec<FunnelSummary>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StuckUser {
    pub user: String,
    /// When the attempt started, and when its window closes.
    pub entered_ms: i64,
    pub window_ends_ms: i64,
}

/// `GET /api/v1/funnels/{name}/stuck?step=N`: users who completed step N and not N + 1, with
/// their conversion window still open at `head`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StuckUsers {
    #[serde(flatten)]
    pub clock: Clock,
    pub funnel: String,
    pub step: usize,
    pub total: i64,
    pub offset: usize,
    pub users: Vec<StuckUser>,
}

/// A funnel in the dump: its numbers and every open attempt `(step, start ms, user)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunnelDump {
    #[serde(flatten)]
    pub numbers: FunnelNumbers,
    pub open_attempts: Vec<(u8, i64, String)>,
}

/// One cohort's row of a retention matrix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cohort {
    /// First day of the cohort's period (UTC), `YYYY-MM-DD`.
    pub cohort: String,
    pub size: i64,
    /// Users retained in period 0, 1, ... up to the current period (period 0 is the cohort).
    pub returned: Vec<i64>,
    /// `returned` as a percentage of `size` (0 for an empty cohort).
    pub percent: Vec<f64>,
}

/// The mean retention in one period over the cohorts that have reached it, weighted by size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetentionPoint {
    pub period: u32,
    pub percent: f64,
    /// Cohorts (with users) that have reached this period.
    pub cohorts: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetentionValue {
    pub value: String,
    pub size: i64,
}

/// A retention matrix: the last `periods` cohorts up to the period of `as_of`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetentionMatrix {
    pub mode: schema::retention::ReturnMode,
    /// The breakdown value the matrix is restricted to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdown_value: Option<String>,
    pub cohorts: Vec<Cohort>,
    pub average: Vec<RetentionPoint>,
    /// Users in the shown cohorts per breakdown value (with a breakdown), largest first.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub breakdown: Vec<RetentionValue>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetentionReport {
    #[serde(flatten)]
    pub clock: Clock,
    pub definition: schema::retention::RetentionDef,
    #[serde(flatten)]
    pub matrix: RetentionMatrix,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetentionSummary {
    pub name: String,
    pub period: schema::retention::Period,
    pub cohort: schema::retention::CohortType,
    /// Size of the newest cohort and of all shown cohorts, and the mean retention in period 1.
    pub newest_cohort: i64,
    pub users: i64,
    pub period_1_percent: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetentionList {
    #[serde(flatten)]
    pub clock: Clock,
    pub retention: Vec<RetentionSummary>,
}

/// The path graph in the dump: every edge with its count, sorted.
pub type PathEdges = Vec<(String, String, i64)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Resolved,
}

/// One occurrence of a condition, from the first bad bucket to the resolve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `rule` or `rule:key`: the same condition has the same id every time it occurs.
    pub id: String,
    /// The rule that opened the incident.
    pub rule: String,
    /// Every rule that fired in it, the opening one first (rules watching the same series share
    /// one incident).
    #[serde(default)]
    pub rules: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub severity: schema::alert_rules::Severity,
    pub labels: BTreeMap<String, String>,
    pub state: AlertState,
    /// The value of the last judged bucket, the baseline it was compared with, and the verdict
    /// in words: all three of the same bucket (while an alert recovers, of a good one).
    pub value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    pub summary: String,
    /// Event time: start of the first bad bucket of the run that fired it.
    pub started_ms: i64,
    /// Event time: end of the bucket that made it fire (start + `fire_after` buckets).
    pub fired_ms: i64,
    /// Event time: start of the first good bucket, and end of the bucket that resolved it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_ms: Option<i64>,
    /// Times a rule fired on its series again within the hold-off after it resolved, and the
    /// event time of the last (the end of the bucket that reopened it).
    #[serde(default)]
    pub reopened: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reopened_ms: Option<i64>,
    /// The API view that shows what the rule watches.
    pub link: String,
    /// Muted by a silence (set when read).
    #[serde(default)]
    pub silenced: bool,
}

impl Alert {
    /// Whether `rule` fired in this incident, opening it or joining it (silences, routes and
    /// `?rule=` all ask this).
    pub fn involves(&self, rule: &str) -> bool {
        // `rules` holds the opening one too, except in alerts kept before it existed.
        self.rule == rule || self.rules.iter().any(|r| r == rule)
    }
}

/// What the change stream and the bot receive.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertChange {
    pub action: AlertState,
    pub alert: Alert,
}

/// Mutes delivery of a rule or one alert id until a wall-clock time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: u64,
    /// A rule name or an alert id.
    pub matcher: String,
    pub until_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}
