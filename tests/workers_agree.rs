//! `clickflow replay --dump` of one generated file on 1, 2 and 4 workers: the same dump every
//! time (every view, per-user ones included, whatever the number of workers owning users), and
//! the reference's.

mod common;

use std::process::Command;

use common::oracle::{self, comparable, Spec};
use read::model::Dump;

#[test]
fn the_dump_is_the_same_on_1_2_and_4_workers() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    let bin = env!("CARGO_BIN_EXE_clickflow");
    let generate = ["generate", "--count", "100000", "--rate", "0.8", "--seed", "9", "--out"];
    assert!(Command::new(bin).args(generate).arg(&file).status().unwrap().success());
    let dump = |workers: usize| -> Dump {
        let out = dir.path().join(format!("dump-{workers}.json"));
        let status = Command::new(bin)
            .args(["replay", "--quiet", "--config", common::EXAMPLE_CONFIG, "--workers", &workers.to_string()])
            .arg("--dump")
            .arg(&out)
            .arg("--dead-letters")
            .arg(dir.path().join("dead.ndjson"))
            .arg(&file)
            .status()
            .unwrap();
        assert!(status.success());
        comparable(serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap())
    };
    let one = dump(1);
    assert!(
        one.sessions.hourly.len() > 1 && !one.paths.is_empty() && one.funnels["checkout"].numbers.steps[1].users > 0
    );
    assert_eq!(dump(2), one, "2 workers");
    assert_eq!(dump(4), one, "4 workers");
    let lines: Vec<Vec<u8>> =
        std::fs::read(&file).unwrap().split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
    let spec =
        Spec { lateness_ms: 300_000, views: common::example_views(), now_ms: chrono::Utc::now().timestamp_millis() };
    assert_eq!(one, oracle::dump_complete(&spec, &[lines]), "and the reference's");
}
