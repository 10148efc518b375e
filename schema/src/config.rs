//! How long views keep data and how their windows are defined.

use serde::{Deserialize, Serialize};

use crate::sessions::SessionConfig;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ViewConfig {
    /// Per-minute counts are kept this long behind `as_of` (then retracted).
    pub window_minutes: u32,
    /// "Active users now": distinct users with an event in this many most recent minutes.
    pub active_minutes: u32,
    /// How far back the active-users series is kept.
    pub active_history_minutes: u32,
    /// Window of "top pages" and the live breakdowns.
    pub top_minutes: u32,
    /// Trending compares the top window against this many minutes before it.
    pub trend_baseline_minutes: u32,
    /// A page needs this many views in the top window to trend.
    pub trend_min_views: i64,
    /// Rows in top and trending lists.
    pub top_n: usize,
    pub sessions: SessionConfig,
    /// Events kept per user for funnels (the most recent); a bot beyond it is evaluated on its
    /// latest events only, so its cost per epoch stays bounded.
    pub max_events_per_user: usize,
    /// Funnels defined from the start (more can be added through the API).
    pub funnels: Vec<crate::funnels::FunnelDef>,
    /// Path graph: page cleaning rules and the conversion events that are path steps.
    pub paths: crate::paths::PathConfig,
    /// Retention definitions from the start (more can be added through the API).
    pub retention: Vec<crate::retention::RetentionDef>,
    /// Alert rules and their lifecycle settings.
    pub alerts: crate::alert_rules::AlertConfig,
}

impl Default for ViewConfig {
    fn default() -> Self {
        ViewConfig {
            window_minutes: 24 * 60,
            active_minutes: 5,
            active_history_minutes: 60,
            top_minutes: 15,
            trend_baseline_minutes: 60,
            trend_min_views: 5,
            top_n: 10,
            sessions: SessionConfig::default(),
            max_events_per_user: 1000,
            funnels: Vec::new(),
            paths: crate::paths::PathConfig::default(),
            retention: Vec::new(),
            alerts: crate::alert_rules::AlertConfig::default(),
        }
    }
}

impl ViewConfig {
    /// Checks relations between fields that serde cannot; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.active_minutes == 0 || self.top_minutes == 0 || self.trend_baseline_minutes == 0 {
            return Err("views: active_minutes, top_minutes and trend_baseline_minutes must be at least 1".into());
        }
        if self.top_minutes + self.trend_baseline_minutes > self.window_minutes {
            return Err(format!(
                "views: window_minutes ({}) must cover top_minutes + trend_baseline_minutes ({}); raise window_minutes",
                self.window_minutes,
                self.top_minutes + self.trend_baseline_minutes
            ));
        }
        if self.top_n == 0 {
            return Err("views: top_n must be at least 1".into());
        }
        if self.max_events_per_user == 0 {
            return Err("views: max_events_per_user must be at least 1".into());
        }
        crate::funnels::FunnelRegistry::new(&self.funnels).map(|_| ())?;
        crate::retention::RetentionRegistry::new(&self.retention).map(|_| ())?;
        crate::paths::Cleaner::new(&self.paths)?;
        self.alerts.validate()?;
        let funnels: Vec<(String, usize)> = self.funnels.iter().map(|f| (f.name.clone(), f.steps.len())).collect();
        for rule in self.alerts.all_rules() {
            crate::alert_rules::AlertConfig::check_funnels(&rule, &funnels)?;
        }
        self.sessions.validate()
    }

    /// Oldest minute of counts a read can still need, given the `as_of` minute.
    pub fn counts_from(&self, as_of_minute: crate::time::Minute) -> crate::time::Minute {
        (as_of_minute + 1).saturating_sub(self.window_minutes)
    }

    /// Oldest session start hour a read can still need: the hour holding [`Self::counts_from`].
    pub fn session_hours_from(&self, as_of_minute: crate::time::Minute) -> crate::time::Hour {
        self.counts_from(as_of_minute) / 60
    }

    /// Oldest user-minute a read can still need, relative to the `as_of` minute.
    pub fn user_minutes_kept(&self) -> u32 {
        self.active_history_minutes + self.active_minutes
    }
}
