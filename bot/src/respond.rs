//! Delayed replies: a JSON POST to a slash command's `response_url` (our own body, so the reply can
//! be `in_channel`; slack-morphism's `respond_to_event` is always ephemeral).

use axum::body::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub async fn post_json(url: &str, body: &serde_json::Value) -> Result<(), String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(crate::slack::connector()?);
    let request = axum::http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| format!("bad response_url {url}: {e}"))?;
    let response = client.request(request).await.map_err(|e| format!("POST {url}: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("POST {url}: HTTP {}", response.status()))
    }
}

/// The answer if `answer` finishes within `deadline` (0: never waits); otherwise `None`, and the
/// answer goes to `response_url` when it is ready. Shared by HTTP and Socket Mode.
pub async fn by_deadline(
    answer: tokio::task::JoinHandle<crate::commands::Reply>,
    deadline: std::time::Duration,
    response_url: String,
) -> Option<Result<crate::commands::Reply, tokio::task::JoinError>> {
    let mut answer = Box::pin(answer);
    if !deadline.is_zero() {
        if let Ok(done) = tokio::time::timeout(deadline, &mut answer).await {
            return Some(done);
        }
    }
    tokio::spawn(async move {
        if let Ok(reply) = answer.await {
            if let Err(e) = post_json(&response_url, &reply.json()).await {
                tracing::warn!(error = %e, "cannot deliver a delayed reply to response_url");
            }
        }
    });
    None
}
