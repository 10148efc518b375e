//! The Slack bot: slash commands answered from the read model, and alert delivery into channels.
//! Mounted into the same axum server as the API; it reads `read::ReadModel` and `alerting::Alerting` only.

pub mod alert_message;
pub mod commands;
pub mod config;
pub mod delivery;
pub mod outbox;
pub mod plan;
pub mod render;
pub mod replay;
mod respond;
pub mod slack;
mod socket;
pub mod state;
mod suggest;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use read::ReadModel;
use slack_morphism::events::SlackCommandEvent;

pub use config::{BotConfig, Secrets};
pub use delivery::Delivery;
use slack::Transport;
use state::Store;
use verify::Refusal;

#[derive(Debug, thiserror::Error)]
pub enum BotError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Setup(#[from] slack::SetupError),
}

/// The bot: configuration, secrets, the read model it answers from, and its delivery.
pub struct Bot {
    pub config: BotConfig,
    secrets: Secrets,
    pub model: Arc<ReadModel>,
    pub alerting: Arc<alerting::Alerting>,
    pub delivery: Arc<Delivery>,
    /// Signatures of the Slack requests accepted in the last 5 minutes: a second one is refused.
    replays: replay::ReplayGuard,
    /// The Socket Mode task and what tells it to close its connections.
    socket: parking_lot::Mutex<Option<(tokio::task::JoinHandle<()>, Arc<tokio::sync::Notify>)>>,
}

impl Bot {
    /// Without `SLACK_BOT_TOKEN` the bot runs dry: nothing is posted, `/api/v1/bot/outbox` shows
    /// what would have been. `state` keeps the delivery state across restarts.
    pub fn new(
        config: BotConfig,
        secrets: Secrets,
        model: Arc<ReadModel>,
        alerting: Arc<alerting::Alerting>,
        state: Option<std::path::PathBuf>,
    ) -> Result<Arc<Bot>, BotError> {
        config.validate().map_err(BotError::Config)?;
        let transport = match &secrets.bot_token {
            Some(token) => {
                let mut api = slack::SlackApi::new(&config.api_url, token)?;
                api.timeout = Duration::from_secs(config.call_timeout_seconds);
                Transport::Slack(Arc::new(api))
            }
            None => Transport::dry_run(),
        };
        let delivery = Delivery::new(config.clone(), model.clone(), alerting.clone(), transport, Store(state))
            .map_err(BotError::Config)?;
        Ok(Arc::new(Bot {
            config,
            secrets,
            model,
            alerting,
            delivery,
            replays: Default::default(),
            socket: Default::default(),
        }))
    }

    /// Reads alerts from `source` instead of the read model (tests script incidents with it).
    pub fn with_alert_source(self: Arc<Self>, source: delivery::AlertSource) -> Arc<Self> {
        let bot = Arc::try_unwrap(self).unwrap_or_else(|_| panic!("with_alert_source before the bot is shared"));
        Arc::new(Bot { delivery: bot.delivery.with_source(source), ..bot })
    }

    /// Delivery in the Prometheus text format.
    pub fn write_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let state = self.delivery.state();
        let failures = self.delivery.failures.load(std::sync::atomic::Ordering::Relaxed);
        let sent = self.delivery.sent.load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(out, "# HELP clickflow_bot_pending Slack calls waiting to be sent (all channels).\n# TYPE clickflow_bot_pending gauge\nclickflow_bot_pending {}", state.pending());
        let _ = writeln!(out, "# HELP clickflow_bot_sent_total Slack calls accepted (or logged, in a dry run).\n# TYPE clickflow_bot_sent_total counter\nclickflow_bot_sent_total {sent}");
        let _ = writeln!(out, "# HELP clickflow_bot_refused_total Slack calls refused for good (wrong channel, bad blocks) and skipped.\n# TYPE clickflow_bot_refused_total counter\nclickflow_bot_refused_total {failures}");
    }

    pub fn is_dry_run(&self) -> bool {
        self.delivery.transport.is_dry_run()
    }

    /// Starts delivery (and Socket Mode when configured) on the current tokio runtime.
    pub fn start(self: &Arc<Self>) -> Result<(), BotError> {
        if !self.config.enabled {
            return Ok(());
        }
        self.delivery.start();
        if self.config.mode == config::Mode::Socket {
            let token = self.secrets.app_token.clone().ok_or_else(|| {
                BotError::Config(
                    "[bot] mode = \"socket\" needs SLACK_APP_TOKEN (an xapp- app-level token with connections:write)"
                        .into(),
                )
            })?;
            let stop = Arc::new(tokio::sync::Notify::new());
            *self.socket.lock() = Some((socket::start(self.clone(), token, stop.clone())?, stop));
        }
        Ok(())
    }

    pub fn stop(&self) {
        self.delivery.stop();
        if let Some((_, stop)) = self.socket.lock().take() {
            // The task closes the connections itself (Slack then stops routing to them).
            stop.notify_one();
        }
    }
}

/// The bot's routes (none when disabled); merge them into the API router.
pub fn router(bot: Arc<Bot>) -> Router {
    if !bot.config.enabled {
        return Router::new();
    }
    Router::new()
        .route("/slack/commands", post(command))
        .route("/slack/interactivity", post(interactivity))
        .route("/slack/events", post(events))
        .route("/api/v1/bot/outbox", get(outbox))
        .route("/api/v1/bot/command", get(preview))
        .with_state(bot)
}

fn now_s() -> i64 {
    alerting::now_ms() / 1000
}

fn refuse(refusal: Refusal) -> Response {
    tracing::warn!(reason = %refusal, "refused a Slack request");
    (refusal.status(), Json(serde_json::json!({"error": refusal.to_string()}))).into_response()
}

async fn read_signed(bot: &Bot, headers: &HeaderMap, body: Body) -> Result<axum::body::Bytes, Response> {
    let secret = bot.secrets.signing_secret.as_deref();
    verify::verified(headers, body, secret, bot.config.max_body_bytes, now_s(), &bot.replays).await.map_err(refuse)
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(serde_json::json!({"error": message}))).into_response()
}

/// `POST /slack/commands`: answered within the deadline, or acknowledged and answered via
/// `response_url` when the answer takes longer.
async fn command(State(bot): State<Arc<Bot>>, headers: HeaderMap, body: Body) -> Response {
    let bytes = match read_signed(&bot, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let event: SlackCommandEvent = match serde_urlencoded::from_bytes(&bytes) {
        Ok(e) => e,
        Err(e) => return bad_request(format!("not a slash command form ({e})")),
    };
    let text = event.text.clone().unwrap_or_default();
    let user = event.user_id.to_string();
    let (model, alerts) = (bot.model.clone(), bot.alerting.clone());
    let answer =
        tokio::task::spawn_blocking(move || commands::answer(&model, &alerts, &text, &user, alerting::now_ms()));
    let deadline = Duration::from_millis(bot.config.reply_deadline_ms);
    match respond::by_deadline(answer, deadline, event.response_url.0.to_string()).await {
        Some(Ok(reply)) => Json(reply.json()).into_response(),
        Some(Err(e)) => {
            tracing::error!(error = %e, "a slash command failed");
            Json(serde_json::json!({"response_type": "ephemeral", "text": "Sorry, that command failed inside clickflow; the server log has the details."})).into_response()
        }
        // 0 acknowledges every command first (for proxies that add their own delay).
        None => Json(serde_json::json!({"response_type": "ephemeral", "text": "Working on it…"})).into_response(),
    }
}

#[derive(serde::Deserialize)]
struct InteractionForm {
    payload: String,
}

/// `POST /slack/interactivity`: Acknowledge and Snooze buttons on alert messages.
async fn interactivity(State(bot): State<Arc<Bot>>, headers: HeaderMap, body: Body) -> Response {
    let bytes = match read_signed(&bot, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let payload: serde_json::Value = match serde_urlencoded::from_bytes::<InteractionForm>(&bytes)
        .map_err(|e| e.to_string())
        .and_then(|f| serde_json::from_str(&f.payload).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => return bad_request(format!("not an interactivity payload ({e})")),
    };
    match apply_actions(&bot, &payload) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "a button click could not be applied");
            bad_request(e)
        }
    }
}

/// Applies the buttons of a `block_actions` payload (HTTP or Socket Mode); other payloads are ignored.
fn apply_actions(bot: &Arc<Bot>, payload: &serde_json::Value) -> Result<(), String> {
    if payload["type"] != "block_actions" {
        return Ok(());
    }
    let user = payload["user"]["id"].as_str().unwrap_or("someone").to_string();
    for action in payload["actions"].as_array().into_iter().flatten() {
        let group: u64 = action["value"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| "a button without an alert message id".to_string())?;
        let now = alerting::now_ms();
        match action["action_id"].as_str() {
            Some(alert_message::ACK) => bot.delivery.acknowledge(group, &user)?,
            Some(alert_message::SNOOZE_1H) => bot.delivery.snooze(group, 60, &user, now)?,
            Some(alert_message::SNOOZE_1D) => bot.delivery.snooze(group, 1440, &user, now)?,
            other => return Err(format!("unknown action {other:?}")),
        }
    }
    Ok(())
}

/// `POST /slack/events`: the URL check Slack makes when the Events API is switched on.
async fn events(State(bot): State<Arc<Bot>>, headers: HeaderMap, body: Body) -> Response {
    let bytes = match read_signed(&bot, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return bad_request("not a JSON event".into());
    };
    if event["type"] == "url_verification" {
        return Json(serde_json::json!({"challenge": event["challenge"]})).into_response();
    }
    StatusCode::OK.into_response()
}

/// `GET /api/v1/bot/outbox`: what was posted (or would have been, in a dry run) and what waits.
async fn outbox(State(bot): State<Arc<Bot>>) -> Json<serde_json::Value> {
    let state = bot.delivery.state();
    Json(serde_json::json!({
        "mode": if bot.is_dry_run() { "dry_run" } else { "slack" },
        "pending": state.pending(),
        "failures": bot.delivery.failures.load(std::sync::atomic::Ordering::Relaxed),
        "messages": state.groups.len(),
        "entries": bot.delivery.outbox.entries(),
    }))
}

#[derive(serde::Deserialize)]
struct PreviewQuery {
    text: Option<String>,
}

/// `GET /api/v1/bot/command?text=live`: the reply a slash command would get, without Slack
/// (read-only: `silence` needs a signed request or `POST /api/v1/alerts/silences`).
async fn preview(State(bot): State<Arc<Bot>>, Query(q): Query<PreviewQuery>) -> Response {
    let text = q.text.unwrap_or_default();
    if text.split_whitespace().next().is_some_and(|w| w.eq_ignore_ascii_case("silence")) {
        return bad_request(
            "`silence` changes state: use the signed Slack command or POST /api/v1/alerts/silences".into(),
        );
    }
    let reply = commands::answer(&bot.model, &bot.alerting, &text, "preview", alerting::now_ms());
    Json(reply.json()).into_response()
}
