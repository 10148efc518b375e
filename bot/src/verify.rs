//! Slack request signing: the body size is checked before it is read, the raw bytes are verified
//! (slack-morphism's verifier: HMAC-SHA256, constant time, timestamp within 5 minutes) before
//! anything parses them, and a request whose signature was already accepted is refused as a
//! replay (`replay::ReplayGuard`).

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use slack_morphism::prelude::SlackSigningSecret;
use slack_morphism::signature_verifier::SlackEventSignatureVerifier;

use crate::replay::ReplayGuard;

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
    #[error("this signed request was already received (a replay); Slack sends each request once")]
    Replayed,
    #[error("over {0} signed requests in the last 5 minutes: refused, as this one could not be remembered to refuse its replays")]
    TooMany(usize),
    #[error("cannot read the request body: {0}")]
    Body(String),
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Body(_) => StatusCode::BAD_REQUEST,
            Refusal::NoSecret | Refusal::TooMany(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

/// Reads at most `limit` bytes of `body` and returns them if Slack signed them with `secret` and
/// `replays` has not seen their signature yet.
pub async fn verified(
    headers: &HeaderMap,
    body: Body,
    secret: Option<&str>,
    limit: usize,
    now_s: i64,
    replays: &ReplayGuard,
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
    // Only now, with the signature verified, is it remembered: forged requests never reach the set.
    replays.admit(&signature, ts, now_s)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use hmac::{KeyInit, Mac};

    use super::*;

    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

    fn headers(timestamp: i64, signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-slack-request-timestamp", timestamp.to_string().parse().unwrap());
        h.insert("x-slack-signature", signature.parse().unwrap());
        h
    }

    fn sign(timestamp: i64, body: &str) -> String {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("v0:{timestamp}:{body}").as_bytes());
        format!("v0={}", hex::encode(mac.finalize().into_bytes()))
    }

    async fn check(guard: &ReplayGuard, timestamp: i64, signature: &str, body: &str) -> Result<Bytes, Refusal> {
        let now = chrono::Utc::now().timestamp();
        verified(&headers(timestamp, signature), Body::from(body.to_string()), Some(SECRET), 4096, now, guard).await
    }

    #[tokio::test]
    async fn a_verified_request_is_accepted_once_and_a_forged_one_is_not_remembered() {
        let guard = ReplayGuard::default();
        let now = chrono::Utc::now().timestamp();
        let body = "command=%2Fclickflow&text=silence+traffic_anomaly+1d";
        let signature = sign(now, body);
        // The genuine signature over another body: forged, and its signature is not recorded...
        assert_eq!(check(&guard, now, &signature, "text=silence+ip_burst+1d").await, Err(Refusal::Forged));
        assert!(guard.is_empty());
        // ...so the genuine request still goes through, once.
        assert_eq!(check(&guard, now, &signature, body).await.unwrap(), body.as_bytes());
        let replay = check(&guard, now, &signature, body).await;
        assert_eq!(replay, Err(Refusal::Replayed));
        assert_eq!(replay.unwrap_err().status(), StatusCode::UNAUTHORIZED);
        // The same body signed at another second is another request (Slack's retries are re-signed).
        assert!(check(&guard, now - 1, &sign(now - 1, body), body).await.is_ok());
        assert_eq!(guard.len(), 2);
    }
}
