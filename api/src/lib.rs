//! The HTTP API over the read model: REST JSON, a server-sent change stream, health and metrics.
//! It reads `read::ReadModel` and `views::Status` only; it never touches timely or Kafka.

mod alerts;
pub mod auth;
pub mod dashboard;
mod error;
mod funnels;
pub mod http_metrics;
mod metrics;
mod params;
mod paths;
mod retention;
pub mod server;
mod stream;

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use read::query::TimeseriesQuery;
use read::session_query::SessionsQuery;
use read::{ReadModel, Status};
use serde::{Deserialize, Serialize};

pub use error::ApiError;

/// Writes more Prometheus text into `/metrics` (components the API does not know: the
/// collector, the Slack bot).
pub type MetricsSource = Arc<dyn Fn(&mut String) + Send + Sync>;

#[derive(Clone)]
pub struct AppState {
    pub read_model: Arc<ReadModel>,
    pub alerting: Arc<alerting::Alerting>,
    pub status: Arc<Status>,
    pub extra_metrics: Vec<MetricsSource>,
    /// None set: the API is open (and served on loopback only).
    pub tokens: Arc<auth::Tokens>,
    pub http: Arc<http_metrics::HttpMetrics>,
}

impl AppState {
    pub fn new(read_model: Arc<ReadModel>, alerting: Arc<alerting::Alerting>, status: Arc<Status>) -> AppState {
        AppState {
            read_model,
            alerting,
            status,
            extra_metrics: Vec::new(),
            tokens: Arc::default(),
            http: Arc::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address the HTTP server listens on.
    pub listen: String,
    /// Connection limits and timeouts of every HTTP listener (`[api.server]`).
    pub server: server::ServerLimits,
    /// Serve the API without tokens on an address other than loopback (a network where everyone
    /// who can reach it may change definitions and read user ids).
    pub trusted_network: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { listen: "127.0.0.1:8080".into(), server: server::ServerLimits::default(), trusted_network: false }
    }
}

impl ApiConfig {
    /// Refuses an open API on a reachable address: without tokens anyone who reaches it can
    /// silence alerts, change definitions and download user ids.
    pub fn check_exposure(&self, tokens: &auth::Tokens) -> Result<(), String> {
        if tokens.enabled() || self.trusted_network || is_loopback(&self.listen) {
            return Ok(());
        }
        Err(format!(
            "api.listen is {}, which is not loopback, and no API token is set: anyone who can reach it could change \
             definitions, silence alerts and read user ids. Set {} and {} (the server then asks for them), or set \
             api.trusted_network = true if every client on that network may do so",
            self.listen,
            auth::READ_TOKEN_ENV,
            auth::ADMIN_TOKEN_ENV
        ))
    }
}

/// Whether `listen` (`host:port`) resolves to loopback addresses only.
pub fn is_loopback(listen: &str) -> bool {
    use std::net::ToSocketAddrs;
    match listen.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

const ENDPOINTS: &[&str] = &[
    "GET /api/v1 (this list)",
    "GET /api/v1/live",
    "GET /api/v1/timeseries?metric=events|page_views|active_users&breakdown=none|event|page|utm_source|device|country&from=&to=&limit=",
    "GET /api/v1/sessions?from=&to=&limit=&utm_source=&device=&country=",
    "GET /api/v1/funnels",
    "POST /api/v1/funnels (JSON: name, steps [{event, page?, page_prefix?, page_regex?, utm_source?, device?, country?}], order? ordered|strict|unordered, window_minutes?, exclusions? [{event, ..., from?, to?}], breakdown? utm_source|device|country|page)",
    "GET /api/v1/funnels/{name}",
    "GET /api/v1/funnels/{name}/stuck?step=N&offset=&limit=",
    "GET /api/v1/retention",
    "POST /api/v1/retention (JSON: name, start {event, page?, page_prefix?, page_regex?, utm_source?, device?, country?, props?}, return {...}, period? day|week|month, cohort? first_time|recurring, mode? on|on_or_after, periods? 2-32, breakdown? utm_source|device|country)",
    "GET /api/v1/retention/{name}?mode=on|on_or_after&breakdown_value=",
    "GET /api/v1/paths/next?page=&limit=",
    "GET /api/v1/paths/top?from=&to=&steps=&min_weight=&limit=",
    "GET /api/v1/paths/conversions?event=&steps=&min_weight=&limit=",
    "GET /api/v1/paths/exits?limit=",
    "GET /api/v1/paths/graph?format=json|dot&min_weight=&max_edges=",
    "GET /api/v1/alerts?rule=&severity=&limit=",
    "GET /api/v1/alerts/history?rule=&severity=&limit=",
    "GET /api/v1/alerts/rules",
    "POST /api/v1/alerts/rules (JSON: name, severity? info|warning|critical, labels?, fire_after?, resolve_after?, when {kind: anomaly|threshold|funnel_drop|burst|rate_limit|clicks_without_views|shared_ip, ...}; see README \"Alerts\")",
    "GET /api/v1/alerts/silences",
    "POST /api/v1/alerts/silences (JSON: matcher (rule or alert id), minutes | until, comment?)",
    "DELETE /api/v1/alerts/silences/{id}",
    "GET /api/v1/limits/{rule}",
    "GET /api/v1/limits/{rule}/{key}",
    "GET /api/v1/stream?views=live,counts,sessions,funnels,retention,paths,alerts&coalesce_ms=1000",
    "GET /api/v1/rejects",
    "GET /api/v1/dump",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
];

/// The whole HTTP surface, without a socket: tests call it directly.
pub fn app(state: AppState) -> Router {
    let (tokens, http) = (state.tokens.clone(), state.http.clone());
    Router::new()
        .route("/api/v1", get(|| async { Json(serde_json::json!({"endpoints": ENDPOINTS})) }))
        .route("/api/v1/live", get(live))
        .route("/api/v1/timeseries", get(timeseries))
        .route("/api/v1/sessions", get(sessions))
        .route("/api/v1/funnels", get(funnels::list).post(funnels::create))
        .route("/api/v1/funnels/{name}", get(funnels::report))
        .route("/api/v1/funnels/{name}/stuck", get(funnels::stuck))
        .route("/api/v1/retention", get(retention::list).post(retention::create))
        .route("/api/v1/retention/{name}", get(retention::report))
        .route("/api/v1/paths/next", get(paths::next))
        .route("/api/v1/paths/top", get(paths::top))
        .route("/api/v1/paths/conversions", get(paths::conversions))
        .route("/api/v1/paths/exits", get(paths::exits))
        .route("/api/v1/paths/graph", get(paths::graph))
        .route("/api/v1/alerts", get(alerts::active))
        .route("/api/v1/alerts/history", get(alerts::history))
        .route("/api/v1/alerts/rules", get(alerts::rules).post(alerts::create_rule))
        .route("/api/v1/alerts/silences", get(alerts::silences).post(alerts::silence))
        .route("/api/v1/alerts/silences/{id}", delete(alerts::unsilence))
        .route("/api/v1/limits/{rule}", get(alerts::over))
        .route("/api/v1/limits/{rule}/{key}", get(alerts::limit))
        .route("/api/v1/stream", get(stream::stream))
        .route("/api/v1/rejects", get(rejects))
        .route("/api/v1/dump", get(dump))
        .route("/healthz", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::metrics))
        .route_layer(axum::middleware::from_fn(params::check_params))
        .route_layer(axum::middleware::from_fn_with_state(tokens, auth::require_token))
        .route_layer(axum::middleware::from_fn_with_state(http.clone(), http_metrics::record))
        // The dashboard's page and assets hold no data: no token, no parameter checks.
        .merge(dashboard::routes().route_layer(axum::middleware::from_fn_with_state(http, http_metrics::record)))
        .fallback(not_found)
        .with_state(state)
}

async fn live(State(s): State<AppState>) -> Json<read::model::Live> {
    Json(s.read_model.live())
}

async fn timeseries(
    State(s): State<AppState>,
    query: Result<Query<TimeseriesQuery>, QueryRejection>,
) -> Result<Json<read::model::Timeseries>, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    s.read_model.timeseries(&q).map(Json).map_err(|e| ApiError::bad_request(e.0))
}

async fn sessions(
    State(s): State<AppState>,
    query: Result<Query<SessionsQuery>, QueryRejection>,
) -> Result<Json<read::model::Sessions>, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    s.read_model.sessions(&q).map(Json).map_err(|e| ApiError::bad_request(e.0))
}

pub(crate) fn bad_query(e: QueryRejection) -> ApiError {
    ApiError::bad_request(format!("{}; see GET /api/v1 for the parameters", e.body_text()))
}

async fn rejects(State(s): State<AppState>) -> Json<serde_json::Value> {
    let clock = s.read_model.clock();
    Json(serde_json::json!({"as_of": clock.as_of, "as_of_ms": clock.as_of_ms, "rejects": s.read_model.rejects()}))
}

async fn dump(State(s): State<AppState>) -> Json<read::model::Dump> {
    Json(s.read_model.dump())
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.status.is_ready() {
        Json(serde_json::json!({"status": "ready"})).into_response()
    } else if s.status.caught_up() {
        let problems = s.status.problems();
        let body = serde_json::json!({"status": "stalled", "message": problems.join("; "), "problems": problems});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    } else {
        let lag: i64 = s.status.partitions().values().filter_map(|p| p.lag()).sum();
        let body = serde_json::json!({"status": "catching up", "message": format!("still reading the backlog ({lag} records behind); retry shortly")});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no endpoint at {}; available: {}", uri.path(), ENDPOINTS.join(", ")))
}
