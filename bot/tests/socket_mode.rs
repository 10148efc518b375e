//! Socket Mode against a local fake: the bot opens the WebSocket that `apps.connections.open`
//! hands out (with the app token), answers a slash command in the envelope's acknowledgement, and
//! applies a button click that arrives the same way.

#[path = "support/fake_slack.rs"]
mod fake_slack;
#[path = "support/sign.rs"]
mod sign;

use std::time::Duration;

use bot::{Bot, BotConfig, Secrets};
use fake_slack::FakeSlack;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_buttons_arrive_over_the_socket() {
    let slack = FakeSlack::start();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    slack.set_socket_url(&format!("ws://{}/link", listener.local_addr().unwrap()));
    let config = BotConfig {
        mode: bot::config::Mode::Socket,
        api_url: slack.api_url.clone(),
        group_wait_seconds: 0,
        channel_interval_ms: 50,
        ..BotConfig::default()
    };
    let secrets =
        Secrets { bot_token: Some("xoxb-test".into()), signing_secret: None, app_token: Some("xapp-test".into()) };
    let alert: read::model::Alert = serde_json::from_value(serde_json::json!({
        "id": "spike", "rule": "spike", "severity": "warning", "labels": {}, "state": "firing", "value": 900.0,
        "summary": "events per minute 9x the baseline", "started_ms": 1795132800000i64, "fired_ms": 1795132980000i64,
        "link": "/api/v1/timeseries"
    }))
    .unwrap();
    let (model, alerts) = sign::empty_views();
    let bot = Bot::new(config, secrets, model, alerts, None)
        .unwrap()
        .with_alert_source(Box::new(move || (Some(1_795_133_000_000), vec![alert.clone()])));
    bot.start().unwrap();

    // The first connection the bot opens gets the hello, a command and a click.
    let (tcp, _) =
        tokio::time::timeout(Duration::from_secs(10), listener.accept()).await.expect("the bot connects").unwrap();
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    let hello = serde_json::json!({"type": "hello", "num_connections": 1,
        "debug_info": {"host": "fake"}, "connection_info": {"app_id": "A123456"}});
    ws.send(Message::text(hello.to_string())).await.unwrap();
    let form: serde_json::Value = serde_urlencoded::from_str::<std::collections::BTreeMap<String, String>>(
        &sign::command_form("help public", "https://hooks.slack.com/commands/T0001/1/x"),
    )
    .map(|m| serde_json::to_value(m).unwrap())
    .unwrap();
    let command = serde_json::json!({"envelope_id": "e1", "type": "slash_commands", "accepts_response_payload": true, "payload": form});
    ws.send(Message::text(command.to_string())).await.unwrap();
    let ack = next_ack(&mut ws, "e1").await;
    assert_eq!(ack["payload"]["response_type"], "in_channel", "{ack}");
    assert!(ack["payload"]["text"].as_str().unwrap().contains("/clickflow funnel <name>"), "{ack}");

    // The alert message goes out over the Web API; its Acknowledge button comes back over the socket.
    let s = slack.clone();
    tokio::task::spawn_blocking(move || s.wait_for(10, "the alert message", |c| !c.is_empty())).await.unwrap();
    let click: serde_json::Value = serde_json::from_str(
        &serde_urlencoded::from_str::<Vec<(String, String)>>(&sign::button_form("ack", "0", "U42")).unwrap()[0].1,
    )
    .unwrap();
    let interactive = serde_json::json!({"envelope_id": "e2", "type": "interactive", "accepts_response_payload": false, "payload": click});
    ws.send(Message::text(interactive.to_string())).await.unwrap();
    next_ack(&mut ws, "e2").await;
    let s = slack.clone();
    let calls =
        tokio::task::spawn_blocking(move || s.wait_for(10, "the acknowledged update", |c| c.len() >= 2)).await.unwrap();
    assert_eq!(calls[1].method, "chat.update");
    assert!(calls[1].text.contains("Acknowledged by <@U42>"), "{}", calls[1].text);
    bot.stop();
}

async fn next_ack<S>(ws: &mut S, envelope: &str) -> serde_json::Value
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next()).await.expect("an acknowledgement").unwrap().unwrap();
        if let Message::Text(text) = message {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if v["envelope_id"] == envelope {
                return v;
            }
        }
    }
}
