//! Requests per route and status class with their latency, and the process's own resources, for
//! `/metrics`. Routes are the matched patterns (`/api/v1/funnels/{name}`), so the label set stays
//! bounded whatever clients ask for.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use parking_lot::Mutex;

/// Upper bounds (ms) of the request latency histogram.
const BUCKETS_MS: [f64; 10] = [1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0];

#[derive(Default)]
struct Series {
    /// Per bucket of [`BUCKETS_MS`], then +Inf (not cumulative).
    buckets: [u64; 11],
    sum_ms: f64,
}

/// `(route, method, status class)` -> latency series.
#[derive(Default)]
pub struct HttpMetrics {
    series: Mutex<BTreeMap<(String, String, &'static str), Series>>,
}

fn class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The middleware that records every routed request (the time to its response headers; a change
/// stream counts until it starts).
pub async fn record(State(metrics): State<Arc<HttpMetrics>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("(unmatched)".to_string(), |m| m.as_str().to_string());
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut series = metrics.series.lock();
    let s = series.entry((route, method, class(response.status().as_u16()))).or_default();
    s.buckets[BUCKETS_MS.iter().position(|b| ms <= *b).unwrap_or(BUCKETS_MS.len())] += 1;
    s.sum_ms += ms;
    response
}

impl HttpMetrics {
    pub fn write(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP clickflow_http_request_duration_ms Time to the response headers, per route, method and status class.\n# TYPE clickflow_http_request_duration_ms histogram"
        );
        for ((route, method, status), s) in self.series.lock().iter() {
            let labels = format!("route=\"{route}\",method=\"{method}\",status=\"{status}\"");
            let mut cumulative = 0;
            for (i, bound) in BUCKETS_MS.iter().enumerate() {
                cumulative += s.buckets[i];
                let _ =
                    writeln!(out, "clickflow_http_request_duration_ms_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
            }
            cumulative += s.buckets[BUCKETS_MS.len()];
            let _ = writeln!(out, "clickflow_http_request_duration_ms_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
            let _ = writeln!(out, "clickflow_http_request_duration_ms_sum{{{labels}}} {:.3}", s.sum_ms);
            let _ = writeln!(out, "clickflow_http_request_duration_ms_count{{{labels}}} {cumulative}");
        }
    }
}

/// The standard process metrics (Prometheus client conventions), read from `/proc/self`.
pub fn write_process(out: &mut String) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
    };
    if let Some(rss) = kib("VmRSS:") {
        let _ = writeln!(out, "# HELP process_resident_memory_bytes Resident memory.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}", rss * 1024);
    }
    if let Some(threads) = status.lines().find_map(|l| l.strip_prefix("Threads:")?.trim().parse::<u64>().ok()) {
        let _ = writeln!(
            out,
            "# HELP process_threads OS threads.\n# TYPE process_threads gauge\nprocess_threads {threads}"
        );
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command (which may hold spaces): utime and stime are the 12th and
        // 13th, in clock ticks of USER_HZ, which Linux fixes at 100 for user space.
        let fields: Vec<&str> =
            stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let seconds = (ticks(11) + ticks(12)) as f64 / 100.0;
        let _ = writeln!(out, "# HELP process_cpu_seconds_total User and system CPU time.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {seconds:.2}");
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let _ = writeln!(
            out,
            "# HELP process_open_fds Open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds {}",
            fds.count()
        );
    }
    if let Some(max) = crate::server::open_file_limit() {
        let _ = writeln!(
            out,
            "# HELP process_max_fds The open-file limit.\n# TYPE process_max_fds gauge\nprocess_max_fds {max}"
        );
    }
}
