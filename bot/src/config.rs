//! `[bot]`: where alerts go, how often, and how the Slack app is reached. Secrets are not here:
//! `SLACK_BOT_TOKEN`, `SLACK_SIGNING_SECRET` and `SLACK_APP_TOKEN` come from the environment.

use std::collections::BTreeMap;

use read::model::Alert;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BotConfig {
    /// Mount the Slack endpoints and deliver alerts.
    pub enabled: bool,
    /// `http`: Slack posts slash commands and button clicks to this server (needs a public URL).
    /// `socket`: the bot opens a WebSocket to Slack (Socket Mode; needs `SLACK_APP_TOKEN`).
    pub mode: Mode,
    /// Slack Web API base (no trailing slash); tests point it at a local fake.
    pub api_url: String,
    /// Requests larger than this are refused before they are read.
    pub max_body_bytes: usize,
    /// A command not answered within this time is acknowledged and answered via `response_url`
    /// (Slack gives up after 3 s); 0 acknowledges every command first.
    pub reply_deadline_ms: u64,
    /// Where alerts go when no route matches.
    pub default_channel: String,
    /// First match wins.
    pub routes: Vec<Route>,
    /// Alerts of one rule that fire within this wait share one message.
    pub group_wait_seconds: u64,
    /// A still-firing alert is re-notified in its thread this often (0: never).
    pub repeat_interval_minutes: u64,
    /// At most one message per channel per this interval (Slack allows ~1/s per channel).
    pub channel_interval_ms: u64,
    /// Transient failures are retried with exponential backoff up to this.
    pub max_backoff_seconds: u64,
    /// A Slack call unanswered this long is abandoned and retried (a hung connection must not
    /// hold a channel's queue).
    pub call_timeout_seconds: u64,
    /// An alert first seen already resolved is posted only if it resolved this recently (event time,
    /// against the engine's head): a rebuild after a restart does not replay old incidents.
    pub resolved_max_age_minutes: i64,
    /// Scheduled summaries.
    pub digests: Vec<Digest>,
    /// How many posts `/api/v1/bot/outbox` keeps.
    pub outbox_size: usize,
}

impl Default for BotConfig {
    fn default() -> Self {
        BotConfig {
            enabled: true,
            mode: Mode::Http,
            api_url: "https://slack.com/api".into(),
            max_body_bytes: 64 * 1024,
            reply_deadline_ms: 2_000,
            default_channel: "#alerts".into(),
            routes: Vec::new(),
            group_wait_seconds: 10,
            repeat_interval_minutes: 240,
            channel_interval_ms: 1_000,
            max_backoff_seconds: 60,
            call_timeout_seconds: 15,
            resolved_max_age_minutes: 60,
            digests: Vec::new(),
            outbox_size: 200,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Http,
    Socket,
}

/// Sends alerts matching every given condition to `channel`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub channel: String,
    #[serde(default)]
    pub rule: Option<String>,
    /// `info`, `warning` or `critical`: matches that severity and above.
    #[serde(default)]
    pub severity: Option<schema::alert_rules::Severity>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Route {
    fn matches(&self, alert: &Alert) -> bool {
        self.rule.as_ref().is_none_or(|r| alert.involves(r))
            && self.severity.is_none_or(|s| alert.severity >= s)
            && self.labels.iter().all(|(k, v)| alert.labels.get(k) == Some(v))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Digest {
    pub channel: String,
    pub every: Every,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Every {
    Hourly,
    Daily,
}

impl Every {
    pub fn period_ms(self) -> i64 {
        match self {
            Every::Hourly => 3_600_000,
            Every::Daily => 86_400_000,
        }
    }
}

impl BotConfig {
    pub fn channel_for(&self, alert: &Alert) -> &str {
        self.routes.iter().find(|r| r.matches(alert)).map_or(&self.default_channel, |r| &r.channel)
    }

    pub fn validate(&self) -> Result<(), String> {
        let channels = std::iter::once(&self.default_channel)
            .chain(self.routes.iter().map(|r| &r.channel))
            .chain(self.digests.iter().map(|d| &d.channel));
        for channel in channels {
            if channel.trim().is_empty() {
                return Err("[bot]: a channel is empty; give a channel name (#alerts) or id (C0123...)".into());
            }
        }
        if self.api_url.ends_with('/') {
            return Err(format!("[bot] api_url `{}` ends with `/`; drop it (method names are appended)", self.api_url));
        }
        if self.reply_deadline_ms >= 3_000 {
            return Err("[bot] reply_deadline_ms must be under 3000: Slack gives up on a command after 3 s".into());
        }
        if self.channel_interval_ms == 0 || self.max_body_bytes == 0 || self.call_timeout_seconds == 0 {
            return Err("[bot] channel_interval_ms, max_body_bytes and call_timeout_seconds must be positive".into());
        }
        Ok(())
    }
}

/// The secrets, from the environment only.
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    pub bot_token: Option<String>,
    pub signing_secret: Option<String>,
    pub app_token: Option<String>,
}

impl Secrets {
    pub fn from_env() -> Secrets {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Secrets {
            bot_token: var("SLACK_BOT_TOKEN"),
            signing_secret: var("SLACK_SIGNING_SECRET"),
            app_token: var("SLACK_APP_TOKEN"),
        }
    }
}
