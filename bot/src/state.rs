//! What the bot has delivered, kept on disk so a restart (even one that rebuilds the views and
//! re-fires every alert) sends nothing twice and still threads the resolve under the original.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use read::model::Alert;
use serde::{Deserialize, Serialize};

use crate::config::Every;

/// One Slack message carrying the alerts of one rule that fired together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub channel: String,
    pub rule: String,
    /// Keys (`id@started_ms`) of its alerts, in the order they joined.
    pub alerts: Vec<String>,
    /// The message's `ts` once posted: replies thread under it, updates rewrite it.
    pub ts: Option<String>,
    /// The channel's id as Slack answered the post (`chat.update` takes ids, not names).
    #[serde(default)]
    pub channel_id: Option<String>,
    /// Rendered for posting: later alerts of the rule open a new group.
    #[serde(default)]
    pub sealed: bool,
    pub acked_by: Option<String>,
    pub snoozed_until_ms: Option<i64>,
    pub snoozed_by: Option<String>,
    /// Wall clock: when the group was opened; alerts of the rule join it until the post leaves.
    pub opened_ms: i64,
}

/// One alert occurrence the bot took on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tracked {
    /// The latest state seen (value, resolve time...).
    pub alert: Alert,
    pub group: u64,
    /// The resolve reply and message update are queued (or were sent).
    pub resolve_queued: bool,
    /// Wall clock of the last notification (first post or repeat), for the repeat interval.
    pub notified_ms: i64,
    /// Wall clock when the resolve was queued (pruning counts from it).
    #[serde(default)]
    pub resolved_at_ms: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyKind {
    Resolved,
    StillFiring,
    /// Fired again within the hold-off: the same incident, in its thread.
    Reopened,
}

/// One call to Slack, queued per channel; rendered from the state when it is sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// `chat.postMessage` of a group, not before `not_before_ms` (the grouping wait).
    Post {
        group: u64,
        not_before_ms: i64,
    },
    /// A reply in the group's thread.
    Reply {
        group: u64,
        alert: String,
        kind: ReplyKind,
    },
    /// `chat.update` of the group's message.
    Update {
        group: u64,
    },
    Digest {
        every: Every,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    pub next_group: u64,
    pub groups: BTreeMap<u64, Group>,
    pub alerts: BTreeMap<String, Tracked>,
    /// Per channel, in order: what is still to be sent (survives a restart).
    pub queues: BTreeMap<String, VecDeque<Op>>,
    /// `channel|hourly` → index of the last period a digest was queued for.
    pub digests: BTreeMap<String, i64>,
}

pub fn alert_key(alert: &Alert) -> String {
    format!("{}@{}", alert.id, alert.started_ms)
}

impl State {
    pub fn load(path: &Path) -> Result<State, String> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{}: not the bot's delivery state ({e}); fix or remove it (alerts may then be re-sent)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        schema::registry::save(path, &serde_json::to_vec(self).expect("serialisable"))
    }

    pub fn push(&mut self, channel: &str, op: Op) {
        let queue = self.queues.entry(channel.to_string()).or_default();
        // An update or digest renders the state when sent: one waiting (behind the head, which may
        // be in flight) already covers this one.
        if matches!(op, Op::Update { .. } | Op::Digest { .. }) && queue.iter().skip(1).any(|o| *o == op) {
            return;
        }
        queue.push_back(op);
    }

    pub fn pending(&self) -> usize {
        self.queues.values().map(VecDeque::len).sum()
    }

    /// Forgets resolved alerts (and their groups) delivered more than `keep_ms` ago, so the file
    /// stays small; re-fired copies of them would be older than any rebuild window by then.
    pub fn prune(&mut self, now_ms: i64, keep_ms: i64) {
        let queued: std::collections::BTreeSet<u64> = self
            .queues
            .values()
            .flatten()
            .filter_map(|op| match op {
                Op::Post { group, .. } | Op::Reply { group, .. } | Op::Update { group } => Some(*group),
                Op::Digest { .. } => None,
            })
            .collect();
        let old = |t: &Tracked| t.resolved_at_ms.is_some_and(|at| now_ms - at > keep_ms) && !queued.contains(&t.group);
        self.alerts.retain(|_, t| !old(t));
        let alerts = &self.alerts;
        self.groups.retain(|id, g| queued.contains(id) || g.alerts.iter().any(|k| alerts.contains_key(k)));
    }
}

/// Where the state lives; `None` keeps it in memory only.
#[derive(Clone, Debug, Default)]
pub struct Store(pub Option<PathBuf>);
