//! Posting to Slack through slack-morphism, or nowhere (dry run), with failures sorted into what
//! to wait for, what to retry and what no retry can fix.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use slack_morphism::errors::SlackClientError;
use slack_morphism::hyper_tokio::SlackClientHyperConnector;
use slack_morphism::prelude::*;

use crate::render::Message;

type Connector = SlackClientHyperConnector<HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>>;

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum SendError {
    #[error("rate limited by Slack; retrying after {0:?}")]
    RateLimited(Duration),
    #[error("Slack unreachable or failing ({0}); retrying with backoff")]
    Transient(String),
    #[error("Slack refused the message ({0}); not retried: fix the configuration (channel, token scopes)")]
    Permanent(String),
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the Slack client: {0}")]
pub struct SetupError(pub String);

/// Where messages go.
#[derive(Clone)]
pub enum Transport {
    Slack(Arc<SlackApi>),
    /// No token: nothing leaves the process; the outbox shows what would have been posted.
    DryRun(Arc<AtomicU64>),
}

impl Transport {
    pub fn dry_run() -> Transport {
        Transport::DryRun(Arc::new(AtomicU64::new(0)))
    }

    pub fn is_dry_run(&self) -> bool {
        matches!(self, Transport::DryRun(_))
    }

    /// Posts and returns the message's `(ts, channel id)`. A call Slack has not answered within
    /// the API's timeout (a half-open connection, a stalled proxy) fails as transient: a hung call
    /// must not hold its channel's queue for ever.
    pub async fn post(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        message: &Message,
    ) -> Result<(String, String), SendError> {
        match self {
            Transport::DryRun(n) => {
                Ok((format!("dry-run.{:06}", n.fetch_add(1, Ordering::Relaxed) + 1), channel.to_string()))
            }
            Transport::Slack(api) => within(api.timeout, api.post(channel, thread_ts, message)).await,
        }
    }

    /// `channel` must be the id (`C0123…`) `post` returned: `chat.update` refuses channel names.
    pub async fn update(&self, channel: &str, ts: &str, message: &Message) -> Result<(), SendError> {
        match self {
            Transport::DryRun(_) => Ok(()),
            Transport::Slack(api) => within(api.timeout, api.update(channel, ts, message)).await,
        }
    }
}

async fn within<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, SendError>>,
) -> Result<T, SendError> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(SendError::Transient(format!("no answer within {limit:?}"))))
}

pub struct SlackApi {
    client: SlackClient<Connector>,
    token: SlackApiToken,
    /// How long one call may take before it counts as failed (and is retried).
    pub timeout: Duration,
}

impl SlackApi {
    /// `api_url` without a trailing slash (`https://slack.com/api`, or a local fake in tests).
    pub fn new(api_url: &str, bot_token: &str) -> Result<SlackApi, SetupError> {
        let https = connector().map_err(SetupError)?;
        let connector = SlackClientHyperConnector::with_connector(https).with_slack_api_url(api_url);
        Ok(SlackApi {
            client: SlackClient::new(connector),
            token: SlackApiToken::new(bot_token.to_string().into()),
            timeout: Duration::from_secs(15),
        })
    }

    async fn post(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        message: &Message,
    ) -> Result<(String, String), SendError> {
        let request = SlackApiChatPostMessageRequest::new(channel.to_string().into(), message.content())
            .opt_thread_ts(thread_ts.map(|t| t.to_string().into()));
        let session = self.client.open_session(&self.token);
        let response = session.chat_post_message(&request).await.map_err(classify)?;
        Ok((response.ts.to_string(), response.channel.to_string()))
    }

    async fn update(&self, channel: &str, ts: &str, message: &Message) -> Result<(), SendError> {
        let request =
            SlackApiChatUpdateRequest::new(channel.to_string().into(), message.content(), ts.to_string().into());
        let session = self.client.open_session(&self.token);
        session.chat_update(&request).await.map(|_| ()).map_err(classify)
    }
}

/// slack-morphism's own connector is HTTPS-only; this one also allows http:// (a local fake Slack).
pub fn connector() -> Result<HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, String> {
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls_provider())
        .map_err(|e| format!("no usable TLS root certificates ({e})"))?
        .https_or_http()
        .enable_http1()
        .build())
}

/// ring, chosen explicitly: with more than one TLS backend in the build, rustls cannot pick one.
fn rustls_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a failure means for delivery.
pub fn classify(error: SlackClientError) -> SendError {
    match error {
        SlackClientError::RateLimitError(e) => SendError::RateLimited(e.retry_after.unwrap_or(Duration::from_secs(1))),
        // A proxy's error page or an outage answer: retried, never a reason to drop a backlog.
        SlackClientError::HttpError(e) => SendError::Transient(format!("HTTP {}", e.status_code)),
        SlackClientError::ApiError(e) => match e.code.as_str() {
            "ratelimited" => SendError::RateLimited(Duration::from_secs(1)),
            // About this one message or its channel: no retry can fix it.
            "invalid_blocks"
            | "invalid_blocks_format"
            | "msg_too_long"
            | "channel_not_found"
            | "is_archived"
            | "not_in_channel"
            | "message_not_found"
            | "cant_update_message"
            | "edit_window_closed"
            | "no_text"
            | "too_many_attachments" => SendError::Permanent(e.code),
            // Token and scope problems (`invalid_auth`, `missing_scope`, ...) hold every channel until
            // someone fixes the app; the backlog waits for them instead of being discarded.
            code => {
                tracing::error!(
                    error = code,
                    "Slack refuses the bot's calls; fix the token or its scopes (README \"Slack bot\")"
                );
                SendError::Transient(e.code)
            }
        },
        other => SendError::Transient(other.to_string()),
    }
}
