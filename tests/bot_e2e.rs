//! The bot end to end: generated traffic with a planted incident (one user bursting page views)
//! goes through Kafka (librdkafka's mock cluster) into `clickflow run`, which delivers alerts to a
//! local fake Slack Web API. The routed channel gets exactly one message; after a kill -9 and a
//! restart nothing is re-sent; the resolve is one reply in that message's thread plus one update of
//! it, while the fake answers 429 and 5xx at times.

mod common;
#[path = "../bot/tests/support/fake_slack.rs"]
mod fake_slack;

use std::time::Duration;

use common::e2e::START;
use common::kafka::*;
use fake_slack::{Call, FakeSlack, Fault};
use generator::{Generator, GeneratorConfig};
use rdkafka::mocking::MockCluster;

const MINUTE: i64 = 60_000;

/// Calm generated traffic from `START` for `minutes`, plus a scraper bursting 500 page views a
/// minute in minutes 10 to 12 (the `user_burst` rule of `examples/funnels.toml`: over 300 in 5 min).
fn traffic(minutes: i64) -> Vec<(i64, String, Vec<u8>)> {
    let config = GeneratorConfig {
        seed: 11,
        rate: 20.0,
        bot_share: 0.0,
        malformed_share: 0.0,
        too_late_share: 0.0,
        ..GeneratorConfig::default()
    };
    let mut records: Vec<(i64, String, Vec<u8>)> = Generator::new(config, START)
        .take_while(|g| g.deliver_ms < START + minutes * MINUTE)
        .map(|g| (g.deliver_ms, g.key, g.line))
        .collect();
    for minute in 10..13 {
        for i in 0..500 {
            let ts = START + minute * MINUTE + i * 110;
            let line = serde_json::json!({"user_id": "scraper", "event": "page_view", "ts": ts, "page": format!("/products/{i}"), "ip": "10.3.0.1"});
            records.push((ts, "scraper".into(), serde_json::to_vec(&line).unwrap()));
        }
    }
    records.sort_by_key(|r| r.0);
    records
}

fn produce_between(brokers: &str, records: &[(i64, String, Vec<u8>)], from_min: i64, to_min: i64) -> usize {
    let part: Vec<(String, Vec<u8>)> = records
        .iter()
        .filter(|r| r.0 >= START + from_min * MINUTE && r.0 < START + to_min * MINUTE)
        .map(|r| (r.1.clone(), r.2.clone()))
        .collect();
    produce(brokers, "clicks", &part);
    part.len()
}

fn start_run(brokers: &str, port: u16, dir: &std::path::Path, slack: &FakeSlack) -> Running {
    let mut command = run_command(brokers, port, dir, "", &[]);
    command
        .env("CLICKFLOW__VIEWS__ALERTS__BUILTIN", "false")
        .env("SLACK_BOT_TOKEN", "xoxb-test")
        .env("SLACK_SIGNING_SECRET", "test-secret")
        .env("CLICKFLOW__BOT__API_URL", &slack.api_url)
        .env("CLICKFLOW__BOT__ROUTES", r##"[{channel = "#incidents", rule = "user_burst"}]"##)
        .env("CLICKFLOW__BOT__GROUP_WAIT_SECONDS", "0")
        .env("CLICKFLOW__BOT__CHANNEL_INTERVAL_MS", "100")
        .env("CLICKFLOW__BOT__MAX_BACKOFF_SECONDS", "1");
    Running(command.spawn().unwrap())
}

fn incidents(calls: &[Call]) -> Vec<Call> {
    calls.iter().filter(|c| c.channel == "#incidents").cloned().collect()
}

fn wait_counted(port: u16, records: usize) {
    wait_for(port, "/api/v1/dump", Duration::from_secs(120), |d| {
        d["accepted"].as_i64().unwrap_or(0) + d["rejects"]["total"].as_i64().unwrap_or(0) == records as i64
    });
}

#[test]
fn a_planted_incident_is_posted_once_survives_a_restart_and_resolves_in_its_thread() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("clicks", PARTITIONS, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let records = traffic(40);
    let slack = FakeSlack::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();

    // Up to minute 20: `as_of` (head - 5 min) passes the burst, and the alert fires.
    slack.fail_next(&[Fault::RateLimited { retry_after_s: 1 }, Fault::ServerError]);
    let mut sent = produce_between(&brokers, &records, 0, 20);
    let run = start_run(&brokers, port, dir.path(), &slack);
    wait_counted(port, sent);
    let calls = slack.wait_for(60, "the incident message", |c| !incidents(c).is_empty());
    let first = incidents(&calls)[0].clone();
    assert_eq!((first.method.as_str(), first.thread_ts.as_deref()), ("chat.postMessage", None));
    assert!(first.text.contains("user_burst:scraper"), "{}", first.text);
    assert!(slack.refused() >= 2, "the 429 and the 5xx were answered");

    // kill -9 and a restart: the views come back (snapshot + re-judged alerts), nothing is re-sent.
    wait_for_snapshots_from_now(dir.path());
    drop(run);
    let run = start_run(&brokers, port, dir.path(), &slack);
    wait_counted(port, sent);
    let history = wait_for(port, "/api/v1/alerts", Duration::from_secs(60), |v| {
        v["alerts"].as_array().is_some_and(|a| a.iter().any(|a| a["id"] == "user_burst:scraper"))
    });
    assert!(history["alerts"].as_array().unwrap().iter().any(|a| a["started_ms"] == START + 10 * MINUTE));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(incidents(&slack.calls()).len(), 1, "re-sent after the restart: {:#?}", incidents(&slack.calls()));

    // The rest of the traffic: the burst's window empties and the alert resolves.
    slack.fail_next(&[Fault::ServerError]);
    sent += produce_between(&brokers, &records, 20, 40);
    wait_counted(port, sent);
    slack.wait_for(60, "the resolve", |c| incidents(c).len() >= 3);
    std::thread::sleep(Duration::from_secs(2));
    let calls = incidents(&slack.calls());
    assert_eq!(calls.len(), 3, "one message, one reply, one update: {calls:#?}");
    let reply = calls.iter().find(|c| c.method == "chat.postMessage" && c.thread_ts.is_some()).expect("a reply");
    assert_eq!(reply.thread_ts.as_deref(), Some(first.ts.as_str()));
    assert!(reply.text.starts_with("Resolved:"), "{}", reply.text);
    let update = calls.iter().find(|c| c.method == "chat.update").expect("an update");
    assert_eq!(update.ts, first.ts);
    assert!(update.text.starts_with("Resolved: user_burst"), "{}", update.text);

    // Every message elsewhere went out once too (no duplicates from retries or the restart).
    let outbox = get_json(port, "/api/v1/bot/outbox").unwrap();
    assert_eq!(outbox["mode"], "slack");
    assert_eq!(outbox["pending"], 0);
    let metrics = ureq::get(&format!("http://127.0.0.1:{port}/metrics")).call().unwrap().into_string().unwrap();
    assert!(
        metrics.contains("clickflow_bot_pending 0") && metrics.contains("clickflow_bot_refused_total 0"),
        "{metrics}"
    );
    let tops: Vec<String> = slack
        .calls()
        .iter()
        .filter(|c| c.method == "chat.postMessage" && c.thread_ts.is_none())
        .map(|c| c.text.clone())
        .collect();
    let mut unique = tops.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), tops.len(), "a message was posted twice: {tops:#?}");
    drop(run);
}
