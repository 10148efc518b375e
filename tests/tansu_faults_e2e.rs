//! Faults with tansu, an independent Kafka-compatible broker, kept on a local S3-compatible store
//! so that it can be killed (-9) and restarted without losing what it stored: a broker killed
//! during the engine's catch-up, the collector across a broker restart, and an engine restarted
//! on a broker that under-reports where partitions end.
//!
//! Needs `scripts/install-tansu` and `scripts/install-moto` (run by `scripts/test`); without them
//! each test says it is skipped.

mod common;

use std::time::{Duration, Instant};

use common::e2e::{generated, settled, spec};
use common::kafka::*;
use common::oracle::{self, comparable};
use common::tansu::{moto_server, tansu_binary, ObjectStore, Tansu};

fn counted(d: &serde_json::Value) -> i64 {
    d["accepted"].as_i64().unwrap_or(0) + d["rejects"]["total"].as_i64().unwrap_or(0)
}

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
            // Small fetches and a small local queue: the backlog stays on the broker while the
            // engine reads it, so that the kill lands in the middle of the catch-up.
            .env("CLICKFLOW__KAFKA__PROPERTIES__MAX_PARTITION_FETCH_BYTES", "4096")
            .env("CLICKFLOW__KAFKA__PROPERTIES__FETCH_MAX_BYTES", "8192")
            .env("CLICKFLOW__KAFKA__PROPERTIES__MESSAGE_MAX_BYTES", "8192")
            .env("CLICKFLOW__KAFKA__PROPERTIES__QUEUED_MIN_MESSAGES", "50")
            .env("CLICKFLOW__KAFKA__PROPERTIES__QUEUED_MAX_MESSAGES_KBYTES", "16")
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
fn the_collector_accepts_again_within_seconds_of_a_broker_restart() {
    let Some((mut broker, _store)) = tansu_on_object_store() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _run = Running(run_command(&broker.brokers, port, dir.path(), "", &[]).spawn().unwrap());
    let url = format!("http://127.0.0.1:{port}/v1/collect");
    let post = |i: usize| {
        let event = serde_json::json!({"user_id": format!("u{}", i % 7), "event": "page_view", "page": "/",
                                       "event_id": format!("e{i}"), "ts": chrono::Utc::now().timestamp_millis()});
        ureq::post(&url).timeout(Duration::from_secs(20)).send_json(event).map(|r| r.status()).unwrap_or_else(|e| {
            match e {
                ureq::Error::Status(code, _) => code,
                ureq::Error::Transport(_) => 0,
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while post(0) != 200 {
        assert!(Instant::now() < deadline, "the collector never accepted");
        std::thread::sleep(Duration::from_millis(200));
    }
    broker.kill();
    assert_ne!(post(1), 200, "nothing is acknowledged while the broker is down");
    broker.restart();
    let back = Instant::now();
    let mut i = 2;
    while post(i) != 200 {
        assert!(back.elapsed() < Duration::from_secs(30), "the collector still refuses 30 s after the broker's return");
        i += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("the collector accepted again {:?} after the broker's restart", back.elapsed());
    // What was acknowledged is counted, once.
    wait_for(port, "/api/v1/dump", Duration::from_secs(60), |d| d["accepted"].as_i64() == Some(2));
}

#[test]
fn an_engine_restarted_on_a_broker_that_under_reports_partition_ends_resumes_exactly() {
    let Some(binary) = tansu_binary() else {
        eprintln!("skipping: tansu not installed; run scripts/install-tansu");
        return;
    };
    // tansu reports a partition's end as the last batch's base offset + 1: behind the snapshot.
    let broker = Tansu::start(binary);
    broker.create_topic("clicks", PARTITIONS);
    let records = generated(8_000, 4);
    let total = records.len() as i64;
    produce(&broker.brokers, "clicks", &records);
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
    let Some(binary) = tansu_binary() else {
        eprintln!("skipping: tansu not installed; run scripts/install-tansu");
        return;
    };
    let broker = Tansu::start(binary);
    broker.create_topic("clicks", PARTITIONS);
    let records = generated(20_000, 21);
    let total = records.len() as i64;
    produce(&broker.brokers, "clicks", &records);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let slow_run = || {
        let mut command = run_command(&broker.brokers, port, dir.path(), "", &[]);
        command
            .env("CLICKFLOW__KAFKA__PROPERTIES__MAX_PARTITION_FETCH_BYTES", "4096")
            .env("CLICKFLOW__KAFKA__PROPERTIES__FETCH_MAX_BYTES", "8192")
            .env("CLICKFLOW__KAFKA__PROPERTIES__MESSAGE_MAX_BYTES", "8192")
            .env("CLICKFLOW__KAFKA__PROPERTIES__QUEUED_MIN_MESSAGES", "50")
            .env("CLICKFLOW__KAFKA__PROPERTIES__QUEUED_MAX_MESSAGES_KBYTES", "16");
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
