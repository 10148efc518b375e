//! A timely cluster of two `clickflow run` processes on loopback, reading one Kafka topic (the
//! mock cluster): the views served by process 0 equal those of one process and the reference; and
//! kill -9 of one process stops the cluster, whose restart gives the views of an uninterrupted run.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::e2e::*;
use common::kafka::*;
use common::oracle::{self, comparable};
use rdkafka::mocking::MockCluster;

/// Both processes of a cluster; process 1 serves no API (process 0 serves the views).
fn start_cluster(brokers: &str, port: u16, state_dir: &std::path::Path, hosts: &std::path::Path) -> [Running; 2] {
    let spawn = |process: usize| {
        let api = if process == 0 { port } else { free_port() };
        Running(cluster_command(brokers, api, state_dir, hosts, process, 1).spawn().expect("clickflow starts"))
    };
    [spawn(0), spawn(1)]
}

fn exits_within(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn a_cluster_of_two_processes_serves_the_views_of_one_process() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("clicks", PARTITIONS, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let records = with_bad_inputs(generated(20_000, 5));
    produce(&brokers, "clicks", &records);
    let expected = oracle::dump(&spec(), &by_partition(&records));

    let (one_dir, port) = (tempfile::tempdir().unwrap(), free_port());
    let one = settled_dump(&brokers, port, one_dir.path(), records.len(), expected.live.clock.as_of_ms, None);
    assert_eq!(comparable(one), expected, "one process of two workers");

    let (dir, port) = (tempfile::tempdir().unwrap(), free_port());
    let hosts = hosts_file(dir.path(), 2);
    let two = settled_dump(&brokers, port, dir.path(), records.len(), expected.live.clock.as_of_ms, Some(&hosts));
    assert_eq!(comparable(two), expected, "two processes of one worker each, on loopback");
}

/// The settled dump of one process (`hosts: None`) or of a cluster of two.
fn settled_dump(
    brokers: &str,
    port: u16,
    dir: &std::path::Path,
    records: usize,
    as_of: Option<i64>,
    hosts: Option<&std::path::Path>,
) -> read::model::Dump {
    let _running = match hosts {
        None => vec![Running(spawn_run(brokers, port, dir, ""))],
        Some(hosts) => start_cluster(brokers, port, dir, hosts).into_iter().collect(),
    };
    settled(port, records, as_of)
}

#[test]
fn kill_9_of_one_process_stops_the_cluster_and_its_restart_gives_the_uninterrupted_views() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("clicks", PARTITIONS, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let records = generated(40_000, 13);
    let (first, second) = records.split_at(records.len() / 2);
    let dir = tempfile::tempdir().unwrap();
    let hosts = hosts_file(dir.path(), 2);
    let port = free_port();

    produce(&brokers, "clicks", first);
    let [mut serving, mut other] = start_cluster(&brokers, port, dir.path(), &hosts);
    wait_for(port, "/api/v1/dump", Duration::from_secs(90), |d| {
        d["accepted"].as_i64().unwrap_or(0) + d["rejects"]["total"].as_i64().unwrap_or(0) == first.len() as i64
    });
    // Both workers (one per process) snapshot the first half.
    wait_for_snapshots_from_now(dir.path());
    let producer = {
        let (brokers, second) = (brokers.clone(), second.to_vec());
        std::thread::spawn(move || {
            for chunk in second.chunks(1000) {
                produce(&brokers, "clicks", chunk);
                std::thread::sleep(Duration::from_millis(40));
            }
        })
    };
    wait_for(port, "/api/v1/dump", Duration::from_secs(60), |d| {
        d["accepted"].as_i64().unwrap_or(0) > first.len() as i64 + 2000
    });
    other.0.kill().unwrap(); // SIGKILL of process 1: no shutdown path runs
    other.0.wait().unwrap();
    assert!(!producer.is_finished(), "killed mid-stream");
    // Process 0 cannot go on without its peer's partitions: it says so and exits.
    let status = exits_within(&mut serving.0, Duration::from_secs(30)).expect("process 0 exits once its peer is gone");
    assert!(!status.success(), "{status}");
    producer.join().unwrap();

    let _restarted = start_cluster(&brokers, port, dir.path(), &hosts);
    let expected = oracle::dump(&spec(), &by_partition(&records));
    let engine = settled(port, records.len(), expected.live.clock.as_of_ms);
    assert_eq!(comparable(engine), expected);
}
