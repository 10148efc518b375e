//! The incremental sessionizer equals a from-scratch walk over each user's sorted events, on
//! random arrival orders within the lateness, with pruning as the engine does it, and with long
//! (bot-like) runs that cross the maximum length so that late events re-cut them.

use std::collections::BTreeMap;

use proptest::prelude::*;
use views::sessions::{Hit, SessionConfig, Sessionizer, Summary};

const MIN: i64 = 60_000;
const LATENESS: i64 = 4 * MIN;

fn config() -> SessionConfig {
    // max (60) > 2 * timeout + horizon (7): runs keep their events only when at risk.
    SessionConfig { inactivity_minutes: 1, max_hours: 1, ..SessionConfig::default() }
}

/// From scratch: sort, split at gaps over the timeout, cut every `max` from the run's start.
fn reference(hits: &[(u64, Hit)], config: &SessionConfig) -> BTreeMap<Summary, i64> {
    let mut by_user: BTreeMap<u64, Vec<Hit>> = BTreeMap::new();
    for (user, hit) in hits {
        by_user.entry(*user).or_default().push(*hit);
    }
    let mut out = BTreeMap::new();
    for (_, mut hits) in by_user {
        hits.sort_by_key(|h| (h.ts, h.ord));
        let mut sessions: Vec<Summary> = Vec::new();
        let (mut run_start, mut last, mut piece) = (0, i64::MIN, -1);
        for h in hits {
            if sessions.is_empty() || h.ts - last > config.timeout_ms() {
                run_start = h.ts;
                piece = -1;
            }
            last = h.ts;
            let k = (h.ts - run_start) / config.max_ms();
            if k != piece {
                piece = k;
                sessions.push(Summary::of(&h));
            } else {
                sessions.last_mut().unwrap().merge(&Summary::of(&h));
            }
        }
        for s in sessions {
            *out.entry(s).or_default() += 1;
        }
    }
    out
}

type Arrival = (u64, i64, i64, u64, bool);

/// (user, second, seconds late, page, page view). Each user's events follow gaps that are either
/// short or close to the timeout, so runs grow past the maximum length (cut points) and late
/// events often bridge two runs or become a run's new first event.
fn arrivals() -> impl Strategy<Value = Vec<Arrival>> {
    let gap = prop_oneof![30 => 30i64..60, 1 => 60i64..120, 1 => 120i64..600];
    let late = prop_oneof![3 => Just(0i64), 1 => 0i64..300];
    proptest::collection::vec((0u64..2, gap, late, 1u64..4, any::<bool>()), 0..600).prop_map(|steps| {
        let mut clocks = [0i64; 2];
        steps
            .into_iter()
            .map(|(user, gap, late, page, pv)| {
                clocks[user as usize] += gap;
                (user, clocks[user as usize], late, page, pv)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn incremental_sessions_equal_the_from_scratch_walk(mut events in arrivals(), epoch in 1usize..20) {
        events.sort_by_key(|e| e.1);
        let config = config();
        let mut sessionizer = Sessionizer::default();
        let mut changes: Vec<(Summary, i64)> = Vec::new();
        let mut accepted = Vec::new();
        let mut head = i64::MIN;
        for (user, second, late, page, pv) in events {
            let ts = (second - late) * 1000;
            if head != i64::MIN && ts < head - LATENESS {
                continue; // too late, as the partition clock decides
            }
            // Arrival position as the engine's order: equal seconds are common here.
            let hit = Hit { ts, ord: accepted.len() as u64, page, page_view: pv, source: [user, page % 2, 0] };
            sessionizer.add((user, false), hit, &config, LATENESS + MIN);
            accepted.push((user, hit));
            head = head.max(ts);
            // Drains (and prunes) as the engine does once per epoch: here after every few events.
            if accepted.len() % epoch == 0 {
                sessionizer.drain(&mut changes);
                sessionizer.prune(head - LATENESS, &config);
            }
        }
        sessionizer.drain(&mut changes);
        let mut net: BTreeMap<Summary, i64> = BTreeMap::new();
        for (s, d) in changes {
            *net.entry(s).or_default() += d;
        }
        prop_assert!(net.values().all(|d| *d >= 0), "a session was retracted more often than added");
        net.retain(|_, d| *d != 0);
        prop_assert_eq!(net, reference(&accepted, &config));
        prop_assert_eq!(sessionizer.approximate_recuts, 0);
    }
}
