//! Path edges: consecutive steps (page views and conversion events) within a session, counted as
//! directed edges `from -> to`, plus `(entry) -> first` and `last -> (exit)` per session.
//!
//! Edges are computed from each user's retained events (the same log funnels use) and split into
//! sessions by [`crate::sessions::split`], so the graph covers the views' window and a late event
//! corrects it in place: a user's edges are recomputed when their log changes and only the
//! difference is reported.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::event::{sym, Sym, NONE};
use crate::funnels::LogEvent;
use crate::path_graph::{ENTRY, EXIT};
use crate::sessions::{split, SessionConfig};

/// A cleaning rule: every match of `pattern` in a page is replaced by `name` (`$1` refers to a
/// capture group), e.g. `^/products/\d+` -> `/products/:id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleaningRule {
    pub pattern: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathConfig {
    /// Applied in order to every page (after a trailing `/` is dropped) before edges are counted.
    pub rules: Vec<CleaningRule>,
    /// Events that are path steps too, shown as `event:<name>` (routes that end in a conversion).
    pub conversion_events: Vec<String>,
}

impl Default for PathConfig {
    fn default() -> Self {
        PathConfig { rules: Vec::new(), conversion_events: vec!["purchase".into(), "signup".into()] }
    }
}

pub fn entry() -> Sym {
    sym(ENTRY)
}

pub fn exit() -> Sym {
    sym(EXIT)
}

/// The node of a conversion event.
pub fn event_node(name: &str) -> String {
    format!("event:{name}")
}

/// Maps events to path nodes: pages cleaned by the rules, conversion events by name.
#[derive(Debug)]
pub struct Cleaner {
    rules: Vec<(regex::Regex, String)>,
    conversions: HashMap<Sym, (Sym, String)>,
    /// Cleaned node by raw page symbol (rules depend on the page only); one per ingesting
    /// worker, so no lock.
    pages: HashMap<Sym, Sym>,
    /// Changes with the rules: state computed under other rules is recomputed.
    pub fingerprint: u64,
}

impl Cleaner {
    pub fn new(config: &PathConfig) -> Result<Cleaner, String> {
        let rules = config
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                regex::Regex::new(&r.pattern)
                    .map(|re| (re, r.name.clone()))
                    .map_err(|e| format!("views.paths.rules[{i}]: pattern does not compile: {e}"))
            })
            .collect::<Result<_, _>>()?;
        let conversions = config
            .conversion_events
            .iter()
            .map(|name| {
                let node = event_node(name);
                (sym(name), (sym(&node), node))
            })
            .collect();
        let fingerprint = xxhash_rust::xxh3::xxh3_64(&serde_json::to_vec(config).expect("serialisable"));
        Ok(Cleaner { rules, conversions, pages: HashMap::new(), fingerprint })
    }

    /// The page as the graph shows it.
    pub fn clean(&self, page: &str) -> String {
        let mut text = page.strip_suffix('/').filter(|t| !t.is_empty()).unwrap_or(page).to_string();
        for (re, name) in &self.rules {
            if let std::borrow::Cow::Owned(replaced) = re.replace_all(&text, name.as_str()) {
                text = replaced;
            }
        }
        text
    }

    /// The node an event stands for (`NONE` if it is not a path step), and the node's text when
    /// a page was first cleaned here (so the caller can publish the name; conversion nodes are
    /// named at start).
    pub fn node(&mut self, event: Sym, page_view: bool, page: Sym, page_text: Option<&str>) -> (Sym, Option<String>) {
        if let Some((node, _)) = self.conversions.get(&event) {
            return (*node, None);
        }
        let (true, Some(text)) = (page_view && page != NONE, page_text) else { return (NONE, None) };
        if let Some(node) = self.pages.get(&page) {
            return (*node, None);
        }
        let cleaned = reserved_escaped(self.clean(text));
        let node = sym(&cleaned);
        self.pages.insert(page, node);
        (node, Some(cleaned))
    }
}

/// A page may not pose as a pseudo node or a conversion event: those names get a `page:` prefix.
fn reserved_escaped(page: String) -> String {
    if page == ENTRY || page == EXIT || page.starts_with("event:") || page.starts_with("page:") {
        format!("page:{page}")
    } else {
        page
    }
}

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

    fn cleaner(rules: &[(&str, &str)]) -> Cleaner {
        let rules = rules.iter().map(|(p, n)| CleaningRule { pattern: p.to_string(), name: n.to_string() }).collect();
        Cleaner::new(&PathConfig { rules, ..PathConfig::default() }).unwrap()
    }

    #[test]
    fn pages_are_cleaned_by_the_rules_after_the_trailing_slash_is_dropped() {
        let mut c = cleaner(&[(r"^/products/\d+", "/products/:id"), (r"/users/[^/]+", "/users/:user")]);
        assert_eq!(c.clean("/products/42/"), "/products/:id");
        assert_eq!(c.clean("/products/42/reviews"), "/products/:id/reviews");
        assert_eq!(c.clean("/a/users/bob/x"), "/a/users/:user/x");
        assert_eq!(c.clean("/"), "/");
        assert_eq!(c.clean("/cart/"), "/cart");
        let (node, text) = c.node(sym("page_view"), true, sym("(exit)"), Some("(exit)"));
        assert_eq!((node, text.as_deref()), (sym("page:(exit)"), Some("page:(exit)")));
        let err = Cleaner::new(&PathConfig {
            rules: vec![CleaningRule { pattern: "(".into(), name: "x".into() }],
            ..PathConfig::default()
        })
        .unwrap_err();
        assert!(err.contains("rules[0]"), "{err}");
    }

    #[test]
    fn edges_follow_sessions_and_diffs_are_minimal() {
        let node = |ts: i64, n: &str| LogEvent {
            ts,
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
