//! `examples/grafana-dashboard.json` is valid JSON and every metric its queries use is one that
//! clickflow writes (a renamed metric would leave a panel silently empty).

use std::collections::BTreeSet;

#[test]
fn every_metric_of_the_grafana_dashboard_is_written_by_clickflow() {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/examples/grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string()))
        .collect();
    assert!(exprs.len() >= 15, "{} queries", exprs.len());
    let names: BTreeSet<String> = regex::Regex::new(r"\b(?:clickflow|process)_[a-z_]+")
        .unwrap()
        .find_iter(&exprs.join(" "))
        .map(|m| m.as_str().trim_end_matches("_bucket").to_string())
        .collect();
    let sources: String = ["api/src", "collector/src", "bot/src", "src/cmd"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(format!("{root}/{dir}")).unwrap().flatten())
        .filter(|e| e.path().extension().is_some_and(|x| x == "rs"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    for name in &names {
        // Collector counters are written as clickflow_collector_{name}_total from their short names.
        let short = name.strip_prefix("clickflow_collector_").and_then(|n| n.strip_suffix("_total"));
        let written = sources.contains(name.as_str()) || short.is_some_and(|s| sources.contains(&format!("\"{s}\",")));
        assert!(written, "the dashboard queries `{name}`, which no source writes");
    }
}
