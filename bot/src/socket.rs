//! Socket Mode: Slack sends commands and button clicks over a WebSocket the bot opens, so no public
//! URL is needed. The answers are the same as over HTTP.

use std::sync::Arc;

use slack_morphism::prelude::*;

use crate::{Bot, BotError};

type Client = SlackClient<
    SlackClientHyperConnector<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>>,
>;

/// Runs until the returned task is aborted; the listener must live as long (its clients hold only a
/// weak reference to it and drop messages once it is gone).
pub fn start(
    bot: Arc<Bot>,
    app_token: String,
    stop: Arc<tokio::sync::Notify>,
) -> Result<tokio::task::JoinHandle<()>, BotError> {
    let connector = crate::slack::connector().map_err(crate::slack::SetupError)?;
    let client = Arc::new(SlackClient::new(
        SlackClientHyperConnector::with_connector(connector).with_slack_api_url(&bot.config.api_url),
    ));
    Ok(tokio::spawn(async move {
        let callbacks = SlackSocketModeListenerCallbacks::new()
            .with_command_events(on_command)
            .with_interaction_events(on_interaction);
        let environment = Arc::new(
            SlackClientEventsListenerEnvironment::new(client).with_error_handler(on_error).with_user_state(bot),
        );
        let listener = SlackClientSocketModeListener::new(&SlackClientSocketModeConfig::new(), environment, callbacks);
        let token = SlackApiToken::new(app_token.into());
        match listener.listen_for(&token).await {
            Ok(()) => {
                tracing::info!("Slack Socket Mode connected");
                listener.start().await;
                stop.notified().await;
                listener.shutdown().await;
            }
            Err(e) => tracing::error!(error = %e, "cannot open a Slack Socket Mode connection; check SLACK_APP_TOKEN"),
        }
    }))
}

async fn bot_of(states: &SlackClientEventsUserState) -> Option<Arc<Bot>> {
    states.read().await.get_user_state::<Arc<Bot>>().cloned()
}

async fn on_command(
    event: SlackCommandEvent,
    _client: Arc<Client>,
    states: SlackClientEventsUserState,
) -> Result<SlackCommandEventResponse, Box<dyn std::error::Error + Send + Sync>> {
    let bot = bot_of(&states).await.ok_or("bot state missing")?;
    let (model, alerts) = (bot.model.clone(), bot.alerting.clone());
    let (text, user) = (event.text.unwrap_or_default(), event.user_id.to_string());
    let answer =
        tokio::task::spawn_blocking(move || crate::commands::answer(&model, &alerts, &text, &user, alerting::now_ms()));
    // As over HTTP: past the deadline, acknowledge now and answer through `response_url`.
    let deadline = std::time::Duration::from_millis(bot.config.reply_deadline_ms);
    let Some(reply) = crate::respond::by_deadline(answer, deadline, event.response_url.0.to_string()).await else {
        return Ok(SlackCommandEventResponse::new(SlackMessageContent::new().with_text("Working on it…".into())));
    };
    let reply = reply?;
    let kind = if reply.in_channel { SlackMessageResponseType::InChannel } else { SlackMessageResponseType::Ephemeral };
    Ok(SlackCommandEventResponse::new(reply.message.content()).with_response_type(kind))
}

async fn on_interaction(
    event: SlackInteractionEvent,
    _client: Arc<Client>,
    states: SlackClientEventsUserState,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let bot = bot_of(&states).await.ok_or("bot state missing")?;
    let payload = serde_json::to_value(&event)?;
    crate::apply_actions(&bot, &payload).map_err(Into::into)
}

/// Acknowledges whatever failed (Slack would otherwise show the user a timeout) and logs it.
fn on_error(
    error: Box<dyn std::error::Error + Send + Sync>,
    _client: Arc<Client>,
    _states: SlackClientEventsUserState,
) -> axum::http::StatusCode {
    tracing::warn!(error = %error, "a Socket Mode event failed");
    axum::http::StatusCode::OK
}
