//! Kafka and process helpers for end-to-end tests: produce to known partitions, read a topic
//! back, start `clickflow run` against a broker, wait on its HTTP API.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

pub const PARTITIONS: i32 = 4;

/// The partition a test sends a key to (fixed, so the reference knows each partition's order).
pub fn partition_of(key: &str) -> i32 {
    (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % PARTITIONS as u64) as i32
}

/// Produces `(key, payload)` records to their [`partition_of`], in order, acknowledged.
pub fn produce(brokers: &str, topic: &str, records: &[(String, Vec<u8>)]) {
    produce_at(brokers, topic, records, None)
}

/// [`produce`] with a given Kafka message timestamp (epoch ms) on every record.
pub fn produce_at(brokers: &str, topic: &str, records: &[(String, Vec<u8>)], timestamp: Option<i64>) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for (key, payload) in records {
        let mut record =
            BaseRecord::to(topic).key(key.as_str()).payload(payload.as_slice()).partition(partition_of(key));
        if let Some(ts) = timestamp {
            record = record.timestamp(ts);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).expect("all records acknowledged");
}

/// Produces `(partition, key, payload)` records to their partitions, in order, acknowledged.
pub fn produce_to(brokers: &str, topic: &str, records: &[(i32, String, Vec<u8>)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for (partition, key, payload) in records {
        let mut record = BaseRecord::to(topic).key(key.as_str()).payload(payload.as_slice()).partition(*partition);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).expect("all records acknowledged");
}

/// A hosts file for a timely cluster of `processes` on loopback ports.
pub fn hosts_file(dir: &Path, processes: usize) -> std::path::PathBuf {
    let path = dir.join("hosts");
    let lines: Vec<String> = (0..processes).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

/// Process `process` of a cluster described by `hosts`, each process with `workers` workers.
pub fn cluster_command(
    brokers: &str,
    port: u16,
    state_dir: &Path,
    hosts: &Path,
    process: usize,
    workers: usize,
) -> Command {
    let (hosts, process) = (hosts.display().to_string(), process.to_string());
    run_command_with(brokers, port, state_dir, "", workers, &["--hosts", &hosts, "--process", &process])
}

/// Records split by partition, in produce order: what the reference replays per partition.
pub fn by_partition(records: &[(String, Vec<u8>)]) -> Vec<Vec<Vec<u8>>> {
    let mut parts = vec![Vec::new(); PARTITIONS as usize];
    for (key, payload) in records {
        parts[partition_of(key) as usize].push(payload.clone());
    }
    parts
}

/// Every message of a topic's partitions: `(partition, offset, key, payload)`.
pub fn read_topic(brokers: &str, topic: &str, partitions: i32, expect: usize) -> Vec<(i32, i64, String, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "test-reader")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < expect && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
            out.push((m.partition(), m.offset(), key, m.payload().unwrap_or(&[]).to_vec()));
        }
    }
    out
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `clickflow run` against `brokers`, configured through the environment as a user would.
pub fn spawn_run(brokers: &str, port: u16, state_dir: &Path, dead_letter_topic: &str) -> Child {
    spawn_run_with(brokers, port, state_dir, dead_letter_topic, &[])
}

pub fn spawn_run_with(brokers: &str, port: u16, state_dir: &Path, dead_letter_topic: &str, args: &[&str]) -> Child {
    run_command(brokers, port, state_dir, dead_letter_topic, args).spawn().expect("clickflow starts")
}

/// The `clickflow run` command line, configured through the environment as a user would.
pub fn run_command(brokers: &str, port: u16, state_dir: &Path, dead_letter_topic: &str, args: &[&str]) -> Command {
    run_command_with(brokers, port, state_dir, dead_letter_topic, 2, args)
}

/// [`run_command`] with `workers` worker threads.
pub fn run_command_with(
    brokers: &str,
    port: u16,
    state_dir: &Path,
    dead_letter_topic: &str,
    workers: usize,
    args: &[&str],
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_clickflow"));
    command
        .args(["run", "--workers", &workers.to_string(), "--config", super::EXAMPLE_CONFIG])
        .args(args)
        .env("CLICKFLOW__KAFKA__BROKERS", brokers)
        .env("CLICKFLOW__KAFKA__DEAD_LETTER_TOPIC", dead_letter_topic)
        .env("CLICKFLOW__API__LISTEN", format!("127.0.0.1:{port}"))
        .env("CLICKFLOW__ENGINE__STATE_DIR", state_dir)
        .env("CLICKFLOW__ENGINE__SNAPSHOT_SECONDS", "1")
        .env("CLICKFLOW__ENGINE__IDLE_SECONDS", "1")
        .env("CLICKFLOW__ENGINE__EPOCH_MS", "20")
        .env("CLICKFLOW_LOG", std::env::var("TEST_CLICKFLOW_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::null());
    command
}

pub fn get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    ureq::get(&format!("http://127.0.0.1:{port}{path}")).timeout(Duration::from_secs(2)).call().ok()?.into_json().ok()
}

/// Polls `path` until `done` holds, for at most `timeout`.
pub fn wait_for(
    port: u16,
    path: &str,
    timeout: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(v) = get_json(port, path) {
            if done(&v) {
                return v;
            }
            last = Some(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "timed out waiting on {path}; last answer: {}",
        last.map(|v| v.to_string().chars().take(2000).collect::<String>()).unwrap_or_default()
    );
}

/// Waits until both workers of `run` (see `run_command`) rewrote their snapshot after this call,
/// so the snapshots cover what the views held when it was made.
pub fn wait_for_snapshots_from_now(state_dir: &Path) {
    let since = std::time::SystemTime::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    // One file per worker and snapshot label: `worker-{w}-of-2.{run}-{epoch}.snap`.
    let written = |w: usize| {
        let prefix = format!("worker-{w}-of-2.");
        std::fs::read_dir(state_dir).into_iter().flatten().flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix)
                && name.ends_with(".snap")
                && e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t > since)
        })
    };
    while !(written(0) && written(1)) {
        assert!(Instant::now() < deadline, "no fresh snapshot in {} after 60 s", state_dir.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills the process on drop, so a failing test leaves nothing running.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for `/readyz` to answer 200 and returns the number of records counted right after.
pub fn counted_when_ready(port: u16, timeout: Duration) -> i64 {
    let deadline = Instant::now() + timeout;
    loop {
        let ready =
            ureq::get(&format!("http://127.0.0.1:{port}/readyz")).timeout(Duration::from_secs(2)).call().is_ok();
        if ready {
            let d = get_json(port, "/api/v1/dump").expect("dump answers");
            return d["accepted"].as_i64().unwrap() + d["rejects"]["total"].as_i64().unwrap();
        }
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Records the engine has accounted for: accepted or rejected.
pub fn counted(d: &serde_json::Value) -> i64 {
    d["accepted"].as_i64().unwrap_or(0) + d["rejects"]["total"].as_i64().unwrap_or(0)
}

/// `/readyz`'s status code and body.
pub fn readyz(port: u16) -> Option<(u16, serde_json::Value)> {
    let url = format!("http://127.0.0.1:{port}/readyz");
    match ureq::get(&url).timeout(Duration::from_secs(2)).call() {
        Ok(r) => Some((r.status(), r.into_json().ok()?)),
        Err(ureq::Error::Status(code, r)) => Some((code, r.into_json().ok()?)),
        Err(_) => None,
    }
}

/// Waits for `/readyz` to answer `code` and returns its body.
pub fn wait_for_readyz(port: u16, code: u16, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some((c, body)) = readyz(port) {
            if c == code {
                return body;
            }
            last = Some((c, body));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("/readyz did not answer {code} within {timeout:?}; last: {last:?}")
}

/// The value of an unlabelled metric in `/metrics`.
pub fn metric(port: u16, name: &str) -> Option<f64> {
    let text = ureq::get(&format!("http://127.0.0.1:{port}/metrics")).call().ok()?.into_string().ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
