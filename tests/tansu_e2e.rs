//! The Kafka end-to-end flow of `kafka_e2e.rs`, against tansu: an independent Kafka-compatible
//! broker written by others, started as a separate process. Bytes are produced to it, `clickflow run`
//! consumes them, the HTTP answers must equal the reference, and the rejects must reach the
//! dead-letter topic with their coordinates.
//!
//! tansu is installed by `scripts/install-tansu` into `.tools/tansu/tansu` (or named by the
//! `CLICKFLOW_TANSU` environment variable); without it the test says so and passes.

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::e2e::kafka_to_http_equals_the_reference;
use common::kafka::{free_port, PARTITIONS};

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

    kafka_to_http_equals_the_reference(&brokers);
    eprintln!("tansu end-to-end passed in {:?}", began.elapsed());
}
