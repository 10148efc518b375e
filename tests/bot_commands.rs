//! `/clickflow` through the real router with signed requests, over the real engine fed generated
//! traffic: every command's reply carries the read model's numbers; forged, stale, replayed,
//! unsigned and oversized requests are refused; a slow answer goes to `response_url`.

mod common;
#[path = "../bot/tests/support/fake_slack.rs"]
mod fake_slack;
#[path = "../bot/tests/support/sign.rs"]
mod sign;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bot::{Bot, BotConfig, Secrets};
use common::e2e::generated;
use common::Harness;
use http_body_util::BodyExt;
use read::path_query::NextQuery;
use read::query::TimeseriesQuery;
use read::ReadModel;
use sign::*;
use tower::ServiceExt;

const HAMMER: &str = "10.5.0.1";

/// The engine over 20k generated events and one IP hammering the newest minute.
fn engine() -> Harness {
    let mut harness = Harness::start(1, 300_000, common::example_views());
    let mut lines: Vec<Vec<u8>> = generated(20_000, 7).into_iter().map(|(_, line)| line).collect();
    let last: i64 = serde_json::from_slice::<serde_json::Value>(lines.last().unwrap()).unwrap()["ts"].as_i64().unwrap();
    for i in 0..150 {
        let e =
            serde_json::json!({"user_id": "hammer", "event": "page_view", "ts": last + i, "page": "/", "ip": HAMMER});
        lines.push(serde_json::to_vec(&e).unwrap());
    }
    harness.push(lines);
    harness.settle();
    harness
}

fn bot((model, alerts): (Arc<ReadModel>, Arc<alerting::Alerting>), config: BotConfig) -> Arc<Bot> {
    let secrets = Secrets { signing_secret: Some(SECRET.into()), ..Secrets::default() };
    Bot::new(config, secrets, model, alerts, None).unwrap()
}

async fn send(bot: &Arc<Bot>, request: Request<Body>) -> (StatusCode, serde_json::Value) {
    let response = bot::router(bot.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

/// The reply to `/clickflow {text}`: its fallback text, and whether it is shown to the channel.
async fn ask(bot: &Arc<Bot>, text: &str) -> (String, serde_json::Value) {
    let form = command_form(text, "https://hooks.slack.com/commands/T0001/1/x");
    let (status, reply) = send(bot, signed("/slack/commands", &form)).await;
    assert_eq!(status, StatusCode::OK, "{text}: {reply}");
    assert!(reply["blocks"].as_array().is_some_and(|b| !b.is_empty() && b.len() <= 50), "{text}: {reply}");
    (reply["text"].as_str().unwrap().to_string(), reply)
}

#[test]
fn the_signing_matches_slacks_published_example() {
    // slack-morphism's test vector: the tests sign exactly as Slack does.
    assert!(signature("fa2c05deeef5a4077494e89f54394de0", "1531420618", "test-body").starts_with("v0=baa91ef6"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_unsigned_and_oversized_requests_are_refused() {
    let config = schema::ViewConfig::default();
    let defs = schema::registry::Definitions::new(&config).unwrap();
    let model = ReadModel::new(config, &defs);
    let bot = bot((model.clone(), alerting::Alerting::new(model.clone(), &defs)), BotConfig::default());
    let form = command_form("live", "https://hooks.slack.com/commands/T0001/1/x");
    let (status, body) = send(&bot, signed_at("/slack/commands", &form, "not-the-secret", now_s())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"].as_str().unwrap().contains("SLACK_SIGNING_SECRET"), "{body}");
    let (status, body) = send(&bot, signed_at("/slack/commands", &form, SECRET, now_s() - 301)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"].as_str().unwrap().contains("5 minutes"), "{body}");
    let unsigned = Request::post("/slack/commands").body(Body::from(form.clone())).unwrap();
    assert_eq!(send(&bot, unsigned).await.0, StatusCode::UNAUTHORIZED);
    // A tampered body under a valid signature.
    let mut tampered = signed("/slack/commands", &form);
    *tampered.body_mut() = Body::from(form.replace("live", "silence"));
    assert_eq!(send(&bot, tampered).await.0, StatusCode::UNAUTHORIZED);
    // Too large: refused on the declared length, and on the bytes when no length is declared.
    let big = format!("{form}&pad={}", "x".repeat(70_000));
    let (status, body) = send(&bot, signed("/slack/commands", &big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let mut chunked = signed("/slack/commands", &big);
    chunked.headers_mut().remove("content-length");
    assert_eq!(send(&bot, chunked).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    // Without a signing secret configured, nothing is accepted.
    let open =
        Bot::new(BotConfig::default(), Secrets::default(), model.clone(), alerting::Alerting::new(model, &defs), None)
            .unwrap();
    let (status, body) = send(&open, signed("/slack/commands", &form)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["error"].as_str().unwrap().contains("SLACK_SIGNING_SECRET is not set"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_answers_with_the_read_models_numbers() {
    let harness = engine();
    let (model, alerts) = (harness.read_model.clone(), harness.alerting.clone());
    let bot = bot((model.clone(), alerts.clone()), BotConfig::default());

    let (text, reply) = ask(&bot, "live").await;
    assert_eq!(reply["response_type"], "ephemeral");
    let live = model.live();
    assert!(text.contains(&format!("Active users (5 min): {}", live.active_users)), "{text}");
    assert!(text.contains(&format!("Events in the last minute: {}", live.events_per_minute)), "{text}");
    assert!(live.top_pages.iter().all(|p| text.contains(&format!("{:>8}  {}", p.views, p.page))), "{text}");
    let hour: i64 =
        model.timeseries(&TimeseriesQuery::default()).unwrap().series[0].points.iter().map(|p| p.value).sum();
    assert!(text.contains(&format!("Events in the last hour: {hour}")), "{text}");

    let (text, reply) = ask(&bot, "top sources 3 30m public").await;
    assert_eq!(reply["response_type"], "in_channel");
    let head = model.clock().head_ms.unwrap();
    let from = head / 60_000 * 60_000 - 29 * 60_000;
    let q = TimeseriesQuery {
        metric: Some("events".into()),
        breakdown: Some("utm_source".into()),
        from: Some(from.to_string()),
        to: Some(head.to_string()),
        limit: Some(3),
    };
    let series = model.timeseries(&q).unwrap().series;
    assert_eq!(series.len(), 3);
    for (i, s) in series.iter().enumerate() {
        assert!(text.contains(&format!("{:>2}. {:>9}  {}", i + 1, s.total, s.key)), "{text}");
    }

    let (text, _) = ask(&bot, "funnels").await;
    for f in model.funnel_list().funnels {
        assert!(text.contains(&f.name) && text.contains(&format!("{:>8} → {:>8}", f.entered, f.converted)), "{text}");
    }
    let (text, _) = ask(&bot, "funnel checkout").await;
    let report = model.funnel("checkout").unwrap();
    for s in &report.numbers.steps {
        assert!(text.contains(&format!("{}. ", s.step)) && text.contains(&format!(" {} ", s.users)), "{text}");
        assert!(text.contains(&format!("-{:<7}", s.drop_off)), "{text}");
    }
    let (text, _) = ask(&bot, "funnel chekout").await;
    assert!(text.contains("no funnel named `chekout` (did you mean `checkout`?)"), "{text}");
    assert!(text.contains("`search_to_product`"), "names what exists: {text}");
    let (text, _) = ask(&bot, "funnel").await;
    assert!(text.contains("which funnel?") && text.contains("`checkout`"), "{text}");

    let (text, _) = ask(&bot, "sessions").await;
    let sessions = model.sessions(&Default::default()).unwrap().summary;
    assert!(text.contains(&format!("Sessions: {}", sessions.totals.sessions)), "{text}");
    assert!(text.contains(&format!("Bounce rate: {:.1}%", sessions.bounce_rate * 100.0)), "{text}");

    let (text, _) = ask(&bot, "retention returning_visitors").await;
    let retention = model.retention_report("returning_visitors", &Default::default()).unwrap();
    for c in retention.matrix.cohorts.iter().rev().take(12) {
        assert!(text.contains(&format!("{} {:>7}", c.cohort, c.size)), "{text}");
    }
    let (text, _) = ask(&bot, "retention returning").await;
    assert!(text.contains("did you mean `returning_visitors`"), "{text}");

    let (text, _) = ask(&bot, "path next /").await;
    let next = model.path_next(&NextQuery { page: Some("/".into()), limit: Some(10) }).unwrap().neighbors;
    assert!(!next.next.is_empty());
    for s in &next.next {
        assert!(text.contains(&format!("{:>8}", s.count)) && text.contains(&s.page), "{text}");
    }
    let (text, _) = ask(&bot, "path top /").await;
    assert!(text.contains("Paths from /") && text.contains(" → "), "{text}");

    let (text, _) = ask(&bot, &format!("limit page_view_rate_limit {HAMMER}")).await;
    let status = alerts.limit("page_view_rate_limit", HAMMER).unwrap();
    assert!(status.over);
    assert!(text.contains("is *over* `page_view_rate_limit`"), "{text}");
    assert!(text.contains(&format!("{} of {} events", status.count, status.limit)), "{text}");
    let (text, _) = ask(&bot, "limit nope 1.2.3.4").await;
    assert!(text.contains(":warning:") && text.contains("page_view_rate_limit"), "{text}");

    let (text, _) = ask(&bot, "alerts").await;
    let (_, active) = alerts.active();
    if active.is_empty() {
        assert!(text.contains("No alerts firing"), "{text}");
    } else {
        assert!(active.iter().all(|a| text.contains(&a.id)), "{text}");
    }

    let (text, _) = ask(&bot, "silence crowded_ip 2h").await;
    assert!(text.contains("`crowded_ip` silenced for 2h") && text.contains("<@U2147483697>"), "{text}");
    let silence = alerts.silences().into_iter().find(|s| s.matcher == "crowded_ip").expect("silenced");
    let left = silence.until_ms - schema::time::now_ms();
    assert!((7_100_000..=7_200_000).contains(&left), "{left}");
    let (text, _) = ask(&bot, "silence crowdedip 2h").await;
    assert!(text.contains("did you mean `crowded_ip`"), "{text}");
    let (text, _) = ask(&bot, "silence crowded_ip forever").await;
    assert!(text.contains("not a duration"), "{text}");

    let (text, _) = ask(&bot, "liev").await;
    assert!(text.contains("no `liev` command (did you mean `live`?)"), "{text}");
    let (text, _) = ask(&bot, "").await;
    assert!(text.contains("/clickflow funnel <name>"), "an empty command is help: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_past_the_deadline_is_acknowledged_and_sent_to_response_url() {
    let harness = engine();
    let slack = fake_slack::FakeSlack::start();
    // A zero deadline: every answer is "slow".
    let slow = bot(
        (harness.read_model.clone(), harness.alerting.clone()),
        BotConfig { reply_deadline_ms: 0, ..BotConfig::default() },
    );
    let form = command_form("funnels public", &format!("{}/response/1", slack.base));
    let (status, ack) = send(&slow, signed("/slack/commands", &form)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ack["text"], "Working on it…");
    let s = slack.clone();
    let responses = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while s.responses().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        s.responses()
    })
    .await
    .unwrap();
    assert_eq!(responses.len(), 1, "one delayed reply");
    let direct = bot((harness.read_model.clone(), harness.alerting.clone()), BotConfig::default());
    let (_, expected) = ask(&direct, "funnels public").await;
    assert_eq!(responses[0].1, expected, "the same answer, in_channel as asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_signed_silence_is_refused_and_silences_once() {
    let (model, alerts) = empty_views();
    let bot = bot((model, alerts.clone()), BotConfig::default());
    // One captured request, sent twice byte for byte (same timestamp, same signature).
    let form = command_form("silence traffic_anomaly 1d", "https://hooks.slack.com/commands/T0001/1/x");
    let at = now_s();
    let (status, reply) = send(&bot, signed_at("/slack/commands", &form, SECRET, at)).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert!(reply["text"].as_str().unwrap().contains("`traffic_anomaly` silenced for 1d"), "{reply}");
    let (status, body) = send(&bot, signed_at("/slack/commands", &form, SECRET, at)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the replay was accepted: {body}");
    assert!(body["error"].as_str().unwrap().contains("already received (a replay)"), "{body}");
    let silences: Vec<_> = alerts.silences().into_iter().filter(|s| s.matcher == "traffic_anomaly").collect();
    assert_eq!(silences.len(), 1, "{silences:?}");
    // Concurrent copies of another captured request: exactly one gets through.
    let form = command_form("silence ip_burst 2h", "https://hooks.slack.com/commands/T0001/1/x");
    let mut copies = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (bot, request) = (bot.clone(), signed_at("/slack/commands", &form, SECRET, at));
        copies.spawn(async move { send(&bot, request).await.0 });
    }
    let statuses = copies.join_all().await;
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
    assert_eq!(alerts.silences().into_iter().filter(|s| s.matcher == "ip_burst").count(), 1);
    // A new request (Slack signs every request afresh) is still answered.
    let (status, _) = send(&bot, signed_at("/slack/commands", &form, SECRET, at - 1)).await;
    assert_eq!(status, StatusCode::OK);
}
