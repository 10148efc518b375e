//! The live path graph (petgraph) and the path queries answered from it.
//!
//! Nodes are page names, conversion events (`event:<name>`) and the pseudo nodes [`ENTRY`] and
//! [`EXIT`]; edge weights are session transition counts. A [`PathGraph`] is built once per
//! consistent snapshot of counts and then answers many queries, so everything a query needs
//! repeatedly (totals, weight-sorted adjacency) is computed at build time.

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use serde::{Deserialize, Serialize};

/// A session starts: edges `ENTRY -> first page`. Has no in-edges.
pub const ENTRY: &str = "(entry)";
/// A session ends: edges `last page -> EXIT`. Has no out-edges.
pub const EXIT: &str = "(exit)";
/// PostHog's default path length.
pub const DEFAULT_STEPS: usize = 5;
pub const MAX_STEPS: usize = 10;
/// PostHog's default number of edges drawn.
pub const DEFAULT_MAX_EDGES: usize = 50;
pub const DEFAULT_LIMIT: usize = 10;
pub const MAX_LIMIT: usize = 100;

/// Partial walks one path search may hold; bounds its memory (~40 bytes each).
const MAX_PARTIAL_WALKS: usize = 2_000_000;
/// Edges one path search may scan; bounds its time independently of how many are kept.
const MAX_EDGE_SCANS: u64 = 20_000_000;
/// Relative slack on A* priorities: float error of a 10-step product is ~40 ulps (1e-14).
const BOUND_MARGIN: f64 = 1e-12;
/// Suggestions attached to an unknown-node error.
const SUGGESTIONS: usize = 5;
/// Characters of a name that `close_to` compares; keeps edit distance cheap on odd input.
const MAX_COMPARED: usize = 64;
const NO_PARENT: u32 = u32::MAX;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Share {
    pub page: String,
    pub count: u64,
    pub share: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Neighbors {
    pub page: String,
    /// Total weight of in-edges / out-edges (all of them, not only the listed ones).
    pub total_in: u64,
    pub total_out: u64,
    /// Out-edges heaviest first (ties: name ascending), at most `limit`; share = count / total_out.
    pub next: Vec<Share>,
    /// In-edges the same way; share = count / total_in.
    pub previous: Vec<Share>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PathQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub steps: usize,
    pub min_weight: u64,
    pub limit: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Path {
    pub pages: Vec<String>,
    /// Estimated sessions that followed it (see [`PathGraph::top_paths`]).
    pub sessions: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exit {
    pub page: String,
    pub exits: u64,
    /// exits / total_out of the page
    pub exit_rate: f64,
}

pub use crate::path_export::{GraphEdge, GraphExport, GraphNode};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error(
        "unknown node {node:?}{}; name a page as counted (like \"/products/:id\"), \"event:<name>\", \
         \"(entry)\" or \"(exit)\"",
        did_you_mean(.close)
    )]
    UnknownNode { node: String, close: Vec<String> },
    #[error("bad path query: {0}")]
    BadQuery(String),
}

fn did_you_mean(close: &[String]) -> String {
    if close.is_empty() {
        return String::new();
    }
    let names: Vec<String> = close.iter().map(|c| format!("{c:?}")).collect();
    format!(" (did you mean {}?)", names.join(", "))
}

/// A directed graph of page transitions with the totals and orderings its queries need.
#[derive(Clone, Debug)]
pub struct PathGraph {
    /// Nodes are added in name order, so comparing node indices compares names; every
    /// "ties by name" rule below relies on that.
    graph: DiGraph<String, u64>,
    index: HashMap<String, NodeIndex>,
    /// Totals over all edges of a node: the denominators of shares and estimates.
    total_out: Vec<u64>,
    total_in: Vec<u64>,
    /// Per node (other end, weight), heaviest first then by name: listings are prefixes, and a
    /// scan for edges >= min_weight stops at the first lighter one.
    out_adj: Vec<Vec<(u32, u64)>>,
    in_adj: Vec<Vec<(u32, u64)>>,
    /// All edges `(weight, from, to)`, heaviest first then by names.
    heaviest: Vec<(u64, u32, u32)>,
}

impl PathGraph {
    /// Edges with weight 0 are ignored; the same (from, to) given twice is summed. Edges into
    /// ENTRY or out of EXIT are ignored too: no session makes them, and walk maximality relies
    /// on ENTRY/EXIT being dead ends.
    pub fn from_edges<S: AsRef<str>>(edges: impl IntoIterator<Item = (S, S, u64)>) -> PathGraph {
        let mut summed: HashMap<(String, String), u64> = HashMap::new();
        for (from, to, weight) in edges {
            let (from, to) = (from.as_ref(), to.as_ref());
            if weight == 0 || from == EXIT || to == ENTRY {
                continue;
            }
            let slot = summed.entry((from.to_owned(), to.to_owned())).or_insert(0);
            // Saturating keeps every edge <= its node's total, so shares stay <= 1.
            *slot = slot.saturating_add(weight);
        }
        let names: BTreeSet<&str> = summed.keys().flat_map(|(f, t)| [f.as_str(), t.as_str()]).collect();
        let mut graph = DiGraph::with_capacity(names.len(), summed.len());
        let mut index = HashMap::with_capacity(names.len());
        for name in names {
            index.insert(name.to_owned(), graph.add_node(name.to_owned()));
        }
        let mut edges: Vec<(NodeIndex, NodeIndex, u64)> =
            summed.iter().map(|((f, t), &w)| (index[f], index[t], w)).collect();
        edges.sort_unstable();
        let n = graph.node_count();
        let (mut total_out, mut total_in) = (vec![0u64; n], vec![0u64; n]);
        let (mut out_adj, mut in_adj) = (vec![Vec::new(); n], vec![Vec::new(); n]);
        for (f, t, w) in edges {
            graph.add_edge(f, t, w);
            total_out[f.index()] = total_out[f.index()].saturating_add(w);
            total_in[t.index()] = total_in[t.index()].saturating_add(w);
            out_adj[f.index()].push((t.index() as u32, w));
            in_adj[t.index()].push((f.index() as u32, w));
        }
        for list in out_adj.iter_mut().chain(in_adj.iter_mut()) {
            list.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        }
        // Every export prunes: sort once per build, not per query.
        let mut heaviest: Vec<(u64, u32, u32)> = graph
            .edge_references()
            .map(|e| (*e.weight(), e.source().index() as u32, e.target().index() as u32))
            .collect();
        heaviest.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        PathGraph { graph, index, total_out, total_in, out_adj, in_adj, heaviest }
    }

    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    pub fn edge_count(&self) -> usize {
        self.graph.edge_count()
    }

    pub fn contains(&self, node: &str) -> bool {
        self.index.contains_key(node)
    }

    fn name(&self, i: u32) -> &str {
        &self.graph[NodeIndex::new(i as usize)]
    }

    /// Node names sorted by how close they are to `name` (for "unknown page, did you mean"): up
    /// to `n`, best first. Case-insensitive; containment first, then edit distance, common
    /// prefix, traffic, name. Names with nothing in common are left out.
    pub fn close_to(&self, name: &str, n: usize) -> Vec<String> {
        let query: Vec<char> = name.to_lowercase().chars().take(MAX_COMPARED).collect();
        let query_str: String = query.iter().collect();
        let mut scored: Vec<(bool, usize, usize, u64, u32)> = Vec::new();
        for idx in self.graph.node_indices() {
            let cand_str = self.graph[idx].to_lowercase();
            let cand: Vec<char> = cand_str.chars().take(MAX_COMPARED).collect();
            let contains = !query.is_empty() && (cand_str.contains(&query_str) || query_str.contains(&cand_str));
            let prefix = query.iter().zip(&cand).take_while(|(a, b)| a == b).count();
            let dist = edit_distance(&query, &cand);
            if !(contains || prefix >= 3 || dist * 3 <= query.len().max(cand.len())) {
                continue;
            }
            let i = idx.index();
            let traffic = self.total_in[i].saturating_add(self.total_out[i]);
            scored.push((contains, dist, prefix, traffic, i as u32));
        }
        scored.sort_unstable_by(|a, b| {
            b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(b.2.cmp(&a.2)).then(b.3.cmp(&a.3)).then(a.4.cmp(&b.4))
        });
        scored.into_iter().take(n).map(|s| self.name(s.4).to_owned()).collect()
    }

    /// Next and previous nodes of `page` (None if the node does not exist).
    pub fn neighbors(&self, page: &str, limit: usize) -> Option<Neighbors> {
        let i = self.index.get(page)?.index();
        let shares = |adj: &[(u32, u64)], total: u64| -> Vec<Share> {
            adj.iter()
                .take(limit)
                .map(|&(j, w)| Share { page: self.name(j).to_owned(), count: w, share: w as f64 / total as f64 })
                .collect()
        };
        Some(Neighbors {
            page: page.to_owned(),
            total_in: self.total_in[i],
            total_out: self.total_out[i],
            next: shares(&self.out_adj[i], self.total_out[i]),
            previous: shares(&self.in_adj[i], self.total_in[i]),
        })
    }

    /// Edges into EXIT, heaviest first (ties: page ascending).
    pub fn exits(&self, limit: usize) -> Vec<Exit> {
        let Some(exit) = self.index.get(EXIT) else { return Vec::new() };
        self.in_adj[exit.index()]
            .iter()
            .take(limit)
            .map(|&(j, w)| Exit {
                page: self.name(j).to_owned(),
                exits: w,
                exit_rate: w as f64 / self.total_out[j as usize] as f64,
            })
            .collect()
    }

    /// The pruned graph: edges with weight >= min_weight, heaviest `max_edges` of them (ties:
    /// from, then to ascending); nodes are their endpoints by name.
    pub fn pruned(&self, min_weight: u64, max_edges: usize) -> GraphExport {
        let kept: Vec<(u64, usize, usize)> = self
            .heaviest
            .iter()
            .take_while(|e| e.0 >= min_weight)
            .take(max_edges)
            .map(|&(w, f, t)| (w, f as usize, t as usize))
            .collect();
        let ends: BTreeSet<usize> = kept.iter().flat_map(|&(_, f, t)| [f, t]).collect();
        let nodes = ends
            .into_iter()
            .map(|i| {
                let name = self.graph[NodeIndex::new(i)].clone();
                let weight = if name == ENTRY { self.total_out[i] } else { self.total_in[i] };
                GraphNode { name, weight }
            })
            .collect();
        let edges = kept
            .into_iter()
            .map(|(weight, f, t)| GraphEdge {
                from: self.graph[NodeIndex::new(f)].clone(),
                to: self.graph[NodeIndex::new(t)].clone(),
                weight,
            })
            .collect();
        GraphExport { nodes, edges }
    }

    fn lookup(&self, node: &str) -> Result<u32, PathError> {
        match self.index.get(node) {
            Some(i) => Ok(i.index() as u32),
            None => Err(PathError::UnknownNode { node: node.to_owned(), close: self.close_to(node, SUGGESTIONS) }),
        }
    }

    /// The `limit` most followed walks of 1..=`steps` edges, each edge >= `min_weight`; nodes may
    /// repeat. Sorted by estimate descending, then pages ascending.
    ///
    /// - `from` X only (or neither: X = ENTRY): walks from X that cannot be extended (`steps`
    ///   edges, or the last node has no edge >= min_weight). Estimate: `e = w(n0,n1)`, then for
    ///   each further edge `e = e * (w(ni,ni+1) as f64 / out(ni) as f64)`, out = total out-weight.
    /// - `to` Y only: walks into Y that cannot be extended backwards; `e = w(nk-1,nk)`, then from
    ///   the end backwards `e = e * (w(ni-1,ni) as f64 / in(ni) as f64)`.
    /// - both: walks from X that end at their first arrival at Y; forward estimate.
    ///
    /// With neither given and no ENTRY node (no sessions), the answer is empty.
    pub fn top_paths(&self, query: &PathQuery) -> Result<Vec<Path>, PathError> {
        if !(1..=MAX_STEPS).contains(&query.steps) {
            return Err(PathError::BadQuery(format!("steps must be 1..={MAX_STEPS}, got {}", query.steps)));
        }
        if !(1..=MAX_LIMIT).contains(&query.limit) {
            return Err(PathError::BadQuery(format!("limit must be 1..={MAX_LIMIT}, got {}", query.limit)));
        }
        let from = query.from.as_deref().map(|n| self.lookup(n)).transpose()?;
        let to = query.to.as_deref().map(|n| self.lookup(n)).transpose()?;
        let (start, forward, target) = match (from, to) {
            (Some(x), None) => (x, true, None),
            (None, Some(y)) => (y, false, None),
            (Some(x), Some(y)) => (x, true, Some(y)),
            (None, None) => match self.index.get(ENTRY) {
                Some(e) => (e.index() as u32, true, None),
                None => return Ok(Vec::new()),
            },
        };
        self.search(start, forward, target, query)
    }

    fn search(&self, start: u32, forward: bool, target: Option<u32>, q: &PathQuery) -> Result<Vec<Path>, PathError> {
        let (adj, norm) = if forward { (&self.out_adj, &self.total_out) } else { (&self.in_adj, &self.total_in) };
        let mut search = Search {
            adj,
            norm,
            forward,
            target,
            steps: q.steps,
            min_weight: q.min_weight,
            bound: Vec::new(),
            arena: vec![Step { node: start, parent: NO_PARENT, depth: 0 }],
            heap: BinaryHeap::new(),
            scans: 0,
        };
        search.bound = search.completion_bounds();
        let found = search.run(q.limit)?;
        Ok(found
            .into_iter()
            .map(|(pages, sessions)| Path {
                pages: pages.into_iter().map(|i| self.name(i).to_owned()).collect(),
                sessions,
            })
            .collect())
    }
}

/// One best-first (A*) search over partial walks.
///
/// A walk's estimate only shrinks as it grows (each factor is w / total <= 1.0), and
/// `completion_bounds` says how far at most: a walk's priority is its estimate times the best
/// product of shares still reachable, so it is an upper bound of every complete walk it can
/// become, and a complete walk's priority is its estimate. Hence when the best priority drops
/// below e, every complete walk with estimate e has been found. Those are held as a group and
/// emitted sorted by pages: emitting a walk as soon as it pops would be wrong, because a pending
/// walk with the same estimate may still complete into a smaller one (factors of exactly 1.0),
/// and backward walks grow at the front, so heap order cannot give page order.
struct Search<'g> {
    /// Edges in search direction (out-edges forward, in-edges backward) and their node totals.
    adj: &'g [Vec<(u32, u64)>],
    norm: &'g [u64],
    forward: bool,
    target: Option<u32>,
    steps: usize,
    min_weight: u64,
    /// `bound[h * nodes + v]`: see `completion_bounds`.
    bound: Vec<f64>,
    /// Partial walks as parent links, so heap entries stay small; id 0 is the bare start.
    arena: Vec<Step>,
    heap: BinaryHeap<Candidate>,
    scans: u64,
}

impl Search<'_> {
    fn usable(&self, node: u32) -> impl Iterator<Item = &(u32, u64)> + '_ {
        self.adj[node as usize].iter().take_while(move |e| e.1 >= self.min_weight)
    }

    /// Whether a walk that reached `node` with `depth` edges is reported rather than extended.
    fn complete(&self, node: u32, depth: usize) -> bool {
        match self.target {
            Some(y) => node == y,
            None => depth == self.steps || self.usable(node).next().is_none(),
        }
    }

    /// For a walk at node v with h edges left, the largest product of shares its remaining edges
    /// can contribute until it completes (1.0 if it is complete, 0.0 if it can never be). Exact in
    /// real numbers; callers add a margin for float rounding. O(steps * edges) per query.
    fn completion_bounds(&self) -> Vec<f64> {
        let n = self.adj.len();
        let mut bound = vec![0.0; (self.steps + 1) * n];
        for h in 0..=self.steps {
            let (done, rest) = bound.split_at_mut(h * n);
            let prev = if h == 0 { &[][..] } else { &done[(h - 1) * n..] };
            for (v, slot) in rest[..n].iter_mut().enumerate() {
                let depth = self.steps - h;
                *slot = if self.complete(v as u32, depth) {
                    1.0
                } else if h == 0 {
                    0.0
                } else {
                    let total = self.norm[v] as f64;
                    self.usable(v as u32).map(|&(m, w)| w as f64 / total * prev[m as usize]).fold(0.0, f64::max)
                };
            }
        }
        bound
    }

    fn run(mut self, limit: usize) -> Result<Vec<(Vec<u32>, f64)>, PathError> {
        self.expand(0, None)?;
        let mut results = Vec::new();
        let (mut group, mut group_est) = (Vec::new(), f64::NAN);
        while let Some(Candidate { priority, est, id }) = self.heap.pop() {
            if !group.is_empty() && priority < group_est {
                flush(&mut group, group_est, &mut results);
                if results.len() >= limit {
                    break;
                }
            }
            let Step { node, depth, .. } = self.arena[id as usize];
            if self.complete(node, usize::from(depth)) {
                // Nothing that could beat it is left (see the type's doc), so it ties or starts a group.
                debug_assert!(group.is_empty() || est == group_est, "A* bound violated");
                group.push(self.pages(id));
                group_est = est;
            } else {
                self.expand(id, Some(est))?;
            }
        }
        flush(&mut group, group_est, &mut results);
        results.truncate(limit);
        Ok(results)
    }

    /// Pushes every one-edge extension of walk `id` (estimate `est`; None for the bare start)
    /// that can still complete.
    fn expand(&mut self, id: u32, est: Option<f64>) -> Result<(), PathError> {
        let Step { node, depth, .. } = self.arena[id as usize];
        let depth = depth + 1;
        let row = (self.steps - usize::from(depth)) * self.adj.len();
        let adj = self.adj;
        for &(m, w) in adj[node as usize].iter().take_while(|e| e.1 >= self.min_weight) {
            self.scans += 1;
            if self.scans > MAX_EDGE_SCANS || self.arena.len() >= MAX_PARTIAL_WALKS {
                return Err(PathError::BadQuery(format!(
                    "too many candidate paths to rank exactly (gave up after {} partial paths, {} edges); \
                     raise min_weight, lower steps or limit, or give both from and to",
                    self.arena.len(),
                    self.scans
                )));
            }
            let bound = self.bound[row + m as usize];
            if bound == 0.0 {
                continue;
            }
            let est = match est {
                None => w as f64,
                Some(e) => e * (w as f64 / self.norm[node as usize] as f64),
            };
            // Rounding may put a completion a few ulps above est * bound; the margin keeps the
            // priority an upper bound. A complete walk's priority must be exactly its estimate.
            let priority = if self.complete(m, usize::from(depth)) { est } else { est * bound * (1.0 + BOUND_MARGIN) };
            let child = u32::try_from(self.arena.len()).expect("arena is bounded by MAX_PARTIAL_WALKS");
            self.arena.push(Step { node: m, parent: id, depth });
            self.heap.push(Candidate { priority, est, id: child });
        }
        Ok(())
    }

    /// The walk's nodes in path order (start first).
    fn pages(&self, mut id: u32) -> Vec<u32> {
        let mut pages = Vec::new();
        while id != NO_PARENT {
            let step = self.arena[id as usize];
            pages.push(step.node);
            id = step.parent;
        }
        // Parent links run from the newest node back to the search start: that is the path
        // reversed when searching forward and already in order when searching backward.
        if self.forward {
            pages.reverse();
        }
        pages
    }
}

/// Moves a finished tie group into the results in page order (node ids sort like names).
fn flush(group: &mut Vec<Vec<u32>>, est: f64, results: &mut Vec<(Vec<u32>, f64)>) {
    group.sort_unstable();
    results.extend(group.drain(..).map(|pages| (pages, est)));
}

/// A partial walk: its newest node and the walk it extends.
#[derive(Clone, Copy)]
struct Step {
    node: u32,
    parent: u32,
    depth: u8,
}

/// Heap entry: max-heap on priority; lower arena id first among equals so the work done (and
/// so where the work bound hits) is deterministic.
#[derive(Clone, Copy)]
struct Candidate {
    priority: f64,
    est: f64,
    id: u32,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority.total_cmp(&other.priority).then(other.id.cmp(&self.id))
    }
}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}

/// Levenshtein distance over chars, two rows.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}
