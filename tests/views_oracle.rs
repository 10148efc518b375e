//! Every traffic, session, funnel, path and retention view equals a from-scratch recomputation, on random out-of-order streams with
//! late, too-late, duplicated and malformed records, checked after every batch (several points in
//! time), not only at the end.

mod common;

use common::check_after_every_batch;
use proptest::prelude::*;

const BASE: i64 = 1_795_132_800_000; // 2026-11-20T00:00:00Z
const LATENESS: i64 = 5 * 60_000;

#[derive(Clone, Debug)]
struct Ev {
    user: u8,
    name: u8,
    page: u8,
    source: u8,
    device: u8,
    country: u8,
    /// Seconds after BASE, before disorder.
    second: i64,
    /// Seconds moved back in time (out of order; beyond the lateness it is too late).
    back: i64,
    id: Option<u16>,
}

fn event() -> impl Strategy<Value = Ev> {
    (
        // User 0 is a bot: a quarter of all events.
        prop_oneof![3 => 0u8..12, 1 => Just(0u8)],
        0u8..4,
        0u8..7,
        0u8..3,
        0u8..3,
        0u8..3,
        0i64..7200,
        prop_oneof![6 => Just(0i64), 3 => 0i64..300, 1 => 300i64..900],
        proptest::option::of(0u16..200),
    )
        .prop_map(|(user, name, page, source, device, country, second, back, id)| Ev {
            user,
            name,
            page,
            source,
            device,
            country,
            second,
            back,
            id,
        })
}

fn line(e: &Ev) -> Vec<u8> {
    let name = ["page_view", "click", "purchase", "page_view"][e.name as usize];
    let mut v = serde_json::json!({
        "user_id": format!("u{}", e.user),
        "event": name,
        "ts": BASE + (e.second - e.back) * 1000,
    });
    let o = v.as_object_mut().unwrap();
    if e.page > 0 {
        o.insert(
            "page".into(),
            ["", "/", "/a", "/b", "/products/1", "/products/22/", "(exit)"][e.page as usize].into(),
        );
    }
    if e.source > 0 {
        o.insert("utm_source".into(), ["", "google", "facebook"][e.source as usize].into());
    }
    if e.device > 0 {
        o.insert("device".into(), ["", "mobile", "desktop"][e.device as usize].into());
    }
    if e.country > 0 {
        o.insert("country".into(), ["", "US", "DE"][e.country as usize].into());
    }
    if let Some(id) = e.id {
        o.insert("event_id".into(), format!("e{id}").into());
    }
    if e.device > 0 {
        let plan = ["free", "pro"][e.page as usize % 2];
        o.insert("props".into(), serde_json::json!({"plan": plan, "qty": e.country, "gift": e.source == 1}));
    }
    serde_json::to_vec(&v).unwrap()
}

const GARBAGE: [&[u8]; 4] = [
    b"{\"user_id\":",
    b"[]",
    br#"{"user_id":"u1","event":"click"}"#,
    br#"{"user_id":"u1","event":"click","ts":"soon"}"#,
];

fn stream() -> impl Strategy<Value = (Vec<Vec<u8>>, Vec<usize>)> {
    (proptest::collection::vec((event(), 0u8..40), 0..400), proptest::collection::vec(0usize..400, 0..5)).prop_map(
        |(events, cuts)| {
            // Arrival is roughly in time order, as from real clients.
            let mut events = events;
            events.sort_by_key(|(e, _)| e.second);
            let mut lines: Vec<Vec<u8>> = Vec::new();
            for (e, roll) in &events {
                match roll {
                    0 => lines.push(GARBAGE[e.user as usize % GARBAGE.len()].to_vec()),
                    1 if !lines.is_empty() => lines.push(lines[lines.len() / 2].clone()),
                    _ => lines.push(line(e)),
                }
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(lines.len())).collect();
            cuts.sort();
            (lines, cuts)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn views_equal_the_reference_after_every_batch((lines, cuts) in stream(), workers in 1usize..3) {
        check_after_every_batch(LATENESS, workers, &lines, cuts)?;
    }
}
