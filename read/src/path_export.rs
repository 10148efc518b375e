//! The path graph as exported: nodes, edges and weights, as JSON or Graphviz DOT.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphNode {
    pub name: String,
    /// Total in-weight of the node in the full graph (for ENTRY: its total out-weight).
    pub weight: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphEdge {
    pub from: String,
    pub to: String,
    pub weight: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GraphExport {
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
}

impl GraphExport {
    /// Graphviz DOT: `digraph paths { ... }`. Nodes get ids `n0, n1, ..` in `nodes` order (edge
    /// ends missing from `nodes` follow, in edge order) and the label "name\nweight", quoted and
    /// escaped; edges are labelled with their weight, penwidth 1..8 relative to the heaviest edge.
    /// Ids rather than names as node ids keep odd names from colliding after escaping.
    pub fn to_dot(&self) -> String {
        let mut ids: HashMap<&str, usize> = HashMap::new();
        let mut out = String::from("digraph paths {\n  rankdir=LR;\n  node [shape=box];\n");
        let named = self.nodes.iter().map(|n| (n.name.as_str(), Some(n.weight)));
        let ends = self.edges.iter().flat_map(|e| [(e.from.as_str(), None), (e.to.as_str(), None)]);
        for (name, weight) in named.chain(ends) {
            let id = ids.len();
            if let Entry::Vacant(slot) = ids.entry(name) {
                slot.insert(id);
                let label = match weight {
                    Some(w) => format!("{}\\n{w}", dot_escape(name)),
                    None => dot_escape(name),
                };
                out.push_str(&format!("  n{id} [label=\"{label}\"];\n"));
            }
        }
        let heaviest = self.edges.iter().map(|e| e.weight).max().unwrap_or(0).max(1);
        for edge in &self.edges {
            let pen = 1.0 + 7.0 * (edge.weight as f64 / heaviest as f64);
            out.push_str(&format!(
                "  n{} -> n{} [label=\"{}\", penwidth={pen:.2}];\n",
                ids[edge.from.as_str()],
                ids[edge.to.as_str()],
                edge.weight
            ));
        }
        out.push_str("}\n");
        out
    }
}

/// Escapes a DOT quoted-string label: quotes and backslashes literal, line breaks as `\n`.
fn dot_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}
