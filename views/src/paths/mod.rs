//! The path view's edges: consecutive steps (page views and conversion events) within a session, counted as
//! directed edges `from -> to`, plus `(entry) -> first` and `last -> (exit)` per session.
//!
//! Edges are computed from each user's retained events (the same log funnels use) and split into
//! sessions by [`crate::sessions::split`], so the graph covers the views' window and a late event
//! corrects it in place: a user's edges are recomputed when their log changes and only the
//! difference is reported.

use schema::event::{Sym, NONE};
use schema::paths::{entry, exit};
use schema::sessions::SessionConfig;

use crate::sessions::split;
use crate::userlog::LogEvent;

/// A user's edges, sorted (a multiset: a repeated transition appears once per occurrence).
pub fn edges_of(events: &[LogEvent], sessions: &SessionConfig) -> Vec<(Sym, Sym)> {
    let times: Vec<i64> = events.iter().map(|e| e.ts).collect();
    let mut edges = Vec::new();
    for session in split(&times, sessions) {
        let mut previous = entry();
        for e in events[session].iter().filter(|e| e.node != NONE) {
            edges.push((previous, e.node));
            previous = e.node;
        }
        if previous != entry() {
            edges.push((previous, exit()));
        }
    }
    edges.sort_unstable();
    edges
}

/// Calls `out(from, to, diff)` for the difference between two sorted edge lists.
pub fn diff_edges(old: &[(Sym, Sym)], new: &[(Sym, Sym)], mut out: impl FnMut(Sym, Sym, i64)) {
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if a == b => (i, j) = (i + 1, j + 1),
            (Some(a), Some(b)) if a < b => {
                out(a.0, a.1, -1);
                i += 1;
            }
            (Some(a), None) => {
                out(a.0, a.1, -1);
                i += 1;
            }
            (_, Some(b)) => {
                out(b.0, b.1, 1);
                j += 1;
            }
            (None, None) => unreachable!("loop condition"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::event::sym;

    #[test]
    fn edges_follow_sessions_and_diffs_are_minimal() {
        let node = |ts: i64, n: &str| LogEvent {
            ts,
            ord: 0,
            name: sym("page_view"),
            page: sym(n),
            source: [NONE; 3],
            props: None,
            node: if n.is_empty() { NONE } else { sym(n) },
        };
        let config = SessionConfig::default();
        let min = 60_000;
        // a -> (click) -> b, then a gap over 30 minutes, then c.
        let events = [node(0, "/a"), node(min, ""), node(2 * min, "/b"), node(60 * min, "/c")];
        let mut expected = vec![
            (entry(), sym("/a")),
            (sym("/a"), sym("/b")),
            (sym("/b"), exit()),
            (entry(), sym("/c")),
            (sym("/c"), exit()),
        ];
        expected.sort_unstable();
        assert_eq!(edges_of(&events, &config), expected);
        let mut changes = Vec::new();
        let fewer = edges_of(&events[..3], &config);
        diff_edges(&expected, &fewer, |f, t, d| changes.push((f, t, d)));
        changes.sort_unstable();
        let mut want = vec![(entry(), sym("/c"), -1), (sym("/c"), exit(), -1)];
        want.sort_unstable();
        assert_eq!(changes, want);
    }
}
