//! The collector end to end: many concurrent HTTP clients post batches (some gzip, each with one
//! invalid event) to `POST /v1/collect` on `clickflow run`, which writes into librdkafka's mock
//! cluster. Every valid event is in the topic exactly once (by event_id), stamped, keyed by user,
//! and counted by the views; invalid ones are reported per index. With the broker down, the
//! collector answers 503 with Retry-After instead of acknowledging, and accepts again once it is
//! back.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

use common::e2e::START;
use common::kafka::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const CLIENTS: usize = 16;
const REQUESTS: usize = 25;
const PER_REQUEST: usize = 20;
/// The event at this index of every batch has no `user_id`.
const BAD_INDEX: usize = 5;

fn batch(client: usize, request: usize) -> serde_json::Value {
    let events: Vec<serde_json::Value> = (0..PER_REQUEST)
        .map(|i| {
            let id = format!("c{client}-r{request}-e{i}");
            let ts = START + ((client * REQUESTS + request) * PER_REQUEST + i) as i64 * 10;
            if i == BAD_INDEX {
                serde_json::json!({"event": "click", "ts": ts, "event_id": id})
            } else {
                serde_json::json!({"user_id": format!("u{}", (client * 7 + i) % 50), "event": "page_view", "ts": ts,
                                   "page": "/", "event_id": id})
            }
        })
        .collect();
    serde_json::Value::Array(events)
}

#[allow(clippy::result_large_err)] // ureq's own error type
fn post(port: u16, body: &serde_json::Value, gzip: bool) -> Result<ureq::Response, ureq::Error> {
    let request = ureq::post(&format!("http://127.0.0.1:{port}/v1/collect")).timeout(Duration::from_secs(20));
    if gzip {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(body.to_string().as_bytes()).unwrap();
        request.set("Content-Encoding", "gzip").send_bytes(&encoder.finish().unwrap())
    } else {
        request.set("Content-Type", "text/plain;charset=UTF-8").send_string(&body.to_string())
    }
}

/// Every record of the topic, reading until nothing new came for two seconds after `expect`.
fn drain(brokers: &str, expect: usize) -> Vec<(String, serde_json::Value)> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", "collector-check").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset("clicks", p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let (mut out, mut last) = (Vec::new(), Instant::now());
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && (out.len() < expect || last.elapsed() < Duration::from_secs(2)) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            out.push((key, serde_json::from_slice(m.payload().unwrap()).unwrap()));
            last = Instant::now();
        }
    }
    out
}

#[test]
fn concurrent_batches_arrive_exactly_once_and_a_down_broker_is_refused_not_acknowledged() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("clicks", PARTITIONS, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = run_command(&brokers, port, dir.path(), "", &[]);
    command.env("CLICKFLOW__COLLECTOR__ACK_TIMEOUT_MS", "1500");
    // The broker outage below is on purpose: keep librdkafka's connection errors out of the log.
    command.env("CLICKFLOW_LOG", "warn,librdkafka=off,rdkafka::client=off,dataflow::source::kafka=error");
    let _run = Running(command.spawn().unwrap());
    wait_for(port, "/healthz", Duration::from_secs(30), |_| true);

    let answers: Vec<serde_json::Value> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                s.spawn(move || {
                    (0..REQUESTS)
                        .map(|request| {
                            let response = post(port, &batch(client, request), request % 3 == 0).expect("200");
                            assert_eq!(response.status(), 200);
                            response.into_json::<serde_json::Value>().unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients.into_iter().flat_map(|c| c.join().unwrap()).collect()
    });
    for answer in &answers {
        assert_eq!(answer["accepted"], PER_REQUEST - 1, "{answer}");
        assert_eq!(answer["rejected"][0]["index"], BAD_INDEX, "{answer}");
        assert_eq!(answer["rejected"][0]["reason"], "missing_field", "{answer}");
    }

    let expected: BTreeSet<String> = (0..CLIENTS)
        .flat_map(|c| {
            (0..REQUESTS)
                .flat_map(move |r| (0..PER_REQUEST).filter(|i| *i != BAD_INDEX).map(move |i| format!("c{c}-r{r}-e{i}")))
        })
        .collect();
    let records = drain(&brokers, expected.len());
    assert_eq!(records.len(), expected.len(), "no loss, no duplicate");
    let ids: BTreeSet<String> = records.iter().map(|(_, v)| v["event_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, expected);
    for (key, v) in &records {
        assert_eq!(key, v["user_id"].as_str().unwrap(), "keyed by user_id");
        assert_eq!(v["ip"], "127.0.0.1", "the connection's address");
        assert!(v["received_at"].as_i64().unwrap() > START);
    }
    wait_for(port, "/api/v1/dump", Duration::from_secs(60), |d| d["accepted"].as_u64() == Some(expected.len() as u64));
    let metrics = ureq::get(&format!("http://127.0.0.1:{port}/metrics")).call().unwrap().into_string().unwrap();
    assert!(metrics.contains(&format!("clickflow_collector_events_accepted_total {}", expected.len())), "{metrics}");
    assert!(metrics.contains(&format!("clickflow_collector_events_invalid_total {}", CLIENTS * REQUESTS)), "{metrics}");

    // The broker goes down: the collector must not acknowledge.
    mock.broker_down(1).unwrap();
    let one = serde_json::json!({"user_id": "late", "event": "click", "ts": START, "event_id": "down-1"});
    let started = Instant::now();
    match post(port, &one, false) {
        Err(ureq::Error::Status(503, response)) => {
            assert_eq!(response.header("Retry-After"), Some("1"));
            let body: serde_json::Value = response.into_json().unwrap();
            // librdkafka's own timeout report, or ours a second later: either way, refused.
            assert!(body["error"].as_str().unwrap().contains("Kafka did not"), "{body}");
        }
        other => panic!("expected 503 while Kafka is down, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered within the ack timeout (+1 s): {:?}",
        started.elapsed()
    );
    mock.broker_up(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let again = serde_json::json!({"user_id": "late", "event": "click", "ts": START, "event_id": "up-1"});
    loop {
        match post(port, &again, false) {
            Ok(r) => {
                assert_eq!(r.into_json::<serde_json::Value>().unwrap()["accepted"], 1);
                break;
            }
            Err(ureq::Error::Status(503, _)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500))
            }
            Err(e) => panic!("the collector did not recover with the broker: {e:?}"),
        }
    }
    let records = drain(&brokers, expected.len() + 1);
    let last: Vec<&str> =
        records.iter().filter_map(|(_, v)| v["event_id"].as_str()).filter(|id| id.ends_with("-1")).collect();
    assert_eq!(last, vec!["up-1"], "what was refused is not in the topic; what was accepted is");
}
