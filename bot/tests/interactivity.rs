//! Buttons and the Events API URL check through the real router with signed requests: Acknowledge
//! records who and rewrites the message, Snooze silences the alerts; forged clicks change nothing.

#[path = "support/fake_slack.rs"]
mod fake_slack;
#[path = "support/sign.rs"]
mod sign;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use bot::{Bot, BotConfig, Secrets};
use fake_slack::FakeSlack;
use http_body_util::BodyExt;
use read::model::{Alert, AlertState};
use sign::*;
use tower::ServiceExt;

fn firing() -> Alert {
    Alert {
        id: "spike".into(),
        rule: "spike".into(),
        rules: vec!["spike".into()],
        key: None,
        severity: schema::alert_rules::Severity::Warning,
        labels: BTreeMap::new(),
        state: AlertState::Firing,
        value: 900.0,
        baseline: Some(100.0),
        summary: "events per minute 9x the baseline".into(),
        started_ms: 1_795_132_800_000,
        fired_ms: 1_795_132_980_000,
        ended_ms: None,
        resolved_ms: None,
        reopened: 0,
        reopened_ms: None,
        link: "/api/v1/timeseries".into(),
        silenced: false,
    }
}

fn bot(slack: &FakeSlack, (model, alerts): (Arc<read::ReadModel>, Arc<alerting::Alerting>)) -> Arc<Bot> {
    let config = BotConfig {
        api_url: slack.api_url.clone(),
        group_wait_seconds: 0,
        channel_interval_ms: 50,
        ..BotConfig::default()
    };
    let secrets = Secrets { bot_token: Some("xoxb-test".into()), signing_secret: Some(SECRET.into()), app_token: None };
    Bot::new(config, secrets, model, alerts, None)
        .unwrap()
        .with_alert_source(Box::new(|| (Some(1_795_133_000_000), vec![firing()])))
}

async fn call(bot: &Arc<Bot>, request: axum::http::Request<axum::body::Body>) -> (StatusCode, String) {
    let response = bot::router(bot.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    (status, String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap())
}

async fn wait(slack: &FakeSlack, what: &'static str, n: usize) -> Vec<fake_slack::Call> {
    let s = slack.clone();
    tokio::task::spawn_blocking(move || s.wait_for(15, what, |c| c.len() >= n)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledge_and_snooze_rewrite_the_message_and_silence_the_alert() {
    let slack = FakeSlack::start();
    let views = empty_views();
    let alerts = views.1.clone();
    let bot = bot(&slack, views);
    bot.start().unwrap();
    let posted = wait(&slack, "the alert message", 1).await[0].clone();

    let forged = signed_at("/slack/interactivity", &button_form("ack", "0", "U666"), "wrong-secret", now_s());
    assert_eq!(call(&bot, forged).await.0, StatusCode::UNAUTHORIZED);

    let (status, _) = call(&bot, signed("/slack/interactivity", &button_form("ack", "0", "U42"))).await;
    assert_eq!(status, StatusCode::OK);
    let calls = wait(&slack, "the acknowledged update", 2).await;
    assert_eq!((calls[1].method.as_str(), calls[1].ts.as_str()), ("chat.update", posted.ts.as_str()));
    assert!(calls[1].text.contains("Acknowledged by <@U42>"), "{}", calls[1].text);
    assert!(!calls[1].text.contains("U666"));

    let (status, _) = call(&bot, signed("/slack/interactivity", &button_form("snooze_1h", "0", "U42"))).await;
    assert_eq!(status, StatusCode::OK);
    let calls = wait(&slack, "the snoozed update", 3).await;
    assert!(calls[2].text.contains("Snoozed by <@U42>"), "{}", calls[2].text);
    let silences = alerts.silences();
    assert_eq!(silences.len(), 1);
    assert_eq!(silences[0].matcher, "spike");
    let hour = silences[0].until_ms - alerting::now_ms();
    assert!((3_500_000..=3_600_000).contains(&hour), "snoozed for an hour: {hour} ms");

    let (status, body) = call(&bot, signed("/slack/interactivity", &button_form("ack", "99", "U42"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an unknown message is an error, not a panic: {body}");
    bot.stop();
}

#[tokio::test]
async fn the_events_url_check_is_answered_and_must_be_signed() {
    let slack = FakeSlack::start();
    let bot = bot(&slack, empty_views());
    let body =
        r#"{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let (status, answer) = call(&bot, signed("/slack/events", body)).await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["challenge"], "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P");
    let unsigned = axum::http::Request::post("/slack/events").body(axum::body::Body::from(body)).unwrap();
    assert_eq!(call(&bot, unsigned).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_bot_runs_dry_and_the_outbox_shows_what_it_would_post() {
    let config = BotConfig { group_wait_seconds: 0, channel_interval_ms: 50, ..BotConfig::default() };
    let secrets = Secrets { signing_secret: Some(SECRET.into()), ..Secrets::default() };
    let (model, alerts) = empty_views();
    let bot = Bot::new(config, secrets, model, alerts, None)
        .unwrap()
        .with_alert_source(Box::new(|| (Some(1_795_133_000_000), vec![firing()])));
    assert!(bot.is_dry_run());
    bot.start().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let outbox = loop {
        let request = axum::http::Request::get("/api/v1/bot/outbox").body(axum::body::Body::empty()).unwrap();
        let (status, body) = call(&bot, request).await;
        assert_eq!(status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["entries"].as_array().is_some_and(|e| !e.is_empty()) || std::time::Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(outbox["mode"], "dry_run");
    let entry = &outbox["entries"][0];
    assert_eq!((entry["channel"].as_str(), entry["status"].as_str()), (Some("#alerts"), Some("dry_run")), "{outbox}");
    assert!(entry["text"].as_str().unwrap().contains("events per minute 9x the baseline"), "{entry}");
    bot.stop();
}

#[test]
fn a_digest_carries_the_key_numbers_funnels_and_alerts() {
    let (model, alerts) = empty_views();
    let digest = bot::alert_message::digest(&model, &alerts, bot::config::Every::Daily);
    assert!(digest.text.starts_with("Daily digest"), "{}", digest.text);
    assert!(
        digest.text.contains("Active users (5 min): 0") && digest.text.contains("No alerts firing"),
        "{}",
        digest.text
    );
}
