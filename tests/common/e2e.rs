//! The end-to-end flow shared by every broker: produce generated events with every kind of bad
//! input, run `clickflow run` on them, and check the HTTP answers and the dead letters against
//! the reference.

use std::collections::HashMap;
use std::time::Duration;

use dataflow::deadletter::payload_text;
use generator::{Generator, GeneratorConfig};
use read::model::Dump;

use super::kafka::*;
use super::oracle::{self, comparable, Spec};

pub const START: i64 = 1_795_132_800_000;

pub fn generated(n: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    let config = GeneratorConfig { seed, rate: 500.0, ..GeneratorConfig::default() };
    Generator::new(config, START).take(n).map(|g| (g.key, g.line)).collect()
}

/// The reference for `clickflow run` with `examples/funnels.toml`.
pub fn spec() -> Spec {
    Spec { lateness_ms: 300_000, views: super::example_views(), now_ms: chrono::Utc::now().timestamp_millis() }
}

/// Waits until every record is counted and every partition is idle, then returns the dump.
pub fn settled(port: u16, records: usize, expected_as_of: Option<i64>) -> Dump {
    let v = wait_for(port, "/api/v1/dump", Duration::from_secs(120), |d| {
        let counted = d["accepted"].as_i64().unwrap_or(0) + d["rejects"]["total"].as_i64().unwrap_or(0);
        counted == records as i64 && d["live"]["as_of_ms"].as_i64() == expected_as_of
    });
    serde_json::from_value(v).unwrap()
}

/// Generated events with every kind of bad input interleaved.
pub fn with_bad_inputs(mut records: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
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
    let huge = format!(r#"{{"user_id":"u1","event":"click","ts":1795132800000,"page":"{}"}}"#, "x".repeat(70_000));
    for (i, b) in bad.iter().chain(std::iter::once(&huge.as_bytes())).enumerate() {
        let at = (i + 1) * records.len() / 10;
        records.insert(at, (format!("bad-{i}"), b.to_vec()));
    }
    records
}

/// Topic `clicks` (PARTITIONS) and `clicks-dlq` (1) must exist on `brokers`.
pub fn kafka_to_http_equals_the_reference(brokers: &str) {
    let records = with_bad_inputs(generated(20_000, 7));
    produce(brokers, "clicks", &records);
    let expected = oracle::dump(&spec(), &by_partition(&records));
    assert!(expected.rejects.by_reason.len() >= 8, "{:?}", expected.rejects);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _run = Running(spawn_run(brokers, port, dir.path(), "clicks-dlq"));
    let counted = counted_when_ready(port, Duration::from_secs(120));
    assert_eq!(counted, records.len() as i64, "ready only once the backlog is in the views");
    let engine = settled(port, records.len(), expected.live.clock.as_of_ms);
    assert_eq!(comparable(engine), expected);

    let live = get_json(port, "/api/v1/live").unwrap();
    assert_eq!(live["active_users"].as_u64(), Some(expected.live.active_users));
    let path = "/api/v1/timeseries?metric=events&breakdown=device&from=2026-11-20T00:00:00Z&to=2026-11-20T00:30:00Z";
    let ts = get_json(port, path).unwrap();
    let total: i64 = ts["series"].as_array().unwrap().iter().map(|s| s["total"].as_i64().unwrap()).sum();
    let by_device: i64 = expected.counts["device"]
        .values()
        .flat_map(|m| m.iter())
        .filter(|(t, _)| (START..=START + 30 * 60_000).contains(*t))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total, by_device);

    let letters = read_topic(brokers, "clicks-dlq", 1, expected.rejects.total as usize);
    assert_eq!(letters.len() as i64, expected.rejects.total, "every reject is in the dead-letter topic");
    let oversized = letters.iter().find(|l| l.2 == "too_large").expect("the oversized event is a dead letter");
    assert!(oversized.3.len() < 10_000, "dead letters keep a bounded prefix of the payload");
    // Each letter's coordinates name the record that was rejected.
    let stored: HashMap<(i64, i64), Vec<u8>> = read_topic(brokers, "clicks", PARTITIONS, records.len())
        .into_iter()
        .map(|(partition, offset, _, payload)| ((partition as i64, offset), payload))
        .collect();
    assert_eq!(stored.len(), records.len(), "every produced record reads back");
    for (_, _, reason, payload) in &letters {
        let letter: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(letter["reason"].as_str(), Some(reason.as_str()));
        assert_eq!(letter["source"]["topic"], "clicks");
        let at = (letter["source"]["partition"].as_i64().unwrap(), letter["source"]["offset"].as_i64().unwrap());
        let raw = stored.get(&at).unwrap_or_else(|| panic!("no record at the coordinates of {letter}"));
        assert_eq!(letter["payload"].as_str(), Some(payload_text(raw).as_str()), "the record at {at:?}");
    }
}
