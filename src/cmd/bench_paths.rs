//! `clickflow bench paths`: each path query's latency on the graph a replay leaves, with the
//! configured cleaning rules and with raw pages (every product its own node: a larger graph).

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use read::path_query::{ConversionQuery, ExitsQuery, GraphQuery, NextQuery, TopQuery};
use read::ReadModel;

use crate::config::Config;

const RUNS: usize = 200;

type Query<'a> = dyn Fn() -> Result<(), String> + 'a;

pub fn main(config: &Config, count: u64) -> Result<()> {
    let raw = {
        let mut c = config.clone();
        c.views.paths.rules.clear();
        c
    };
    for (label, config) in [("cleaned pages", config), ("raw pages", &raw)] {
        let model = super::bench::replay_generated(config, count)?;
        queries(label, &model)?;
    }
    Ok(())
}

/// Median and 99th percentile of `RUNS` calls.
fn time(mut f: impl FnMut() -> Result<(), String>) -> Result<(Duration, Duration)> {
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        f().map_err(|e| anyhow!(e))?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok((times[RUNS / 2], times[RUNS * 99 / 100]))
}

fn ok<T>(r: Result<T, read::query::QueryError>) -> Result<(), String> {
    r.map(|_| ()).map_err(|e| e.0)
}

fn queries(label: &str, model: &ReadModel) -> Result<()> {
    let graph = model.path_graph(&GraphQuery { max_edges: Some(10_000), ..Default::default() });
    let graph = graph.map_err(|e| anyhow!(e.0))?.map_err(|_| anyhow!("asked for json"))?;
    println!(
        "\npaths ({label}): {} nodes, {} edges after the replay\n\n| query | median µs | p99 µs |\n|---|---|---|",
        graph.graph.nodes.len(),
        graph.total_edges
    );
    let first_page = "/".to_string();
    let cases: Vec<(&str, Box<Query>)> = vec![
        ("next?page=/", Box::new(|| ok(model.path_next(&NextQuery { page: Some(first_page.clone()), limit: None })))),
        ("top (from (entry), 5 steps)", Box::new(|| ok(model.path_top(&TopQuery::default())))),
        (
            "top?from=/&to=/checkout",
            Box::new(|| {
                let q = TopQuery { from: Some("/".into()), to: Some("/checkout".into()), ..Default::default() };
                ok(model.path_top(&q))
            }),
        ),
        (
            "conversions (into event:purchase, 5 steps)",
            Box::new(|| ok(model.path_conversions(&ConversionQuery::default()))),
        ),
        ("exits", Box::new(|| ok(model.path_exits(&ExitsQuery::default())))),
        ("graph?format=json (50 edges)", Box::new(|| ok(model.path_graph(&GraphQuery::default())))),
        (
            "graph?format=dot (50 edges)",
            Box::new(|| ok(model.path_graph(&GraphQuery { format: Some("dot".into()), ..Default::default() }))),
        ),
    ];
    // What the first query after an edge count moved pays on top: the rebuild.
    let edges = model.dump().paths;
    let (median, p99) = time(|| {
        let graph = read::path_graph::PathGraph::from_edges(edges.iter().map(|(f, t, n)| (f, t, *n as u64)));
        std::hint::black_box(graph);
        Ok(())
    })?;
    println!(
        "| graph rebuild from the edge counts | {:.0} | {:.0} |",
        median.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    for (name, query) in cases {
        let (median, p99) = time(query)?;
        println!("| {name} | {:.0} | {:.0} |", median.as_secs_f64() * 1e6, p99.as_secs_f64() * 1e6);
    }
    Ok(())
}
