//! Per-user views do not depend on how producers partition: the same events, keyed by user (each
//! user in one partition) or spread over every partition (a producer that round-robins, a
//! re-partitioned topic), give the same sessions, funnels, paths and retention, equal to the
//! reference. (Late, duplicate and malformed records are left out: those decisions are per
//! partition by design.)

mod common;

use std::collections::{HashMap, HashSet};

use common::e2e::*;
use common::kafka::*;
use common::oracle::{self, comparable};
use rdkafka::mocking::MockCluster;

/// Generated events that every layout admits: valid, one per event id, in time order, and no two
/// of one user at the same millisecond (the engine orders equal times by partition, which the
/// layouts change).
fn clean(records: Vec<(String, Vec<u8>)>) -> Vec<(String, serde_json::Value)> {
    let mut seen = HashSet::new();
    let mut events: Vec<(String, serde_json::Value)> = records
        .into_iter()
        .filter(|(_, raw)| dataflow::decode::decode(raw, chrono::Utc::now().timestamp_millis()).is_ok())
        .map(|(key, raw)| (key, serde_json::from_slice::<serde_json::Value>(&raw).unwrap()))
        .filter(|(_, v)| v["ts"].is_i64() && seen.insert(v["event_id"].as_str().unwrap_or_default().to_string()))
        .collect();
    events.sort_by_key(|(_, v)| v["ts"].as_i64().unwrap());
    let mut last: HashMap<String, i64> = HashMap::new();
    for (key, v) in &mut events {
        let ts = v["ts"].as_i64().unwrap();
        let ts = last.get(key).map_or(ts, |prev| ts.max(prev + 1));
        last.insert(key.clone(), ts);
        v["ts"] = ts.into();
    }
    events.sort_by_key(|(_, v)| v["ts"].as_i64().unwrap());
    events
}

#[test]
fn a_user_spread_over_every_partition_gets_the_views_of_a_user_keyed_to_one() {
    let events = clean(generated(20_000, 21));
    let lines: Vec<(String, Vec<u8>)> =
        events.iter().map(|(k, v)| (k.clone(), serde_json::to_vec(v).unwrap())).collect();
    let keyed: Vec<(i32, String, Vec<u8>)> =
        lines.iter().map(|(k, l)| (partition_of(k), k.clone(), l.clone())).collect();
    let spread: Vec<(i32, String, Vec<u8>)> =
        lines.iter().enumerate().map(|(i, (k, l))| ((i % PARTITIONS as usize) as i32, k.clone(), l.clone())).collect();
    let users_in_several = {
        let mut partitions: HashMap<&str, HashSet<i32>> = HashMap::new();
        spread.iter().for_each(|(p, k, _)| {
            partitions.entry(k).or_default().insert(*p);
        });
        partitions.values().filter(|p| p.len() > 1).count()
    };
    assert!(users_in_several > 1000, "the spread layout puts users in several partitions ({users_in_several})");

    let per_partition = |layout: &[(i32, String, Vec<u8>)]| {
        let mut parts = vec![Vec::new(); PARTITIONS as usize];
        layout.iter().for_each(|(p, _, l)| parts[*p as usize].push(l.clone()));
        parts
    };
    let expected = oracle::dump(&spec(), &per_partition(&keyed));
    assert_eq!(expected.rejects.total, 0);
    assert!(expected.funnels["checkout"].numbers.steps[1].users > 0 && !expected.paths.is_empty());
    assert_eq!(oracle::dump(&spec(), &per_partition(&spread)), expected, "the reference does not depend on it");

    let mock = MockCluster::new(1).unwrap();
    for (topic, layout) in [("keyed", &keyed), ("spread", &spread)] {
        mock.create_topic(topic, PARTITIONS, 1).unwrap();
        produce_to(&mock.bootstrap_servers(), topic, layout);
        let (dir, port) = (tempfile::tempdir().unwrap(), free_port());
        let mut command = run_command(&mock.bootstrap_servers(), port, dir.path(), "", &[]);
        command.env("CLICKFLOW__KAFKA__TOPICS", format!("[\"{topic}\"]"));
        let _run = Running(command.spawn().expect("clickflow starts"));
        let engine = settled(port, lines.len(), expected.live.clock.as_of_ms);
        assert_eq!(comparable(engine), expected, "topic `{topic}`");
    }
}
