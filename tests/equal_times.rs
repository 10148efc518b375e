//! Events with equal timestamps: one order for every view. Two page views of one user in the same
//! millisecond are taken in the engine's order (input partition, then offset or line), so the
//! session's entry and exit page, its acquisition, the path graph, the funnel and the retention
//! breakdown all agree, on one worker or two, whichever arrives first.

mod common;

use common::Harness;
use read::model::Dump;
use schema::ViewConfig;

// Noon: the cohort day is the day of `as_of` (five minutes earlier).
const TS: i64 = 1_795_132_800_000 + 12 * 3_600_000;

fn views() -> ViewConfig {
    let mut views = common::small_windows();
    views.funnels = serde_json::from_value(serde_json::json!([
        {"name": "a_then_b", "steps": [{"event": "page_view", "page": "/a"}, {"event": "page_view", "page": "/b"}]}
    ]))
    .unwrap();
    views.retention = serde_json::from_value(serde_json::json!([
        {"name": "by_source", "breakdown": "utm_source", "start": {"event": "page_view"}, "return": {"event": "click"}}
    ]))
    .unwrap();
    views
}

fn view(page: &str, source: &str, ts: i64) -> Vec<u8> {
    serde_json::to_vec(
        &serde_json::json!({"user_id": "u1", "event": "page_view", "page": page, "utm_source": source, "ts": ts}),
    )
    .unwrap()
}

fn run(workers: usize, lines: Vec<Vec<u8>>) -> Dump {
    let mut harness = Harness::start(workers, 300_000, views());
    harness.push(lines);
    harness.finish()
}

fn edges(dump: &Dump) -> Vec<(String, String, i64)> {
    dump.paths.clone()
}

#[test]
fn equal_times_follow_the_order_of_the_input_in_every_view() {
    for workers in [1, 2] {
        // `/a` then `/b` in the same millisecond.
        let dump = run(workers, vec![view("/a", "google", TS), view("/b", "facebook", TS)]);
        let all = &dump.sessions.by["all"]["(none)"];
        assert_eq!(all.entry.keys().collect::<Vec<_>>(), vec!["/a"], "{workers} worker(s): entry");
        assert_eq!(all.exit.keys().collect::<Vec<_>>(), vec!["/b"], "{workers} worker(s): exit");
        assert!(dump.sessions.by["utm_source"].contains_key("google"), "acquisition: the first event's source");
        assert!(!dump.sessions.by["utm_source"].contains_key("facebook"));
        let want: Vec<(String, String, i64)> = [("(entry)", "/a"), ("/a", "/b"), ("/b", "(exit)")]
            .iter()
            .map(|(f, t)| (f.to_string(), t.to_string(), 1))
            .collect();
        assert_eq!(edges(&dump), want, "{workers} worker(s): the path follows the same order");
        assert_eq!(dump.funnels["a_then_b"].numbers.steps[1].users, 1, "the funnel converts in the same order");
        let sources: Vec<&str> = dump.retention["by_source"][0].breakdown.iter().map(|v| v.value.as_str()).collect();
        assert_eq!(sources, vec!["google"], "the cohort event is the first in the same order");

        // The other arrival order gives the other answer, the same in every view.
        let dump = run(workers, vec![view("/b", "facebook", TS), view("/a", "google", TS)]);
        let all = &dump.sessions.by["all"]["(none)"];
        assert_eq!(all.entry.keys().collect::<Vec<_>>(), vec!["/b"]);
        assert_eq!(all.exit.keys().collect::<Vec<_>>(), vec!["/a"]);
        assert!(dump.sessions.by["utm_source"].contains_key("facebook"));
        let want: Vec<(String, String, i64)> = [("(entry)", "/b"), ("/a", "(exit)"), ("/b", "/a")]
            .iter()
            .map(|(f, t)| (f.to_string(), t.to_string(), 1))
            .collect();
        assert_eq!(edges(&dump), want);
        assert_eq!(dump.funnels["a_then_b"].numbers.steps[1].users, 0, "`/b` came first: no conversion");
        let sources: Vec<&str> = dump.retention["by_source"][0].breakdown.iter().map(|v| v.value.as_str()).collect();
        assert_eq!(sources, vec!["facebook"]);
    }
}
