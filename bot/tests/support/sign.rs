//! Signs requests the way Slack does (v0, HMAC-SHA256 over `v0:{timestamp}:{body}`), so tests
//! drive the real verification.

#![allow(dead_code)]

use axum::body::Body;
use axum::http::Request;
use hmac::{KeyInit, Mac};

pub const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

pub fn signature(secret: &str, timestamp: &str, body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A POST signed with `secret` at `timestamp`, with a Content-Length like Slack's.
pub fn signed_at(uri: &str, body: &str, secret: &str, timestamp: i64) -> Request<Body> {
    let ts = timestamp.to_string();
    Request::post(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-length", body.len())
        .header("x-slack-request-timestamp", &ts)
        .header("x-slack-signature", signature(secret, &ts, body))
        .body(Body::from(body.to_string()))
        .unwrap()
}

pub fn signed(uri: &str, body: &str) -> Request<Body> {
    signed_at(uri, body, SECRET, now_s())
}

/// The form Slack posts for `/clickflow {text}`.
pub fn command_form(text: &str, response_url: &str) -> String {
    serde_urlencoded::to_string([
        ("token", "gIkuvaNzQIHg97ATvDxqgjtO"),
        ("team_id", "T0001"),
        ("team_domain", "example"),
        ("channel_id", "C2147483705"),
        ("channel_name", "test"),
        ("user_id", "U2147483697"),
        ("user_name", "steve"),
        ("command", "/clickflow"),
        ("text", text),
        ("api_app_id", "A123456"),
        ("response_url", response_url),
        ("trigger_id", "13345224609.738474920.8088930838d88f008e0"),
    ])
    .unwrap()
}

/// The form Slack posts when a button is clicked.
pub fn button_form(action_id: &str, value: &str, user: &str) -> String {
    let payload = serde_json::json!({
        "type": "block_actions",
        "user": {"id": user, "username": "oncall"},
        "team": {"id": "T0001"},
        "api_app_id": "A123456",
        "trigger_id": "1.2.3",
        "container": {"type": "message", "message_ts": "1700000000.000001", "channel_id": "C1"},
        "response_url": "https://hooks.slack.com/actions/T0001/1/x",
        "actions": [{"action_id": action_id, "block_id": "b", "value": value, "type": "button", "action_ts": "1"}]
    });
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap()
}

/// An empty read model and its alerting, as the engine would hand them to the bot.
pub fn empty_views() -> (std::sync::Arc<read::ReadModel>, std::sync::Arc<alerting::Alerting>) {
    let config = schema::ViewConfig::default();
    let defs = schema::registry::Definitions::new(&config).unwrap();
    let model = read::ReadModel::new(config, &defs);
    let alerts = alerting::Alerting::new(model.clone(), &defs);
    (model, alerts)
}
