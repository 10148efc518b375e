//! From-scratch path edges for the reference: each user's retained events as strings, cut into
//! sessions by the oracle's own rules, pages cleaned with plain regex replacement.

use std::collections::BTreeMap;

use read::model::PathEdges;

use super::funnel_oracle::{retained, sessions};
use super::oracle::{Accepted, Spec};

/// The node an event is in the graph, if it is a path step.
fn node(spec: &Spec, rules: &[(regex::Regex, &str)], e: &Accepted) -> Option<String> {
    if spec.views.paths.conversion_events.contains(&e.name) {
        return Some(format!("event:{}", e.name));
    }
    let page = e.page.as_deref().filter(|_| e.name == "page_view")?;
    let mut text = if page.len() > 1 { page.strip_suffix('/').unwrap_or(page) } else { page }.to_string();
    for (pattern, name) in rules {
        text = pattern.replace_all(&text, *name).into_owned();
    }
    let reserved =
        ["(entry)", "(exit)"].contains(&text.as_str()) || text.starts_with("event:") || text.starts_with("page:");
    Some(if reserved { format!("page:{text}") } else { text })
}

pub fn dump(spec: &Spec, accepted: &[Accepted], as_of: Option<i64>) -> PathEdges {
    let rules: Vec<(regex::Regex, &str)> =
        spec.views.paths.rules.iter().map(|r| (regex::Regex::new(&r.pattern).unwrap(), r.name.as_str())).collect();
    let mut edges: BTreeMap<(String, String), i64> = BTreeMap::new();
    for events in retained(spec, accepted, as_of).values() {
        for session in sessions(events, &spec.views) {
            let nodes: Vec<String> = session.iter().filter_map(|e| node(spec, &rules, e)).collect();
            if nodes.is_empty() {
                continue;
            }
            let walk: Vec<&str> = std::iter::once("(entry)")
                .chain(nodes.iter().map(String::as_str))
                .chain(std::iter::once("(exit)"))
                .collect();
            for pair in walk.windows(2) {
                *edges.entry((pair[0].to_string(), pair[1].to_string())).or_default() += 1;
            }
        }
    }
    edges.into_iter().map(|((from, to), n)| (from, to, n)).collect()
}
