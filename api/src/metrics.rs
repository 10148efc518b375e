//! `GET /metrics` in the Prometheus text format.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use read::status::LATENCY_BUCKETS_MS;

use crate::AppState;

pub async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    let rejects = s.read_model.rejects();
    let accepted = s.read_model.accepted();
    let clock = s.read_model.clock();
    let _ = writeln!(out, "# HELP clickflow_events_in_total Input records read (accepted and rejected).\n# TYPE clickflow_events_in_total counter\nclickflow_events_in_total {}", accepted + rejects.total);
    let _ = writeln!(out, "# HELP clickflow_events_accepted_total Events counted by the views.\n# TYPE clickflow_events_accepted_total counter\nclickflow_events_accepted_total {accepted}");
    let _ = writeln!(
        out,
        "# HELP clickflow_rejects_total Rejected input records by reason.\n# TYPE clickflow_rejects_total counter"
    );
    for (reason, n) in &rejects.by_reason {
        let _ = writeln!(out, "clickflow_rejects_total{{reason=\"{reason}\"}} {n}");
    }
    let partitions = s.status.partitions();
    let _ = writeln!(out, "# HELP clickflow_partition_position Next offset (or line) to read per input partition.\n# TYPE clickflow_partition_position gauge");
    for (name, p) in &partitions {
        let _ = writeln!(out, "clickflow_partition_position{{partition=\"{name}\"}} {}", p.position);
    }
    let _ = writeln!(out, "# HELP clickflow_partition_lag Records behind the partition's high watermark.\n# TYPE clickflow_partition_lag gauge");
    for (name, p) in &partitions {
        if let Some(lag) = p.lag() {
            let _ = writeln!(out, "clickflow_partition_lag{{partition=\"{name}\"}} {lag}");
        }
    }
    let _ = writeln!(out, "# HELP clickflow_partition_stalled 1 while the partition has records waiting and nothing is read, or the broker does not answer.\n# TYPE clickflow_partition_stalled gauge");
    for (name, p) in &partitions {
        let _ = writeln!(out, "clickflow_partition_stalled{{partition=\"{name}\"}} {}", u8::from(p.problem.is_some()));
    }
    let _ = writeln!(out, "# HELP clickflow_consumer_restarts_total Consumers restarted after a stall, per partition.\n# TYPE clickflow_consumer_restarts_total counter");
    for (name, p) in &partitions {
        let _ = writeln!(out, "clickflow_consumer_restarts_total{{partition=\"{name}\"}} {}", p.restarts);
    }
    let (buckets, sum) = s.status.epoch_latency();
    let _ = writeln!(out, "# HELP clickflow_epoch_latency_ms From an epoch opening to its publish in the read model.\n# TYPE clickflow_epoch_latency_ms histogram");
    let mut cumulative = 0;
    for (i, bound) in LATENCY_BUCKETS_MS.iter().enumerate() {
        cumulative += buckets[i];
        let _ = writeln!(out, "clickflow_epoch_latency_ms_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    cumulative += buckets[LATENCY_BUCKETS_MS.len()];
    let _ = writeln!(out, "clickflow_epoch_latency_ms_bucket{{le=\"+Inf\"}} {cumulative}\nclickflow_epoch_latency_ms_sum {sum}\nclickflow_epoch_latency_ms_count {cumulative}");
    let users = s.status.user_state();
    let _ = writeln!(out, "# HELP clickflow_session_keys Users (or session ids) with a session that can still change.\n# TYPE clickflow_session_keys gauge\nclickflow_session_keys {}", users.session_keys);
    let _ = writeln!(out, "# HELP clickflow_logged_users Users whose recent events are kept for funnels.\n# TYPE clickflow_logged_users gauge\nclickflow_logged_users {}", users.logged_users);
    let _ = writeln!(out, "# HELP clickflow_user_events_capped_total Events dropped from user logs beyond views.max_events_per_user.\n# TYPE clickflow_user_events_capped_total counter\nclickflow_user_events_capped_total {}", users.capped_events);
    let _ = writeln!(out, "# HELP clickflow_session_approximate_recuts_total Late-event session re-cuts done without the run's events (clocks far ahead).\n# TYPE clickflow_session_approximate_recuts_total counter\nclickflow_session_approximate_recuts_total {}", users.approximate_recuts);
    let _ = writeln!(out, "# HELP clickflow_retention_users Users with retention state, summed over definitions.\n# TYPE clickflow_retention_users gauge\nclickflow_retention_users {}", users.retention_users);
    let (_, alerts) = s.alerting.active();
    let _ = writeln!(out, "# HELP clickflow_alerts_firing Alerts firing now, by rule and severity (silenced ones too).\n# TYPE clickflow_alerts_firing gauge");
    let mut firing: std::collections::BTreeMap<(String, String), usize> = std::collections::BTreeMap::new();
    for a in &alerts {
        *firing.entry((a.rule.clone(), a.severity.as_str().to_string())).or_default() += 1;
    }
    for ((rule, severity), n) in firing {
        let _ = writeln!(out, "clickflow_alerts_firing{{rule=\"{rule}\",severity=\"{severity}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP clickflow_ready 1 once the engine has caught up with its input, while no partition is stalled.\n# TYPE clickflow_ready gauge\nclickflow_ready {}", u8::from(s.status.is_ready()));
    let _ = writeln!(
        out,
        "# HELP clickflow_epoch Last published ingestion epoch.\n# TYPE clickflow_epoch gauge\nclickflow_epoch {}",
        clock.epoch
    );
    if let Some(ms) = clock.as_of_ms {
        let _ = writeln!(out, "# HELP clickflow_as_of_ms Event time up to which views are complete.\n# TYPE clickflow_as_of_ms gauge\nclickflow_as_of_ms {ms}");
    }
    s.http.write(&mut out);
    crate::http_metrics::write_process(&mut out);
    for source in &s.extra_metrics {
        source(&mut out);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
