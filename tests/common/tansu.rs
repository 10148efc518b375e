//! tansu, an independent Kafka-compatible broker, as a separate process: in memory, or on a
//! local S3-compatible store (moto's server) so that it can be killed and restarted without
//! losing what it stored. Installed by `scripts/install-tansu` and `scripts/install-moto`.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::kafka::free_port;

/// The tansu binary: `CLICKFLOW_TANSU`, else `<repo>/.tools/tansu/tansu`, if it runs.
pub fn tansu_binary() -> Option<PathBuf> {
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

/// moto's S3-compatible server (`<repo>/.tools/moto/venv/bin/moto_server`), if installed.
pub fn moto_server() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/moto/venv/bin/moto_server");
    path.exists().then_some(path)
}

/// A local S3-compatible store with one bucket; killed on drop.
pub struct ObjectStore {
    child: Child,
    pub endpoint: String,
    pub bucket: String,
}

impl ObjectStore {
    pub fn start(moto: PathBuf) -> ObjectStore {
        let port = free_port();
        let child = Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let endpoint = format!("http://127.0.0.1:{port}");
        let store = ObjectStore { child, endpoint, bucket: "tansu".into() };
        let deadline = Instant::now() + Duration::from_secs(30);
        // Creating the bucket is also the readiness check.
        while ureq::put(&format!("{}/{}", store.endpoint, store.bucket)).call().is_err() {
            assert!(Instant::now() < deadline, "moto_server does not answer on {}", store.endpoint);
            std::thread::sleep(Duration::from_millis(100));
        }
        store
    }
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tansu broker on a loopback port, in memory or on an [`ObjectStore`]; killed on drop. Its
/// output goes to a log file, shown when a test fails.
pub struct Tansu {
    binary: PathBuf,
    child: Child,
    port: u16,
    store: Option<(String, String)>,
    pub url: String,
    pub brokers: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tansu {
    pub fn start(binary: PathBuf) -> Tansu {
        Tansu::start_on(binary, None)
    }

    /// On `store` (it keeps the topics across restarts), or in memory.
    pub fn start_on(binary: PathBuf, store: Option<&ObjectStore>) -> Tansu {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("tansu.log");
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let store = store.map(|s| (s.endpoint.clone(), format!("s3://{}/", s.bucket)));
        let child = spawn(&binary, &url, store.as_ref(), &log);
        let mut tansu = Tansu { binary, child, port, store, url, brokers: format!("127.0.0.1:{port}"), log, _dir: dir };
        tansu.wait_listening();
        tansu
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("tansu exited before listening ({status}):\n{}", self.log_tail());
            }
            assert!(Instant::now() < deadline, "tansu does not listen on {}:\n{}", self.url, self.log_tail());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9: no shutdown path runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and waits for the broker to exit (kill -9 after 10 s).
    pub fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// Starts the broker again on the same port and storage (after [`Tansu::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.binary, &self.url, self.store.as_ref(), &self.log);
        self.wait_listening();
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
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

    pub fn log_tail(&self) -> String {
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

fn spawn(binary: &PathBuf, url: &str, store: Option<&(String, String)>, log: &PathBuf) -> Child {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let mut command = Command::new(binary);
    command
        .args(["broker", "--listener-url", url, "--advertised-listener-url", url])
        // Settings it would otherwise take from the environment.
        .env_remove("SCHEMA_REGISTRY")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    match store {
        None => command.args(["--storage-engine", "memory://tansu/"]),
        Some((endpoint, url)) => command
            .args(["--storage-engine", url])
            .env("AWS_ENDPOINT", endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_DEFAULT_REGION", "us-east-1"),
    };
    command.spawn().expect("tansu starts")
}
