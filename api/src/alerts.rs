//! Alert endpoints: active alerts, history, rules (list, create), silences, and rate limits.

use alerting::{LimitList, LimitStatus};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use read::model::Alert;
use schema::alert_rules::{AlertConfig, AlertRuleDef};
use serde::Deserialize;

use crate::funnels::registry_error;
use crate::{bad_query, ApiError, AppState};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    rule: Option<String>,
    severity: Option<String>,
    limit: Option<usize>,
}

fn filtered(alerts: Vec<Alert>, q: &AlertQuery) -> Vec<Alert> {
    alerts
        .into_iter()
        .filter(|a| q.rule.as_ref().is_none_or(|r| a.involves(r)))
        .filter(|a| q.severity.as_ref().is_none_or(|s| a.severity.as_str() == s))
        .take(q.limit.unwrap_or(usize::MAX))
        .collect()
}

/// `GET /api/v1/alerts`: what is firing now (silenced alerts too, marked `silenced`).
pub async fn active(
    State(s): State<AppState>,
    query: Result<Query<AlertQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    answer(s.alerting.active(), query)
}

/// `GET /api/v1/alerts/history`: fired and resolved alerts, newest first.
pub async fn history(
    State(s): State<AppState>,
    query: Result<Query<AlertQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    answer(s.alerting.history(), query)
}

/// Alerts filtered by the query, with the clock they were read at.
fn answer(
    (clock, alerts): (read::model::Clock, Vec<Alert>),
    query: Result<Query<AlertQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    Ok(Json(serde_json::json!({"as_of": clock.as_of, "as_of_ms": clock.as_of_ms, "alerts": filtered(alerts, &q)})))
}

pub async fn rules(State(s): State<AppState>) -> Json<serde_json::Value> {
    let rules: Vec<AlertRuleDef> = s.alerting.rules.all().iter().map(|r| r.def.clone()).collect();
    Json(serde_json::json!({"rules": rules}))
}

/// Adds a rule; it is judged from the current `as_of` on. 201, 400 (invalid, unknown funnel), 409.
pub async fn create_rule(
    State(s): State<AppState>,
    body: Result<Json<AlertRuleDef>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(def) = body
        .map_err(|e| ApiError::bad_request(format!("{}; see README \"Alerts\" for the rule fields", e.body_text())))?;
    let funnels: Vec<(String, usize)> =
        s.read_model.funnels.all().iter().map(|f| (f.name.clone(), f.steps())).collect();
    AlertConfig::check_funnels(&def, &funnels).map_err(ApiError::bad_request)?;
    let name = def.name.clone();
    let rule = s.alerting.rules.add(def).map_err(registry_error)?;
    let url = format!("/api/v1/alerts?rule={name}");
    let body = serde_json::json!({"name": name, "url": url, "definition": rule.def,
        "message": "judged from the current as_of on; per-key rules count from now"});
    Ok((StatusCode::CREATED, [(axum::http::header::LOCATION, url)], Json(body)))
}

const MAX_SILENCE_MINUTES: u64 = 366 * 24 * 60;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceRequest {
    /// A rule name or an alert id.
    matcher: String,
    /// How long, or until when (RFC 3339 or epoch ms).
    minutes: Option<u64>,
    until: Option<String>,
    comment: Option<String>,
}

pub async fn silences(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"silences": s.alerting.silences()}))
}

/// `POST /api/v1/alerts/silences`: mutes delivery of a rule or an alert id (it stays listed).
pub async fn silence(
    State(s): State<AppState>,
    body: Result<Json<SilenceRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(req) = body.map_err(|e| {
        ApiError::bad_request(format!("{}; send {{\"matcher\": rule or alert id, \"minutes\": N}}", e.body_text()))
    })?;
    let known =
        s.alerting.rules.get(&req.matcher).is_some() || s.alerting.history().1.iter().any(|a| a.id == req.matcher);
    if !known {
        let rules = s.alerting.rules.names().join(", ");
        return Err(ApiError::bad_request(format!(
            "`{}` is neither a rule nor the id of an alert; rules: {rules}",
            req.matcher
        )));
    }
    let now = alerting::now_ms();
    let until_ms = match (req.minutes, req.until.as_deref()) {
        (Some(m), None) if m <= MAX_SILENCE_MINUTES => now + m as i64 * 60_000,
        (Some(_), None) => {
            return Err(ApiError::bad_request(format!("silence at most {MAX_SILENCE_MINUTES} minutes (a year)")))
        }
        (None, Some(t)) => read::query::parse_time(t, "until").map_err(|e| ApiError::bad_request(e.0))?,
        _ => return Err(ApiError::bad_request("give exactly one of `minutes` and `until`")),
    };
    if until_ms <= now {
        return Err(ApiError::bad_request("`until` is in the past"));
    }
    let silence = s
        .alerting
        .silence(req.matcher, until_ms, req.comment)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok((StatusCode::CREATED, Json(silence)))
}

pub async fn unsilence(State(s): State<AppState>, Path(id): Path<u64>) -> Result<StatusCode, ApiError> {
    let removed = s.alerting.unsilence(id).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(StatusCode::NOT_FOUND, format!("no silence {id}; GET /api/v1/alerts/silences lists them")))
    }
}

/// `GET /api/v1/limits/{rule}/{key}`: is the key over its limit now, and until when.
pub async fn limit(
    State(s): State<AppState>,
    Path((rule, key)): Path<(String, String)>,
) -> Result<Json<LimitStatus>, ApiError> {
    s.alerting.limit(&rule, &key).map(Json).map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e.0))
}

/// `GET /api/v1/limits/{rule}`: every key over the limit now.
pub async fn over(State(s): State<AppState>, Path(rule): Path<String>) -> Result<Json<LimitList>, ApiError> {
    s.alerting.limits_over(&rule).map(Json).map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e.0))
}
