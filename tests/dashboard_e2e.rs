//! The dashboard in a real browser: `clickflow run` with API tokens over known events on the mock
//! Kafka cluster, then `tests/browser/dashboard.mjs` drives headless Chromium through it (the
//! token prompt, the numbers against the API's, a new event through the collector moving them
//! without a reload, the filter and range, silence and unsilence) and saves a screenshot per
//! panel in `target/dashboard-screenshots/`. Needs `/usr/bin/chromium`, `node` and
//! `api/web/node_modules` (scripts/install-web); without them it says it is skipped, or fails
//! when `CI` is set.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::kafka::*;
use rdkafka::mocking::MockCluster;

const READ_TOKEN: &str = "dash-read-t0ken";
const ADMIN_TOKEN: &str = "dash-adm1n-t0ken";
const USERS: i64 = 48;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// What is missing to run the browser, if anything.
fn missing_tools() -> Vec<String> {
    let mut missing = Vec::new();
    if !chromium().exists() {
        missing.push(format!("{} (apt-get install chromium; scripts/install-web does it)", chromium().display()));
    }
    let node = Command::new("node").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if !node.is_ok_and(|s| s.success()) {
        missing.push("node (apt-get install nodejs npm)".into());
    }
    if !root().join("api/web/node_modules/playwright-core/package.json").exists() {
        missing.push("api/web/node_modules/playwright-core (run scripts/install-web)".into());
    }
    missing
}

/// Shop traffic over the last ~20 minutes, in time order (nothing late): every user views `/`
/// and a product; every second adds to the cart, every fourth checks out, every eighth buys.
fn known_events(now_ms: i64) -> Vec<(String, Vec<u8>)> {
    let sources = ["google", "newsletter", ""];
    let devices = ["mobile", "desktop"];
    let countries = ["DE", "US", "FR"];
    let mut events = Vec::new();
    for i in 0..USERS {
        let user = format!("u{i}");
        let t0 = now_ms - 20 * 60_000 + i * 24_000;
        let mut steps =
            vec![(0, "page_view", Some("/".to_string())), (5_000, "page_view", Some(format!("/products/{}", i % 5)))];
        if i % 2 == 0 {
            steps.push((10_000, "add_to_cart", None));
        }
        if i % 4 == 0 {
            steps.push((15_000, "page_view", Some("/checkout".into())));
        }
        if i % 8 == 0 {
            steps.push((20_000, "purchase", None));
        }
        for (k, (dt, name, page)) in steps.into_iter().enumerate() {
            let mut e = serde_json::json!({
                "user_id": user, "event": name, "ts": t0 + dt, "event_id": format!("{user}-{k}"),
                "device": devices[i as usize % 2], "country": countries[i as usize % 3],
                "ip": format!("192.0.2.{}", i % 7),
            });
            if let Some(p) = page {
                e["page"] = p.into();
            }
            if !sources[i as usize % 3].is_empty() {
                e["utm_source"] = sources[i as usize % 3].into();
            }
            events.push((t0 + dt, user.clone(), e.to_string().into_bytes()));
        }
    }
    events.sort_by_key(|(ts, _, _)| *ts);
    events.into_iter().map(|(_, key, payload)| (key, payload)).collect()
}

fn get_with_token(port: u16, path: &str) -> Option<serde_json::Value> {
    ureq::get(&format!("http://127.0.0.1:{port}{path}"))
        .set("Authorization", &format!("Bearer {READ_TOKEN}"))
        .timeout(Duration::from_secs(2))
        .call()
        .ok()?
        .into_json()
        .ok()
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    let target = if target.is_relative() { root().join(target) } else { target };
    target.join("dashboard-screenshots")
}

/// Runs the browser script to its end (at most `timeout`), echoing its output; its exit status.
fn run_browser(port: u16, shots: &Path, timeout: Duration) -> bool {
    let mut child = Command::new("node")
        .arg(root().join("tests/browser/dashboard.mjs"))
        .env("DASHBOARD_URL", format!("http://127.0.0.1:{port}/"))
        .env("READ_TOKEN", READ_TOKEN)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SCREENSHOT_DIR", shots)
        .env("CHROMIUM", chromium())
        .env("FUNNEL", "checkout")
        .env("RETENTION", "returning_visitors")
        .env("REQUIRE_CHARTS", if std::env::var_os("CI").is_some() { "1" } else { "0" })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    // Echoed as they come, so a stuck check is visible while it waits.
    let stderr = child.stderr.take().expect("piped");
    let echo = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
        }
    });
    let stdout = child.stdout.take().expect("piped");
    let out = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("dashboard.mjs: {line}");
        }
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait on node") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("dashboard.mjs did not finish within {timeout:?}");
            break std::process::ExitStatus::default();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = echo.join();
    let _ = out.join();
    status.success()
}

#[test]
fn the_dashboard_shows_the_apis_numbers_and_moves_with_new_events() {
    let missing = missing_tools();
    if !missing.is_empty() {
        let missing = missing.join("; ");
        assert!(std::env::var_os("CI").is_none(), "dashboard_e2e cannot run under CI, missing: {missing}");
        eprintln!("dashboard_e2e: skipped, missing: {missing}");
        return;
    }
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("clicks", PARTITIONS, 1).unwrap();
    let records = known_events(chrono::Utc::now().timestamp_millis());
    produce(&mock.bootstrap_servers(), "clicks", &records);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _run = Running(
        run_command(&mock.bootstrap_servers(), port, dir.path(), "", &[])
            .env("CLICKFLOW_READ_TOKEN", READ_TOKEN)
            .env("CLICKFLOW_ADMIN_TOKEN", ADMIN_TOKEN)
            .spawn()
            .unwrap(),
    );
    // Every known event counted before the browser looks.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let counted = get_with_token(port, "/api/v1/dump").map(|d| counted(&d)).unwrap_or(0);
        if counted == records.len() as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "the engine counted {counted} of {} events", records.len());
        std::thread::sleep(Duration::from_millis(100));
    }
    let funnel = get_with_token(port, "/api/v1/funnels/checkout").unwrap();
    assert_eq!(funnel["steps"][0]["users"], USERS, "every user viewed a product");
    assert_eq!(funnel["steps"][3]["users"], USERS / 8, "every eighth bought");

    let shots = screenshot_dir();
    let _ = std::fs::remove_dir_all(&shots);
    assert!(run_browser(port, &shots, Duration::from_secs(240)), "the browser checks failed (see above)");
    for panel in ["traffic", "pages", "breakdowns", "sessions", "funnels", "retention", "paths", "alerts", "limits"] {
        let png = shots.join(format!("{panel}.png"));
        let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "a screenshot of the {panel} panel at {}", png.display());
    }
    eprintln!("dashboard_e2e: screenshots in {}", shots.display());
}
