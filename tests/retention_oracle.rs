//! Retention (and every other view) equals a from-scratch recomputation on random out-of-order
//! streams that span ten days, so cohorts of several days and weeks form, age and leave the matrix;
//! checked after every batch.

mod common;

use common::check_after_every_batch;
use proptest::prelude::*;

/// Midnight (UTC) twelve days ago: the streams end in the past (events more than a day ahead of
/// the clock are rejected).
static BASE: std::sync::LazyLock<i64> = std::sync::LazyLock::new(|| {
    let day = 86_400_000;
    (chrono::Utc::now().timestamp_millis() / day - 12) * day
});
const LATENESS: i64 = 5 * 60_000;
const DAY_S: i64 = 86_400;

/// `(user, event, page, utm_source, second, back)`.
type Ev = (u8, u8, u8, u8, i64, i64);

fn event() -> impl Strategy<Value = Ev> {
    (
        // Enough users that new ones keep arriving: first-time cohorts form every day.
        0u8..40,
        0u8..4,
        0u8..4,
        0u8..3,
        // Clustered around midnight (UTC), so late events and batches straddle day and week
        // boundaries.
        (0i64..10, 0i64..4 * 3600).prop_map(|(day, s)| day * DAY_S + 22 * 3600 + s),
        prop_oneof![6 => Just(0i64), 3 => 0i64..300, 1 => 300i64..900],
    )
}

fn line((user, name, page, source, second, back): &Ev) -> Vec<u8> {
    let event = ["page_view", "click", "purchase", "page_view"][*name as usize];
    let path = ["/", "/products/3", "/products/12/", "/cart"][*page as usize];
    let plan = ["free", "pro"][*page as usize % 2];
    let mut v = serde_json::json!({
        "user_id": format!("u{user}"),
        "event": event,
        "ts": *BASE + (second - back) * 1000,
        "page": path,
        "props": {"plan": plan},
    });
    if *source > 0 {
        v["utm_source"] = ["", "google", "facebook"][*source as usize].into();
    }
    serde_json::to_vec(&v).unwrap()
}

fn stream() -> impl Strategy<Value = (Vec<Vec<u8>>, Vec<usize>)> {
    (proptest::collection::vec(event(), 0..300), proptest::collection::vec(0usize..300, 0..6)).prop_map(
        |(mut events, cuts)| {
            events.sort_by_key(|e| e.4);
            let lines: Vec<Vec<u8>> = events.iter().map(line).collect();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(lines.len())).collect();
            cuts.sort();
            (lines, cuts)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn retention_equals_the_reference_over_days_and_weeks((lines, cuts) in stream(), workers in 1usize..3) {
        let expected = check_after_every_batch(LATENESS, workers, &lines, cuts)?;
        // The streams are meant to fill cohorts: guard the generator.
        if lines.len() > 150 {
            let sizes = |m: &read::model::RetentionMatrix| m.cohorts.iter().filter(|c| c.size > 0).count();
            prop_assert!(sizes(&expected.retention["daily_return"][0]) >= 1);
        }
    }
}
