//! Faults with tansu, an independent Kafka-compatible broker, kept on a local S3-compatible store
//! so that it can be killed (-9) and restarted without losing what it stored: a broker killed
//! during the engine's catch-up, live traffic through the collector across a broker stop or kill, an
//! engine restarted on a broker that under-reports where partitions end, and an engine killed at
//! random points of its catch-up.
//!
//! A broker killed (-9) under live writes is held to less: tansu may then not deliver records it
//! acknowledged, so the engine must count everything or report the shortfall, never be silent.
//!
//! Needs `scripts/install-tansu` and `scripts/install-moto` (run by `scripts/test`); without them
//! each test says it is skipped.

mod common;

use std::time::{Duration, Instant};

use common::e2e::{generated, settled, spec};
use common::kafka::*;
use common::oracle::{self, comparable};
use common::tansu::{moto_server, tansu_binary, ObjectStore, Tansu};

/// Small fetches and a small local queue: the backlog stays on the broker while the engine reads
/// it, so that a kill lands in the middle of the catch-up.
const SLOW_CATCH_UP: [(&str, &str); 5] = [
    ("CLICKFLOW__KAFKA__PROPERTIES__MAX_PARTITION_FETCH_BYTES", "4096"),
    ("CLICKFLOW__KAFKA__PROPERTIES__FETCH_MAX_BYTES", "8192"),
    ("CLICKFLOW__KAFKA__PROPERTIES__MESSAGE_MAX_BYTES", "8192"),
    ("CLICKFLOW__KAFKA__PROPERTIES__QUEUED_MIN_MESSAGES", "50"),
    ("CLICKFLOW__KAFKA__PROPERTIES__QUEUED_MAX_MESSAGES_KBYTES", "16"),
];

/// tansu on a fresh object store with topic `clicks`, or `None` (and why) when not installed.
fn tansu_on_object_store() -> Option<(Tansu, ObjectStore)> {
    let (Some(tansu), Some(moto)) = (tansu_binary(), moto_server()) else {
        eprintln!("skipping: tansu or moto_server not installed; run scripts/install-tansu and scripts/install-moto");
        return None;
    };
    let store = ObjectStore::start(moto);
    let broker = Tansu::start_on(tansu, Some(&store));
    broker.create_topic("clicks", PARTITIONS);
    Some((broker, store))
}

/// `(key, payload)` records as produced.
type Records = Vec<(String, Vec<u8>)>;

/// tansu in memory with topic `clicks` holding `n` generated records, or `None` (and why).
fn tansu_in_memory_with(n: usize, seed: u64) -> Option<(Tansu, Records)> {
    let Some(binary) = tansu_binary() else {
        eprintln!("skipping: tansu not installed; run scripts/install-tansu");
        return None;
    };
    let broker = Tansu::start(binary);
    broker.create_topic("clicks", PARTITIONS);
    let records = generated(n, seed);
    produce(&broker.brokers, "clicks", &records);
    Some((broker, records))
}

#[test]
fn a_broker_killed_during_catch_up_and_restarted_loses_and_doubles_nothing() {
    let Some((mut broker, _store)) = tansu_on_object_store() else { return };
    let records = generated(20_000, 9);
    let total = records.len() as i64;
    produce(&broker.brokers, "clicks", &records);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _run = Running(
        run_command(&broker.brokers, port, dir.path(), "", &[])
            .envs(SLOW_CATCH_UP)
            .env("CLICKFLOW__ENGINE__STALL_SECONDS", "3")
            .spawn()
            .unwrap(),
    );
    let before = wait_for(port, "/api/v1/dump", Duration::from_secs(60), |d| counted(d) >= total / 10);
    broker.kill();
    let killed_at = counted(&before);
    std::thread::sleep(Duration::from_secs(6));
    let during = get_json(port, "/api/v1/dump").unwrap();
    broker.restart();
    let back = Instant::now();
    wait_for(port, "/api/v1/dump", Duration::from_secs(120), |d| counted(d) == total);
    eprintln!(
        "broker killed at {killed_at} of {total} counted, {} during the outage; all counted {:?} after its restart",
        counted(&during),
        back.elapsed()
    );
    assert!(counted(&during) < total, "the kill came during the catch-up");
    // Exactly the views of the reference over the same records: nothing lost, nothing twice.
    let expected = oracle::dump(&spec(), &by_partition(&records));
    let engine = settled(port, records.len(), expected.live.clock.as_of_ms);
    assert_eq!(comparable(engine), expected);
}

#[test]
fn live_traffic_through_the_collector_across_a_broker_stop_is_counted_once_and_accepted_again_within_seconds() {
    let Some((mut broker, _store)) = tansu_on_object_store() else { return };
    let (port, _dir, _run) = live_engine(&broker);
    let total = live_traffic(port, &mut broker, Tansu::stop);
    // Every acknowledged event is counted once; a retried batch that reached Kafka twice is a
    // duplicate by its event ids.
    let done = wait_for(port, "/api/v1/dump", Duration::from_secs(90), |d| d["accepted"].as_i64() >= Some(total));
    std::thread::sleep(Duration::from_secs(2));
    let done = get_json(port, "/api/v1/dump").unwrap_or(done);
    assert_eq!(done["accepted"].as_i64(), Some(total), "counted once: {}", done["rejects"]);
    let rejects = &done["rejects"]["by_reason"];
    let other = rejects.as_object().unwrap().iter().filter(|(k, _)| *k != "duplicate").count();
    assert_eq!(other, 0, "no rejects but duplicates of retried batches: {rejects}");
}

/// tansu 0.6 on S3 killed (-9) under live writes cannot serve every record it acknowledged at
/// its offset afterwards (a fresh consumer from offset 0 reads nothing at all). The engine cannot
/// count what the broker does not deliver, but it must never be silent about it: whatever is not
/// counted shows as lag on a stalled partition and `/readyz` answers 503.
#[test]
fn live_traffic_across_a_broker_kill_is_counted_or_the_shortfall_is_reported_never_silent() {
    let Some((mut broker, _store)) = tansu_on_object_store() else { return };
    let (port, _dir, _run) = live_engine(&broker);
    let total = live_traffic(port, &mut broker, Tansu::kill);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let dump = get_json(port, "/api/v1/dump").unwrap();
        let accepted = dump["accepted"].as_i64().unwrap();
        if accepted >= total {
            break;
        }
        if let Some((503, body)) = readyz(port) {
            assert_eq!(body["status"], "stalled", "{body}");
            assert!(body["message"].as_str().unwrap().contains("records wait"), "{body}");
            eprintln!("{accepted} of {total} acknowledged events counted; the rest reported: {}", body["message"]);
            break;
        }
        assert!(Instant::now() < deadline, "{accepted} of {total} counted while /readyz says ready: a silent loss");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `clickflow run` for live traffic, with a short stall time.
fn live_engine(broker: &Tansu) -> (u16, tempfile::TempDir, Running) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = run_command(&broker.brokers, port, dir.path(), "", &[]);
    let run = Running(command.env("CLICKFLOW__ENGINE__STALL_SECONDS", "3").spawn().unwrap());
    (port, dir, run)
}

/// 120 batches of 10 events through the collector, one every 100 ms, each sent again until
/// acknowledged; the broker goes down (`outage`) at batch 30 and is restarted once it has been
/// down for 4 s. Returns the number of events.
fn live_traffic(port: u16, broker: &mut Tansu, outage: fn(&mut Tansu)) -> i64 {
    let url = format!("http://127.0.0.1:{port}/v1/collect");
    let post = |batch: &serde_json::Value| {
        ureq::post(&url).timeout(Duration::from_secs(20)).send_json(batch.clone()).map(|r| r.status()).unwrap_or_else(
            |e| match e {
                ureq::Error::Status(code, _) => code,
                ureq::Error::Transport(_) => 0,
            },
        )
    };
    // Live traffic: a batch of 10 events every 100 ms, each batch sent again until acknowledged
    // (a client's retry: the same event ids).
    let batch = |b: usize| {
        let now = chrono::Utc::now().timestamp_millis();
        let events: Vec<serde_json::Value> = (0..10)
            .map(|i| {
                serde_json::json!({"user_id": format!("u{}", (b + i) % 13), "event": "page_view", "page": "/",
                                        "event_id": format!("b{b}-e{i}"), "ts": now})
            })
            .collect();
        serde_json::Value::Array(events)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while post(&batch(0)) != 200 {
        assert!(Instant::now() < deadline, "the collector never accepted");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (batches, mut refused, mut down_at, mut back_at, mut accepted_again) = (120, 0, None, None, None);
    for b in 1..batches {
        if b == 30 {
            outage(broker);
            down_at = Some(Instant::now());
        }
        let body = batch(b);
        loop {
            match post(&body) {
                200 => break,
                _ => refused += 1,
            }
            if let Some(down) = down_at.filter(|_| back_at.is_none()) {
                if down.elapsed() > Duration::from_secs(4) {
                    broker.restart();
                    back_at = Some(Instant::now());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if accepted_again.is_none() {
            accepted_again = back_at.map(|t| t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let accepted_again = accepted_again.expect("the broker came back");
    eprintln!("the collector accepted again {accepted_again:?} after the broker's restart; {refused} answers were 503");
    assert!(refused > 0, "requests were refused while the broker was down");
    assert!(accepted_again < Duration::from_secs(30), "accepted again within seconds: {accepted_again:?}");
    (batches * 10) as i64
}

#[test]
fn an_engine_restarted_on_a_broker_that_under_reports_partition_ends_resumes_exactly() {
    // tansu reports a partition's end as the last batch's base offset + 1: behind the snapshot.
    let Some((broker, records)) = tansu_in_memory_with(8_000, 4) else { return };
    let total = records.len() as i64;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut first = Running(spawn_run(&broker.brokers, port, dir.path(), ""));
    wait_for(port, "/api/v1/dump", Duration::from_secs(60), |d| counted(d) == total);
    wait_for_snapshots_from_now(dir.path());
    first.0.kill().unwrap();
    first.0.wait().unwrap();

    let mut again = Running(spawn_run(&broker.brokers, port, dir.path(), ""));
    let resumed = wait_for(port, "/api/v1/dump", Duration::from_secs(60), |d| counted(d) >= total);
    assert!(again.0.try_wait().unwrap().is_none(), "the engine resumed instead of refusing");
    std::thread::sleep(Duration::from_secs(2));
    let settled = get_json(port, "/api/v1/dump").unwrap();
    assert_eq!(counted(&settled), total, "nothing counted twice: {} then {}", counted(&resumed), counted(&settled));
}

#[test]
fn the_engine_killed_at_random_points_of_its_catch_up_ends_with_the_views_of_the_reference() {
    let Some((broker, records)) = tansu_in_memory_with(20_000, 21) else { return };
    let total = records.len() as i64;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let slow_run = || {
        let mut command = run_command(&broker.brokers, port, dir.path(), "", &[]);
        command.envs(SLOW_CATCH_UP);
        Running(command.spawn().unwrap())
    };
    let mut random = common::xorshift(u64::from(std::process::id()));
    let mut kills = Vec::new();
    for round in 0..3u64 {
        // A point in this third of the backlog, different in every run (the seed is printed).
        let at = total * (round as i64 * 3 + 1) / 10 + (random(u64::MAX) % (total as u64 / 10)) as i64;
        let mut run = slow_run();
        let seen = wait_for(port, "/api/v1/dump", Duration::from_secs(120), |d| counted(d) >= at);
        run.0.kill().unwrap(); // SIGKILL: no shutdown path runs
        run.0.wait().unwrap();
        kills.push(counted(&seen));
    }
    eprintln!("killed at {kills:?} of {total} counted (seed {})", std::process::id());
    let _last = slow_run();
    let expected = oracle::dump(&spec(), &by_partition(&records));
    let engine = settled(port, records.len(), expected.live.clock.as_of_ms);
    assert_eq!(comparable(engine), expected);
}
