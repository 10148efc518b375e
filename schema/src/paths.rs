//! Path nodes: how pages are cleaned into the names the path graph shows, and the pseudo nodes.
//! Both the path view (which counts edges) and the read side (which answers "next pages from
//! /products/42") map pages with the same [`Cleaner`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::event::{sym, Sym, NONE};

/// A session starts: edges `ENTRY -> first page`. Has no in-edges.
pub const ENTRY: &str = "(entry)";
/// A session ends: edges `last page -> EXIT`. Has no out-edges.
pub const EXIT: &str = "(exit)";

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
}
