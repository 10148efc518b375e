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
}
