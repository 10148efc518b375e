//! The Kafka end-to-end flow of `kafka_e2e.rs`, against tansu: an independent Kafka-compatible
//! broker written by others, started as a separate process. Bytes are produced to it, `clickflow run`
//! consumes them, the HTTP answers must equal the reference, and the rejects must reach the
//! dead-letter topic with their coordinates.
//!
//! tansu is installed by `scripts/install-tansu` into `.tools/tansu/tansu` (or named by the
//! `CLICKFLOW_TANSU` environment variable); without it the test says so and passes.

mod common;

use std::collections::HashMap;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::kafka::*;
use common::oracle::{self, comparable, Spec};
use dataflow::deadletter::payload_text;
use dataflow::{Generator, GeneratorConfig};
use views::model::Dump;

const START: i64 = 1_795_132_800_000;
/// As many valid events as the mock-cluster test (tansu takes them in well under a second).
const RECORDS: usize = 20_000;

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

/// The tansu binary: `CLICKFLOW_TANSU`, else `<repo>/.tools/tansu/tansu`, if it runs.
fn tansu_binary() -> Option<PathBuf> {
    let path = match std::env::var_os("CLICKFLOW_TANSU") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/tansu/tansu"),
    };
    let runs = Command::new(&path)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    runs.then_some(path)
}

/// A tansu broker on a loopback port with in-memory storage; killed on drop. Its output goes to a
/// log file, shown when a test fails.
struct Tansu {
    binary: PathBuf,
    child: Child,
    url: String,
    brokers: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tansu {
    fn start(binary: PathBuf) -> Tansu {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("tansu.log");
        let out = std::fs::File::create(&log).unwrap();
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&binary)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            // Settings it would otherwise take from the environment.
            .env_remove("SCHEMA_REGISTRY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("tansu starts");
        let mut tansu = Tansu { binary, child, url, brokers: format!("127.0.0.1:{port}"), log, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = tansu.child.try_wait().unwrap() {
                panic!("tansu exited before listening ({status}):\n{}", tansu.log_tail());
            }
            assert!(Instant::now() < deadline, "tansu does not listen on {}:\n{}", tansu.url, tansu.log_tail());
            std::thread::sleep(Duration::from_millis(20));
        }
        tansu
    }

    fn create_topic(&self, name: &str, partitions: i32) {
        let out = Command::new(&self.binary)
            .args(["topic", "create", name, "--partitions", &partitions.to_string(), "--broker", &self.url])
            .output()
            .expect("tansu topic create runs");
        assert!(
            out.status.success(),
            "tansu topic create {name} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- last lines of the tansu log ({}) ---\n{}", self.log.display(), self.log_tail());
        }
    }
}

#[test]
fn tansu_to_http_equals_the_reference_and_rejects_are_kept_with_coordinates() {
    let Some(binary) = tansu_binary() else {
        eprintln!(
            "skipping: tansu not installed; run scripts/install-tansu (or set CLICKFLOW_TANSU to a tansu binary)"
        );
        return;
    };
    let began = Instant::now();
    let tansu = Tansu::start(binary);
    tansu.create_topic("clicks", PARTITIONS);
    tansu.create_topic("clicks-dlq", 1);
    let brokers = tansu.brokers.clone();
    eprintln!("tansu listening on {} after {:?}", tansu.url, began.elapsed());

    let mut records = generated(RECORDS, 7);
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
    let t = Instant::now();
    produce(&brokers, "clicks", &records);
    eprintln!("produced {} records to tansu in {:?}", records.len(), t.elapsed());

    let spec = spec();
    let expected = oracle::dump(&spec, &by_partition(&records));
    assert!(expected.rejects.by_reason.len() >= 8, "{:?}", expected.rejects);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let t = Instant::now();
    let _run = Running(spawn_run(&brokers, port, dir.path(), "clicks-dlq"));
    assert_eq!(
        counted_when_ready(port, Duration::from_secs(120)),
        records.len() as i64,
        "ready only once the backlog is in the views"
    );
    let engine = settled(port, records.len(), expected.live.clock.as_of_ms);
    eprintln!("clickflow consumed and settled in {:?}", t.elapsed());
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

    // The coordinates are tansu's: each one names the record that was rejected.
    let stored: HashMap<(i64, i64), Vec<u8>> = read_topic(&brokers, "clicks", PARTITIONS, records.len())
        .into_iter()
        .map(|(partition, offset, _, payload)| ((partition as i64, offset), payload))
        .collect();
    assert_eq!(stored.len(), records.len(), "every produced record reads back from tansu");
    for (_, _, _, payload) in &letters {
        let letter: serde_json::Value = serde_json::from_slice(payload).unwrap();
        let at = (letter["source"]["partition"].as_i64().unwrap(), letter["source"]["offset"].as_i64().unwrap());
        let raw = stored.get(&at).unwrap_or_else(|| panic!("no record at the coordinates of {letter}"));
        assert_eq!(letter["payload"].as_str(), Some(payload_text(raw).as_str()), "the record at {at:?}");
    }
    eprintln!("tansu end-to-end passed in {:?}", began.elapsed());
}
