//! Path queries over the live graph: the read model builds a [`PathGraph`] from the edge counts
//! of one published snapshot and reuses it until the counts move.

use serde::{Deserialize, Serialize};

use crate::model::{Clock, PathEdges};
use crate::path_graph::{self, Exit, GraphExport, Neighbors, Path, PathError, PathGraph, PathQuery};
use crate::query::QueryError;
use crate::tables::Tables;
use schema::paths::{event_node, Cleaner};

/// Every edge with a positive count, by name.
pub fn dump(tables: &Tables) -> PathEdges {
    let mut edges: PathEdges = tables
        .path_edges
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|((from, to), n)| (tables.name(*from), tables.name(*to), *n))
        .collect();
    edges.sort();
    edges
}

/// The `n` heaviest edges (ties by names), straight from the counts: what the change stream
/// sends, without building a graph on the publish path.
pub fn heaviest(tables: &Tables, n: usize) -> Vec<path_graph::GraphEdge> {
    let mut edges: Vec<(i64, String, String)> = Vec::new();
    let mut top: Vec<(&(schema::event::Sym, schema::event::Sym), i64)> =
        tables.path_edges.iter().filter(|(_, c)| **c > 0).map(|(k, c)| (k, *c)).collect();
    // Names only for the candidates: everything at or above the n-th largest count.
    if top.len() > n {
        top.select_nth_unstable_by(n - 1, |a, b| b.1.cmp(&a.1));
        let floor = top[n - 1].1;
        top.retain(|(_, c)| *c >= floor);
    }
    for ((from, to), c) in top {
        edges.push((c, tables.name(*from), tables.name(*to)));
    }
    edges.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| (&a.1, &a.2).cmp(&(&b.1, &b.2))));
    edges.truncate(n);
    edges.into_iter().map(|(weight, from, to)| path_graph::GraphEdge { from, to, weight: weight as u64 }).collect()
}

impl From<PathError> for QueryError {
    fn from(e: PathError) -> QueryError {
        QueryError(e.to_string())
    }
}

/// A page as the user typed it, as the graph names it (cleaned by the same rules); pseudo nodes
/// and conversion nodes pass as they are.
fn node(cleaner: &Cleaner, page: &str) -> String {
    if page.starts_with('(') || page.starts_with("event:") {
        page.to_string()
    } else {
        cleaner.clean(page)
    }
}

fn unknown(graph: &PathGraph, node: &str) -> QueryError {
    PathError::UnknownNode { node: node.to_string(), close: graph.close_to(node, 5) }.into()
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextQuery {
    pub page: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathNext {
    #[serde(flatten)]
    pub clock: Clock,
    #[serde(flatten)]
    pub neighbors: Neighbors,
}

pub fn next(graph: &PathGraph, cleaner: &Cleaner, clock: Clock, q: &NextQuery) -> Result<PathNext, QueryError> {
    let page = q.page.as_deref().ok_or_else(|| QueryError("give `page`, e.g. ?page=/checkout".into()))?;
    let page = node(cleaner, page);
    let limit = limit(q.limit)?;
    let neighbors = graph.neighbors(&page, limit).ok_or_else(|| unknown(graph, &page))?;
    Ok(PathNext { clock, neighbors })
}

fn limit(limit: Option<usize>) -> Result<usize, QueryError> {
    let limit = limit.unwrap_or(path_graph::DEFAULT_LIMIT);
    if limit == 0 || limit > path_graph::MAX_LIMIT {
        return Err(QueryError(format!("limit must be 1 to {}, not {limit}", path_graph::MAX_LIMIT)));
    }
    Ok(limit)
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub steps: Option<usize>,
    pub min_weight: Option<u64>,
    pub limit: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopPaths {
    #[serde(flatten)]
    pub clock: Clock,
    pub query: PathQuery,
    pub paths: Vec<Path>,
}

pub fn top(graph: &PathGraph, cleaner: &Cleaner, clock: Clock, q: &TopQuery) -> Result<TopPaths, QueryError> {
    let query = PathQuery {
        from: q.from.as_deref().map(|p| node(cleaner, p)),
        to: q.to.as_deref().map(|p| node(cleaner, p)),
        steps: q.steps.unwrap_or(path_graph::DEFAULT_STEPS),
        min_weight: q.min_weight.unwrap_or(1),
        limit: limit(q.limit)?,
    };
    let paths = graph.top_paths(&query)?;
    Ok(TopPaths { clock, query, paths })
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversionQuery {
    /// The conversion event (one of `views.paths.conversion_events`).
    pub event: Option<String>,
    pub steps: Option<usize>,
    pub min_weight: Option<u64>,
    pub limit: Option<usize>,
}

/// The most common routes into a conversion event.
pub fn conversions(
    graph: &PathGraph,
    conversion_events: &[String],
    clock: Clock,
    q: &ConversionQuery,
) -> Result<TopPaths, QueryError> {
    let event = match (&q.event, conversion_events) {
        (Some(e), _) => e.clone(),
        (None, [only, ..]) => only.clone(),
        (None, []) => {
            return Err(QueryError("no conversion events are configured (views.paths.conversion_events)".into()))
        }
    };
    if !conversion_events.contains(&event) {
        return Err(QueryError(format!(
            "`{event}` is not a conversion event of the path graph; configured: {} (views.paths.conversion_events)",
            conversion_events.join(", ")
        )));
    }
    let query = PathQuery {
        from: None,
        to: Some(event_node(&event)),
        steps: q.steps.unwrap_or(path_graph::DEFAULT_STEPS),
        min_weight: q.min_weight.unwrap_or(1),
        limit: limit(q.limit)?,
    };
    if query.steps == 0 || query.steps > path_graph::MAX_STEPS {
        return Err(QueryError(format!("steps must be 1 to {}, not {}", path_graph::MAX_STEPS, query.steps)));
    }
    // Configured, but nobody converted in the window: no routes (not an unknown node).
    let paths = if graph.contains(&event_node(&event)) { graph.top_paths(&query)? } else { Vec::new() };
    Ok(TopPaths { clock, query, paths })
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitsQuery {
    pub limit: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathExits {
    #[serde(flatten)]
    pub clock: Clock,
    pub exits: Vec<Exit>,
}

pub fn exits(graph: &PathGraph, clock: Clock, q: &ExitsQuery) -> Result<PathExits, QueryError> {
    Ok(PathExits { clock, exits: graph.exits(limit(q.limit)?) })
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphQuery {
    /// `json` (default) or `dot`.
    pub format: Option<String>,
    pub min_weight: Option<u64>,
    pub max_edges: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathGraphAnswer {
    #[serde(flatten)]
    pub clock: Clock,
    pub min_weight: u64,
    pub max_edges: usize,
    /// Edges in the whole graph, before pruning.
    pub total_edges: usize,
    #[serde(flatten)]
    pub graph: GraphExport,
}

/// The pruned graph; `Ok(Err(dot))` when DOT was asked for.
pub fn export(graph: &PathGraph, clock: Clock, q: &GraphQuery) -> Result<Result<PathGraphAnswer, String>, QueryError> {
    let min_weight = q.min_weight.unwrap_or(1);
    let max_edges = q.max_edges.unwrap_or(path_graph::DEFAULT_MAX_EDGES);
    if max_edges == 0 || max_edges > 10_000 {
        return Err(QueryError(format!("max_edges must be 1 to 10000, not {max_edges}")));
    }
    let pruned = graph.pruned(min_weight, max_edges);
    match q.format.as_deref().unwrap_or("json") {
        "json" => {
            Ok(Ok(PathGraphAnswer { clock, min_weight, max_edges, total_edges: graph.edge_count(), graph: pruned }))
        }
        "dot" => Ok(Err(pruned.to_dot())),
        other => Err(QueryError(format!("format `{other}` is not known; use json or dot"))),
    }
}
