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
