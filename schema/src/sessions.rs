//! Session semantics: how events group into sessions, and the aggregates a session contributes.

use serde::{Deserialize, Serialize};

use crate::cells::Dim;
use crate::event::Sym;
use crate::time::{Minute, MS_PER_HOUR};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKey {
    /// Sessions by inactivity: a gap over `inactivity_minutes` starts a new one.
    Inactivity,
    /// Events carrying the producer's `session_id` are grouped by it (still cut at `max_hours`);
    /// events without one fall back to inactivity.
    SessionId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    pub inactivity_minutes: u32,
    pub max_hours: u32,
    /// A session with one page view that lasts less than this is a bounce.
    pub bounce_seconds: u32,
    pub key: SessionKey,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig { inactivity_minutes: 30, max_hours: 24, bounce_seconds: 10, key: SessionKey::Inactivity }
    }
}

impl SessionConfig {
    /// Minutes after an hour before the sessions that started in it are final: the gap, or the
    /// longest session when sessions are keyed by the producer's id (no gap ends them).
    pub fn settle_minutes(&self) -> u32 {
        match self.key {
            SessionKey::Inactivity => self.inactivity_minutes,
            SessionKey::SessionId => self.max_hours * 60,
        }
    }

    pub fn timeout_ms(&self) -> i64 {
        self.inactivity_minutes as i64 * 60_000
    }
    pub fn max_ms(&self) -> i64 {
        self.max_hours as i64 * MS_PER_HOUR
    }
    pub fn validate(&self) -> Result<(), String> {
        if self.inactivity_minutes == 0 || self.max_hours == 0 {
            return Err("views.sessions: inactivity_minutes and max_hours must be at least 1".into());
        }
        if self.timeout_ms() > self.max_ms() {
            return Err("views.sessions: inactivity_minutes must not exceed max_hours".into());
        }
        Ok(())
    }
}

/// One aggregate a session contributes to; the cell's count carries the amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SessionStat {
    Sessions,
    Bounces,
    DurationMs,
    Events,
    PageViews,
    /// One session of this many whole seconds (for exact medians).
    DurationSecs(u32),
    Entry(Sym),
    Exit(Sym),
    /// One session whose last event is in this minute (for "in progress").
    EndMinute(Minute),
}

/// Index of each breakdown in a session's acquisition (`[utm_source, device, country]`).
pub const BREAKDOWNS: [(Dim, usize); 3] = [(Dim::UtmSource, 0), (Dim::Device, 1), (Dim::Country, 2)];
