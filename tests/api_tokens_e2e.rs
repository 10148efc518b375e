//! `clickflow run` with API tokens from the environment, and without them on a reachable address.

mod common;

use std::time::{Duration, Instant};

use common::kafka::*;
use rdkafka::mocking::MockCluster;

fn status(request: ureq::Request) -> u16 {
    match request.timeout(Duration::from_secs(5)).call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn with_tokens_the_api_asks_for_them_and_the_collector_keeps_its_own_rules() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("clicks", PARTITIONS, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _run = Running(
        run_command(&mock.bootstrap_servers(), port, dir.path(), "", &[])
            .env("CLICKFLOW_READ_TOKEN", "r-secret")
            .env("CLICKFLOW_ADMIN_TOKEN", "a-secret")
            .spawn()
            .unwrap(),
    );
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while ureq::get(&url("/healthz")).call().is_err() {
        assert!(Instant::now() < deadline, "the API never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status(ureq::get(&url("/api/v1/live"))), 401);
    assert_eq!(status(ureq::get(&url("/api/v1/live")).set("Authorization", "Bearer r-secret")), 200);
    let silence = serde_json::json!({"matcher": "traffic_anomaly", "minutes": 5});
    let post = |token: &str| match ureq::post(&url("/api/v1/alerts/silences"))
        .set("Authorization", &format!("Bearer {token}"))
        .send_json(silence.clone())
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(post("r-secret"), 403, "the read token cannot silence alerts");
    assert!((200..300).contains(&post("a-secret")), "the admin token can");
    // The collector is not behind the API's tokens (it has its write key).
    let event = serde_json::json!({"user_id": "u1", "event": "page_view", "page": "/", "ts": chrono::Utc::now().timestamp_millis()});
    assert_eq!(ureq::post(&url("/v1/collect")).send_json(event).unwrap().status(), 200);
}

#[test]
fn without_tokens_on_a_reachable_address_the_engine_refuses_to_start_and_says_what_to_do() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("clicks", PARTITIONS, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = run_command(&mock.bootstrap_servers(), port, dir.path(), "", &[])
        .env("CLICKFLOW__API__LISTEN", format!("0.0.0.0:{port}"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("clickflow run kept serving an open API on 0.0.0.0");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!exit.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("CLICKFLOW_ADMIN_TOKEN") && stderr.contains("trusted_network"), "{stderr}");
}
