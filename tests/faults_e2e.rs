//! Faults injected into a real Kafka-protocol broker (librdkafka's mock cluster, which keeps its
//! data while a broker is down) under `clickflow run`: outages during catch-up and live traffic,
//! fetches that fail while the broker answers everything else. The views must equal an uninterrupted run's,
//! nothing lost and nothing counted twice, and `/readyz` must follow the input's health.

mod common;

use std::time::Duration;

use common::e2e::START;
use common::kafka::*;
use common::oracle::comparable;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

const BROKER: i32 = 1;
const LATENESS_MS: i64 = 300_000;

/// `per_partition` events in each partition; partition 0's event time runs ten times faster, so
/// a half-read backlog has partitions far apart in event time (as real backlogs do).
fn skewed(per_partition: i64) -> Vec<(i32, String, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..per_partition {
        for p in 0..PARTITIONS {
            let step = if p == 0 { 2_000 } else { 200 };
            let user = format!("u{p}-{}", i % 40);
            let line = format!(
                r#"{{"event_id":"e{p}-{i}","user_id":"{user}","event":"page_view","page":"/p{}","ts":{}}}"#,
                i % 7,
                START + i * step
            );
            out.push((p, user, line.into_bytes()));
        }
    }
    out
}

/// The newest event time of [`skewed`] minus the lateness: `as_of` once everything is read.
fn final_as_of(per_partition: i64) -> i64 {
    START + (per_partition - 1) * 2_000 - LATENESS_MS
}

/// Produces in small batches, so that a consumer limited to a few KiB per fetch reads slowly.
fn produce_in_small_batches(brokers: &str, records: &[(i32, String, Vec<u8>)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("batch.num.messages", "20")
        .set("linger.ms", "1")
        .create()
        .expect("producer");
    for (partition, key, payload) in records {
        let mut record = BaseRecord::to("clicks").key(key.as_str()).payload(payload.as_slice()).partition(*partition);
        while let Err((_, r)) = producer.send(record) {
            record = r;
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    producer.flush(Duration::from_secs(60)).expect("all records acknowledged");
}

/// The views of an engine that read the same topic without interruption.
fn uninterrupted(brokers: &str, total: i64, as_of: i64) -> read::model::Dump {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _run = Running(spawn_run(brokers, port, dir.path(), ""));
    let v = wait_for(port, "/api/v1/dump", Duration::from_secs(120), |d| {
        counted(d) == total && d["live"]["as_of_ms"].as_i64() == Some(as_of)
    });
    serde_json::from_value(v).unwrap()
}

#[test]
fn a_broker_outage_during_catch_up_loses_nothing_and_readiness_follows_the_broker() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("clicks", PARTITIONS, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let per_partition = 4_000;
    let records = skewed(per_partition);
    let total = records.len() as i64;
    produce_in_small_batches(&brokers, &records);

    // A slow catch-up (a few KiB per fetch, 50 ms per round trip), so the outage lands in it.
    mock.broker_round_trip_time(BROKER, Duration::from_millis(50)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _run = Running(
        run_command(&brokers, port, dir.path(), "", &[])
            .env("CLICKFLOW__KAFKA__PROPERTIES__MAX_PARTITION_FETCH_BYTES", "\"4096\"")
            .env("CLICKFLOW__ENGINE__STALL_SECONDS", "2")
            .spawn()
            .unwrap(),
    );
    let before = wait_for(port, "/api/v1/dump", Duration::from_secs(60), |d| counted(d) >= total / 5);
    assert!(counted(&before) < total / 2, "the outage must come during the catch-up: {}", counted(&before));
    mock.broker_down(BROKER).unwrap();
    // Longer than the idle time (1 s): silence from an unreachable broker is not "caught up".
    std::thread::sleep(Duration::from_secs(5));
    let during = get_json(port, "/api/v1/dump").unwrap();
    let as_of_during = during["live"]["as_of_ms"].as_i64();
    mock.broker_up(BROKER).unwrap();

    let after = wait_for(port, "/api/v1/dump", Duration::from_secs(120), |d| counted(d) == total);
    assert_eq!(after["rejects"]["total"], 0, "nothing rejected after the outage: {}", after["rejects"]);
    assert_eq!(after["accepted"].as_i64(), Some(total));
    assert!(
        as_of_during.is_none_or(|a| a < START + per_partition * 200),
        "as_of did not jump ahead of the slow partitions during the outage: {as_of_during:?}"
    );

    // Caught up: ready. A broker outage in live traffic makes it not ready, its return ready.
    wait_for_readyz(port, 200, Duration::from_secs(30));
    mock.broker_down(BROKER).unwrap();
    let stalled = wait_for_readyz(port, 503, Duration::from_secs(20));
    assert_eq!(stalled["status"], "stalled", "{stalled}");
    assert!(stalled["message"].as_str().unwrap().contains("has not answered"), "{stalled}");
    assert_eq!(metric(port, "clickflow_ready"), Some(0.0));
    mock.broker_up(BROKER).unwrap();
    wait_for_readyz(port, 200, Duration::from_secs(30));
    assert_eq!(metric(port, "clickflow_ready"), Some(1.0));

    // The same views as a run that never saw an outage.
    let as_of = final_as_of(per_partition);
    let v = wait_for(port, "/api/v1/dump", Duration::from_secs(60), |d| d["live"]["as_of_ms"].as_i64() == Some(as_of));
    let interrupted: read::model::Dump = serde_json::from_value(v).unwrap();
    mock.broker_round_trip_time(BROKER, Duration::ZERO).unwrap();
    assert_eq!(comparable(interrupted), comparable(uninterrupted(&brokers, total, as_of)));
}

#[test]
fn a_consumer_whose_fetches_fail_makes_the_engine_not_ready_is_restarted_and_catches_up() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("clicks", PARTITIONS, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let records = skewed(500);
    let (first, second) = records.split_at(records.len() / 2);
    produce_in_small_batches(&brokers, first);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _run = Running(
        run_command(&brokers, port, dir.path(), "", &[]).env("CLICKFLOW__ENGINE__STALL_SECONDS", "2").spawn().unwrap(),
    );
    wait_for(port, "/api/v1/dump", Duration::from_secs(60), |d| counted(d) == first.len() as i64);
    wait_for_readyz(port, 200, Duration::from_secs(30));
    // The broker answers everything but fetches (a storage fault): records wait, none is read.
    let failures = vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR; 40];
    mock.request_errors(RDKafkaApiKey::Fetch, &failures);
    produce_in_small_batches(&brokers, second);
    let stalled = wait_for_readyz(port, 503, Duration::from_secs(30));
    assert_eq!(stalled["status"], "stalled", "{stalled}");
    assert!(stalled["message"].as_str().unwrap().contains("records wait"), "{stalled}");
    let total = records.len() as i64;
    let done = wait_for(port, "/api/v1/dump", Duration::from_secs(90), |d| counted(d) == total);
    assert_eq!(done["rejects"]["total"], 0);
    wait_for_readyz(port, 200, Duration::from_secs(30));
    let metrics = ureq::get(&format!("http://127.0.0.1:{port}/metrics")).call().unwrap().into_string().unwrap();
    let restarted = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("clickflow_consumer_restarts_total{"))
        .any(|l| l.rsplit(' ').next().is_some_and(|n| n != "0"));
    assert!(restarted, "the stalled consumer was restarted:\n{metrics}");
}
