//! Slack request signing: the body size is checked before it is read, the raw bytes are verified
//! (slack-morphism's verifier: HMAC-SHA256, constant time, timestamp within 5 minutes) before
//! anything parses them.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use slack_morphism::prelude::SlackSigningSecret;
use slack_morphism::signature_verifier::SlackEventSignatureVerifier;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Refusal {
    #[error("request body over {0} bytes")]
    TooLarge(usize),
    #[error("missing X-Slack-Signature or X-Slack-Request-Timestamp: not a signed Slack request")]
    Unsigned,
    #[error("request timestamp is more than 5 minutes from now: replayed or the clock is off")]
    Stale,
    #[error("signature does not match: check SLACK_SIGNING_SECRET (App Credentials > Signing Secret)")]
    Forged,
    #[error("SLACK_SIGNING_SECRET is not set: this server cannot verify Slack requests, so it refuses them")]
    NoSecret,
    #[error("cannot read the request body: {0}")]
    Body(String),
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Body(_) => StatusCode::BAD_REQUEST,
            Refusal::NoSecret => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

/// Reads at most `limit` bytes of `body` and returns them if Slack signed them with `secret`.
pub async fn verified(
    headers: &HeaderMap,
    body: Body,
    secret: Option<&str>,
    limit: usize,
    now_s: i64,
) -> Result<Bytes, Refusal> {
    let declared = headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Refusal::TooLarge(limit));
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (Some(signature), Some(timestamp)) = (
        header(SlackEventSignatureVerifier::SLACK_SIGNED_HASH_HEADER),
        header(SlackEventSignatureVerifier::SLACK_SIGNED_TIMESTAMP),
    ) else {
        return Err(Refusal::Unsigned);
    };
    let secret = secret.ok_or(Refusal::NoSecret)?;
    let ts: i64 = timestamp.parse().map_err(|_| Refusal::Unsigned)?;
    if now_s.abs_diff(ts) > SlackEventSignatureVerifier::MAX_TIMESTAMP_AGE_SECONDS as u64 {
        return Err(Refusal::Stale);
    }
    // A body without Content-Length (chunked) is cut off at the limit instead.
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
            Refusal::TooLarge(limit)
        } else {
            Refusal::Body(e.to_string())
        }
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| Refusal::Forged)?;
    SlackEventSignatureVerifier::new(&SlackSigningSecret::new(secret.to_string()))
        .verify(&signature, text, &timestamp)
        .map_err(|_| Refusal::Forged)?;
    Ok(bytes)
}
