//! Enrichment in the running engine: the IP table file is rewritten mid-stream and the watcher
//! reloads it; events before the change get the old country, events after it the new one, and
//! every event is counted (nothing lost while the table was swapped). Filtered events are
//! counted as `filtered` rejects.

mod common;

use std::time::{Duration, Instant};

use common::e2e::START;
use common::Harness;
use dataflow::{EnrichConfig, Enricher};
use read::query::TimeseriesQuery;

fn events(from: usize, n: usize, user_prefix: &str) -> Vec<Vec<u8>> {
    (from..from + n)
        .map(|i| {
            let e = serde_json::json!({"user_id": format!("{user_prefix}{i}"), "event": "page_view",
                "ts": START + i as i64 * 100, "page": "/", "ip": format!("198.51.100.{}", i % 250)});
            serde_json::to_vec(&e).unwrap()
        })
        .collect()
}

fn by_country(harness: &Harness) -> Vec<(String, i64)> {
    let q = TimeseriesQuery {
        breakdown: Some("country".into()),
        from: Some(START.to_string()),
        to: Some((START + 3_600_000).to_string()),
        ..Default::default()
    };
    let mut rows: Vec<(String, i64)> =
        harness.read_model.timeseries(&q).unwrap().series.into_iter().map(|s| (s.key, s.total)).collect();
    rows.sort();
    rows
}

#[test]
fn a_table_reload_mid_stream_applies_to_later_events_and_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("geo.csv");
    std::fs::write(&table, "198.51.100.0/24,DE\n").unwrap();
    let config: EnrichConfig = toml::from_str(&format!(
        "ip_table = {table:?}\nreload_seconds = 1\n[[rules]]\nname = \"test_users\"\naction = \"drop\"\nwhen = {{ user_id_prefix = \"test-\" }}\n"
    ))
    .unwrap();
    let enricher = Enricher::from_config(&config).unwrap().unwrap();
    enricher.watch();
    let mut harness = Harness::start_enriched(2, 300_000, common::small_windows(), Some(enricher.clone()));

    harness.push(events(0, 300, "u"));
    harness.push(events(300, 20, "test-"));
    harness.settle();
    assert_eq!(by_country(&harness), vec![("DE".to_string(), 300)]);

    // The file changes while the engine runs; the watcher swaps the table within its period.
    std::fs::write(&table, "198.51.100.0/25,FR\n198.51.100.128/25,NL\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while enricher.geo().unwrap().current().lookup("198.51.100.1").map(|p| p.country.to_string()) != Some("FR".into()) {
        assert!(Instant::now() < deadline, "the IP table was not reloaded");
        std::thread::sleep(Duration::from_millis(20));
    }
    harness.push(events(320, 250, "u"));
    let dump = harness.settle();
    let fr = (320..570).filter(|i| i % 250 < 128).count() as i64;
    assert_eq!(
        by_country(&harness),
        vec![("DE".to_string(), 300), ("FR".to_string(), fr), ("NL".to_string(), 250 - fr)]
    );
    assert_eq!(dump.accepted, 550, "every event counted");
    assert_eq!(dump.rejects.by_reason.get("filtered"), Some(&20), "filtered, counted: {:?}", dump.rejects);
}
