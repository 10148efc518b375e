//! Alert delivery against a local fake Slack Web API, with scripted alerts: one message per alert
//! group in the routed channel, the resolve as a thread reply plus an update, 429 / 5xx / refusals,
//! the per-channel pace, and a restart that must not re-send.

#[path = "support/fake_slack.rs"]
mod fake_slack;
#[path = "support/sign.rs"]
mod sign;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bot::config::{BotConfig, Route};
use bot::delivery::Delivery;
use bot::slack::{SlackApi, Transport};
use bot::state::Store;
use fake_slack::{Call, FakeSlack, Fault};
use read::model::{Alert, AlertState};
use schema::alert_rules::Severity;

const T0: i64 = 1_795_132_800_000;

fn alert(rule: &str, key: &str, team: &str) -> Alert {
    Alert {
        id: format!("{rule}:{key}"),
        rule: rule.into(),
        rules: vec![rule.into()],
        key: Some(key.into()),
        severity: Severity::Critical,
        labels: BTreeMap::from([("team".to_string(), team.to_string()), ("rule".to_string(), rule.to_string())]),
        state: AlertState::Firing,
        value: 250.0,
        baseline: Some(20.0),
        summary: format!("{key} sent 250 events in a minute"),
        started_ms: T0,
        fired_ms: T0 + 180_000,
        ended_ms: None,
        resolved_ms: None,
        reopened: 0,
        reopened_ms: None,
        link: "/api/v1/limits/x".into(),
        silenced: false,
    }
}

fn resolved(mut a: Alert) -> Alert {
    a.state = AlertState::Resolved;
    a.ended_ms = Some(T0 + 600_000);
    a.resolved_ms = Some(T0 + 900_000);
    a
}

type Script = Arc<Mutex<Vec<Alert>>>;

fn config() -> BotConfig {
    BotConfig {
        default_channel: "#alerts".into(),
        routes: vec![Route {
            channel: "#security".into(),
            labels: BTreeMap::from([("team".into(), "security".into())]),
            ..Route::default()
        }],
        group_wait_seconds: 1,
        channel_interval_ms: 100,
        max_backoff_seconds: 1,
        call_timeout_seconds: 1,
        ..BotConfig::default()
    }
}

fn delivery(slack: &FakeSlack, config: BotConfig, script: &Script, state: &std::path::Path) -> Arc<Delivery> {
    let mut api = SlackApi::new(&slack.api_url, "xoxb-test").unwrap();
    api.timeout = Duration::from_secs(config.call_timeout_seconds);
    let transport = Transport::Slack(Arc::new(api));
    let (model, alerts) = sign::empty_views();
    let script = script.clone();
    let d = Delivery::new(config, model, alerts, transport, Store(Some(state.to_path_buf()))).unwrap();
    let d = d.with_source(Box::new(move || (Some(T0 + 1_000_000), script.lock().unwrap().clone())));
    d.start();
    d
}

fn posts<'a>(calls: &'a [Call], channel: &str) -> Vec<&'a Call> {
    calls.iter().filter(|c| c.method == "chat.postMessage" && c.channel == channel).collect()
}

/// Runs `f` (which polls and sleeps) off the async workers.
async fn on_slack<T: Send + 'static>(slack: &FakeSlack, f: impl FnOnce(&FakeSlack) -> T + Send + 'static) -> T {
    let s = slack.clone();
    tokio::task::spawn_blocking(move || f(&s)).await.unwrap()
}

/// Lets the planner run a few more rounds, then returns the calls: nothing more may have come.
fn settled(slack: &FakeSlack) -> Vec<Call> {
    std::thread::sleep(Duration::from_millis(1500));
    slack.calls()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_then_one_threaded_resolve_and_one_update_through_429_and_5xx_and_a_restart() {
    let slack = FakeSlack::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("slack.json");
    let script: Script = Arc::new(Mutex::new(vec![]));
    // Slack is rate limiting, then failing, then hanging, when the alert comes.
    slack.fail_next(&[Fault::RateLimited { retry_after_s: 1 }, Fault::ServerError, Fault::Hang, Fault::ServerError]);
    let first = delivery(&slack, config(), &script, &state);
    script.lock().unwrap().push(alert("ip_burst", "10.9.9.9", "security"));
    let calls = on_slack(&slack, |s| s.wait_for(20, "the alert message", |c| !c.is_empty())).await;
    assert_eq!(slack.refused(), 4, "the 429, the 5xx and the hung call were retried, then the post went through");
    let message = calls[0].clone();
    assert_eq!((message.method.as_str(), message.channel.as_str()), ("chat.postMessage", "#security"));
    assert!(message.text.contains("ip_burst:10.9.9.9") && message.thread_ts.is_none(), "{message:?}");
    let buttons = &message.body["blocks"].as_array().unwrap().last().unwrap()["elements"];
    assert_eq!(buttons.as_array().unwrap().len(), 3, "Acknowledge, Snooze 1 h, Snooze 1 day");

    // A restart: the same alert is reported again (a rebuild re-fires it); nothing is re-sent.
    first.stop();
    let calls = on_slack(&slack, settled).await;
    assert_eq!(calls.len(), 1);
    let second = delivery(&slack, config(), &script, &state);
    let calls = on_slack(&slack, settled).await;
    assert_eq!(calls.len(), 1, "a restart re-sent: {calls:?}");

    // The resolve: one reply in the original thread, one update of the original, through a 5xx.
    slack.fail_next(&[Fault::ServerError]);
    {
        let mut s = script.lock().unwrap();
        s[0] = resolved(s[0].clone());
    }
    let calls = on_slack(&slack, move |s| {
        s.wait_for(20, "the resolve", |c| c.len() >= 3);
        settled(s)
    })
    .await;
    assert_eq!(calls.len(), 3, "{calls:#?}");
    assert_eq!(calls[1].method, "chat.postMessage");
    assert_eq!(calls[1].thread_ts.as_deref(), Some(message.ts.as_str()), "the resolve is a reply in the thread");
    assert!(calls[1].text.contains("Resolved"), "{}", calls[1].text);
    assert_eq!((calls[2].method.as_str(), calls[2].ts.as_str()), ("chat.update", message.ts.as_str()));
    assert!(
        calls[2].text.starts_with("Resolved: ip_burst") && calls[2].text.contains("after 10m"),
        "{}",
        calls[2].text
    );
    assert!(
        calls[2].body["blocks"].as_array().unwrap().iter().all(|b| b["type"] != "actions"),
        "no buttons once resolved"
    );
    second.stop();
    assert_eq!(slack.unauthorized(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_of_one_rule_share_a_message_and_each_channel_is_paced() {
    let slack = FakeSlack::start();
    let dir = tempfile::tempdir().unwrap();
    let script: Script = Arc::new(Mutex::new(vec![]));
    let config = BotConfig { channel_interval_ms: 400, ..config() };
    let d = delivery(&slack, config, &script, &dir.path().join("slack.json"));
    {
        let mut s = script.lock().unwrap();
        for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            s.push(alert("ip_burst", ip, "web"));
        }
        for rule in ["spike", "outage", "drift"] {
            s.push(alert(rule, "all", "web"));
        }
    }
    let calls = on_slack(&slack, move |s| {
        s.wait_for(20, "four messages", |c| c.len() >= 4);
        settled(s)
    })
    .await;
    let alerts = posts(&calls, "#alerts");
    assert_eq!(alerts.len(), 4, "three IPs of one rule in one message, one per other rule: {calls:#?}");
    let grouped: Vec<&&Call> = alerts.iter().filter(|c| c.text.contains("ip_burst")).collect();
    assert_eq!(grouped.len(), 1);
    assert!(grouped[0].text.contains("3 of 3 firing"), "{}", grouped[0].text);
    for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
        assert!(grouped[0].text.contains(ip));
    }
    for pair in alerts.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(390), "two posts to one channel {gap:?} apart");
    }
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_is_reported_and_does_not_block_the_channel() {
    let slack = FakeSlack::start();
    let dir = tempfile::tempdir().unwrap();
    let script: Script = Arc::new(Mutex::new(vec![alert("spike", "all", "web")]));
    slack.fail_next(&[Fault::ApiError("not_in_channel")]);
    let d = delivery(&slack, config(), &script, &dir.path().join("slack.json"));
    std::thread::sleep(Duration::from_millis(1500));
    script.lock().unwrap().push(alert("outage", "all", "web"));
    let calls = on_slack(&slack, move |s| {
        s.wait_for(20, "the second message", |c| !c.is_empty());
        settled(s)
    })
    .await;
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert!(calls[0].text.contains("outage"));
    let failed: Vec<_> = d.outbox.entries().into_iter().filter(|e| e.status.starts_with("failed")).collect();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].status.contains("not_in_channel"), "{}", failed[0].status);
    d.stop();
}
