//! Bytes through a real Kafka-protocol broker (librdkafka's mock cluster) into `clickflow run`,
//! answers read over HTTP and compared with the reference; rejects accounted for with their
//! coordinates; and kill -9 in the middle of the stream changes nothing.

mod common;

use std::time::Duration;

use common::kafka::*;
use common::oracle::{self, comparable, Spec};
use dataflow::{Generator, GeneratorConfig};
use rdkafka::mocking::MockCluster;
use views::model::Dump;

const START: i64 = 1_795_132_800_000;

fn generated(n: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    let config = GeneratorConfig { seed, rate: 500.0, ..GeneratorConfig::default() };
    Generator::new(config, START).take(n).map(|g| (g.key, g.line)).collect()
}

fn spec() -> Spec {
    Spec { lateness_ms: 300_000, views: views::ViewConfig::default(), now_ms: chrono::Utc::now().timestamp_millis() }
}

/// Waits until every record is counted and every partition is idle, then returns the dump.
fn settled(port: u16, records: usize, expected_as_of: Option<i64>) -> Dump {
    let v = wait_for(port, "/api/v1/dump", Duration::from_secs(120), |d| {
        let counted = d["accepted"].as_i64().unwrap_or(0) + d["rejects"]["total"].as_i64().unwrap_or(0);
        counted == records as i64 && d["live"]["as_of_ms"].as_i64() == expected_as_of
    });
    serde_json::from_value(v).unwrap()
}

#[test]
fn kafka_to_http_equals_the_reference_and_rejects_are_kept_with_coordinates() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("clicks", PARTITIONS, 1).unwrap();
    mock.create_topic("clicks-dlq", 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let mut records = generated(20_000, 7);
    // Interleave every kind of bad input with the valid events.
    let bad: [&[u8]; 8] = [
        b"not json at all",
        b"{\"user_id\":\"u1\",\"event\":\"click\"",
        br#"{"event":"click","ts":1795132800000}"#,
        br#"{"user_id":"u1","event":"click","ts":"tomorrow-ish"}"#,
        br#"{"user_id":"u1","event":"click","ts":1}"#,
        br#"{"user_id":7,"event":"click","ts":1795132800000}"#,
        &[0xff, 0xfe, b'{'],
        b"",
    ];
    let huge = format!(r#"{{"user_id":"u1","event":"click","ts":1795132800000,"page":"{}"}}"#, "x".repeat(70_000))
        .into_bytes();
    for (i, b) in bad.iter().chain(std::iter::once(&huge.as_slice())).enumerate() {
        let at = (i + 1) * records.len() / 10;
        records.insert(at, (format!("bad-{i}"), b.to_vec()));
    }
    produce(&brokers, "clicks", &records);

    let spec = spec();
    let expected = oracle::dump(&spec, &by_partition(&records));
    assert!(expected.rejects.by_reason.len() >= 8, "{:?}", expected.rejects);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _run = Running(spawn_run(&brokers, port, dir.path(), "clicks-dlq"));
    assert_eq!(
        counted_when_ready(port, Duration::from_secs(120)),
        records.len() as i64,
        "ready only once the backlog is in the views"
    );
    let engine = settled(port, records.len(), expected.live.clock.as_of_ms);
    assert_eq!(comparable(engine), expected);

    let live = get_json(port, "/api/v1/live").unwrap();
    assert_eq!(live["active_users"].as_u64(), Some(expected.live.active_users));
    let ts = get_json(
        port,
        "/api/v1/timeseries?metric=events&breakdown=device&from=2026-11-20T00:00:00Z&to=2026-11-20T00:30:00Z",
    )
    .unwrap();
    let total: i64 = ts["series"].as_array().unwrap().iter().map(|s| s["total"].as_i64().unwrap()).sum();
    let by_device: i64 = expected.counts["device"]
        .values()
        .flat_map(|m| m.iter())
        .filter(|(t, _)| (START..=START + 30 * 60_000).contains(*t))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total, by_device);

    let letters = read_topic(&brokers, "clicks-dlq", 1, expected.rejects.total as usize);
    assert_eq!(letters.len() as i64, expected.rejects.total, "every reject is in the dead-letter topic");
    for (_, _, reason, payload) in &letters {
        let letter: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(letter["reason"].as_str(), Some(reason.as_str()));
        assert_eq!(letter["source"]["topic"], "clicks");
        assert!(letter["source"]["offset"].is_i64() && letter["source"]["partition"].is_i64(), "{letter}");
    }
    let oversized = letters.iter().find(|l| l.2 == "too_large").expect("the oversized event is a dead letter");
    assert!(oversized.3.len() < 10_000, "dead letters keep a bounded prefix of the payload");
}

#[test]
fn kill_9_mid_stream_then_restart_gives_the_views_of_an_uninterrupted_run() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("clicks", PARTITIONS, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let records = generated(60_000, 11);
    let (first, second) = records.split_at(records.len() / 2);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();

    produce(&brokers, "clicks", first);
    let mut run = Running(spawn_run(&brokers, port, dir.path(), ""));
    wait_for(port, "/api/v1/dump", Duration::from_secs(60), |d| {
        d["accepted"].as_i64().unwrap_or(0) + d["rejects"]["total"].as_i64().unwrap_or(0) == first.len() as i64
    });
    // Let a snapshot cover the first half, then kill while the second half streams in.
    std::thread::sleep(Duration::from_millis(1500));
    let producer = {
        let (brokers, second) = (brokers.clone(), second.to_vec());
        // Paced, so the kill lands while records are still arriving.
        std::thread::spawn(move || {
            for chunk in second.chunks(1000) {
                produce(&brokers, "clicks", chunk);
                std::thread::sleep(Duration::from_millis(40));
            }
        })
    };
    let at_kill = wait_for(port, "/api/v1/dump", Duration::from_secs(60), |d| {
        d["accepted"].as_i64().unwrap_or(0) > first.len() as i64 + 3000
    });
    run.0.kill().unwrap(); // SIGKILL: no shutdown path runs
    run.0.wait().unwrap();
    assert!(!producer.is_finished(), "killed mid-stream");
    assert!(at_kill["accepted"].as_i64().unwrap() < records.len() as i64 - 5000);
    producer.join().unwrap();

    let mut restarted = Running(spawn_run(&brokers, port, dir.path(), ""));
    let expected = oracle::dump(&spec(), &by_partition(&records));
    let engine = settled(port, records.len(), expected.live.clock.as_of_ms);
    assert_eq!(comparable(engine), expected);

    // A polite stop drains and exits promptly.
    let pid = restarted.0.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = restarted.0.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "clickflow run did not exit within 15 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status after SIGTERM: {status}");
}
