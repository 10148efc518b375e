//! Alert delivery: a planner turns the engine's alerts into queued Slack calls (see `plan`), and one
//! worker per channel sends them in order, at most one per `channel_interval_ms`, waiting out 429s
//! and retrying failures with backoff. Nothing leaves a queue until Slack accepted it (or refused
//! it for good), and the queues are on disk: Slack being down delays delivery, never drops it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use read::ReadModel;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::alert_message;
use crate::config::BotConfig;
use crate::outbox::{Entry, Outbox};
use crate::plan;
use crate::render::Message;
use crate::slack::{SendError, Transport};
use crate::state::{Op, State, Store};

/// Where the planner reads alerts: `(engine head ms, alerts)`. The read model by default.
pub type AlertSource = Box<dyn Fn() -> (Option<i64>, Vec<read::model::Alert>) + Send + Sync>;

/// Delivered resolved alerts are forgotten after this long.
const KEEP_MS: i64 = 14 * 86_400_000;

pub struct Delivery {
    pub config: BotConfig,
    pub model: Arc<ReadModel>,
    pub alerting: Arc<alerting::Alerting>,
    pub transport: Transport,
    pub outbox: Outbox,
    state: Mutex<State>,
    store: Store,
    wake: Mutex<HashMap<String, Arc<Notify>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    source: AlertSource,
    /// Counters for `/metrics`-style reporting in the outbox endpoint.
    pub failures: std::sync::atomic::AtomicU64,
    pub sent: std::sync::atomic::AtomicU64,
}

impl Delivery {
    pub fn new(
        config: BotConfig,
        model: Arc<ReadModel>,
        alerting: Arc<alerting::Alerting>,
        transport: Transport,
        store: Store,
    ) -> Result<Arc<Delivery>, String> {
        let state = match &store.0 {
            Some(path) => State::load(path)?,
            None => State::default(),
        };
        let from = alerting.clone();
        let source: AlertSource = Box::new(move || {
            let (_, active) = from.active();
            let (clock, history) = from.history();
            (clock.head_ms, plan::occurrences(active, history))
        });
        Ok(Arc::new(Delivery {
            source,
            outbox: Outbox::new(config.outbox_size),
            config,
            model,
            alerting,
            transport,
            state: Mutex::new(state),
            store,
            wake: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            failures: Default::default(),
            sent: Default::default(),
        }))
    }

    /// Reads alerts from `source` instead of the read model (tests script incidents with it).
    pub fn with_source(self: Arc<Self>, source: AlertSource) -> Arc<Self> {
        let mut me = Arc::try_unwrap(self).unwrap_or_else(|_| panic!("with_source before start"));
        me.source = source;
        Arc::new(me)
    }

    /// Starts the planner and the channel workers on the current tokio runtime.
    pub fn start(self: &Arc<Self>) {
        let channels: Vec<String> = self.state.lock().queues.keys().cloned().collect();
        for channel in channels {
            self.worker(&channel);
        }
        let me = self.clone();
        let planner = tokio::spawn(async move {
            loop {
                me.tick(alerting::now_ms());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        self.tasks.lock().push(planner);
    }

    /// Stops every task (a send in flight is abandoned; its op stays queued).
    pub fn stop(&self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        self.wake.lock().clear();
    }

    /// One planning round at wall clock `now_ms`.
    pub fn tick(self: &Arc<Self>, now_ms: i64) {
        let (head_ms, alerts) = (self.source)();
        let mut state = self.state.lock();
        if plan::plan(&mut state, &self.config, &alerts, head_ms, now_ms) {
            state.prune(now_ms, KEEP_MS);
            self.persist(&state);
            let channels: Vec<String> =
                state.queues.iter().filter(|(_, q)| !q.is_empty()).map(|(c, _)| c.clone()).collect();
            drop(state);
            for channel in channels {
                self.worker(&channel).notify_one();
            }
        }
    }

    /// A snapshot of the delivery state (tests and the outbox endpoint).
    pub fn state(&self) -> State {
        self.state.lock().clone()
    }

    /// Records who acknowledged a group and rewrites its message.
    pub fn acknowledge(self: &Arc<Self>, group: u64, user: &str) -> Result<(), String> {
        self.change_group(group, |g| g.acked_by = Some(user.to_string()))
    }

    /// Silences the group's firing alerts for `minutes` and rewrites its message.
    pub fn snooze(self: &Arc<Self>, group: u64, minutes: i64, user: &str, now_ms: i64) -> Result<(), String> {
        let until = now_ms + minutes * 60_000;
        let ids: Vec<String> = {
            let state = self.state.lock();
            let g = state.groups.get(&group).ok_or_else(|| format!("no alert message {group}"))?;
            g.alerts.iter().filter_map(|k| state.alerts.get(k)).map(|t| t.alert.id.clone()).collect()
        };
        for id in ids {
            self.alerting.silence(id, until, Some(format!("snoozed from Slack by <@{user}>")))?;
        }
        self.change_group(group, |g| {
            g.snoozed_until_ms = Some(until);
            g.snoozed_by = Some(user.to_string());
        })
    }

    fn change_group(self: &Arc<Self>, group: u64, change: impl FnOnce(&mut crate::state::Group)) -> Result<(), String> {
        let mut state = self.state.lock();
        let g = state.groups.get_mut(&group).ok_or_else(|| format!("no alert message {group}"))?;
        change(g);
        let channel = g.channel.clone();
        state.push(&channel, Op::Update { group });
        self.persist(&state);
        drop(state);
        self.worker(&channel).notify_one();
        Ok(())
    }

    fn persist(&self, state: &State) {
        if let Some(path) = &self.store.0 {
            if let Err(e) = state.save(path) {
                tracing::error!(error = %e, path = %path.display(), "cannot save the bot's delivery state; a restart may re-send");
            }
        }
    }

    /// The wake-up of `channel`'s worker, starting the worker on first use.
    fn worker(self: &Arc<Self>, channel: &str) -> Arc<Notify> {
        let mut wake = self.wake.lock();
        if let Some(n) = wake.get(channel) {
            return n.clone();
        }
        let notify = Arc::new(Notify::new());
        wake.insert(channel.to_string(), notify.clone());
        let (me, channel, n) = (self.clone(), channel.to_string(), notify.clone());
        self.tasks.lock().push(tokio::spawn(async move { me.run_channel(channel, n).await }));
        notify
    }

    async fn run_channel(self: Arc<Self>, channel: String, wake: Arc<Notify>) {
        let interval = Duration::from_millis(self.config.channel_interval_ms);
        let max_backoff = Duration::from_secs(self.config.max_backoff_seconds.max(1));
        let mut backoff = Duration::from_millis(500);
        loop {
            let front = self.state.lock().queues.get(&channel).and_then(|q| q.front().cloned());
            let Some(op) = front else {
                // Woken by the planner; the timeout only guards against a lost wake-up.
                let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
                continue;
            };
            if let Op::Post { not_before_ms, .. } = op {
                let wait = not_before_ms - alerting::now_ms();
                if wait > 0 {
                    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                    continue;
                }
            }
            match self.send(&channel, &op).await {
                Ok(()) => {
                    backoff = Duration::from_millis(500);
                    tokio::time::sleep(interval).await;
                }
                Err(SendError::RateLimited(after)) => tokio::time::sleep(after).await,
                Err(SendError::Transient(_)) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(max_backoff);
                }
                Err(SendError::Permanent(_)) => {
                    self.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.finish(&channel, &op, None);
                }
            }
        }
    }

    /// Sends the front op of `channel`; on success it leaves the queue.
    async fn send(&self, channel: &str, op: &Op) -> Result<(), SendError> {
        let now = alerting::now_ms();
        let Some(call) = self.render(channel, op, now) else {
            self.finish(channel, op, None);
            return Ok(());
        };
        let result = match &call {
            Call::Post { to, thread_ts, message } => {
                self.transport.post(to, thread_ts.as_deref(), message).await.map(Some)
            }
            Call::Update { to, ts, message } => self.transport.update(to, ts, message).await.map(|_| None),
        };
        let status = match &result {
            Ok(_) if self.transport.is_dry_run() => "dry_run".to_string(),
            Ok(_) => "sent".to_string(),
            Err(e @ SendError::Permanent(_)) => format!("failed: {e}"),
            Err(e) => format!("retrying: {e}"),
        };
        self.record(channel, &call, result.as_ref().ok().cloned().flatten().map(|(ts, _)| ts), status.clone());
        match result {
            Ok(ts) => {
                self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if self.transport.is_dry_run() {
                    tracing::info!(channel, text = %call.message().text, "bot dry run: would post");
                }
                self.finish(channel, op, ts);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(channel, error = %e, "Slack delivery");
                Err(e)
            }
        }
    }

    /// Takes `op` off the queue and records what it achieved.
    fn finish(&self, channel: &str, op: &Op, posted: Option<(String, String)>) {
        let mut state = self.state.lock();
        if let (Op::Post { group, .. }, Some((ts, channel_id))) = (op, posted) {
            if let Some(g) = state.groups.get_mut(group) {
                g.ts = Some(ts);
                g.channel_id = Some(channel_id);
            }
        }
        if let Some(q) = state.queues.get_mut(channel) {
            if q.front() == Some(op) {
                q.pop_front();
            }
        }
        self.persist(&state);
    }

    /// What `op` sends, rendered from the state now (`None`: nothing left to send).
    fn render(&self, channel: &str, op: &Op, now_ms: i64) -> Option<Call> {
        if let Op::Digest { every } = op {
            // Read-model queries: not under the state lock.
            let message = alert_message::digest(&self.model, &self.alerting, *every);
            return Some(Call::Post { to: channel.to_string(), thread_ts: None, message });
        }
        let mut state = self.state.lock();
        if let Op::Post { group, .. } = op {
            // From here on, later alerts of the rule open a new group instead of joining one
            // whose message is already on its way.
            state.groups.get_mut(group)?.sealed = true;
        }
        let group_message = |id: &u64| {
            let g = state.groups.get(id)?;
            let alerts: Vec<_> = g.alerts.iter().filter_map(|k| state.alerts.get(k)).collect();
            let to = g.channel_id.clone().unwrap_or_else(|| channel.to_string());
            Some((g, to, alert_message::group_message(*id, g, &alerts, now_ms)))
        };
        match op {
            Op::Post { group, .. } => {
                let (_, to, message) = group_message(group)?;
                Some(Call::Post { to, thread_ts: None, message })
            }
            Op::Reply { group, alert, kind } => {
                let tracked = state.alerts.get(alert)?;
                let message = alert_message::reply(tracked, *kind);
                let g = state.groups.get(group)?;
                let to = g.channel_id.clone().unwrap_or_else(|| channel.to_string());
                // Without a posted parent (Slack refused it), the reply stands alone.
                Some(Call::Post { to, thread_ts: g.ts.clone(), message })
            }
            Op::Update { group } => {
                let (g, to, message) = group_message(group)?;
                Some(Call::Update { to, ts: g.ts.clone()?, message })
            }
            Op::Digest { .. } => unreachable!("rendered above"),
        }
    }

    fn record(&self, channel: &str, call: &Call, ts: Option<String>, status: String) {
        let (method, thread_ts, message) = match call {
            Call::Post { thread_ts, message, .. } => ("chat.postMessage", thread_ts.clone(), message),
            Call::Update { message, .. } => ("chat.update", None, message),
        };
        let ts = ts.or_else(|| match call {
            Call::Update { ts, .. } => Some(ts.clone()),
            Call::Post { .. } => None,
        });
        self.outbox.record(Entry {
            at_ms: alerting::now_ms(),
            method,
            channel: channel.to_string(),
            thread_ts,
            ts,
            status,
            text: message.text.clone(),
            blocks: serde_json::to_value(&message.blocks).unwrap_or_default(),
        });
    }
}

/// One Slack call; `to` is the channel's id once Slack has told us, its name before.
enum Call {
    Post { to: String, thread_ts: Option<String>, message: Message },
    Update { to: String, ts: String, message: Message },
}

impl Call {
    fn message(&self) -> &Message {
        match self {
            Call::Post { message, .. } | Call::Update { message, .. } => message,
        }
    }
}
