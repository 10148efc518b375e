//! `clickflow generate` then `clickflow replay --dump` through the real binary: every number in
//! the dump (traffic, sessions, and the funnels of `examples/funnels.toml`) equals the
//! from-scratch reference over the same file.

mod common;

use std::process::Command;

use common::oracle::{self, comparable, Spec};
use read::model::Dump;

fn events() -> usize {
    std::env::var("CLICKFLOW_ORACLE_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

#[test]
fn replay_dump_of_a_generated_file_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson.gz");
    let dump_path = dir.path().join("dump.json");
    let bin = env!("CARGO_BIN_EXE_clickflow");
    let n = events().to_string();
    let status = Command::new(bin).args(["generate", "--count", &n, "--out"]).arg(&file).status().unwrap();
    assert!(status.success());
    let config = common::EXAMPLE_CONFIG;
    let status = Command::new(bin)
        .args(["replay", "--config", config, "--quiet", "--workers", "2", "--dump"])
        .arg(&dump_path)
        .arg("--dead-letters")
        .arg(dir.path().join("dead.ndjson"))
        .arg(&file)
        .status()
        .unwrap();
    assert!(status.success());
    let engine: Dump = serde_json::from_slice(&std::fs::read(&dump_path).unwrap()).unwrap();

    let text = {
        use std::io::Read;
        let mut s = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&file).unwrap()).read_to_end(&mut s).unwrap();
        s
    };
    let lines: Vec<Vec<u8>> = text.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
    assert_eq!(lines.len(), events());
    let views = common::example_views();
    let spec = Spec { lateness_ms: 300_000, views, now_ms: chrono::Utc::now().timestamp_millis() };
    let expected = oracle::dump_complete(&spec, &[lines]);
    assert!(expected.accepted > 0 && expected.rejects.total > 0, "the file exercises accepts and rejects");
    assert_eq!(engine.accepted + engine.rejects.total, events() as i64, "every line is accounted for");
    assert!(expected.funnels["checkout"].numbers.steps[1].users > 0, "the funnels see conversions");
    assert_eq!(comparable(engine), expected);

    let dead = std::fs::read_to_string(dir.path().join("dead.ndjson")).unwrap();
    assert_eq!(dead.lines().count() as i64, expected.rejects.total, "every reject is in the dead-letter file");
    let first: serde_json::Value = serde_json::from_str(dead.lines().next().unwrap()).unwrap();
    assert!(first["reason"].is_string() && first["source"]["line"].is_u64() && first["payload"].is_string(), "{first}");
}
